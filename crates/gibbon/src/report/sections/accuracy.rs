//! Clean and robust accuracy with the robust accuracy's 95% Clopper-Pearson interval, from an
//! evaluation's `clean_accuracy`, `robust_accuracy` and `robust_accuracy_ci95`.
use super::{interval, num, table, ResultDoc, Section};
use crate::error::Result;
use crate::eval::clopper_pearson;
use crate::report::html::Part;

/// The "Clean and robust accuracy" section (evaluations).
pub struct Accuracy;

impl Section for Accuracy {
    fn name(&self) -> &'static str {
        "accuracy"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let j = &doc.json;
        let (Some(clean), Some(robust)) = (num(j, "clean_accuracy"), num(j, "robust_accuracy"))
        else {
            return Ok(None);
        };
        let n = num(j, "n").unwrap_or(0.0) as usize;
        // The clean interval is not in the JSON: it is the same Clopper-Pearson interval.
        let clean_ci = if n > 0 {
            let (lo, hi) = clopper_pearson((clean * n as f64).round() as usize, n, 0.05);
            format!("{lo:.4}-{hi:.4}")
        } else {
            "n/a".into()
        };
        let mut t = table(&["metric", "value", "95% CI", "n"]);
        t.push_row(vec!["clean accuracy".into(), format!("{clean:.4}"), clean_ci, n.to_string()]);
        t.push_row(vec![
            "robust accuracy".into(),
            format!("{robust:.4}"),
            interval(j.get("robust_accuracy_ci95")),
            n.to_string(),
        ]);
        if let Some(single) = num(j, "robust_accuracy_single_pass") {
            t.push_row(vec![
                "robust accuracy (single-pass verdicts)".into(),
                format!("{single:.4}"),
            ]);
        }
        let mut parts = vec![Part::Table(t)];
        if let Some(d) = num(j, "verifier_disagreements").filter(|d| *d > 0.0) {
            parts.push(Part::Note(format!(
                "The verifier's fresh forward pass disagreed with an attack's claimed success {d} times \
                 (those samples count as robust)."
            )));
        }
        Ok(Some(("Clean and robust accuracy".into(), parts)))
    }
}
