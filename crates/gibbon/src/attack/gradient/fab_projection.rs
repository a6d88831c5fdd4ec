//! The exact projection of FAB (Croce & Hein 2020, "Minimally distorted adversarial examples
//! with a fast adaptive boundary attack", ICML): the minimal-norm step onto a hyperplane
//! intersected with the input box, in L∞, L2 and L1.
use crate::threat::{InputBox, Norm};
use tch::{Kind, Tensor};

/// Per-sample norm of rows of `d` (`[N, D]`, float64) in the dual of `norm`, over dimension
/// `dim`.
pub(super) fn dual_norm(norm: Norm, d: &Tensor, dim: i64) -> Tensor {
    match norm {
        Norm::Linf => d.abs().sum_dim_intlist([dim].as_slice(), false, Kind::Double),
        Norm::L2 => d.square().sum_dim_intlist([dim].as_slice(), false, Kind::Double).sqrt(),
        Norm::L1 => d.abs().amax([dim].as_slice(), false),
    }
}

/// The minimal-norm `δ` (rows of `[N, D]`, float64) with `w·δ = c` and `lo ≤ t + δ ≤ hi`, per
/// row; where the hyperplane cannot be reached inside the box, the box corner nearest to it.
///
/// Moving coordinate `i` in the direction `sign(c w_i)` by at most its room `r_i` to the box,
/// L∞ gives `δ_i = min(λ, r_i)` and L2 `δ_i = min(λ|w_i|, r_i)` (KKT), so `w·δ` is a
/// non-decreasing piecewise-linear function of `λ` whose kinks are the saturation points
/// `r_i` (L∞) or `r_i/|w_i|` (L2). Sorting the kinks and accumulating the saturated and the
/// still-free parts gives that function at every kink; the segment holding `|c|` is found by
/// counting and `λ` solved on it, exactly. L1 fills coordinates greedily by decreasing `|w_i|`.
pub fn project_hyperplane_box(
    norm: Norm,
    t: &Tensor,
    w: &Tensor,
    c: &Tensor,
    bounds: InputBox,
) -> Tensor {
    let t = t.to_kind(Kind::Double);
    let w = w.to_kind(Kind::Double) * c.to_kind(Kind::Double).sign().unsqueeze(1);
    let c = c.to_kind(Kind::Double).abs().unsqueeze(1);
    let up = (-&t + bounds.hi).clamp_min(0.0);
    let down = (&t - bounds.lo).clamp_min(0.0);
    let room = up.where_self(&w.gt(0.0), &down);
    let dir = w.sign();
    let aw = w.abs();
    // Contribution of each coordinate to w·δ once it is saturated.
    let cap = &aw * &room;
    match norm {
        Norm::Linf | Norm::L2 => {
            let scale = match norm {
                Norm::Linf => aw.ones_like(),
                _ => aw.shallow_clone(),
            };
            let slope = &aw * &scale;
            let active = slope.gt(0.0);
            let knee = (&room / scale.clamp_min(1e-300)).where_self(&active, &room.zeros_like());
            let (knee_sorted, order) = knee.sort(1, false);
            let slope_sorted = slope.gather(1, &order, false);
            let cap_sorted = cap.gather(1, &order, false);
            let total_slope = slope.sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
            let saturated = cap_sorted.cumsum(1, Kind::Double);
            let free = &total_slope - slope_sorted.cumsum(1, Kind::Double);
            // Value of w·δ at each kink (coordinates up to that one saturated).
            let at_knee = &saturated + &knee_sorted * &free;
            let dims = t.size()[1];
            let segment =
                at_knee.lt_tensor(&c).sum_dim_intlist([1i64].as_slice(), true, Kind::Int64);
            let zero = c.zeros_like();
            let saturated = Tensor::cat(&[&zero, &saturated], 1).gather(1, &segment, false);
            let free = Tensor::cat(&[&total_slope, &free], 1).gather(1, &segment, false);
            let reachable = segment.lt(dims);
            let lambda = ((&c - saturated) / free.clamp_min(1e-300))
                .clamp(0.0, 1e30)
                .where_self(&reachable, &c.full_like(1e30));
            dir * (lambda * scale).minimum(&room)
        }
        Norm::L1 => {
            let order = aw.argsort(1, true);
            let cap_sorted = cap.gather(1, &order, false);
            let aw_sorted = aw.gather(1, &order, false);
            let room_sorted = room.gather(1, &order, false);
            let before = cap_sorted.cumsum(1, Kind::Double) - &cap_sorted;
            let amount = ((&c - before) / aw_sorted.clamp_min(1e-300))
                .clamp_min(0.0)
                .minimum(&room_sorted)
                .where_self(&aw_sorted.gt(0.0), &aw_sorted.zeros_like());
            dir * aw.zeros_like().scatter(1, &order, &amount)
        }
    }
}
