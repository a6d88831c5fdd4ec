//! The Square attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
//! query-efficient black-box adversarial attack via random search"), L∞, L2 and L1 (the L1
//! variant of AutoAttack's L1 suite, Croce & Hein 2021, "Mind the box"), untargeted and
//! targeted.
//!
//! A score-based random search: the search is written against [`ScoreModel`], so it only ever
//! sees output scores (never gradients). Each iteration changes one random square window of the
//! current best point and keeps the change if the loss decreased.
//!
//! Defaults as in the paper and AutoAttack's standard suite: 5,000 queries per sample
//! (`threat.budget.queries`), initial square fraction p = 0.8, halved after 10, 50, 200, 500,
//! 1,000, 2,000, 4,000, 6,000 and 8,000 iterations whatever the budget (AutoAttack's
//! `resc_schedule=False`: with 5,000 queries p ends at p/128). `square-rescaled` stretches those
//! breakpoints to the budget as if it were 10,000 queries (torchattacks' default,
//! `resc_schedule=True`: with 5,000 queries p reaches p/512 after 4,000 iterations); margin
//! loss `z_y - max_{j≠y} z_j` for untargeted goals and cross-entropy to the target for targeted
//! ones. L∞: start at vertical stripes of ±ε, propose a square of side `round(√(p·n/c))` set to
//! ±ε per channel (signs redrawn when they would not change the window). L2: start at a grid of
//! "meta pseudo-gaussian" patterns with random signs scaled to norm ε; each proposal moves the
//! perturbation mass of a second square into the first one, with a fresh meta pattern, and
//! rescales to norm ε (side ≥ 3, odd). L1 works like L2 with L1 norms: patterns weighted
//! 1/(r+1)⁴ instead of 1/(r+1)² and of unit L1 norm, the start grid not rescaled, each window
//! getting its share of the unused budget plus the L1 mass of both windows (AutoAttack also
//! multiplies that by the channel count, a no-op on grey images; here the exact projection does
//! the rest). Every query point is projected exactly onto ball ∩ box, so the returned point is
//! the queried one.
//!
//! Queries: the start point counts as one, every proposal as one; no sample ever exceeds the
//! budget, and an unbroken sample uses exactly the budget (one run: `threat.budget.restarts` is
//! not used, the budget is per sample over the whole attack). Square positions are uniform over
//! every placement inside the input (AutoAttack never places one on the last row or column). A sample leaves the batch at its
//! first success (AttackRecord::step is the iteration, 0 for the start point) and freed rows
//! are refilled from the source. Square positions, signs and orientations come from the
//! counter-based generator per (seed, sample, iteration), so results do not depend on the batch.
use crate::attack::check_norm;
use crate::attack::host::l2_norm;
use crate::attack::loss::{confident_success, cross_entropy_objective, margin};
use crate::attack::pool::drive;
use crate::attack::{
    Attack, AttackContext, AttackOptions, AttackRecord, Chunk, HostRun, HostSample, SampleSource,
};
use crate::error::{GibbonError, Result};
use crate::model::{QueryLog, ScoreOracle, ScoresOf};
use crate::random::RngKey;
use crate::tensor::{batch_tensor, sample_tensor, Layout};
use crate::threat::{rounding_margin, Norm, ThreatModel};
use std::collections::HashMap;

mod mass_moves;
pub(crate) use mass_moves::MassMoves;
use tch::{Device, Kind, Tensor};

/// Query budget per sample when the threat model does not set one.
pub const SQUARE_QUERIES: usize = 5000;

/// Initial fraction of the input covered by a square (the paper's p_init).
pub const SQUARE_P_INIT: f64 = 0.8;

/// Iterations (of a 10,000-query budget) after which the square fraction is halved.
const HALVING_POINTS: [usize; 9] = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];

/// Redraws of an L∞ proposal's signs when they would leave the window unchanged.
const SIGN_REDRAWS: u64 = 16;

