//! Carlini & Wagner L2 (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
//! Networks").
//!
//! The input is written as `x = lo + (hi - lo)·(tanh(w) + 1)/2`, so every `w` maps into the box,
//! and Adam minimizes `‖x - x₀‖₂² + c·max(m(x), -κ)` over `w`, where `m` is the margin
//! `z_y - max_{j≠y} z_j` (untargeted) or `max_{j≠t} z_j - z_t` (targeted). A binary search over
//! `c` follows: after a run that found an adversarial point `c` moves down (bisection between
//! the bounds), otherwise up (×10 until an upper bound exists). Each run restarts from the clean
//! input with a fresh Adam state; a run aborts early when the loss has not decreased by 0.01%
//! over a tenth of its steps (as in the paper's code). Adam (β₁ 0.9, β₂ 0.999, 1e-8) runs on the
//! per-sample variable only.
//!
//! Defaults: 9 binary-search steps, up to 1,000 Adam steps per run (`--steps`), learning rate
//! 0.01 (`--alpha`), initial c 0.01, κ 0. The paper and Foolbox use 10,000 steps at learning rate
//! 0.01 (initial c 0.001); thanks to the early abort most runs stop long before their budget
//! (about 2,000 Adam steps per sample over all 9 runs on a linear model). With these defaults C&W
//! lands within 0.06% of the exact minimal L2 distance of a linear model; with fewer steps
//! (e.g. `--steps 100 --alpha 0.05`) it is ~10× cheaper and lands within ~1%. Pixels at the ends
//! of the box sit where tanh is saturated (a pixel at 0 starts at w ≈ -7.25 and Adam moves w by
//! about the learning rate per step), so a short budget needs a larger rate. The hinge aims
//! slightly past the boundary (see `HINGE_SLACK`). `tanh`/`atanh` are evaluated row by row
//! ([`rowwise_elementwise`]) so results do not depend on the batch size.
//! One forward/backward pass per Adam step (one query).
//!
//! The ε of the threat model caps what is returned (see [`super`]): without
//! `minimize`, a sample stops at the first adversarial point inside the ε-ball; with it, the
//! whole budget runs and the smallest adversarial point is refined by bisection.
use super::{cat, drive_min_norm, Finisher, Found, Refining, Sample};
use crate::attack::check_norm;
use crate::attack::loss::{margin, success_mask};
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource};
use crate::error::{GibbonError, Result};
use crate::tensor::{per_sample_view, rowwise_elementwise};
use crate::threat::ThreatModel;
use tch::{Kind, Tensor};

/// C&W parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CwConfig {
    /// Runs of the binary search over c (9).
    pub binary_search_steps: usize,
    /// Adam steps per run (1,000).
    pub steps: usize,
    /// Adam learning rate in tanh space (0.01).
    pub learning_rate: f64,
    /// The first c (0.01).
    pub initial_const: f64,
    /// Confidence κ: the margin must reach -κ (0).
    pub kappa: f64,
    /// Stop a run when its loss stalls.
    pub abort_early: bool,
    /// Keep minimizing after the first success inside ε.
    pub minimize: bool,
}

/// Carlini-Wagner L2 with binary search over c.
#[derive(Debug, Clone)]
pub struct Cw {
    /// Parameters.
    pub config: CwConfig,
}

/// C&W's default Adam steps per binary-search run.
pub const CW_STEPS: usize = 1000;

impl Cw {
    /// C&W for an L2 `threat`; `threat.budget.steps` overrides the Adam steps per run.
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        let config = CwConfig {
            binary_search_steps: 9,
            steps: threat.budget.steps_or(CW_STEPS),
            learning_rate: options.alpha.unwrap_or(0.01),
            initial_const: 0.01,
            kappa: options.confidence,
            abort_early: true,
            minimize: options.minimize,
        };
        Cw::with_config(threat, config)
    }

    /// C&W with explicit parameters.
    pub fn with_config(threat: &ThreatModel, config: CwConfig) -> Result<Self> {
        check_norm("cw", threat.norm)?;
        if config.steps == 0 || config.binary_search_steps == 0 {
            return Err(GibbonError::invalid("steps", "must be at least 1"));
        }
        if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
            return Err(GibbonError::invalid("alpha", "the learning rate must be finite and > 0"));
        }
        if !(config.initial_const.is_finite() && config.initial_const > 0.0) {
            return Err(GibbonError::invalid("initial_const", "must be finite and > 0"));
        }
        if !(config.kappa.is_finite() && config.kappa >= 0.0) {
            return Err(GibbonError::invalid("kappa", "must be finite and >= 0"));
        }
        Ok(Cw { config })
    }
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
/// The hinge aims this fraction of the clean margin below -κ: with κ = 0 the optimum of the
/// C&W loss lies exactly on the decision boundary, where a converged run would end on the wrong
/// side half the time; aiming slightly past it makes the converged point adversarial, and the
/// final bisection towards the clean input removes the small excess.
const HINGE_SLACK: f64 = 1e-3;
/// Above this the upper bound on c counts as unknown (the paper's 1e10 start, 1e9 test).
const NO_UPPER_BOUND: f64 = 1e9;

