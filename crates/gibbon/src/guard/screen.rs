//! Screens: per-input scores with calibrated thresholds that the guard's policy turns into
//! decisions, and the clean calibration sample each one keeps for the drift test.
//!
//! The guard is generic over [`Screen`] (what the policy, the drift monitors and the health
//! endpoint read, shared with the server's threads) and [`ScreenScorer`] (what scores each pass,
//! on the model's thread). Every screen is a `gibbon detect` detector ([`DetectorScreen`]) with
//! detect's calibration (the split-conformal threshold of [`crate::detect::calibrate`]): either
//! fitted and calibrated by `gibbon detect fit` (a `--detector` file), or, by default, the
//! maximum softmax probability detector (Hendrycks & Gimpel 2017, [`MaxSoftmax`]) calibrated on
//! the guard's own clean slice. A screen's score grows with how unusual an input looks: an input
//! is *flagged* when its score is above the threshold.
use crate::data::Dataset;
use crate::detect::calibrate::{calibrate, Calibration};
use crate::detect::file::DetectorFile;
use crate::detect::{score_dataset, to_f64s, Detector, MaxSoftmax};
use crate::model::Classifier;
use crate::Result;
use std::sync::Arc;
use tch::Tensor;

/// One detector in front of the model.
pub trait Screen: Send + Sync {
    /// The name scores are reported under (JSON, metrics, policy rules).
    fn name(&self) -> &str;
    /// The calibrated threshold: scores above it are flagged.
    fn threshold(&self) -> f64;
    /// The false-positive rate the threshold was calibrated for on clean data.
    fn target_fpr(&self) -> f64;
    /// The scores of the clean calibration slice, sorted ascending.
    fn calibration(&self) -> &[f64];

    /// The fraction of clean calibration scores at or above `score` (its tail probability on
    /// clean data; 1 for a score below every calibration score).
    fn tail_probability(&self, score: f64) -> f64 {
        let cal = self.calibration();
        if cal.is_empty() {
            return 1.0;
        }
        let below = cal.partition_point(|&c| c < score);
        (cal.len() - below) as f64 / cal.len() as f64
    }
}

/// How a screen scores one pass, on the model's thread (it may run the model again, read
/// features or perturb the inputs).
pub trait ScreenScorer {
    /// Scores of the inputs `x` (`rows × ...`), on which the model gave `logits`
    /// (`rows × classes`).
    fn scores(&self, model: &dyn Classifier, x: &Tensor, logits: &Tensor) -> Result<Vec<f64>>;
}

/// A screen as the service runs it: its calibration (shared) and its scorer (model thread).
pub struct ServedScreen {
    /// Name, threshold, target FPR and clean calibration scores.
    pub screen: Arc<dyn Screen>,
    /// Scores each pass.
    pub scorer: Box<dyn ScreenScorer>,
}

/// A detector from `gibbon detect fit` in front of the model: the threshold and target
/// false-positive rate are the detector file's (calibrated by `gibbon detect`); the clean score
/// distribution that the refuse rule's tail probability and the drift test compare against is
/// the detector's scores on the guard's own clean calibration slice.
#[derive(Debug, Clone)]
pub struct DetectorScreen {
    name: String,
    threshold: f64,
    fpr: f64,
    calibration: Vec<f64>,
}

impl DetectorScreen {
    /// Loads `file`'s detector for `model` (refused when the file was fitted for another
    /// model) and scores `calib` with it.
    pub fn load(
        file: &DetectorFile,
        path: &std::path::Path,
        model: &dyn Classifier,
        calib: &Dataset,
    ) -> Result<ServedScreen> {
        file.check_model(model.info(), path)?;
        let detector = file.detector()?;
        let mut calibration =
            score_dataset(detector.as_ref(), model, calib, model.device(), &mut |_| {})?;
        calibration.sort_by(f64::total_cmp);
        let screen = DetectorScreen {
            name: file.kind.clone(),
            threshold: file.calibration.threshold,
            fpr: file.calibration.fpr_target,
            calibration,
        };
        Ok(ServedScreen { screen: Arc::new(screen), scorer: Box::new(DetectorScorer(detector)) })
    }