// Random streams (one independent draw per (seed, sample, iteration, stream)).
const STREAM_INIT_SIGNS: u64 = 40;
const STREAM_INIT_FLIPS: u64 = 41;
const STREAM_ROW: u64 = 42;
const STREAM_COL: u64 = 43;
const STREAM_ROW_2: u64 = 44;
const STREAM_COL_2: u64 = 45;
const STREAM_FLIP: u64 = 46;
const STREAM_SIGNS: u64 = 50;

/// When Square halves its square fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SquareSchedule {
    /// At fixed iterations, whatever the budget (AutoAttack's standard suite).
    Fixed,
    /// At iterations stretched to the budget, as if it were 10,000 queries.
    Rescaled,
}

/// Square attack parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SquareConfig {
    /// Model queries per sample, the start point included.
    pub queries: usize,
    /// Initial fraction of the input covered by a square.
    pub p_init: f64,
    /// When the fraction is halved.
    pub schedule: SquareSchedule,
    /// Early stop only beyond this margin of the scores (see [`AttackOptions::confidence`]).
    pub confidence: f64,
}

/// The Square attack (see the module docs).
#[derive(Debug, Clone)]
pub struct Square {
    /// Parameters.
    pub config: SquareConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Square {
    /// Square for `threat` (L∞ or L2) with `schedule`; the budget is `threat.budget.queries`
    /// (default 5,000).
    pub fn new(
        threat: &ThreatModel,
        options: &AttackOptions,
        schedule: SquareSchedule,
    ) -> Result<Self> {
        check_norm("square", threat.norm)?;
        let queries = threat.query_budget(SQUARE_QUERIES)?;
        let confidence = options.confidence;
        Ok(Square {
            config: SquareConfig { queries, p_init: SQUARE_P_INIT, schedule, confidence },
            log: options.query_log.clone(),
        })
    }

    /// The square fraction p at proposal `iteration` (0-based), from the paper's schedule,
    /// rescaled to the budget for [`SquareSchedule::Rescaled`].
    pub fn fraction(&self, iteration: usize) -> f64 {
        let scaled = match self.config.schedule {
            SquareSchedule::Fixed => iteration,
            SquareSchedule::Rescaled => {
                (iteration as u128 * 10_000 / self.config.queries.max(1) as u128) as usize
            }
        };
        let halvings = HALVING_POINTS.iter().filter(|&&b| scaled > b).count();
        self.config.p_init / (1u64 << halvings) as f64
    }

    /// Runs the search on a score-only model: every sample of `source` is attacked and handed
    /// to `sink`. This is the whole attack; [`Attack::run`] calls it with [`ScoresOf`].
    pub fn run_scores(
        &self,
        model: &ScoreOracle<'_>,
        threat: &ThreatModel,
        seed: u64,
        batch_size: usize,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        check_norm("square", threat.norm)?;
        let budget = self.config.queries as u64;
        if budget == 0 {
            return Err(GibbonError::invalid("queries", "must be at least 1"));
        }
        let device = model.device();
        let mut patterns = Patterns::default();
        let run = std::cell::RefCell::new(HostRun::default());
        let admit = |chunk: Chunk| {
            let fresh = chunk.to_host("square", &mut run.borrow_mut())?;
            Ok(fresh.into_iter().map(|s| Row::new(s, seed)).collect::<Vec<Row>>())
        };
        drive(source, batch_size, admit, |rows| {
            let (shape, targeted) = {
                let run = run.borrow();
                (run.shape.clone(), run.targeted == Some(true))
            };
            let space = (shape.as_slice(), targeted, device);
            self.round(model, threat, space, budget, &mut patterns, rows, sink)
        })
    }

    /// One query for every row of the pool (the start point, then one proposal per
    /// iteration), and retirement of broken rows and spent budgets.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &self,
        model: &ScoreOracle<'_>,
        threat: &ThreatModel,
        (shape, targeted, device): (&[i64], bool, Device),
        budget: u64,
        patterns: &mut Patterns,
        rows: &mut Vec<Row>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let layout = Layout::of(shape);
        let d = layout.len();
        let b = rows.len();
        let mut clean: Vec<f32> = Vec::with_capacity(b * d);
        for row in rows.iter() {
            clean.extend_from_slice(&row.x0);
        }
        let to_tensor = |v: &[f32]| batch_tensor(v, b, shape, device);
        let x0 = to_tensor(&clean);
        // L2 perturbations aim this far inside the ball: float32 rounding of x0 + δ then
        // stays in the projection's feasible set, so the projection is a plain box clamp.
        let radius = match threat.norm {
            Norm::L2 => {
                let margin = rounding_margin(Kind::Float, &x0, threat.bounds, Norm::L2);
                (threat.eps - 2.0 * margin).max(0.0)
            }
            _ => threat.eps,
        };
        let mut raw: Vec<f32> = Vec::with_capacity(b * d);
        for row in rows.iter() {
            raw.extend(self.candidate(row, threat, radius, layout, patterns));
        }
        let candidates = threat.project(&x0, &to_tensor(&raw));
        let indices: Vec<usize> = rows.iter().map(|r| r.index).collect();
        let scores =
            model.scores(&indices, &candidates)?.to_kind(Kind::Float).to_device(Device::Cpu);
        let labels = Tensor::from_slice(&rows.iter().map(|r| r.label).collect::<Vec<_>>());
        let targets = if targeted {
            Some(Tensor::from_slice(
                &rows.iter().map(|r| r.target.unwrap_or(0)).collect::<Vec<_>>(),
            ))
        } else {
            None
        };
        let success: Vec<bool> = Vec::try_from(confident_success(
            &scores,
            &labels,
            targets.as_ref(),
            self.config.confidence,
        ))?;
        let loss: Vec<f32> = Vec::try_from(match &targets {
            None => margin(&scores, &labels, None),
            Some(t) => -cross_entropy_objective(&scores, &labels, Some(t)),
        })?;
        let queried: Vec<f32> =
            Vec::try_from(candidates.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let mut next = Vec::with_capacity(b);
        for (i, mut row) in rows.drain(..).enumerate() {
            let point = &queried[i * d..(i + 1) * d];
            if success[i] {
                sink(AttackRecord::searched(
                    row.index,
                    candidates.get(i as i64).copy(),
                    Some(row.iteration),
                    model.used(row.index),
                ))?;
                continue;
            }
            if loss[i] < row.best_loss {
                row.best_loss = loss[i];
                row.best.copy_from_slice(point);
            }
            if model.used(row.index) >= budget {
                sink(AttackRecord::searched(
                    row.index,
                    sample_tensor(&row.best, shape, device),
                    None,
                    model.used(row.index),
                ))?;
                continue;
            }
            row.iteration += 1;
            next.push(row);
        }
        *rows = next;
        Ok(())
    }

    /// The point `row` queries next: the start point at iteration 0, else a proposal (L2
    /// perturbations get norm `radius`).
    fn candidate(
        &self,
        row: &Row,
        threat: &ThreatModel,
        radius: f64,
        layout: Layout,
        patterns: &mut Patterns,
    ) -> Vec<f32> {
        let key = RngKey::new(row.seed, row.index);
        match (threat.norm, row.iteration) {
            (Norm::Linf, 0) => linf_start(row, threat.eps, layout, key),
            (Norm::Linf, k) => {
                let side = side_for(self.fraction(k - 1), layout, 1);
                linf_proposal(row, threat, layout, side, key.step(k))
            }
            (norm, 0) => l2_start(row, radius, Lp::of(norm), layout, key, patterns),
            (norm, k) => {
                let side = side_for(self.fraction(k - 1), layout, 3);
                l2_proposal(row, radius, Lp::of(norm), layout, side, key.step(k), patterns)
            }
        }
    }
}

impl Attack for Square {
    fn name(&self) -> &'static str {
        match self.config.schedule {
            SquareSchedule::Fixed => "square",
            SquareSchedule::Rescaled => "square-rescaled",
        }
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
        let oracle =
            ScoreOracle::new(self.name(), &scores, self.config.queries as u64, self.log.clone());
        self.run_scores(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

/// One sample being attacked.
struct Row {
    index: usize,
    seed: u64,
    label: i64,
    target: Option<i64>,
    x0: Vec<f32>,
    best: Vec<f32>,
    best_loss: f32,
    /// Proposals made so far (0 while the start point is being queried).
    iteration: usize,
}

impl Row {
    fn new(s: HostSample, seed: u64) -> Row {
        Row {
            index: s.index,
            seed,
            label: s.label,
            target: s.target,
            best: s.x0.clone(),
            x0: s.x0,
            best_loss: f32::INFINITY,
            iteration: 0,
        }
    }
}

/// Side of a square covering a fraction `p` of each channel: `round(√(p·h·w))`, at least
/// `min_side` (odd when `min_side` > 1, as the L2 patterns need a centre), at most the input.
fn side_for(p: f64, layout: Layout, min_side: usize) -> usize {
    let mut side = ((p * (layout.h * layout.w) as f64).sqrt().round() as usize).max(min_side);
    if min_side > 1 && side.is_multiple_of(2) {
        side += 1;
    }
    side.min(layout.h).min(layout.w).max(1)
}

fn sign(u: f64) -> f32 {
    if u < 0.5 {
        -1.0
    } else {
        1.0
    }
}

/// L∞ start: every column of every channel moved by +ε or -ε (vertical stripes).
fn linf_start(row: &Row, eps: f64, layout: Layout, key: RngKey) -> Vec<f32> {
    let signs = key.stream(STREAM_INIT_SIGNS).uniform(layout.c * layout.w);
    let mut x = row.x0.clone();
    for c in 0..layout.c {
        for i in 0..layout.h {
            for j in 0..layout.w {
                let k = layout.at(c, i, j);
                x[k] = (row.x0[k] as f64 + eps * sign(signs[c * layout.w + j]) as f64) as f32;
            }
        }
    }
    x
}

/// L∞ proposal: one square window set to x0 ± ε (one sign per channel) on top of the best point.
fn linf_proposal(
    row: &Row,
    threat: &ThreatModel,
    layout: Layout,
    side: usize,
    key: RngKey,
) -> Vec<f32> {
    let eps = threat.eps;
    let (lo, hi) = (threat.bounds.lo, threat.bounds.hi);
    let top = key.stream(STREAM_ROW).below(layout.h - side + 1);
    let left = key.stream(STREAM_COL).below(layout.w - side + 1);
    let tolerance = 1e-6 * lo.abs().max(hi.abs()).max(1.0);
    // The value a window pixel takes for a sign, as the projection will clamp it.
    let target = |k: usize, s: f32| (row.x0[k] as f64 + eps * s as f64).clamp(lo, hi);
    let mut signs = vec![1.0f32; layout.c];
    for attempt in 0..=SIGN_REDRAWS {
        let u = key.stream(STREAM_SIGNS + attempt).uniform(layout.c);
        for (s, &v) in signs.iter_mut().zip(&u) {
            *s = sign(v);
        }
        let changes = (0..layout.c).any(|c| {
            (top..top + side).any(|i| {
                (left..left + side).any(|j| {
                    let k = layout.at(c, i, j);
                    (target(k, signs[c]) - row.best[k] as f64).abs() > tolerance
                })
            })
        });
        if changes {
            break;
        }
    }
    let mut x = row.best.clone();
    for (c, &s) in signs.iter().enumerate() {
        for i in top..top + side {
            for j in left..left + side {
                let k = layout.at(c, i, j);
                x[k] = (row.x0[k] as f64 + eps * s as f64) as f32;
            }
        }
    }
    x
}

/// The norm of a Square search that moves mass between windows: L2 or L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lp {
    L2,
    L1,
}

impl Lp {
    fn of(norm: Norm) -> Lp {
        if norm == Norm::L1 {
            Lp::L1
        } else {
            Lp::L2
        }
    }
    /// ‖v‖ᵖ (the quantity that adds up over disjoint parts).
    fn mass(self, v: &[f64]) -> f64 {
        match self {
            Lp::L2 => v.iter().map(|a| a * a).sum(),
            Lp::L1 => v.iter().map(|a| a.abs()).sum(),
        }
    }
    /// ‖v‖ from its mass.
    fn length(self, mass: f64) -> f64 {
        match self {
            Lp::L2 => mass.sqrt(),
            Lp::L1 => mass,
        }
    }
    /// Scales `v` to unit norm (left as is when it is zero).
    fn normalize(self, v: &mut [f64]) {
        let n = self.length(self.mass(v));
        if n > 0.0 {
            v.iter_mut().for_each(|a| *a /= n);
        }
    }
    /// The exponent of the nested rectangles' weights 1/(r+1)^k.
    fn exponent(self) -> i32 {
        match self {
            Lp::L2 => 2,
            Lp::L1 => 4,
        }
    }
}

/// Unit-norm "meta pseudo-gaussian" patterns by side and norm, cached.
#[derive(Default)]
struct Patterns(HashMap<(usize, Lp), Vec<f64>>);

impl Patterns {
    /// The `side × side` pattern (row-major), transposed when `flip`.
    fn get(&mut self, side: usize, lp: Lp, flip: bool) -> Vec<f64> {
        let p = self.0.entry((side, lp)).or_insert_with(|| meta_pattern(side, lp));
        if !flip {
            return p.clone();
        }
        let mut t = vec![0.0; side * side];
        for i in 0..side {
            for j in 0..side {
                t[j * side + i] = p[i * side + j];
            }
        }
        t
    }
}

/// An `rows × cols` block of nested rectangles around its centre, the rectangle at Chebyshev
/// radius r weighted 1/(r+1)^k (k = 2 for L2, 4 for L1), so each cell holds
/// Σ_{r ≥ its radius} 1/(r+1)^k; unit norm.
fn nested_rectangles(rows: usize, cols: usize, lp: Lp) -> Vec<f64> {
    let (ci, cj) = (rows / 2, cols / 2);
    let radii = (rows / 2).max(cols / 2) + 1;
    let mut block = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let radius = i.abs_diff(ci).max(j.abs_diff(cj));
            block[i * cols + j] =
                (radius..radii).map(|r| ((r + 1) as f64).powi(-lp.exponent())).sum();
        }
    }
    lp.normalize(&mut block);
    block
}

