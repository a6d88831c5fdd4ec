//! Attacking classifier and detector together (Carlini & Wagner 2017, "Adversarial examples
//! are not easily detected"; Tramèr, Carlini, Brendel & Madry 2020, "On adaptive attacks to
//! adversarial example defenses").
//!
//! PGD in the threat model's norm minimizing, per sample,
//!
//!   max(m(x), −κ) + λ·1[m(x) < 0]·max((s(x) − τ) / σ + δ, 0)
//!
//! with m the classifier's logit margin z_y − max_{j≠y} z_j, s the detector's score, τ its
//! threshold and σ the standard deviation of the calibration scores (so λ is in units of the
//! score's spread whatever the detector). The detector term only acts on misclassified
//! iterates: on the way to the decision boundary every detector flags the uncertain points it
//! passes (that is what MSP and energy measure), and a detector term active there pushes the
//! iterate back to the confident, correct side. Defaults: κ = 5, λ = 1, δ = 0.05, 100 steps of
//! α = 2.5·ε/steps (Madry et al. 2018's rule), two restarts (the clean input, then a uniform
//! random start from the counter-based generator). A sample stops at the first iterate that is
//! misclassified and not flagged. Non-differentiable detectors (feature squeezing) are attacked
//! through their straight-through (BPDA) score ([`Detector::score_graph`]).
//!
//! The non-adaptive baseline is the same PGD on the margin alone (λ = 0, κ = 0: it stops at the
//! first misclassified iterate and never looks at the detector), as an attack that ignores the
//! detector would.
//!
//! Steps and projections by norm: L∞, sign steps of size α (Madry et al. 2018); L2, steps of
//! L2 length α along the gradient; L1, sparse steepest-descent steps (Tramèr & Boneh 2019,
//! SLIDE): the sign of the gradient on its largest 1% of coordinates by magnitude (coordinates
//! at a box bound whose step would leave the box excluded), scaled to L1 length α. Each step is
//! followed by the exact projection onto the ball ∩ [0, 1] ([`ThreatModel::project`]). Random
//! starts: L∞ uniform in the cube; L2 and L1 a uniform [−1, 1] direction scaled to a norm drawn
//! uniformly in [0, ε], projected.
//!
//! Every returned example is re-verified by fresh passes: finite, inside the ball and the box,
//! then judged by the guarded model ([`GuardedModel::verdicts`]).
use super::guarded::{GuardedModel, Verdict};
use crate::error::{GibbonError, Result};
use crate::random::RngKey;
use crate::threat::goal::margin;
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use tch::{Kind, Tensor};

/// The attack's settings.
#[derive(Debug, Clone, Serialize)]
pub struct GuardedAttackConfig {
    /// The norm of the ball (L∞, L2 or L1).
    pub norm: Norm,
    /// Radius in that norm.
    pub eps: f64,
    /// Steps per restart.
    pub steps: usize,
    /// Step size α (`None`: 2.5·ε/steps).
    pub step_size: Option<f64>,
    /// Restarts (the first from the clean input, the others from random points of the ball).
    pub restarts: usize,
    /// Weight λ of the detector term (0: the non-adaptive attack).
    pub lambda: f64,
    /// Margin κ below which the classifier term stops pulling.
    pub kappa: f64,
    /// Safety margin δ below the threshold, in units of the score's spread.
    pub delta: f64,
    /// Seed of the random starts.
    pub seed: u64,
}

