//! SimBA (Guo, Gardner, You, Wilson & Weinberger 2019, "Simple Black-box Adversarial Attacks"),
//! L∞ and L2, untargeted and targeted, in the pixel basis (`simba-pixel`) or the low-frequency
//! DCT basis (`simba`, the paper's SimBA-DCT).
//!
//! A score-based coordinate search written against [`ScoreOracle`]: it sees output scores only.
//! Directions `q` are taken one at a time from an orthonormal basis in a random order; the
//! attack queries `x + α·q` and, if that did not lower the objective, `x - α·q`, and keeps the
//! first of the two that lowers it. The objective is the model's probability of the true class
//! (untargeted; the paper's) or minus the probability of the target (targeted), compared as
//! log-probabilities in float64 so that a confident model's probabilities (which round to 1.0 in
//! float32) still order correctly.
//!
//! Bases and order:
//! - `simba-pixel`: the standard basis; every input value is a direction, in a uniformly random
//!   order.
//! - `simba` (SimBA-DCT): the 2-D orthonormal DCT-II basis of each channel ([`dct2`],
//!   [`idct2`]). Frequencies are taken low first, in the authors' "strided" block order: the
//!   `b × b` top-left block of frequencies (all channels) in random order, then each ring that
//!   widens it by `s` rows and columns, each in random order. Defaults: `b = ⌈min(h, w)/8⌉` and
//!   `s = max(1, round(min(h, w)/32))`, which give the authors' 28 and 7 on 224 × 224 ImageNet,
//!   38 and 9 on 299 × 299, and ART's 4 and 1 on 28 × 28 MNIST.
//!
//! When every direction has been tried the order restarts with a fresh draw, so the whole budget
//! can be used.
//!
//! The threat model: every query point is projected exactly onto ε-ball ∩ box (`threat.project`),
//! so the current point, every query and the returned point are admissible. As in the authors'
//! code (which clips the image of the summed DCT coefficients), the state is the sum of the
//! accepted steps and the query point is the projection of `x0` plus that sum and the step
//! under test: what the ball or the box clipped off is remembered, not lost at every step (on
//! the standard MNIST model this lowers SimBA-DCT's L2 robust accuracy at ε = 2 and 2,000
//! queries from 0.41 to 0.22, and at L∞ ε = 0.3 from 0.03 to 0.01). The step α means:
//! - L2: the Euclidean length of a step (basis vectors have unit L2 norm). Default `ε/4`: each
//!   accepted step adds about α² to ‖δ‖², so the ball is reached after about 16 of them and later
//!   steps turn the perturbation on the sphere. (The paper's 0.2 is for unbounded ImageNet
//!   attacks; on the standard MNIST model at ε = 2 and 2,000 queries, α = ε/10, ε/4 and ε/2 leave
//!   0.25, 0.22 and 0.24 with the DCT basis, ε/4 and ε/2 both 0.22 with the pixel basis.)
//! - L∞: the largest change of any input value in one step: a direction is scaled to L∞ norm α.
//!   Default `ε`: a pixel step moves one value to a vertex of the ball, a DCT step moves the most
//!   affected values by ε.
//!
//! `--alpha` sets α. A candidate whose projection equals the current point (e.g. a pixel already
//! at the bound) is skipped without a query; a sample whose every direction is a no-op stops.
//!
//! Queries: one for the start point (its probability is the baseline), then one or two per
//! direction. A sample stops at its first adversarial query (AttackRecord::step counts the
//! directions tried, 0 for the start point); an unbroken sample uses exactly its budget (default
//! 10,000 queries per sample, the paper's untargeted ImageNet limit). Directions, their order and
//! signs depend only on (seed, sample, pass), so results do not depend on the batch size.
use crate::attack::check_norm;
use crate::attack::host::{argmax, log_sum_exp, reaches_goal};
use crate::attack::pool::drive;
use crate::attack::{
    Attack, AttackContext, AttackOptions, AttackRecord, Chunk, HostRun, HostSample, SampleSource,
};
use crate::error::{GibbonError, Result};
use crate::model::{QueryLog, ScoreOracle, ScoresOf};
use crate::random::RngKey;
use crate::tensor::{batch_tensor, sample_tensor, Layout};
use crate::threat::{Norm, ThreatModel};
use std::cell::RefCell;
use tch::{Device, Kind, Tensor};

