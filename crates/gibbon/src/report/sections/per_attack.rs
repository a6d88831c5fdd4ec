//! The plan attack by attack: how many samples each stage ran on and broke, its wall time and
//! its queries (each stage runs only on the samples the earlier ones left unbroken).
use super::{num, table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// The "Per-attack breakdown" section (evaluations with `per_attack`).
pub struct PerAttack;

impl Section for PerAttack {
    fn name(&self) -> &'static str {
        "per-attack"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(stages) = doc.json.get("per_attack").and_then(Value::as_array) else {
            return Ok(None);
        };
        let mut t = table(&[
            "stage",
            "attack",
            "attacked",
            "broken",
            "share broken",
            "queries",
            "seconds",
            "verifier disagreements",
        ]);
        for (k, a) in stages.iter().enumerate() {
            let attacked = num(a, "attacked").unwrap_or(0.0);
            let broken = num(a, "broken").unwrap_or(0.0);
            let share = if attacked > 0.0 {
                format!("{:.1}%", 100.0 * broken / attacked)
            } else {
                "n/a".into()
            };
            t.push_row(vec![
                (k + 1).to_string(),
                text(a, "name").unwrap_or_default(),
                format!("{attacked}"),
                format!("{broken}"),
                share,
                text(a, "queries").unwrap_or_default(),
                num(a, "seconds").map_or(String::new(), |s| format!("{s:.1}")),
                text(a, "verifier_disagreements").unwrap_or_default(),
            ]);
        }
        let mut parts = vec![Part::Table(t)];
        if let Some(suite) = doc.json.get("suite").filter(|s| !s.is_null()) {
            parts.push(Part::Note(format!("Suite: {suite}")));
        }
        if let Some(q) = text(&doc.json, "total_queries") {
            parts.push(Part::Note(format!("Model queries spent by the whole plan: {q}.")));
        }
        Ok(Some((
            "Per-attack breakdown (each stage runs on the samples still robust)".into(),
            parts,
        )))
    }
}
