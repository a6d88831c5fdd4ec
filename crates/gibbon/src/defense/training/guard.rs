//! The catastrophic-overfitting guard of fast FGSM training (Wong, Rice & Kolter 2020, §5):
//! FGSM-trained models can lose all PGD robustness within an epoch, so the robust accuracy of a
//! PGD check on held-out data is watched after every epoch, and a collapse rolls the model
//! back to the last good epoch and stops the run.
//!
//! Two rules, either one fires:
//! - the paper's: robust accuracy more than `drop` (absolute) below the best epoch so far;
//! - a collapse from a low level, which the absolute rule misses: robust accuracy below half of
//!   the best, by more than [`SIGNIFICANCE_Z`] binomial standard errors of the best on the
//!   hold-out slice (so that 17 → 8 of 1,000 is noise, but 198 → 6 of 1,000 is a collapse; the
//!   latter was measured on MNIST with the cyclic rate peaking at epoch 2 of 5).

/// What the guard says about an epoch's hold-out robust accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardVerdict {
    /// Robust accuracy is within the allowed drop of the best epoch so far: keep these weights
    /// as the last good ones.
    Good,
    /// Robust accuracy fell more than the allowed drop below the best epoch so far.
    Collapsed {
        /// The best robust accuracy seen before.
        best: f64,
        /// This epoch's robust accuracy.
        now: f64,
    },
}

/// A fall below this share of the best robust accuracy is a collapse when it is significant.
pub const COLLAPSE_SHARE: f64 = 0.5;
/// Standard errors of the best epoch's robust accuracy a fall must exceed for the share rule.
pub const SIGNIFICANCE_Z: f64 = 3.0;

/// Watches per-epoch robust accuracy for a collapse.
#[derive(Debug, Clone, PartialEq)]
pub struct OverfitGuard {
    drop: f64,
    best: Option<f64>,
}

impl OverfitGuard {
    /// A guard that fires when robust accuracy falls more than `drop` below its best.
    pub fn new(drop: f64) -> Self {
        OverfitGuard { drop, best: None }
    }

    /// Judges an epoch's robust accuracy, measured on `holdout` samples (a NaN counts as a
    /// collapse).
    pub fn check(&mut self, robust: f64, holdout: usize) -> GuardVerdict {
        let best = self.best.unwrap_or(robust);
        let standard_error = (best * (1.0 - best) / holdout.max(1) as f64).sqrt();
        let share_rule =
            robust < COLLAPSE_SHARE * best && best - robust > SIGNIFICANCE_Z * standard_error;
        if robust.is_nan() || robust < best - self.drop || share_rule {
            return GuardVerdict::Collapsed { best, now: robust };
        }
        self.best = Some(best.max(robust));
        GuardVerdict::Good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_fires_on_a_collapse_and_not_on_a_small_dip() {
        let mut g = OverfitGuard::new(0.2);
        assert_eq!(g.check(0.55, 1000), GuardVerdict::Good);
        assert_eq!(g.check(0.80, 1000), GuardVerdict::Good);
        // A dip of 0.15 below the best is tolerated.
        assert_eq!(g.check(0.65, 1000), GuardVerdict::Good);
        // A collapse to 0.02 is measured against the best epoch (0.80), not the last one.
        assert_eq!(g.check(0.02, 1000), GuardVerdict::Collapsed { best: 0.80, now: 0.02 });
    }

    #[test]
    fn a_slow_slide_is_caught_against_the_best_epoch() {
        let mut g = OverfitGuard::new(0.2);
        for r in [0.9, 0.8, 0.75] {
            assert_eq!(g.check(r, 1000), GuardVerdict::Good);
        }
        assert!(matches!(g.check(0.69, 1000), GuardVerdict::Collapsed { .. }));
        let nan = OverfitGuard::new(0.2).check(f64::NAN, 1000);
        assert!(matches!(nan, GuardVerdict::Collapsed { .. }));
    }

    #[test]
    fn a_collapse_from_a_low_level_fires_and_noise_does_not() {
        // Measured: fast FGSM with the cyclic rate peaking at epoch 2 of 5 went 0.198 -> 0.006
        // (APGD-CE on 1,000 held-out images), a fall of 0.192, under the absolute drop of 0.2.
        let mut g = OverfitGuard::new(0.2);
        assert_eq!(g.check(0.056, 1000), GuardVerdict::Good);
        assert_eq!(g.check(0.198, 1000), GuardVerdict::Good);
        assert_eq!(g.check(0.006, 1000), GuardVerdict::Collapsed { best: 0.198, now: 0.006 });
        // 17 -> 8 of 1,000 is below half, but within 3 standard errors (3 x 0.0041): noise.
        let mut g = OverfitGuard::new(0.2);
        assert_eq!(g.check(0.017, 1000), GuardVerdict::Good);
        assert_eq!(g.check(0.008, 1000), GuardVerdict::Good);
        // The same fall on a slice of 100 is not significant either; on 100,000 it is.
        let mut small = OverfitGuard::new(0.2);
        small.check(0.2, 100);
        assert_eq!(small.check(0.09, 100), GuardVerdict::Good);
        let mut large = OverfitGuard::new(0.2);
        large.check(0.2, 100_000);
        assert!(matches!(large.check(0.09, 100_000), GuardVerdict::Collapsed { .. }));
    }
}
