//! HopSkipJump (Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient
//! Decision-Based Attack"), L2 and L∞ (the threat model's norm), untargeted and targeted.
//!
//! A decision-based minimum-norm attack: it sees predicted labels only (a [`LabelOracle`]). From
//! an adversarial start point (see [`super`]: uniform noise or an earlier sample,
//! bisected towards the clean input) every iteration `k = 1, 2, ...`
//! 1. estimates the direction of the boundary's normal at the current boundary point `x_b` from
//!    `n_k = min(100·√k, 10,000)` probes `x_b + δ·u` (u uniform on the L2 sphere, from Gaussian
//!    draws for L2 and from uniform draws in [-1, 1]^d for L∞, as in the authors' code), with the
//!    ±1 answers centred by their mean (the paper's baseline);
//! 2. steps along it (L2: the unit estimate; L∞: its sign) with the geometric step-size search:
//!    `ξ = ‖x_b - x0‖/√k`, halved until the step is adversarial (at most 30 halvings);
//! 3. bisects back towards the clean input: along the segment for L2, over the radius of the
//!    L∞ ball for L∞.
//!
//! Constants as in the paper and the authors' code (also Foolbox's): γ = 1, bisection threshold
//! θ = γ·d^{-3/2} (L2, a fraction of the segment) or θ = γ·d^{-2} (L∞, at most θ·‖x_b - x0‖∞ wide),
//! probe radius δ = √d·θ·‖x_b - x0‖₂ (L2) or d·θ·‖x_b - x0‖∞ (L∞), and δ = 0.1·(box width) in
//! the first iteration. For L2 the start point is bisected to precision θ at once; for L∞ to 10⁻³
//! of the segment, then over the L∞ radius.
//!
//! Budget: [`HSJ_QUERIES`] = 25,000 queries per sample by default (`threat.budget.queries`
//! overrides it), about ART's 50 iterations. A gradient estimate is shortened so that the step
//! search and the bisection after it still fit in the budget (the expected ⌈log₂(1/θ)⌉ + 2
//! queries); a sample stops when not even that is left. Every query is charged to its sample
//! and no sample ever exceeds its budget. The minimum-norm contract of [`crate::attack::min_norm`] decides
//! what is returned; without `minimize` a sample stops as soon as it holds an adversarial point
//! within ε.
use super::{Bisection, Path, Search, Settings, Space, StartSearch, StartStatus, Subject};
use crate::attack::check_norm;
use crate::attack::host::{l2_norm, normalize, sign};
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, SampleSource};
use crate::error::Result;
use crate::model::{LabelOracle, PredictionsOf, QueryLog};
use crate::threat::{Norm, ThreatModel};

/// Query budget per sample when the threat model does not set one.
pub const HSJ_QUERIES: usize = 25_000;

/// Gradient-estimation probes of the first iteration (grows with √iteration).
pub const HSJ_INITIAL_EVALS: usize = 100;

/// Most gradient-estimation probes of one iteration.
pub const HSJ_MAX_EVALS: usize = 10_000;

/// The paper's γ (bisection threshold and probe radius scale).
const GAMMA: f64 = 1.0;

/// Start-point bisection precision for L∞ (a fraction of the segment, as in the authors' code).
const LINF_START_TOLERANCE: f64 = 1e-3;

/// Most halvings of the step size in one iteration.
const MAX_HALVINGS: usize = 30;

/// Fewest probes worth a gradient estimate when the budget runs out.
const MIN_EVALS: usize = 1;

/// Random streams: one per gradient probe, offset far from other streams.
const STREAM_GRADIENT: u64 = 1 << 32;

/// HopSkipJump parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HsjConfig {
    /// Model queries per sample.
    pub queries: usize,
    /// Gradient-estimation probes in iteration 1 (×√k in iteration k).
    pub initial_evals: usize,
    /// Most gradient-estimation probes per iteration.
    pub max_evals: usize,
    /// The paper's γ.
    pub gamma: f64,
    /// Keep searching for the whole budget (ε-curves) instead of stopping within ε.
    pub minimize: bool,
}

/// HopSkipJump (see the module docs).
#[derive(Debug, Clone)]
pub struct Hsj {
    /// Parameters.
    pub config: HsjConfig,
    /// Where every batch of queries is recorded, if anywhere.
    pub log: Option<QueryLog>,
}

