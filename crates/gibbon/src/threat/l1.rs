//! Exact projection onto the L1 ball ∩ box.
//!
//! With `δ = z - x` and `d = candidate - x`, the KKT conditions give
//! `δ(λ) = clip(soft(d, λ), lo - x, hi - x)`, where `soft` is soft-thresholding and `λ ≥ 0` the
//! smallest value with `‖δ(λ)‖₁ ≤ ε` (the box contains 0, so `‖δ(λ)‖₁` is non-increasing in λ).
//! λ is found by bisection per sample; the feasible end of the bracket is returned. This solves
//! the same problem as the sorting-based projection of APGD-L1 (Croce & Hein 2021).
use super::InputBox;
use tch::{Kind, Tensor};

const BISECTION_STEPS: usize = 50;

fn per_sample_l1(delta: &Tensor) -> Tensor {
    delta.flatten(1, -1).abs().sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
}

/// Nearest point to `candidate` with `‖z - x‖₁ ≤ eps` and `lo ≤ z ≤ hi` (per sample).
pub fn project_l1_ball_box(x: &Tensor, candidate: &Tensor, eps: f64, bounds: InputBox) -> Tensor {
    let kind = candidate.kind();
    let eps = (eps - super::rounding_margin(kind, x, bounds, super::Norm::L1)).max(0.0);
    let x64 = x.to_kind(Kind::Double);
    let d = candidate.to_kind(Kind::Double) - &x64;
    let lo_box = (-&x64 + bounds.lo).clamp_max(0.0);
    let hi_box = (-&x64 + bounds.hi).clamp_min(0.0);
    let b = x.size()[0];
    let shape = crate::tensor::per_sample_view(x);
    let delta_at = |lambda: &Tensor| {
        let l = lambda.view(shape.as_slice());
        let soft = d.sign() * (d.abs() - l).clamp_min(0.0);
        soft.maximum(&lo_box).minimum(&hi_box)
    };
    let zero = Tensor::zeros([b], (Kind::Double, x.device()));
    let full = delta_at(&zero);
    let inside = per_sample_l1(&full).le(eps);
    if bool::try_from(inside.all()).unwrap_or(false) {
        return (x64 + full).to_kind(kind);
    }
    let mut lo = zero.shallow_clone();
    let mut hi = d.abs().flatten(1, -1).amax([1i64].as_slice(), false);
    for _ in 0..BISECTION_STEPS {
        let mid = (&lo + &hi) * 0.5;
        let ok = per_sample_l1(&delta_at(&mid)).le(eps);
        hi = mid.where_self(&ok, &hi);
        lo = lo.where_self(&ok, &mid);
    }
    let lambda = zero.where_self(&inside, &hi);
    (x64 + delta_at(&lambda)).to_kind(kind)
}
