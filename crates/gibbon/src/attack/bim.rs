//! Basic Iterative Method (Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the
//! physical world"): iterated FGSM from the clean input, projected onto ball ∩ box.
//!
//! Defaults: steps from the threat model, step size α = ε/steps (so the last step can reach
//! the boundary), no random start, one run.
use super::pgd::check_alpha;
use super::stepped::{StartPoint, SteppedAttack, SteppedConfig};
use super::{Attack, AttackContext, AttackOptions, AttackRecord, SampleSource};
use crate::error::Result;
use crate::threat::ThreatModel;

/// BIM / I-FGSM.
#[derive(Debug, Clone)]
pub struct Bim(SteppedAttack);

impl Bim {
    /// BIM for `threat`; `options.alpha` overrides the step size.
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        let steps = threat.budget.steps;
        let alpha = options.alpha.unwrap_or(threat.eps / steps as f64);
        if threat.eps > 0.0 || options.alpha.is_some() {
            check_alpha(alpha)?;
        }
        let alpha = alpha.max(f64::MIN_POSITIVE);
        Ok(Bim(SteppedAttack {
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
            },
        }))
    }
}

impl Attack for Bim {
    fn name(&self) -> &'static str {
        "bim"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.0.config).unwrap_or_default()
    }
    fn run(
        &self,
        ctx: &AttackContext<'_>,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        self.0.run_rows(ctx, source, sink)
    }
}
