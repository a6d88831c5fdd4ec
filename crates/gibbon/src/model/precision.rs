//! Reduced-precision search (`--precision fp32|bf16|fp16|auto`).
//!
//! A gradient attack's iterations (forward + input gradient) run under
//! libtorch autocast in bfloat16 or float16: convolutions and matrix products in the low
//! precision (oneDNN's AVX512-BF16/AMX kernels on CPU), reductions in float32. Everything that
//! decides a result stays float32: [`SearchModel`] answers [`Classifier::logits`] (the clean
//! pass, the verifier's fresh pass, the attacks' confirmation of a success) with the model as
//! loaded, and the gradient attacks run the last [`REFINE_FRACTION`] of their steps per row in
//! float32 ([`Classifier::loss_and_input_grad_rows`]), so that a margin too thin for bf16 is
//! still found. The precision is set in this one wrapper, not per attack.
//!
//! `auto` picks bf16 only where the hardware runs it natively (CPU flags `avx512_bf16` or
//! `amx_bf16` in /proc/cpuinfo, and `ONEDNN_MAX_CPU_ISA` not capping oneDNN below them; any
//! CUDA device) and the model is one gibbon runs locally (builtin, TorchScript, ONNX);
//! else fp32. The choice, the reason and the CPU flags seen are recorded in the result.
use super::{Classifier, GraphScan, ModelInfo};
use crate::error::{GibbonError, Result};
use serde::Serialize;
use std::os::raw::c_int;
use tch::{Device, Kind, Tensor};

/// Fraction of a gradient attack's steps (the last ones, per row) run in float32.
pub const REFINE_FRACTION: f64 = 0.1;

extern "C" {
    fn gibbon_autocast_enable(device: c_int, dtype: c_int) -> c_int;
    fn gibbon_autocast_restore(device: c_int, state: c_int);
}

/// A search precision as asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32 (the default).
    Fp32,
    /// Search passes under bfloat16 autocast.
    Bf16,
    /// Search passes under float16 autocast.
    Fp16,
    /// bf16 where the hardware has native support, else fp32.
    Auto,
}

impl std::str::FromStr for Precision {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            "auto" => Ok(Precision::Auto),
            other => Err(GibbonError::invalid(
                "precision",
                format!("unknown precision '{other}' (choose fp32, bf16, fp16 or auto)"),
            )),
        }
    }
}

impl Precision {
    /// The autocast dtype (`None` for fp32).
    pub fn kind(self) -> Option<Kind> {
        match self {
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
            Precision::Fp32 | Precision::Auto => None,
        }
    }
}

/// The precision an evaluation's search runs in, and why (recorded in the result).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionChoice {
    /// What was asked for.
    pub requested: Precision,
    /// What the search passes use: fp32, bf16 or fp16.
    pub search: Precision,
    /// Why (e.g. `cpu has avx512_bf16, amx_bf16`).
    pub reason: String,
    /// The CPU's low-precision flags found in /proc/cpuinfo.
    pub cpu_flags: Vec<String>,
}

impl Default for PrecisionChoice {
    fn default() -> Self {
        PrecisionChoice {
            requested: Precision::Fp32,
            search: Precision::Fp32,
            reason: "fp32 requested".into(),
            cpu_flags: Vec::new(),
        }
    }
}

/// The CPU's native low-precision flags (`avx512_bf16`, `amx_bf16`, `avx512_fp16`,
/// `amx_fp16`) as /proc/cpuinfo lists them; empty where it cannot be read.
pub fn cpu_low_precision_flags() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = text.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    ["avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"]
        .iter()
        .filter(|f| flags.split_whitespace().any(|w| w == **f))
        .map(|f| f.to_string())
        .collect()
}

