//! Transfer attacks: adversarial examples crafted on white-box surrogate models, evaluated on
//! target models that are only queried for their scores (black boxes).
//!
//! For every surrogate, a registered attack (default [`DEFAULT_TRANSFER_ATTACK`], MI-FGSM: Dong
//! et al. 2018, "Boosting Adversarial Attacks with Momentum") crafts one example per sample. By
//! default the attack runs its whole step budget ([`AttackOptions::full_budget`]): gibbon's
//! white-box attacks stop a sample at its first success, and such barely-adversarial examples
//! transfer poorly. Every crafted example is checked against the threat model (finite, inside the
//! box, within ε) before any model sees it; one outside is an error, never a result. Each target
//! then classifies the examples through [`PredictionsOf`], its label-only view (forward passes
//! without autograd): the target is a black box.
//!
//! Success rate of a (surrogate, target) cell:
//! * untargeted goals: among the samples the *target* classifies correctly on the clean input
//!   (the denominator `n`), the fraction whose example crafted on the surrogate the target
//!   misclassifies;
//! * targeted goals: among the samples whose true label differs from the target class (`n`), the
//!   fraction the target classifies as the target class. The target class is the same for every
//!   target model: fixed and next-class targets follow from the label, most- and least-likely
//!   targets are chosen on the surrogate's clean logits (the attacker knows only the surrogate).
//!
//! Each cell carries a 95% Clopper-Pearson interval. The white-box success of a surrogate (its
//! examples evaluated on itself) uses the same definition, so a surrogate that is also a target
//! has that number on its diagonal.
use super::clean::CleanPass;
use super::verify::check_contained;
use super::{clopper_pearson, run_in_batches, DataInfo, RecordBatch, RunInfo};
use crate::attack::{build_attack, Attack, AttackContext, AttackOptions};
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::{Classifier, LabelModel, ModelInfo, PredictionsOf};
use crate::threat::{Goal, TargetSelection, ThreatModel};
use serde::Serialize;
use std::time::Instant;
use tch::Tensor;

/// The attack `gibbon transfer` uses unless told otherwise.
pub const DEFAULT_TRANSFER_ATTACK: &str = "mifgsm";

/// How a transfer run crafts and evaluates.
#[derive(Debug, Clone)]
pub struct TransferSettings {
    /// Registry name of the attack run on each surrogate.
    pub attack: String,
    /// Its options; `full_budget` is on by default (see the module docs).
    pub options: AttackOptions,
    /// Use the first `n` samples (all when `None`).
    pub n: Option<usize>,
    /// Rows per forward/backward pass.
    pub batch_size: usize,
    /// Seed of the counter-based generator (the attack's randomness).
    pub seed: u64,
    /// Keep per-sample outcomes (and every model's clean predictions) in the result.
    pub per_sample: bool,
    /// Show a progress bar per surrogate.
    pub progress: bool,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            attack: DEFAULT_TRANSFER_ATTACK.into(),
            options: AttackOptions { full_budget: true, ..Default::default() },
            n: None,
            batch_size: 128,
            seed: 0,
            per_sample: false,
            progress: false,
        }
    }
}

/// One success rate with its denominator and 95% Clopper-Pearson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransferCell {
    /// `successes / n`; `None` when `n` is 0.
    pub success_rate: Option<f64>,
    /// Samples where the example reached the goal on the evaluated model.
    pub successes: usize,
    /// The denominator (see the module docs).
    pub n: usize,
    /// Lower end of the 95% Clopper-Pearson interval.
    pub ci_low: f64,
    /// Upper end of the 95% Clopper-Pearson interval.
    pub ci_high: f64,
}

impl TransferCell {
    fn new(successes: usize, n: usize) -> Self {
        let (ci_low, ci_high) = clopper_pearson(successes, n, 0.05);
        let success_rate = (n > 0).then(|| successes as f64 / n as f64);
        TransferCell { success_rate, successes, n, ci_low, ci_high }
    }
}

/// The attack run on the surrogates.
#[derive(Debug, Clone, Serialize)]
pub struct TransferAttack {
    /// Registry name.
    pub name: String,
    /// Its parameters (stepped attacks show `"full_budget": true` when they honour it).
    pub params: serde_json::Value,
    /// Whether the attack ran its whole budget on every sample (asked for and honoured).
    pub full_budget: bool,
}

