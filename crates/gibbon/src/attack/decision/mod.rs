//! Shared machinery of the decision-based attacks (HopSkipJump, Boundary, RayS). These attacks
//! see predicted labels only, through a [`LabelOracle`], and search for the smallest adversarial
//! perturbation (the minimum-norm contract of [`super::min_norm`]).
//!
//! * **Rounds.** A pool of `batch_size` samples. In every round each sample proposes the points
//!   it wants answered next (one bisection probe, one step, or a batch of gradient-estimation
//!   probes), all proposals go to the model in one oracle call of at most
//!   `max(batch_size, 1024)` rows, and each sample gets its answers back (goal reached or not).
//!   Proposals of one or two points are never split; larger ones (gradient estimates) may be
//!   spread over several rounds, which changes nothing in the result. A sample whose search is
//!   over, whose budget is spent, or (unless `minimize`) that holds an adversarial point within ε
//!   leaves the pool, and the pool is refilled from the source.
//! * **Budgets** are planned with [`LabelOracle::remaining`]: a sample is never asked for more
//!   points than it may still query, so no budget is ever exceeded.
//! * **Best point.** Every answered point that reaches the goal is kept if it is the closest to
//!   the clean input so far (threat model's norm), so a returned success is always a point the
//!   model was asked about, with its exact float32 values.
//! * **Return value** (minimum-norm contract): the best point when its norm is at most ε (claimed
//!   success), else its projection onto the ε-ball ∩ box (claimed failure) or the clean input if
//!   nothing adversarial was found; `min_norm` is the best point's norm either way.
//! * **Start points** ([`StartSearch`]): untargeted goals first try random noise (up to
//!   [`NOISE_TRIES`] draws, one query each, alternately uniform in the box and a uniformly random
//!   corner of the box, whose values vary more), then earlier samples of the run with another true
//!   label; targeted goals first try earlier samples of the run whose true label is the target,
//!   nearest first (up to [`GALLERY_TRIES`]), then the same noise. "Earlier" means earlier in the
//!   order the source serves samples (the first [`GALLERY_PER_CLASS`] of each class are kept), so
//!   the candidates of a sample do not depend on the batch size. Every candidate is checked by a
//!   query; the first one that reaches the goal is bisected towards the clean input.
//!
//! The budget is queries per sample; `threat.budget.steps` and `restarts` are not used (one run
//! per sample). All randomness is drawn per sample from [`RngKey`] (seed, dataset index, iteration, stream),
//! so per-sample results do not depend on the batch size or on how rounds are scheduled.
pub(in crate::attack) mod boundary;
pub(in crate::attack) mod hsj;
pub(in crate::attack) mod rays;

use super::host::reaches_goal;
use super::pool::drive;
use super::{AttackRecord, Chunk, HostRun, HostSample, SampleSource};
use crate::error::{GibbonError, Result};
use crate::model::LabelOracle;
use crate::random::RngKey;
use crate::tensor::{batch_tensor, sample_tensor};
use crate::threat::{Norm, ThreatModel};
use std::cell::RefCell;
use std::collections::HashMap;
use tch::{Device, Kind};

/// Probe rows per oracle call when the batch size is smaller.
const MIN_ROUND_ROWS: usize = 1024;

/// Proposals of at most this many points are never split over rounds.
const ATOMIC_PROPOSAL: usize = 2;

/// Noise draws tried for a start point (ART's `init_size`).
pub(super) const NOISE_TRIES: usize = 100;

/// Earlier samples tried for a start point, nearest first.
const GALLERY_TRIES: usize = 5;

/// Earlier samples kept per class as start candidates.
const GALLERY_PER_CLASS: usize = 16;

/// Earlier samples kept in all.
const GALLERY_SIZE: usize = 256;

const STREAM_START_NOISE: u64 = 60;

