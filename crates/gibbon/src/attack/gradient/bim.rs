//! Basic Iterative Method (Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the
//! physical world"): iterated FGSM from the clean input, projected onto ball ∩ box.
//!
//! Defaults: steps from the threat model, step size α = ε/steps (so the last step can reach
//! the boundary), no random start, one run.
use super::pgd::{check_alpha, PGD_STEPS};
use super::stepped::{StartPoint, SteppedAttack, SteppedConfig};
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::threat::ThreatModel;

/// BIM / I-FGSM.
#[derive(Debug, Clone)]
pub struct Bim;

impl Bim {
    /// BIM for `threat`; `options.alpha` overrides the step size.
    pub fn build(threat: &ThreatModel, options: &AttackOptions) -> Result<SteppedAttack> {
        let steps = threat.budget.steps_or(PGD_STEPS);
        let alpha = options.alpha.unwrap_or(threat.eps / steps as f64);
        if threat.eps > 0.0 || options.alpha.is_some() {
            check_alpha(alpha)?;
        }
        let alpha = alpha.max(f64::MIN_POSITIVE);
        Ok(SteppedAttack {
            name: "bim",
            config: SteppedConfig {
                steps,
                restarts: 1,
                alpha,
                start: if options.random_start == Some(true) {
                    StartPoint::Random
                } else {
                    StartPoint::Clean
                },
                momentum: None,
                diversity: None,
                full_budget: options.full_budget,
                confidence: options.confidence,
            },
        })
    }
}
