//! TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically principled trade-off
//! between robustness and accuracy"): minimise CE(f(x), y) + β·KL(f(x) ‖ f(x')) where x' is an
//! L∞ inner maximisation of the same KL term, started at x + 0.001·N(0, I) and taken by signed
//! gradient steps projected onto the ε-ball ∩ [0, 1] box.
//!
//! Constants from the paper and the authors' code (yaodongyu/TRADES):
//! - MNIST (`train_trades_mnist.py`): ε = 0.3, 40 inner steps of 0.01, SmallCNN, SGD lr 0.01
//!   momentum 0.9, batch 128, 100 epochs; the script's default is β = 1, the paper's MNIST
//!   result (99.48% clean, 96.07% under FGSM^40) uses β = 6.
//! - CIFAR-10 (`train_trades_cifar10.py`): ε = 0.031, 10 inner steps of 0.007, β = 6,
//!   WRN-34-10, SGD lr 0.1 momentum 0.9, weight decay 2e-4.
//!
//! As in `trades.py`, the KL is summed over classes and divided by the batch size, and the
//! outer loss keeps the gradient through both f(x) and f(x'). The inner maximisation runs in
//! evaluation mode (the authors' CIFAR-10 code does the same; SmallCNN has no dropout or
//! batch norm, so the mode does not change its outputs). The start is projected onto the box
//! before the first step (the authors clamp only after it).
use super::pgd::check_eps;
use super::{Batch, Trainer};
use crate::error::{GibbonError, Result};
use crate::model::{BuiltinModel, Classifier};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use tch::{Kind, Tensor};

/// TRADES settings (L∞ only, as in the paper).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradesTraining {
    /// Final ε of the inner maximisation.
    pub eps: f64,
    /// Inner steps per batch.
    pub steps: usize,
    /// Inner step size at the final ε (scaled with ε during the ramp).
    pub step_size: f64,
    /// Weight β of the KL term (1/λ in the paper).
    pub beta: f64,
    /// ε grows linearly from 0 over this many epochs (0 = full ε from the start).
    pub ramp_epochs: usize,
}

/// Standard deviation of the inner maximisation's start around x (`trades.py`: 0.001).
pub const TRADES_START_STD: f64 = 0.001;

impl TradesTraining {
    /// The authors' MNIST settings (`train_trades_mnist.py`) with weight `beta`.
    pub fn mnist(beta: f64) -> Self {
        TradesTraining { eps: 0.3, steps: 40, step_size: 0.01, beta, ramp_epochs: 0 }
    }
    /// The authors' CIFAR-10 settings (`train_trades_cifar10.py`) with weight `beta`.
    pub fn cifar10(beta: f64) -> Self {
        TradesTraining { eps: 0.031, steps: 10, step_size: 0.007, beta, ramp_epochs: 0 }
    }
    /// These settings after checking them: ε > 0, at least one step, step size > 0, β ≥ 0.
    pub fn validated(&self) -> Result<Self> {
        check_eps(self.eps)?;
        if self.steps == 0 {
            return Err(GibbonError::invalid("adv-steps", "must be at least 1"));
        }
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(GibbonError::invalid(
                "adv-alpha",
                format!("{} must be > 0", self.step_size),
            ));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(GibbonError::invalid("beta", format!("{} must be >= 0", self.beta)));
        }
        Ok(self.clone())
    }

    /// The inner maximisation: x' maximising KL(p_clean ‖ f(x')) in the ε-ball ∩ box.
    fn inner_max(&self, model: &BuiltinModel, batch: &Batch, eps: f64) -> Result<Tensor> {
        let x = batch.x;
        let threat = ThreatModel::new(Norm::Linf, eps)?;
        let p_clean = tch::no_grad(|| model.forward(x))?.softmax(-1, Kind::Float);
        let shape = &x.size()[1..];
        let start =
            crate::random::stacked(batch.keys, shape, x.device(), |k, n| k.stream(3).normal(n))
                * TRADES_START_STD;
        let mut x_adv = threat.project(x, &(x + start));
        let step = self.step_size * eps / self.eps;
        for _ in 0..self.steps {
            let xg = x_adv.detach().set_requires_grad(true);
            let kl = kl_sum(&p_clean, &model.forward(&xg)?);
            let grad = Tensor::f_run_backward(&[kl], &[&xg], false, false)?.remove(0);
            x_adv = threat.project(x, &(x_adv.detach() + grad.sign() * step));
        }
        Ok(x_adv.detach())
    }
}

/// Σ over the batch and classes of p·(log p − log softmax(logits_q)).
fn kl_sum(p: &Tensor, logits_q: &Tensor) -> Tensor {
    let log_q = logits_q.log_softmax(-1, Kind::Float);
    (p * (p.clamp_min(1e-12).log() - log_q)).sum(Kind::Float)
}

impl Trainer for TradesTraining {
    fn name(&self) -> &'static str {
        "trades"
    }
    fn passes_per_batch(&self) -> usize {
        // The clean target (forward only), the inner steps, then clean and adversarial passes.
        self.steps + 3
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        Some((Norm::Linf, self.eps))
    }
    fn ramp_epochs(&self) -> usize {
        self.ramp_epochs
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        let eps = self.eps * batch.eps_scale;
        let x_adv = self.inner_max(model, batch, eps)?;
        model.set_train(true);
        let logits_clean = model.forward(batch.x)?;
        let logits_adv = model.forward(&x_adv)?;
        let b = batch.x.size()[0] as f64;
        let p_clean = logits_clean.softmax(-1, Kind::Float);
        let natural = logits_clean.cross_entropy_for_logits(batch.y);
        Ok(natural + kl_sum(&p_clean, &logits_adv) * (self.beta / b))
    }
}
