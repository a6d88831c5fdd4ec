//! Input (preprocessing) defenses: wrappers that transform every input before the model sees
//! it, composable into a chain and placed around any [`Classifier`] (built-in, TorchScript,
//! ONNX, remote) by [`Defended`].
//!
//! | spec | file | paper |
//! |---|---|---|
//! | `jpeg:quality=Q` (1–100) | `jpeg.rs` | Dziugaite, Ghahramani & Roy 2016; Guo, Rana, Cissé & van der Maaten 2018 |
//! | `bits:depth=D` (1–8) | `bits.rs` | feature squeezing, Xu, Evans & Qi 2018 |
//! | `median:size=K` (1–15) | `median.rs` | feature squeezing, Xu, Evans & Qi 2018 |
//! | `noise:sigma=S` (≥ 0) | `noise.rs` | random noise, as in Cohen, Rosenfeld & Kolter 2019 |
//!
//! A chain is written with commas, applied left to right: `jpeg:quality=75,bits:depth=3`.
//!
//! Every defense declares whether it is differentiable, whether it is deterministic, and its
//! BPDA surrogate (Athalye, Carlini & Wagner 2018): the differentiable function an adaptive
//! attack should backpropagate through in its place (the identity for JPEG, bit depth and
//! median). Plain attacks see the wrapper exactly as deployed: JPEG and the median filter run
//! on the host (a codec, a sort), so no gradient flows through them and the wrapper gives the
//! attack an input gradient of exactly zero; bit-depth reduction is a torch `round`, whose
//! gradient is zero almost everywhere. That is the gradient masking the audit must expose with
//! BPDA; gibbon does not hide it.
mod bits;
mod jpeg;
mod median;
mod noise;

pub use bits::BitDepth;
pub use jpeg::JpegCompression;
pub use median::MedianSmoothing;
pub use noise::GaussianNoise;

use crate::error::{GibbonError, Result};
use crate::model::{Classifier, FlaggedOp, GraphScan, ModelInfo, OpEffect};
use serde::Serialize;
use std::collections::BTreeMap;
use std::str::FromStr;
use tch::{Device, Tensor};

/// What an adaptive attack should differentiate in a defense's place (BPDA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Surrogate {
    /// The identity: the defense is close to f(x) = x, so its backward pass is replaced by the
    /// gradient's pass-through.
    Identity,
    /// The defense itself (it is differentiable; randomized ones need EOT).
    Itself,
}

/// One preprocessing defense.
pub trait InputDefense {
    /// The registry name (`jpeg`, `bits`, `median`, `noise`).
    fn name(&self) -> &'static str;
    /// The spec that rebuilds it, e.g. `jpeg:quality=75`.
    fn spec(&self) -> String;
    /// True when the output has a useful (non-zero) gradient with respect to the input.
    fn differentiable(&self) -> bool;
    /// True when the same input always gives the same output.
    fn deterministic(&self) -> bool;
    /// The BPDA surrogate an adaptive attack should use.
    fn bpda_surrogate(&self) -> Surrogate;
    /// An error naming the defense and parameter unless it can process samples of `shape`.
    fn check_input(&self, shape: &[i64]) -> Result<()>;
    /// The defended batch `[B, ...]`.
    fn apply(&self, x: &Tensor) -> Result<Tensor>;
}

/// The parameters of one defense spec (`name:key=value;key=value`).
pub struct DefenseParams {
    defense: String,
    values: BTreeMap<String, String>,
}

impl DefenseParams {
    fn parse(defense: &str, text: &str) -> Result<Self> {
        let mut values = BTreeMap::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                GibbonError::invalid(
                    format!("defense '{defense}'"),
                    format!("parameter '{item}' must look like KEY=VALUE"),
                )
            })?;
            values.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(DefenseParams { defense: defense.to_string(), values })
    }

    fn error(&self, key: &str, message: impl Into<String>) -> GibbonError {
        GibbonError::invalid(format!("defense '{}' parameter {key}", self.defense), message)
    }

    /// The value of `key` as a number, or an error naming the defense and parameter.
    pub fn number(&mut self, key: &str, usage: &str) -> Result<f64> {
        let text = self
            .values
            .remove(key)
            .ok_or_else(|| self.error(key, format!("missing (write {usage})")))?;
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.error(key, format!("'{text}' is not a finite number")))
    }

    /// The value of `key` as an integer in `range`.
    pub fn integer_in(
        &mut self,
        key: &str,
        usage: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64> {
        let v = self.number(key, usage)?;
        if v.fract() != 0.0 || !range.contains(&(v as i64)) {
            return Err(self.error(
                key,
                format!("{v} must be an integer from {} to {}", range.start(), range.end()),
            ));
        }
        Ok(v as i64)
    }

    /// An error naming the first parameter the defense does not know.
    pub fn finish(self) -> Result<()> {
        match self.values.keys().next() {
            Some(k) => Err(self.error(k, "unknown parameter")),
            None => Ok(()),
        }
    }
}