/// The input space of a run: sample shape, box (as float32 values that are inside the threat
/// model's box) and the norm that measures perturbations.
pub(super) struct Space {
    /// Shape of one sample.
    pub shape: Vec<i64>,
    /// Values per sample.
    pub d: usize,
    /// Smallest float32 value inside the box.
    pub lo: f32,
    /// Largest float32 value inside the box.
    pub hi: f32,
    /// The threat model's norm.
    pub norm: Norm,
    device: Device,
}

impl Space {
    fn new(threat: &ThreatModel, shape: Vec<i64>, device: Device) -> Self {
        let d = shape.iter().map(|&v| v.max(1) as usize).product();
        let (lo, hi) = (threat.bounds.lo, threat.bounds.hi);
        let mut lo32 = lo as f32;
        if (lo32 as f64) < lo {
            lo32 = lo32.next_up();
        }
        let mut hi32 = hi as f32;
        if (hi32 as f64) > hi {
            hi32 = hi32.next_down();
        }
        Space { shape, d, lo: lo32, hi: hi32, norm: threat.norm, device }
    }

    /// Width of the box (the L∞ diameter).
    pub fn width(&self) -> f64 {
        self.hi as f64 - self.lo as f64
    }

    /// A query point from float64 values: rounded to float32 and clamped into the box.
    pub fn point(&self, values: impl IntoIterator<Item = f64>) -> Vec<f32> {
        values.into_iter().map(|v| (v as f32).clamp(self.lo, self.hi)).collect()
    }

    /// Distance of `x` to `x0` in the threat model's norm (float64, as the verifier measures).
    pub fn distance(&self, x0: &[f32], x: &[f32]) -> f64 {
        distance(self.norm, x0, x)
    }
}

/// `‖x - x0‖` in `norm`, in float64.
pub(super) fn distance(norm: Norm, x0: &[f32], x: &[f32]) -> f64 {
    let diffs = x0.iter().zip(x).map(|(&a, &b)| b as f64 - a as f64);
    match norm {
        Norm::L2 => diffs.map(|v| v * v).sum::<f64>().sqrt(),
        Norm::Linf => diffs.fold(0.0, |m, v| m.max(v.abs())),
        Norm::L1 => diffs.map(f64::abs).sum(),
    }
}

/// An adversarial point the model was asked about.
pub(super) struct Found {
    /// The point, exactly as queried.
    pub x: Vec<f32>,
    /// Its distance to the clean input.
    pub norm: f64,
    /// The attack iteration in which it was found.
    pub iteration: usize,
}

/// One sample under attack.
pub(super) struct Subject {
    /// Dataset index.
    pub index: usize,
    /// True label.
    pub label: i64,
    /// Target class (targeted goals).
    pub target: Option<i64>,
    /// Clean input, flattened.
    pub x0: Vec<f32>,
    /// The sample's random key (seed, dataset index).
    pub key: RngKey,
    /// The closest adversarial point answered so far.
    pub best: Option<Found>,
    /// The attack's current iteration (reported as `AttackRecord::step` of the best point).
    pub iteration: usize,
    /// Earlier samples to try as start points, nearest first.
    gallery: Vec<Vec<f32>>,
}

impl Subject {
    /// Earlier samples to try as start points, nearest first.
    pub fn gallery(&self) -> &[Vec<f32>] {
        &self.gallery
    }

    /// Remembers the closest adversarial point among `points` (answers `adversarial`).
    fn observe(&mut self, space: &Space, points: &[f32], adversarial: &[bool]) {
        for (point, _) in points.chunks(space.d).zip(adversarial).filter(|(_, &a)| a) {
            let norm = space.distance(&self.x0, point);
            if self.best.as_ref().is_none_or(|b| norm < b.norm) {
                self.best = Some(Found { x: point.to_vec(), norm, iteration: self.iteration });
            }
        }
    }
}

/// A decision-based search, one state per sample; the driver ([`run`]) does the rest.
pub(super) trait Search {
    /// Per-sample search state.
    type State;

    /// The state of a new sample.
    fn begin(&self, subject: &Subject, space: &Space) -> Self::State;