/// Resolves `requested` for a model of kind `model_kind` (ModelInfo::kind) on `device`.
/// Reduced precision for a model gibbon does not run itself (a remote model) is refused.
pub fn resolve(requested: Precision, model_kind: &str, device: Device) -> Result<PrecisionChoice> {
    let cpu_flags = cpu_low_precision_flags();
    let castable = matches!(model_kind, "builtin" | "safetensors" | "torchscript" | "onnx");
    let choice = |search, reason: String| PrecisionChoice {
        requested,
        search,
        reason,
        cpu_flags: cpu_flags.clone(),
    };
    match requested {
        Precision::Fp32 => Ok(choice(Precision::Fp32, "fp32 requested".into())),
        Precision::Bf16 | Precision::Fp16 if !castable => Err(GibbonError::invalid(
            "precision",
            format!("a {model_kind} model runs outside gibbon and cannot be cast; use fp32"),
        )),
        Precision::Bf16 | Precision::Fp16 => Ok(choice(requested, "requested".into())),
        Precision::Auto if !castable => {
            Ok(choice(Precision::Fp32, format!("a {model_kind} model cannot be cast")))
        }
        Precision::Auto if device.is_cuda() => {
            Ok(choice(Precision::Bf16, "cuda device: bf16 autocast".into()))
        }
        Precision::Auto => {
            let native: Vec<&String> = cpu_flags.iter().filter(|f| f.ends_with("bf16")).collect();
            let capped = std::env::var("ONEDNN_MAX_CPU_ISA").ok().filter(|isa| {
                let isa = isa.to_ascii_uppercase();
                !(isa == "ALL" || isa.contains("BF16") || isa.contains("AMX"))
            });
            if native.is_empty() {
                Ok(choice(Precision::Fp32, "cpu has no native bf16 (avx512_bf16/amx_bf16)".into()))
            } else if let Some(isa) = capped {
                Ok(choice(
                    Precision::Fp32,
                    format!("ONEDNN_MAX_CPU_ISA={isa} caps oneDNN below bf16"),
                ))
            } else {
                let names: Vec<&str> = native.iter().map(|s| s.as_str()).collect();
                Ok(choice(Precision::Bf16, format!("cpu has {}", names.join(", "))))
            }
        }
    }
}

/// Runs `f` with autocast in `kind` on `device` (restoring the previous state afterwards).
pub fn with_autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> Result<T> {
    let dev = c_int::from(device.is_cuda());
    let dtype = c_int::from(kind == Kind::Half);
    // SAFETY: plain calls into the shim; it catches every C++ exception.
    let state = unsafe { gibbon_autocast_enable(dev, dtype) };
    if state < 0 {
        return Err(GibbonError::Internal("cannot enable libtorch autocast".into()));
    }
    let out = f();
    // SAFETY: as above; `state` came from gibbon_autocast_enable.
    unsafe { gibbon_autocast_restore(dev, state) };
    Ok(out)
}

/// A model whose search passes run in reduced precision (see the module docs); with
/// `kind == None` every call goes to the model unchanged.
pub struct SearchModel<'a> {
    inner: &'a dyn Classifier,
    kind: Option<Kind>,
}

impl<'a> SearchModel<'a> {
    /// `inner` searched in `precision` (fp32: unchanged).
    pub fn new(inner: &'a dyn Classifier, precision: Precision) -> Self {
        SearchModel { inner, kind: precision.kind() }
    }

    /// Differentiable logits of the reduced-precision pass, as float32.
    fn reduced_logits(&self, kind: Kind, x: &Tensor) -> Result<Tensor> {
        let z = with_autocast(self.inner.device(), kind, || self.inner.logits_padded(x))??;
        Ok(z.to_kind(Kind::Float))
    }
}

