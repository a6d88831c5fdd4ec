//! Evaluation: clean accuracy, then an ordered plan of attacks on the samples still unbroken,
//! every returned example verified, per-sample records streamed to a JSON-lines file so an
//! interrupted run resumes where it stopped, and robust accuracy with a 95% Clopper-Pearson
//! interval.
mod clean;
mod curve;
mod ledger;
mod plan;
mod stages;
mod stats;
mod suite;
mod transfer;
mod verify;

pub use curve::{box_diameter, robustness_curve, CurvePoint, CurveReport};
pub use stats::clopper_pearson;
pub use suite::{
    Suite, SuiteRecord, SUITE_EOT_DRAWS, SUITE_RAND_VERDICT_PASSES, SUITE_SQUARE_QUERIES,
};
pub use transfer::{
    transfer_matrix, SurrogateResult, TargetResult, TransferAttack, TransferCell, TransferMatrix,
    TransferSample, TransferSettings, DEFAULT_TRANSFER_ATTACK,
};
pub use verify::{verify_batch, verify_batch_repeated, Verdict};

use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::{Classifier, ModelInfo, Precision, PrecisionChoice};
use crate::threat::{Goal, ThreatModel};
use clean::{targets_tensor, CleanPass};
use ledger::{fingerprint, Ledger};
use serde::{Deserialize, Serialize};
use stages::Evaluation;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How an evaluation runs (none of this changes per-sample results except `seed` and `n`).
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Evaluate the first `n` samples (all when `None`).
    pub n: Option<usize>,
    /// Rows per forward/backward pass.
    pub batch_size: usize,
    /// Seed of the counter-based generator.
    pub seed: u64,
    /// Attack plan, in order; each runs only on the samples the previous ones left unbroken.
    pub attacks: Vec<String>,
    /// Attack options from the command line.
    pub options: AttackOptions,
    /// Keep every returned example in memory (for `gibbon attack` and reports).
    pub keep_examples: bool,
    /// JSON-lines file that receives per-sample records as they are final; used to resume.
    pub stream: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Examples found earlier (e.g. by a minimum-norm attack, or crafted on a surrogate), checked
    /// by the verifier before the plan runs; the ones inside the threat model that fool the model
    /// settle their sample (credited to `Candidates::source`).
    pub candidates: Option<Candidates>,
    /// Forward passes per verdict (randomized models: broken when wrong in a strict majority).
    pub verify_passes: usize,
    /// Set by [`Suite::apply`]: the suite's name and its deviations from AutoAttack.
    pub suite: Option<SuiteRecord>,
    /// The precision of the attacks' search passes (see [`crate::model::precision`]); the
    /// clean pass and the verifier always run in float32.
    pub precision: PrecisionChoice,
}

/// Examples to check before the attack plan (see [`EvalSettings::candidates`]).
#[derive(Debug)]
pub struct Candidates {
    /// Where they come from, recorded as `broken_by`.
    pub source: String,
    /// Dataset index → example `[...]`.
    pub examples: Examples,
}

impl Clone for Candidates {
    fn clone(&self) -> Self {
        Candidates {
            source: self.source.clone(),
            examples: self.examples.iter().map(|(&i, t)| (i, t.shallow_clone())).collect(),
        }
    }
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            n: None,
            batch_size: 128,
            seed: 0,
            attacks: vec!["pgd".into()],
            options: AttackOptions::default(),
            keep_examples: false,
            stream: None,
            progress: false,
            candidates: None,
            verify_passes: 1,
            suite: None,
            precision: PrecisionChoice::default(),
        }
    }
}

/// The verdict for one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Dataset index.
    pub index: usize,
    /// True label.
    pub label: i64,
    /// Target class (targeted goals only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<i64>,
    /// Prediction on the clean input.
    pub clean_pred: i64,
    /// Softmax probability of the clean prediction.
    pub clean_confidence: f64,
    /// Prediction on the returned example (the clean one when no attack ran).
    pub adv_pred: i64,
    /// Softmax probability of `adv_pred`.
    pub adv_confidence: f64,
    /// Still correct (and not at the target) after every attack.
    pub robust: bool,
    /// The attack whose example the verifier accepted; `None` if unbroken or wrong when clean.
    pub broken_by: Option<String>,
    /// Step (within `restart`) at which that example was found.
    pub step: Option<usize>,
    /// Restart in which it was found.
    pub restart: Option<usize>,
    /// Norm of the returned perturbation (threat model's norm).
    pub norm: Option<f64>,
    /// Model queries spent on the sample over all attacks.
    pub queries: u64,
    /// Smallest adversarial perturbation norm a minimum-norm attack found (it may exceed ε, in
    /// which case that example was not returned).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min_norm: Option<f64>,
    /// Verdicts by several passes (randomized models) only: some returned example fooled the
    /// model in the first fresh pass of its verdict, i.e. AutoAttack's single-pass verdict
    /// calls the sample broken even where the majority vote did not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub single_pass_broken: Option<bool>,
}

