//! The attacker's goal as a rule on the model's answers: the margin an attack drives below
//! zero and the success test. Attacks and the verifier use these same functions, so an attack
//! never claims a success by another rule than the one that judges it.
use tch::{Kind, Tensor};

/// Per-sample margin: for untargeted goals `z_y - max_{j≠y} z_j`, for targeted goals
/// `max_{j≠t} z_j - z_t`. Negative means the attack has succeeded; lower is better.
pub fn margin(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    let class = targets.unwrap_or(labels);
    let own = logits.gather(1, &class.unsqueeze(1), false).squeeze_dim(1);
    let mask = logits.zeros_like().scatter_value(1, &class.unsqueeze(1), f64::NEG_INFINITY);
    let other = (&logits + mask).amax([1i64].as_slice(), false);
    match targets {
        None => own - other,
        Some(_) => other - own,
    }
}

/// Boolean `[B]`: the prediction is wrong (untargeted) or equals the target (targeted).
pub fn success_mask(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Tensor {
    let pred = logits.argmax(-1, false);
    match targets {
        None => pred.ne_tensor(labels),
        Some(t) => pred.eq_tensor(t),
    }
}

/// Whether predicting `pred` reaches the goal: another class than `label`, or `target`.
pub fn reaches_goal(pred: i64, label: i64, target: Option<i64>) -> bool {
    match target {
        None => pred != label,
        Some(t) => pred == t,
    }
}