/// Query budget per sample when the threat model does not set one.
pub const SIMBA_QUERIES: usize = 10_000;

/// Default L2 step as a fraction of ε.
pub const SIMBA_L2_STEP_FRACTION: f64 = 0.25;

/// Random stream of the direction order (one draw per (seed, sample, pass)).
const STREAM_ORDER: u64 = 60;

/// The basis SimBA searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimbaBasis {
    /// The 2-D DCT-II basis per channel, low frequencies first (SimBA-DCT).
    Dct,
    /// The standard basis: one input value per direction.
    Pixel,
}

/// SimBA parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimbaConfig {
    /// Which basis.
    pub basis: SimbaBasis,
    /// Model queries per sample, the start point included.
    pub queries: usize,
    /// Step α (L2: Euclidean length; L∞: largest change of one value).
    pub step: f64,
    /// DCT: side of the first block of low frequencies (`None`: ⌈min(h, w)/8⌉).
    pub freq_block: Option<usize>,
    /// DCT: rows and columns each later ring adds (`None`: max(1, round(min(h, w)/32))).
    pub stride: Option<usize>,
}

/// The SimBA attack (see the module docs).
#[derive(Debug, Clone)]
pub struct Simba {
    /// Parameters.
    pub config: SimbaConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Simba {
    /// SimBA in `basis` for `threat` (L∞ or L2); the budget is `threat.budget.queries` (default
    /// 10,000), the step `options.alpha` (default ε for L∞, ε/4 for L2).
    pub fn new(threat: &ThreatModel, options: &AttackOptions, basis: SimbaBasis) -> Result<Self> {
        check_norm("simba", threat.norm)?;
        let default_step = match threat.norm {
            Norm::Linf => threat.eps,
            _ => SIMBA_L2_STEP_FRACTION * threat.eps,
        };
        let queries = threat.query_budget(SIMBA_QUERIES)?;
        let step = options.alpha.unwrap_or(default_step);
        if !step.is_finite() || step < 0.0 {
            return Err(GibbonError::invalid("alpha", format!("{step} must be finite and >= 0")));
        }
        Ok(Simba {
            config: SimbaConfig { basis, queries, step, freq_block: None, stride: None },
            log: options.query_log.clone(),
        })
    }

    fn registry_name(&self) -> &'static str {
        match self.config.basis {
            SimbaBasis::Dct => "simba",
            SimbaBasis::Pixel => "simba-pixel",
        }
    }

