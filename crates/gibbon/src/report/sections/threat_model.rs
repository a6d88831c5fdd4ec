//! The threat model as the run recorded it (knowledge, norm, ε, goal, box, budgets, defenses)
//! and the fingerprints of what was attacked: model file, SHA-256 and kind, data and split,
//! seed, command and gibbon's version.
use super::{table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// The "Threat model and fingerprints" section (any result with a `threat` or a `model`).
pub struct ThreatModelSection;

/// Appends `prefix.key = value` rows for every leaf of `value`.
fn flatten(rows: &mut Vec<Vec<String>>, prefix: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(rows, &name, v);
            }
        }
        Value::Null => {}
        Value::String(s) => rows.push(vec![prefix.to_string(), s.clone()]),
        other => rows.push(vec![prefix.to_string(), other.to_string()]),
    }
}

fn model_row(rows: &mut Vec<Vec<String>>, role: &str, model: &Value) {
    let kind = text(model, "arch").or_else(|| text(model, "kind")).unwrap_or_default();
    rows.push(vec![
        role.to_string(),
        text(model, "path").unwrap_or_default(),
        kind,
        text(model, "sha256").unwrap_or_default(),
    ]);
}

impl Section for ThreatModelSection {
    fn name(&self) -> &'static str {
        "threat-model"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let j = &doc.json;
        let threat = j.get("threat").or_else(|| j.get("audit").and_then(|a| a.get("threat")));
        let mut models = Vec::new();
        if let Some(m) = j.get("model").or_else(|| j.get("audit").and_then(|a| a.get("model"))) {
            model_row(&mut models, "model", m);
        }
        for (role, key) in [("surrogate", "surrogates"), ("target", "targets")] {
            for r in j.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(m) = r.get("model") {
                    model_row(&mut models, role, m);
                }
            }
        }
        if threat.is_none() && models.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        if let Some(threat) = threat {
            let mut rows = Vec::new();
            flatten(&mut rows, "", threat);
            let mut t = table(&["threat model", "value"]);
            t.rows = rows;
            parts.push(Part::Table(t));
        }
        let mut t = table(&["role", "model", "kind", "SHA-256"]);
        t.rows = models;
        if !t.rows.is_empty() {
            parts.push(Part::Table(t));
        }
        let mut run = table(&["run", "value"]);
        if let Some(d) = j.get("data") {
            flatten(&mut run.rows, "data", d);
        }
        for key in ["seed", "device", "command", "gibbon_version", "seconds"] {
            if let Some(v) = text(j, key) {
                run.push_row(vec![key.to_string(), v]);
            }
        }
        if !run.rows.is_empty() {
            parts.push(Part::Table(run));
        }
        Ok(Some(("Threat model and fingerprints".into(), parts)))
    }
}