/// The paper's pattern: nested rectangles in the top half, minus nested rectangles in the
/// bottom half, unit norm.
fn meta_pattern(side: usize, lp: Lp) -> Vec<f64> {
    let upper_rows = side / 2;
    let upper = nested_rectangles(upper_rows, side, lp);
    let lower = nested_rectangles(side - upper_rows, side, lp);
    let mut p: Vec<f64> = upper.into_iter().chain(lower.into_iter().map(|v| -v)).collect();
    lp.normalize(&mut p);
    p
}

/// `x0 + δ·ε/‖δ‖₂` (the clean input when δ = 0) for L2; `x0 + δ` for L1, whose points the
/// exact projection brings into the ball.
fn at_radius(x0: &[f32], delta: &[f64], eps: f64, lp: Lp) -> Vec<f32> {
    let n = l2_norm(delta);
    let scale = match lp {
        Lp::L1 => 1.0,
        Lp::L2 if n > 0.0 => eps / n,
        Lp::L2 => 0.0,
    };
    x0.iter().zip(delta).map(|(&x, &d)| (x as f64 + d * scale) as f32).collect()
}

/// L2 start: a grid of squares of side ⌊min(h, w)/5⌋, each a meta pattern with a random sign
/// per channel and a random orientation, scaled to norm ε.
fn l2_start(
    row: &Row,
    eps: f64,
    lp: Lp,
    layout: Layout,
    key: RngKey,
    patterns: &mut Patterns,
) -> Vec<f32> {
    let side = (layout.h.min(layout.w) / 5).max(1);
    let (tiles_h, tiles_w) = (layout.h / side, layout.w / side);
    let (top, left) = ((layout.h - tiles_h * side) / 2, (layout.w - tiles_w * side) / 2);
    let tiles = tiles_h * tiles_w;
    let signs = key.stream(STREAM_INIT_SIGNS).uniform(tiles * layout.c);
    let flips = key.stream(STREAM_INIT_FLIPS).uniform(tiles);
    let mut delta = vec![0.0f64; layout.len()];
    for ti in 0..tiles_h {
        for tj in 0..tiles_w {
            let t = ti * tiles_w + tj;
            let pattern = patterns.get(side, lp, flips[t] < 0.5);
            for c in 0..layout.c {
                let s = sign(signs[t * layout.c + c]) as f64;
                for a in 0..side {
                    for b in 0..side {
                        let k = layout.at(c, top + ti * side + a, left + tj * side + b);
                        delta[k] = pattern[a * side + b] * s;
                    }
                }
            }
        }
    }
    at_radius(&row.x0, &delta, eps, lp)
}

