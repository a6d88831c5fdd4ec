//! Exact projection onto the L2 ball ∩ box.
//!
//! The common "project on the ball, then clip to the box" is not the nearest point of the
//! intersection. The KKT conditions give the exact answer: `z(t) = clip(x + t·d, box)` with
//! `d = candidate - x` and `t ∈ [0, 1]` the largest value with `‖z(t) - x‖₂ ≤ ε`. The norm of
//! `z(t) - x` is non-decreasing in `t`, so `t` is found by bisection, per sample, and the
//! feasible end of the bracket is returned (the result never leaves the ball).
use super::InputBox;
use tch::{Kind, Tensor};

const BISECTION_STEPS: usize = 40;

fn per_sample_l2(delta: &Tensor) -> Tensor {
    delta.flatten(1, -1).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double).sqrt()
}

/// Nearest point to `candidate` with `‖z - x‖₂ ≤ eps` and `lo ≤ z ≤ hi` (per sample).
pub fn project_l2_ball_box(x: &Tensor, candidate: &Tensor, eps: f64, bounds: InputBox) -> Tensor {
    let kind = candidate.kind();
    let eps = (eps - super::rounding_margin(kind, x, bounds, super::Norm::L2)).max(0.0);
    let x64 = x.to_kind(Kind::Double);
    let d = candidate.to_kind(Kind::Double) - &x64;
    let at = |t: &Tensor| {
        (&x64 + &d * t.view(crate::tensor::per_sample_view(x).as_slice()))
            .clamp(bounds.lo, bounds.hi)
    };
    let b = x.size()[0];
    let ones = Tensor::ones([b], (Kind::Double, x.device()));
    let full = at(&ones);
    let inside = per_sample_l2(&(&full - &x64)).le(eps);
    if bool::try_from(inside.all()).unwrap_or(false) {
        return full.to_kind(kind);
    }
    // Bisection on t, per sample; lo stays feasible, hi infeasible (or 1 when already inside).
    let mut lo = Tensor::zeros([b], (Kind::Double, x.device()));
    let mut hi = ones.shallow_clone();
    for _ in 0..BISECTION_STEPS {
        let mid = (&lo + &hi) * 0.5;
        let ok = per_sample_l2(&(at(&mid) - &x64)).le(eps);
        lo = mid.where_self(&ok, &lo);
        hi = hi.where_self(&ok, &mid);
    }
    let t = ones.where_self(&inside, &lo);
    at(&t).to_kind(kind)
}