    /// Appends the next points to query (each `space.d` values, inside the box) to `out` and
    /// returns how many: at least one and at most `limit`, or zero when the search is over.
    /// `limit` is at least one and never more than `budget_left`, the queries the sample may
    /// still make; it is at least `min(2, budget_left)`, so proposals of one or two points are
    /// never cut by the round's capacity.
    fn propose(
        &self,
        state: &mut Self::State,
        subject: &mut Subject,
        space: &Space,
        budget_left: u64,
        limit: usize,
        out: &mut Vec<f32>,
    ) -> usize;

    /// The answers for the points of the last proposal: `adversarial[i]` says whether point `i`
    /// reached the goal (the best point is already updated).
    fn absorb(
        &self,
        state: &mut Self::State,
        subject: &mut Subject,
        space: &Space,
        points: &[f32],
        adversarial: &[bool],
    );
}

/// What the driver needs besides the search and the oracle.
pub(super) struct Settings<'a> {
    /// Attack name, for errors.
    pub name: &'static str,
    /// The threat model (norm, ε, box, goal).
    pub threat: &'a ThreatModel,
    /// Seed of the counter-based generator.
    pub seed: u64,
    /// Samples in the pool.
    pub batch_size: usize,
    /// Keep searching after an adversarial point within ε was found.
    pub minimize: bool,
}

struct Row<S> {
    subject: Subject,
    state: S,
    over: bool,
}

/// What the driver keeps from the samples it admitted: the gallery of start candidates, the
/// input space (set by the first chunk) and the run's sample shape and goal kind.
#[derive(Default)]
struct Intake {
    gallery: Gallery,
    space: Option<Space>,
    run: HostRun,
}

/// The points of one round, in order, with the pool position and point count of each
/// proposal, and the dataset index of every point.
struct Proposals {
    points: Vec<f32>,
    owners: Vec<(usize, usize)>,
    indices: Vec<usize>,
}

/// Runs `search` on every sample of `source` (see the module docs).
pub(super) fn run<S: Search>(
    search: &S,
    oracle: &LabelOracle<'_>,
    settings: &Settings<'_>,
    source: &mut dyn SampleSource,
    sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
) -> Result<()> {
    let threat = settings.threat;
    let intake = RefCell::new(Intake::default());
    let mut offset = 0usize;
    let admit = |chunk: Chunk| {
        let Intake { gallery, space, run } = &mut *intake.borrow_mut();
        let samples = chunk.to_host(settings.name, run)?;
        let space =
            space.get_or_insert_with(|| Space::new(threat, run.shape.clone(), oracle.device()));
        Ok(subjects(samples, settings.seed, gallery)
            .into_iter()
            .map(|subject| Row { state: search.begin(&subject, space), subject, over: false })
            .collect::<Vec<_>>())
    };
    drive(source, settings.batch_size, admit, |pool| {
        let intake = intake.borrow();
        let space = intake.space.as_ref().expect("set with the first rows");
        let proposals = propose(search, oracle, settings, space, &mut offset, pool)?;
        answer(search, oracle, settings, space, proposals, pool, sink)
    })
}

