//! Per-sample records as a table, limited to [`SAMPLE_ROWS`] rows (broken samples first, then
//! by index) so that a page of a 10,000-sample result stays small; every record is in the
//! JSON.
use super::{num, table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// Most per-sample rows a page shows.
pub const SAMPLE_ROWS: usize = 100;

/// The "Per-sample records" section (evaluations).
pub struct Samples;

impl Section for Samples {
    fn name(&self) -> &'static str {
        "samples"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(records) = doc.json.get("per_sample").and_then(Value::as_array) else {
            return Ok(None);
        };
        if records.is_empty() || records[0].get("robust").is_none() {
            return Ok(None);
        }
        let broken = |r: &Value| r.get("broken_by").is_some_and(|b| !b.is_null());
        let order =
            records.iter().filter(|r| broken(r)).chain(records.iter().filter(|r| !broken(r)));
        let mut t = table(&[
            "index",
            "label",
            "clean",
            "conf.",
            "adversarial",
            "conf.",
            "robust",
            "broken by",
            "step",
            "norm",
            "queries",
        ]);
        for r in order.take(SAMPLE_ROWS) {
            let cell = |k: &str| text(r, k).unwrap_or_default();
            let fixed = |k: &str| num(r, k).map_or(String::new(), |v| format!("{v:.3}"));
            t.push_row(vec![
                cell("index"),
                cell("label"),
                cell("clean_pred"),
                fixed("clean_confidence"),
                cell("adv_pred"),
                fixed("adv_confidence"),
                cell("robust"),
                cell("broken_by"),
                cell("step"),
                num(r, "norm").map_or(String::new(), |v| format!("{v:.4}")),
                cell("queries"),
            ]);
        }
        let note = format!(
            "{} of {} records shown, broken samples first; every record is in the JSON.",
            t.rows.len(),
            records.len()
        );
        Ok(Some(("Per-sample records".into(), vec![Part::Note(note), Part::Table(t)])))
    }
}