type Builder = fn(DefenseParams) -> Result<Box<dyn InputDefense>>;

/// Every input defense: name, usage, builder (one line per defense).
const REGISTRY: &[(&str, &str, Builder)] = &[
    ("jpeg", "jpeg:quality=Q", |p| Ok(Box::new(JpegCompression::from_params(p)?))),
    ("bits", "bits:depth=D", |p| Ok(Box::new(BitDepth::from_params(p)?))),
    ("median", "median:size=K", |p| Ok(Box::new(MedianSmoothing::from_params(p)?))),
    ("noise", "noise:sigma=S", |p| Ok(Box::new(GaussianNoise::from_params(p)?))),
];

/// The names of every input defense.
pub fn defense_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _, _)| *n).collect()
}

/// An ordered chain of input defenses, applied left to right.
pub struct DefenseChain {
    defenses: Vec<Box<dyn InputDefense>>,
}

impl FromStr for DefenseChain {
    type Err = GibbonError;
    fn from_str(text: &str) -> Result<Self> {
        let mut defenses = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(GibbonError::invalid(
                    "defense",
                    format!("'{text}' has an empty item (write e.g. jpeg:quality=75,bits:depth=3)"),
                ));
            }
            let (name, params) = item.split_once(':').unwrap_or((item, ""));
            let name = name.trim();
            let (_, usage, build) =
                REGISTRY.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
                    GibbonError::invalid(
                        "defense",
                        format!(
                            "unknown input defense '{name}' (known: {})",
                            REGISTRY.iter().map(|(_, u, _)| *u).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
            let params = DefenseParams::parse(name, params)?;
            defenses.push(build(params).map_err(|e| with_usage(e, usage))?);
        }
        Ok(DefenseChain { defenses })
    }
}

fn with_usage(e: GibbonError, usage: &str) -> GibbonError {
    match e {
        GibbonError::InvalidArgument { name, message } => {
            GibbonError::InvalidArgument { name, message: format!("{message}; usage: {usage}") }
        }
        other => other,
    }
}

impl std::fmt::Display for DefenseChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let specs: Vec<String> = self.defenses.iter().map(|d| d.spec()).collect();
        f.write_str(&specs.join(","))
    }
}

impl std::fmt::Debug for DefenseChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DefenseChain({self})")
    }
}

/// What a chain declares, for results and for adaptive attacks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefenseDescription {
    /// The defense's spec.
    pub spec: String,
    /// Useful gradient with respect to the input.
    pub differentiable: bool,
    /// Same input, same output.
    pub deterministic: bool,
    /// BPDA surrogate.
    pub bpda_surrogate: Surrogate,
}

impl DefenseChain {
    /// The defenses, in order.
    pub fn defenses(&self) -> &[Box<dyn InputDefense>] {
        &self.defenses
    }
    /// True when every defense is deterministic.
    pub fn deterministic(&self) -> bool {
        self.defenses.iter().all(|d| d.deterministic())
    }
    /// True when every defense is differentiable.
    pub fn differentiable(&self) -> bool {
        self.defenses.iter().all(|d| d.differentiable())
    }
    /// One description per defense.
    pub fn describe(&self) -> Vec<DefenseDescription> {
        self.defenses
            .iter()
            .map(|d| DefenseDescription {
                spec: d.spec(),
                differentiable: d.differentiable(),
                deterministic: d.deterministic(),
                bpda_surrogate: d.bpda_surrogate(),
            })
            .collect()
    }
    /// Checks every defense against samples of `shape`.
    pub fn check_input(&self, shape: &[i64]) -> Result<()> {
        self.defenses.iter().try_for_each(|d| d.check_input(shape))
    }
    /// Applies the chain to a batch.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.shallow_clone();
        for d in &self.defenses {
            out = d.apply(&out)?;
        }
        Ok(out)
    }
    /// True when BPDA changes the chain's gradient: some defense is non-differentiable and
    /// declares the identity as its surrogate.
    pub fn bpda_applies(&self) -> bool {
        self.defenses
            .iter()
            .any(|d| !d.differentiable() && d.bpda_surrogate() == Surrogate::Identity)
    }
    /// The chain as BPDA (Athalye, Carlini & Wagner 2018) differentiates it: a defense whose
    /// surrogate is the identity gives its own output in the forward pass, bit for bit, and
    /// passes the gradient straight through in the backward pass; the others (differentiable
    /// ones, e.g. noise) are applied as they are.
    pub fn apply_bpda(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.shallow_clone();
        for d in &self.defenses {
            out = match d.bpda_surrogate() {
                Surrogate::Identity => straight_through(&out, d.apply(&out.detach())?),
                Surrogate::Itself => d.apply(&out)?,
            };
        }
        Ok(out)
    }
}

