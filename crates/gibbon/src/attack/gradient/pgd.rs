//! Projected Gradient Descent (Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep
//! Learning Models Resistant to Adversarial Attacks").
//!
//! Defaults: steps from the threat model (40), step size α = 2.5·ε/steps (the paper's rule of
//! thumb), [`PGD_RESTARTS`] = 2 restarts unless the user set `--restarts` (or the threat model
//! asks for more); the first restart starts at the clean input and the second at a uniformly
//! random point of the ball, so a sample the clean start leaves unbroken always gets the random
//! start torchattacks would give it (`--random-start` makes every start random, as in the paper
//! and torchattacks; see [`StartPoint`]). Restarts run only on samples still unbroken. L∞
//! steps along sign(∇), L2 along ∇/‖∇‖₂, L1 along the sign of the top 1% gradient coordinates
//! (sparse steepest ascent); every iterate is projected exactly onto ball ∩ box.
use super::stepped::{StartPoint, SteppedAttack, SteppedConfig};
use crate::attack::AttackOptions;
use crate::error::{GibbonError, Result};
use crate::threat::ThreatModel;

/// PGD's restarts when the user did not choose: clean start, then one random start.
pub const PGD_RESTARTS: usize = 2;

/// PGD's (and BIM's) steps when the user did not choose (Madry et al.'s MNIST attack: 40).
pub const PGD_STEPS: usize = 40;

/// PGD with random start, restarts, best-iterate tracking and per-sample early stop.
#[derive(Debug, Clone)]
pub struct Pgd;

impl Pgd {
    /// PGD for `threat`; `options.alpha` overrides the step size.
    pub fn build(threat: &ThreatModel, options: &AttackOptions) -> Result<SteppedAttack> {
        let steps = threat.budget.steps_or(PGD_STEPS);
        let alpha = options.alpha.unwrap_or(2.5 * threat.eps / steps as f64);
        if threat.eps > 0.0 || options.alpha.is_some() {
            check_alpha(alpha)?;
        }
        let alpha = alpha.max(f64::MIN_POSITIVE);
        Ok(SteppedAttack {
            name: "pgd",
            config: SteppedConfig {
                steps,
                restarts: threat.budget.restarts_or(PGD_RESTARTS),
                alpha,
                start: match options.random_start {
                    None => StartPoint::CleanThenRandom,
                    Some(true) => StartPoint::Random,
                    Some(false) => StartPoint::Clean,
                },
                momentum: None,
                diversity: None,
                full_budget: options.full_budget,
                confidence: options.confidence,
            },
        })
    }
}

pub(in crate::attack) fn check_alpha(alpha: f64) -> Result<()> {
    if !alpha.is_finite() || alpha <= 0.0 {
        return Err(GibbonError::invalid("alpha", format!("{alpha} must be finite and > 0")));
    }
    Ok(())
}