/// Collects the proposals of one round, round-robin from a moving offset so that no sample
/// waits for long; rows whose search is over or whose budget is spent are marked `over`.
fn propose<S: Search>(
    search: &S,
    oracle: &LabelOracle<'_>,
    settings: &Settings<'_>,
    space: &Space,
    offset: &mut usize,
    pool: &mut [Row<S::State>],
) -> Result<Proposals> {
    let batch = settings.batch_size.max(1);
    let capacity = batch.max(MIN_ROUND_ROWS);
    let d = space.d;
    let mut points: Vec<f32> = Vec::new();
    let mut owners: Vec<(usize, usize)> = Vec::new();
    let mut indices: Vec<usize> = Vec::new();
    let mut left = capacity;
    let n = pool.len();
    for k in 0..n {
        let i = (*offset + k) % n;
        let row = &mut pool[i];
        if row.over {
            continue;
        }
        let budget_left = oracle.remaining(row.subject.index);
        if budget_left == 0 {
            row.over = true;
            continue;
        }
        if left < ATOMIC_PROPOSAL.min(usize::try_from(budget_left).unwrap_or(usize::MAX)) {
            continue;
        }
        let limit = left.min(usize::try_from(budget_left).unwrap_or(usize::MAX));
        let before = points.len();
        let got = search.propose(
            &mut row.state,
            &mut row.subject,
            space,
            budget_left,
            limit,
            &mut points,
        );
        if got == 0 {
            points.truncate(before);
            row.over = true;
            continue;
        }
        if got > limit || points.len() != before + got * d {
            return Err(GibbonError::Internal(format!(
                "{}: sample {} proposed {got} points ({} values) with room for {limit}",
                settings.name,
                row.subject.index,
                points.len() - before
            )));
        }
        left -= got;
        owners.push((i, got));
        indices.extend(std::iter::repeat_n(row.subject.index, got));
    }
    *offset = offset.wrapping_add(1);
    Ok(Proposals { points, owners, indices })
}

/// Asks the oracle about the round's points, hands every answer to its search, and retires
/// rows that are over, have spent their budget, or (unless `minimize`) hold a point within ε.
fn answer<S: Search>(
    search: &S,
    oracle: &LabelOracle<'_>,
    settings: &Settings<'_>,
    space: &Space,
    Proposals { points, owners, indices }: Proposals,
    pool: &mut Vec<Row<S::State>>,
    sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
) -> Result<()> {
    let threat = settings.threat;
    let d = space.d;
    if !indices.is_empty() {
        let x = batch_tensor(&points, indices.len(), &space.shape, space.device);
        let labels: Vec<i64> = Vec::try_from(
            oracle.labels(&indices, &x)?.to_device(Device::Cpu).to_kind(Kind::Int64),
        )?;
        let mut at = 0;
        for &(i, got) in &owners {
            let row = &mut pool[i];
            let adversarial: Vec<bool> = labels[at..at + got]
                .iter()
                .map(|&l| reaches_goal(l, row.subject.label, row.subject.target))
                .collect();
            let answered = &points[at * d..(at + got) * d];
            row.subject.observe(space, answered, &adversarial);
            search.absorb(&mut row.state, &mut row.subject, space, answered, &adversarial);
            at += got;
        }
    }

    let mut kept = Vec::with_capacity(pool.len());
    for row in pool.drain(..) {
        let early =
            !settings.minimize && row.subject.best.as_ref().is_some_and(|b| b.norm <= threat.eps);
        if row.over || early || oracle.remaining(row.subject.index) == 0 {
            let queries = oracle.used(row.subject.index);
            sink(record(row.subject, space, threat, queries)?)?;
        } else {
            kept.push(row);
        }
    }
    *pool = kept;
    Ok(())
}

/// The record of a finished sample under the minimum-norm contract.
fn record(
    subject: Subject,
    space: &Space,
    threat: &ThreatModel,
    queries: u64,
) -> Result<AttackRecord> {
    let tensor = |v: &[f32]| sample_tensor(v, &space.shape, space.device);
    let x0 = tensor(&subject.x0);
    Ok(match subject.best {
        Some(best) if best.norm <= threat.eps => AttackRecord {
            index: subject.index,
            x_adv: tensor(&best.x),
            claimed_success: true,
            step: Some(best.iteration),
            restart: 0,
            queries,
            min_norm: Some(best.norm),
        },
        Some(best) => AttackRecord {
            index: subject.index,
            x_adv: threat.project(&x0.unsqueeze(0), &tensor(&best.x).unsqueeze(0)).squeeze_dim(0),
            claimed_success: false,
            step: None,
            restart: 0,
            queries,
            min_norm: Some(best.norm),
        },
        None => AttackRecord {
            index: subject.index,
            x_adv: x0,
            claimed_success: false,
            step: None,
            restart: 0,
            queries,
            min_norm: None,
        },
    })
}

