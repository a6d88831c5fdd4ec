//! APGD against randomized models (Expectation over Transformation, Athalye, Carlini & Wagner
//! 2018, as AutoAttack's rand suite uses it: gradients averaged over 20 draws).
//!
//! Two rules keep the returned point from being a lucky draw:
//! - early stop only when *every* draw of an iterate is fooled (with 20 draws, a point fooling
//!   each single draw with probability p passes this with p^20, so it stops only where p is
//!   high, deep inside the wrong class, not on the expected boundary);
//! - otherwise the run goes to its full budget, and the returned point is chosen among the
//!   iterate that fooled the most draws, the margin-best, the loss-best and the last iterate by
//!   a *fresh* estimate (another set of draws; most draws fooled, then lowest mean margin): the
//!   best of 100 noisy estimates is biased towards luck, a fresh one is not.
use crate::attack::loss::{margin, success_mask};
use crate::error::Result;
use crate::model::Classifier;
use tch::{Kind, Tensor};

/// The mean logit margin of `x` over `draws` fresh forward passes, and in how many of them `x`
/// reached the goal.
pub fn fresh_estimate(
    model: &dyn Classifier,
    x: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
    draws: usize,
) -> Result<(Tensor, Tensor)> {
    let mut sum = model.logits(x)?.to_kind(Kind::Float);
    let mut fooled = success_mask(&sum, labels, targets).to_kind(Kind::Float);
    for _ in 1..draws {
        let z = model.logits(x)?.to_kind(Kind::Float);
        fooled += success_mask(&z, labels, targets).to_kind(Kind::Float);
        sum += z;
    }
    Ok((margin(&(sum / draws as f64), labels, targets), fooled))
}

/// Among `candidates` (each `[B, ...]`), the one per row that fools the most fresh draws (the
/// quantity the verifier's vote estimates), ties going to the lower fresh mean margin; returns
/// it and its fresh margin.
pub fn freshest_best(
    model: &dyn Classifier,
    candidates: &[&Tensor],
    labels: &Tensor,
    targets: Option<&Tensor>,
    draws: usize,
) -> Result<(Tensor, Tensor)> {
    let mut best = candidates[0].copy();
    let (mut best_margin, mut best_fooled) =
        fresh_estimate(model, candidates[0], labels, targets, draws)?;
    let view: Vec<i64> =
        std::iter::once(-1).chain(std::iter::repeat_n(1, best.dim() - 1)).collect();
    for c in &candidates[1..] {
        let (m, f) = fresh_estimate(model, c, labels, targets, draws)?;
        let better = f
            .gt_tensor(&best_fooled)
            .logical_or(&f.eq_tensor(&best_fooled).logical_and(&m.lt_tensor(&best_margin)));
        best = c.where_self(&better.view(view.as_slice()), &best);
        best_margin = m.where_self(&better, &best_margin);
        best_fooled = f.where_self(&better, &best_fooled);
    }
    Ok((best, best_margin))
}
