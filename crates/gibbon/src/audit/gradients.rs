//! Check 1 (Carlini et al. 2019, section 5.2; AutoAttack's `check_zero_gradients`): are the
//! input gradients usable? Two symptoms, measured at the correctly classified clean inputs:
//! - the gradient of the logit margin `max_{j≠y} z_j - z_y` is exactly zero, or not finite:
//!   nothing on the input-to-logits path passes a gradient (a rounding, a `detach`, a JPEG
//!   pass). A differentiable classifier has a nonzero margin gradient almost everywhere.
//! - the margin gradient is fine but the cross-entropy gradient is exactly zero: the softmax is
//!   saturated (logits so large that `softmax - onehot` underflows to zero in float32), so
//!   every cross-entropy attack stands still while the decision function is as attackable as
//!   ever (Carlini & Wagner 2017, section "defensive distillation").
use super::{fraction, AuditSubject, Check, Finding, Remedy};
use crate::error::Result;
use serde_json::json;
use tch::{Kind, Reduction, Tensor};

/// Largest tolerated fraction of audited samples with a symptom (5%: a few degenerate inputs
/// of an honest model do not fire; a masking layer affects most inputs).
pub const MAX_FRACTION: f64 = 0.05;

/// Fires when more than [`MAX_FRACTION`] of the samples have unusable margin gradients
/// (remedies: BPDA where the graph has swappable ops, else gradient-free attacks), or
/// saturated cross-entropy gradients (remedy: rescaled logits).
pub struct GradientHealth;

/// Per-sample summaries of one gradient `[m, ...]`: L2 norm, all zero, any non-finite.
fn per_sample(grad: &Tensor) -> Result<(Vec<f64>, Vec<bool>, Vec<bool>)> {
    let flat = grad.flatten(1, -1).to_kind(Kind::Double);
    let finite: Vec<bool> = Vec::try_from(&flat.isfinite().all_dim(1, false))?;
    let zero: Vec<bool> = Vec::try_from(&flat.abs().amax(1, false).eq(0.0))?;
    let norm: Vec<f64> =
        Vec::try_from(&flat.nan_to_num(0.0, 0.0, 0.0).norm_scalaropt_dim(2, 1, false))?;
    Ok((norm, zero, finite.into_iter().map(|f| !f).collect()))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

impl Check for GradientHealth {
    fn name(&self) -> &'static str {
        "gradients"
    }
    fn question(&self) -> &'static str {
        "are the input gradients zero, non-finite, or vanishing from a saturated softmax?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let clean = subject.clean()?;
        let classes = subject.model.num_classes();
        let y = clean.y.shallow_clone();
        let margin = move |z: &Tensor| {
            let onehot = y.one_hot(classes).to_kind(Kind::Bool);
            let own = z.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
            let other = z.masked_fill(&onehot, f64::NEG_INFINITY).amax(1, false);
            other - own
        };
        let y2 = clean.y.shallow_clone();
        let ce =
            move |z: &Tensor| z.cross_entropy_loss::<Tensor>(&y2, None, Reduction::None, -100, 0.0);
        let (_, _, g_margin) = subject.model.loss_and_input_grad(&clean.x, &margin)?;
        let (_, _, g_ce) = subject.model.loss_and_input_grad(&clean.x, &ce)?;
        let (m_norm, m_zero, m_bad) = per_sample(&g_margin)?;
        let (c_norm, c_zero, c_bad) = per_sample(&g_ce)?;
        let m = m_norm.len();
        let unusable: Vec<bool> = (0..m).map(|i| m_zero[i] || m_bad[i] || c_bad[i]).collect();
        let n_unusable = unusable.iter().filter(|&&u| u).count();
        let n_saturated = (0..m).filter(|&i| !unusable[i] && c_zero[i]).count();
        let (f_unusable, f_saturated) = (fraction(n_unusable, m), fraction(n_saturated, m));
        let dead = f_unusable > MAX_FRACTION;
        let saturated = f_saturated > MAX_FRACTION;
        let mut remedies = if dead { subject.unusable_gradient_remedies() } else { Vec::new() };
        if saturated {
            remedies.push(Remedy::RescaledLogits);
        }
        let verdict = match (dead, saturated) {
            (true, _) => format!(
                "{n_unusable} of {m} samples have zero or non-finite input gradients: \
                 gradient attacks cannot move them"
            ),
            (false, true) => format!(
                "saturated softmax: the cross-entropy gradient is exactly zero on {n_saturated} \
                 of {m} samples whose margin gradient is not"
            ),
            _ => format!(
                "usable: {n_unusable} of {m} zero/non-finite, {n_saturated} saturated \
                 (limit {:.0}%)",
                MAX_FRACTION * 100.0
            ),
        };
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired: dead || saturated,
            verdict,
            evidence: json!({
                "samples": m,
                "zero_or_nonfinite_gradient": f_unusable,
                "nonfinite_gradient": fraction((0..m).filter(|&i| m_bad[i] || c_bad[i]).count(), m),
                "saturated_cross_entropy": f_saturated,
                "median_margin_gradient_l2": median(m_norm),
                "median_cross_entropy_gradient_l2": median(c_norm),
                "max_fraction": MAX_FRACTION,
            }),
            remedies,
        })
    }
}
