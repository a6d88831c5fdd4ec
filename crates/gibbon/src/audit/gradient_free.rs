//! Check 6 (Carlini et al. 2019, section 5.6, "gradient-free attacks should not beat gradient
//! attacks"; AutoAttack's own argument for running Square last): when random search with a
//! small query budget breaks samples that APGD-CE with 100 steps could not, the gradient
//! is not showing the way.
use super::{AuditSubject, Check, Finding};
use crate::attack::AttackOptions;
use crate::error::Result;
use serde_json::json;

/// Square's queries per sample in the check: a fifth of AutoAttack's 5,000. Random search
/// this short should find almost nothing a working gradient attack missed.
pub const SQUARE_QUERIES: usize = 1_000;

/// Fires when Square breaks at least this many of APGD-CE's survivors ...
pub const MIN_EXTRA: usize = 3;

/// ... and at least this fraction of what APGD-CE broke itself.
pub const MIN_EXTRA_RATIO: f64 = 0.25;

/// Fires when Square (on APGD-CE's survivors, [`SQUARE_QUERIES`] queries) breaks at least
/// [`MIN_EXTRA`] samples and at least [`MIN_EXTRA_RATIO`] as many as APGD-CE broke.
/// Remedies: gradient-free attacks with the full budget, and BPDA where possible.
pub struct GradientFreeBeatsGradient;

impl Check for GradientFreeBeatsGradient {
    fn name(&self) -> &'static str {
        "gradient_free"
    }
    fn question(&self) -> &'static str {
        "does a short gradient-free attack break samples that APGD-CE could not?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let mut threat = subject.threat.clone();
        threat.budget.queries = Some(SQUARE_QUERIES);
        threat.budget.restarts = Some(1);
        let report = subject.evaluate(&threat, &["apgd-ce", "square"], AttackOptions::default())?;
        let broken_by =
            |name: &str| report.per_attack.iter().find(|a| a.name == name).map_or(0, |a| a.broken);
        let (gradient, free) = (broken_by("apgd-ce"), broken_by("square"));
        let fired = free >= MIN_EXTRA && free as f64 >= MIN_EXTRA_RATIO * (gradient.max(1) as f64);
        let remedies = if fired { subject.unusable_gradient_remedies() } else { Vec::new() };
        let verdict = format!(
            "at {} = {}: APGD-CE broke {gradient}, then Square ({SQUARE_QUERIES} queries) broke \
             {free} more{}",
            threat.norm,
            threat.eps,
            if fired { ": the gradient misses what random search finds" } else { "" }
        );
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired,
            verdict,
            evidence: json!({
                "eps": threat.eps,
                "apgd_ce_broken": gradient,
                "square_broken_after_apgd": free,
                "square_queries": SQUARE_QUERIES,
                "robust_accuracy": report.robust_accuracy,
                "min_extra": MIN_EXTRA,
                "min_extra_ratio": MIN_EXTRA_RATIO,
            }),
            remedies,
        })
    }
}
