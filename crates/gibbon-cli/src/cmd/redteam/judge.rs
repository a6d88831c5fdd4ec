//! The pass criteria, each with its measured value (and 95% interval) and verdict.
use super::Outcome;
use gibbon::redteam::{Metric, RedteamPlan};
use serde_json::{json, Value};

/// `v` as a number, and the `[low, high]` interval at `ci`.
fn with_ci(v: Option<&Value>, ci: Option<&Value>) -> (Option<f64>, Option<Value>) {
    (v.and_then(Value::as_f64), ci.filter(|c| c.is_array()).cloned())
}

/// A serialized detection `Rate` (`rate`, `ci95`).
fn rate(v: &Value) -> (Option<f64>, Option<Value>) {
    with_ci(v.get("rate"), v.get("ci95"))
}

/// The highest success rate of any surrogate on the model (the worst case), with its interval.
fn transfer_rate(t: &Value) -> (Option<f64>, Option<Value>) {
    let cells = t["matrix"].as_array().into_iter().flatten().filter_map(|row| row.get(0));
    let worst = cells.max_by(|a, b| {
        let r = |c: &Value| c["success_rate"].as_f64().unwrap_or(-1.0);
        r(a).total_cmp(&r(b))
    });
    match worst {
        Some(c) => (c["success_rate"].as_f64(), Some(json!([c["ci_low"], c["ci_high"]]))),
        None => (None, None),
    }
}

fn measure(metric: Metric, o: &Outcome) -> (Option<f64>, Option<Value>) {
    let first = o.evaluations.first().map(|(_, r)| r);
    let det = |d: usize| o.detection.get(d).cloned().unwrap_or(Value::Null);
    match metric {
        Metric::RobustAccuracy(run) => {
            let r = o.evaluations.iter().find(|(r, _)| *r == run).map(|(_, r)| r);
            with_ci(
                r.and_then(|r| r.get("robust_accuracy")),
                r.and_then(|r| r.get("robust_accuracy_ci95")),
            )
        }
        Metric::CleanAccuracy => (first.and_then(|r| r["clean_accuracy"].as_f64()), None),
        Metric::AuditFired => {
            let fired =
                o.audit.as_ref().and_then(|a| a["fired"].as_array()).map(|f| f.len() as f64);
            (fired, None)
        }
        Metric::CertifiedAccuracy(radius) => {
            let table = o.certification.as_ref().and_then(|c| c["certified_accuracy"].as_array());
            let at = table.into_iter().flatten().find(|p| p[0].as_f64() == Some(radius));
            (at.and_then(|p| p[1].as_f64()), None)
        }
        Metric::TransferSuccessRate(run) => {
            let t = o.transfers.iter().find(|(r, _)| *r == run).map(|(_, t)| t);
            t.map_or((None, None), transfer_rate)
        }
        Metric::RobustAccuracyUnderDetection(d) => {
            rate(&det(d)["adaptive"]["robust_accuracy_under_detection"])
        }
        Metric::DetectionRate(d, adaptive) => {
            let attack = if adaptive { "adaptive" } else { "non_adaptive" };
            rate(&det(d)[attack]["detection_rate"])
        }
        Metric::CleanFlagged(d) => rate(&det(d)["clean_flagged"]),
        Metric::OodTpr(d, s) => rate(&det(d)["sets"][s]["metrics"]["tpr_at_threshold"]),
        Metric::OodAuroc(d, s) => {
            let m = &det(d)["sets"][s]["metrics"];
            with_ci(m.get("auroc"), m.get("auroc_ci95"))
        }
    }
}

/// Every criterion with its measured value (and interval) and verdict.
pub(super) fn judge(plan: &RedteamPlan, outcome: &Outcome) -> Vec<Value> {
    plan.criteria
        .iter()
        .map(|c| {
            let (measured, ci) = measure(c.metric, outcome);
            let passed = measured.is_some_and(|m| c.holds(m));
            json!({ "criterion": c.text, "measured": measured, "ci95": ci, "passed": passed })
        })
        .collect()
}