impl Hsj {
    /// HopSkipJump for `threat` (L2 or L∞); the budget is `threat.budget.queries` (default
    /// 25,000).
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        check_norm("hsj", threat.norm)?;
        let queries = threat.query_budget(HSJ_QUERIES)?;
        Ok(Hsj {
            config: HsjConfig {
                queries,
                initial_evals: HSJ_INITIAL_EVALS,
                max_evals: HSJ_MAX_EVALS,
                gamma: GAMMA,
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
        check_norm("hsj", threat.norm)?;
        let settings =
            Settings { name: "hsj", threat, seed, batch_size, minimize: self.config.minimize };
        super::run(&HsjSearch { config: &self.config }, oracle, &settings, source, sink)
    }
}

impl Attack for Hsj {
    fn name(&self) -> &'static str {
        "hsj"
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
        let oracle = LabelOracle::new("hsj", &labels, self.config.queries as u64, self.log.clone());
        self.run_oracle(&oracle, ctx.threat, ctx.seed, ctx.batch_size, source, sink)
    }
}

struct HsjSearch<'a> {
    config: &'a HsjConfig,
}

/// A gradient estimate in progress (its probes may be spread over several rounds).
struct Gradient {
    /// Probes planned (0 until the first proposal).
    evals: usize,
    asked: usize,
    answered: usize,
    delta: f64,
    positives: usize,
    /// Σ f·u and Σ u over the answered probes (f = ±1).
    sum_fu: Vec<f64>,
    sum_u: Vec<f64>,
}

enum Phase {
    Start(StartSearch),
    Bisect(Bisection),
    Gradient(Gradient),
    Step { epsilon: f64, update: Vec<f64>, halvings: usize },
    Over,
}

struct State {
    phase: Phase,
    /// The current boundary point (adversarial).
    current: Vec<f32>,
    /// Completed iterations.
    iteration: usize,
}

impl HsjSearch<'_> {
    fn theta(&self, space: &Space) -> f64 {
        let d = space.d as f64;
        match space.norm {
            Norm::Linf => self.config.gamma / (d * d),
            _ => self.config.gamma / (d * d.sqrt()),
        }
    }

    /// Queries a step search and the bisection after it are expected to take.
    fn reserve(&self, space: &Space) -> u64 {
        (1.0 / self.theta(space)).log2().ceil() as u64 + 2
    }

    /// The bisection from an adversarial point back towards the clean input.
    fn bisection(&self, subject: &Subject, space: &Space, far: Vec<f32>) -> Bisection {
        let theta = self.theta(space);
        match space.norm {
            Norm::Linf => {
                let dist = space.distance(&subject.x0, &far);
                Bisection::new(&subject.x0, far, Path::LinfBall, (dist * theta).min(theta))
            }
            _ => Bisection::new(&subject.x0, far, Path::Segment, theta),
        }
    }

    /// The phase after reaching the boundary point `current`.
    fn next_iteration(state: &mut State, subject: &mut Subject, space: &Space) {
        state.phase = Phase::Gradient(Gradient {
            evals: 0,
            asked: 0,
            answered: 0,
            delta: 0.0,
            positives: 0,
            sum_fu: vec![0.0; space.d],
            sum_u: vec![0.0; space.d],
        });
        subject.iteration = state.iteration + 1;
    }

    /// The unit probe direction `j` of iteration `k`.
    fn direction(subject: &Subject, space: &Space, k: usize, j: usize) -> Vec<f64> {
        let key = subject.key.step(k).stream(STREAM_GRADIENT + j as u64);
        let mut u = match space.norm {
            Norm::Linf => key.uniform(space.d).into_iter().map(|v| 2.0 * v - 1.0).collect(),
            _ => key.normal(space.d),
        };
        normalize(&mut u);
        u
    }
}

