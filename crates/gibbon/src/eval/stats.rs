//! Statistics for honest reporting.
use statrs::distribution::{Beta, ContinuousCDF};

/// Exact two-sided Clopper-Pearson interval for `successes` out of `n` at level `1 - alpha`
/// (e.g. `alpha = 0.05` for a 95% interval). Returns `(0, 1)` when `n == 0`.
pub fn clopper_pearson(successes: usize, n: usize, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let k = successes as f64;
    let n_f = n as f64;
    let lo = if successes == 0 {
        0.0
    } else {
        Beta::new(k, n_f - k + 1.0).map(|b| b.inverse_cdf(alpha / 2.0)).unwrap_or(0.0)
    };
    let hi = if successes == n {
        1.0
    } else {
        Beta::new(k + 1.0, n_f - k).map(|b| b.inverse_cdf(1.0 - alpha / 2.0)).unwrap_or(1.0)
    };
    (lo, hi)
}
