//! Robust accuracy as a function of ε, from one run of a minimum-norm attack plus a fixed-ε
//! attack plan at each requested ε.
//!
//! The minimum-norm attack runs once with a radius equal to the box's diameter (so the ball
//! never binds) and keeps minimizing; every example it returns is verified. At each ε, its
//! examples that lie inside the ε-ball are re-verified under that threat model (they settle their
//! samples without another pass), and the fixed-ε plan runs only on the samples still unbroken.
//! Each point carries a 95% Clopper-Pearson interval.
use super::{clopper_pearson, evaluate, Candidates, DataInfo, EvalReport, EvalSettings, RunInfo};
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::{Classifier, ModelInfo};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use std::time::Instant;

/// One ε of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// The radius.
    pub eps: f64,
    /// Fraction of samples still correct under every attack at this ε.
    pub robust_accuracy: f64,
    /// 95% Clopper-Pearson interval.
    pub robust_accuracy_ci95: [f64; 2],
    /// Samples settled by the minimum-norm attack's examples.
    pub broken_by_min_norm: usize,
    /// Samples broken by the fixed-ε plan.
    pub broken_by_plan: usize,
    /// Seconds spent on this ε.
    pub seconds: f64,
}

/// The result of a robustness curve (`gibbon eval --eps E1,E2,...`).
#[derive(Debug, Clone, Serialize)]
pub struct CurveReport {
    /// gibbon's version.
    pub gibbon_version: String,
    /// The command line.
    pub command: String,
    /// Seed.
    pub seed: u64,
    /// Model provenance.
    pub model: ModelInfo,
    /// Data provenance.
    pub data: DataInfo,
    /// The threat model (its ε is the first of the curve).
    pub threat: ThreatModel,
    /// Samples evaluated.
    pub n: usize,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// The minimum-norm attack.
    pub min_norm_attack: String,
    /// The fixed-ε plan run at every ε.
    pub plan: Vec<String>,
    /// One point per ε, in the order given.
    pub curve: Vec<CurvePoint>,
    /// Per sample (by index): the verified norm of the smallest adversarial example found, 0 for
    /// samples misclassified when clean, `None` where none was found.
    pub min_norms: Vec<Option<f64>>,
    /// Median of the minimal norms over the samples correct when clean (unbroken count as ∞).
    pub median_min_norm: Option<f64>,
    /// The minimum-norm run.
    pub min_norm_run: EvalReport,
    /// Wall time of everything.
    pub seconds: f64,
}

/// The largest possible perturbation norm inside the box, for inputs of `dim` values.
pub fn box_diameter(threat: &ThreatModel, dim: usize) -> f64 {
    let width = threat.bounds.hi - threat.bounds.lo;
    match threat.norm {
        Norm::Linf => width,
        Norm::L2 => width * (dim as f64).sqrt(),
        Norm::L1 => width * dim as f64,
    }
}

/// Runs `min_norm_attack` once (minimizing, unbounded) and `settings.attacks` at each of
/// `eps_list`; see the module docs.
pub fn robustness_curve(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    eps_list: &[f64],
    min_norm_attack: &str,
    settings: &EvalSettings,
    run: &RunInfo,
) -> Result<CurveReport> {
    if eps_list.is_empty() {
        return Err(GibbonError::invalid("eps", "the curve needs at least one ε"));
    }
    for &e in eps_list {
        ThreatModel { eps: e, ..threat.clone() }.validate()?;
    }
    let started = Instant::now();
    let dim: usize = model.input_shape().iter().product::<i64>() as usize;
    let unbounded = ThreatModel { eps: box_diameter(threat, dim), ..threat.clone() };
    let mut mn_settings = settings.clone();
    mn_settings.attacks = vec![min_norm_attack.to_string()];
    mn_settings.options.minimize = true;
    mn_settings.keep_examples = true;
    mn_settings.stream = None;
    mn_settings.candidates = None;
    let (mn_report, mn_examples) = evaluate(model, data, &unbounded, &mn_settings, run)?;
    let found: super::Examples = mn_report
        .per_sample
        .iter()
        .filter(|s| s.broken_by.is_some())
        .filter_map(|s| mn_examples.get(&s.index).map(|t| (s.index, t.shallow_clone())))
        .collect();
    let min_norms: Vec<Option<f64>> = mn_report
        .per_sample
        .iter()
        .map(|s| {
            if s.clean_pred != s.label {
                Some(0.0)
            } else if s.broken_by.is_some() {
                s.norm
            } else {
                None
            }
        })
        .collect();
    let mut correct: Vec<f64> = mn_report
        .per_sample
        .iter()
        .zip(&min_norms)
        .filter(|(s, _)| s.clean_pred == s.label)
        .map(|(_, m)| m.unwrap_or(f64::INFINITY))
        .collect();
    correct.sort_by(f64::total_cmp);
    let median_min_norm = correct.get(correct.len() / 2).copied().filter(|m| m.is_finite());

    let mut curve = Vec::with_capacity(eps_list.len());
    for &eps in eps_list {
        let point_started = Instant::now();
        let at = ThreatModel { eps, ..threat.clone() };
        let mut s = settings.clone();
        s.stream = None;
        s.keep_examples = false;
        s.candidates = Some(Candidates {
            source: format!("{min_norm_attack} (minimum norm)"),
            examples: found.iter().map(|(&i, t)| (i, t.shallow_clone())).collect(),
        });
        let (r, _) = evaluate(model, data, &at, &s, run)?;
        let by_mn = r
            .per_sample
            .iter()
            .filter(|p| p.broken_by.as_deref().is_some_and(|b| b.ends_with("(minimum norm)")))
            .count();
        let broken = r.per_sample.iter().filter(|p| p.broken_by.is_some()).count();
        let robust = r.per_sample.iter().filter(|p| p.robust).count();
        let (lo, hi) = clopper_pearson(robust, r.n, 0.05);
        curve.push(CurvePoint {
            eps,
            robust_accuracy: r.robust_accuracy,
            robust_accuracy_ci95: [lo, hi],
            broken_by_min_norm: by_mn,
            broken_by_plan: broken - by_mn,
            seconds: point_started.elapsed().as_secs_f64(),
        });
    }
    Ok(CurveReport {
        gibbon_version: crate::VERSION.to_string(),
        command: run.command.clone(),
        seed: settings.seed,
        model: model.info().clone(),
        data: mn_report.data.clone(),
        threat: ThreatModel { eps: eps_list[0], ..threat.clone() },
        n: mn_report.n,
        clean_accuracy: mn_report.clean_accuracy,
        min_norm_attack: min_norm_attack.to_string(),
        plan: settings.attacks.clone(),
        curve,
        min_norms,
        median_min_norm,
        min_norm_run: mn_report,
        seconds: started.elapsed().as_secs_f64(),
    })
}
