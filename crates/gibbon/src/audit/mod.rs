//! The gradient-masking audit: does this evaluation's number mean anything?
//!
//! A defense that only hides the gradient (a rounding before the network, a saturated softmax,
//! a `detach`, random noise) makes every gradient attack fail for a reason that has nothing to
//! do with robustness, and the robust accuracy it reports is false (Athalye, Carlini & Wagner
//! 2018, "Obfuscated Gradients Give a False Sense of Security"). The audit is the checklist of
//! Carlini et al. 2019 ("On Evaluating Adversarial Robustness", section 5) and of AutoAttack's
//! `checks.py` (Croce & Hein 2020), run automatically: each [`Check`] measures one symptom on
//! the model as deployed and returns a [`Finding`] with its evidence, whether it fired, and the
//! [`Remedy`] an adaptive attacker would use. The checks then choose the adaptive
//! re-evaluation ([`adaptive`]), whose examples are re-verified on the real model.
//!
//! Every check is one file here and one line in [`CHECKS`]; `gibbon audit --help` and the
//! contract tests read the table.
pub mod adaptive;
mod gradient_free;
mod gradients;
mod graph_ops;
mod landscape;
mod more_work;
pub mod randomness;
mod unbounded;

pub use adaptive::{adapt, AdaptiveReport, AdaptiveStage, AdaptiveViews, StagePlan};
pub use gradient_free::GradientFreeBeatsGradient;
pub use gradients::GradientHealth;
pub use graph_ops::GraphOps;
pub use landscape::LossLandscape;
pub use more_work::{MoreWork, WorkCounts};
pub use randomness::Randomness;
pub use unbounded::UnboundedAttack;

use crate::attack::AttackOptions;
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use crate::eval::{SUITE_EOT_DRAWS, SUITE_RAND_VERDICT_PASSES};
use crate::model::{Classifier, GraphScan, ModelInfo};
use crate::threat::ThreatModel;
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use tch::Tensor;

/// What an adaptive attacker does about a symptom.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    /// Attack a BPDA view: non-differentiable pieces get a straight-through gradient.
    Bpda,
    /// Average gradients over random draws (EOT) and judge by repeated votes.
    Eot,
    /// Saturated softmax: attack a view whose logits are divided by a temperature (same
    /// decisions, usable cross-entropy gradients), where the scale-free DLR loss is not enough.
    RescaledLogits,
    /// The attacks had not converged: the gradient attacks again with
    /// [`adaptive::MORE_ITERATIONS_FACTOR`] times their steps.
    MoreIterations,
    /// Gradients are unusable: examples crafted on a differentiable surrogate of the user's
    /// (`--surrogate`), judged on the deployed model (Papernot et al. 2017; Carlini et al.
    /// 2019, section 5.6).
    Transfer,
    /// Gradients are unusable and cannot be fixed: score- and decision-based attacks with a
    /// larger budget.
    GradientFree,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The check's registry name.
    pub check: &'static str,
    /// The question it answers.
    pub question: &'static str,
    /// The symptom was found.
    pub fired: bool,
    /// One line for people: what was measured and what it means.
    pub verdict: String,
    /// The measurements (check-specific JSON).
    pub evidence: serde_json::Value,
    /// What the adaptive re-evaluation does about it (empty when not fired).
    pub remedies: Vec<Remedy>,
}

impl Finding {
    /// A finding read back from the JSON it was written as (a resumed audit); `None` when the
    /// JSON names no check of [`CHECKS`] or lacks a field.
    pub fn from_json(value: &serde_json::Value) -> Option<Finding> {
        let name = value.get("check")?.as_str()?;
        let check = CHECKS.iter().find(|c| c.name() == name)?;
        Some(Finding {
            check: check.name(),
            question: check.question(),
            fired: value.get("fired")?.as_bool()?,
            verdict: value.get("verdict")?.as_str()?.to_string(),
            evidence: value.get("evidence")?.clone(),
            remedies: serde_json::from_value(value.get("remedies")?.clone()).ok()?,
        })
    }
}

/// One symptom of gradient masking, measured on the deployed model.
pub trait Check {
    /// Registry name (`gradients`, `randomness` ...).
    fn name(&self) -> &'static str;
    /// The question it answers, for the report and the CLI help.
    fn question(&self) -> &'static str;
    /// Measures the symptom.
    fn run(&self, subject: &AuditSubject) -> Result<Finding>;
}

