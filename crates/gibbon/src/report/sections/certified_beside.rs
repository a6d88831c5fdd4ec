//! `gibbon eval --certificates`: the randomized-smoothing certificates (Cohen, Rosenfeld &
//! Kolter 2019) beside the smallest adversarial perturbations found, per sample. The smoothed
//! classifier g's certificate bounds SmoothAdv's example against g (Salman et al. 2019): such an
//! example inside its certified radius is a violation. The base classifier f's example is about
//! another classifier, so one inside g's radius is shown, never counted as a contradiction.
use super::{num, table, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use crate::report::plot::scatter_with_diagonal;
use serde_json::Value;

/// The "Certificates beside the attacks" section (eval results with `certified`).
pub struct CertifiedBeside;

/// `(certified radius, key's value)` for every sample with a certificate (a class) and a value.
fn pairs(rows: &[Value], key: &str) -> Vec<(f64, f64)> {
    let certified = rows.iter().filter(|r| r.get("smoothed_class").is_some_and(|c| !c.is_null()));
    certified.filter_map(|r| Some((num(r, "certified_radius")?, num(r, key)?))).collect()
}

fn counts_table(c: &Value) -> crate::report::html::SummaryTable {
    let mut t = table(&["", "value"]);
    let same = c.get("same_base_model").and_then(Value::as_bool) == Some(true);
    let rows = [
        (
            "σ / draws n / α",
            format!("{} / {} / {}", num_or(c, "sigma"), num_or(c, "draws"), num_or(c, "alpha")),
        ),
        ("certificates joined", text(c, "joined").unwrap_or_default()),
        ("certified base model", if same { "the evaluated model" } else { "ANOTHER model" }.into()),
        (
            "SmoothAdv examples inside a certified radius (smoothed classifier; expected 0)",
            text(c, "smoothed_violations")
                .unwrap_or_else(|| "not attacked (certify --attack)".into()),
        ),
        (
            "base-classifier examples inside the smoothed classifier's radius (information)",
            text(c, "base_inside_certified_radius")
                .unwrap_or_else(|| "n/a (not an L2 evaluation)".into()),
        ),
    ];
    for (k, v) in rows {
        t.push_row(vec![k.into(), v]);
    }
    t
}

fn num_or(v: &Value, key: &str) -> String {
    num(v, key).map_or("?".into(), |x| x.to_string())
}

impl Section for CertifiedBeside {
    fn name(&self) -> &'static str {
        "certified-beside"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(c) = doc.json.get("certified") else { return Ok(None) };
        let Some(rows) = c.get("per_sample").and_then(Value::as_array) else { return Ok(None) };
        let mut parts = vec![
            Part::Note(
                "Each point is one sample the smoothed classifier certified: its certified L2 \
                 radius (x) against the smallest perturbation found (y). SmoothAdv attacks the \
                 smoothed classifier, so its points must lie on or above the diagonal; eval's \
                 attacks target the base classifier, another classifier, whose points may lie \
                 below it."
                    .into(),
            ),
            Part::Table(counts_table(c)),
        ];
        let smoothed = pairs(rows, "smoothed_attack_l2");
        let l2 = c.get("base_norm").and_then(Value::as_str) == Some("l2");
        let base = if l2 { pairs(rows, "base_min_norm") } else { Vec::new() };
        let mut series = Vec::new();
        if !smoothed.is_empty() {
            series.push(("SmoothAdv on the smoothed classifier", smoothed));
        }
        if !base.is_empty() {
            series.push(("eval's attacks on the base classifier", base));
        }
        if !series.is_empty() {
            let svg = scatter_with_diagonal(
                &series,
                "certified L2 radius",
                "smallest L2 perturbation found",
            )?;
            parts.push(Part::Svg(svg));
        }
        Ok(Some(("Certificates beside the attacks".into(), parts)))
    }
}
