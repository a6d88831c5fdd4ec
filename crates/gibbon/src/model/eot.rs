//! Expectation over Transformation (Athalye, Carlini, Mishra & Sutskever 2018; Athalye, Carlini
//! & Wagner 2018, section 4.3) as a model view, so that every gradient attack (FGSM, PGD, APGD,
//! FAB, DeepFool, C&W) can use it: on the autograd path (inputs that require a gradient) the
//! view's logits are the mean of `draws` independent forward passes of a randomized model, so
//! the input gradient is the mean gradient over the randomness rather than one draw's. Every
//! other answer (logits without autograd, predictions, query passes) is one pass of the model
//! as deployed, so an attack's success checks and the verifier's votes judge the deployed model.
use super::{Classifier, GraphScan, ModelInfo};
use crate::error::{GibbonError, Result};
use tch::{Device, Tensor};

/// A randomized model's EOT view with `draws` passes per gradient.
pub struct EotView<M: Classifier> {
    inner: M,
    draws: usize,
    info: ModelInfo,
}

impl<M: Classifier> EotView<M> {
    /// Averages `draws` (≥ 1) passes on the autograd path.
    pub fn new(inner: M, draws: usize) -> Result<Self> {
        if draws == 0 {
            return Err(GibbonError::invalid("eot", "needs at least 1 draw"));
        }
        let mut info = inner.info().clone();
        info.arch = Some(format!("eot[{draws}]({})", info.arch.clone().unwrap_or_default()));
        Ok(EotView { inner, draws, info })
    }

    /// Passes averaged per gradient.
    pub fn draws(&self) -> usize {
        self.draws
    }

    fn expected(&self, x: &Tensor, pass: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let mut sum = pass(x)?;
        for _ in 1..self.draws {
            // Out of place: the last op's backward may need its own output (a softmax).
            sum = sum.f_add(&pass(x)?)?;
        }
        Ok(sum / self.draws as f64)
    }
}

impl<M: Classifier> Classifier for EotView<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match x.requires_grad() {
            true => self.expected(x, |t| self.inner.forward(t)),
            false => self.inner.forward(x),
        }
    }
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        match x.requires_grad() {
            true => self.expected(x, |t| self.inner.logits_padded(t)),
            false => self.inner.logits_padded(x),
        }
    }
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.logits(x)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.predict(x)
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_logits(x)
    }
    fn query_predict(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_predict(x)
    }
    fn labels_only(&self) -> bool {
        self.inner.labels_only()
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
    /// On the autograd path the mean features of `draws` passes (the gradient a feature-space
    /// detector's adaptive attack follows is the expected one), else one pass as deployed.
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        match x.requires_grad() {
            true => self.expected(x, |t| self.inner.features(t, layer)),
            false => self.inner.features(x, layer),
        }
    }
}
