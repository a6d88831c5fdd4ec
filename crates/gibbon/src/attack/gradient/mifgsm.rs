//! Momentum Iterative FGSM (Dong, Liao, Pang, Su, Zhu, Hu & Li 2018, "Boosting Adversarial
//! Attacks with Momentum"): iterated steps along the accumulated gradient
//! `g ← μ·g + ∇/‖∇‖₁`, which stabilises the direction and transfers better to other models.
//!
//! Defaults as in the paper (and torchattacks): 10 steps, step size α = ε/steps, decay μ = 1.0,
//! start at the clean input, one run. `--steps`, `--alpha` and `--random-start` override them.
//! L∞ steps along sign(g), L2 along g/‖g‖₂; every iterate is projected onto ball ∩ box.
use super::pgd::check_alpha;
use super::stepped::{StartPoint, SteppedAttack, SteppedConfig};
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::threat::ThreatModel;

/// MI-FGSM's default number of steps.
pub const MIFGSM_STEPS: usize = 10;
/// MI-FGSM's default decay factor μ.
pub const MIFGSM_DECAY: f64 = 1.0;

/// MI-FGSM.
#[derive(Debug, Clone)]
pub struct MiFgsm;

impl MiFgsm {
    /// MI-FGSM for `threat`.
    pub fn build(threat: &ThreatModel, options: &AttackOptions) -> Result<SteppedAttack> {
        momentum_config("mifgsm", threat, options, None)
    }
}

/// The stepped configuration shared by MI-FGSM and DI-FGSM (`diversity` set for the latter).
pub(in crate::attack) fn momentum_config(
    name: &'static str,
    threat: &ThreatModel,
    options: &AttackOptions,
    diversity: Option<f64>,
) -> Result<SteppedAttack> {
    let steps = threat.budget.steps_or(MIFGSM_STEPS);
    let alpha = options.alpha.unwrap_or(threat.eps / steps as f64);
    if threat.eps > 0.0 || options.alpha.is_some() {
        check_alpha(alpha)?;
    }
    Ok(SteppedAttack {
        name,
        config: SteppedConfig {
            steps,
            restarts: threat.budget.restarts_or(1),
            alpha: alpha.max(f64::MIN_POSITIVE),
            start: if options.random_start == Some(true) {
                StartPoint::Random
            } else {
                StartPoint::CleanThenRandom
            },
            momentum: Some(MIFGSM_DECAY),
            diversity,
            full_budget: options.full_budget,
            confidence: options.confidence,
        },
    })
}
