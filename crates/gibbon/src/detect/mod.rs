//! Detectors: a score per input, higher meaning more anomalous (out-of-distribution or
//! adversarial), calibrated to a false-positive rate on clean data, and the guarded model they
//! make with a classifier.
//!
//! One file per detector, each implementing [`Detector`], plus one line in [`DETECTORS`]
//! (the CLI's help and the contract tests read it). [`calibrate`] turns clean scores into a
//! threshold with a bound on its true false-positive rate, [`metrics`] measures a detector on
//! anomalous vs clean scores, [`file`] saves and loads a fitted, calibrated detector, and
//! [`adaptive`] attacks classifier and detector together (Carlini & Wagner 2017, "Adversarial
//! examples are not easily detected").
pub mod adaptive;
pub mod calibrate;
mod energy;
pub mod file;
mod guarded;
mod mahalanobis;
pub mod metrics;
mod msp;
mod odin;
pub mod square_guarded;
mod squeeze;

pub use energy::Energy;
pub use guarded::{GuardedModel, Verdict};
pub use mahalanobis::Mahalanobis;
pub use msp::MaxSoftmax;
pub use odin::Odin;
pub use squeeze::FeatureSqueezing;

use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use tch::{Device, Kind, Tensor};

/// Rows per pass when a detector scores a whole dataset.
pub const SCORE_BATCH: usize = 256;

/// A detector: one anomaly score per input.
pub trait Detector {
    /// The registry name (`msp`, `energy`, `odin`, `mahalanobis`, `squeeze`).
    fn kind(&self) -> &'static str;
    /// True when [`Detector::score_graph`] gives a useful input gradient. A non-differentiable
    /// detector (feature squeezing) still returns a graph: its straight-through (BPDA) view.
    fn differentiable(&self) -> bool;
    /// Scores `[B]` (double) for inputs `[B, ...]`, keeping the autograd graph with respect to
    /// `x`, for the adaptive attack. Grad mode must be on.
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor>;
    /// The detector's parameters as JSON (what [`DetectorEntry::load`] reads back).
    fn params(&self) -> serde_json::Value;

    /// Scores `[B]` without a graph (a detector with an input-preprocessing step still
    /// computes its inner gradient).
    fn score(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        Ok(self.score_graph(model, &x.detach())?.detach())
    }

    /// Scores `[B]` from the model's logits `[B, classes]` alone, for a detector that is a
    /// function of the logits (MSP, energy): a caller that already ran the model (the guard's
    /// batched pass) then needs no second pass. `None` for a detector that needs the input.
    /// [`Detector::score_graph`] of such a detector is this function of `logits_padded(x)`.
    fn score_logits(&self, _logits: &Tensor) -> Option<Tensor> {
        None
    }
}

/// The options of `gibbon detect fit` a detector may read; `None` takes its paper's default.
#[derive(Debug, Clone, Default)]
pub struct DetectorOptions {
    /// Softmax temperature (energy, ODIN).
    pub temperature: Option<f64>,
    /// Input-preprocessing step size (ODIN's ε, Mahalanobis' noise magnitude).
    pub noise: Option<f64>,
    /// Feature layer (Mahalanobis); `None` is the penultimate layer.
    pub feature_layer: Option<String>,
    /// Squeezers (feature squeezing), a `--defense`-style chain list separated by `+`.
    pub squeezers: Option<String>,
}

/// What a detector is fitted with: the classifier, the options and (for detectors that need
/// them) labelled in-distribution training data.
pub struct FitInput<'a> {
    /// The classifier the detector watches.
    pub model: &'a dyn Classifier,
    /// The options given.
    pub options: &'a DetectorOptions,
    /// In-distribution training data with labels (Mahalanobis' class means and covariance).
    pub data: Option<&'a Dataset>,
}

/// One registered detector.
pub struct DetectorEntry {
    /// The `--detector` name.
    pub name: &'static str,
    /// One line with the paper.
    pub summary: &'static str,
    /// Whether its score has a useful input gradient.
    pub differentiable: bool,
    /// Whether fitting needs training data.
    pub needs_fit_data: bool,
    /// Builds (and fits) the detector.
    pub fit: fn(&FitInput) -> Result<Box<dyn Detector>>,
    /// Rebuilds a fitted detector from its [`Detector::params`].
    pub load: fn(&serde_json::Value) -> Result<Box<dyn Detector>>,
}

