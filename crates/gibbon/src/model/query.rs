//! Query-only access to a model: what a score-based or decision-based attacker sees.
//!
//! An attack written against [`ScoreModel`] can ask for output scores and nothing else: the
//! trait has no gradient, no weights and no autograd graph, so such an attack cannot reach
//! white-box information even by accident, and the same code attacks a remote model.
//!
//! Attacks do not hold the model itself but an oracle over it ([`ScoreOracle`],
//! [`LabelOracle`]): every query row is charged to the dataset index it belongs to, a query that
//! would take a sample past its budget is refused (so budgets hold exactly, whatever the
//! attack), and every batch can be recorded in a [`QueryLog`].
use super::Classifier;
use crate::error::{GibbonError, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tch::{Device, Tensor};

/// A model that answers queries with scores (logits or probabilities) `[B, classes]`.
pub trait ScoreModel {
    /// Scores for inputs `[B, ...input_shape]`, computed without autograd. Higher is more
    /// likely; the attack only relies on the ordering and on differences of these scores.
    fn scores(&self, x: &Tensor) -> Result<Tensor>;
    /// Shape of one input.
    fn input_shape(&self) -> &[i64];
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Device that inputs should live on.
    fn device(&self) -> Device;
}

/// The score-only view of a white-box [`Classifier`]: [`Classifier::query_logits`].
pub struct ScoresOf<'a>(pub &'a dyn Classifier);

impl ScoreModel for ScoresOf<'_> {
    fn scores(&self, x: &Tensor) -> Result<Tensor> {
        self.0.query_logits(x)
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
}

/// A model that answers queries with predicted labels only `[B]` (int64): what a decision-based
/// attacker (HopSkipJump, Boundary, RayS) sees.
pub trait LabelModel {
    /// Predicted class per input `[B, ...input_shape]`.
    fn labels(&self, x: &Tensor) -> Result<Tensor>;
    /// Shape of one input.
    fn input_shape(&self) -> &[i64];
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Device that inputs should live on.
    fn device(&self) -> Device;
}

/// The label-only view of a [`Classifier`]: [`Classifier::query_predict`], without autograd. This is
/// the view decision-based attacks take of the evaluated model (a remote model that answers
/// labels only supports it too).
pub struct PredictionsOf<'a>(pub &'a dyn Classifier);

impl LabelModel for PredictionsOf<'_> {
    fn labels(&self, x: &Tensor) -> Result<Tensor> {
        self.0.query_predict(x)
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
}

/// The label-only view of any [`ScoreModel`]: the arg-max of its scores.
pub struct LabelsOf<'a>(pub &'a dyn ScoreModel);

impl LabelModel for LabelsOf<'_> {
    fn labels(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.scores(x)?.argmax(-1, false))
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
}

/// A JSON-lines file that records every batch of queries a query-based attack sends: one line
/// per batch with the attack, the dataset indices queried and the running total. Cloning shares
/// the file.
#[derive(Clone)]
pub struct QueryLog {
    path: PathBuf,
    writer: Arc<Mutex<BufWriter<File>>>,
}

impl std::fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryLog({})", self.path.display())
    }
}

impl QueryLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| GibbonError::io(&path, e))?;
        Ok(QueryLog { path, writer: Arc::new(Mutex::new(BufWriter::new(file))) })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&self, attack: &str, samples: &[usize], total: u64) -> Result<()> {
        let line = serde_json::json!({
            "attack": attack,
            "rows": samples.len(),
            "samples": samples,
            "total": total,
        });
        let mut w =
            self.writer.lock().map_err(|_| GibbonError::Internal("query log poisoned".into()))?;
        writeln!(w, "{line}").and_then(|_| w.flush()).map_err(|e| GibbonError::io(&self.path, e))
    }
}

/// Counts every query per sample and refuses any query past the per-sample budget, so a budget
/// is enforced exactly whatever the attack does. A query for a sample whose budget is spent is
/// an error (a bug in the attack), never silently answered.
struct QueryMeter {
    attack: &'static str,
    budget: u64,
    used: RefCell<HashMap<usize, u64>>,
    total: Cell<u64>,
    log: Option<QueryLog>,
}

impl QueryMeter {
    fn new(attack: &'static str, budget: u64, log: Option<QueryLog>) -> Self {
        QueryMeter { attack, budget, used: RefCell::new(HashMap::new()), total: Cell::new(0), log }
    }

