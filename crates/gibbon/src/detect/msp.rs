//! Maximum softmax probability (Hendrycks & Gimpel 2017, "A baseline for detecting
//! misclassified and out-of-distribution examples in neural networks"): a classifier is less
//! confident on inputs unlike its training data. Score = −log max_k softmax(z)_k, a monotone
//! transform of the paper's −max softmax (the same ranking, AUROC and decisions) computed as
//! log(1 + Σ_{j≠ŷ} exp(z_j − z_ŷ)) so that confident inputs do not all tie at a max softmax of
//! exactly 1.0 in floating point. No constants, nothing fitted.
use super::{Detector, FitInput};
use crate::error::Result;
use crate::model::Classifier;
use tch::Tensor;

/// The maximum-softmax-probability detector.
#[derive(Debug, Clone, Default)]
pub struct MaxSoftmax;

impl Detector for MaxSoftmax {
    fn kind(&self) -> &'static str {
        "msp"
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        Ok(super::neg_log_max_softmax(&model.logits_padded(x)?))
    }
    fn score_logits(&self, logits: &Tensor) -> Option<Tensor> {
        Some(super::neg_log_max_softmax(logits))
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

pub(super) fn fit(_input: &FitInput) -> Result<Box<dyn Detector>> {
    Ok(Box::new(MaxSoftmax))
}

pub(super) fn load(_params: &serde_json::Value) -> Result<Box<dyn Detector>> {
    Ok(Box::new(MaxSoftmax))
}