    /// Calibrates `detector` on the clean slice `calib` for the target false-positive rate
    /// `fpr`, with detect's split-conformal rule ([`calibrate`]: the ⌈(n + 1)(1 − fpr)⌉-th
    /// smallest score; too small a slice is refused). Returns the served screen and the
    /// calibration (threshold rank, flagged share, bound on the true false-positive rate).
    pub fn calibrate(
        detector: Box<dyn Detector>,
        model: &dyn Classifier,
        calib: &Dataset,
        fpr: f64,
    ) -> Result<(ServedScreen, Calibration)> {
        let scores = score_dataset(detector.as_ref(), model, calib, model.device(), &mut |_| {})?;
        let (screen, calibration) = DetectorScreen::from_scores(detector.kind(), scores, fpr)?;
        let served =
            ServedScreen { screen: Arc::new(screen), scorer: Box::new(DetectorScorer(detector)) };
        Ok((served, calibration))
    }

    /// The maximum-softmax-probability screen ([`MaxSoftmax`]) calibrated on `calib`.
    pub fn msp(
        model: &dyn Classifier,
        calib: &Dataset,
        fpr: f64,
    ) -> Result<(ServedScreen, Calibration)> {
        DetectorScreen::calibrate(Box::new(MaxSoftmax), model, calib, fpr)
    }

    /// A screen named `name` calibrated on clean `scores` with detect's rule.
    pub fn from_scores(
        name: &str,
        mut scores: Vec<f64>,
        fpr: f64,
    ) -> Result<(DetectorScreen, Calibration)> {
        let calibration = calibrate(&scores, fpr)?;
        scores.sort_by(f64::total_cmp);
        let screen = DetectorScreen {
            name: name.to_string(),
            threshold: calibration.threshold,
            fpr,
            calibration: scores,
        };
        Ok((screen, calibration))
    }
}

impl Screen for DetectorScreen {
    fn name(&self) -> &str {
        &self.name
    }
    fn threshold(&self) -> f64 {
        self.threshold
    }
    fn target_fpr(&self) -> f64 {
        self.fpr
    }
    fn calibration(&self) -> &[f64] {
        &self.calibration
    }
}

/// Scores a pass with a `gibbon detect` detector: from the pass's logits when the detector
/// is a function of them (no second model pass), else on the inputs.
pub struct DetectorScorer(pub Box<dyn Detector>);

impl ScreenScorer for DetectorScorer {
    fn scores(&self, model: &dyn Classifier, x: &Tensor, logits: &Tensor) -> Result<Vec<f64>> {
        match self.0.score_logits(logits) {
            Some(scores) => to_f64s(&scores),
            None => to_f64s(&self.0.score(model, x)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// detect's split-conformal rule: with n = 200 distinct clean scores and a 5% target, the
    /// threshold is the ⌈201 × 0.95⌉ = 191st smallest, so 9 of 200 (4.5%) are flagged, and a
    /// fresh clean score exceeds it with probability at most 9/201 ≤ 0.05. (The guard's former
    /// rule, at most ⌊0.05 n⌋ above, flagged 10/200 = 5% with no such guarantee; it flagged
    /// 5/100 on a 100-row slice, which detect refuses: fewer than 10 expected false positives.)
    #[test]
    fn threshold_is_detects_split_conformal_quantile() {
        let scores: Vec<f64> = (0..200).rev().map(f64::from).collect();
        let (s, cal) = DetectorScreen::from_scores("msp", scores.clone(), 0.05).unwrap();
        assert_eq!((cal.n, cal.rank, cal.flagged), (200, 191, 9));
        assert_eq!(s.threshold(), 190.0);
        let flagged = s.calibration().iter().filter(|&&c| c > s.threshold()).count();
        assert_eq!(flagged, 9);
        assert!((s.tail_probability(s.threshold()) - 10.0 / 200.0).abs() < 1e-12);
        assert_eq!(s.tail_probability(250.0), 0.0);
        assert_eq!(s.tail_probability(-1.0), 1.0);
        assert!(DetectorScreen::from_scores("msp", scores.clone(), 0.0).is_err());
        let e = DetectorScreen::from_scores("msp", scores[..100].to_vec(), 0.05).unwrap_err();
        assert!(e.to_string().contains("need at least 200"), "{e}");
    }
}
