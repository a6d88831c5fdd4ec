//! RayS (Chen & Gu 2020, "RayS: A Ray Searching Method for Hard-label Adversarial Attack"), L∞
//! only, untargeted and targeted.
//!
//! A decision-based minimum-norm attack: it sees predicted labels only (a [`LabelOracle`]). It
//! searches over rays `x0 + r·s` with `s ∈ {-1, +1}^d` (clipped to the box) for the one whose
//! first adversarial point has the smallest radius `r` (that point's L∞ distance is at most `r`).
//! The best ray `s` and its radius `r*` are kept. Candidate rays flip the signs of one block of
//! `s` (blocks of the flattened input, hierarchically: the whole input, then halves, quarters ...
//! down to single values, then again from the whole input). A candidate costs one query when its
//! point at radius `min(r*, box width)` is not adversarial (it cannot be better); otherwise its
//! radius is bisected on [0, min(r*, box width)] to a bracket of 10⁻³/√d·(box width) (the
//! paper's 10⁻³ on the L2 length of the unit-L2 ray) and it replaces the best ray when shorter.
//!
//! The first ray is all +1 for untargeted goals (as in the paper) and is queried before any flip.
//! While no ray reaches the goal, further first rays are tried, one query each (its point at the
//! box width, a corner of the box): random signs (up to 100) and rays towards earlier samples of
//! the run with another label (see [`super`]). Targeted goals try rays towards earlier
//! samples of the target class first (nearest first), then all +1 and random signs. The ray
//! towards a point is +1 where the point is larger than `x0`, -1 where smaller, and towards the
//! nearer box face where equal. If every first ray fails, the hierarchical search flips blocks of
//! the all +1 ray, each flip checked at the box width, as in the paper.
//!
//! Budget: [`RAYS_QUERIES`] = 10,000 queries per sample by default (the paper's query limit),
//! `threat.budget.queries` overrides it; no sample ever exceeds it. Early stopping as in the
//! paper: without `minimize` a sample stops as soon as `r*` (hence the best point's norm) is at
//! most ε. The minimum-norm contract of [`crate::attack::min_norm`] decides what is returned.
use super::{Search, Settings, Space, Subject, NOISE_TRIES};
use crate::attack::check_norm;
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, SampleSource};
use crate::error::Result;
use crate::model::{LabelOracle, PredictionsOf, QueryLog};
use crate::threat::ThreatModel;

/// Query budget per sample when the threat model does not set one.
pub const RAYS_QUERIES: usize = 10_000;

/// Radius bisection precision, on the L2 length of the unit-L2 ray (the paper's).
const TOLERANCE: f64 = 1e-3;

const STREAM_RANDOM_RAY: u64 = 80;

/// RayS parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaysConfig {
    /// Model queries per sample.
    pub queries: usize,
    /// Radius bisection precision (L2 length along the unit ray).
    pub tolerance: f64,
    /// Keep searching for the whole budget (ε-curves) instead of stopping within ε.
    pub minimize: bool,
}

/// RayS (see the module docs).
#[derive(Debug, Clone)]
pub struct Rays {
    /// Parameters.
    pub config: RaysConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Rays {
    /// RayS for an L∞ `threat`; the budget is `threat.budget.queries` (default 10,000).
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        check_norm("rays", threat.norm)?;
        let queries = threat.query_budget(RAYS_QUERIES)?;
        Ok(Rays {
            config: RaysConfig { queries, tolerance: TOLERANCE, minimize: options.minimize },
            log: options.query_log.clone(),
        })
    }

    /// Runs the attack on a label-only oracle: every sample of `source` is attacked and handed
    /// to `sink`. This is the whole attack; [`Attack::run`] calls it with [`PredictionsOf`].
    pub fn run_oracle(
        &self,
        oracle: &LabelOracle<'_>,
        threat: &ThreatModel,
        seed: u64,
        batch_size: usize,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        check_norm("rays", threat.norm)?;
        let settings =
            Settings { name: "rays", threat, seed, batch_size, minimize: self.config.minimize };
        super::run(&RaysSearch { config: &self.config }, oracle, &settings, source, sink)
    }
}

impl Attack for Rays {
    fn name(&self) -> &'static str {
        "rays"
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
        let labels = PredictionsOf(ctx.model);
        let oracle =
            LabelOracle::new("rays", &labels, self.config.queries as u64, self.log.clone());
        self.run_oracle(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

struct RaysSearch<'a> {
    config: &'a RaysConfig,
}

/// A first ray to try before the hierarchical search has a ray that reaches the goal.
#[derive(Debug, Clone, Copy)]
enum Initial {
    /// All +1 (the paper's first ray).
    Ones,
    /// Towards earlier sample `k` of the run (see [`super`]).
    Gallery(usize),
    /// Random signs, draw `k`.
    Random(usize),
}

/// The ray being tried: its signs and, once its check succeeded, the radius bracket.
struct Attempt {
    signs: Vec<f32>,
    bracket: Option<(f64, f64)>,
    initial: bool,
}

struct State {
    /// First rays still to try while no ray reaches the goal.
    initial: Vec<Initial>,
    next_initial: usize,
    /// Signs of the best ray so far.
    signs: Vec<f32>,
    /// Its radius (infinite until a ray reached the goal).
    radius: f64,
    /// Hierarchy level (2^level blocks) and block of the next flip.
    level: u32,
    block: usize,
    attempt: Option<Attempt>,
}

impl RaysSearch<'_> {
    /// The point at radius `r` along the ray `signs`.
    fn at(subject: &Subject, space: &Space, signs: &[f32], r: f64) -> Vec<f32> {
        space.point(subject.x0.iter().zip(signs).map(|(&x, &s)| x as f64 + r * s as f64))
    }

