//! The gradient-masking audit ([`crate::audit`]) as HTML sections: every check with its
//! question, verdict and whether it fired, and, after an adaptive re-evaluation, the standard
//! suite's number next to the adaptive one with the stages that produced it.
use super::html::{HtmlReport, SummaryTable};
use crate::audit::{AdaptiveReport, AuditReport};

/// The audit as HTML sections: one table of every check (question, verdict, fired), and with
/// `adaptive` the standard-versus-adaptive table and its stages.
pub fn audit_sections(
    page: HtmlReport,
    audit: &AuditReport,
    adaptive: Option<&AdaptiveReport>,
) -> HtmlReport {
    let mut checks = SummaryTable::new(
        ["check", "question", "verdict", "fired"].iter().map(|s| s.to_string()).collect(),
    );
    for f in &audit.findings {
        let fired = if f.fired { "FIRED" } else { "no" };
        checks.push_row(vec![f.check.into(), f.question.into(), f.verdict.clone(), fired.into()]);
    }
    let heading = match audit.clean() {
        true => "Gradient-masking audit: no check fired".to_string(),
        false => format!("Gradient-masking audit: {} fired", audit.fired.join(", ")),
    };
    let mut page = page.add_table(heading, checks);
    if let Some(a) = adaptive {
        let mut t = SummaryTable::new(
            ["evaluation", "robust accuracy", "95% CI", "robust / n"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        for (name, acc) in [("standard suite", &a.standard), ("adaptive", &a.adaptive)] {
            t.push_row(vec![
                name.into(),
                format!("{:.4}", acc.robust_accuracy),
                format!("{:.4}-{:.4}", acc.ci95[0], acc.ci95[1]),
                format!("{} / {}", acc.robust, a.n),
            ]);
        }
        page = page.add_table("Standard suite versus adaptive re-evaluation", t);
        let mut stages = SummaryTable::new(
            ["stage", "asked for by", "model view", "attacks", "newly broken", "seconds"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        for s in &a.stages {
            stages.push_row(vec![
                format!("{:?}", s.remedy),
                s.because.join(", "),
                s.view.clone(),
                s.attacks.join(", "),
                s.newly_broken.to_string(),
                format!("{:.1}", s.seconds),
            ]);
        }
        for why in &a.skipped {
            stages.push_row(vec!["skipped".into(), why.clone()]);
        }
        page = page.add_table("Adaptive stages", stages);
    }
    page
}