/// A surrogate: where the examples were crafted.
#[derive(Debug, Clone, Serialize)]
pub struct SurrogateResult {
    /// Model provenance.
    pub model: ModelInfo,
    /// Its clean accuracy on the `n` samples.
    pub clean_accuracy: f64,
    /// Its own examples evaluated on itself (the white-box success rate).
    pub white_box: TransferCell,
    /// Samples an example was crafted for.
    pub crafted: usize,
    /// Forward/backward passes the attack spent on this surrogate, summed over samples.
    pub queries: u64,
    /// Wall time of crafting and evaluating this surrogate's examples.
    pub seconds: f64,
    /// Clean predictions, by sample (only with per-sample output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_preds: Option<Vec<i64>>,
}

/// A target: the model the examples are transferred to (queried for scores only).
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Model provenance.
    pub model: ModelInfo,
    /// Its clean accuracy on the `n` samples.
    pub clean_accuracy: f64,
    /// Clean predictions, by sample (only with per-sample output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_preds: Option<Vec<i64>>,
}

/// One crafted example and what every model made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferSample {
    /// Dataset index.
    pub index: usize,
    /// True label.
    pub label: i64,
    /// Target class (targeted goals only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    /// Perturbation norm (threat model's norm, float64).
    pub norm: f64,
    /// The surrogate's prediction on the example.
    pub surrogate_pred: i64,
    /// Each target's prediction on the example, in the order of `targets`.
    pub target_preds: Vec<i64>,
}

