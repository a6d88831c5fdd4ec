//! SmoothAdv (Salman, Yang, Li, Zhang, Zhang, Razenshteyn & Bubeck 2019, "Provably Robust Deep
//! Learning via Adversarially Trained Smoothed Classifiers", NeurIPS; SmoothAdv_PGD, section 3):
//! an L2 PGD attack on the *soft* smoothed classifier `G(x) = E_δ[softmax(F(x + δ))]`,
//! `δ ~ N(0, σ² I)`, whose expectation is estimated at every step from
//! [`SMOOTHADV_NOISE_SAMPLES`] fresh noise draws (expectation over transformation). The loss is
//! `-log((1/m) Σ_j softmax(F(x' + δ_j))_y)`, the step is the L2-normalised gradient times
//! [`SMOOTHADV_STEP_SCALE`]`·ε/steps`, and each iterate is projected exactly onto the L2 ball
//! of radius ε intersected with the input box.
//!
//! The smallest perturbation is searched by bisection on ε ([`SMOOTHADV_SEARCH_STEPS`] halvings
//! of `[0, max_eps]`), one SmoothAdv run per ε.
//!
//! **Verdict.** An example `x'` counts as adversarial for the smoothed classifier `g` when
//! PREDICT (Cohen et al. 2019) with [`SMOOTHADV_PREDICT_DRAWS`] *fresh* noise draws (a stream the
//! attack never saw) answers a class other than `g`'s class at the clean input. PREDICT
//! abstaining does *not* count: the exact `g` never abstains, and PREDICT abstains near every
//! decision boundary of `g`, including just inside a correct certificate, so counting it would
//! report "examples" that contradict nothing. A confident other class does contradict a
//! certificate: PREDICT answers a wrong class with probability at most α, so an example with that
//! verdict inside a certified radius is a bug or a failed (1 - α) event of one of the two tests.
use super::smoothing::{Certificate, Smoothed};
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use crate::random::RngKey;
use crate::threat::project_l2_ball_box;
use crate::threat::InputBox;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Noise draws per gradient step (the paper's m; it uses 1 to 8 for training, more helps an
/// evaluation attack).
pub const SMOOTHADV_NOISE_SAMPLES: usize = 16;
/// PGD steps per radius.
pub const SMOOTHADV_STEPS: usize = 20;
/// Step size as a multiple of ε/steps (Madry et al.'s 2.5).
pub const SMOOTHADV_STEP_SCALE: f64 = 2.5;
/// Bisection steps of the smallest-radius search.
pub const SMOOTHADV_SEARCH_STEPS: usize = 7;
/// PREDICT draws that judge each example.
pub const SMOOTHADV_PREDICT_DRAWS: usize = 1000;

/// Streams of the attack's noise and of its verdicts (distinct from CERTIFY's and PREDICT's).
const ATTACK_NOISE: u64 = 0x5a0a_dd00;
const VERDICT: u64 = 0x7e2d_1c70;
const CLEAN_VERDICT: u64 = 0xc1ea_7e2d;

/// The constants of one SmoothAdv search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SmoothAdvConfig {
    /// Noise draws per gradient step (m).
    pub noise_samples: usize,
    /// PGD steps per radius.
    pub steps: usize,
    /// Bisection steps on ε.
    pub search_steps: usize,
    /// Largest L2 radius tried.
    pub max_eps: f64,
    /// PREDICT draws of each verdict.
    pub predict_draws: usize,
    /// Valid input range.
    pub bounds: InputBox,
}

impl SmoothAdvConfig {
    /// The constants above, searching up to `max_eps`.
    pub fn new(max_eps: f64) -> Self {
        SmoothAdvConfig {
            noise_samples: SMOOTHADV_NOISE_SAMPLES,
            steps: SMOOTHADV_STEPS,
            search_steps: SMOOTHADV_SEARCH_STEPS,
            max_eps,
            predict_draws: SMOOTHADV_PREDICT_DRAWS,
            bounds: InputBox::default(),
        }
    }

