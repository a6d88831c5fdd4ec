//! The pass criteria of a red-team run (`gibbon redteam`): each criterion, the measured value
//! and whether it held, with the overall verdict, and the threat file as the user wrote it.
use super::{num, table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// The "Pass criteria" section (red-team results).
pub struct PassCriteria;

impl Section for PassCriteria {
    fn name(&self) -> &'static str {
        "criteria"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(criteria) = doc.json.get("criteria").and_then(Value::as_array) else {
            return Ok(None);
        };
        let mut t = table(&["criterion", "measured", "95% CI", "verdict"]);
        for c in criteria {
            let held = c.get("passed").and_then(Value::as_bool) == Some(true);
            t.push_row(vec![
                text(c, "criterion").unwrap_or_default(),
                num(c, "measured").map_or("n/a".into(), |v| format!("{v:.4}")),
                super::interval(c.get("ci95")),
                if held { "PASS" } else { "FAIL" }.into(),
            ]);
        }
        let passed = doc.json.get("passed").and_then(Value::as_bool) == Some(true);
        let verdict = if passed { "every criterion holds" } else { "a criterion fails" };
        let mut parts = vec![Part::Table(t)];
        if let Some(threat) = text(&doc.json, "threat_text") {
            let summary = text(&doc.json, "threat_file").unwrap_or_else(|| "threat file".into());
            parts.push(Part::Code { summary, text: threat });
        }
        Ok(Some((format!("Pass criteria: {verdict}"), parts)))
    }
}