/// The result of `gibbon transfer` (schema in docs/result-schema.md).
#[derive(Debug, Clone, Serialize)]
pub struct TransferMatrix {
    /// gibbon's version.
    pub gibbon_version: String,
    /// The command line.
    pub command: String,
    /// Seed.
    pub seed: u64,
    /// Device of the first surrogate.
    pub device: String,
    /// Data provenance.
    pub data: DataInfo,
    /// The threat model.
    pub threat: ThreatModel,
    /// The attack.
    pub attack: TransferAttack,
    /// Samples considered (the first `n` of the split).
    pub n: usize,
    /// The rows of the matrix.
    pub surrogates: Vec<SurrogateResult>,
    /// The columns of the matrix.
    pub targets: Vec<TargetResult>,
    /// `matrix[s][t]`: examples crafted on surrogate `s`, evaluated on target `t`.
    pub matrix: Vec<Vec<TransferCell>>,
    /// Per surrogate, one record per crafted example by index (only with per-sample output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_sample: Option<Vec<Vec<TransferSample>>>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl TransferMatrix {
    /// The matrix as a text table: rows are surrogates, columns targets, then each surrogate's
    /// white-box success; a cell reads `rate [ci_low-ci_high] n=N`.
    pub fn table(&self) -> String {
        let rows = short_names(self.surrogates.iter().map(|s| s.model.path.as_str()));
        let cols = short_names(self.targets.iter().map(|t| t.model.path.as_str()));
        let cell = |c: &TransferCell| match c.success_rate {
            Some(r) => format!("{r:.3} [{:.3}-{:.3}] n={}", c.ci_low, c.ci_high, c.n),
            None => format!("n/a n={}", c.n),
        };
        let mut grid: Vec<Vec<String>> = Vec::new();
        let mut header = vec!["surrogate \\ target".to_string()];
        header.extend(cols);
        header.push("white-box".into());
        grid.push(header);
        for ((s, name), cells) in self.surrogates.iter().zip(rows).zip(&self.matrix) {
            let mut line = vec![name];
            line.extend(cells.iter().map(cell));
            line.push(cell(&s.white_box));
            grid.push(line);
        }
        let widths: Vec<usize> = (0..grid[0].len())
            .map(|k| grid.iter().map(|l| l[k].chars().count()).max().unwrap_or(0))
            .collect();
        let goal = match self.threat.goal {
            Goal::Untargeted => "untargeted".to_string(),
            Goal::Targeted(TargetSelection::Fixed(c)) => format!("targeted at class {c}"),
            Goal::Targeted(TargetSelection::NextClass) => "targeted at the next class".into(),
            Goal::Targeted(TargetSelection::MostLikely) => {
                "targeted at the surrogate's most likely wrong class".into()
            }
            Goal::Targeted(TargetSelection::LeastLikely) => {
                "targeted at the surrogate's least likely class".into()
            }
        };
        let mut out = format!(
            "transfer success rate of {}{} ({} eps {}, {goal}) on the first {} samples\n",
            self.attack.name,
            if self.attack.full_budget { ", full budget" } else { ", early exit" },
            self.threat.norm,
            self.threat.eps,
            self.n
        );
        for line in &grid {
            let text: Vec<String> =
                line.iter().zip(&widths).map(|(s, &w)| format!("{s:<w$}")).collect();
            out.push_str(text.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// File stems of model specs (`builtin:NAME` stays as is); the full specs when stems repeat.
fn short_names<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let paths: Vec<&str> = paths.collect();
    let stems: Vec<String> = paths
        .iter()
        .map(|p| {
            if p.starts_with("builtin:") {
                return p.to_string();
            }
            std::path::Path::new(p)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_string())
        })
        .collect();
    let unique = stems.iter().collect::<std::collections::BTreeSet<_>>().len() == stems.len();
    if unique {
        stems
    } else {
        paths.iter().map(|p| p.to_string()).collect()
    }
}

/// Counts for one cell.
#[derive(Clone, Copy, Default)]
struct Tally {
    successes: usize,
    n: usize,
}

impl Tally {
    /// Adds sample with `label`, optional `target`, the model's clean and adversarial predictions.
    fn add(&mut self, label: i64, target: Option<i64>, clean: i64, adv: i64) {
        match target {
            None if clean == label => {
                self.n += 1;
                self.successes += (adv != label) as usize;
            }
            Some(t) if t != label => {
                self.n += 1;
                self.successes += (adv == t) as usize;
            }
            _ => {}
        }
    }
}

/// Crafts examples on every surrogate with `settings.attack` and evaluates them on every target
/// (see the module docs for the success-rate definition).
pub fn transfer_matrix(
    surrogates: &[&dyn Classifier],
    targets: &[&dyn Classifier],
    data: &Dataset,
    threat: &ThreatModel,
    settings: &TransferSettings,
    run: &RunInfo,
) -> Result<TransferMatrix> {
    let started = Instant::now();
    let n = check_inputs(surrogates, targets, data, threat, settings)?;
    let attack = build_attack(&settings.attack, threat, &settings.options)?;
    let params = attack.params();
    let honoured = params.get("full_budget") == Some(&serde_json::Value::Bool(true));
    if settings.options.full_budget && !honoured {
        tracing::warn!(
            "{} has no full-budget mode: it stops each sample at its first success on the \
             surrogate, which transfers worse (fgsm, bim, pgd, mifgsm and difgsm run their whole \
             budget)",
            attack.name()
        );
    }
    let (target_results, target_clean) = clean_targets(targets, data, n, settings)?;
    let mut surrogate_results = Vec::with_capacity(surrogates.len());
    let mut matrix = Vec::with_capacity(surrogates.len());
    let mut per_sample = Vec::new();
    for &surrogate in surrogates {
        let crafting = Crafting { attack: attack.as_ref(), data, n, threat, settings };
        let outcome = crafting.run(surrogate, targets, &target_clean)?;
        surrogate_results.push(outcome.result);
        matrix.push(outcome.row);
        per_sample.push(outcome.samples);
    }
    Ok(TransferMatrix {
        gibbon_version: crate::VERSION.to_string(),
        command: run.command.clone(),
        seed: settings.seed,
        device: format!("{:?}", surrogates[0].device()).to_lowercase(),
        data: DataInfo { spec: run.data_spec.clone(), split: run.split.clone(), n },
        threat: threat.clone(),
        attack: TransferAttack {
            name: attack.name().to_string(),
            params,
            full_budget: settings.options.full_budget && honoured,
        },
        n,
        surrogates: surrogate_results,
        targets: target_results,
        matrix,
        per_sample: settings.per_sample.then_some(per_sample),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks the settings, that every model takes the data's input shape and that all share one
/// label space with the data's labels; returns how many samples the run evaluates.
fn check_inputs(
    surrogates: &[&dyn Classifier],
    targets: &[&dyn Classifier],
    data: &Dataset,
    threat: &ThreatModel,
    settings: &TransferSettings,
) -> Result<usize> {
    threat.validate()?;
    if surrogates.is_empty() {
        return Err(GibbonError::invalid("surrogates", "give at least one surrogate model"));
    }
    if targets.is_empty() {
        return Err(GibbonError::invalid("targets", "give at least one target model"));
    }
    if settings.batch_size == 0 {
        return Err(GibbonError::invalid("batch-size", "must be at least 1"));
    }
    let n = settings.n.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(GibbonError::invalid("n", "no samples to evaluate"));
    }
    let shape = data.sample_shape();
    let roles =
        surrogates.iter().map(|m| ("surrogate", m)).chain(targets.iter().map(|m| ("target", m)));
    let classes = surrogates[0].num_classes();
    for (role, m) in roles {
        if m.input_shape() != shape.as_slice() {
            return Err(GibbonError::Mismatch(format!(
                "input shape {shape:?} of the data does not fit the {role} {}, which expects {:?}",
                m.info().path,
                m.input_shape()
            )));
        }
        if m.num_classes() != classes {
            return Err(GibbonError::Mismatch(format!(
                "the {role} {} has {} classes but the surrogate {} has {classes}: transfer needs \
                 one label space",
                m.info().path,
                m.num_classes(),
                surrogates[0].info().path
            )));
        }
    }
    let labels = &data.labels()[..n];
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= classes) {
        return Err(GibbonError::Mismatch(format!(
            "label {l} of sample {i} is out of range for models with {classes} classes"
        )));
    }
    Ok(n)
}

/// Clean predictions of every target, by label queries only: the targets' results and their
/// predictions per sample.
fn clean_targets(
    targets: &[&dyn Classifier],
    data: &Dataset,
    n: usize,
    settings: &TransferSettings,
) -> Result<(Vec<TargetResult>, Vec<Vec<i64>>)> {
    let labels = &data.labels()[..n];
    let mut results = Vec::with_capacity(targets.len());
    let mut clean = Vec::with_capacity(targets.len());
    for m in targets {
        let mut preds = Vec::with_capacity(n);
        for start in (0..n).step_by(settings.batch_size) {
            let idx: Vec<usize> = (start..(start + settings.batch_size).min(n)).collect();
            preds.extend(predictions(&PredictionsOf(*m), &data.try_batch(&idx, m.device())?)?);
        }
        results.push(TargetResult {
            model: m.info().clone(),
            clean_accuracy: accuracy(&preds, labels),
            clean_preds: settings.per_sample.then(|| preds.clone()),
        });
        clean.push(preds);
    }
    Ok((results, clean))
}

/// What one run of the attack shares across surrogates.
struct Crafting<'a> {
    attack: &'a dyn Attack,
    data: &'a Dataset,
    n: usize,
    threat: &'a ThreatModel,
    settings: &'a TransferSettings,
}

/// What crafting on one surrogate gives: its result, its row of the matrix, its samples.
struct SurrogateOutcome {
    result: SurrogateResult,
    row: Vec<TransferCell>,
    samples: Vec<TransferSample>,
}

/// The tallies of one surrogate's examples, filled batch by batch.
struct SurrogateTally {
    white_box: Tally,
    cells: Vec<Tally>,
    samples: Vec<TransferSample>,
    crafted: usize,
    queries: u64,
}

impl Crafting<'_> {
    /// Crafts on `surrogate` and has every target classify the examples (`target_clean`: the
    /// targets' clean predictions).
    fn run(
        &self,
        surrogate: &dyn Classifier,
        targets: &[&dyn Classifier],
        target_clean: &[Vec<i64>],
    ) -> Result<SurrogateOutcome> {
        let (n, threat, settings) = (self.n, self.threat, self.settings);
        let started = Instant::now();
        let labels = &self.data.labels()[..n];
        let clean = CleanPass::run(surrogate, self.data, n, threat.goal, settings.batch_size)?;
        let (own_clean, chosen) = (clean.pred, clean.targets);
        // Craft only where some cell (or the white-box rate) has the sample in its denominator.
        let order: Vec<usize> = (0..n)
            .filter(|&i| match chosen[i] {
                Some(t) => t != labels[i],
                None => own_clean[i] == labels[i] || target_clean.iter().any(|p| p[i] == labels[i]),
            })
            .collect();
        let ctx = AttackContext {
            model: surrogate,
            threat,
            seed: settings.seed,
            batch_size: settings.batch_size,
        };
        let mut tally = SurrogateTally {
            white_box: Tally::default(),
            cells: vec![Tally::default(); targets.len()],
            samples: Vec::new(),
            crafted: 0,
            queries: 0,
        };
        let on_batch = |batch: RecordBatch| -> Result<()> {
            let RecordBatch { records, indices: idx, x, x_adv } = batch;
            let norms = check_inside(threat, &idx, &x, &x_adv, self.attack.name(), surrogate)?;
            let own_adv = predictions(&PredictionsOf(surrogate), &x_adv)?;
            let mut adv_preds = Vec::with_capacity(targets.len());
            for m in targets {
                adv_preds.push(predictions(&PredictionsOf(*m), &x_adv)?);
            }
            for (j, rec) in records.into_iter().enumerate() {
                let i = rec.index;
                tally.queries += rec.queries;
                tally.crafted += 1;
                tally.white_box.add(labels[i], chosen[i], own_clean[i], own_adv[j]);
                for (t, cell) in tally.cells.iter_mut().enumerate() {
                    cell.add(labels[i], chosen[i], target_clean[t][i], adv_preds[t][j]);
                }
                if settings.per_sample {
                    tally.samples.push(TransferSample {
                        index: i,
                        label: labels[i],
                        target: chosen[i],
                        norm: norms[j],
                        surrogate_pred: own_adv[j],
                        target_preds: adv_preds.iter().map(|p| p[j]).collect(),
                    });
                }
            }
            Ok(())
        };
        run_in_batches(self.attack, &ctx, self.data, &order, &chosen, settings.progress, on_batch)?;
        if tally.crafted != order.len() {
            return Err(GibbonError::Internal(format!(
                "{} returned {} examples for {} samples",
                self.attack.name(),
                tally.crafted,
                order.len()
            )));
        }
        let white_box = TransferCell::new(tally.white_box.successes, tally.white_box.n);
        let row = tally.cells.iter().map(|c| TransferCell::new(c.successes, c.n)).collect();
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            "surrogate {}: {} examples in {seconds:.1}s, white-box success {}",
            surrogate.info().path,
            tally.crafted,
            white_box.success_rate.map_or("n/a".into(), |r| format!("{r:.4}"))
        );
        let result = SurrogateResult {
            model: surrogate.info().clone(),
            clean_accuracy: accuracy(&own_clean, labels),
            white_box,
            crafted: tally.crafted,
            queries: tally.queries,
            seconds,
            clean_preds: settings.per_sample.then_some(own_clean),
        };
        tally.samples.sort_by_key(|r| r.index);
        Ok(SurrogateOutcome { result, row, samples: tally.samples })
    }
}

fn accuracy(preds: &[i64], labels: &[i64]) -> f64 {
    preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
}

/// A model's predicted labels on `x` (moved to the model's device).
fn predictions(model: &dyn LabelModel, x: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::try_from(model.labels(&x.to_device(model.device()))?)?)
}

/// The perturbation norms of `x_adv` (the verifier's containment check); an error naming the
/// sample, the attack and the surrogate if any example is outside the threat model (a bug in
/// the attack, never a result).
fn check_inside(
    threat: &ThreatModel,
    indices: &[usize],
    x: &Tensor,
    x_adv: &Tensor,
    attack: &str,
    surrogate: &dyn Classifier,
) -> Result<Vec<f64>> {
    check_contained(threat, indices, x, x_adv).map_err(|e| match e {
        GibbonError::Verification(m) => {
            GibbonError::Verification(format!("{attack} crafted on {}: {m}", surrogate.info().path))
        }
        other => other,
    })
}
