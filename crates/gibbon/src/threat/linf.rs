//! Projection onto the L∞ ball ∩ box. The set is a product of intervals, so clamping each
//! coordinate to `[max(lo, x-ε), min(hi, x+ε)]` is the exact Euclidean projection.
use super::InputBox;
use tch::Tensor;

/// Nearest point to `candidate` with `‖z - x‖∞ ≤ eps` and `lo ≤ z ≤ hi` (per sample).
pub fn project_linf_ball_box(x: &Tensor, candidate: &Tensor, eps: f64, bounds: InputBox) -> Tensor {
    let lower = (x - eps).clamp_min(bounds.lo);
    let upper = (x + eps).clamp_max(bounds.hi);
    candidate.maximum(&lower).minimum(&upper)
}
