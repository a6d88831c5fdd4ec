//! The verifier: the only place where a sample is declared broken.
//!
//! Every example an attack returns is re-checked against the threat model (finite, inside the
//! box, inside the ε-ball with tolerance [`NORM_TOLERANCE`]) and by a fresh forward pass. An
//! example outside the threat model is an error (a bug in an attack), never a counted success.
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use crate::threat::goal::success_mask;
use crate::threat::{ThreatModel, NORM_TOLERANCE};
use tch::{Kind, Tensor};

/// The verifier's verdict on one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The fresh forward pass says the attack reached its goal.
    pub broken: bool,
    /// The model's prediction on the example.
    pub prediction: i64,
    /// Softmax probability of that prediction.
    pub confidence: f64,
    /// Perturbation norm in the threat model's norm (float64).
    pub norm: f64,
    /// The first fresh pass was fooled: AutoAttack's single-pass verdict (the same as `broken`
    /// for a deterministic model judged by one pass).
    pub first_pass_broken: bool,
    /// Passes (out of the verdict's) in which the example fooled the model.
    pub fooled_passes: usize,
}

/// Per-example measurements against a threat model: finite, value range, perturbation norm.
pub(crate) struct Containment {
    /// Every value is finite.
    pub finite: Vec<bool>,
    /// Smallest value of each example.
    pub lo: Vec<f64>,
    /// Largest value of each example.
    pub hi: Vec<f64>,
    /// Perturbation norm in the threat model's norm (float64).
    pub norms: Vec<f64>,
}

impl Containment {
    /// Measures `x_adv` `[B, ...]` against the clean inputs `x`.
    pub(crate) fn measure(threat: &ThreatModel, x: &Tensor, x_adv: &Tensor) -> Result<Self> {
        let finite = Vec::try_from(x_adv.isfinite().flatten(1, -1).all_dim(1, false))?;
        let adv64 = x_adv.to_kind(Kind::Double).flatten(1, -1);
        let lo = Vec::try_from(adv64.amin([1i64].as_slice(), false))?;
        let hi = Vec::try_from(adv64.amax([1i64].as_slice(), false))?;
        let norms = Vec::try_from(threat.distance(x, x_adv))?;
        Ok(Containment { finite, lo, hi, norms })
    }

    /// Example `i` is finite, inside the box and within ε + [`NORM_TOLERANCE`].
    pub(crate) fn inside(&self, threat: &ThreatModel, i: usize) -> bool {
        self.finite[i]
            && self.lo[i] >= threat.bounds.lo
            && self.hi[i] <= threat.bounds.hi
            && self.norms[i] <= threat.eps + NORM_TOLERANCE
    }
}

/// The perturbation norms of `x_adv` against `x`; an error naming the sample when an example
/// has the wrong shape, is not finite, leaves the box or exceeds ε (+ [`NORM_TOLERANCE`]).
pub(crate) fn check_contained(
    threat: &ThreatModel,
    indices: &[usize],
    x: &Tensor,
    x_adv: &Tensor,
) -> Result<Vec<f64>> {
    if x.size() != x_adv.size() {
        return Err(GibbonError::Verification(format!(
            "attack returned shape {:?} for inputs of shape {:?}",
            x_adv.size(),
            x.size()
        )));
    }
    let Containment { finite, lo, hi, norms } = Containment::measure(threat, x, x_adv)?;
    for (i, &index) in indices.iter().enumerate() {
        if !finite[i] {
            return Err(GibbonError::Verification(format!(
                "sample {index}: example has non-finite values"
            )));
        }
        if lo[i] < threat.bounds.lo || hi[i] > threat.bounds.hi {
            return Err(GibbonError::Verification(format!(
                "sample {index}: example leaves the box [{}, {}] (range [{}, {}])",
                threat.bounds.lo, threat.bounds.hi, lo[i], hi[i]
            )));
        }
        if norms[i] > threat.eps + NORM_TOLERANCE {
            return Err(GibbonError::Verification(format!(
                "sample {index}: {} norm {} exceeds eps {} + {NORM_TOLERANCE}",
                threat.norm, norms[i], threat.eps
            )));
        }
    }
    Ok(norms)
}

/// Verifies a batch: `x` clean inputs, `x_adv` returned examples, `labels`, optional `targets`.
/// `indices` name the samples in errors.
pub fn verify_batch(
    model: &dyn Classifier,
    threat: &ThreatModel,
    indices: &[usize],
    x: &Tensor,
    x_adv: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
) -> Result<Vec<Verdict>> {
    verify_batch_repeated(model, threat, indices, x, x_adv, labels, targets, 1)
}

/// [`verify_batch`] with `passes` fresh forward passes per example, for randomized models: an
/// example counts as broken only when it fools the model in a strict majority of the passes;
/// the prediction and confidence reported are those of the last pass that agrees with the vote.
/// The first pass alone is AutoAttack's verdict ([`Verdict::first_pass_broken`]).
#[allow(clippy::too_many_arguments)]
pub fn verify_batch_repeated(
    model: &dyn Classifier,
    threat: &ThreatModel,
    indices: &[usize],
    x: &Tensor,
    x_adv: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
    passes: usize,
) -> Result<Vec<Verdict>> {
    let passes = passes.max(1);
    let norms = check_contained(threat, indices, x, x_adv)?;
    let n = indices.len();
    let mut wins = vec![0usize; n];
    let mut first = vec![false; n];
    let mut last: Vec<[Option<(i64, f64)>; 2]> = vec![[None, None]; n];
    for pass in 0..passes {
        let answer = ModelAnswer::of(model, x_adv)?;
        let broken: Vec<bool> = Vec::try_from(success_mask(&answer.scores, labels, targets))?;
        let conf: Vec<f64> = Vec::try_from(answer.confidence)?;
        let pred: Vec<i64> = Vec::try_from(answer.prediction)?;
        for i in 0..n {
            if pass == 0 {
                first[i] = broken[i];
            }
            wins[i] += broken[i] as usize;
            last[i][broken[i] as usize] = Some((pred[i], conf[i]));
        }
    }
    Ok((0..n)
        .map(|i| {
            let broken = 2 * wins[i] > passes;
            let (prediction, confidence) = last[i][broken as usize].unwrap_or((-1, 0.0));
            Verdict {
                broken,
                prediction,
                confidence,
                norm: norms[i],
                first_pass_broken: first[i],
                fooled_passes: wins[i],
            }
        })
        .collect())
}

/// What the model says about a batch, for verdicts: scores (logits, or one-hot rows for a
/// labels-only model), the prediction and its softmax probability (1 for a labels-only model).
pub struct ModelAnswer {
    /// `[B, classes]`.
    pub scores: Tensor,
    /// `[B]` int64.
    pub prediction: Tensor,
    /// `[B]` float64.
    pub confidence: Tensor,
}

impl ModelAnswer {
    /// One forward pass (or one labels query) of `model` on `x`.
    pub fn of(model: &dyn Classifier, x: &Tensor) -> Result<Self> {
        if model.labels_only() {
            let prediction = model.predict(x)?;
            let scores = prediction.one_hot(model.num_classes()).to_kind(Kind::Float);
            let confidence = prediction.ones_like().to_kind(Kind::Double);
            return Ok(ModelAnswer { scores, prediction, confidence });
        }
        let scores = model.logits(x)?;
        let (confidence, prediction) = scores.softmax(-1, Kind::Double).max_dim(-1, false);
        Ok(ModelAnswer { scores, prediction, confidence })
    }
}