    /// Runs the search through a score oracle: every sample of `source` is attacked and handed
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
        check_norm(self.registry_name(), threat.norm)?;
        let device = oracle.device();
        let state: RefCell<(HostRun, Option<Basis>)> = RefCell::new(Default::default());
        let admit = |chunk: Chunk| {
            let (run, basis) = &mut *state.borrow_mut();
            let fresh = chunk.to_host(self.registry_name(), run)?.into_iter().map(Row::new);
            let basis = basis.get_or_insert_with(|| self.basis_for(&run.shape));
            Ok(fresh
                .map(|mut r| {
                    r.order = basis.order(RngKey::new(seed, r.index).step(0));
                    r
                })
                .collect::<Vec<Row>>())
        };
        drive(source, batch_size, admit, |rows| {
            let (run, basis) = &*state.borrow();
            let basis = basis.as_ref().expect("set with the first rows");
            self.round(oracle, threat, seed, (&run.shape, device), basis, rows, sink)
        })
    }

    /// Every row's next query point (`None`: the row has nothing left to try); no-op
    /// candidates are skipped without a query. Also returns each row's unprojected point.
    #[allow(clippy::type_complexity)]
    fn choose(
        &self,
        threat: &ThreatModel,
        seed: u64,
        (shape, device): (&[i64], Device),
        basis: &Basis,
        rows: &mut [Row],
    ) -> Result<(Vec<Option<Vec<f32>>>, Vec<Vec<f32>>)> {
        let to_tensor = |v: &[f32], n: usize| batch_tensor(v, n, shape, device);
        let mut pending: Vec<usize> = (0..rows.len()).collect();
        let mut chosen: Vec<Option<Vec<f32>>> = vec![None; rows.len()];
        let mut raws: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
        while !pending.is_empty() {
            let mut clean = Vec::with_capacity(pending.len() * basis.len());
            let mut raw = Vec::with_capacity(pending.len() * basis.len());
            for &i in &pending {
                clean.extend_from_slice(&rows[i].x0);
                raws[i] = self.candidate(&rows[i], basis, threat.norm);
                raw.extend_from_slice(&raws[i]);
            }
            let projected =
                threat.project(&to_tensor(&clean, pending.len()), &to_tensor(&raw, pending.len()));
            let projected: Vec<f32> = Vec::try_from(
                projected.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1),
            )?;
            let d = basis.len();
            let mut again = Vec::new();
            for (k, &i) in pending.iter().enumerate() {
                let point = &projected[k * d..(k + 1) * d];
                let row = &mut rows[i];
                if row.phase == Phase::Start || point != row.current.as_slice() {
                    chosen[i] = Some(point.to_vec());
                    row.idle = 0;
                    continue;
                }
                row.idle += 1;
                // Every direction, both signs, left the point unchanged: nothing to try.
                if row.idle > 2 * d {
                    continue;
                }
                row.advance(basis, seed);
                again.push(i);
            }
            pending = again;
        }
        Ok((chosen, raws))
    }

    /// One query for every row that has a point to try, then the SimBA update and the
    /// retirement of broken rows, rows with nothing left to try, and spent budgets.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &self,
        oracle: &ScoreOracle<'_>,
        threat: &ThreatModel,
        seed: u64,
        (shape, device): (&[i64], Device),
        basis: &Basis,
        rows: &mut Vec<Row>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let to_tensor = |v: &[f32], n: usize| batch_tensor(v, n, shape, device);
        let (mut chosen, mut raws) = self.choose(threat, seed, (shape, device), basis, rows)?;
        let mut next = Vec::with_capacity(rows.len());
        let mut live: Vec<Row> = Vec::with_capacity(rows.len());
        let mut queried: Vec<f32> = Vec::with_capacity(rows.len() * basis.len());
        let mut live_raw: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
        for (i, row) in rows.drain(..).enumerate() {
            match chosen[i].take() {
                None => {
                    let queries = oracle.used(row.index);
                    sink(row.failure(shape, device, queries))?;
                }
                Some(point) => {
                    queried.extend_from_slice(&point);
                    live_raw.push(std::mem::take(&mut raws[i]));
                    live.push(row);
                }
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        let indices: Vec<usize> = live.iter().map(|r| r.index).collect();
        let scores: Vec<f64> = Vec::try_from(
            oracle
                .scores(&indices, &to_tensor(&queried, live.len()))?
                .to_device(Device::Cpu)
                .to_kind(Kind::Double)
                .flatten(0, -1),
        )?;
        let classes = scores.len() / live.len();
        let d = basis.len();
        for (i, mut row) in live.into_iter().enumerate() {
            let point = &queried[i * d..(i + 1) * d];
            let z = &scores[i * classes..(i + 1) * classes];
            let queries = oracle.used(row.index);
            if row.success(z) {
                sink(AttackRecord::searched(
                    row.index,
                    sample_tensor(point, shape, device),
                    Some(row.directions),
                    queries,
                ))?;
                continue;
            }
            let loss = row.objective(z);
            match row.phase {
                Phase::Start => {
                    row.loss = loss;
                    row.phase = Phase::Plus;
                    row.directions = 1;
                }
                Phase::Plus | Phase::Minus => {
                    if loss < row.loss {
                        row.loss = loss;
                        row.current.copy_from_slice(point);
                        row.raw.copy_from_slice(&live_raw[i]);
                        row.next_direction(basis, seed);
                    } else {
                        row.advance(basis, seed);
                    }
                }
            }
            if oracle.remaining(row.index) == 0 {
                sink(row.failure(shape, device, queries))?;
                continue;
            }
            next.push(row);
        }
        *rows = next;
        Ok(())
    }

    /// The query point `row` asks for next, before projection.
    fn candidate(&self, row: &Row, basis: &Basis, norm: Norm) -> Vec<f32> {
        if row.phase == Phase::Start {
            return row.x0.clone();
        }
        let sign = if row.phase == Phase::Plus { 1.0 } else { -1.0 };
        let direction = row.order[row.position] as usize;
        let mut x = row.raw.clone();
        basis.add(&mut x, direction, sign * self.config.step, norm);
        x
    }

    fn basis_for(&self, shape: &[i64]) -> Basis {
        let layout = Layout::of(shape);
        let side = layout.h.min(layout.w);
        match self.config.basis {
            SimbaBasis::Pixel => Basis::Pixel { layout },
            SimbaBasis::Dct => {
                let block = self.config.freq_block.unwrap_or(side.div_ceil(8)).clamp(1, side);
                let stride = self
                    .config
                    .stride
                    .unwrap_or(((side as f64 / 32.0).round() as usize).max(1))
                    .max(1);
                Basis::Dct {
                    layout,
                    rows: dct_matrix(layout.h),
                    cols: dct_matrix(layout.w),
                    block,
                    stride,
                }
            }
        }
    }
}