/// Every check, in the order they run (cheap ones first). One line per check.
pub static CHECKS: &[&(dyn Check + Sync)] = &[
    &GraphOps,
    &Randomness,
    &GradientHealth,
    &LossLandscape,
    &UnboundedAttack,
    &MoreWork,
    &GradientFreeBeatsGradient,
];

/// What is audited: a model (as deployed), data, the threat model, and how many samples.
pub struct AuditSubject<'a> {
    /// The model as deployed (its decisions are the truth).
    pub model: &'a dyn Classifier,
    /// The data; the audit uses the first `n` samples.
    pub data: &'a Dataset,
    /// The threat model of the evaluation being audited.
    pub threat: &'a ThreatModel,
    /// Samples the checks use.
    pub n: usize,
    /// Rows per pass.
    pub batch_size: usize,
    /// Seed of every random draw.
    pub seed: u64,
    clean: OnceCell<CleanSet>,
    randomized: OnceCell<bool>,
    scan: OnceCell<GraphScan>,
}

/// The correctly classified samples among the first `n`: what the checks measure on.
pub struct CleanSet {
    /// Their dataset indices.
    pub indices: Vec<usize>,
    /// Their inputs `[m, ...]`.
    pub x: Tensor,
    /// Their labels `[m]`.
    pub y: Tensor,
}

impl<'a> AuditSubject<'a> {
    /// An audit of `model` on the first `n` samples of `data` under `threat`.
    pub fn new(
        model: &'a dyn Classifier,
        data: &'a Dataset,
        threat: &'a ThreatModel,
        n: usize,
        seed: u64,
    ) -> Result<Self> {
        if n == 0 || data.is_empty() {
            return Err(GibbonError::invalid("n", "the audit needs at least one sample"));
        }
        let n = n.min(data.len());
        Ok(AuditSubject {
            model,
            data,
            threat,
            n,
            batch_size: 128,
            seed,
            clean: OnceCell::new(),
            randomized: OnceCell::new(),
            scan: OnceCell::new(),
        })
    }

    /// The correctly classified samples (computed once).
    pub fn clean(&self) -> Result<&CleanSet> {
        if let Some(c) = self.clean.get() {
            return Ok(c);
        }
        let device = self.model.device();
        let all: Vec<usize> = (0..self.n).collect();
        let x = self.data.try_batch(&all, device)?;
        let y = self.data.try_labels_of(&all, device)?;
        let pred = self.model.predict(&x)?;
        let ok: Vec<bool> = Vec::try_from(&pred.eq_tensor(&y))?;
        let indices: Vec<usize> = all.into_iter().filter(|&i| ok[i]).collect();
        if indices.is_empty() {
            return Err(GibbonError::invalid(
                "data",
                "the model classifies none of the audited samples correctly; nothing to audit",
            ));
        }
        let keep = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(device);
        let set = CleanSet { x: x.index_select(0, &keep), y: y.index_select(0, &keep), indices };
        Ok(self.clean.get_or_init(|| set))
    }

    /// The model's graph scan, read once (a TorchScript scan reads the whole archive).
    pub fn graph_scan(&self) -> &GraphScan {
        self.scan.get_or_init(|| self.model.graph_scan())
    }

    /// The remedies when gradients are unusable: BPDA if the graph has ops gibbon can swap,
    /// and transfer and gradient-free attacks in any case.
    pub fn unusable_gradient_remedies(&self) -> Vec<Remedy> {
        let mut remedies = Vec::new();
        if self.graph_scan().swappable().next().is_some() {
            remedies.push(Remedy::Bpda);
        }
        remedies.push(Remedy::Transfer);
        remedies.push(Remedy::GradientFree);
        remedies
    }

    /// True when repeated forward passes of the same inputs differ (computed once, by
    /// [`randomness::repeated_passes`]).
    pub fn randomized(&self) -> Result<bool> {
        if let Some(&r) = self.randomized.get() {
            return Ok(r);
        }
        let r = randomness::repeated_passes(self)?.randomized();
        Ok(*self.randomized.get_or_init(|| r))
    }