struct Row {
    sample: Sample,
    /// The tanh-space variable at the clean input, its current value and Adam's moments.
    w0: Tensor,
    w: Tensor,
    m: Tensor,
    v: Tensor,
    /// Adam steps in this run.
    inner: usize,
    /// Binary-search run.
    outer: usize,
    /// Adam steps over all runs.
    total_steps: usize,
    c: f64,
    c_lo: f64,
    c_hi: f64,
    /// Margin the hinge aims below: κ plus a thousandth of the clean margin (set on the first
    /// pass, which is at the clean input).
    floor: Option<f64>,
    /// Loss at the last early-abort check.
    checkpoint_loss: f64,
    found_in_run: bool,
    best: Option<(Found, usize, usize)>,
}

impl Attack for Cw {
    fn name(&self) -> &'static str {
        "cw"
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
        let threat = ctx.threat;
        check_norm("cw", threat.norm)?;
        let finisher = Finisher { threat, minimize: self.config.minimize };
        drive_min_norm(
            ctx,
            &finisher,
            source,
            sink,
            |chunk| Ok(self.admit(threat, chunk)),
            |rows, refining, sink| self.step(ctx, &finisher, rows, refining, sink),
        )
    }
}

impl Cw {
    /// The rows of new samples, at the clean input in tanh space.
    fn admit(&self, threat: &ThreatModel, chunk: Chunk) -> Vec<Row> {
        let (lo, hi) = (threat.bounds.lo, threat.bounds.hi);
        let unit = ((&chunk.x.to_kind(Kind::Float) - lo) / (hi - lo) * 2.0 - 1.0) * 0.999999;
        let w0 = rowwise_elementwise(&unit, |t| t.atanh());
        let mut rows = Vec::with_capacity(chunk.indices.len());
        for (i, &index) in chunk.indices.iter().enumerate() {
            let i = i as i64;
            let w0 = w0.narrow(0, i, 1);
            rows.push(Row {
                sample: Sample {
                    index,
                    x0: chunk.x.narrow(0, i, 1),
                    label: chunk.labels.narrow(0, i, 1),
                    target: chunk.targets.as_ref().map(|t| t.narrow(0, i, 1)),
                    queries: 0,
                },
                w: w0.copy(),
                m: w0.zeros_like(),
                v: w0.zeros_like(),
                w0,
                inner: 0,
                outer: 0,
                total_steps: 0,
                c: self.config.initial_const,
                c_lo: 0.0,
                c_hi: f64::INFINITY,
                floor: None,
                checkpoint_loss: f64::INFINITY,
                found_in_run: false,
                best: None,
            });
        }
        rows
    }
}

