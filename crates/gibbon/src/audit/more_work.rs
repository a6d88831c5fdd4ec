//! Check 5 (Carlini et al. 2019, section 5.3: "iterative attacks should be stronger than
//! single-step attacks", "increasing the iteration count should not change the result"):
//! three independent evaluations of the same samples, each with more work than the last:
//! FGSM, PGD with [`FEW_STEPS`] steps, PGD with [`MANY_STEPS`] steps (clean start, one
//! restart, step 2.5·ε/steps). Two symptoms:
//! - **more work hurts**: FGSM, or the short PGD, breaks clearly more samples than the long
//!   PGD. With a gradient that leads uphill this does not happen; when it does, the iterates
//!   are being led astray (a shattered or stochastic gradient), and no number from a gradient
//!   attack can be trusted.
//! - **not converged**: the long PGD breaks far more than the short one. The evaluation's own
//!   attacks may then also stop short of what more iterations would find.
use super::{fraction, AuditSubject, Check, Finding, Remedy};
use crate::attack::AttackOptions;
use crate::error::Result;
use crate::eval::EvalReport;
use serde_json::json;

/// Steps of the short PGD.
pub const FEW_STEPS: usize = 10;

/// Steps of the long PGD.
pub const MANY_STEPS: usize = 100;

/// "Clearly more" in the first symptom: at least this many samples ...
pub const MIN_EXCESS: usize = 3;

/// ... and at least this fraction of the correctly classified samples.
pub const EXCESS_FRACTION: f64 = 0.03;

/// "Far more" in the second symptom: the long PGD breaks more than this fraction of the
/// correctly classified samples beyond the short one (and at least [`MIN_GAIN`] samples).
pub const GAIN_FRACTION: f64 = 0.10;

/// Smallest gain in samples that can fire the second symptom.
pub const MIN_GAIN: usize = 5;

/// What each amount of work broke, of `correct` correctly classified samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkCounts {
    /// Correctly classified samples.
    pub correct: usize,
    /// Broken by FGSM.
    pub single_step: usize,
    /// Broken by PGD-[`FEW_STEPS`].
    pub few_steps: usize,
    /// Broken by PGD-[`MANY_STEPS`].
    pub many_steps: usize,
}

impl WorkCounts {
    /// Less work broke clearly more than the most work.
    pub fn more_work_hurts(&self) -> bool {
        let tolerance = MIN_EXCESS.max((EXCESS_FRACTION * self.correct as f64).ceil() as usize);
        self.single_step.max(self.few_steps) > self.many_steps + tolerance
    }

    /// The long attack broke far more than the short one.
    pub fn not_converged(&self) -> bool {
        let gain = self.many_steps.saturating_sub(self.few_steps);
        gain >= MIN_GAIN && gain as f64 > GAIN_FRACTION * self.correct as f64
    }
}

/// Fires on either symptom. Remedies: BPDA where swappable and gradient-free attacks when more
/// work hurts; longer gradient attacks ([`Remedy::MoreIterations`]) when not converged.
pub struct MoreWork;

fn broken(report: &EvalReport) -> usize {
    report.per_sample.iter().filter(|r| r.broken_by.is_some()).count()
}

impl Check for MoreWork {
    fn name(&self) -> &'static str {
        "more_work"
    }
    fn question(&self) -> &'static str {
        "do more iterations help the attacker (never the model), and has the attack converged?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let options = AttackOptions { random_start: Some(false), ..AttackOptions::default() };
        let run = |attack: &str, steps: usize| -> Result<usize> {
            let mut threat = subject.threat.clone();
            threat.budget.steps = Some(steps);
            threat.budget.restarts = Some(1);
            Ok(broken(&subject.evaluate(&threat, &[attack], options.clone())?))
        };
        let counts = WorkCounts {
            correct: subject.clean()?.indices.len(),
            single_step: run("fgsm", 1)?,
            few_steps: run("pgd", FEW_STEPS)?,
            many_steps: run("pgd", MANY_STEPS)?,
        };
        let (hurts, short) = (counts.more_work_hurts(), counts.not_converged());
        let mut remedies = if hurts { subject.unusable_gradient_remedies() } else { Vec::new() };
        if short {
            remedies.push(Remedy::MoreIterations);
        }
        let WorkCounts { correct, single_step, few_steps, many_steps } = counts;
        let mut verdict = format!(
            "of {correct} samples FGSM broke {single_step}, PGD-{FEW_STEPS} {few_steps}, \
             PGD-{MANY_STEPS} {many_steps}"
        );
        if hurts {
            verdict.push_str(": less work broke more, the iterates are led astray");
        }
        if short {
            verdict.push_str(": more steps keep finding examples, the attacks have not converged");
        }
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired: hurts || short,
            verdict,
            evidence: json!({
                "eps": subject.threat.eps,
                "correct": correct,
                "fgsm_broken": single_step,
                "pgd_few_steps": FEW_STEPS,
                "pgd_few_broken": few_steps,
                "pgd_many_steps": MANY_STEPS,
                "pgd_many_broken": many_steps,
                "more_work_hurts": hurts,
                "not_converged": short,
                "robust_fraction_after_most_work": fraction(correct - many_steps.min(correct), correct),
            }),
            remedies,
        })
    }
}
