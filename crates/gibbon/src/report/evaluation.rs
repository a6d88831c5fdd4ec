//! One evaluation ([`EvalReport`]) as an HTML page: the headline numbers with their
//! interval, what each attack of the plan broke, and, when the evaluation was audited
//! (`gibbon eval --audit`), the gradient-masking audit's checks next to them, so that a reader
//! sees in one place whether the robust accuracy can be trusted.
use super::html::{HtmlReport, SummaryTable};
use crate::audit::AuditReport;
use crate::eval::EvalReport;

fn columns(names: &[&str]) -> SummaryTable {
    SummaryTable::new(names.iter().map(|s| s.to_string()).collect())
}

/// The page for `report` and, when the evaluation was audited, its `audit` (write it with
/// [`HtmlReport::write`]).
pub fn evaluation_page(report: &EvalReport, audit: Option<&AuditReport>) -> HtmlReport {
    let model = report.model.arch.as_deref().unwrap_or(&report.model.kind);
    let mut intro = format!(
        "{} ({model}) on {} samples of {}, threat model {} ε = {}. Every adversarial example \
         counted here was re-verified by gibbon: inside the ball and the box, finite, and \
         misclassified by a fresh forward pass. Command: {}",
        report.model.path,
        report.n,
        report.data.spec,
        report.threat.norm,
        report.threat.eps,
        report.command
    );
    if audit.is_none() {
        intro.push_str(
            "\n\nThis evaluation was not audited for gradient masking (gibbon eval --audit): \
             a high robust accuracy may come from gradients that hide the examples.",
        );
    }
    let mut headline = columns(&["clean accuracy", "robust accuracy", "95% CI", "n", "seconds"]);
    headline.push_row(vec![
        format!("{:.4}", report.clean_accuracy),
        format!("{:.4}", report.robust_accuracy),
        format!("{:.4}-{:.4}", report.robust_accuracy_ci95[0], report.robust_accuracy_ci95[1]),
        report.n.to_string(),
        format!("{:.1}", report.seconds),
    ]);
    let mut attacks = columns(&["attack", "attacked", "broken", "queries", "seconds"]);
    for a in &report.per_attack {
        attacks.push_row(vec![
            a.name.clone(),
            a.attacked.to_string(),
            a.broken.to_string(),
            a.queries.to_string(),
            format!("{:.1}", a.seconds),
        ]);
    }
    let mut page = HtmlReport::new(format!("gibbon eval: {}", report.model.path))
        .intro(intro)
        .add_table("Clean and robust accuracy", headline)
        .add_table("The plan, attack by attack (each runs on the samples still robust)", attacks);
    if let Some(audit) = audit {
        page = super::audit::audit_sections(page, audit, None);
    }
    page
}
