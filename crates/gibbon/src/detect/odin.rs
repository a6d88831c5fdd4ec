//! ODIN (Liang, Li & Srikant 2018, "Enhancing the reliability of out-of-distribution image
//! detection in neural networks"): temperature scaling plus a small input perturbation that
//! raises the top softmax score, more so for in-distribution inputs. x̃ = x − ε·sign(−∇ₓ log
//! S_ŷ(x; T)) with S(x; T) = softmax(z(x) / T) and ŷ its arg-max; score = −max S(x̃; T). The
//! paper's constants: T = 1000, ε = 0.0014 (pixel space here: gibbon's inputs are in [0, 1]
//! and normalization lives inside the model). x̃ is not clipped to the box, as in the paper.
//!
//! [`Detector::score_graph`] keeps the graph through z(x̃) with the perturbation's sign held
//! fixed (its gradient is zero almost everywhere): the adaptive attack's view.
use super::{param_f64, positive, Detector, FitInput};
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use tch::{Kind, Tensor};

/// The paper's temperature.
pub const ODIN_TEMPERATURE: f64 = 1000.0;
/// The paper's perturbation magnitude.
pub const ODIN_EPSILON: f64 = 0.0014;

/// The ODIN detector.
#[derive(Debug, Clone)]
pub struct Odin {
    /// T.
    pub temperature: f64,
    /// ε of the input perturbation (0: temperature scaling only).
    pub epsilon: f64,
}

impl Odin {
    /// The perturbation −ε·sign(−∇ₓ log S_ŷ(x; T)) for `x` (no graph).
    fn perturbation(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        let xg = x.detach().set_requires_grad(true);
        let z = model.logits_padded(&xg)? / self.temperature;
        let log_top = z.log_softmax(-1, Kind::Float).amax([-1i64].as_slice(), false);
        let grads = Tensor::f_run_backward(&[log_top.sum(Kind::Float)], &[&xg], false, false)?;
        let grad =
            grads.into_iter().next().ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
        Ok(grad.sign() * self.epsilon)
    }
}

impl Detector for Odin {
    fn kind(&self) -> &'static str {
        "odin"
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        let shifted = if self.epsilon > 0.0 {
            let step = tch::with_grad(|| self.perturbation(model, x))?;
            x + step
        } else {
            x.shallow_clone()
        };
        Ok(-super::max_softmax(&model.logits_padded(&shifted)?, self.temperature))
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "temperature": self.temperature, "epsilon": self.epsilon })
    }
}

pub(super) fn fit(input: &FitInput) -> Result<Box<dyn Detector>> {
    let o = input.options;
    Ok(Box::new(Odin {
        temperature: positive("temperature", o.temperature, ODIN_TEMPERATURE, false)?,
        epsilon: positive("noise", o.noise, ODIN_EPSILON, true)?,
    }))
}

pub(super) fn load(params: &serde_json::Value) -> Result<Box<dyn Detector>> {
    Ok(Box::new(Odin {
        temperature: positive("temperature", Some(param_f64(params, "temperature")?), 1.0, false)?,
        epsilon: positive("epsilon", Some(param_f64(params, "epsilon")?), 0.0, true)?,
    }))
}