    /// An evaluation of the audited samples under `threat` with the plan `attacks`
    /// (no stream, no progress bar): the checks that run attacks use it, so every number they
    /// report is a verified evaluation. On a randomized model the gradient attacks average
    /// [`SUITE_EOT_DRAWS`] draws and verdicts take [`SUITE_RAND_VERDICT_PASSES`] votes, as in
    /// the `rand` suite, and the stepped attacks (FGSM, PGD) run every step and return their
    /// lowest-margin iterate instead of stopping at the first iterate one lucky pass
    /// misclassifies (which the votes then reject), so the checks measure the gradient, not
    /// the luck of one draw.
    pub fn evaluate(
        &self,
        threat: &ThreatModel,
        attacks: &[&str],
        mut options: AttackOptions,
    ) -> Result<EvalReport> {
        let randomized = self.randomized()?;
        if randomized {
            options.eot = Some(SUITE_EOT_DRAWS);
            options.full_budget = true;
        }
        let settings = EvalSettings {
            verify_passes: if randomized { SUITE_RAND_VERDICT_PASSES } else { 1 },
            n: Some(self.n),
            batch_size: self.batch_size,
            seed: self.seed,
            attacks: attacks.iter().map(|a| a.to_string()).collect(),
            options,
            ..EvalSettings::default()
        };
        Ok(evaluate(self.model, self.data, threat, &settings, &RunInfo::default())?.0)
    }
}

/// The audit's result.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The audited model.
    pub model: ModelInfo,
    /// The threat model audited.
    pub threat: ThreatModel,
    /// Samples used (the first `n`).
    pub n: usize,
    /// Of which correctly classified (what the checks measure on).
    pub correct: usize,
    /// Every check's finding, in registry order.
    pub findings: Vec<Finding>,
    /// The checks that fired.
    pub fired: Vec<&'static str>,
    /// What the adaptive re-evaluation should do, from the fired checks (deduplicated).
    pub remedies: Vec<Remedy>,
}

impl AuditReport {
    /// True when no check fired.
    pub fn clean(&self) -> bool {
        self.fired.is_empty()
    }
}

/// Runs every check of [`CHECKS`] on `subject`; `on_finding` sees each finding as it is made.
pub fn run_checks(subject: &AuditSubject, on_finding: impl FnMut(&Finding)) -> Result<AuditReport> {
    run_checks_resuming(subject, Vec::new(), on_finding)
}

/// [`run_checks`], taking the findings in `earlier` (of an interrupted audit of the same
/// subject) as made: their checks are not run again, and `on_finding` sees only new findings.
/// Each check draws its randomness from the subject's seed alone, so a resumed audit reports
/// what an uninterrupted one would.
pub fn run_checks_resuming(
    subject: &AuditSubject,
    earlier: Vec<Finding>,
    mut on_finding: impl FnMut(&Finding),
) -> Result<AuditReport> {
    let correct = subject.clean()?.indices.len();
    let mut findings = Vec::new();
    for check in CHECKS {
        if let Some(done) = earlier.iter().find(|f| f.check == check.name()) {
            findings.push(done.clone());
            continue;
        }
        let _span = tracing::info_span!("audit check", check = check.name()).entered();
        let finding = check.run(subject)?;
        on_finding(&finding);
        findings.push(finding);
    }
    let fired: Vec<&'static str> = findings.iter().filter(|f| f.fired).map(|f| f.check).collect();
    let mut remedies: Vec<Remedy> =
        findings.iter().filter(|f| f.fired).flat_map(|f| f.remedies.iter().copied()).collect();
    remedies.sort();
    remedies.dedup();
    Ok(AuditReport {
        model: subject.model.info().clone(),
        threat: subject.threat.clone(),
        n: subject.n,
        correct,
        findings,
        fired,
        remedies,
    })
}

/// The check named `name` (for `gibbon audit --check`).
pub fn check(name: &str) -> Result<&'static (dyn Check + Sync)> {
    CHECKS.iter().copied().find(|c| c.name() == name).ok_or_else(|| {
        GibbonError::invalid(
            "check",
            format!(
                "'{name}' is not one of {}",
                CHECKS.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// A fraction `k / n` (0 for `n == 0`).
fn fraction(k: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        k as f64 / n as f64
    }
}
