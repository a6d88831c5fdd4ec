//! Fast FGSM adversarial training (Wong, Rice & Kolter 2020, "Fast is better than free:
//! revisiting adversarial training"): one FGSM step of size α = 1.25·ε from a uniform random
//! start in the L∞ ball, projected back onto the ball ∩ box, and the model learns from that
//! point; the paper pairs it with a cyclic learning rate (`Schedule::Cyclic`). The authors'
//! MNIST settings: ε = 0.3, α = 0.375, Adam with a cyclic rate peaking at 5e-3, batch 100,
//! 10 epochs.
//!
//! FGSM training can overfit catastrophically: PGD robust accuracy collapses to near 0 within
//! an epoch while FGSM accuracy rises. The paper's remedy is early stopping on a PGD check;
//! here the shared loop runs APGD-CE (20 iterations) on the hold-out slice after every epoch and the
//! [`OverfitGuard`] rolls back to the last good epoch and stops when robust accuracy falls
//! more than [`FastFgsmTraining::guard_drop`] below the best epoch so far.
use super::pgd::check_eps;
use super::{uniform_linf_start, Batch, OverfitGuard, Trainer};
use crate::attack::cross_entropy_objective;
use crate::error::{GibbonError, Result};
use crate::model::{BuiltinModel, Classifier};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use tch::{Kind, Tensor};

/// Fast FGSM adversarial training settings (L∞).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FastFgsmTraining {
    /// Final ε.
    pub eps: f64,
    /// FGSM step size at the final ε (the paper: 1.25·ε).
    pub alpha: f64,
    /// ε grows linearly from 0 over this many epochs (0 = full ε from the start).
    pub ramp_epochs: usize,
    /// Hold-out PGD robust accuracy this far below the best epoch counts as a collapse.
    pub guard_drop: f64,
}

/// The default collapse threshold: a drop of 0.2 in robust accuracy (the size of drop the
/// authors' early-stopping check looks for).
pub const DEFAULT_GUARD_DROP: f64 = 0.2;

impl FastFgsmTraining {
    /// The paper's settings at `eps`: α = 1.25·ε, no ramp, the default guard.
    pub fn new(eps: f64) -> Self {
        FastFgsmTraining { eps, alpha: 1.25 * eps, ramp_epochs: 0, guard_drop: DEFAULT_GUARD_DROP }
    }
    /// These settings after checking them: ε > 0, α > 0, guard drop in (0, 1].
    pub fn validated(&self) -> Result<Self> {
        check_eps(self.eps)?;
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(GibbonError::invalid("adv-alpha", format!("{} must be > 0", self.alpha)));
        }
        if !(self.guard_drop > 0.0 && self.guard_drop <= 1.0) {
            return Err(GibbonError::invalid(
                "guard-drop",
                format!("{} must be in (0, 1]", self.guard_drop),
            ));
        }
        Ok(self.clone())
    }
}

impl Trainer for FastFgsmTraining {
    fn name(&self) -> &'static str {
        "fast-fgsm"
    }
    fn passes_per_batch(&self) -> usize {
        2
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        Some((Norm::Linf, self.eps))
    }
    fn ramp_epochs(&self) -> usize {
        self.ramp_epochs
    }
    fn overfit_guard(&self) -> Option<OverfitGuard> {
        Some(OverfitGuard::new(self.guard_drop))
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        let (x, y) = (batch.x, batch.y);
        let eps = self.eps * batch.eps_scale;
        let threat = ThreatModel::new(Norm::Linf, eps)?;
        let start = threat.project(x, &(x + uniform_linf_start(x, batch.keys, eps)));
        let xg = start.detach().set_requires_grad(true);
        let loss = cross_entropy_objective(&model.forward(&xg)?, y, None).sum(Kind::Float);
        let grad = Tensor::f_run_backward(&[loss], &[&xg], false, false)?.remove(0);
        let alpha = self.alpha * eps / self.eps;
        let x_adv = threat.project(x, &(start + grad.sign() * alpha)).detach();
        model.set_train(true);
        Ok(model.forward(&x_adv)?.cross_entropy_for_logits(y))
    }
}