/// `value` in the forward pass and the identity's gradient in the backward pass. `x - x` is
/// exactly zero for finite `x`, so the sum is exactly `value`: the forward pass of a BPDA view
/// equals the deployed model's.
pub(crate) fn straight_through(x: &Tensor, value: Tensor) -> Tensor {
    if x.requires_grad() {
        value.detach() + (x - x.detach())
    } else {
        value
    }
}

/// `processed` (computed off the autograd graph) joined to `x`'s graph with a zero gradient,
/// so that attacks differentiating through the wrapper get the gradient a deployed system
/// gives, zero, rather than an autograd error.
pub(crate) fn with_zero_gradient(x: &Tensor, processed: Tensor) -> Tensor {
    if x.requires_grad() {
        processed + (x - x.detach()) * 0.0
    } else {
        processed
    }
}

/// A classifier behind a chain of input defenses: every pass (white-box, query, prediction)
/// sees the defended input. The chain is recorded in the model's info (`arch`).
pub struct Defended<M: Classifier> {
    inner: M,
    chain: DefenseChain,
    info: ModelInfo,
    bpda: bool,
}

impl<M: Classifier> Defended<M> {
    /// Wraps `inner`; an error names the defense and parameter if one cannot process the
    /// model's input shape.
    pub fn new(inner: M, chain: DefenseChain) -> Result<Self> {
        chain.check_input(inner.input_shape())?;
        let mut info = inner.info().clone();
        info.arch = Some(format!("defended[{chain}]({})", info.arch.clone().unwrap_or_default()));
        Ok(Defended { inner, chain, info, bpda: false })
    }
    /// The BPDA view of the same model, for adaptive attacks: every answer (logits,
    /// predictions, queries) is the deployed model's, bit for bit; only the input gradient
    /// differs, taken through each defense's BPDA surrogate ([`DefenseChain::apply_bpda`]).
    /// Its info says `bpda[...]`, so its results and streams are not mistaken for the plain
    /// model's.
    pub fn with_bpda(mut self) -> Self {
        if !self.bpda {
            self.bpda = true;
            self.info.arch = Some(format!("bpda[{}]", self.info.arch.clone().unwrap_or_default()));
        }
        self
    }
    /// True for the BPDA view.
    pub fn is_bpda(&self) -> bool {
        self.bpda
    }
    fn defend(&self, x: &Tensor) -> Result<Tensor> {
        if self.bpda {
            self.chain.apply_bpda(x)
        } else {
            self.chain.apply(x)
        }
    }
    /// The chain.
    pub fn chain(&self) -> &DefenseChain {
        &self.chain
    }
    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: Classifier> Classifier for Defended<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(&self.defend(x)?)
    }
    /// The inner model's features of the defended input (through the BPDA surrogates in the
    /// BPDA view), so feature-space detectors watch the model as deployed.
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        self.inner.features(&self.defend(x)?, layer)
    }
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        // Every defense works per sample, so applying it to the whole batch before the inner
        // model's tiling keeps per-sample results independent of the batch size.
        self.inner.logits_padded(&self.defend(x)?)
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.query_logits(&self.chain.apply(x)?)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        if self.inner.labels_only() {
            return self.inner.predict(&self.chain.apply(x)?);
        }
        Ok(self.logits(x)?.argmax(-1, false))
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
        let mut scan = self.inner.graph_scan();
        let mut ops = Vec::new();
        for (i, d) in self.chain.defenses().iter().enumerate() {
            let effect = match (d.differentiable(), d.deterministic()) {
                (_, false) => OpEffect::Random,
                (true, true) => continue,
                (false, true) => OpEffect::ZeroGradient,
            };
            let surrogate = match (effect, d.bpda_surrogate()) {
                (OpEffect::ZeroGradient, Surrogate::Identity) => {
                    Some("identity (straight-through)".to_string())
                }
                _ => None,
            };
            let swapped = self.bpda && surrogate.is_some();
            let location = format!("input defense {} of {}", i + 1, self.chain.defenses().len());
            ops.push(FlaggedOp {
                op: format!("defense {}", d.spec()),
                effect,
                location,
                surrogate,
                swapped,
            });
        }
        ops.append(&mut scan.ops);
        scan.ops = ops;
        scan.source = format!("gibbon input defenses, then {}", scan.source);
        scan
    }
}
