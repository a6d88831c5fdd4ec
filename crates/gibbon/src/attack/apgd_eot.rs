//! APGD against randomized models (Expectation over Transformation, Athalye, Carlini & Wagner
//! 2018, as AutoAttack's rand suite uses it: gradients averaged over 20 draws).
//!
//! Two rules keep the returned point from being a lucky draw:
//! - early stop only when *every* draw of an iterate is fooled (with 20 draws, a point fooling
//!   each single draw with probability p passes this with p^20, so it stops only where p is
//!   high, deep inside the wrong class, not on the expected boundary);
//! - otherwise the run goes to its full budget, and the returned point is chosen among the
//!   margin-best, the loss-best and the last iterate by a *fresh* estimate (another set of
//!   draws): the best of 100 noisy estimates is biased towards luck, a fresh one is not.
use super::loss::margin;
use crate::error::Result;
use crate::model::Classifier;
use tch::{Kind, Tensor};

/// The mean logit margin of `x` over `draws` fresh forward passes.
pub fn fresh_margin(
    model: &dyn Classifier,
    x: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
    draws: usize,
) -> Result<Tensor> {
    let mut sum = model.logits(x)?.to_kind(Kind::Float);
    for _ in 1..draws {
        sum += model.logits(x)?.to_kind(Kind::Float);
    }
    Ok(margin(&(sum / draws as f64), labels, targets))
}

/// Among `candidates` (each `[B, ...]`), the one per row with the lowest fresh mean margin, and
/// that margin.
pub fn freshest_best(
    model: &dyn Classifier,
    candidates: &[&Tensor],
    labels: &Tensor,
    targets: Option<&Tensor>,
    draws: usize,
) -> Result<(Tensor, Tensor)> {
    let mut best = candidates[0].copy();
    let mut best_margin = fresh_margin(model, candidates[0], labels, targets, draws)?;
    let view: Vec<i64> =
        std::iter::once(-1).chain(std::iter::repeat_n(1, best.dim() - 1)).collect();
    for c in &candidates[1..] {
        let m = fresh_margin(model, c, labels, targets, draws)?;
        let better = m.lt_tensor(&best_margin);
        best = c.where_self(&better.view(view.as_slice()), &best);
        best_margin = m.minimum(&best_margin);
    }
    Ok((best, best_margin))
}