impl Classifier for SearchModel<'_> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            None => self.inner.forward(x),
            Some(k) => Ok(with_autocast(self.inner.device(), k, || self.inner.forward(x))??
                .to_kind(Kind::Float)),
        }
    }
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            None => self.inner.logits_padded(x),
            Some(k) => self.reduced_logits(k, x),
        }
    }
    /// Always float32: the answer that decides results.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.logits(x)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.predict(x)
    }
    /// Float32, the model's own query path: score- and decision-based attacks decide success
    /// on these answers and have no refinement phase, and a TorchScript model's optimized
    /// query copy ([`super::frozen`]) is already as fast as a bf16 pass at these batch sizes.
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_logits(x)
    }
    fn query_predict(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_predict(x)
    }
    fn labels_only(&self) -> bool {
        self.inner.labels_only()
    }
    fn search_precision(&self) -> Option<Kind> {
        self.kind
    }
    fn loss_and_input_grad(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self.kind {
            None => self.inner.loss_and_input_grad(x, loss),
            Some(_) => input_grad_of(x, loss, |xg| self.logits_padded(xg)),
        }
    }
    fn loss_and_input_grad_rows(
        &self,
        x: &Tensor,
        loss: &dyn Fn(&Tensor) -> Tensor,
        exact: &[bool],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self.kind {
            Some(_) if exact.iter().any(|&e| !e) => {
                input_grad_of(x, loss, |xg| self.logits_padded_rows(xg, exact))
            }
            _ => self.inner.loss_and_input_grad(x, loss),
        }
    }
    fn logits_padded_rows(&self, x: &Tensor, exact: &[bool]) -> Result<Tensor> {
        let Some(kind) = self.kind else { return self.inner.logits_padded(x) };
        if exact.iter().all(|&e| !e) {
            return self.reduced_logits(kind, x);
        }
        if exact.iter().all(|&e| e) {
            return self.inner.logits_padded(x);
        }
        // Each group on its own tiles, so a row's numbers depend only on its own precision.
        let device = x.device();
        let rows = |want: bool| {
            let idx: Vec<i64> =
                (0..exact.len() as i64).filter(|&i| exact[i as usize] == want).collect();
            Tensor::from_slice(&idx).to_device(device)
        };
        let (fast, slow) = (rows(false), rows(true));
        let z_fast = self.reduced_logits(kind, &x.index_select(0, &fast))?;
        let z_slow = self.inner.logits_padded(&x.index_select(0, &slow))?.to_kind(Kind::Float);
        let shape = [x.size()[0], z_fast.size()[1]];
        let z = Tensor::zeros(shape, (Kind::Float, device));
        Ok(z.index_copy(0, &fast, &z_fast).index_copy(0, &slow, &z_slow))
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
        self.inner.info()
    }
    fn graph_scan(&self) -> GraphScan {
        self.inner.graph_scan()
    }
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        self.inner.features(x, layer)
    }
}

/// Per-sample `loss` at `x`, the logits, and the input gradient of the summed loss, with the
/// logits from `logits_of` (differentiable).
pub(crate) fn input_grad_of(
    x: &Tensor,
    loss: &dyn Fn(&Tensor) -> Tensor,
    logits_of: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let xg = x.detach().set_requires_grad(true);
    let logits = logits_of(&xg)?;
    let per_sample = loss(&logits);
    let grads = Tensor::f_run_backward(&[per_sample.sum(Kind::Float)], &[&xg], false, false)?;
    let grad =
        grads.into_iter().next().ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
    Ok((per_sample.detach(), logits.detach(), grad))
}

/// Whether each row at `step` of `steps` is in its float32 refinement (the last
/// [`REFINE_FRACTION`] of the steps, at least the last one).
pub fn refining(step: usize, steps: usize) -> bool {
    let refine = ((steps as f64 * REFINE_FRACTION).ceil() as usize).max(1);
    step + refine >= steps
}

/// Relative error bound of a bf16/fp16 search logit used by [`exact_where`]: rows whose
/// margin is below `BOUND × (1 + max |logit|)` are re-checked in float32 (bf16 keeps 8
/// significant bits, 2⁻⁸ ≈ 0.004; twice that, and again for the accumulated sums).
pub const REDUCED_LOGIT_BOUND: f64 = 0.016;

/// `logits` of a search pass, with the rows whose `margin` (`[B]`, negative once the goal is
/// reached) is negative or within the reduced-precision error of zero replaced by float32
/// logits at `x`, when `model` searches in reduced precision: a success seen in bf16 is only
/// taken once the float32 model agrees, and a thin one bf16 misses is still seen. Unchanged
/// for a float32 search.
pub fn exact_where(
    model: &dyn Classifier,
    x: &Tensor,
    logits: &Tensor,
    margin: &Tensor,
) -> Result<Tensor> {
    if model.search_precision().is_none() {
        return Ok(logits.shallow_clone());
    }
    let scale = logits.abs().amax([1i64].as_slice(), false).to_kind(Kind::Double) + 1.0;
    let near = margin.to_kind(Kind::Double).lt_tensor(&(scale * REDUCED_LOGIT_BOUND));
    let rows = near.nonzero().squeeze_dim(1);
    if rows.size()[0] == 0 {
        return Ok(logits.shallow_clone());
    }
    let z = model.logits(&x.index_select(0, &rows))?.to_kind(logits.kind());
    Ok(logits.index_copy(0, &rows, &z))
}