impl Search for HsjSearch<'_> {
    type State = State;

    fn begin(&self, subject: &Subject, space: &Space) -> State {
        let tolerance = match space.norm {
            Norm::Linf => LINF_START_TOLERANCE,
            _ => self.theta(space),
        };
        State {
            phase: Phase::Start(StartSearch::new(subject, Some(tolerance))),
            current: Vec::new(),
            iteration: 0,
        }
    }

    fn propose(
        &self,
        state: &mut State,
        subject: &mut Subject,
        space: &Space,
        budget_left: u64,
        limit: usize,
        out: &mut Vec<f32>,
    ) -> usize {
        match &mut state.phase {
            Phase::Over => 0,
            Phase::Start(start) => {
                start.propose(subject, space, out);
                1
            }
            Phase::Bisect(b) => {
                out.extend(b.probe(&subject.x0, space));
                1
            }
            Phase::Step { epsilon, update, .. } => {
                let eps = *epsilon;
                out.extend(space.point(
                    state.current.iter().zip(update.iter()).map(|(&x, &u)| x as f64 + eps * u),
                ));
                1
            }
            Phase::Gradient(g) => {
                let k = state.iteration + 1;
                if g.evals == 0 {
                    let wanted = ((self.config.initial_evals as f64 * (k as f64).sqrt()) as usize)
                        .min(self.config.max_evals)
                        .max(1);
                    let affordable = budget_left.saturating_sub(self.reserve(space));
                    let evals = (wanted as u64).min(affordable) as usize;
                    if evals < MIN_EVALS {
                        state.phase = Phase::Over;
                        return 0;
                    }
                    g.evals = evals;
                    let dist = space.distance(&subject.x0, &state.current);
                    let theta = self.theta(space);
                    let d = space.d as f64;
                    g.delta = if k == 1 {
                        0.1 * space.width()
                    } else {
                        match space.norm {
                            Norm::Linf => d * theta * dist,
                            _ => d.sqrt() * theta * dist,
                        }
                    };
                }
                let count = (g.evals - g.asked).min(limit);
                for j in g.asked..g.asked + count {
                    let u = Self::direction(subject, space, k, j);
                    out.extend(space.point(
                        state.current.iter().zip(&u).map(|(&x, &v)| x as f64 + g.delta * v),
                    ));
                }
                g.asked += count;
                count
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
        match &mut state.phase {
            Phase::Over => {}
            Phase::Start(start) => {
                start.absorb(subject, points, adversarial[0]);
                match start.status() {
                    StartStatus::Searching => {}
                    StartStatus::Failed => state.phase = Phase::Over,
                    StartStatus::Found(x) => {
                        if space.norm == Norm::Linf {
                            state.phase = Phase::Bisect(self.bisection(subject, space, x));
                        } else {
                            state.current = x;
                            Self::next_iteration(state, subject, space);
                        }
                    }
                }
            }
            Phase::Bisect(b) => {
                b.absorb(points, adversarial[0]);
                if b.done() {
                    state.current = b.best.clone();
                    Self::next_iteration(state, subject, space);
                }
            }
            Phase::Step { epsilon, halvings, .. } => {
                if adversarial[0] {
                    state.iteration += 1;
                    state.phase = Phase::Bisect(self.bisection(subject, space, points.to_vec()));
                } else {
                    *epsilon /= 2.0;
                    *halvings += 1;
                    if *halvings > MAX_HALVINGS {
                        state.iteration += 1;
                        Self::next_iteration(state, subject, space);
                    }
                }
            }
            Phase::Gradient(g) => {
                for (probe, &adv) in points.chunks(space.d).zip(adversarial) {
                    let f = if adv { 1.0 } else { -1.0 };
                    for ((sfu, su), (&p, &c)) in g
                        .sum_fu
                        .iter_mut()
                        .zip(g.sum_u.iter_mut())
                        .zip(probe.iter().zip(&state.current))
                    {
                        // The probe as it was clipped to the box, in units of δ.
                        let u = (p as f64 - c as f64) / g.delta;
                        *sfu += f * u;
                        *su += u;
                    }
                    g.positives += adv as usize;
                }
                g.answered += adversarial.len();
                if g.answered < g.evals {
                    return;
                }
                let n = g.evals as f64;
                let mean_f = (2.0 * g.positives as f64 - n) / n;
                let gradient: Vec<f64> = if g.positives == g.evals {
                    g.sum_u.iter().map(|s| s / n).collect()
                } else if g.positives == 0 {
                    g.sum_u.iter().map(|s| -s / n).collect()
                } else {
                    g.sum_fu.iter().zip(&g.sum_u).map(|(fu, u)| (fu - mean_f * u) / n).collect()
                };
                let length = l2_norm(&gradient);
                if !(length > 0.0 && length.is_finite()) {
                    state.iteration += 1;
                    Self::next_iteration(state, subject, space);
                    return;
                }
                let update: Vec<f64> = match space.norm {
                    Norm::Linf => gradient.iter().map(|&v| sign(v)).collect(),
                    _ => gradient.iter().map(|v| v / length).collect(),
                };
                let k = (state.iteration + 1) as f64;
                let dist = space.distance(&subject.x0, &state.current);
                state.phase = Phase::Step { epsilon: dist / k.sqrt(), update, halvings: 0 };
            }
        }
    }
}