    /// An error naming the first bad constant.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_eps.is_finite() && self.max_eps > 0.0) {
            return Err(GibbonError::invalid(
                "attack-max-eps",
                format!("{} must be > 0", self.max_eps),
            ));
        }
        for (name, v) in [
            ("attack-noise-samples", self.noise_samples),
            ("attack-steps", self.steps),
            ("attack-draws", self.predict_draws),
        ] {
            if v == 0 {
                return Err(GibbonError::invalid(name, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// The smallest adversarial example SmoothAdv found against the smoothed classifier.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SmoothAttack {
    /// The smoothed class at the clean input that the attack moves away from: the certificate's
    /// class, or PREDICT's when CERTIFY abstained (`None`: PREDICT abstained too, no attack).
    pub clean_class: Option<i64>,
    /// L2 norm of the example's perturbation; `None` when no radius up to `max_eps` gave one.
    pub perturbation: Option<f64>,
    /// The class PREDICT answered at the example.
    pub adversarial_class: Option<i64>,
    /// SmoothAdv runs made (one per radius tried).
    pub runs: usize,
}

impl Smoothed<'_> {
    /// SmoothAdv against the smoothed class of sample `index` at `x`, whose certificate is
    /// `certificate`: the certificate's class, or, when CERTIFY abstained, PREDICT's class on a
    /// fresh stream (no attack when PREDICT abstains as well).
    pub fn attack_certified(
        &self,
        x: &Tensor,
        index: usize,
        certificate: &Certificate,
        attack: &SmoothAdvConfig,
    ) -> Result<SmoothAttack> {
        let class = match certificate.class {
            Some(c) => Some(c),
            None => self.predict_with(x, index, attack.predict_draws, CLEAN_VERDICT)?,
        };
        match class {
            Some(c) => self.smoothadv(x, c, index, attack),
            None => Ok(SmoothAttack {
                clean_class: None,
                perturbation: None,
                adversarial_class: None,
                runs: 0,
            }),
        }
    }

    /// SmoothAdv's smallest example against the smoothed class `class` of the input `x` of
    /// sample `index` (one input, no batch axis).
    pub fn smoothadv(
        &self,
        x: &Tensor,
        class: i64,
        index: usize,
        attack: &SmoothAdvConfig,
    ) -> Result<SmoothAttack> {
        attack.validate()?;
        require_scores(self.model())?;
        let x = x.to_device(Device::Cpu).to_kind(Kind::Float).unsqueeze(0);
        let mut found = SmoothAttack {
            clean_class: Some(class),
            perturbation: None,
            adversarial_class: None,
            runs: 0,
        };
        let (mut lo, mut hi) = (0.0, attack.max_eps);
        // Run 0 at max_eps: when it fails there is nothing to bisect.
        for run in 0..=attack.search_steps {
            let eps = if run == 0 { hi } else { 0.5 * (lo + hi) };
            let example = self.smoothadv_at(&x, class, index, eps, run, attack)?;
            found.runs += 1;
            let verdict = self.predict_with(
                &example.squeeze_dim(0),
                index,
                attack.predict_draws,
                VERDICT ^ run as u64,
            )?;
            match verdict {
                Some(c) if c != class => {
                    let norm = f64::try_from((&example - &x).to_kind(Kind::Double).norm())?;
                    found.perturbation = Some(norm);
                    found.adversarial_class = Some(c);
                    hi = eps.min(norm);
                }
                _ if run == 0 => return Ok(found),
                _ => lo = eps,
            }
        }
        Ok(found)
    }

    /// One SmoothAdv_PGD run at radius `eps` from `x` (`[1, ...]`), away from `class`.
    fn smoothadv_at(
        &self,
        x: &Tensor,
        class: i64,
        index: usize,
        eps: f64,
        run: usize,
        attack: &SmoothAdvConfig,
    ) -> Result<Tensor> {
        let model = self.model();
        let dim = x.numel();
        let m = attack.noise_samples;
        let mut rows_shape = vec![m as i64];
        rows_shape.extend_from_slice(&x.size()[1..]);
        let step_size = SMOOTHADV_STEP_SCALE * eps / attack.steps as f64;
        let key = RngKey::new(self.config().seed, index).stream(ATTACK_NOISE).restart(run);
        let loss = move |logits: &Tensor| {
            let p = logits.softmax(-1, Kind::Float).select(1, class).mean(Kind::Float);
            p.clamp_min(1e-30).log().neg().reshape([1])
        };
        let mut adv = x.shallow_clone();
        for step in 0..attack.steps {
            let noise = self.noise(&key.step(step), 0, m, dim).reshape(rows_shape.as_slice());
            let noisy = (adv.expand(rows_shape.as_slice(), false) + noise * self.config().sigma)
                .to_device(model.device());
            let (_, _, grad) = model.loss_and_input_grad(&noisy, &loss)?;
            let grad = grad.to_device(Device::Cpu).to_kind(Kind::Float).sum_dim_intlist(
                [0i64].as_slice(),
                true,
                Kind::Float,
            );
            let norm = f64::try_from(grad.norm())?;
            if !norm.is_finite() || norm == 0.0 {
                break;
            }
            let candidate = &adv + grad * (step_size / norm);
            adv = project_l2_ball_box(x, &candidate, eps, attack.bounds);
        }
        Ok(adv)
    }
}

/// Whether an attack's example lies strictly inside a certificate: the certificate names a class,
/// and the attack, moving away from that same class, found an example (judged by PREDICT to be
/// another class) at an L2 distance below the certified radius. Expected never; each one is a bug
/// or a failed (1 - α) event of CERTIFY or of the verdict's PREDICT.
pub fn is_violation(certificate: &Certificate, attack: &SmoothAttack) -> bool {
    certificate.class.is_some()
        && attack.clean_class == certificate.class
        && attack.perturbation.is_some_and(|p| p < certificate.radius)
}

/// Accuracy under SmoothAdv at each radius (the empirical upper bound beside
/// [`super::certified_accuracy`]): the share of samples whose smoothed class at the clean input
/// is the label and for which the attack found no example of L2 norm at most `r`.
pub fn attacked_accuracy(attacks: &[(SmoothAttack, i64)], radii: &[f64]) -> Vec<(f64, f64)> {
    let n = attacks.len().max(1) as f64;
    radii
        .iter()
        .map(|&r| {
            let robust = attacks
                .iter()
                .filter(|(a, y)| a.clean_class == Some(*y) && a.perturbation.is_none_or(|p| p > r))
                .count();
            (r, robust as f64 / n)
        })
        .collect()
}

/// SmoothAdv needs the base model's scores and gradients (CERTIFY needs only its labels): an
/// error naming the model when it answers labels only.
pub fn require_scores(model: &dyn Classifier) -> Result<()> {
    if model.labels_only() {
        return Err(GibbonError::invalid(
            "model",
            format!(
                "SmoothAdv needs the model's scores and gradients; {} answers labels only \
                 (certify without --attack needs only labels)",
                model.info().path
            ),
        ));
    }
    Ok(())
}