/// Earlier samples of the run, by true label: start-point candidates.
#[derive(Default)]
struct Gallery {
    entries: Vec<(i64, Vec<f32>)>,
    per_class: HashMap<i64, usize>,
}

impl Gallery {
    /// Up to [`GALLERY_TRIES`] entries of the target class (targeted) or of another class than
    /// `label` (untargeted), nearest to `x0` first (L2).
    fn candidates(&self, x0: &[f32], label: i64, target: Option<i64>) -> Vec<Vec<f32>> {
        let mut near: Vec<(f64, &Vec<f32>)> = self
            .entries
            .iter()
            .filter(|(l, _)| match target {
                Some(t) => *l == t,
                None => *l != label,
            })
            .map(|(_, x)| (distance(Norm::L2, x0, x), x))
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        near.into_iter().take(GALLERY_TRIES).map(|(_, x)| x.clone()).collect()
    }

    fn add(&mut self, label: i64, x: &[f32]) {
        let count = self.per_class.entry(label).or_default();
        if *count < GALLERY_PER_CLASS && self.entries.len() < GALLERY_SIZE {
            *count += 1;
            self.entries.push((label, x.to_vec()));
        }
    }
}

/// The samples of a chunk; each sees the gallery of the samples served before it.
fn subjects(samples: Vec<HostSample>, seed: u64, gallery: &mut Gallery) -> Vec<Subject> {
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let candidates = gallery.candidates(&s.x0, s.label, s.target);
        gallery.add(s.label, &s.x0);
        out.push(Subject {
            index: s.index,
            label: s.label,
            target: s.target,
            key: RngKey::new(seed, s.index),
            x0: s.x0,
            best: None,
            iteration: 0,
            gallery: candidates,
        });
    }
    out
}

/// How a [`Bisection`] moves between the clean input and an adversarial point `far`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Path {
    /// `x0 + α·(far - x0)`, α ∈ [0, 1] (L2 interpolation).
    Segment,
    /// `x0 + clip(far - x0, -α, α)`, α ∈ [0, ‖far - x0‖∞] (the L∞ ball of radius α).
    LinfBall,
}

/// Bisection between the clean input (not adversarial) and an adversarial point, until the
/// bracket is at most `tolerance` wide; `best` is the adversarial end, always a point that was
/// answered.
pub(super) struct Bisection {
    far: Vec<f32>,
    path: Path,
    lo: f64,
    hi: f64,
    tolerance: f64,
    /// The adversarial end of the bracket.
    pub best: Vec<f32>,
}

impl Bisection {
    /// Bisects from `far` (adversarial, answered) towards `x0` along `path`; the bracket starts
    /// at [0, 1] for segments and [0, ‖far - x0‖∞] for L∞ balls, and stops at `tolerance` (same
    /// units as the bracket).
    pub fn new(x0: &[f32], far: Vec<f32>, path: Path, tolerance: f64) -> Self {
        let hi = match path {
            Path::Segment => 1.0,
            Path::LinfBall => distance(Norm::Linf, x0, &far),
        };
        Bisection { best: far.clone(), far, path, lo: 0.0, hi, tolerance }
    }

    /// Whether the bracket is narrow enough.
    pub fn done(&self) -> bool {
        self.hi - self.lo <= self.tolerance
    }

    /// The next probe: the middle of the bracket.
    pub fn probe(&self, x0: &[f32], space: &Space) -> Vec<f32> {
        let a = 0.5 * (self.lo + self.hi);
        let pairs = x0.iter().zip(&self.far).map(|(&x, &f)| (x as f64, f as f64));
        match self.path {
            Path::Segment => space.point(pairs.map(|(x, f)| x + a * (f - x))),
            Path::LinfBall => space.point(pairs.map(|(x, f)| x + (f - x).clamp(-a, a))),
        }
    }

    /// The answer for the last probe (`point`).
    pub fn absorb(&mut self, point: &[f32], adversarial: bool) {
        let a = 0.5 * (self.lo + self.hi);
        if adversarial {
            self.hi = a;
            self.best = point.to_vec();
        } else {
            self.lo = a;
        }
    }
}

