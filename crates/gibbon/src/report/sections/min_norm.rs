//! The distribution of the smallest adversarial perturbation a minimum-norm attack found per
//! sample (`min_norms` of a curve, or `per_sample[].min_norm`), as a histogram with ε marked.
use super::{num, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use crate::report::plot::histogram;
use serde_json::Value;

/// The "Minimum-norm distribution" section (results with minimum norms).
pub struct MinNorm;

const BINS: usize = 30;

/// Every minimum norm the result records (`None` = no adversarial example found).
fn min_norms(json: &Value) -> Vec<Option<f64>> {
    if let Some(list) = json.get("min_norms").and_then(Value::as_array) {
        return list.iter().map(Value::as_f64).collect();
    }
    let records = json.get("per_sample").and_then(Value::as_array);
    let with_min = records.into_iter().flatten().filter(|r| r.get("min_norm").is_some());
    with_min.map(|r| num(r, "min_norm")).collect()
}

impl Section for MinNorm {
    fn name(&self) -> &'static str {
        "min-norm"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let all = min_norms(&doc.json);
        let mut found: Vec<f64> = all.iter().flatten().copied().filter(|v| v.is_finite()).collect();
        if found.is_empty() {
            return Ok(None);
        }
        found.sort_by(f64::total_cmp);
        let median = found[found.len() / 2];
        let threat = doc.json.get("threat");
        let eps = threat.and_then(|t| num(t, "eps"));
        let norm = threat.and_then(|t| t.get("norm")).and_then(Value::as_str).unwrap_or("norm");
        let svg = histogram(&found, BINS, &format!("smallest adversarial {norm} norm"), eps)?;
        let note = format!(
            "{} of {} samples have an adversarial example (median norm {median:.4}; the red line \
             is ε); the others were left unbroken or were misclassified when clean.",
            found.len(),
            all.len()
        );
        Ok(Some(("Minimum-norm distribution".into(), vec![Part::Note(note), Part::Svg(svg)])))
    }
}