impl Cw {
    /// One Adam step for every optimizing row; returns the rows still optimizing.
    fn step(
        &self,
        ctx: &AttackContext<'_>,
        finisher: &Finisher<'_>,
        rows: Vec<Row>,
        refining: &mut Vec<Refining>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<Vec<Row>> {
        let threat = ctx.threat;
        let cfg = &self.config;
        let (lo, hi) = (threat.bounds.lo, threat.bounds.hi);
        let w = cat(&rows.iter().map(|r| &r.w).collect::<Vec<_>>());
        let x0 = cat(&rows.iter().map(|r| &r.sample.x0).collect::<Vec<_>>());
        let labels = cat(&rows.iter().map(|r| &r.sample.label).collect::<Vec<_>>());
        let targets: Option<Vec<&Tensor>> = rows.iter().map(|r| r.sample.target.as_ref()).collect();
        let targets = targets.map(|t| cat(&t));
        let view = per_sample_view(&w);
        let device = w.device();
        let consts: Vec<f32> = rows.iter().map(|r| r.c as f32).collect();
        let consts = Tensor::from_slice(&consts).to_device(device);

        let tanh_w = rowwise_elementwise(&w, |t| t.tanh());
        let x = ((&tanh_w + 1.0) * (0.5 * (hi - lo)) + lo).clamp(lo, hi).to_kind(x0.kind());
        let kappa = cfg.kappa;
        let t_ref = targets.as_ref();
        let mut rows = rows;
        if rows.iter().any(|r| r.floor.is_none()) {
            // The first pass of a row is at w0, i.e. at the clean input.
            let clean: Vec<f64> = Vec::try_from(
                margin(&ctx.model.logits(&x)?, &labels, t_ref).to_kind(Kind::Double),
            )?;
            for (row, m) in rows.iter_mut().zip(clean) {
                if row.floor.is_none() {
                    row.sample.queries += 1;
                    row.floor = Some(-(kappa + HINGE_SLACK * m.abs()));
                }
            }
        }
        let floors: Vec<f32> = rows.iter().map(|r| r.floor.unwrap_or(-kappa) as f32).collect();
        let floors = Tensor::from_slice(&floors).to_device(device);
        let objective = |logits: &Tensor| margin(logits, &labels, t_ref).maximum(&floors) * &consts;
        let (hinge, logits, grad_x) = ctx.model.loss_and_input_grad(&x, &objective)?;
        let diff = (&x - &x0).to_kind(Kind::Float);
        let loss =
            diff.square().flatten(1, -1).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                + hinge.to_kind(Kind::Float);
        let adversarial = success_mask(&logits, &labels, t_ref)
            .logical_and(&margin(&logits, &labels, t_ref).le(-kappa));
        let adversarial: Vec<bool> = Vec::try_from(adversarial)?;
        let losses: Vec<f64> = Vec::try_from(loss.to_kind(Kind::Double))?;
        let norms: Vec<f64> = Vec::try_from(threat.distance(&x0, &x))?;

        // Adam on w: d/dw of the loss through x(w).
        let grad_w = (grad_x.to_kind(Kind::Float) + &diff * 2.0)
            * ((tanh_w.square() * -1.0 + 1.0) * (0.5 * (hi - lo)));
        let m =
            cat(&rows.iter().map(|r| &r.m).collect::<Vec<_>>()) * BETA1 + &grad_w * (1.0 - BETA1);
        let v = cat(&rows.iter().map(|r| &r.v).collect::<Vec<_>>()) * BETA2
            + grad_w.square() * (1.0 - BETA2);
        let correction = |beta: f64| -> Tensor {
            let c: Vec<f32> =
                rows.iter().map(|r| (1.0 - beta.powi(r.inner as i32 + 1)) as f32).collect();
            Tensor::from_slice(&c).to_device(device).view(view.as_slice())
        };
        let m_hat = &m / correction(BETA1);
        let v_hat = &v / correction(BETA2);
        let w_next = &w - m_hat / (v_hat.sqrt() + ADAM_EPS) * cfg.learning_rate;

        let check_every = (cfg.steps / 10).max(1);
        let mut optimizing = Vec::with_capacity(rows.len());
        for (i, mut row) in rows.into_iter().enumerate() {
            let k = i as i64;
            row.sample.queries += 1;
            if adversarial[i] {
                row.found_in_run = true;
                let better = row.best.as_ref().is_none_or(|(b, _, _)| norms[i] < b.norm);
                if better {
                    let found = Found { x: x.narrow(0, k, 1), norm: norms[i] };
                    row.best = Some((found, row.total_steps, row.outer));
                }
                if !cfg.minimize && norms[i] <= threat.eps {
                    // The best point observed is inside the ball: return it.
                    if let Some((found, step, run)) = row.best.take() {
                        finisher.admit(row.sample, found, step, run, refining, sink)?;
                    }
                    continue;
                }
            }
            // Early abort: the loss did not decrease over the last tenth of the run.
            let mut end_run = false;
            if cfg.abort_early && row.inner % check_every == 0 {
                if losses[i] > row.checkpoint_loss * 0.9999 {
                    end_run = true;
                }
                row.checkpoint_loss = losses[i];
            }
            row.inner += 1;
            row.total_steps += 1;
            if row.inner >= cfg.steps {
                end_run = true;
            }
            if !end_run {
                row.w = w_next.narrow(0, k, 1);
                row.m = m.narrow(0, k, 1);
                row.v = v.narrow(0, k, 1);
                optimizing.push(row);
                continue;
            }
            // Binary search over c.
            if row.found_in_run {
                row.c_hi = row.c_hi.min(row.c);
            } else {
                row.c_lo = row.c_lo.max(row.c);
            }
            row.c =
                if row.c_hi < NO_UPPER_BOUND { 0.5 * (row.c_lo + row.c_hi) } else { row.c * 10.0 };
            row.outer += 1;
            if row.outer < cfg.binary_search_steps {
                row.w = row.w0.copy();
                row.m = row.w0.zeros_like();
                row.v = row.w0.zeros_like();
                row.inner = 0;
                row.checkpoint_loss = f64::INFINITY;
                row.found_in_run = false;
                optimizing.push(row);
                continue;
            }
            match row.best.take() {
                Some((found, step, run)) => {
                    finisher.admit(row.sample, found, step, run, refining, sink)?
                }
                None => sink(AttackRecord {
                    index: row.sample.index,
                    x_adv: row.sample.x0.squeeze_dim(0),
                    claimed_success: false,
                    step: None,
                    restart: row.outer - 1,
                    queries: row.sample.queries,
                    min_norm: None,
                })?,
            }
        }
        Ok(optimizing)
    }
}
