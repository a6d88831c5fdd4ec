//! Drift: a sliding window of recent values (a screen's scores, the model's confidences)
//! compared with the clean calibration sample by the two-sample Kolmogorov–Smirnov test.
use serde::Serialize;
use std::collections::VecDeque;

/// The two-sample KS statistic `D = sup |F_a − F_b|` of two samples sorted ascending.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < n && j < m {
        // Step past every copy of the smaller value in both samples (ties move together).
        let x = a[i].min(b[j]);
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    d
}

/// The asymptotic p-value of `D` for samples of sizes `n` and `m` (Kolmogorov's distribution
/// with Stephens' small-sample correction, as in Numerical Recipes' `kstwo`).
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    kolmogorov_q(lambda)
}

/// `Q_KS(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}`, clamped to [0, 1].
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let (mut sum, mut sign) = (0.0, 1.0);
    for k in 1..=100 {
        let term = sign * 2.0 * (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 * sum.abs().max(1e-300) {
            break;
        }
        sign = -sign;
    }
    sum.clamp(0.0, 1.0)
}

/// One monitored signal's test result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftReport {
    pub signal: String,
    /// Values in the window.
    pub window_n: usize,
    pub calibration_n: usize,
    pub ks_statistic: f64,
    /// `None` until the window holds `min_samples` values.
    pub p_value: Option<f64>,
    /// True when `p_value` is below the alert level.
    pub drifted: bool,
}

/// A sliding window over one signal and its calibration sample.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    signal: String,
    calibration: Vec<f64>,
    window: VecDeque<f64>,
    capacity: usize,
    min_samples: usize,
    p_alert: f64,
}

impl DriftMonitor {
    /// A monitor of `signal` against `calibration` (any order).
    pub fn new(
        signal: &str,
        mut calibration: Vec<f64>,
        capacity: usize,
        min_samples: usize,
        p_alert: f64,
    ) -> Self {
        calibration.sort_by(f64::total_cmp);
        DriftMonitor {
            signal: signal.to_string(),
            calibration,
            window: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            min_samples,
            p_alert,
        }
    }

    /// Adds a value, dropping the oldest when the window is full.
    pub fn push(&mut self, value: f64) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(value);
    }

    /// The KS test of the current window against the calibration sample.
    pub fn report(&self) -> DriftReport {
        let mut recent: Vec<f64> = self.window.iter().copied().collect();
        recent.sort_by(f64::total_cmp);
        let d = ks_statistic(&recent, &self.calibration);
        let p_value = (recent.len() >= self.min_samples.max(1))
            .then(|| ks_p_value(d, recent.len(), self.calibration.len()));
        DriftReport {
            signal: self.signal.clone(),
            window_n: recent.len(),
            calibration_n: self.calibration.len(),
            ks_statistic: d,
            p_value,
            drifted: p_value.is_some_and(|p| p < self.p_alert),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_known_answers() {
        // Disjoint samples: D = 1.
        assert_eq!(ks_statistic(&[0.0, 1.0, 2.0], &[5.0, 6.0]), 1.0);
        // Identical samples (with ties): D = 0, p = 1.
        let a = [0.0, 0.0, 1.0, 2.0];
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(ks_p_value(0.0, 4, 4), 1.0);
        // Interleaved: {1,3} vs {2,4}: F_a − F_b peaks at 1/2.
        assert!((ks_statistic(&[1.0, 3.0], &[2.0, 4.0]) - 0.5).abs() < 1e-12);
        // Q_KS(1.36) ≈ 0.049 (the classic 5% critical value), Q_KS(1.63) ≈ 0.010.
        assert!((kolmogorov_q(1.358) - 0.05).abs() < 1e-3);
        assert!((kolmogorov_q(1.628) - 0.01).abs() < 5e-4);
    }
}