impl GuardedAttackConfig {
    /// The adaptive attack's defaults at L∞ radius `eps`.
    pub fn adaptive(eps: f64) -> Self {
        Self::adaptive_in(Norm::Linf, eps)
    }
    /// The adaptive attack's defaults at radius `eps` in `norm`.
    pub fn adaptive_in(norm: Norm, eps: f64) -> Self {
        GuardedAttackConfig {
            norm,
            eps,
            steps: 100,
            step_size: None,
            restarts: 2,
            lambda: 1.0,
            kappa: 5.0,
            delta: 0.05,
            seed: 0,
        }
    }
    /// The non-adaptive baseline: the same PGD on the classifier's margin only.
    pub fn non_adaptive(eps: f64) -> Self {
        GuardedAttackConfig { lambda: 0.0, kappa: 0.0, delta: 0.0, ..Self::adaptive(eps) }
    }
    fn alpha(&self) -> f64 {
        self.step_size.unwrap_or(2.5 * self.eps / self.steps.max(1) as f64)
    }
    fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("eps", self.eps),
            ("lambda", self.lambda),
            ("kappa", self.kappa),
            ("delta", self.delta),
            ("step-size", self.alpha()),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(GibbonError::invalid(name, format!("{v}: must be finite and >= 0")));
            }
        }
        Ok(())
    }
}

/// One sample's outcome: the clean verdict and the verified verdict on the returned example.
#[derive(Debug, Clone, Serialize)]
pub struct GuardedOutcome {
    /// Index in the dataset.
    pub index: usize,
    /// The label.
    pub label: i64,
    /// Clean prediction, score and flag.
    pub clean_prediction: i64,
    pub clean_score: f64,
    pub clean_flagged: bool,
    /// The returned example's prediction, score and flag (fresh passes).
    pub adv_prediction: i64,
    pub adv_score: f64,
    pub adv_flagged: bool,
    /// L∞ distance of the returned example to the clean input.
    pub linf: f64,
    /// Distance of the returned example to the clean input in the attack's norm.
    pub distance: f64,
    /// Misclassified and not flagged (the attacker's success), verified.
    pub success: bool,
}

/// Attacks `guarded` on the inputs `x` `[B, ...]` with labels `y` (`indices`: their dataset
/// indices, for the random starts), returning one verified outcome per input.
pub fn attack_guarded(
    guarded: &GuardedModel,
    score_scale: f64,
    x: &Tensor,
    y: &Tensor,
    indices: &[usize],
    config: &GuardedAttackConfig,
) -> Result<Vec<GuardedOutcome>> {
    config.validate()?;
    let clean = guarded.verdicts(x)?;
    let labels = Vec::<i64>::try_from(&y.to_device(tch::Device::Cpu))?;
    let mut best = x.detach().copy();
    let mut found: Vec<bool> = clean.iter().zip(&labels).map(|(v, &l)| !v.holds(l)).collect();
    for restart in 0..config.restarts {
        if found.iter().all(|&f| f) {
            break;
        }
        let start = if restart == 0 {
            x.detach().copy()
        } else {
            random_start(x, indices, config, restart)?
        };
        run_restart(guarded, score_scale, x, y, start, config, &mut best, &mut found)?;
    }
    verify(guarded, x, &labels, indices, &best, &clean, config.norm, config.eps)
}

/// Fresh verification of the examples `adv` returned for the clean inputs `x0` (labels `y`).
pub fn verify_outcomes(
    guarded: &GuardedModel,
    x0: &Tensor,
    y: &Tensor,
    indices: &[usize],
    adv: &Tensor,
    norm: Norm,
    eps: f64,
) -> Result<Vec<GuardedOutcome>> {
    let clean = guarded.verdicts(x0)?;
    let labels = Vec::<i64>::try_from(&y.to_device(tch::Device::Cpu))?;
    verify(guarded, x0, &labels, indices, adv, &clean, norm, eps)
}

