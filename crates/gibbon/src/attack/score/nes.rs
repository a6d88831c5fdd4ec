//! NES gradient estimation + PGD (Ilyas, Engstrom, Athalye & Lin 2018, "Black-box Adversarial
//! Attacks with Limited Queries and Information"; the query-limited attack), L∞ and L2,
//! untargeted and targeted.
//!
//! A score-based attack written against [`ScoreOracle`]: the gradient of the loss is estimated
//! from scores alone with natural evolution strategies, antithetic Gaussian sampling:
//! `ĝ = 1/(nσ) Σ_k (L(x + σu_k) - L(x - σu_k)) u_k` over n/2 draws `u_k ~ N(0, I)`, then a PGD
//! step is taken with momentum: `g ← μg + (1-μ)ĝ`, `x ← Π(x - η·sign(g))` (L∞) or
//! `x ← Π(x - η·g/‖g‖₂)` (L2), Π the exact projection onto ε-ball ∩ box. The step η is annealed
//! as in the authors' code: halved (down to η/200) when the loss at the iterate is higher than
//! five steps earlier. The loss is the margin `z_y - max_{j≠y} z_j` (untargeted) or the
//! cross-entropy to the target (targeted; the paper's), computed from the scores in float64.
//!
//! Defaults, from the authors' code: n = 50 samples per estimate (25 antithetic pairs),
//! σ = 0.001, momentum μ = 0.9, 10,000 queries per sample (`threat.budget.queries`), η = ε/5
//! (their 0.01 at ε = 0.05; `--alpha` sets η). Every query point, the samples of an estimate
//! included, is projected onto ε-ball ∩ box, so the attack never asks about an inadmissible
//! input.
//!
//! Queries: an iteration costs n (the estimate) + 1 (the new iterate, to check it); there is
//! no query for the start point. An iteration runs only if all its queries fit in what is left
//! of the budget, so an unbroken sample uses ⌊budget/(n+1)⌋·(n+1) queries; with a budget below
//! n + 1 the estimate shrinks to the largest even size that fits (none below 3 queries). A
//! sample stops at its first adversarial query, an estimate's samples included
//! (AttackRecord::step counts the PGD steps before it); an unbroken sample returns its
//! lowest-loss iterate. Noise depends only on (seed, sample, iteration), so results do not
//! depend on the batch size.
use crate::attack::check_norm;
use crate::attack::host::{argmax, l2_norm, log_sum_exp, reaches_goal, sign};
use crate::attack::pool::drive;
use crate::attack::{
    Attack, AttackContext, AttackOptions, AttackRecord, Chunk, HostRun, HostSample, SampleSource,
};
use crate::error::{GibbonError, Result};
use crate::model::{QueryLog, ScoreOracle, ScoresOf};
use crate::random::RngKey;
use crate::tensor::{batch_tensor, sample_tensor};
use crate::threat::{Norm, ThreatModel};
use tch::{Device, Kind, Tensor};

/// Query budget per sample when the threat model does not set one (the authors' default).
pub const NES_QUERIES: usize = 10_000;

/// Samples per gradient estimate (antithetic pairs × 2; the authors' 50).
pub const NES_SAMPLES: usize = 50;

/// Standard deviation of the sampling noise (the authors' 0.001).
pub const NES_SIGMA: f64 = 0.001;

/// Default step η as a fraction of ε (the authors' 0.01 at ε = 0.05).
pub const NES_STEP_FRACTION: f64 = 0.2;

/// Momentum of the gradient estimate (the authors' 0.9).
pub const NES_MOMENTUM: f64 = 0.9;

/// Steps over which a rising loss halves η (the authors' plateau length 5, drop 2).
const PLATEAU_LENGTH: usize = 5;
const PLATEAU_DROP: f64 = 2.0;
/// η never falls below η / this (the authors' min-lr ratio).
const MIN_STEP_RATIO: f64 = 200.0;

/// Random stream of the sampling noise (one draw per (seed, sample, iteration)).
const STREAM_NOISE: u64 = 70;

/// NES parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NesConfig {
    /// Model queries per sample.
    pub queries: usize,
    /// Samples per gradient estimate (even).
    pub samples: usize,
    /// Standard deviation of the sampling noise (input units).
    pub sigma: f64,
    /// Initial PGD step η (L∞: per value; L2: Euclidean length).
    pub step: f64,
    /// Momentum of the gradient estimate.
    pub momentum: f64,
}

/// The NES attack (see the module docs).
#[derive(Debug, Clone)]
pub struct Nes {
    /// Parameters.
    pub config: NesConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Nes {
    /// NES for `threat` (L∞ or L2); budget `threat.budget.queries` (default 10,000), step
    /// `options.alpha` (default ε/5).
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        check_norm("nes", threat.norm)?;
        let queries = threat.query_budget(NES_QUERIES)?;
        let step = options.alpha.unwrap_or(NES_STEP_FRACTION * threat.eps);
        if !step.is_finite() || step < 0.0 {
            return Err(GibbonError::invalid("alpha", format!("{step} must be finite and >= 0")));
        }
        Ok(Nes {
            config: NesConfig {
                queries,
                samples: NES_SAMPLES,
                sigma: NES_SIGMA,
                step,
                momentum: NES_MOMENTUM,
            },
            log: options.query_log.clone(),
        })
    }

