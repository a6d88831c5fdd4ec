//! Diverse-Inputs Iterative FGSM with momentum, M-DI²-FGSM (Xie, Zhang, Zhou, Bai, Wang, Ren &
//! Yuille 2019, "Improving Transferability of Adversarial Examples with Input Diversity"): MI-FGSM
//! whose gradients are taken through a random resize-and-pad of the input, so the perturbation
//! does not overfit the surrogate model.
//!
//! Defaults: as MI-FGSM (10 steps, α = ε/steps, μ = 1.0) with transform probability p = 0.5 (the
//! paper's). The transform shrinks the image to a random size in [0.9·H, H] and pads it back to
//! H × W at a random offset (the paper enlarges to 1.1·H, which needs a model that accepts
//! other sizes; shrinking keeps the model's input shape). Whether a sample is broken is judged on
//! the untransformed input. Image inputs `[C, H, W]` only.
use super::mifgsm::momentum_config;
use super::stepped::SteppedAttack;
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::threat::ThreatModel;

/// DI-FGSM's default transform probability.
pub const DIFGSM_PROBABILITY: f64 = 0.5;

/// M-DI²-FGSM.
#[derive(Debug, Clone)]
pub struct DiFgsm;

impl DiFgsm {
    /// DI-FGSM for `threat`.
    pub fn build(threat: &ThreatModel, options: &AttackOptions) -> Result<SteppedAttack> {
        momentum_config("difgsm", threat, options, Some(DIFGSM_PROBABILITY))
    }
}
