//! Detection metrics on anomalous (out-of-distribution or adversarial) scores against clean
//! scores, each with a 95% interval.
//!
//! - AUROC: P(anomalous score > clean score) + ½·P(equal) (the Mann-Whitney statistic, ties at
//!   half weight), with DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988) and a normal
//!   interval clipped to [0, 1].
//! - TPR and FPR at the calibrated threshold (flagged: score > threshold): exact
//!   Clopper-Pearson intervals.
//! - FPR at 95% TPR: the share of clean scores at or above the largest threshold that keeps at
//!   least 95% of the anomalous scores; interval: 2,000 bootstrap resamples of both sets
//!   (percentile), drawn from the counter-based generator keyed by (seed, resample), so it is
//!   reproducible.
use crate::error::{GibbonError, Result};
use crate::eval::clopper_pearson;
use crate::random::RngKey;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples for the FPR-at-95%-TPR interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The TPR of "FPR at 95% TPR".
pub const TPR_LEVEL: f64 = 0.95;

/// A rate with its count and 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Numerator.
    pub k: usize,
    /// Denominator.
    pub n: usize,
    /// k / n.
    pub rate: f64,
    /// Exact two-sided 95% Clopper-Pearson interval.
    pub ci95: [f64; 2],
}

impl Rate {
    /// `k` of `n` with its Clopper-Pearson interval.
    pub fn new(k: usize, n: usize) -> Self {
        let (lo, hi) = clopper_pearson(k, n, 0.05);
        Rate { k, n, rate: if n == 0 { 0.0 } else { k as f64 / n as f64 }, ci95: [lo, hi] }
    }
}

/// One detector on one anomalous set against clean data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionMetrics {
    /// Clean (negative) scores.
    pub n_clean: usize,
    /// Anomalous (positive) scores.
    pub n_anomalous: usize,
    /// Area under the ROC curve.
    pub auroc: f64,
    /// DeLong 95% interval.
    pub auroc_ci95: [f64; 2],
    /// Anomalous inputs flagged at the calibrated threshold.
    pub tpr_at_threshold: Rate,
    /// Clean test inputs flagged at the calibrated threshold (held-out check of calibration).
    pub fpr_at_threshold: Rate,
    /// FPR at 95% TPR.
    pub fpr_at_95_tpr: f64,
    /// Bootstrap 95% interval.
    pub fpr_at_95_tpr_ci95: [f64; 2],
}

/// The AUROC of `anomalous` against `clean` scores (ties count one half).
pub fn auroc(clean: &[f64], anomalous: &[f64]) -> f64 {
    let placements = placements(clean, anomalous);
    placements.iter().sum::<f64>() / placements.len().max(1) as f64
}

/// For each anomalous score, the share of clean scores below it (ties one half).
fn placements(clean: &[f64], anomalous: &[f64]) -> Vec<f64> {
    let mut sorted = clean.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len().max(1) as f64;
    anomalous
        .iter()
        .map(|&s| {
            let below = sorted.partition_point(|&c| c < s);
            let not_above = sorted.partition_point(|&c| c <= s);
            (below as f64 + 0.5 * (not_above - below) as f64) / n
        })
        .collect()
}

/// DeLong's 95% interval for the AUROC.
pub fn auroc_ci95(clean: &[f64], anomalous: &[f64]) -> [f64; 2] {
    let (m, n) = (anomalous.len(), clean.len());
    if m < 2 || n < 2 {
        return [0.0, 1.0];
    }
    let v10 = placements(clean, anomalous);
    // For each clean score, the share of anomalous scores above it (ties one half).
    let v01: Vec<f64> = placements(anomalous, clean).into_iter().map(|p| 1.0 - p).collect();
    let auc = v10.iter().sum::<f64>() / m as f64;
    let var = |v: &[f64]| v.iter().map(|x| (x - auc).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    let se = (var(&v10) / m as f64 + var(&v01) / n as f64).sqrt();
    let z = 1.959_963_984_540_054;
    [(auc - z * se).max(0.0), (auc + z * se).min(1.0)]
}

/// The FPR at the largest threshold t with at least `tpr` of the anomalous scores ≥ t.
pub fn fpr_at_tpr(clean: &[f64], anomalous: &[f64], tpr: f64) -> f64 {
    if anomalous.is_empty() || clean.is_empty() {
        return f64::NAN;
    }
    let mut sorted = anomalous.to_vec();
    sorted.sort_by(f64::total_cmp);
    let keep = (tpr * sorted.len() as f64).ceil() as usize;
    let t = sorted[sorted.len() - keep.clamp(1, sorted.len())];
    clean.iter().filter(|&&c| c >= t).count() as f64 / clean.len() as f64
}

fn resample(values: &[f64], key: RngKey) -> Vec<f64> {
    key.uniform(values.len())
        .into_iter()
        .map(|u| values[((u * values.len() as f64) as usize).min(values.len() - 1)])
        .collect()
}

/// Bootstrap 95% percentile interval of [`fpr_at_tpr`] at [`TPR_LEVEL`].
pub fn fpr_at_tpr_ci95(clean: &[f64], anomalous: &[f64], seed: u64) -> [f64; 2] {
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|b| {
            let c = resample(clean, RngKey::new(seed, b).stream(1));
            let a = resample(anomalous, RngKey::new(seed, b).stream(2));
            fpr_at_tpr(&c, &a, TPR_LEVEL)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (stats.len() - 1) as f64).round() as usize).min(stats.len() - 1)];
    [at(0.025), at(0.975)]
}

/// Every metric of `anomalous` against `clean` scores at `threshold`.
pub fn detection_metrics(
    clean: &[f64],
    anomalous: &[f64],
    threshold: f64,
    seed: u64,
) -> Result<DetectionMetrics> {
    if clean.is_empty() || anomalous.is_empty() {
        return Err(GibbonError::invalid(
            "data",
            "detection metrics need clean and anomalous samples",
        ));
    }
    let flagged = |v: &[f64]| v.iter().filter(|&&s| s > threshold).count();
    Ok(DetectionMetrics {
        n_clean: clean.len(),
        n_anomalous: anomalous.len(),
        auroc: auroc(clean, anomalous),
        auroc_ci95: auroc_ci95(clean, anomalous),
        tpr_at_threshold: Rate::new(flagged(anomalous), anomalous.len()),
        fpr_at_threshold: Rate::new(flagged(clean), clean.len()),
        fpr_at_95_tpr: fpr_at_tpr(clean, anomalous, TPR_LEVEL),
        fpr_at_95_tpr_ci95: fpr_at_tpr_ci95(clean, anomalous, seed),
    })
}