    /// Samples per estimate under this budget: the configured number, or the largest even
    /// number that leaves one query for the iterate (0 if not even 2 fit).
    pub fn population(&self) -> usize {
        let fit = self.config.queries.saturating_sub(1) / 2 * 2;
        (self.config.samples / 2 * 2).min(fit)
    }

    /// Runs the attack through a score oracle: every sample of `source` is attacked and handed
    /// to `sink`. This is the whole attack; [`Attack::run`] calls it with [`ScoresOf`].
    pub fn run_oracle(
        &self,
        oracle: &ScoreOracle<'_>,
        threat: &ThreatModel,
        seed: u64,
        batch_size: usize,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        check_norm("nes", threat.norm)?;
        let n = self.population();
        let rows_per_pass = batch_size.max(1);
        // Samples attacked together: an estimate of each fills one pass.
        let pool = (rows_per_pass / n.max(1)).max(1);
        let run = std::cell::RefCell::new(HostRun::default());
        let step = self.config.step;
        let admit = |chunk: Chunk| {
            let fresh = chunk.to_host("nes", &mut run.borrow_mut())?;
            Ok(fresh.into_iter().map(|s| Row::new(s, step)).collect::<Vec<_>>())
        };
        drive(source, pool, admit, |rows| {
            let shape = run.borrow().shape.clone();
            self.round(oracle, threat, seed, &shape, rows_per_pass, rows, sink)
        })
    }

    /// One NES iteration for every row of the pool: the gradient estimate (n antithetic
    /// queries), the step (one query), and retirement of broken rows and spent budgets.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &self,
        oracle: &ScoreOracle<'_>,
        threat: &ThreatModel,
        seed: u64,
        shape: &[i64],
        rows_per_pass: usize,
        rows: &mut Vec<Row>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let n = self.population();
        let pairs = n / 2;
        let device = oracle.device();
        let sigma = self.config.sigma;
        // Samples that cannot afford a whole iteration stop with their best iterate.
        let mut active = Vec::with_capacity(rows.len());
        for row in rows.drain(..) {
            if n == 0 || oracle.remaining(row.index) < (n + 1) as u64 {
                sink(row.failure(shape, device, oracle.used(row.index)))?;
            } else {
                active.push(row);
            }
        }
        *rows = active;
        if rows.is_empty() {
            return Ok(());
        }
        let d: usize = shape.iter().product::<i64>() as usize;

        // The estimate: n projected sample points per row, pairs (+u, -u) in draw order.
        let mut noise: Vec<Vec<f64>> = Vec::with_capacity(rows.len());
        let mut clean = Vec::with_capacity(rows.len() * n * d);
        let mut raw = Vec::with_capacity(rows.len() * n * d);
        let mut indices = Vec::with_capacity(rows.len() * n);
        for row in rows.iter() {
            let key = RngKey::new(seed, row.index).step(row.iteration);
            let u = key.stream(STREAM_NOISE).normal(pairs * d);
            for k in 0..pairs {
                for s in [1.0, -1.0] {
                    clean.extend_from_slice(&row.x0);
                    raw.extend(
                        row.current
                            .iter()
                            .zip(&u[k * d..(k + 1) * d])
                            .map(|(&x, &e)| (x as f64 + s * sigma * e) as f32),
                    );
                    indices.push(row.index);
                }
            }
            noise.push(u);
        }
        let points = threat.project(
            &batch_tensor(&clean, rows.len() * n, shape, device),
            &batch_tensor(&raw, rows.len() * n, shape, device),
        );
        let scores = scores_in_passes(oracle, &indices, &points, rows_per_pass)?;
        let classes = scores.len() / indices.len();
        let mut stepped = Vec::with_capacity(rows.len());
        let mut next_raw = Vec::with_capacity(rows.len() * d);
        let mut next_clean = Vec::with_capacity(rows.len() * d);
        for (r, (mut row, u)) in rows.drain(..).zip(noise).enumerate() {
            let z = |j: usize| {
                let at = (r * n + j) * classes;
                &scores[at..at + classes]
            };
            if let Some(j) = (0..n).find(|&j| row.success(z(j))) {
                sink(AttackRecord::searched(
                    row.index,
                    points.get((r * n + j) as i64).copy(),
                    Some(row.iteration),
                    oracle.used(row.index),
                ))?;
                continue;
            }
            let scale = 1.0 / (n as f64 * sigma);
            let mu = self.config.momentum;
            row.momentum.iter_mut().for_each(|g| *g *= mu);
            for k in 0..pairs {
                let diff = (row.loss(z(2 * k)) - row.loss(z(2 * k + 1))) * scale * (1.0 - mu);
                for (g, &e) in row.momentum.iter_mut().zip(&u[k * d..(k + 1) * d]) {
                    *g += diff * e;
                }
            }
            next_clean.extend_from_slice(&row.x0);
            next_raw.extend(row.proposal(threat.norm));
            stepped.push(row);
        }
        if stepped.is_empty() {
            return Ok(());
        }

