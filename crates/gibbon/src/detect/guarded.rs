//! The guarded model: a classifier plus a calibrated detector. An input is a success for the
//! attacker only if it is misclassified and not flagged; robust accuracy under detection is the
//! share of inputs that are classified correctly or flagged.
use super::{to_f64s, Detector};
use crate::error::Result;
use crate::model::Classifier;
use tch::Tensor;

/// A classifier and a detector with its threshold (flagged: score > threshold).
pub struct GuardedModel<'a> {
    /// The classifier.
    pub model: &'a dyn Classifier,
    /// The detector.
    pub detector: &'a dyn Detector,
    /// The calibrated threshold.
    pub threshold: f64,
}

/// The guarded model's answer for one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The classifier's prediction.
    pub prediction: i64,
    /// The detector's score.
    pub score: f64,
    /// score > threshold.
    pub flagged: bool,
}

impl Verdict {
    /// True when the guarded model holds: the prediction is `label` or the input is flagged.
    pub fn holds(&self, label: i64) -> bool {
        self.prediction == label || self.flagged
    }
}

impl GuardedModel<'_> {
    /// Fresh verdicts for a batch `x` (no graph).
    pub fn verdicts(&self, x: &Tensor) -> Result<Vec<Verdict>> {
        let predictions =
            Vec::<i64>::try_from(&self.model.predict(x)?.to_device(tch::Device::Cpu))?;
        let scores = to_f64s(&self.detector.score(self.model, x)?)?;
        Ok(predictions
            .into_iter()
            .zip(scores)
            .map(|(prediction, score)| Verdict {
                prediction,
                score,
                flagged: score > self.threshold || score.is_nan(),
            })
            .collect())
    }
}
