//! Models: anything that maps a batch of inputs in pixel space to logits.
//!
//! [`Classifier`] is the white-box interface: logits that are differentiable with respect to the
//! input through libtorch autograd. Weight gradients are always off in a loaded classifier, so an
//! attack's backward pass computes only the input gradient. Normalization (mean/std) is a layer
//! inside the model ([`Normalized`]), never a step of the attack.
//!
//! Every forward pass goes through [`Classifier::logits_padded`], which runs the model on
//! fixed-shape tiles: always exactly [`TILE_ROWS`] rows, the last tile padded with zero rows.
//! libtorch and oneDNN pick kernels (and summation orders) by shape and CPU: AVX2, AVX-512 and
//! AMX machines choose differently, and a 200-row batch on AVX-512 rounds differently from the
//! same rows in smaller batches. With one shape for every pass, a sample's logits and input
//! gradient do not depend on how many other samples share its batch, whatever kernels the CPU
//! gets: per-sample results are bit-identical for every batch size on a given machine and
//! thread count. Across thread counts oneDNN may split work differently, so logits can differ
//! in the last bits (about 1e-6); see README "Determinism". The determinism tests check this
//! under every `ATEN_CPU_CAPABILITY` / `ONEDNN_MAX_CPU_ISA` the machine supports.
mod builtin;
mod eot;
pub mod frozen;
pub mod onnx;
pub mod precision;
mod query;
pub mod remote;
pub mod scan;
pub mod serve;
mod spec;
mod torchscript;
mod torchscript_bpda;
mod torchscript_features;
pub mod torchscript_scan;
pub mod weights;

pub use builtin::{Arch, BuiltinModel};
pub use eot::EotView;
pub use onnx::OnnxModel;
pub use precision::{Precision, PrecisionChoice, SearchModel};
pub use query::{
    LabelModel, LabelOracle, LabelsOf, Oracle, PredictionsOf, QueryLog, ScoreModel, ScoreOracle,
    ScoresOf,
};
pub use remote::{RemoteModel, RemoteOptions, RemoteOutput};
pub use scan::{FlaggedOp, GraphScan, OpEffect};
pub use serve::ModelServer;
pub use spec::{load_builtin_model, load_model, load_model_with, ModelSpec};
pub use torchscript::TorchScriptModel;

use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Rows of every tile a model computes (see the module docs). 32 rows keep a CNN's kernels
/// efficient on CPU while wasting little on the small batches of an attack's last survivors.
pub const TILE_ROWS: i64 = 32;

/// Where a model came from, recorded in every result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    /// The model spec as given (path or `builtin:NAME`).
    pub path: String,
    /// sha256 of the weight or model file, hex.
    pub sha256: String,
    /// `torchscript`, `safetensors`, `builtin` or `onnx`.
    pub kind: String,
    /// Architecture name where known.
    pub arch: Option<String>,
}

/// A white-box classifier over inputs in pixel space.
pub trait Classifier {
    /// Logits `[B, classes]` for inputs `[B, ...input_shape]`; differentiable with respect to `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Shape of one input, e.g. `[1, 28, 28]`.
    fn input_shape(&self) -> &[i64];
    /// Number of classes (length of a logit row).
    fn num_classes(&self) -> i64;
    /// Device the model lives on; inputs are moved there by the caller.
    fn device(&self) -> Device;
    /// Provenance for results.
    fn info(&self) -> &ModelInfo;

    /// Logits computed on tiles of [`TILE_ROWS`] rows (batch-size-invariant numerics);
    /// differentiable with respect to `x`.
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        forward_tiled(x, TILE_ROWS, |t| self.forward(t))
    }

    /// Logits without building an autograd graph.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.logits_padded(x))
    }

    /// Predicted classes `[B]` (int64).
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.logits(x)?.argmax(-1, false))
    }

    /// Logits for query-only use (score- and decision-based attacks, the model server): no
    /// autograd, and possibly a faster copy of the model that may differ from
    /// [`Classifier::logits`] by float rounding but never in the arg-max (see
    /// [`frozen`]). The default is [`Classifier::logits`].
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.logits(x)
    }

    /// Predicted classes `[B]` for query-only use: [`Classifier::predict`] for a labels-only
    /// model, else the arg-max of [`Classifier::query_logits`] (the same classes as `predict`).
    fn query_predict(&self, x: &Tensor) -> Result<Tensor> {
        if self.labels_only() {
            return self.predict(x);
        }
        Ok(self.query_logits(x)?.argmax(-1, false))
    }

    /// True for a model that answers with labels only (a remote labels-only server): it has
    /// no scores, so evaluations judge it by [`Classifier::predict`] and only decision-based
    /// attacks can run against it.
    fn labels_only(&self) -> bool {
        false
    }

    /// Per-sample loss values `[B]` and the gradient of their sum with respect to `x`.
    /// `loss` maps logits `[B, K]` to per-sample losses `[B]`.
    fn loss_and_input_grad(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        precision::input_grad_of(x, loss, |xg| self.logits_padded(xg))
    }

    /// [`Classifier::loss_and_input_grad`] with the rows `exact` computed in float32 even
    /// when the model searches in reduced precision (a gradient attack's refinement steps;
    /// see [`precision`]). The default: every row as [`Classifier::loss_and_input_grad`].
    fn loss_and_input_grad_rows(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
        _exact: &[bool],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.loss_and_input_grad(x, loss)
    }

    /// [`Classifier::logits_padded`] with the rows `exact` in float32 (see
    /// [`Classifier::loss_and_input_grad_rows`]).
    fn logits_padded_rows(&self, x: &Tensor, _exact: &[bool]) -> Result<Tensor> {
        self.logits_padded(x)
    }

    /// The autocast dtype of this model's search passes; `None` (the default): float32.
    fn search_precision(&self) -> Option<Kind> {
        None
    }

    /// What the model's graph says about its input gradient (see [`scan`]). The default:
    /// the graph cannot be inspected.
    fn graph_scan(&self) -> GraphScan {
        GraphScan::opaque(format!("{} model (graph not inspectable)", self.info().kind))
    }

    /// The activations `[B, D]` of the feature layer `layer` (`None` or [`PENULTIMATE`]: the
    /// input of the last layer), on tiles like the logits and differentiable with respect to
    /// `x`. Used by feature-space detectors (Mahalanobis). The default: no feature layer.
    fn features(&self, _x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        Err(unknown_feature_layer(self.info(), layer.unwrap_or(PENULTIMATE), &[]))
    }
}