    fn charge(&self, samples: &[usize], rows: i64) -> Result<()> {
        if samples.len() as i64 != rows {
            return Err(GibbonError::Internal(format!(
                "{}: {} sample indices for {rows} query rows",
                self.attack,
                samples.len()
            )));
        }
        let mut used = self.used.borrow_mut();
        let mut wanted: HashMap<usize, u64> = HashMap::new();
        for &s in samples {
            *wanted.entry(s).or_default() += 1;
        }
        for (&s, &n) in &wanted {
            let spent = used.get(&s).copied().unwrap_or(0);
            if spent + n > self.budget {
                return Err(GibbonError::Internal(format!(
                    "{}: sample {s} would exceed its query budget of {} ({spent} used, {n} more asked)",
                    self.attack, self.budget
                )));
            }
        }
        for (s, n) in wanted {
            *used.entry(s).or_default() += n;
        }
        self.total.set(self.total.get() + samples.len() as u64);
        if let Some(log) = &self.log {
            log.record(self.attack, samples, self.total.get())?;
        }
        Ok(())
    }

    fn used(&self, sample: usize) -> u64 {
        self.used.borrow().get(&sample).copied().unwrap_or(0)
    }
}

/// What a query-based attack holds instead of the model: answers for queried inputs (scores
/// from a [`ScoreOracle`], labels from a [`LabelOracle`]), each query row charged to the sample
/// it belongs to, within a per-sample budget. Nothing else of the model is reachable.
pub struct Oracle<'a, M: ?Sized> {
    model: &'a M,
    meter: QueryMeter,
    input_shape: Vec<i64>,
    classes: i64,
    device: Device,
}

/// What a score-based attack holds (see [`Oracle`]).
pub type ScoreOracle<'a> = Oracle<'a, dyn ScoreModel + 'a>;

/// What a decision-based attack holds (see [`Oracle`]).
pub type LabelOracle<'a> = Oracle<'a, dyn LabelModel + 'a>;

impl<M: ?Sized> Oracle<'_, M> {
    /// Queries spent on `sample` so far.
    pub fn used(&self, sample: usize) -> u64 {
        self.meter.used(sample)
    }

    /// Queries `sample` may still make.
    pub fn remaining(&self, sample: usize) -> u64 {
        self.meter.budget.saturating_sub(self.meter.used(sample))
    }

    /// The per-sample budget.
    pub fn budget(&self) -> u64 {
        self.meter.budget
    }

    /// Queries spent on all samples.
    pub fn total(&self) -> u64 {
        self.meter.total.get()
    }

    /// Shape of one input.
    pub fn input_shape(&self) -> &[i64] {
        &self.input_shape
    }

    /// Number of classes.
    pub fn num_classes(&self) -> i64 {
        self.classes
    }

    /// Device that inputs should live on.
    pub fn device(&self) -> Device {
        self.device
    }
}

impl<'a> ScoreOracle<'a> {
    /// An oracle over `model` allowing `budget` queries per sample, logging batches to `log`.
    pub fn new(
        attack: &'static str,
        model: &'a dyn ScoreModel,
        budget: u64,
        log: Option<QueryLog>,
    ) -> Self {
        Oracle {
            input_shape: model.input_shape().to_vec(),
            classes: model.num_classes(),
            device: model.device(),
            model,
            meter: QueryMeter::new(attack, budget, log),
        }
    }

    /// Scores `[B, classes]` for `x` `[B, ...]`; row `i` is charged to dataset index
    /// `samples[i]`. Fails, without querying, if any sample would exceed its budget.
    pub fn scores(&self, samples: &[usize], x: &Tensor) -> Result<Tensor> {
        self.meter.charge(samples, x.size().first().copied().unwrap_or(0))?;
        self.model.scores(x)
    }
}

impl<'a> LabelOracle<'a> {
    /// An oracle over `model` allowing `budget` queries per sample, logging batches to `log`.
    pub fn new(
        attack: &'static str,
        model: &'a dyn LabelModel,
        budget: u64,
        log: Option<QueryLog>,
    ) -> Self {
        Oracle {
            input_shape: model.input_shape().to_vec(),
            classes: model.num_classes(),
            device: model.device(),
            model,
            meter: QueryMeter::new(attack, budget, log),
        }
    }

    /// Predicted labels `[B]` (int64) for `x` `[B, ...]`; row `i` is charged to dataset index
    /// `samples[i]`. Fails, without querying, if any sample would exceed its budget.
    pub fn labels(&self, samples: &[usize], x: &Tensor) -> Result<Tensor> {
        self.meter.charge(samples, x.size().first().copied().unwrap_or(0))?;
        self.model.labels(x)
    }
}
