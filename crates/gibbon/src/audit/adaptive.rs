//! The adaptive re-evaluation: the audit's fired checks choose how to attack the model again
//! (Tramèr, Carlini, Brendel & Madry 2020, "On Adaptive Attacks to Adversarial Example
//! Defenses": attack what the defense does, not what a standard suite assumes).
//!
//! 1. The standard suite runs on the model as deployed: "standard: X".
//! 2. Each remedy is one stage, run only on the samples still robust (the examples found so far
//!    settle the others as candidates): BPDA (the caller's BPDA view), rescaled logits
//!    ([`RescaledLogits`]: the standard suite on logits / T, same decisions), EOT (the `rand`
//!    suite), more iterations (APGD-CE and APGD-T with [`MORE_ITERATIONS_FACTOR`] times their
//!    steps), transfer (examples crafted on the user's differentiable surrogate, judged on the
//!    deployed model), gradient-free (Square with [`GRADIENT_FREE_QUERIES`] queries, then RayS
//!    for L∞).
//! 3. Every example from every stage is re-verified on the deployed model inside the threat
//!    model (an evaluation with no attacks and the examples as candidates; randomized models by
//!    [`RANDOM_VERDICT_PASSES`] votes), and a sample counts as robust only if the standard suite
//!    and that verification both leave it robust: "adaptive: Y ≤ X". On a randomized model the
//!    standard suite's verdicts are single passes that a lucky draw passes, so there every
//!    example (the standard suite's included) is judged by the votes alone, and Y can be above
//!    X: the standard suite over-counted.
use super::{AuditReport, Remedy};
use crate::attack::APGD_STEPS;
use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{
    clopper_pearson, evaluate, Candidates, EvalReport, EvalSettings, Examples, RunInfo, Suite,
    SUITE_EOT_DRAWS, SUITE_RAND_VERDICT_PASSES,
};
use crate::model::{Classifier, ModelInfo};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Tensor};

mod rescaled;
pub use rescaled::RescaledLogits;

/// The more-iterations stage runs APGD-CE and APGD-T with this many times their steps.
pub const MORE_ITERATIONS_FACTOR: usize = 5;

/// Square's queries per sample in the gradient-free stage: twice AutoAttack's 5,000.
pub const GRADIENT_FREE_QUERIES: usize = 10_000;

/// Votes per verdict in the final verification of a randomized model: a sample is broken when
/// its example is misclassified in a strict majority of this many fresh passes (5 votes let a
/// lucky iterate of an EOT attack through far too often).
pub const RANDOM_VERDICT_PASSES: usize = 51;

/// The attacks of the baseline and of the BPDA, rescaled-logits and EOT stages.
#[derive(Debug, Clone, PartialEq)]
pub enum StagePlan {
    /// The standard suite (the `rand` suite for EOT): AutoAttack's ensemble, the default.
    Suites,
    /// These attacks everywhere (EOT stages add [`SUITE_EOT_DRAWS`] draws and
    /// [`SUITE_RAND_VERDICT_PASSES`] votes): a cheaper, weaker plan, e.g. for tests.
    Attacks(Vec<String>),
}

/// Other views of the audited model that the caller can build.
pub struct AdaptiveViews<'a> {
    /// The model as deployed: its decisions are the truth.
    pub model: &'a dyn Classifier,
    /// Its BPDA view (same forward pass, straight-through gradients), when one exists.
    pub bpda: Option<&'a dyn Classifier>,
    /// A differentiable surrogate of the same task (the user's own, e.g. the undefended
    /// network), for the transfer stage.
    pub surrogate: Option<&'a dyn Classifier>,
}

/// One stage of the adaptive plan.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveStage {
    /// `bpda`, `rescaled_logits`, `eot`, `gradient_free`.
    pub remedy: Remedy,
    /// The checks that asked for it.
    pub because: Vec<&'static str>,
    /// The model view attacked.
    pub view: String,
    /// Its attacks, in order.
    pub attacks: Vec<String>,
    /// Samples it broke that earlier stages had not (by its own verdict; the final
    /// verification on the deployed model is what counts).
    pub newly_broken: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Robust accuracy with its interval.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// Fraction of the samples still classified correctly.
    pub robust_accuracy: f64,
    /// 95% Clopper-Pearson interval.
    pub ci95: [f64; 2],
    /// Robust samples.
    pub robust: usize,
}