/// Noise draw `k` of a sample: uniform in the box for even `k`, a uniformly random corner of
/// the box (every value at the lower or upper face) for odd `k`.
pub(super) fn noise(subject: &Subject, space: &Space, k: usize) -> Vec<f32> {
    let u = subject.key.step(k).stream(STREAM_START_NOISE).uniform(space.d);
    let (lo, width) = (space.lo as f64, space.width());
    if k.is_multiple_of(2) {
        space.point(u.into_iter().map(|v| lo + v * width))
    } else {
        u.into_iter().map(|v| if v < 0.5 { space.lo } else { space.hi }).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Candidate {
    Noise(usize),
    Gallery(usize),
}

enum StartPhase {
    Trying,
    Bisecting(Bisection),
    Found(Vec<f32>),
    Failed,
}

/// Where a [`StartSearch`] stands.
pub(super) enum StartStatus {
    /// Still searching.
    Searching,
    /// An adversarial start point (answered), bisected if asked.
    Found(Vec<f32>),
    /// Every candidate failed.
    Failed,
}

/// The search for an adversarial start point (see the module docs), one query per round.
pub(super) struct StartSearch {
    order: Vec<Candidate>,
    next: usize,
    bisection: Option<f64>,
    phase: StartPhase,
}

impl StartSearch {
    /// A start search for `subject`; with `bisection = Some(tolerance)` the first adversarial
    /// candidate is bisected towards the clean input along the segment until the bracket (a
    /// fraction of the segment) is at most `tolerance` wide.
    pub fn new(subject: &Subject, bisection: Option<f64>) -> Self {
        let noise = (0..NOISE_TRIES).map(Candidate::Noise);
        let gallery = (0..subject.gallery.len()).map(Candidate::Gallery);
        let order: Vec<Candidate> = if subject.target.is_some() {
            gallery.chain(noise).collect()
        } else {
            noise.chain(gallery).collect()
        };
        StartSearch { order, next: 0, bisection, phase: StartPhase::Trying }
    }

    /// Where the search stands.
    pub fn status(&self) -> StartStatus {
        match &self.phase {
            StartPhase::Found(x) => StartStatus::Found(x.clone()),
            StartPhase::Failed => StartStatus::Failed,
            _ => StartStatus::Searching,
        }
    }

    /// Appends the next point to query to `out` (only while searching).
    pub fn propose(&self, subject: &Subject, space: &Space, out: &mut Vec<f32>) {
        match &self.phase {
            StartPhase::Trying => match self.order[self.next] {
                Candidate::Noise(k) => out.extend(noise(subject, space, k)),
                Candidate::Gallery(k) => {
                    out.extend(space.point(subject.gallery[k].iter().map(|&v| v as f64)))
                }
            },
            StartPhase::Bisecting(b) => out.extend(b.probe(&subject.x0, space)),
            StartPhase::Found(_) | StartPhase::Failed => {}
        }
    }

    /// The answer for the proposed point.
    pub fn absorb(&mut self, subject: &Subject, point: &[f32], adversarial: bool) {
        match &mut self.phase {
            StartPhase::Trying => {
                if adversarial {
                    self.phase = match self.bisection {
                        Some(tolerance) => StartPhase::Bisecting(Bisection::new(
                            &subject.x0,
                            point.to_vec(),
                            Path::Segment,
                            tolerance,
                        )),
                        None => StartPhase::Found(point.to_vec()),
                    };
                } else {
                    self.next += 1;
                    if self.next >= self.order.len() {
                        self.phase = StartPhase::Failed;
                    }
                }
            }
            StartPhase::Bisecting(b) => b.absorb(point, adversarial),
            StartPhase::Found(_) | StartPhase::Failed => {}
        }
        if let StartPhase::Bisecting(b) = &self.phase {
            if b.done() {
                self.phase = StartPhase::Found(b.best.clone());
            }
        }
    }
}
