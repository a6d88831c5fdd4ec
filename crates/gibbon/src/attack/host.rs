//! Small computations on host vectors, shared by the query attacks (which keep their per-sample
//! state in plain vectors, in float64 where they accumulate).
pub(super) use crate::threat::goal::reaches_goal;

/// Index of the largest score (the first one on ties).
pub(super) fn argmax(z: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// `log Σ exp(z)`, computed stably.
pub(super) fn log_sum_exp(z: &[f64]) -> f64 {
    let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    top + z.iter().map(|v| (v - top).exp()).sum::<f64>().ln()
}

/// +1, −1 or 0.
pub(super) fn sign(g: f64) -> f64 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Euclidean length.
pub(super) fn l2_norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Scales `v` to unit Euclidean length (left as is when it is zero).
pub(super) fn normalize(v: &mut [f64]) {
    let n = l2_norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|a| *a /= n);
    }
}