impl Attack for Simba {
    fn name(&self) -> &'static str {
        self.registry_name()
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
        let oracle = ScoreOracle::new(
            self.registry_name(),
            &scores,
            self.config.queries as u64,
            self.log.clone(),
        );
        self.run_oracle(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

/// Where a row is in its search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The clean input is queried for the baseline objective.
    Start,
    /// `x + α·q` is queried.
    Plus,
    /// `x - α·q` is queried.
    Minus,
}

/// One sample being attacked.
struct Row {
    index: usize,
    label: i64,
    target: Option<i64>,
    x0: Vec<f32>,
    current: Vec<f32>,
    /// `x0` plus the sum of the accepted steps, before projection: `current` is its projection.
    raw: Vec<f32>,
    /// Objective at `current` (lower is better).
    loss: f64,
    phase: Phase,
    /// The direction order of the current pass, and the position in it.
    order: Vec<u32>,
    position: usize,
    pass: usize,
    /// Directions tried so far (the one being tried included).
    directions: usize,
    /// Consecutive candidates skipped as no-ops.
    idle: usize,
}

impl Row {
    fn success(&self, z: &[f64]) -> bool {
        reaches_goal(argmax(z) as i64, self.label, self.target)
    }

    /// Log-probability of the label (untargeted) or minus that of the target (targeted).
    fn objective(&self, z: &[f64]) -> f64 {
        let log_sum = log_sum_exp(z);
        match self.target {
            None => z[self.label as usize] - log_sum,
            Some(t) => log_sum - z[t as usize],
        }
    }

    /// The other sign of this direction, or the next direction.
    fn advance(&mut self, basis: &Basis, seed: u64) {
        if self.phase == Phase::Plus {
            self.phase = Phase::Minus;
        } else {
            self.next_direction(basis, seed);
        }
    }

    fn next_direction(&mut self, basis: &Basis, seed: u64) {
        self.phase = Phase::Plus;
        self.directions += 1;
        self.position += 1;
        if self.position == self.order.len() {
            self.pass += 1;
            self.position = 0;
            self.order = basis.order(RngKey::new(seed, self.index).step(self.pass));
        }
    }

