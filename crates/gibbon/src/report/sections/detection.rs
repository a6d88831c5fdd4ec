//! Detection (`gibbon detect eval` and `gibbon detect attack`): a calibrated detector's
//! threshold and its measured false-positive rate, its AUROC, TPR at the threshold and FPR at
//! 95% TPR on each OOD or adversarial set, and the guarded model under the non-adaptive and the
//! adaptive attack (Carlini & Wagner 2017: a detector evaluated only against attacks that
//! ignore it proves nothing).
use super::{interval, num, table, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// The "Detection" section (results with `detector` and `calibration`).
pub struct Detection;

/// `value (low-high)`, the 95% interval `ci` beside it.
fn with_interval(value: Option<f64>, ci: Option<&Value>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.4} ({})", interval(ci)))
}

/// A serialized `Rate` (`rate`, `ci95`) as `rate (low-high)`.
fn rate(v: Option<&Value>) -> String {
    with_interval(v.and_then(|r| num(r, "rate")), v.and_then(|r| r.get("ci95")))
}

fn count(v: Option<&Value>) -> String {
    let k = v.and_then(|r| r.get("k")).map_or("?".into(), Value::to_string);
    let n = v.and_then(|r| r.get("n")).map_or("?".into(), Value::to_string);
    format!("{k} / {n}")
}

/// The calibration note: threshold, target FPR, n and the bound on the true FPR.
fn calibration_note(doc: &Value) -> Option<String> {
    let c = doc.get("calibration")?;
    Some(format!(
        "Detector {} for {}: threshold {} (scores above it are flagged), calibrated on {} clean \
         inputs for a target false-positive rate of {}; one-sided 95% upper bound on its true \
         false-positive rate {}.",
        doc.get("detector").and_then(Value::as_str).unwrap_or("?"),
        doc.pointer("/model/path").and_then(Value::as_str).unwrap_or("?"),
        num(c, "threshold").map_or("?".into(), |t| format!("{t:.6}")),
        c.get("n").map_or("?".into(), Value::to_string),
        num(c, "fpr_target").map_or("?".into(), |t| t.to_string()),
        num(c, "fpr_upper_bound").map_or("?".into(), |t| format!("{t:.4}")),
    ))
}

/// `gibbon detect eval`: one row per OOD or adversarial set.
fn sets_table(sets: &[Value]) -> Part {
    let mut t = table(&[
        "set",
        "data",
        "n",
        "AUROC [95% CI]",
        "TPR at the threshold",
        "FPR at 95% TPR",
        "clean FPR at the threshold",
    ]);
    for s in sets {
        let m = s.get("metrics").cloned().unwrap_or(Value::Null);
        t.push_row(vec![
            s.get("kind").and_then(Value::as_str).unwrap_or("?").into(),
            s.get("spec").and_then(Value::as_str).unwrap_or("?").into(),
            s.get("n").map_or("?".into(), Value::to_string),
            with_interval(num(&m, "auroc"), m.get("auroc_ci95")),
            rate(m.get("tpr_at_threshold")),
            with_interval(num(&m, "fpr_at_95_tpr"), m.get("fpr_at_95_tpr_ci95")),
            rate(m.get("fpr_at_threshold")),
        ]);
    }
    Part::Table(t)
}

/// `gibbon detect attack`: the non-adaptive and the adaptive attack side by side.
fn attacks_table(doc: &Value) -> Part {
    let mut t = table(&[
        "attack",
        "robust accuracy under detection (correct or flagged)",
        "detection rate of its misclassified examples",
        "classifier alone: robust accuracy",
        "seconds",
    ]);
    for (name, key) in
        [("non-adaptive (ignores the detector)", "non_adaptive"), ("adaptive", "adaptive")]
    {
        let Some(a) = doc.get(key) else { continue };
        t.push_row(vec![
            name.into(),
            format!(
                "{} ({})",
                rate(a.get("robust_accuracy_under_detection")),
                count(a.get("robust_accuracy_under_detection"))
            ),
            rate(a.get("detection_rate")),
            rate(a.get("robust_accuracy_classifier")),
            num(a, "seconds").map_or("?".into(), |s| format!("{s:.1}")),
        ]);
    }
    Part::Table(t)
}

impl Section for Detection {
    fn name(&self) -> &'static str {
        "detection"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let j = &doc.json;
        let Some(note) = calibration_note(j) else { return Ok(None) };
        if j.get("detector").is_none() {
            return Ok(None);
        }
        let mut parts = vec![Part::Note(note)];
        if let Some(sets) = j.get("sets").and_then(Value::as_array).filter(|s| !s.is_empty()) {
            parts.push(sets_table(sets));
        }
        if let Some(flagged) = j.get("clean_flagged") {
            parts.push(Part::Note(format!(
                "Clean inputs flagged at the threshold (its false-positive rate on the attacked \
                 samples): {} ({}).",
                rate(Some(flagged)),
                count(Some(flagged))
            )));
        }
        if j.get("adaptive").is_some() {
            parts.push(Part::Note(format!(
                "The guarded model under attack at {} ε = {}: an example counts for the attacker \
                 only if it is misclassified and not flagged; every one was re-verified.",
                match j.get("norm").and_then(Value::as_str) {
                    Some("l2") => "L2",
                    Some("l1") => "L1",
                    _ => "L∞",
                },
                num(j, "eps").map_or("?".into(), |e| e.to_string())
            )));
            parts.push(attacks_table(j));
        }
        Ok(Some(("Detection".into(), parts)))
    }
}