/// One attack of the plan, as run.
#[derive(Debug, Clone, Serialize)]
pub struct AttackSummary {
    /// Registry name.
    pub name: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// Samples it broke (verified).
    pub broken: usize,
    /// Samples it was run on.
    pub attacked: usize,
    /// Wall time in this run.
    pub seconds: f64,
    /// Forward passes it spent.
    pub queries: u64,
    /// Samples for which the attack claimed success but the verifier's fresh pass disagreed
    /// (not broken). Never silent: on a deterministic model this is a non-bit-exact forward
    /// pass or an attack bug; on a randomized one, a point the vote did not confirm.
    pub verifier_disagreements: usize,
}

/// The data an evaluation ran on.
#[derive(Debug, Clone, Serialize)]
pub struct DataInfo {
    /// The data spec string.
    pub spec: String,
    /// The split.
    pub split: String,
    /// Samples evaluated.
    pub n: usize,
}

/// The result of `gibbon eval` (schema in docs/result-schema.md).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// gibbon's version.
    pub gibbon_version: String,
    /// The command line.
    pub command: String,
    /// Seed.
    pub seed: u64,
    /// Device name.
    pub device: String,
    /// Model provenance.
    pub model: ModelInfo,
    /// Data provenance.
    pub data: DataInfo,
    /// The threat model.
    pub threat: ThreatModel,
    /// Samples evaluated.
    pub n: usize,
    /// Fraction correct on clean inputs.
    pub clean_accuracy: f64,
    /// Fraction still correct after the attack plan.
    pub robust_accuracy: f64,
    /// 95% Clopper-Pearson interval of `robust_accuracy`.
    pub robust_accuracy_ci95: [f64; 2],
    /// Verdicts by several passes (randomized models) only: the robust accuracy by
    /// AutoAttack's single-pass verdict (a sample is broken when any returned example fooled
    /// the first fresh pass). `robust_accuracy` is gibbon's majority verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robust_accuracy_single_pass: Option<f64>,
    /// Sum of the stages' `verifier_disagreements`.
    pub verifier_disagreements: usize,
    /// The named suite that set the plan, and whether it is still AutoAttack-equivalent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite: Option<SuiteRecord>,
    /// The precision of the attacks' search passes, when other than fp32 was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<PrecisionChoice>,
    /// The plan, per attack.
    pub per_attack: Vec<AttackSummary>,
    /// Model queries (forward passes per sample) spent by the whole plan, resumed samples
    /// included: the sum of `per_sample[].queries`.
    pub total_queries: u64,
    /// Every sample's record, by index.
    pub per_sample: Vec<SampleRecord>,
    /// Samples taken from the stream file of an earlier run.
    pub resumed: usize,
    /// Wall time of this run.
    pub seconds: f64,
}

/// What the caller says about the run, for provenance.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The command line.
    pub command: String,
    /// The data spec.
    pub data_spec: String,
    /// The split.
    pub split: String,
}

/// Examples kept by an evaluation with `keep_examples`: index → returned example `[...]`.
pub type Examples = BTreeMap<usize, Tensor>;

