//! Certification (`gibbon certify`): randomized smoothing (Cohen, Rosenfeld & Kolter 2019,
//! L2) or interval bound propagation (`--ibp`, Gowal et al. 2018, L∞): certified accuracy
//! against the radius, as a table and a step curve over every sample's certified radius.
use super::{num, table, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use crate::report::plot::{share_at_least, step_curve};
use serde_json::Value;

/// The "Certified accuracy" section (results with `certified_accuracy`).
pub struct Certification;

/// Certified accuracy at every radius where it drops: `(radius, share)` corners of the steps.
fn steps(per_sample: &[Value], n: usize) -> Vec<(f64, f64)> {
    let correct =
        per_sample.iter().filter(|s| s.get("correct").and_then(Value::as_bool) == Some(true));
    let mut radii: Vec<f64> = correct.filter_map(|s| num(s, "radius")).collect();
    radii.sort_by(f64::total_cmp);
    share_at_least(&radii, n.max(1) as f64)
}

impl Section for Certification {
    fn name(&self) -> &'static str {
        "certification"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(curve) = doc.json.get("certified_accuracy").and_then(Value::as_array) else {
            return Ok(None);
        };
        let ibp =
            doc.json.get("method").and_then(Value::as_str) == Some("interval-bound-propagation");
        let axis = if ibp { "L∞ radius" } else { "L2 radius" };
        let mut t = table(&[axis, "certified accuracy"]);
        for pair in curve {
            let p = pair.as_array().cloned().unwrap_or_default();
            let cell = |k: usize| p.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
            t.push_row(vec![format!("{}", cell(0)), format!("{:.4}", cell(1))]);
        }
        let note = if ibp {
            "Certified accuracy at r: the share of samples answered correctly whose every margin \
             has a positive interval lower bound over the whole L∞ ball of radius r \
             (deterministic; above a sample's radius it is unknown, not broken)."
                .to_string()
        } else {
            let sigma = doc.json.get("config").and_then(|c| num(c, "sigma"));
            format!(
                "Certified accuracy at r: the share of samples whose smoothed class (σ = {}) is \
                 the label with a certified L2 radius of at least r; abstained on {}.",
                sigma.map_or("?".into(), |s| s.to_string()),
                doc.json.get("abstained").map_or("?".into(), |v| v.to_string())
            )
        };
        let mut parts = vec![Part::Note(note), Part::Table(t)];
        let per_sample = doc.json.get("per_sample").and_then(Value::as_array);
        if let Some(records) = per_sample.filter(|r| !r.is_empty()) {
            let n = num(&doc.json, "n").map_or(records.len(), |n| n as usize);
            parts.push(Part::Svg(step_curve(&steps(records, n), axis, "certified accuracy")?));
        }
        let method = if ibp { "interval bound propagation" } else { "randomized smoothing" };
        Ok(Some((format!("Certified accuracy ({method})"), parts)))
    }
}
