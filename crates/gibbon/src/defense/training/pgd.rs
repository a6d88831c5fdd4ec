//! PGD adversarial training (Madry, Makelov, Schmidt, Tsipras & Vladu 2018): the model learns
//! from the final iterate of a PGD inner maximisation of the cross-entropy (random start in the
//! ball for L∞, no early stop: the model should see the strongest point found), on adversarial
//! examples only, as in the paper. Madry et al.'s MNIST constants: L∞ ε = 0.3, 40 steps of
//! 0.01; gibbon's CLI default is 10 steps of 2.5·ε/steps.
use super::{uniform_linf_start, Batch, Trainer};
use crate::attack::cross_entropy_objective;
use crate::error::{GibbonError, Result};
use crate::model::{BuiltinModel, Classifier};
use crate::random::RngKey;
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use tch::{Kind, Tensor};

/// PGD adversarial training settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdversarialTraining {
    /// Norm of the inner maximisation.
    pub norm: Norm,
    /// Final ε.
    pub eps: f64,
    /// PGD steps per batch.
    pub steps: usize,
    /// PGD step size at the final ε (scaled with ε during the ramp).
    pub alpha: f64,
    /// ε grows linearly from 0 over this many epochs (0 = full ε from the start).
    pub ramp_epochs: usize,
}

impl AdversarialTraining {
    /// These settings after checking them: ε > 0, at least one step, α > 0.
    pub fn validated(&self) -> Result<Self> {
        check_eps(self.eps)?;
        if self.steps == 0 {
            return Err(GibbonError::invalid("adv-steps", "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(GibbonError::invalid("adv-alpha", format!("{} must be > 0", self.alpha)));
        }
        Ok(self.clone())
    }
}

/// An error unless `eps` is finite and > 0.
pub(crate) fn check_eps(eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(GibbonError::invalid("adv-eps", format!("{eps} must be > 0")));
    }
    Ok(())
}

impl Trainer for AdversarialTraining {
    fn name(&self) -> &'static str {
        "pgd"
    }
    fn passes_per_batch(&self) -> usize {
        self.steps + 1
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        Some((self.norm, self.eps))
    }
    fn ramp_epochs(&self) -> usize {
        self.ramp_epochs
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        let eps = self.eps * batch.eps_scale;
        let x_adv = pgd_final_iterate(model, batch.x, batch.y, self, eps, batch.keys)?;
        model.set_train(true);
        Ok(model.forward(&x_adv)?.cross_entropy_for_logits(batch.y))
    }
}

/// The last iterate of PGD on the cross-entropy at radius `eps` (L∞: uniform random start).
pub(crate) fn pgd_final_iterate(
    model: &BuiltinModel,
    x: &Tensor,
    y: &Tensor,
    adv: &AdversarialTraining,
    eps: f64,
    keys: &[RngKey],
) -> Result<Tensor> {
    let threat = ThreatModel::new(adv.norm, eps)?;
    if eps == 0.0 {
        return Ok(x.shallow_clone());
    }
    let start = match adv.norm {
        Norm::Linf => uniform_linf_start(x, keys, eps),
        _ => x.zeros_like(),
    };
    let mut x_adv = threat.project(x, &(x + start));
    let alpha = adv.alpha * eps / adv.eps;
    for _ in 0..adv.steps {
        let xg = x_adv.detach().set_requires_grad(true);
        let logits = model.forward(&xg)?;
        let loss = cross_entropy_objective(&logits, y, None).sum(Kind::Float);
        let grad = Tensor::f_run_backward(&[loss], &[&xg], false, false)?.remove(0);
        let dir = match adv.norm {
            Norm::Linf => grad.sign(),
            _ => {
                let n = Norm::L2.per_sample(&grad).to_kind(Kind::Float).clamp_min(1e-12);
                &grad / n.view(crate::tensor::per_sample_view(x).as_slice())
            }
        };
        x_adv = threat.project(x, &(x_adv.detach() + dir * alpha));
    }
    Ok(x_adv.detach())
}
