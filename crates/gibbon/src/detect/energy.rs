//! The energy score (Liu, Wang, Owens & Li 2020, "Energy-based out-of-distribution
//! detection"): E(x) = −T·log Σ_k exp(z_k / T), lower (more negative) for in-distribution
//! inputs. Score = E(x); the paper's temperature T = 1. Nothing fitted.
use super::{param_f64, positive, Detector, FitInput};
use crate::error::Result;
use crate::model::Classifier;
use tch::{Kind, Tensor};

/// The paper's temperature.
pub const ENERGY_TEMPERATURE: f64 = 1.0;

/// The energy detector at temperature `temperature`.
#[derive(Debug, Clone)]
pub struct Energy {
    /// T.
    pub temperature: f64,
}

impl Detector for Energy {
    fn kind(&self) -> &'static str {
        "energy"
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        Ok(self.energy(&model.logits_padded(x)?))
    }
    fn score_logits(&self, logits: &Tensor) -> Option<Tensor> {
        Some(self.energy(logits))
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "temperature": self.temperature })
    }
}

impl Energy {
    /// E = −T·logsumexp(z / T) of each row of `logits` (double).
    fn energy(&self, logits: &Tensor) -> Tensor {
        let z = logits.to_kind(Kind::Double) / self.temperature;
        z.logsumexp([-1i64].as_slice(), false) * (-self.temperature)
    }
}

pub(super) fn fit(input: &FitInput) -> Result<Box<dyn Detector>> {
    let temperature =
        positive("temperature", input.options.temperature, ENERGY_TEMPERATURE, false)?;
    Ok(Box::new(Energy { temperature }))
}

pub(super) fn load(params: &serde_json::Value) -> Result<Box<dyn Detector>> {
    let temperature = positive("temperature", Some(param_f64(params, "temperature")?), 1.0, false)?;
    Ok(Box::new(Energy { temperature }))
}