fn random_start(
    x: &Tensor,
    indices: &[usize],
    config: &GuardedAttackConfig,
    restart: usize,
) -> Result<Tensor> {
    let per = x.numel() / indices.len().max(1);
    let mut values = Vec::with_capacity(x.numel());
    for &i in indices {
        let key = RngKey::new(config.seed, i).restart(restart);
        let mut d: Vec<f64> = key.uniform(per).into_iter().map(|u| 2.0 * u - 1.0).collect();
        let length = match config.norm {
            Norm::Linf => 1.0,
            Norm::L2 => d.iter().map(|v| v * v).sum::<f64>().sqrt(),
            Norm::L1 => d.iter().map(|v| v.abs()).sum::<f64>(),
        };
        let radius = match config.norm {
            Norm::Linf => config.eps,
            _ => config.eps * key.stream(1).uniform(1)[0],
        };
        d.iter_mut().for_each(|v| *v *= radius / length.max(1e-12));
        values.extend(d);
    }
    let noise = Tensor::from_slice(&values)
        .to_kind(Kind::Float)
        .view(x.size().as_slice())
        .to_device(x.device());
    Ok(config.threat()?.project(x, &(x + noise)))
}

impl GuardedAttackConfig {
    /// The ball ∩ [0, 1] the attack stays in.
    pub(crate) fn threat(&self) -> Result<ThreatModel> {
        ThreatModel::new(self.norm, self.eps)
    }
}

/// The step `x − α·direction(g)` in the attack's norm (see the module docs), before projection.
fn descent_step(x: &Tensor, grad: &Tensor, norm: Norm, alpha: f64) -> Tensor {
    let b = grad.size()[0];
    let per_sample = |t: Tensor| t.view([b, 1]);
    let g = grad.to_kind(Kind::Float).view([b, -1]);
    let direction = match norm {
        Norm::Linf => g.sign(),
        Norm::L2 => {
            let n = per_sample(
                g.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float).sqrt(),
            );
            &g / n.clamp_min(1e-12)
        }
        Norm::L1 => {
            // Descent moves x by −sign(g): at the lower bound only g < 0 may move, at the
            // upper bound only g > 0.
            let flat = x.view([b, -1]);
            let blocked = flat
                .le(0.0)
                .logical_and(&g.gt(0.0))
                .logical_or(&flat.ge(1.0).logical_and(&g.lt(0.0)));
            let magnitude = g.abs().masked_fill(&blocked, 0.0);
            let cut = per_sample(magnitude.quantile_scalar(0.99, Some(1), false, "linear"));
            let chosen = magnitude.ge_tensor(&cut).logical_and(&magnitude.gt(0.0));
            let d = g.sign() * chosen.to_kind(Kind::Float);
            let n = per_sample(d.abs().sum_dim_intlist([1i64].as_slice(), false, Kind::Float));
            d / n.clamp_min(1e-12)
        }
    };
    x - direction.view(x.size().as_slice()) * alpha
}

/// One restart of PGD; only the rows still unfound are computed (and stepped), and the first
/// success of a row is kept in `best`.
#[allow(clippy::too_many_arguments)]
fn run_restart(
    guarded: &GuardedModel,
    score_scale: f64,
    x0: &Tensor,
    y: &Tensor,
    start: Tensor,
    config: &GuardedAttackConfig,
    best: &mut Tensor,
    found: &mut [bool],
) -> Result<()> {
    let alpha = config.alpha();
    let threat = config.threat()?;
    let mut current = start;
    for step in 0..=config.steps {
        let rows: Vec<i64> = (0..found.len() as i64).filter(|&r| !found[r as usize]).collect();
        if rows.is_empty() {
            break;
        }
        let index = Tensor::from_slice(&rows).to_device(x0.device());
        let xa = current.index_select(0, &index);
        let xg = xa.detach().set_requires_grad(true);
        let (loss, success) =
            objective(guarded, score_scale, &xg, &y.index_select(0, &index), config)?;
        let success = Vec::<bool>::try_from(&success.to_device(tch::Device::Cpu))?;
        let newly: Vec<i64> =
            rows.iter().zip(&success).filter(|(_, &s)| s).map(|(&r, _)| r).collect();
        for &r in &newly {
            found[r as usize] = true;
        }
        if !newly.is_empty() {
            let at = Tensor::from_slice(&newly).to_device(x0.device());
            let _ = best.index_copy_(0, &at, &current.index_select(0, &at));
        }
        if step == config.steps {
            break;
        }
        let grads = Tensor::f_run_backward(&[loss.sum(Kind::Double)], &[&xg], false, false)?;
        let grad =
            grads.into_iter().next().ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
        let xa0 = x0.index_select(0, &index);
        let stepped = descent_step(&xa, &grad, config.norm, alpha);
        let projected = threat.project(&xa0, &stepped);
        let _ = current.index_copy_(0, &index, &projected);
    }
    Ok(())
}

