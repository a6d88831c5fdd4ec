//! The `[[pass]]` tables, checked against what the plan computes.
use super::file::PassSection;
use super::plan::{At, Computed, Criterion, Metric, Run};
use crate::error::Result;
use crate::threat::Norm;
use toml::Spanned;

/// One `[[pass]]` table, checked against what the plan computes.
pub(super) fn criterion(
    at: &At,
    p: &Spanned<PassSection>,
    computed: &Computed,
) -> Result<Criterion> {
    let (runs, audit, certify) = (computed.runs, computed.audit, computed.certify);
    let c = p.get_ref();
    let (min, max) = (c.min, c.max);
    if min.is_none() && max.is_none() {
        return Err(at.error(p.span(), "pass: give `min` or `max`"));
    }
    let bounds = match (min, max) {
        (Some(lo), Some(hi)) => format!("in [{lo}, {hi}]"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => unreachable!(),
    };
    let name = c.metric.get_ref().as_str();
    let metric = match name {
        "robust_accuracy" => Metric::RobustAccuracy(run_of(at, p, runs, name)?),
        "transfer_success_rate" if computed.transfer => {
            Metric::TransferSuccessRate(run_of(at, p, runs, name)?)
        }
        "transfer_success_rate" => {
            return Err(at.error(
                c.metric.span(),
                "pass.metric: transfer_success_rate is not computed without [transfer]",
            ));
        }
        "robust_accuracy_under_detection"
        | "detection_rate"
        | "clean_flagged"
        | "ood_tpr"
        | "ood_auroc" => detection_metric(at, p, computed)?,
        "clean_accuracy" => Metric::CleanAccuracy,
        "certified_accuracy" => {
            let Some(plan) = certify else {
                return Err(at.error(
                    c.metric.span(),
                    "pass.metric: certified_accuracy is not computed without [certify]",
                ));
            };
            let Some(radius) = &c.radius else {
                return Err(at.error(p.span(), "pass: certified_accuracy needs `radius`"));
            };
            if !plan.radii.iter().any(|r| (r - radius.get_ref()).abs() < 1e-12) {
                return Err(at.error(
                    radius.span(),
                    format!("pass.radius: certified_accuracy at radius {} is not computed (certify.radii)", radius.get_ref()),
                ));
            }
            Metric::CertifiedAccuracy(*radius.get_ref())
        }
        "audit_fired" if audit => Metric::AuditFired,
        "audit_fired" => {
            return Err(at.error(
                c.metric.span(),
                "pass.metric: audit_fired is not computed without [audit]",
            ));
        }
        other => {
            return Err(at.error(
                c.metric.span(),
                format!("pass.metric: `{other}` is not computed; known: {}", KNOWN.join(", ")),
            ));
        }
    };
    let detector = |d: usize| computed.detection[d].label.clone();
    let text = match metric {
        Metric::RobustAccuracy(r) | Metric::TransferSuccessRate(r) => {
            format!("{name} {bounds} at {} ε = {}", r.norm, r.eps)
        }
        Metric::CertifiedAccuracy(radius) => format!("{name} {bounds} at radius {radius}"),
        Metric::DetectionRate(d, adaptive) => format!(
            "{name} {bounds} ({}, {} attack)",
            detector(d),
            if adaptive { "adaptive" } else { "non-adaptive" }
        ),
        Metric::RobustAccuracyUnderDetection(d) | Metric::CleanFlagged(d) => {
            format!("{name} {bounds} ({})", detector(d))
        }
        Metric::OodTpr(d, o) | Metric::OodAuroc(d, o) => {
            format!("{name} {bounds} ({} on {})", detector(d), computed.detection[d].ood[o])
        }
        _ => format!("{name} {bounds}"),
    };
    Ok(Criterion { text, metric, min, max })
}

/// Every metric a criterion may name.
const KNOWN: &[&str] = &[
    "robust_accuracy",
    "clean_accuracy",
    "audit_fired",
    "certified_accuracy",
    "transfer_success_rate",
    "robust_accuracy_under_detection",
    "detection_rate",
    "clean_flagged",
    "ood_tpr",
    "ood_auroc",
];

/// The run (`norm`, `eps`) a per-run metric names; it must be one of the plan's.
fn run_of(at: &At, p: &Spanned<PassSection>, runs: &[Run], name: &str) -> Result<Run> {
    let c = p.get_ref();
    let Some(eps) = &c.eps else {
        return Err(at.error(p.span(), format!("pass: {name} needs `eps`")));
    };
    let norm = match &c.norm {
        Some(n) => at.parse::<Norm>("pass.norm", n)?,
        None => runs[0].norm,
    };
    let run = runs.iter().find(|r| r.norm == norm && (r.eps - eps.get_ref()).abs() < 1e-12);
    run.copied().ok_or_else(|| {
        at.error(
            eps.span(),
            format!(
                "pass.eps: {name} at {norm} ε = {} is not computed (no [[perturbation]] has it)",
                eps.get_ref()
            ),
        )
    })
}

/// A detection metric: the `[[detection]]` it names (`detector`, default the only one), the
/// attack (`detection_rate`) and the OOD set (`ood_tpr`, `ood_auroc`).
fn detection_metric(at: &At, p: &Spanned<PassSection>, computed: &Computed) -> Result<Metric> {
    let c = p.get_ref();
    let name = c.metric.get_ref().as_str();
    let plans = computed.detection;
    if plans.is_empty() {
        return Err(at.error(
            c.metric.span(),
            format!("pass.metric: {name} is not computed without [[detection]]"),
        ));
    }
    let labels = || plans.iter().map(|d| d.label.as_str()).collect::<Vec<_>>().join(", ");
    let d = match &c.detector {
        Some(wanted) => {
            plans.iter().position(|d| &d.label == wanted.get_ref()).ok_or_else(|| {
                at.error(
                    wanted.span(),
                    format!(
                        "pass.detector: no [[detection]] is `{}` (known: {})",
                        wanted.get_ref(),
                        labels()
                    ),
                )
            })?
        }
        None if plans.len() == 1 => 0,
        None => {
            return Err(at.error(
                p.span(),
                format!(
                    "pass: {name} needs `detector` with several [[detection]] (known: {})",
                    labels()
                ),
            ))
        }
    };
    let ood = |at: &At| -> Result<usize> {
        let sets = &plans[d].ood;
        if sets.is_empty() {
            return Err(at.error(
                c.metric.span(),
                format!(
                    "pass.metric: {name} is not computed: detection `{}` has no `ood` set",
                    plans[d].label
                ),
            ));
        }
        match &c.ood {
            Some(wanted) => {
                sets.iter().position(|s| &s.to_string() == wanted.get_ref()).ok_or_else(|| {
                    at.error(
                        wanted.span(),
                        format!(
                            "pass.ood: `{}` is not an ood set of detection `{}`",
                            wanted.get_ref(),
                            plans[d].label
                        ),
                    )
                })
            }
            None => Ok(0),
        }
    };
    Ok(match name {
        "robust_accuracy_under_detection" => Metric::RobustAccuracyUnderDetection(d),
        "clean_flagged" => Metric::CleanFlagged(d),
        "ood_tpr" => Metric::OodTpr(d, ood(at)?),
        "ood_auroc" => Metric::OodAuroc(d, ood(at)?),
        _ => {
            let adaptive = match c.attack.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("adaptive") => true,
                Some("non-adaptive") => false,
                Some(other) => {
                    let span = c.attack.as_ref().map_or(p.span(), |a| a.span());
                    return Err(at.error(
                        span,
                        format!("pass.attack: `{other}`: expected adaptive or non-adaptive"),
                    ));
                }
            };
            Metric::DetectionRate(d, adaptive)
        }
    })
}