/// L2 proposal: a second window's perturbation mass (and any unused budget) moves into the first
/// window, whose content becomes its old direction plus a fresh meta pattern with a random sign
/// per channel; the whole perturbation is then rescaled to norm ε.
fn l2_proposal(
    row: &Row,
    eps: f64,
    lp: Lp,
    layout: Layout,
    side: usize,
    key: RngKey,
    patterns: &mut Patterns,
) -> Vec<f32> {
    let top = key.stream(STREAM_ROW).below(layout.h - side + 1);
    let left = key.stream(STREAM_COL).below(layout.w - side + 1);
    let top2 = key.stream(STREAM_ROW_2).below(layout.h - side + 1);
    let left2 = key.stream(STREAM_COL_2).below(layout.w - side + 1);
    let signs = key.stream(STREAM_SIGNS).uniform(layout.c);
    let pattern = patterns.get(side, lp, key.stream(STREAM_FLIP).uniform(1)[0] < 0.5);
    let in_first =
        |i: usize, j: usize| (top..top + side).contains(&i) && (left..left + side).contains(&j);
    let in_second =
        |i: usize, j: usize| (top2..top2 + side).contains(&i) && (left2..left2 + side).contains(&j);

    let old: Vec<f64> = row.best.iter().zip(&row.x0).map(|(&b, &x)| b as f64 - x as f64).collect();
    let unused = (lp.mass(&[eps]) - lp.mass(&old)).max(0.0);
    let mut delta = old.clone();
    for c in 0..layout.c {
        let (mut first, mut both) = (0.0f64, 0.0f64);
        for i in 0..layout.h {
            for j in 0..layout.w {
                let v = lp.mass(&[old[layout.at(c, i, j)]]);
                if in_first(i, j) {
                    first += v;
                }
                if in_first(i, j) || in_second(i, j) {
                    both += v;
                }
            }
        }
        let first = lp.length(first);
        let s = sign(signs[c]) as f64;
        let mut window: Vec<f64> = (0..side * side)
            .map(|ab| {
                let k = layout.at(c, top + ab / side, left + ab % side);
                pattern[ab] * s + old[k] / (first + 1e-12)
            })
            .collect();
        lp.normalize(&mut window);
        let length = lp.length(unused / layout.c as f64 + both);
        for i in top2..top2 + side {
            for j in left2..left2 + side {
                delta[layout.at(c, i, j)] = 0.0;
            }
        }
        for (ab, v) in window.iter().enumerate() {
            delta[layout.at(c, top + ab / side, left + ab % side)] = v * length;
        }
    }
    at_radius(&row.x0, &delta, eps, lp)
}