/// The name of the penultimate feature layer (the input of the last layer).
pub const PENULTIMATE: &str = "penultimate";

/// The error for a feature layer `layer` that `model` does not have, listing `available`.
pub fn unknown_feature_layer(model: &ModelInfo, layer: &str, available: &[&str]) -> GibbonError {
    let available = if available.is_empty() {
        format!(
            "none: a {} model exposes no feature layer to gibbon (load its weights as .safetensors \
             with --arch, or its ONNX or TorchScript export, whose layers are feature layers)",
            model.kind
        )
    } else {
        available.join(", ")
    };
    GibbonError::invalid(
        "feature-layer",
        format!("feature layer '{layer}' not found in {}; available: {available}", model.path),
    )
}

/// `forward` on `x` `[B, ...]` run tile by tile: every call sees exactly `rows` rows (the last
/// tile padded with zero rows, whose outputs are dropped), and the outputs are concatenated.
/// Autograd flows through the tiles, so input gradients are tiled the same way.
pub(crate) fn forward_tiled(
    x: &Tensor,
    rows: i64,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let b = x.size()[0];
    let mut outputs = Vec::new();
    let mut start = 0;
    while start < b || outputs.is_empty() {
        let n = rows.min(b - start);
        let tile = x.narrow(0, start, n);
        if n == rows {
            outputs.push(forward(&tile)?);
        } else {
            let mut shape = x.size();
            shape[0] = rows - n;
            let pad = Tensor::zeros(shape.as_slice(), (x.kind(), x.device()));
            outputs.push(forward(&Tensor::cat(&[tile, pad], 0))?.narrow(0, 0, n));
        }
        start += n;
    }
    if outputs.len() == 1 {
        return Ok(outputs.pop().expect("one tile"));
    }
    Ok(Tensor::cat(&outputs, 0))
}

/// Per-channel mean/std normalization placed in front of a model, so attacks stay in pixel space.
pub struct Normalized<M: Classifier> {
    inner: M,
    mean: Tensor,
    std: Tensor,
    info: ModelInfo,
}

impl<M: Classifier> Normalized<M> {
    /// Wraps `inner`; `mean` and `std` have one entry per input channel (or one for all).
    pub fn new(inner: M, mean: &[f64], std: &[f64]) -> Result<Self> {
        let channels = inner.input_shape().first().copied().unwrap_or(1) as usize;
        if mean.len() != std.len() || (mean.len() != 1 && mean.len() != channels) {
            return Err(GibbonError::invalid(
                "normalize",
                format!(
                    "need 1 or {channels} means and as many stds, got {} and {}",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(GibbonError::invalid("normalize", "means must be finite and stds > 0"));
        }
        let shape = [1, mean.len() as i64, 1, 1];
        let device = inner.device();
        let to =
            |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float).view(shape).to_device(device);
        let mut info = inner.info().clone();
        info.arch = Some(format!("normalized({})", info.arch.clone().unwrap_or_default()));
        Ok(Normalized { mean: to(mean), std: to(std), inner, info })
    }
}

impl<M: Classifier> Classifier for Normalized<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(&((x - &self.mean) / &self.std))
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_logits(&((x - &self.mean) / &self.std))
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
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        self.inner.features(&((x - &self.mean) / &self.std), layer)
    }
}

impl Classifier for Box<dyn Classifier> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn input_shape(&self) -> &[i64] {
        (**self).input_shape()
    }
    fn num_classes(&self) -> i64 {
        (**self).num_classes()
    }
    fn device(&self) -> Device {
        (**self).device()
    }
    fn info(&self) -> &ModelInfo {
        (**self).info()
    }
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        (**self).logits_padded(x)
    }
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        (**self).logits(x)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        (**self).predict(x)
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        (**self).query_logits(x)
    }
    fn query_predict(&self, x: &Tensor) -> Result<Tensor> {
        (**self).query_predict(x)
    }
    fn labels_only(&self) -> bool {
        (**self).labels_only()
    }
    fn loss_and_input_grad(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        (**self).loss_and_input_grad(x, loss)
    }
    fn loss_and_input_grad_rows(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
        exact: &[bool],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        (**self).loss_and_input_grad_rows(x, loss, exact)
    }
    fn logits_padded_rows(&self, x: &Tensor, exact: &[bool]) -> Result<Tensor> {
        (**self).logits_padded_rows(x, exact)
    }
    fn search_precision(&self) -> Option<Kind> {
        (**self).search_precision()
    }
    fn graph_scan(&self) -> GraphScan {
        (**self).graph_scan()
    }
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        (**self).features(x, layer)
    }
}

/// sha256 of a byte string, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
