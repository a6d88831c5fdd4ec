//! Evaluation: clean accuracy, then an ordered plan of attacks on the samples still unbroken,
//! every returned example verified, per-sample records streamed to a JSON-lines file so an
//! interrupted run resumes where it stopped, and robust accuracy with a 95% Clopper-Pearson
//! interval.
mod curve;
mod stats;
mod suite;
mod transfer;
mod verify;

pub use curve::{box_diameter, robustness_curve, CurvePoint, CurveReport};
pub use stats::clopper_pearson;
pub use suite::Suite;
pub use transfer::{
    transfer_matrix, SurrogateResult, TargetResult, TransferAttack, TransferCell, TransferMatrix,
    TransferSample, TransferSettings, DEFAULT_TRANSFER_ATTACK,
};
pub use verify::{verify_batch, verify_batch_repeated, Verdict};

use crate::attack::{
    build_attack, Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource,
};
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::{Classifier, ModelInfo};
use crate::threat::{Goal, Knowledge, TargetSelection, ThreatModel};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
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

/// Runs clean evaluation and the attack plan.
pub fn evaluate(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    settings: &EvalSettings,
    run: &RunInfo,
) -> Result<(EvalReport, Examples)> {
    threat.validate()?;
    if settings.batch_size == 0 {
        return Err(GibbonError::invalid("batch-size", "must be at least 1"));
    }
    let started = Instant::now();
    let device = model.device();
    let n = settings.n.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(GibbonError::invalid("n", "no samples to evaluate"));
    }
    if data.sample_shape() != model.input_shape() {
        return Err(GibbonError::Mismatch(format!(
            "input shape {:?} of the data does not fit the model, which expects {:?}",
            data.sample_shape(),
            model.input_shape()
        )));
    }
    let classes = model.num_classes();
    let labels = &data.labels()[..n];
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= classes) {
        return Err(GibbonError::Mismatch(format!(
            "label {l} of sample {i} is out of range for a model with {classes} classes"
        )));
    }
    let attacks = settings
        .attacks
        .iter()
        .map(|name| build_attack(name, threat, &settings.options))
        .collect::<Result<Vec<_>>>()?;
    if model.labels_only() {
        if let Goal::Targeted(TargetSelection::MostLikely | TargetSelection::LeastLikely) =
            threat.goal
        {
            return Err(GibbonError::invalid(
                "targeted",
                "the model answers labels only, so it has no most- or least-likely class; \
                 use next or a class number",
            ));
        }
        if let Some(a) = attacks.iter().find(|a| a.knowledge() != Knowledge::DecisionBased) {
            return Err(GibbonError::invalid(
                "attack",
                format!(
                    "{} needs {} access, but the model answers labels only; use a \
                     decision-based attack",
                    a.name(),
                    a.knowledge().describe()
                ),
            ));
        }
    }
    for attack in &attacks {
        if !threat.knowledge.grants(attack.knowledge()) {
            return Err(GibbonError::invalid(
                "attack",
                format!(
                    "{} needs {} access, but the threat model grants only {} access",
                    attack.name(),
                    attack.knowledge().describe(),
                    threat.knowledge.describe()
                ),
            ));
        }
    }

    // Clean pass.
    let mut clean_pred = vec![0i64; n];
    let mut clean_conf = vec![0f64; n];
    let mut targets: Vec<Option<i64>> = vec![None; n];
    for start in (0..n).step_by(settings.batch_size) {
        let idx: Vec<usize> = (start..(start + settings.batch_size).min(n)).collect();
        let answer = verify::ModelAnswer::of(model, &data.try_batch(&idx, device)?)?;
        let conf: Vec<f64> = Vec::try_from(&answer.confidence)?;
        let pred: Vec<i64> = Vec::try_from(&answer.prediction)?;
        let chosen = choose_targets(
            &answer.scores,
            &labels[start..start + idx.len()],
            threat.goal,
            classes,
        )?;
        for (j, &i) in idx.iter().enumerate() {
            clean_pred[i] = pred[j];
            clean_conf[i] = conf[j];
            targets[i] = chosen[j];
        }
    }
    let clean_correct: Vec<bool> = (0..n).map(|i| clean_pred[i] == labels[i]).collect();

    // Resume from the stream file.
    let fingerprint = fingerprint(model.info(), run, n, threat, settings, &attacks)?;
    let mut finals: BTreeMap<usize, SampleRecord> = BTreeMap::new();
    let mut stream = match &settings.stream {
        Some(path) => {
            let (done, writer) = StreamFile::open(path, &fingerprint)?;
            for r in done {
                if r.index < n {
                    finals.insert(r.index, r);
                }
            }
            Some(writer)
        }
        None => None,
    };
    let resumed = finals.len();

    let base_record = |i: usize| SampleRecord {
        index: i,
        label: labels[i],
        target: targets[i],
        clean_pred: clean_pred[i],
        clean_confidence: clean_conf[i],
        adv_pred: clean_pred[i],
        adv_confidence: clean_conf[i],
        robust: clean_correct[i],
        broken_by: None,
        step: None,
        restart: None,
        norm: None,
        queries: 0,
        min_norm: None,
    };
    // Samples wrong when clean, or whose label is the fixed target, need no attack.
    for i in 0..n {
        if finals.contains_key(&i) {
            continue;
        }
        let skip_target = targets[i] == Some(labels[i]);
        if !clean_correct[i] || skip_target {
            let r = base_record(i);
            if let Some(s) = stream.as_mut() {
                s.append(&r)?;
            }
            finals.insert(i, r);
        }
    }
    let mut survivors: BTreeSet<usize> = (0..n).filter(|i| !finals.contains_key(i)).collect();
    let mut pending: HashMap<usize, SampleRecord> = HashMap::new();
    let mut examples = Examples::new();
    let mut per_attack = Vec::new();
    if let Some(c) = &settings.candidates {
        let inside: Vec<usize> =
            survivors.iter().copied().filter(|i| c.examples.contains_key(i)).collect();
        for idx in inside.chunks(settings.batch_size) {
            let x = data.try_batch(idx, device)?;
            let x_adv = Tensor::stack(
                &idx.iter().map(|i| c.examples[i].to_kind(Kind::Float)).collect::<Vec<_>>(),
                0,
            )
            .to_device(device);
            // Only candidates inside this threat model are checked (the rest are simply unused).
            let measured = verify::Containment::measure(threat, &x, &x_adv)?;
            let ok: Vec<usize> = (0..idx.len()).filter(|&j| measured.inside(threat, j)).collect();
            if ok.is_empty() {
                continue;
            }
            let sel = Tensor::from_slice(&ok.iter().map(|&j| j as i64).collect::<Vec<_>>())
                .to_device(device);
            let sub: Vec<usize> = ok.iter().map(|&j| idx[j]).collect();
            let y = data.try_labels_of(&sub, device)?;
            let t = targets_tensor(&sub, &targets, threat.goal, device);
            let verdicts = verify_batch_repeated(
                model,
                threat,
                &sub,
                &x.index_select(0, &sel),
                &x_adv.index_select(0, &sel),
                &y,
                t.as_ref(),
                settings.verify_passes,
            )?;
            for (k, (&i, v)) in sub.iter().zip(verdicts).enumerate() {
                if !v.broken {
                    continue;
                }
                let mut r = base_record(i);
                r.adv_pred = v.prediction;
                r.adv_confidence = v.confidence;
                r.norm = Some(v.norm);
                r.robust = false;
                r.broken_by = Some(c.source.clone());
                if settings.keep_examples {
                    examples.insert(i, x_adv.get(ok[k] as i64).to_device(Device::Cpu));
                }
                survivors.remove(&i);
                if let Some(s) = stream.as_mut() {
                    s.append(&r)?;
                }
                finals.insert(i, r);
            }
        }
    }
    let ctx = AttackContext { model, threat, seed: settings.seed, batch_size: settings.batch_size };
    for (k, attack) in attacks.iter().enumerate() {
        let last = k + 1 == attacks.len();
        let attack_started = Instant::now();
        let order: Vec<usize> = survivors.iter().copied().collect();
        let mut broken = 0usize;
        let mut queries = 0u64;
        let on_batch = |batch: RecordBatch| -> Result<()> {
            let RecordBatch { records, indices: idx, x, x_adv } = batch;
            let y = data.try_labels_of(&idx, device)?;
            let t = targets_tensor(&idx, &targets, threat.goal, device);
            let verdicts = verify_batch_repeated(
                model,
                threat,
                &idx,
                &x,
                &x_adv,
                &y,
                t.as_ref(),
                settings.verify_passes,
            )?;
            for (j, (rec, v)) in records.into_iter().zip(verdicts).enumerate() {
                let i = rec.index;
                queries += rec.queries;
                let prior = pending.remove(&i);
                let mut r = base_record(i);
                r.queries = prior.as_ref().map_or(0, |p| p.queries) + rec.queries;
                r.adv_pred = v.prediction;
                r.adv_confidence = v.confidence;
                r.norm = Some(v.norm);
                r.min_norm = match (rec.min_norm, prior.and_then(|p| p.min_norm)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if rec.claimed_success && !v.broken {
                    tracing::warn!(
                        "sample {i}: {} claimed success but the verifier disagrees",
                        attack.name()
                    );
                }
                if settings.keep_examples {
                    examples.insert(i, x_adv.get(j as i64).to_device(Device::Cpu));
                }
                if v.broken {
                    broken += 1;
                    r.robust = false;
                    r.broken_by = Some(attack.name().to_string());
                    r.step = rec.step;
                    r.restart = Some(rec.restart);
                    survivors.remove(&i);
                    if let Some(s) = stream.as_mut() {
                        s.append(&r)?;
                    }
                    finals.insert(i, r);
                } else if last {
                    if let Some(s) = stream.as_mut() {
                        s.append(&r)?;
                    }
                    finals.insert(i, r);
                } else {
                    pending.insert(i, r);
                }
            }
            Ok(())
        };
        run_in_batches(attack.as_ref(), &ctx, data, &order, &targets, settings.progress, on_batch)?;
        per_attack.push(AttackSummary {
            name: attack.name().to_string(),
            params: attack.params(),
            broken,
            attacked: order.len(),
            seconds: attack_started.elapsed().as_secs_f64(),
            queries,
        });
    }
    // With an empty plan every survivor is final as it is.
    for i in survivors {
        finals.entry(i).or_insert_with(|| pending.remove(&i).unwrap_or_else(|| base_record(i)));
    }
    if finals.len() != n {
        return Err(GibbonError::Internal(format!(
            "{} of {n} samples have a verdict",
            finals.len()
        )));
    }
    let per_sample: Vec<SampleRecord> = finals.into_values().collect();
    let robust = per_sample.iter().filter(|r| r.robust).count();
    let correct = clean_correct.iter().filter(|&&c| c).count();
    let (lo, hi) = clopper_pearson(robust, n, 0.05);
    let report = EvalReport {
        gibbon_version: crate::VERSION.to_string(),
        command: run.command.clone(),
        seed: settings.seed,
        device: format!("{device:?}").to_lowercase(),
        model: model.info().clone(),
        data: DataInfo { spec: run.data_spec.clone(), split: run.split.clone(), n },
        threat: threat.clone(),
        n,
        clean_accuracy: correct as f64 / n as f64,
        robust_accuracy: robust as f64 / n as f64,
        robust_accuracy_ci95: [lo, hi],
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
    let bar = progress_bar(progress, order.len() as u64, attack.name());
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
    bar.finish_and_clear();
    Ok(())
}

fn progress_bar(show: bool, len: u64, name: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>10} [{elapsed_precise}] {bar:40} {pos}/{len} samples ({eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_string());
    bar
}

fn choose_targets(
    logits: &Tensor,
    labels: &[i64],
    goal: Goal,
    classes: i64,
) -> Result<Vec<Option<i64>>> {
    let sel = match goal {
        Goal::Untargeted => return Ok(vec![None; labels.len()]),
        Goal::Targeted(sel) => sel,
    };
    Ok(match sel {
        TargetSelection::Fixed(c) => {
            if c < 0 || c >= classes {
                return Err(GibbonError::invalid(
                    "target",
                    format!("class {c} is out of range 0..{classes}"),
                ));
            }
            vec![Some(c); labels.len()]
        }
        TargetSelection::NextClass => labels.iter().map(|&l| Some((l + 1) % classes)).collect(),
        TargetSelection::MostLikely | TargetSelection::LeastLikely => {
            let y = Tensor::from_slice(labels).to_device(logits.device());
            let fill =
                if sel == TargetSelection::MostLikely { f64::NEG_INFINITY } else { f64::INFINITY };
            let masked = logits.to_kind(Kind::Float).scatter_value(1, &y.unsqueeze(1), fill);
            let pick = if sel == TargetSelection::MostLikely {
                masked.argmax(-1, false)
            } else {
                masked.argmin(-1, false)
            };
            Vec::<i64>::try_from(pick)?.into_iter().map(Some).collect()
        }
    })
}

fn targets_tensor(
    idx: &[usize],
    targets: &[Option<i64>],
    goal: Goal,
    device: Device,
) -> Option<Tensor> {
    match goal {
        Goal::Untargeted => None,
        Goal::Targeted(_) => {
            let t: Vec<i64> = idx.iter().map(|&i| targets[i].unwrap_or(0)).collect();
            Some(Tensor::from_slice(&t).to_device(device))
        }
    }
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

fn fingerprint(
    model: &ModelInfo,
    run: &RunInfo,
    n: usize,
    threat: &ThreatModel,
    settings: &EvalSettings,
    attacks: &[Box<dyn crate::attack::Attack>],
) -> Result<String> {
    let value = serde_json::json!({
        "gibbon_version": crate::VERSION,
        "model_sha256": model.sha256,
        "model": model.path,
        "data": run.data_spec,
        "split": run.split,
        "n": n,
        "threat": threat,
        "seed": settings.seed,
        "attacks": attacks.iter().map(|a| serde_json::json!({"name": a.name(), "params": a.params()})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string(&value).map_err(|e| GibbonError::Internal(e.to_string()))?;
    Ok(crate::model::sha256_hex(text.as_bytes()))
}

/// The JSON-lines stream: a header line with the run's fingerprint, then one record per line.
struct StreamFile {
    file: std::fs::File,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StreamHeader {
    gibbon_stream: String,
}

impl StreamFile {
    fn open(path: &Path, fingerprint: &str) -> Result<(Vec<SampleRecord>, StreamFile)> {
        let mut done = Vec::new();
        let mut reuse = false;
        if let Ok(f) = std::fs::File::open(path) {
            let mut lines = std::io::BufReader::new(f).lines();
            if let Some(Ok(first)) = lines.next() {
                if serde_json::from_str::<StreamHeader>(&first)
                    .map(|h| h.gibbon_stream == fingerprint)
                    .unwrap_or(false)
                {
                    reuse = true;
                    for line in lines.map_while(|l| l.ok()) {
                        // A torn last line (interrupted write) is dropped and recomputed.
                        if let Ok(r) = serde_json::from_str::<SampleRecord>(&line) {
                            done.push(r);
                        }
                    }
                } else {
                    tracing::warn!("{}: written by a different run; starting over", path.display());
                }
            }
        }
        if reuse {
            // Rewrite cleanly (drops a torn line), then append.
            let mut file = std::fs::File::create(path).map_err(|e| GibbonError::io(path, e))?;
            let mut text =
                serde_json::to_string(&StreamHeader { gibbon_stream: fingerprint.into() })
                    .unwrap_or_default();
            text.push('\n');
            for r in &done {
                text.push_str(&serde_json::to_string(r).unwrap_or_default());
                text.push('\n');
            }
            file.write_all(text.as_bytes()).map_err(|e| GibbonError::io(path, e))?;
            return Ok((done, StreamFile { file, path: path.to_path_buf() }));
        }
        let mut file = std::fs::File::create(path).map_err(|e| GibbonError::io(path, e))?;
        let header = serde_json::to_string(&StreamHeader { gibbon_stream: fingerprint.into() })
            .map_err(|e| GibbonError::Internal(e.to_string()))?;
        writeln!(file, "{header}").map_err(|e| GibbonError::io(path, e))?;
        Ok((done, StreamFile { file, path: path.to_path_buf() }))
    }

    fn append(&mut self, r: &SampleRecord) -> Result<()> {
        let line = serde_json::to_string(r).map_err(|e| GibbonError::Internal(e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|e| GibbonError::io(&self.path, e))
    }
}
