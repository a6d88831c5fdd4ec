//! The Boundary attack (Brendel, Rauber & Bethge 2018, "Decision-Based Adversarial Attacks:
//! Reliable Attacks Against Black-Box Machine Learning Models"), L2, untargeted and targeted.
//!
//! A decision-based minimum-norm attack: it sees predicted labels only (a [`LabelOracle`]). From
//! an adversarial start point (see [`super`]: uniform noise or an earlier sample,
//! bisected towards the clean input to 10⁻³ of the segment) it walks along the boundary: every
//! step draws a Gaussian direction orthogonal to `x0 - x`, scales it to `spherical_step·‖x0 - x‖`
//! and projects back onto the sphere around `x0` (the orthogonal step), then moves
//! `source_step·‖x0 - x‖` towards `x0` (the source step); the candidate replaces the current
//! point when it is adversarial and closer. Every 10th step the orthogonal candidate alone is
//! queried too, for the success statistics that adapt both step sizes (by `step_adaptation`):
//! over the last 100 orthogonal candidates, a success rate above 0.5 grows both steps and below
//! 0.2 shrinks them; over the last 30 candidates, above 0.25 grows the source step and below 0.1
//! shrinks it. The walk has converged when the source step falls below 10⁻⁷.
//!
//! This is the scheme of Foolbox 3's reference implementation, with its constants: spherical
//! step 0.01, source step 0.01, step adaptation 1.5, statistics every 10 steps. Queries: one per
//! step, two every 10th step. Budget: [`BOUNDARY_QUERIES`] = 25,000 queries per sample by default
//! (Foolbox's 25,000 steps take about 27,500), `threat.budget.queries` overrides it; no sample
//! ever exceeds it. The minimum-norm contract of [`crate::attack::min_norm`] decides what is returned;
//! without `minimize` a sample stops as soon as it holds an adversarial point within ε.
use super::{Search, Settings, Space, StartSearch, StartStatus, Subject};
use crate::attack::check_norm;
use crate::attack::host::l2_norm;
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, SampleSource};
use crate::error::Result;
use crate::model::{LabelOracle, PredictionsOf, QueryLog};
use crate::threat::ThreatModel;
use std::collections::VecDeque;

/// Query budget per sample when the threat model does not set one.
pub const BOUNDARY_QUERIES: usize = 25_000;

/// Start-point bisection precision (a fraction of the segment).
const START_TOLERANCE: f64 = 1e-3;

/// Orthogonal candidates remembered for the step-size statistics.
const SPHERICAL_WINDOW: usize = 100;

/// Candidates remembered for the source-step statistics.
const STEP_WINDOW: usize = 30;

const STREAM_ORTHOGONAL: u64 = 70;

/// Boundary attack parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundaryConfig {
    /// Model queries per sample.
    pub queries: usize,
    /// Initial orthogonal step, relative to the distance to the clean input.
    pub spherical_step: f64,
    /// Initial step towards the clean input, relative to the distance.
    pub source_step: f64,
    /// Factor by which the step sizes grow or shrink.
    pub step_adaptation: f64,
    /// The walk stops when the source step falls below this.
    pub convergence: f64,
    /// Steps between two checks of the orthogonal candidate (and step-size updates).
    pub stats_every: usize,
    /// Keep searching for the whole budget (ε-curves) instead of stopping within ε.
    pub minimize: bool,
}

