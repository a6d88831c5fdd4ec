//! Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing
//! Adversarial Examples"): one step of size ε along the gradient's steepest-ascent direction
//! (sign for L∞, normalised gradient for L2), from the clean input, projected onto the box.
use super::pgd::check_alpha;
use super::stepped::{StartPoint, SteppedAttack, SteppedConfig};
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::threat::ThreatModel;

/// FGSM (one step, α = ε).
#[derive(Debug, Clone)]
pub struct Fgsm;

impl Fgsm {
    /// FGSM for `threat`; `options.alpha` overrides the step size (default ε).
    pub fn build(threat: &ThreatModel, options: &AttackOptions) -> Result<SteppedAttack> {
        let alpha = options.alpha.unwrap_or(threat.eps);
        if threat.eps > 0.0 || options.alpha.is_some() {
            check_alpha(alpha)?;
        }
        Ok(SteppedAttack {
            name: "fgsm",
            config: SteppedConfig {
                steps: 1,
                restarts: 1,
                alpha: alpha.max(f64::MIN_POSITIVE),
                start: StartPoint::Clean,
                momentum: None,
                diversity: None,
                full_budget: options.full_budget,
                confidence: options.confidence,
            },
        })
    }
}
