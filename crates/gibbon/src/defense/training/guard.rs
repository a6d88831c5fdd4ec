//! The catastrophic-overfitting guard of fast FGSM training (Wong, Rice & Kolter 2020, §5):
//! FGSM-trained models can lose all PGD robustness within an epoch, so the robust accuracy of a
//! PGD check on held-out data is watched after every epoch, and a collapse rolls the model
//! back to the last good epoch and stops the run.

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

    /// Judges an epoch's robust accuracy (a NaN counts as a collapse).
    pub fn check(&mut self, robust: f64) -> GuardVerdict {
        let best = self.best.unwrap_or(robust);
        if robust.is_nan() || robust < best - self.drop {
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
        assert_eq!(g.check(0.55), GuardVerdict::Good);
        assert_eq!(g.check(0.80), GuardVerdict::Good);
        // A dip of 0.15 below the best is tolerated.
        assert_eq!(g.check(0.65), GuardVerdict::Good);
        // A collapse to 0.02 is measured against the best epoch (0.80), not the last one.
        assert_eq!(g.check(0.02), GuardVerdict::Collapsed { best: 0.80, now: 0.02 });
    }

    #[test]
    fn a_slow_slide_is_caught_against_the_best_epoch() {
        let mut g = OverfitGuard::new(0.2);
        for r in [0.9, 0.8, 0.75] {
            assert_eq!(g.check(r), GuardVerdict::Good);
        }
        assert!(matches!(g.check(0.69), GuardVerdict::Collapsed { .. }));
        assert!(matches!(OverfitGuard::new(0.2).check(f64::NAN), GuardVerdict::Collapsed { .. }));
    }
}
