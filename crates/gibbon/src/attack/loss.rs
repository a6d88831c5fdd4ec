//! Losses shared by the attacks. The goal's margin and success rule live with the goal
//! ([`crate::threat::goal`]), where the verifier takes them from too.
pub use crate::threat::goal::{margin, success_mask};
use tch::{Kind, Tensor};

/// Per-sample objective the attacker ascends: cross-entropy to the label (untargeted) or
/// minus cross-entropy to the target (targeted).
pub fn cross_entropy_objective(
    logits: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float);
    match targets {
        None => -logp.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1),
        Some(t) => logp.gather(1, &t.unsqueeze(1), false).squeeze_dim(1),
    }
}

/// Every row's classes by decreasing clean logit, its label first (the label is the clean
/// prediction of every sample that reaches an attack): APGD-T's and FAB-T's target order.
pub(crate) fn class_ranking(logits: &Tensor, labels: &Tensor) -> Tensor {
    let masked = logits.to_kind(Kind::Float).scatter_value(1, &labels.unsqueeze(1), f64::INFINITY);
    masked.argsort(1, true)
}

/// Boolean `[B]`: the goal is reached with a logit margin of more than `kappa` (C&W's κ;
/// `kappa` = 0 is the plain [`success_mask`]). Attacks stop a sample early only on this, so a
/// returned first-success point is not barely adversarial when the user asks for a margin.
pub fn confident_success(
    logits: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
    kappa: f64,
) -> Tensor {
    let reached = success_mask(logits, labels, targets);
    if kappa <= 0.0 {
        return reached;
    }
    reached.logical_and(&margin(logits, labels, targets).lt(-kappa))
}
