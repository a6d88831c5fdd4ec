//! Gaussian noise augmentation: train on `x + σ·N(0, I)` (no clipping to the box), the base
//! classifier training of randomized smoothing (Cohen, Rosenfeld & Kolter 2019, who train
//! with the same σ they certify with, e.g. σ ∈ {0.12, 0.25, 0.5, 1.0} on CIFAR-10). The
//! noise comes from the counter-based generator (stream 2 of each sample's key), so a sample's
//! noise depends on (seed, index, epoch) only.
use super::{Batch, Trainer};
use crate::error::{GibbonError, Result};
use crate::model::{BuiltinModel, Classifier};
use crate::threat::Norm;
use serde::Serialize;
use tch::Tensor;

/// Gaussian noise augmentation settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseTraining {
    /// Standard deviation of the noise, in pixel units.
    pub sigma: f64,
}

impl NoiseTraining {
    /// These settings after checking σ ≥ 0 and finite.
    pub fn validated(&self) -> Result<Self> {
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(GibbonError::invalid("sigma", format!("{} must be >= 0", self.sigma)));
        }
        Ok(self.clone())
    }
}

impl Trainer for NoiseTraining {
    fn name(&self) -> &'static str {
        "noise"
    }
    fn passes_per_batch(&self) -> usize {
        1
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        None
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        let shape = &batch.x.size()[1..];
        let noise = crate::random::stacked(batch.keys, shape, batch.x.device(), |k, n| {
            k.stream(2).normal(n)
        });
        model.set_train(true);
        let noisy = batch.x + noise * self.sigma;
        Ok(model.forward(&noisy)?.cross_entropy_for_logits(batch.y))
    }
}