/// Every detector gibbon has.
pub const DETECTORS: &[DetectorEntry] = &[
    DetectorEntry {
        name: "msp",
        summary: "maximum softmax probability (Hendrycks & Gimpel 2017): score = -log max softmax \
                  (the ranking of -max softmax, without float saturation)",
        differentiable: true,
        needs_fit_data: false,
        fit: msp::fit,
        load: msp::load,
    },
    DetectorEntry {
        name: "energy",
        summary: "energy score (Liu et al. 2020), T = 1: score = -T logsumexp(z / T)",
        differentiable: true,
        needs_fit_data: false,
        fit: energy::fit,
        load: energy::load,
    },
    DetectorEntry {
        name: "odin",
        summary:
            "ODIN (Liang et al. 2018): temperature T = 1000 and input perturbation eps = 0.0014",
        differentiable: true,
        needs_fit_data: false,
        fit: odin::fit,
        load: odin::load,
    },
    DetectorEntry {
        name: "mahalanobis",
        summary: "Mahalanobis (Lee et al. 2018): class means and a tied covariance on the \
                  penultimate features; optional input preprocessing (--noise)",
        differentiable: true,
        needs_fit_data: true,
        fit: mahalanobis::fit,
        load: mahalanobis::load,
    },
    DetectorEntry {
        name: "squeeze",
        summary: "feature squeezing (Xu et al. 2018): max L1 distance between the softmax of x \
                  and of its squeezed copies (MNIST: bits:depth=1 and median:size=2)",
        differentiable: false,
        needs_fit_data: false,
        fit: squeeze::fit,
        load: squeeze::load,
    },
];

/// The registry entry named `name`, or an error listing the known ones.
pub fn entry(name: &str) -> Result<&'static DetectorEntry> {
    DETECTORS.iter().find(|d| d.name == name).ok_or_else(|| {
        GibbonError::invalid(
            "detector",
            format!(
                "unknown detector '{name}' (known: {})",
                DETECTORS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// The scores of every sample of `data`, in order, as `f64`; `on_batch` hears how many
/// samples each pass scored (for progress bars).
pub fn score_dataset(
    detector: &dyn Detector,
    model: &dyn Classifier,
    data: &Dataset,
    device: Device,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(SCORE_BATCH) {
        let x = data.try_batch(chunk, device)?;
        let s = detector.score(model, &x)?;
        out.extend(to_f64s(&s)?);
        on_batch(chunk.len());
    }
    if let Some(i) = out.iter().position(|s| !s.is_finite()) {
        return Err(GibbonError::invalid(
            "data",
            format!("{}: the {} score of sample {i} is not finite", data.name(), detector.kind()),
        ));
    }
    Ok(out)
}

/// A float tensor's values as `f64`.
pub fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

/// The per-row maximum of the softmax of `logits / temperature` `[B]`, in double precision.
pub(crate) fn max_softmax(logits: &Tensor, temperature: f64) -> Tensor {
    (logits.to_kind(Kind::Double) / temperature)
        .softmax(-1, Kind::Double)
        .amax([-1i64].as_slice(), false)
}

/// −log of the per-row maximum softmax probability `[B]` (double), computed as
/// log(1 + Σ_{j≠ŷ} exp(z_j − z_ŷ)) with `log1p`, so that it does not round to 0 when the
/// classifier is very confident (max softmax rounds to exactly 1 in float for logit gaps
/// beyond about 17, in double beyond about 37).
pub(crate) fn neg_log_max_softmax(logits: &Tensor) -> Tensor {
    let z = logits.to_kind(Kind::Double);
    let top = z.amax([-1i64].as_slice(), true);
    let top_index = z.argmax(-1, true);
    let others = (z - top).exp().scatter_value(1, &top_index, 0.0);
    others.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double).log1p()
}

/// A positive finite option value, or its default.
pub(crate) fn positive(name: &str, value: Option<f64>, default: f64, zero_ok: bool) -> Result<f64> {
    let v = value.unwrap_or(default);
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_ok) {
        return Err(GibbonError::invalid(
            name,
            format!("{v}: must be finite and {}", if zero_ok { ">= 0" } else { "> 0" }),
        ));
    }
    Ok(v)
}

/// The `f64` field `key` of a detector's JSON parameters.
pub(crate) fn param_f64(params: &serde_json::Value, key: &str) -> Result<f64> {
    params.get(key).and_then(serde_json::Value::as_f64).filter(|v| v.is_finite()).ok_or_else(|| {
        GibbonError::invalid("detector file", format!("parameter '{key}' missing or not a number"))
    })
}
