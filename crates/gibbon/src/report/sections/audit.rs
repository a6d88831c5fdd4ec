//! The gradient-masking audit (`gibbon audit`, `gibbon eval --audit`): every check with its
//! verdict, and with `--adaptive` the standard suite against the adaptive re-evaluation and
//! its stages (Carlini et al. 2019, "On evaluating adversarial robustness").
use super::{interval, num, table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// The "Gradient-masking audit" section (results with an `audit`).
pub struct Audit;

fn strings(value: Option<&Value>) -> String {
    let list = value.and_then(Value::as_array).into_iter().flatten();
    list.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn adaptive_parts(a: &Value, parts: &mut Vec<Part>) {
    let mut t = table(&["evaluation", "robust accuracy", "95% CI", "robust / n"]);
    let n = text(a, "n").unwrap_or_default();
    for (name, key) in [("standard suite", "standard"), ("adaptive", "adaptive")] {
        let Some(acc) = a.get(key) else { continue };
        t.push_row(vec![
            name.into(),
            num(acc, "robust_accuracy").map_or("n/a".into(), |v| format!("{v:.4}")),
            interval(acc.get("ci95")),
            format!("{} / {n}", text(acc, "robust").unwrap_or_default()),
        ]);
    }
    parts.push(Part::Table(t));
    let mut stages =
        table(&["stage", "asked for by", "model view", "attacks", "newly broken", "seconds"]);
    for s in a.get("stages").and_then(Value::as_array).into_iter().flatten() {
        stages.push_row(vec![
            text(s, "remedy").unwrap_or_default(),
            strings(s.get("because")),
            text(s, "view").unwrap_or_default(),
            strings(s.get("attacks")),
            text(s, "newly_broken").unwrap_or_default(),
            num(s, "seconds").map_or(String::new(), |v| format!("{v:.1}")),
        ]);
    }
    for why in a.get("skipped").and_then(Value::as_array).into_iter().flatten() {
        stages.push_row(vec!["skipped".into(), why.as_str().unwrap_or_default().into()]);
    }
    parts.push(Part::Table(stages));
}

impl Section for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(audit) = doc.json.get("audit").filter(|a| a.get("findings").is_some()) else {
            return Ok(None);
        };
        let mut checks = table(&["check", "question", "verdict", "fired"]);
        for f in audit.get("findings").and_then(Value::as_array).into_iter().flatten() {
            let fired = f.get("fired").and_then(Value::as_bool) == Some(true);
            checks.push_row(vec![
                text(f, "check").unwrap_or_default(),
                text(f, "question").unwrap_or_default(),
                text(f, "verdict").unwrap_or_default(),
                if fired { "FIRED" } else { "no" }.into(),
            ]);
        }
        let fired = strings(audit.get("fired"));
        let heading = match fired.is_empty() {
            true => "Gradient-masking audit: no check fired".to_string(),
            false => format!("Gradient-masking audit: {fired} fired"),
        };
        let mut parts = vec![Part::Table(checks)];
        if let Some(a) = doc.json.get("adaptive").filter(|a| !a.is_null()) {
            adaptive_parts(a, &mut parts);
        }
        Ok(Some((heading, parts)))
    }
}