    fn failure(&self, shape: &[i64], device: Device, queries: u64) -> AttackRecord {
        AttackRecord::searched(
            self.index,
            sample_tensor(&self.current, shape, device),
            None,
            queries,
        )
    }
}

impl Row {
    fn new(s: HostSample) -> Row {
        Row {
            index: s.index,
            label: s.label,
            target: s.target,
            current: s.x0.clone(),
            raw: s.x0.clone(),
            x0: s.x0,
            loss: f64::INFINITY,
            phase: Phase::Start,
            order: Vec::new(),
            position: 0,
            pass: 0,
            directions: 0,
            idle: 0,
        }
    }
}

/// The search directions of one input shape.
enum Basis {
    Pixel {
        layout: Layout,
    },
    Dct {
        layout: Layout,
        /// DCT-II matrices (row k = k-th basis function) for the rows and the columns.
        rows: Vec<f64>,
        cols: Vec<f64>,
        block: usize,
        stride: usize,
    },
}

impl Basis {
    fn len(&self) -> usize {
        match self {
            Basis::Pixel { layout } | Basis::Dct { layout, .. } => layout.len(),
        }
    }

    /// A fresh order of all directions: uniformly random (pixel), or low-frequency rings first,
    /// random within a ring (DCT).
    fn order(&self, key: RngKey) -> Vec<u32> {
        let draws = key.stream(STREAM_ORDER).uniform(self.len());
        let level = |direction: usize| -> usize {
            match self {
                Basis::Pixel { .. } => 0,
                Basis::Dct { layout, block, stride, .. } => {
                    let within = direction % (layout.h * layout.w);
                    let frequency = (within / layout.w).max(within % layout.w);
                    if frequency < *block {
                        0
                    } else {
                        1 + (frequency - block) / stride
                    }
                }
            }
        };
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            level(a).cmp(&level(b)).then(draws[a].total_cmp(&draws[b])).then(a.cmp(&b))
        });
        order
    }

    /// `x += step · q` for basis direction `direction`, with `q` scaled to unit L2 norm (L2) or
    /// unit L∞ norm (L∞).
    fn add(&self, x: &mut [f32], direction: usize, step: f64, norm: Norm) {
        match self {
            Basis::Pixel { .. } => x[direction] = (x[direction] as f64 + step) as f32,
            Basis::Dct { layout, rows, cols, .. } => {
                let (h, w) = (layout.h, layout.w);
                let channel = direction / (h * w);
                let (u, v) = ((direction % (h * w)) / w, direction % w);
                let row = &rows[u * h..(u + 1) * h];
                let col = &cols[v * w..(v + 1) * w];
                let scale = match norm {
                    Norm::Linf => {
                        let peak = |f: &[f64]| f.iter().fold(0.0f64, |m, a| m.max(a.abs()));
                        step / (peak(row) * peak(col))
                    }
                    _ => step,
                };
                let base = channel * h * w;
                for (i, &a) in row.iter().enumerate() {
                    for (j, &b) in col.iter().enumerate() {
                        let k = base + i * w + j;
                        x[k] = (x[k] as f64 + scale * a * b) as f32;
                    }
                }
            }
        }
    }
}

/// The orthonormal DCT-II matrix of size `n` (row-major, row k = k-th basis function):
/// `C[k][i] = s_k cos(π (2i + 1) k / 2n)` with `s_0 = √(1/n)`, `s_k = √(2/n)`.
pub fn dct_matrix(n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for k in 0..n {
        let scale = if k == 0 { (1.0 / n as f64).sqrt() } else { (2.0 / n as f64).sqrt() };
        for i in 0..n {
            let angle = std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64;
            c[k * n + i] = scale * angle.cos();
        }
    }
    c
}

fn dct_tensor(n: i64, like: &Tensor) -> Tensor {
    Tensor::from_slice(&dct_matrix(n as usize))
        .view([n, n])
        .to_kind(like.kind())
        .to_device(like.device())
}

/// The orthonormal 2-D DCT-II of every `h × w` plane of `x` `[..., h, w]`: `C_h · x · C_wᵀ`.
pub fn dct2(x: &Tensor) -> Tensor {
    let size = x.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    dct_tensor(h, x).matmul(x).matmul(&dct_tensor(w, x).tr())
}

/// The inverse of [`dct2`] (its transpose, the basis being orthonormal): `C_hᵀ · X · C_w`.
pub fn idct2(x: &Tensor) -> Tensor {
    let size = x.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    dct_tensor(h, x).tr().matmul(x).matmul(&dct_tensor(w, x))
}
