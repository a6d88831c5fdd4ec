//! Standard training: cross-entropy on clean inputs, the baseline every defense is compared to.
use super::{Batch, Trainer};
use crate::error::Result;
use crate::model::{BuiltinModel, Classifier};
use crate::threat::Norm;
use tch::Tensor;

/// Cross-entropy on the clean batch (one pass per step).
pub struct StandardTrainer;

impl Trainer for StandardTrainer {
    fn name(&self) -> &'static str {
        "standard"
    }
    fn passes_per_batch(&self) -> usize {
        1
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        None
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        model.set_train(true);
        Ok(model.forward(batch.x)?.cross_entropy_for_logits(batch.y))
    }
}