/// Runs clean evaluation and the attack plan: the plan is checked before any model call, then
/// the clean pass, the resume from the stream, the candidates, the attack stages, the report.
pub fn evaluate(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    settings: &EvalSettings,
    run: &RunInfo,
) -> Result<(EvalReport, Examples)> {
    let started = Instant::now();
    let (n, attacks) = plan::check(model, data, threat, settings)?;
    let clean = CleanPass::run(model, data, n, threat.goal, settings.batch_size)?;
    let fingerprint = fingerprint(model.info(), run, n, threat, settings, &attacks)?;
    let mut ledger = Ledger::open(settings.stream.as_deref(), &fingerprint, n)?;
    for i in ledger.survivors() {
        if clean.settled(i) {
            ledger.settle(clean.record(i))?;
        }
    }
    let examples = Examples::new();
    let mut eval = Evaluation { model, data, threat, settings, clean, ledger, examples };
    if let Some(c) = &settings.candidates {
        eval.candidates(c)?;
    }
    let mut per_attack = Vec::new();
    for (k, attack) in attacks.iter().enumerate() {
        per_attack.push(eval.stage(attack.as_ref(), k + 1 == attacks.len())?);
    }
    let Evaluation { clean, ledger, examples, .. } = eval;
    let resumed = ledger.resumed;
    let per_sample = ledger.finish(n, |i| clean.record(i))?;
    let robust = per_sample.iter().filter(|r| r.robust).count();
    let correct = clean.correct.iter().filter(|&&c| c).count();
    let (lo, hi) = clopper_pearson(robust, n, 0.05);
    let report = EvalReport {
        gibbon_version: crate::VERSION.to_string(),
        command: run.command.clone(),
        seed: settings.seed,
        device: format!("{:?}", model.device()).to_lowercase(),
        model: model.info().clone(),
        data: DataInfo { spec: run.data_spec.clone(), split: run.split.clone(), n },
        threat: threat.clone(),
        n,
        clean_accuracy: correct as f64 / n as f64,
        robust_accuracy: robust as f64 / n as f64,
        robust_accuracy_ci95: [lo, hi],
        robust_accuracy_single_pass: (settings.verify_passes > 1).then(|| {
            let single =
                per_sample.iter().filter(|r| r.robust && r.single_pass_broken != Some(true));
            single.count() as f64 / n as f64
        }),
        verifier_disagreements: per_attack.iter().map(|a| a.verifier_disagreements).sum(),
        suite: settings.suite.clone(),
        precision: (settings.precision.requested != Precision::Fp32)
            .then(|| settings.precision.clone()),
        total_queries: per_sample.iter().map(|r| r.queries).sum(),
        per_attack,
        per_sample,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, examples))
}

/// A batch of an attack's records, with the samples' clean inputs and the returned examples
/// (`[b, ...]`, float32, on the model's device), in the order the attack returned them.
struct RecordBatch {
    records: Vec<AttackRecord>,
    indices: Vec<usize>,
    x: Tensor,
    x_adv: Tensor,
}

/// Runs `attack` on the samples `order` of `data` (with their `targets`) and hands its records
/// to `on_batch` in batches of `ctx.batch_size`, showing a progress bar when `progress`.
fn run_in_batches(
    attack: &dyn Attack,
    ctx: &AttackContext<'_>,
    data: &Dataset,
    order: &[usize],
    targets: &[Option<i64>],
    progress: bool,
    mut on_batch: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let device = ctx.model.device();
    let bar =
        crate::progress::Progress::new(progress, order.len() as u64, attack.name(), "samples");
    let mut source = DatasetSource { data, order, pos: 0, device, targets, goal: ctx.threat.goal };
    let mut buffer: Vec<AttackRecord> = Vec::new();
    let mut flush = |buffer: &mut Vec<AttackRecord>| -> Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let indices: Vec<usize> = buffer.iter().map(|r| r.index).collect();
        let x = data.try_batch(&indices, device)?;
        let x_adv = Tensor::stack(
            &buffer.iter().map(|r| r.x_adv.to_kind(Kind::Float)).collect::<Vec<_>>(),
            0,
        )
        .to_device(device);
        on_batch(RecordBatch { records: std::mem::take(buffer), indices, x, x_adv })
    };
    let mut sink = |rec: AttackRecord| -> Result<()> {
        buffer.push(rec);
        bar.inc(1);
        if buffer.len() >= ctx.batch_size {
            flush(&mut buffer)?;
        }
        Ok(())
    };
    attack.run(ctx, &mut source, &mut sink)?;
    flush(&mut buffer)?;
    bar.finish();
    Ok(())
}

struct DatasetSource<'a> {
    data: &'a Dataset,
    order: &'a [usize],
    pos: usize,
    device: Device,
    targets: &'a [Option<i64>],
    goal: Goal,
}

impl SampleSource for DatasetSource<'_> {
    fn take(&mut self, max: usize) -> Result<Option<Chunk>> {
        if self.pos >= self.order.len() || max == 0 {
            return Ok(None);
        }
        let end = (self.pos + max).min(self.order.len());
        let idx = self.order[self.pos..end].to_vec();
        self.pos = end;
        Ok(Some(Chunk {
            x: self.data.try_batch(&idx, self.device)?,
            labels: self.data.try_labels_of(&idx, self.device)?,
            targets: targets_tensor(&idx, self.targets, self.goal, self.device),
            indices: idx,
        }))
    }
}