    /// The best ray with the next block flipped; advances the hierarchy.
    fn next_flip(state: &mut State, d: usize) -> Vec<f32> {
        let blocks = 1usize << state.level.min(usize::BITS - 2);
        let size = d.div_ceil(blocks).max(1);
        let start = (state.block * size).min(d);
        let end = ((state.block + 1) * size).min(d);
        let mut signs = state.signs.clone();
        signs[start..end].iter_mut().for_each(|s| *s = -*s);
        state.block += 1;
        if state.block >= blocks || end >= d {
            state.block = 0;
            state.level = if size <= 1 { 0 } else { state.level + 1 };
        }
        signs
    }

    /// The signs of a first ray.
    fn initial_signs(initial: Initial, subject: &Subject, space: &Space) -> Vec<f32> {
        match initial {
            Initial::Ones => vec![1.0; space.d],
            Initial::Gallery(k) => signs_towards(subject, space, &subject.gallery()[k]),
            Initial::Random(k) => subject
                .key
                .step(k)
                .stream(STREAM_RANDOM_RAY)
                .uniform(space.d)
                .into_iter()
                .map(|u| if u < 0.5 { -1.0 } else { 1.0 })
                .collect(),
        }
    }

    /// Radius of a check: the best radius, at most the box width (every value at a face).
    fn check_radius(state: &State, space: &Space) -> f64 {
        state.radius.min(space.width())
    }

    fn tolerance(&self, space: &Space) -> f64 {
        self.config.tolerance * space.width() / (space.d as f64).sqrt()
    }
}

/// The ray from `x0` towards `start`: +1 where `start` is larger, -1 where smaller, towards the
/// nearer box face where they are equal.
fn signs_towards(subject: &Subject, space: &Space, start: &[f32]) -> Vec<f32> {
    let middle = 0.5 * (space.lo as f64 + space.hi as f64);
    subject
        .x0
        .iter()
        .zip(start)
        .map(|(&x, &s)| {
            if s > x {
                1.0
            } else if s < x || (x as f64) < middle {
                -1.0
            } else {
                1.0
            }
        })
        .collect()
}

impl Search for RaysSearch<'_> {
    type State = State;

    fn begin(&self, subject: &Subject, space: &Space) -> State {
        let gallery = (0..subject.gallery().len()).map(Initial::Gallery);
        let random = (0..NOISE_TRIES).map(Initial::Random);
        let initial: Vec<Initial> = if subject.target.is_some() {
            gallery.chain(std::iter::once(Initial::Ones)).chain(random).collect()
        } else {
            std::iter::once(Initial::Ones).chain(random).chain(gallery).collect()
        };
        State {
            initial,
            next_initial: 0,
            signs: vec![1.0; space.d],
            radius: f64::INFINITY,
            level: 0,
            block: 0,
            attempt: None,
        }
    }

    fn propose(
        &self,
        state: &mut State,
        subject: &mut Subject,
        space: &Space,
        _budget_left: u64,
        _limit: usize,
        out: &mut Vec<f32>,
    ) -> usize {
        let attempt = match state.attempt.take() {
            Some(a) => a,
            None => {
                subject.iteration += 1;
                if state.radius.is_infinite() && state.next_initial < state.initial.len() {
                    let first = state.initial[state.next_initial];
                    let signs = Self::initial_signs(first, subject, space);
                    Attempt { signs, bracket: None, initial: true }
                } else {
                    Attempt {
                        signs: Self::next_flip(state, space.d),
                        bracket: None,
                        initial: false,
                    }
                }
            }
        };
        let r = match attempt.bracket {
            None => Self::check_radius(state, space),
            Some((lo, hi)) => 0.5 * (lo + hi),
        };
        out.extend(Self::at(subject, space, &attempt.signs, r));
        state.attempt = Some(attempt);
        1
    }

    fn absorb(
        &self,
        state: &mut State,
        _subject: &mut Subject,
        space: &Space,
        _points: &[f32],
        adversarial: &[bool],
    ) {
        let Some(mut attempt) = state.attempt.take() else { return };
        let tolerance = self.tolerance(space);
        let (lo, hi) = match attempt.bracket {
            None if adversarial[0] => (0.0, Self::check_radius(state, space)),
            None => {
                if attempt.initial {
                    state.next_initial += 1;
                }
                return;
            }
            Some((lo, hi)) => {
                let mid = 0.5 * (lo + hi);
                if adversarial[0] {
                    (lo, mid)
                } else {
                    (mid, hi)
                }
            }
        };
        if hi - lo > tolerance {
            attempt.bracket = Some((lo, hi));
            state.attempt = Some(attempt);
        } else if hi < state.radius {
            state.radius = hi;
            state.signs = attempt.signs;
        }
    }
}