/// The per-row loss to minimize (with its graph) and the success mask at `xg`: the adaptive
/// objective and "misclassified and not flagged", or (λ = 0) the margin alone and
/// "misclassified" (the non-adaptive attack never looks at the detector).
fn objective(
    guarded: &GuardedModel,
    score_scale: f64,
    xg: &Tensor,
    y: &Tensor,
    config: &GuardedAttackConfig,
) -> Result<(Tensor, Tensor)> {
    let logits = guarded.model.logits_padded(xg)?;
    let m = margin(&logits, y, None);
    if config.lambda <= 0.0 {
        return Ok((m.shallow_clone(), m.lt(0.0)));
    }
    let s = guarded.detector.score_graph(guarded.model, xg)?;
    let wrong = m.lt(0.0).to_kind(Kind::Double);
    let hinge = ((&s - guarded.threshold) / score_scale + config.delta).clamp_min(0.0) * wrong;
    let loss = m.clamp_min(-config.kappa).to_kind(Kind::Double) + hinge * config.lambda;
    Ok((loss, m.lt(0.0).logical_and(&s.le(guarded.threshold))))
}

/// Fresh checks of every returned example: finite, in the ball and the box, then judged.
#[allow(clippy::too_many_arguments)]
fn verify(
    guarded: &GuardedModel,
    x0: &Tensor,
    labels: &[i64],
    indices: &[usize],
    best: &Tensor,
    clean: &[Verdict],
    norm: Norm,
    eps: f64,
) -> Result<Vec<GuardedOutcome>> {
    let b = labels.len() as i64;
    let diff = (best.to_kind(Kind::Double) - x0.to_kind(Kind::Double)).abs().view([b, -1]);
    let linf = super::to_f64s(&diff.amax([1i64].as_slice(), false))?;
    let distance = super::to_f64s(&match norm {
        Norm::Linf => diff.amax([1i64].as_slice(), false),
        Norm::L2 => diff.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double).sqrt(),
        Norm::L1 => diff.sum_dim_intlist([1i64].as_slice(), false, Kind::Double),
    })?;
    let finite = Vec::<bool>::try_from(&best.isfinite().view([b, -1]).all_dim(1, false))?;
    let lo = super::to_f64s(&best.view([b, -1]).amin([1i64].as_slice(), false))?;
    let hi = super::to_f64s(&best.view([b, -1]).amax([1i64].as_slice(), false))?;
    let adv = guarded.verdicts(best)?;
    let mut out = Vec::with_capacity(labels.len());
    for i in 0..labels.len() {
        let inside =
            finite[i] && distance[i] <= eps * (1.0 + 1e-6) + 1e-6 && lo[i] >= 0.0 && hi[i] <= 1.0;
        if !inside {
            return Err(GibbonError::Verification(format!(
                "sample {}: returned example outside the threat model ({} distance {} > {eps}, \
                 range [{}, {}])",
                indices[i],
                norm.as_str(),
                distance[i],
                lo[i],
                hi[i]
            )));
        }
        out.push(GuardedOutcome {
            index: indices[i],
            label: labels[i],
            clean_prediction: clean[i].prediction,
            clean_score: clean[i].score,
            clean_flagged: clean[i].flagged,
            adv_prediction: adv[i].prediction,
            adv_score: adv[i].score,
            adv_flagged: adv[i].flagged,
            linf: linf[i],
            distance: distance[i],
            success: !adv[i].holds(labels[i]),
        });
    }
    Ok(out)
}
