//! A view of a model with its logits divided by a temperature: the same decisions (a positive
//! scale keeps every arg-max), but a cross-entropy whose gradient no longer underflows.
//! Carlini & Wagner (2017) showed that defensive distillation's robustness was this effect
//! alone; the remedy is the same as theirs: attack logits of a sane scale.
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::{Classifier, GraphScan, ModelInfo};
use tch::{Device, Tensor};

/// Median top-two logit gap of the clean samples after rescaling: a confident but unsaturated
/// softmax (p ≈ 0.99 for a two-way decision).
pub const TARGET_GAP: f64 = 5.0;

/// `inner`'s logits divided by `temperature` (> 0).
pub struct RescaledLogits<'a> {
    inner: &'a dyn Classifier,
    temperature: f64,
    info: ModelInfo,
}

impl<'a> RescaledLogits<'a> {
    /// Divides by `temperature`.
    pub fn new(inner: &'a dyn Classifier, temperature: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(GibbonError::invalid("temperature", format!("{temperature} must be > 0")));
        }
        let mut info = inner.info().clone();
        info.arch = Some(format!(
            "rescaled[T={temperature:.4e}]({})",
            info.arch.clone().unwrap_or_default()
        ));
        Ok(RescaledLogits { inner, temperature, info })
    }

    /// The temperature that brings the median top-two logit gap of the first `n` samples of
    /// `data` to [`TARGET_GAP`] (never below 1: the view only ever cools a hot softmax).
    pub fn calibrated(inner: &'a dyn Classifier, data: &Dataset, n: Option<usize>) -> Result<Self> {
        let n = n.unwrap_or(data.len()).min(data.len()).min(512);
        let idx: Vec<usize> = (0..n).collect();
        let z = inner.logits(&data.try_batch(&idx, inner.device())?)?;
        let (top, _) = z.topk(2, -1, true, true);
        let gap = (top.select(1, 0) - top.select(1, 1)).median().double_value(&[]);
        let t = if gap.is_finite() { (gap / TARGET_GAP).max(1.0) } else { 1.0 };
        Self::new(inner, t)
    }

    /// The temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }
}

impl Classifier for RescaledLogits<'_> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward(x)? / self.temperature)
    }
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.logits_padded(x)? / self.temperature)
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.query_logits(x)? / self.temperature)
    }
    fn input_shape(&self) -> &[i64] {
        self.inner.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.inner.num_classes()
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn graph_scan(&self) -> GraphScan {
        self.inner.graph_scan()
    }
    /// The inner model's features (rescaling touches the logits only).
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        self.inner.features(x, layer)
    }
}
