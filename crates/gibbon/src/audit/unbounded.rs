//! Check 4 (Carlini et al. 2019, section 5.3, "unbounded attacks must succeed"): at a radius
//! as large as the whole input box, any input can be moved to any other, so a gradient attack
//! that works must misclassify every sample. When samples survive, the attack's gradients are
//! not leading it anywhere, and its numbers at the real radius mean nothing.
use super::{AuditSubject, Check, Finding};
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::eval::box_diameter;
use serde_json::json;

/// PGD iterations at the unbounded radius (step 2.5·ε/steps, clean start: a random start at
/// this radius is a random image, which would hide a useless gradient).
pub const STEPS: usize = 20;

/// Largest tolerated surviving fraction of the correctly classified samples (1%: one stubborn
/// sample in a hundred does not fire).
pub const MAX_SURVIVING: f64 = 0.01;

/// Fires when PGD at ε = the box diameter leaves more than [`MAX_SURVIVING`] of the correctly
/// classified samples robust. Remedies: BPDA where the graph has swappable ops, and
/// gradient-free attacks.
pub struct UnboundedAttack;

impl Check for UnboundedAttack {
    fn name(&self) -> &'static str {
        "unbounded"
    }
    fn question(&self) -> &'static str {
        "does a gradient attack at a radius covering the whole input box break every sample?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let mut threat = subject.threat.clone();
        let dim = subject.model.input_shape().iter().product::<i64>() as usize;
        threat.eps = box_diameter(&threat, dim);
        // PGD takes its steps from the threat model's budget.
        threat.budget.steps = Some(STEPS);
        threat.budget.restarts = Some(1);
        let options = AttackOptions { random_start: Some(false), ..AttackOptions::default() };
        let report = subject.evaluate(&threat, &["pgd"], options)?;
        let correct = subject.clean()?.indices.len();
        let survivors = report.per_sample.iter().filter(|r| r.robust).count();
        let surviving = super::fraction(survivors, correct);
        let fired = surviving > MAX_SURVIVING;
        let remedies = if fired { subject.unusable_gradient_remedies() } else { Vec::new() };
        let verdict = format!(
            "PGD-{STEPS} at {} = {} (the box diameter) left {survivors} of {correct} samples \
             robust{}",
            threat.norm,
            threat.eps,
            if fired { ": its gradients do not lead anywhere" } else { "" }
        );
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired,
            verdict,
            evidence: json!({
                "eps": threat.eps,
                "steps": STEPS,
                "correct": correct,
                "surviving": survivors,
                "surviving_fraction": surviving,
                "max_surviving_fraction": MAX_SURVIVING,
            }),
            remedies,
        })
    }
}
