//! Interval-bound-propagation training (Gowal et al. 2018, "On the Effectiveness of Interval
//! Bound Propagation for Training Verifiably Robust Models"): the loss is
//! `κ·CE(f(x), y) + (1 − κ)·CE(ẑ(x, ε), y)`, where `ẑ` are the worst-case logits of the ε-ball
//! given by interval bounds (`certify::IntervalNetwork::worst_case_logits`), so the second term
//! bounds the loss at every point of the ball, not at one attack's point. The paper warms up on
//! clean data, then ramps ε up from 0 while κ falls from 1 to [`IBP_KAPPA_FINAL`] = 0.5; here
//! both follow the training loop's ε ramp (`--adv-ramp-epochs`, default
//! [`IBP_DEFAULT_RAMP_EPOCHS`]), whose first [`IBP_WARMUP_SHARE`] is the clean warm-up. On MNIST the authors
//! train at a larger ε than they test (0.2 for 0.1, 0.4 for 0.3). Interval widths grow by each
//! layer's `|W|` row sums, so the starting weights are scaled to PyTorch's default bound
//! `1/√fan_in` ([`IBP_INIT_SCALE`] of tch's ReLU-gain Kaiming bound `√6/√fan_in`): from tch's
//! scale a SmallCNN's first bounds are about 2.45⁷ ≈ 500 times wider, and training collapsed
//! to a constant classifier within an epoch (measured). `gibbon certify --ibp` certifies the
//! result: a deterministic L∞ radius per sample.
use super::{Batch, Trainer};
use crate::certify::IntervalNetwork;
use crate::error::{GibbonError, Result};
use crate::model::{Arch, BuiltinModel, Classifier};
use crate::threat::Norm;
use serde::Serialize;
use tch::Tensor;

/// κ at the end of the ramp: the weight of the clean loss (Gowal et al.: 1 → 0.5).
pub const IBP_KAPPA_FINAL: f64 = 0.5;
/// Epochs over which ε grows from 0 and κ falls from 1 when none are given.
pub const IBP_DEFAULT_RAMP_EPOCHS: usize = 3;
/// The share of the ramp spent in a clean warm-up (ε = 0, κ = 1) before ε starts to grow, as
/// Gowal et al. warm up before their ramp: bounds of a network that has not learned anything yet
/// push it towards a constant classifier (measured here without it).
pub const IBP_WARMUP_SHARE: f64 = 0.2;
/// The starting weights' scale: PyTorch's default bound over tch's, `1/√6`.
pub const IBP_INIT_SCALE: f64 = 0.408_248_290_463_863;

/// IBP training settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IbpTraining {
    /// The L∞ radius trained for (inputs in [0, 1]).
    pub eps: f64,
    /// Weight of the clean loss once the ramp is over.
    pub kappa_final: f64,
    /// Epochs of the ε and κ ramp.
    pub ramp_epochs: usize,
}

impl IbpTraining {
    /// The paper's κ schedule at `eps`, with the default ramp.
    pub fn new(eps: f64) -> Self {
        IbpTraining { eps, kappa_final: IBP_KAPPA_FINAL, ramp_epochs: IBP_DEFAULT_RAMP_EPOCHS }
    }

    /// These settings after checking 0 < ε ≤ 1 and κ in [0, 1].
    pub fn validated(&self) -> Result<Self> {
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps <= 1.0) {
            return Err(GibbonError::invalid("adv_eps", format!("{}: need 0 < ε <= 1", self.eps)));
        }
        if !(0.0..=1.0).contains(&self.kappa_final) {
            return Err(GibbonError::invalid(
                "kappa",
                format!("{}: need [0, 1]", self.kappa_final),
            ));
        }
        Ok(self.clone())
    }

    /// The share of ε (and of κ's fall) in force at a point of the training loop's ramp
    /// (`eps_scale` in (0, 1]): 0 during the warm-up, then linear up to 1.
    fn progress(eps_scale: f64) -> f64 {
        ((eps_scale - IBP_WARMUP_SHARE) / (1.0 - IBP_WARMUP_SHARE)).clamp(0.0, 1.0)
    }

    /// κ at a point of the ramp.
    fn kappa(&self, eps_scale: f64) -> f64 {
        1.0 - (1.0 - self.kappa_final) * Self::progress(eps_scale)
    }
}

impl Trainer for IbpTraining {
    fn name(&self) -> &'static str {
        "ibp"
    }
    fn passes_per_batch(&self) -> usize {
        // The clean pass, and the interval pass (centre and radius through every layer).
        3
    }
    fn holdout_threat(&self) -> Option<(Norm, f64)> {
        Some((Norm::Linf, self.eps))
    }
    fn ramp_epochs(&self) -> usize {
        self.ramp_epochs
    }
    fn initial_weight_scale(&self) -> f64 {
        IBP_INIT_SCALE
    }
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor> {
        if model.arch() == Arch::PreActResNet18 {
            return Err(GibbonError::invalid(
                "defense",
                "ibp training bounds linear, mlp and smallcnn models, not preact-resnet18",
            ));
        }
        model.set_train(true);
        let clean = model.forward(batch.x)?.cross_entropy_for_logits(batch.y);
        let progress = Self::progress(batch.eps_scale);
        if progress == 0.0 {
            return Ok(clean);
        }
        let network = IntervalNetwork::trainable(model)?;
        let worst = network.worst_case_logits(batch.x, batch.y, self.eps * progress, (0.0, 1.0));
        let kappa = self.kappa(batch.eps_scale);
        Ok(clean * kappa + worst.cross_entropy_for_logits(batch.y) * (1.0 - kappa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::RngKey;
    use tch::{Device, Kind};

    /// The robust term bounds the loss of the ball: its cross-entropy is at least that of the
    /// ball's corners, and gradients reach every weight.
    #[test]
    fn the_worst_case_loss_bounds_the_ball_and_trains_every_layer() {
        tch::manual_seed(3);
        let model = BuiltinModel::new(Arch::SmallCnn, &[1, 28, 28], 10, Device::Cpu).unwrap();
        let x = crate::random::uniform_tensor(1, &[4, 1, 28, 28]);
        let y = Tensor::from_slice(&[0i64, 3, 5, 9]);
        let network = IntervalNetwork::trainable(&model).unwrap();
        let eps = 0.05;
        let worst = network.worst_case_logits(&x, &y, eps, (0.0, 1.0));
        let bound = worst.cross_entropy_for_logits(&y).double_value(&[]);
        for k in 0..8 {
            let signs = crate::random::uniform_tensor(10 + k, &[4, 1, 28, 28]).ge(0.5);
            let corner = (&x + (signs.to_kind(Kind::Float) * 2.0 - 1.0) * eps).clamp(0.0, 1.0);
            let loss = model.forward(&corner).unwrap().cross_entropy_for_logits(&y);
            assert!(loss.double_value(&[]) <= bound + 1e-5, "corner {k} beyond the bound");
        }
        let keys: Vec<RngKey> = (0..4).map(|i| RngKey::new(0, i)).collect();
        let batch = Batch { x: &x, y: &y, keys: &keys, eps_scale: 1.0 };
        let loss = IbpTraining::new(eps).batch_loss(&model, &batch).unwrap();
        loss.backward();
        for (name, w) in model.var_store().variables() {
            let g = w.grad();
            assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}");
        }
        let ibp = IbpTraining::new(eps);
        assert_eq!((ibp.kappa(IBP_WARMUP_SHARE), ibp.kappa(0.6), ibp.kappa(1.0)), (1.0, 0.75, 0.5));
    }
}
