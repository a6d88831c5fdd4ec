//! Screens: per-input scores with calibrated thresholds that the guard's policy turns into
//! decisions, and the clean calibration sample each one keeps for the drift test.
//!
//! The guard is generic over [`Screen`] (what the policy, the drift monitors and the health
//! endpoint read, shared with the server's threads) and [`ScreenScorer`] (what scores each pass,
//! on the model's thread). Two implementations ship: [`MspScreen`] (maximum softmax probability,
//! Hendrycks & Gimpel 2017, calibrated by the guard itself) and [`DetectorScreen`] (any detector
//! fitted and calibrated by `gibbon detect fit`). A screen's score grows with how unusual an
//! input looks: an input is *flagged* when its score is above the threshold.
use crate::data::Dataset;
use crate::detect::file::DetectorFile;
use crate::detect::{score_dataset, to_f64s, Detector};
use crate::model::Classifier;
use crate::{GibbonError, Result};
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
    /// Scores of the inputs `x` (`rows × ...`), whose softmax probabilities are `probs`
    /// (`rows × classes`, row-major).
    fn scores(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        probs: &[f32],
        classes: usize,
    ) -> Result<Vec<f64>>;
}

/// A screen as the service runs it: its calibration (shared) and its scorer (model thread).
pub struct ServedScreen {
    /// Name, threshold, target FPR and clean calibration scores.
    pub screen: Arc<dyn Screen>,
    /// Scores each pass.
    pub scorer: Box<dyn ScreenScorer>,
}

/// Maximum softmax probability: score `1 − max_k p_k`, threshold the `1 − fpr` quantile of the
/// clean calibration scores (so about `fpr` of clean inputs are flagged).
#[derive(Debug, Clone)]
pub struct MspScreen {
    threshold: f64,
    fpr: f64,
    calibration: Vec<f64>,
}

impl MspScreen {
    /// Calibrates on the softmax probabilities of a clean slice (`rows × classes`).
    pub fn calibrate(probs: &[f32], classes: usize, fpr: f64) -> Result<MspScreen> {
        if !(fpr > 0.0 && fpr < 1.0) {
            return Err(GibbonError::invalid("fpr", format!("{fpr} is not in (0, 1)")));
        }
        let mut calibration = msp_scores(probs, classes);
        if calibration.len() < 20 {
            return Err(GibbonError::invalid(
                "calib-n",
                format!("{} calibration inputs; at least 20 are needed", calibration.len()),
            ));
        }
        calibration.sort_by(f64::total_cmp);
        let threshold = upper_quantile(&calibration, fpr);
        Ok(MspScreen { threshold, fpr, calibration })
    }
}

/// `1 − max p` of every row.
fn msp_scores(probs: &[f32], classes: usize) -> Vec<f64> {
    probs
        .chunks(classes.max(1))
        .map(|row| 1.0 - row.iter().copied().fold(f32::MIN, f32::max) as f64)
        .collect()
}

/// The smallest calibration value with at most a fraction `fpr` of the sorted sample strictly
/// above it.
pub fn upper_quantile(sorted: &[f64], fpr: f64) -> f64 {
    let n = sorted.len();
    let allowed_above = (fpr * n as f64).floor() as usize;
    sorted[n - 1 - allowed_above.min(n - 1)]
}

impl ScreenScorer for MspScreen {
    fn scores(
        &self,
        _: &dyn Classifier,
        _: &Tensor,
        probs: &[f32],
        classes: usize,
    ) -> Result<Vec<f64>> {
        Ok(msp_scores(probs, classes))
    }
}

impl Screen for MspScreen {
    fn name(&self) -> &str {
        "msp"
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

/// Scores a pass with a `gibbon detect` detector.
struct DetectorScorer(Box<dyn Detector>);

impl ScreenScorer for DetectorScorer {
    fn scores(&self, model: &dyn Classifier, x: &Tensor, _: &[f32], _: usize) -> Result<Vec<f64>> {
        to_f64s(&self.0.score(model, x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_flags_at_most_the_target_fraction_of_calibration() {
        // 100 rows of 2 classes with top probabilities 0.50, 0.505, ..., 0.995.
        let probs: Vec<f32> =
            (0..100).flat_map(|i| [0.5 + i as f32 * 0.005, 0.5 - i as f32 * 0.005]).collect();
        let s = MspScreen::calibrate(&probs, 2, 0.05).unwrap();
        let flagged = s.calibration().iter().filter(|&&c| c > s.threshold()).count();
        assert_eq!(flagged, 5);
        assert!((s.tail_probability(s.threshold()) - 0.06).abs() < 1e-9);
        assert_eq!(s.tail_probability(1.0), 0.0);
        assert_eq!(s.tail_probability(-1.0), 1.0);
        assert!(MspScreen::calibrate(&probs, 2, 0.0).is_err());
        assert!(MspScreen::calibrate(&probs[..20], 2, 0.05).is_err());
    }
}
