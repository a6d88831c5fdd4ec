//! Robust accuracy against ε (`gibbon eval --eps A,B,...`) with its 95% Clopper-Pearson band,
//! the clean accuracy drawn at ε = 0, as a plot and a table.
use super::{interval, num, table, ResultDoc, Section};
use crate::error::Result;
use crate::eval::clopper_pearson;
use crate::report::html::Part;
use crate::report::plot::{line_with_band, BandPoint};
use serde_json::Value;

/// The "Robust accuracy against ε" section (results with a `curve`).
pub struct RobustnessCurve;

fn pair(value: Option<&Value>) -> Option<(f64, f64)> {
    let p = value?.as_array()?;
    Some((p.first()?.as_f64()?, p.get(1)?.as_f64()?))
}

impl Section for RobustnessCurve {
    fn name(&self) -> &'static str {
        "curve"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(curve) = doc.json.get("curve").and_then(Value::as_array) else {
            return Ok(None);
        };
        let mut points: Vec<BandPoint> = Vec::new();
        let n = num(&doc.json, "n").unwrap_or(0.0) as usize;
        if let Some(clean) = num(&doc.json, "clean_accuracy").filter(|_| n > 0) {
            let (lo, hi) = clopper_pearson((clean * n as f64).round() as usize, n, 0.05);
            points.push((0.0, clean, lo, hi));
        }
        let mut t = table(&[
            "ε",
            "robust accuracy",
            "95% CI",
            "broken by min-norm",
            "broken by plan",
            "seconds",
        ]);
        for p in curve {
            let (Some(eps), Some(acc)) = (num(p, "eps"), num(p, "robust_accuracy")) else {
                continue;
            };
            let (lo, hi) = pair(p.get("robust_accuracy_ci95")).unwrap_or((acc, acc));
            points.push((eps, acc, lo, hi));
            let cell = |k: &str| p.get(k).map_or(String::new(), |v| v.to_string());
            t.push_row(vec![
                format!("{eps}"),
                format!("{acc:.4}"),
                interval(p.get("robust_accuracy_ci95")),
                cell("broken_by_min_norm"),
                cell("broken_by_plan"),
                num(p, "seconds").map_or(String::new(), |s| format!("{s:.1}")),
            ]);
        }
        if t.rows.is_empty() {
            return Ok(None);
        }
        let norm = doc.json.get("threat").and_then(|t| t.get("norm")).and_then(Value::as_str);
        let x = format!("ε ({})", norm.unwrap_or("norm"));
        let svg = line_with_band(&points, &x, "robust accuracy")?;
        let note = "Robust accuracy at each ε, the shaded band its 95% Clopper-Pearson interval; \
                    the point at ε = 0 is the clean accuracy.";
        Ok(Some((
            "Robust accuracy against ε".into(),
            vec![Part::Note(note.into()), Part::Svg(svg), Part::Table(t)],
        )))
    }
}
