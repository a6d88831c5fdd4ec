//! Feature squeezing (Xu, Evans & Qi 2018, "Feature squeezing: detecting adversarial examples
//! in deep neural networks"): score = max over squeezers s of ‖softmax(z(x)) −
//! softmax(z(s(x)))‖₁, in [0, 2]. The paper's MNIST squeezers: 1-bit depth and a 2×2 median
//! filter (`bits:depth=1+median:size=2`; CIFAR-10 uses 5 bits, 2×2 median and non-local means).
//! The squeezers are gibbon's input defenses ([`crate::defense::input`]).
//!
//! Not differentiable (rounding, a host-side median). [`Detector::score_graph`] is its BPDA
//! view (Athalye et al. 2018): each squeezed copy is x + (s(x) − x) with the difference held
//! constant, so the gradient passes straight through the squeezer; the score's value is exact.
use super::{Detector, FitInput};
use crate::defense::input::DefenseChain;
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use tch::{Kind, Tensor};

/// The paper's squeezers for MNIST.
pub const MNIST_SQUEEZERS: &str = "bits:depth=1+median:size=2";

/// The feature-squeezing detector.
pub struct FeatureSqueezing {
    spec: String,
    squeezers: Vec<DefenseChain>,
}

impl FeatureSqueezing {
    /// Squeezers from `spec`: input-defense specs separated by `+` (each may be a `,` chain).
    pub fn new(spec: &str) -> Result<Self> {
        let squeezers = spec
            .split('+')
            .map(|s| s.trim().parse::<DefenseChain>())
            .collect::<Result<Vec<_>>>()
            .map_err(|e| GibbonError::invalid("squeezers", format!("'{spec}': {e}")))?;
        if squeezers.is_empty() {
            return Err(GibbonError::invalid("squeezers", "need at least one squeezer"));
        }
        Ok(FeatureSqueezing { spec: spec.to_string(), squeezers })
    }
}

impl Detector for FeatureSqueezing {
    fn kind(&self) -> &'static str {
        "squeeze"
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        let p = model.logits_padded(x)?.to_kind(Kind::Double).softmax(-1, Kind::Double);
        let mut best: Option<Tensor> = None;
        for squeezer in &self.squeezers {
            let squeezed = squeezer.apply(&x.detach())?;
            let straight_through = x + (squeezed - x.detach());
            let q = model
                .logits_padded(&straight_through)?
                .to_kind(Kind::Double)
                .softmax(-1, Kind::Double);
            let l1 = (&p - q).abs().sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
            best = Some(match best {
                None => l1,
                Some(b) => b.maximum(&l1),
            });
        }
        best.ok_or_else(|| GibbonError::Internal("no squeezer".into()))
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "squeezers": self.spec })
    }
}

pub(super) fn fit(input: &FitInput) -> Result<Box<dyn Detector>> {
    let spec = input.options.squeezers.as_deref().unwrap_or(MNIST_SQUEEZERS);
    let detector = FeatureSqueezing::new(spec)?;
    for s in &detector.squeezers {
        s.check_input(input.model.input_shape())?;
    }
    Ok(Box::new(detector))
}

pub(super) fn load(params: &serde_json::Value) -> Result<Box<dyn Detector>> {
    let spec = params.get("squeezers").and_then(|v| v.as_str()).ok_or_else(|| {
        GibbonError::invalid("detector file", "squeeze parameter 'squeezers' missing")
    })?;
    Ok(Box::new(FeatureSqueezing::new(spec)?))
}