impl Accuracy {
    fn of(robust: usize, n: usize) -> Self {
        let (lo, hi) = clopper_pearson(robust, n, 0.05);
        Accuracy { robust_accuracy: robust as f64 / n.max(1) as f64, ci95: [lo, hi], robust }
    }
}

/// "Standard suite: X, adaptive: Y", and how Y was found.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveReport {
    /// The deployed model.
    pub model: ModelInfo,
    /// Samples evaluated (the first `n`).
    pub n: usize,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// The standard suite on the deployed model.
    pub standard: Accuracy,
    /// After the adaptive stages, every example re-verified on the deployed model.
    pub adaptive: Accuracy,
    /// The stages run, in order.
    pub stages: Vec<AdaptiveStage>,
    /// Remedies the audit asked for that could not be run, and why.
    pub skipped: Vec<String>,
    /// Samples the final verification counted as broken, by stage (`standard` included).
    pub broken_by: BTreeMap<String, usize>,
    /// Votes per verdict of the final verification.
    pub verdict_passes: usize,
}

/// Runs the standard suite and the adaptive stages that `audit` asks for, on the first
/// `base.n` samples; `base` gives batch size, seed and progress.
pub fn adapt(
    views: &AdaptiveViews,
    data: &Dataset,
    threat: &ThreatModel,
    audit: &AuditReport,
    base: &EvalSettings,
    plan: &StagePlan,
) -> Result<AdaptiveReport> {
    let run = RunInfo::default();
    let suite_run = |model: &dyn Classifier, suite: Suite, found: Option<&Examples>| {
        suite_run(model, data, threat, base, suite, found, plan)
    };
    let (standard, kept) = suite_run(views.model, Suite::Standard, None)?;
    // Examples are kept for every attacked sample; only the broken ones are evidence.
    let mut found: Examples = broken_examples(&standard, kept);
    let mut source: BTreeMap<usize, String> =
        found.keys().map(|&i| (i, "standard".to_string())).collect();
    let (mut stages, mut skipped) = (Vec::new(), Vec::new());
    let because = |r: Remedy| -> Vec<&'static str> {
        audit
            .findings
            .iter()
            .filter(|f| f.fired && f.remedies.contains(&r))
            .map(|f| f.check)
            .collect()
    };
    let rescaled = match audit.remedies.contains(&Remedy::RescaledLogits) {
        true => Some(RescaledLogits::calibrated(views.model, data, base.n)?),
        false => None,
    };
    for &remedy in &audit.remedies {
        let started = Instant::now();
        let (view, report, examples): (&dyn Classifier, EvalReport, Examples) = match remedy {
            Remedy::Bpda => {
                let Some(bpda) = views.bpda else {
                    skipped
                        .push("bpda: no BPDA view of this model (nothing gibbon can swap)".into());
                    continue;
                };
                let (r, e) = suite_run(bpda, Suite::Standard, Some(&found))?;
                (bpda, r, e)
            }
            Remedy::RescaledLogits => {
                let Some(view) = rescaled.as_ref() else { continue };
                let (r, e) = suite_run(view, Suite::Standard, Some(&found))?;
                (view as &dyn Classifier, r, e)
            }
            Remedy::Eot => {
                let (r, e) = suite_run(views.model, Suite::Rand, Some(&found))?;
                (views.model, r, e)
            }
            Remedy::MoreIterations => {
                let (r, e) = more_iterations(views.model, data, threat, base, &found, plan)?;
                (views.model, r, e)
            }
            Remedy::Transfer => {
                let Some(surrogate) = views.surrogate else {
                    skipped.push("transfer: no surrogate model (--surrogate MODEL)".into());
                    continue;
                };
                let (r, e) = transfer(surrogate, views.model, data, threat, base, &found, plan)?;
                (surrogate, r, e)
            }
            Remedy::GradientFree => {
                let (r, e) = gradient_free(views.model, data, threat, base, &found)?;
                (views.model, r, e)
            }
        };
        let mut newly = 0;
        for rec in report.per_sample.iter().filter(|r| r.broken_by.is_some()) {
            if found.contains_key(&rec.index) {
                continue;
            }
            if let Some(x) = examples.get(&rec.index) {
                found.insert(rec.index, x.shallow_clone());
                source.insert(rec.index, remedy_name(remedy).into());
                newly += 1;
            }
        }
        stages.push(AdaptiveStage {
            remedy,
            because: because(remedy),
            view: view.info().arch.clone().unwrap_or_else(|| view.info().path.clone()),
            attacks: report.per_attack.iter().map(|a| a.name.clone()).collect(),
            newly_broken: newly,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let random = audit.remedies.contains(&Remedy::Eot);
    let with_example: std::collections::BTreeSet<usize> = found.keys().copied().collect();
    let passes = if random { RANDOM_VERDICT_PASSES } else { 1 };
    let verify = EvalSettings {
        attacks: Vec::new(),
        candidates: Some(Candidates { source: "adaptive".into(), examples: found }),
        verify_passes: passes,
        keep_examples: false,
        stream: None,
        ..base.clone()
    };
    let (checked, _) = evaluate(views.model, data, threat, &verify, &run)?;
    let mut broken_by = BTreeMap::new();
    let mut robust = 0;
    for (s, v) in standard.per_sample.iter().zip(&checked.per_sample) {
        // A randomized model: the standard suite's own verdict is one pass, which a lucky
        // draw passes; every example it found is judged again by the votes instead (a broken
        // verdict without a kept example stands).
        let by_votes = random && s.clean_pred == s.label;
        let robust_here = match by_votes {
            true => v.robust && (s.robust || with_example.contains(&s.index)),
            false => s.robust && v.robust,
        };
        if robust_here {
            robust += 1;
        } else if s.clean_pred == s.label {
            let by = if v.robust { "standard".to_string() } else { source[&s.index].clone() };
            *broken_by.entry(by).or_insert(0) += 1;
        }
    }
    let standard_robust = standard.per_sample.iter().filter(|r| r.robust).count();
    Ok(AdaptiveReport {
        model: views.model.info().clone(),
        n: standard.n,
        clean_accuracy: standard.clean_accuracy,
        standard: Accuracy::of(standard_robust, standard.n),
        adaptive: Accuracy::of(robust, standard.n),
        stages,
        skipped,
        broken_by,
        verdict_passes: passes,
    })
}

/// The examples of `report`'s broken samples.
fn broken_examples(report: &EvalReport, mut kept: Examples) -> Examples {
    report
        .per_sample
        .iter()
        .filter(|r| r.broken_by.is_some())
        .filter_map(|r| kept.remove(&r.index).map(|x| (r.index, x)))
        .collect()
}

fn remedy_name(r: Remedy) -> &'static str {
    match r {
        Remedy::Bpda => "bpda",
        Remedy::Eot => "eot",
        Remedy::RescaledLogits => "rescaled_logits",
        Remedy::MoreIterations => "more_iterations",
        Remedy::Transfer => "transfer",
        Remedy::GradientFree => "gradient_free",
    }
}

/// `suite` (or the plan's attacks) on `model`, with `found` (examples of earlier stages)
/// settling their samples first.
fn suite_run(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    base: &EvalSettings,
    suite: Suite,
    found: Option<&Examples>,
    plan: &StagePlan,
) -> Result<(EvalReport, Examples)> {
    let mut threat = threat.clone();
    let mut s = EvalSettings { keep_examples: true, stream: None, ..base.clone() };
    s.candidates = found.map(|f| Candidates { source: "earlier stage".into(), examples: copy(f) });
    match plan {
        StagePlan::Suites => suite.apply(&mut threat, &mut s),
        StagePlan::Attacks(a) => {
            s.attacks = a.clone();
            if suite == Suite::Rand {
                s.options.eot = Some(SUITE_EOT_DRAWS);
                s.verify_passes = SUITE_RAND_VERDICT_PASSES;
            }
        }
    }
    let (report, examples) = evaluate(model, data, &threat, &s, &RunInfo::default())?;
    Ok((report, examples))
}

/// APGD-CE then APGD-T (or the plan's attacks) with [`MORE_ITERATIONS_FACTOR`] times their
/// default steps, on what earlier stages left robust.
fn more_iterations(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    base: &EvalSettings,
    found: &Examples,
    plan: &StagePlan,
) -> Result<(EvalReport, Examples)> {
    let mut threat = threat.clone();
    let mut s = EvalSettings {
        keep_examples: true,
        stream: None,
        candidates: Some(Candidates { source: "earlier stage".into(), examples: copy(found) }),
        ..base.clone()
    };
    s.attacks = match plan {
        StagePlan::Suites => vec!["apgd-ce".into(), "apgd-t".into()],
        StagePlan::Attacks(a) => a.clone(),
    };
    let steps = threat.budget.steps_or(APGD_STEPS);
    threat.budget.steps = Some(steps * MORE_ITERATIONS_FACTOR);
    evaluate(model, data, &threat, &s, &RunInfo::default())
}

/// The attacks crafting on the surrogate: MI-FGSM then PGD, both running their whole budget
/// and returning their most adversarial iterate (barely adversarial examples transfer poorly).
pub const TRANSFER_ATTACKS: [&str; 2] = ["mifgsm", "pgd"];

/// Examples crafted on `surrogate` (white box, [`TRANSFER_ATTACKS`] or the plan's attacks) for
/// the samples earlier stages left robust, then judged on the deployed `model` alone: the
/// returned report is that verification, so "newly broken" counts only examples that fool the
/// deployed model.
fn transfer(
    surrogate: &dyn Classifier,
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    base: &EvalSettings,
    found: &Examples,
    plan: &StagePlan,
) -> Result<(EvalReport, Examples)> {
    let mut craft = EvalSettings {
        keep_examples: true,
        stream: None,
        candidates: Some(Candidates { source: "earlier stage".into(), examples: copy(found) }),
        verify_passes: 1,
        ..base.clone()
    };
    craft.attacks = match plan {
        StagePlan::Suites => TRANSFER_ATTACKS.iter().map(|a| a.to_string()).collect(),
        StagePlan::Attacks(a) => a.clone(),
    };
    craft.options.full_budget = true;
    craft.options.eot = None;
    let (crafted, mut kept) = evaluate(surrogate, data, threat, &craft, &RunInfo::default())?;
    let fresh: Examples = crafted
        .per_sample
        .iter()
        .filter(|r| r.broken_by.is_some() && !found.contains_key(&r.index))
        .filter_map(|r| kept.remove(&r.index).map(|x| (r.index, x)))
        .collect();
    let judge = EvalSettings {
        attacks: Vec::new(),
        keep_examples: false,
        stream: None,
        candidates: Some(Candidates { source: "transfer".into(), examples: copy(&fresh) }),
        ..base.clone()
    };
    let (report, _) = evaluate(model, data, threat, &judge, &RunInfo::default())?;
    Ok((report, fresh))
}

/// Square with [`GRADIENT_FREE_QUERIES`] queries, then RayS (L∞) on what survives.
fn gradient_free(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    base: &EvalSettings,
    found: &Examples,
) -> Result<(EvalReport, Examples)> {
    let mut threat = threat.clone();
    threat.budget.queries = Some(GRADIENT_FREE_QUERIES);
    threat.budget.restarts = Some(1);
    let mut attacks = vec!["square".to_string()];
    if threat.norm == Norm::Linf {
        attacks.push("rays".into());
    }
    let s = EvalSettings {
        attacks,
        keep_examples: true,
        stream: None,
        candidates: Some(Candidates { source: "earlier stage".into(), examples: copy(found) }),
        ..base.clone()
    };
    evaluate(model, data, &threat, &s, &RunInfo::default())
}

fn copy(e: &Examples) -> Examples {
    e.iter()
        .map(|(&i, t): (&usize, &Tensor)| (i, t.shallow_clone().to_device(Device::Cpu)))
        .collect()
}