/// The Boundary attack (see the module docs).
#[derive(Debug, Clone)]
pub struct Boundary {
    /// Parameters.
    pub config: BoundaryConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Boundary {
    /// The Boundary attack for an L2 `threat`; the budget is `threat.budget.queries` (default
    /// 25,000).
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        check_norm("boundary", threat.norm)?;
        let queries = threat.query_budget(BOUNDARY_QUERIES)?;
        Ok(Boundary {
            config: BoundaryConfig {
                queries,
                spherical_step: 0.01,
                source_step: 0.01,
                step_adaptation: 1.5,
                convergence: 1e-7,
                stats_every: 10,
                minimize: options.minimize,
            },
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
        check_norm("boundary", threat.norm)?;
        let settings =
            Settings { name: "boundary", threat, seed, batch_size, minimize: self.config.minimize };
        super::run(&BoundarySearch { config: &self.config }, oracle, &settings, source, sink)
    }
}

impl Attack for Boundary {
    fn name(&self) -> &'static str {
        "boundary"
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
            LabelOracle::new("boundary", &labels, self.config.queries as u64, self.log.clone());
        self.run_oracle(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

struct BoundarySearch<'a> {
    config: &'a BoundaryConfig,
}

struct Walk {
    current: Vec<f32>,
    spherical_step: f64,
    source_step: f64,
    /// Steps taken (the next one is `step + 1`).
    step: usize,
    spherical_stats: VecDeque<bool>,
    step_stats: VecDeque<bool>,
}

enum State {
    Start(StartSearch),
    Walk(Walk),
    Over,
}

/// Success rate of a full window, `None` while it fills.
fn full_rate(window: &VecDeque<bool>, size: usize) -> Option<f64> {
    (window.len() >= size).then(|| window.iter().filter(|&&s| s).count() as f64 / size as f64)
}

fn push(window: &mut VecDeque<bool>, size: usize, value: bool) {
    if window.len() == size {
        window.pop_front();
    }
    window.push_back(value);
}

impl BoundarySearch<'_> {
    /// The candidate (orthogonal step then source step) and the orthogonal candidate alone.
    fn proposals(&self, walk: &Walk, subject: &Subject, space: &Space) -> (Vec<f32>, Vec<f32>) {
        let x0: Vec<f64> = subject.x0.iter().map(|&v| v as f64).collect();
        let source: Vec<f64> = x0.iter().zip(&walk.current).map(|(a, &b)| a - b as f64).collect();
        let rho = l2_norm(&source);
        let unit: Vec<f64> = source.iter().map(|v| v / rho).collect();
        let mut eta = subject.key.step(walk.step + 1).stream(STREAM_ORTHOGONAL).normal(space.d);
        let along: f64 = eta.iter().zip(&unit).map(|(e, u)| e * u).sum();
        eta.iter_mut().zip(&unit).for_each(|(e, u)| *e -= along * u);
        let scale = walk.spherical_step * rho / l2_norm(&eta).max(f64::MIN_POSITIVE);
        let shrink = (walk.spherical_step * walk.spherical_step + 1.0).sqrt();
        let (lo, hi) = (space.lo as f64, space.hi as f64);
        let spherical: Vec<f64> = x0
            .iter()
            .zip(eta.iter().zip(&source))
            .map(|(x, (e, s))| (x + (e * scale - s) / shrink).clamp(lo, hi))
            .collect();
        let towards: Vec<f64> = x0.iter().zip(&spherical).map(|(x, s)| x - s).collect();
        let remaining = l2_norm(&towards);
        let length = (walk.source_step * rho + remaining - rho).max(0.0);
        let fraction = if remaining > 0.0 { length / remaining } else { 0.0 };
        let candidate = space.point(spherical.iter().zip(&towards).map(|(s, t)| s + fraction * t));
        (candidate, space.point(spherical))
    }

    fn checks_spherical(&self, walk: &Walk) -> bool {
        (walk.step + 1).is_multiple_of(self.config.stats_every.max(1))
    }

    fn adapt(&self, walk: &mut Walk) {
        let factor = self.config.step_adaptation;
        if let Some(rate) = full_rate(&walk.spherical_stats, SPHERICAL_WINDOW) {
            if rate > 0.5 {
                walk.spherical_step *= factor;
                walk.source_step *= factor;
                walk.spherical_stats.clear();
            } else if rate < 0.2 {
                walk.spherical_step /= factor;
                walk.source_step /= factor;
                walk.spherical_stats.clear();
            }
        }
        if let Some(rate) = full_rate(&walk.step_stats, STEP_WINDOW) {
            if rate > 0.25 {
                walk.source_step *= factor;
                walk.step_stats.clear();
            } else if rate < 0.1 {
                walk.source_step /= factor;
                walk.step_stats.clear();
            }
        }
    }
}

impl Search for BoundarySearch<'_> {
    type State = State;

    fn begin(&self, subject: &Subject, _space: &Space) -> State {
        State::Start(StartSearch::new(subject, Some(START_TOLERANCE)))
    }

    fn propose(
        &self,
        state: &mut State,
        subject: &mut Subject,
        space: &Space,
        budget_left: u64,
        _limit: usize,
        out: &mut Vec<f32>,
    ) -> usize {
        match state {
            State::Over => 0,
            State::Start(start) => {
                start.propose(subject, space, out);
                1
            }
            State::Walk(walk) => {
                if walk.source_step < self.config.convergence {
                    *state = State::Over;
                    return 0;
                }
                subject.iteration = walk.step + 1;
                let (candidate, spherical) = self.proposals(walk, subject, space);
                out.extend(candidate);
                if self.checks_spherical(walk) && budget_left >= 2 {
                    out.extend(spherical);
                    2
                } else {
                    1
                }
            }
        }
    }

    fn absorb(
        &self,
        state: &mut State,
        subject: &mut Subject,
        space: &Space,
        points: &[f32],
        adversarial: &[bool],
    ) {
        match state {
            State::Over => {}
            State::Start(start) => {
                start.absorb(subject, points, adversarial[0]);
                match start.status() {
                    StartStatus::Searching => {}
                    StartStatus::Failed => *state = State::Over,
                    StartStatus::Found(x) => {
                        *state = State::Walk(Walk {
                            current: x,
                            spherical_step: self.config.spherical_step,
                            source_step: self.config.source_step,
                            step: 0,
                            spherical_stats: VecDeque::with_capacity(SPHERICAL_WINDOW),
                            step_stats: VecDeque::with_capacity(STEP_WINDOW),
                        })
                    }
                }
            }
            State::Walk(walk) => {
                let candidate = &points[..space.d];
                if adversarial[0]
                    && space.distance(&subject.x0, candidate)
                        < space.distance(&subject.x0, &walk.current)
                {
                    walk.current = candidate.to_vec();
                }
                if adversarial.len() == 2 {
                    push(&mut walk.spherical_stats, SPHERICAL_WINDOW, adversarial[1]);
                    push(&mut walk.step_stats, STEP_WINDOW, adversarial[0]);
                    self.adapt(walk);
                }
                walk.step += 1;
            }
        }
    }
}
