//! Calibration: the threshold that gives a target false-positive rate on clean data.
//!
//! With n clean calibration scores sorted s₍₁₎ ≤ … ≤ s₍ₙ₎ and target rate α, the threshold is
//! τ = s₍ₖ₎ with k = ⌈(n + 1)(1 − α)⌉, and an input is flagged when its score is above τ (the
//! split-conformal quantile, Vovk et al. 2005; Angelopoulos & Bates 2021). For a fresh clean
//! input exchangeable with the calibration set, P(score > τ) ≤ (n + 1 − k)/(n + 1) ≤ α, and the
//! true false-positive rate of τ (a random variable through the calibration draw) follows
//! Beta(n + 1 − k, k) when scores have no ties (ties only lower it). gibbon reports its
//! one-sided 95% upper bound, the 0.95 quantile of that Beta distribution: with probability
//! 0.95 over the calibration set, the deployed threshold's false-positive rate is below it.
//!
//! Too small a set is refused: gibbon needs n ≥ ⌈10/α⌉ (at least 10 expected false positives
//! among the calibration scores, e.g. 200 for α = 5%), so that the threshold is not the
//! extreme order statistic and the bound is near the target (at n = 200, α = 0.05 the bound is
//! 0.078; at n = 1,000, 0.063).
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF};

/// The default target false-positive rate.
pub const DEFAULT_FPR: f64 = 0.05;
/// Confidence of the reported upper bound on the true false-positive rate.
pub const BOUND_CONFIDENCE: f64 = 0.95;
/// Expected false positives the calibration set must hold at least (see the module docs).
pub const MIN_EXPECTED_FALSE_POSITIVES: f64 = 10.0;

/// A calibrated threshold and what is known about its false-positive rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Scores above this are flagged.
    pub threshold: f64,
    /// The target false-positive rate α.
    pub fpr_target: f64,
    /// Calibration scores used.
    pub n: usize,
    /// The rank k of the threshold among the sorted calibration scores (1-based).
    pub rank: usize,
    /// Calibration scores above the threshold, and their share.
    pub flagged: usize,
    /// `flagged / n`.
    pub calibration_fpr: f64,
    /// One-sided 95% upper bound on the true false-positive rate of the threshold.
    pub fpr_upper_bound: f64,
    /// Standard deviation of the calibration scores (the adaptive attack's unit of score).
    pub score_scale: f64,
}

/// The smallest calibration set gibbon accepts for target rate `fpr`.
pub fn min_calibration_size(fpr: f64) -> usize {
    (MIN_EXPECTED_FALSE_POSITIVES / fpr).ceil() as usize
}

/// The one-sided upper bound at `confidence` on the true false-positive rate of the k-th
/// smallest of n scores used as threshold: the quantile of Beta(n + 1 − k, k).
pub fn fpr_upper_bound(n: usize, rank: usize, confidence: f64) -> f64 {
    let a = (n + 1 - rank) as f64;
    Beta::new(a, rank as f64).map(|b| b.inverse_cdf(confidence)).unwrap_or(1.0)
}

/// Calibrates a threshold on clean `scores` for the target false-positive rate `fpr`.
pub fn calibrate(scores: &[f64], fpr: f64) -> Result<Calibration> {
    if !(fpr > 0.0 && fpr < 1.0) {
        return Err(GibbonError::invalid("fpr", format!("{fpr}: must be in (0, 1)")));
    }
    let n = scores.len();
    let need = min_calibration_size(fpr);
    if n < need {
        return Err(GibbonError::invalid(
            "calib",
            format!(
                "{n} calibration samples are too few for a false-positive rate of {fpr}: need at \
                 least {need} (10 expected false positives, ceil(10 / fpr))"
            ),
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(GibbonError::invalid("calib", format!("calibration score {i} is not finite")));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (((n + 1) as f64) * (1.0 - fpr)).ceil() as usize;
    let rank = rank.clamp(1, n);
    let threshold = sorted[rank - 1];
    let flagged = sorted.iter().filter(|&&s| s > threshold).count();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let var = sorted.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1).max(1) as f64;
    Ok(Calibration {
        threshold,
        fpr_target: fpr,
        n,
        rank,
        flagged,
        calibration_fpr: flagged as f64 / n as f64,
        fpr_upper_bound: fpr_upper_bound(n, rank, BOUND_CONFIDENCE),
        score_scale: if var > 0.0 { var.sqrt() } else { 1.0 },
    })
}