        // The new iterates: one query each.
        let candidates = threat.project(
            &batch_tensor(&next_clean, stepped.len(), shape, device),
            &batch_tensor(&next_raw, stepped.len(), shape, device),
        );
        let indices: Vec<usize> = stepped.iter().map(|r| r.index).collect();
        let scores = scores_in_passes(oracle, &indices, &candidates, rows_per_pass)?;
        let queried: Vec<f32> =
            Vec::try_from(candidates.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        for (r, mut row) in stepped.into_iter().enumerate() {
            let z = &scores[r * classes..(r + 1) * classes];
            row.iteration += 1;
            if row.success(z) {
                sink(AttackRecord::searched(
                    row.index,
                    candidates.get(r as i64).copy(),
                    Some(row.iteration),
                    oracle.used(row.index),
                ))?;
                continue;
            }
            let loss = row.loss(z);
            row.current.copy_from_slice(&queried[r * d..(r + 1) * d]);
            if loss < row.best_loss {
                row.best_loss = loss;
                row.best.copy_from_slice(&row.current);
            }
            row.anneal(loss);
            rows.push(row);
        }
        Ok(())
    }
}

impl Attack for Nes {
    fn name(&self) -> &'static str {
        "nes"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
    fn run(
        &self,
        ctx: &AttackContext<'_>,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let scores = ScoresOf(ctx.model);
        let oracle = ScoreOracle::new("nes", &scores, self.config.queries as u64, self.log.clone());
        self.run_oracle(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

/// Scores (float64, flattened `[rows × classes]`) for `x`, at most `rows_per_pass` rows per
/// query batch.
fn scores_in_passes(
    oracle: &ScoreOracle<'_>,
    indices: &[usize],
    x: &Tensor,
    rows_per_pass: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (c, part) in indices.chunks(rows_per_pass).enumerate() {
        let start = (c * rows_per_pass) as i64;
        let scores = oracle.scores(part, &x.narrow(0, start, part.len() as i64))?;
        out.extend(Vec::<f64>::try_from(
            scores.to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1),
        )?);
    }
    Ok(out)
}

/// One sample being attacked.
struct Row {
    index: usize,
    label: i64,
    target: Option<i64>,
    x0: Vec<f32>,
    current: Vec<f32>,
    /// The momentum of the gradient estimate.
    momentum: Vec<f64>,
    /// Current step η, and its floor.
    step: f64,
    min_step: f64,
    /// Losses of the last iterates (plateau detection).
    recent: Vec<f64>,
    /// PGD steps taken.
    iteration: usize,
    best: Vec<f32>,
    best_loss: f64,
}

impl Row {
    fn success(&self, z: &[f64]) -> bool {
        reaches_goal(argmax(z) as i64, self.label, self.target)
    }

    /// The loss to lower: margin `z_y - max_{j≠y} z_j`, or cross-entropy to the target.
    fn loss(&self, z: &[f64]) -> f64 {
        match self.target {
            None => {
                let y = self.label as usize;
                let other = z
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != y)
                    .fold(f64::NEG_INFINITY, |m, (_, &v)| m.max(v));
                z[y] - other
            }
            Some(t) => log_sum_exp(z) - z[t as usize],
        }
    }

    /// The iterate after one step along the momentum (before projection).
    fn proposal(&self, norm: Norm) -> Vec<f32> {
        let direction: Vec<f64> = match norm {
            Norm::Linf => self.momentum.iter().map(|&g| sign(g)).collect(),
            _ => {
                let length = l2_norm(&self.momentum);
                if length > 0.0 {
                    self.momentum.iter().map(|g| g / length).collect()
                } else {
                    vec![0.0; self.momentum.len()]
                }
            }
        };
        self.current
            .iter()
            .zip(direction)
            .map(|(&x, g)| (x as f64 - self.step * g) as f32)
            .collect()
    }

    /// Halves the step when the loss rose over the last `PLATEAU_LENGTH` iterates.
    fn anneal(&mut self, loss: f64) {
        self.recent.push(loss);
        if self.recent.len() > PLATEAU_LENGTH {
            self.recent.remove(0);
        }
        if self.recent.len() == PLATEAU_LENGTH && self.recent[PLATEAU_LENGTH - 1] > self.recent[0] {
            self.step = (self.step / PLATEAU_DROP).max(self.min_step);
            self.recent.clear();
        }
    }

    fn failure(&self, shape: &[i64], device: Device, queries: u64) -> AttackRecord {
        AttackRecord::searched(self.index, sample_tensor(&self.best, shape, device), None, queries)
    }
}

impl Row {
    fn new(s: HostSample, step: f64) -> Row {
        let d = s.x0.len();
        Row {
            index: s.index,
            label: s.label,
            target: s.target,
            current: s.x0.clone(),
            best: s.x0.clone(),
            x0: s.x0,
            momentum: vec![0.0; d],
            step,
            min_step: step / MIN_STEP_RATIO,
            recent: Vec::new(),
            iteration: 0,
            best_loss: f64::INFINITY,
        }
    }
}
