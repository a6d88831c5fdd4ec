//! FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
//! examples with a fast adaptive boundary attack", ICML), untargeted (`fab`) and in AutoAttack's
//! targeted form (`fab-t`: one run per target class, the 9 other classes with the highest clean
//! logits, each run linearising only `f_target - f_label`; the goal stays untargeted).
//!
//! Each step linearises the logit differences `f_k - f_y` at the current iterate `p`, picks the
//! class whose linearised boundary is nearest in the threat model's norm (distance
//! `|f_k - f_y| / ‖∇(f_k - f_y)‖_dual`), and projects both `p` and the clean input `x₀` exactly
//! onto that hyperplane intersected with the input box (minimal-norm `δ`, solved per row by
//! sorting the saturation points of the coordinates). The next iterate is the convex
//! combination `(1-α)(p + η δ_p) + α(x₀ + η δ₀)` clipped to the box, with
//! `α = min(‖δ_p‖ / (‖δ_p‖ + ‖δ₀‖), α_max)`; when an iterate is adversarial it is recorded if it
//! is the smallest so far and the search moves back towards `x₀`: `p ← x₀ + β (p - x₀)`.
//!
//! Constants as in AutoAttack: 100 iterations, α_max = 0.1, η = 1.05, β = 0.9, one restart;
//! later restarts start on the sphere of radius `min(best norm, ε) / 2` around `x₀` (clipped to
//! the box). L∞, L2 and L1 are supported (L1 with the exact greedy projection).
//!
//! Minimum-norm contract: ε caps what is returned (the smallest adversarial point, projected
//! into ball ∩ box and re-checked by a forward pass), [`AttackRecord::min_norm`] reports the
//! smallest adversarial norm found even above ε, and unless [`AttackOptions::minimize`] is set a
//! sample leaves the batch as soon as it is broken within ε. Each forward pass counts as one
//! query per row (the backward passes for the Jacobian reuse it).
use super::stepped::StartPoint;
use crate::attack::loss::{class_ranking, margin, success_mask};
use crate::attack::pool::{drive, row_set, Keep, RowSet};
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource};
use crate::error::{GibbonError, Result};
use crate::model::precision::{exact_where, refining};
use crate::random::{stacked, RngKey};
use crate::threat::{Goal, InputBox, Norm, ThreatModel};
use tch::{Kind, Tensor};

/// FAB's default iterations per run (AutoAttack's 100) when the user did not set `--steps`.
pub const FAB_STEPS: usize = 100;

/// Which FAB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FabVariant {
    /// Linearise every class at every step and head for the nearest boundary.
    Untargeted,
    /// AutoAttack's FAB-T: one run per top-ranked other class, linearising only that class.
    Targeted,
}

/// FAB parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FabConfig {
    /// Untargeted or FAB-T.
    pub variant: FabVariant,
    /// Iterations per run (100).
    pub steps: usize,
    /// Runs per target (FAB-T) or in total (FAB).
    pub restarts: usize,
    /// Target classes tried by FAB-T (9).
    pub n_targets: usize,
    /// Largest weight of the step from the clean input (0.1).
    pub alpha_max: f64,
    /// Overshoot of the projections (1.05).
    pub eta: f64,
    /// Backward step towards the clean input after a success (0.9).
    pub beta: f64,
    /// Where runs start.
    pub start: StartPoint,
    /// Keep minimizing after the first success within ε.
    pub minimize: bool,
}

/// The FAB attack (see the module docs).
#[derive(Debug, Clone)]
pub struct Fab {
    /// Parameters.
    pub config: FabConfig,
    name: &'static str,
}

impl Fab {
    /// FAB (`variant`) for `threat` with `steps` iterations per run.
    pub fn new(
        threat: &ThreatModel,
        options: &AttackOptions,
        variant: FabVariant,
        steps: usize,
    ) -> Result<Self> {
        if variant == FabVariant::Targeted && threat.goal != Goal::Untargeted {
            return Err(GibbonError::invalid(
                "attack",
                "fab-t picks its own targets and needs an untargeted goal; use fab with --targeted",
            ));
        }
        if steps == 0 {
            return Err(GibbonError::invalid("steps", "fab needs at least 1 step"));
        }
        let start = match options.random_start {
            None => StartPoint::CleanThenRandom,
            Some(true) => StartPoint::Random,
            Some(false) => StartPoint::Clean,
        };
        let name = match variant {
            FabVariant::Untargeted => "fab",
            FabVariant::Targeted => "fab-t",
        };
        Ok(Fab {
            config: FabConfig {
                variant,
                steps,
                restarts: threat.budget.restarts_or(1),
                n_targets: 9,
                alpha_max: 0.1,
                eta: 1.05,
                beta: 0.9,
                start,
                minimize: options.minimize,
            },
            name,
        })
    }
}

/// Per-row bookkeeping.
#[derive(Debug, Clone)]
struct RowInfo {
    index: usize,
    /// Run number: the restart (FAB) or `target rank × restarts + restart` (FAB-T).
    run: usize,
    /// Steps taken in this run.
    step: usize,
    /// Steps taken over all runs.
    total_steps: usize,
    queries: u64,
    best_norm: f64,
    best_step: Option<usize>,
    best_run: usize,
}

struct Rows {
    info: Vec<RowInfo>,
    x0: Tensor,
    labels: Tensor,
    goal_targets: Option<Tensor>,
    /// Classes by decreasing clean logit, the label first (FAB-T).
    ranking: Option<Tensor>,
    /// The point of the next forward pass.
    current: Tensor,
    /// The smallest adversarial point found (`x0` until one is found).
    best_adv: Tensor,
}

row_set!(Rows { info, x0, labels, goal_targets, ranking, current, best_adv });

/// What a row does after a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Take a FAB step from the current point.
    Step,
    /// The current point is adversarial: move back towards the clean input.
    Shrink,
    /// The run is over: start the next one.
    NewRun,
    /// Done: return the result.
    Finish,
}

/// Per-sample norm of rows of `d` (`[N, D]`, float64) in the dual of `norm`, over dimension
/// `dim`.
fn dual_norm(norm: Norm, d: &Tensor, dim: i64) -> Tensor {
    match norm {
        Norm::Linf => d.abs().sum_dim_intlist([dim].as_slice(), false, Kind::Double),
        Norm::L2 => d.square().sum_dim_intlist([dim].as_slice(), false, Kind::Double).sqrt(),
        Norm::L1 => d.abs().amax([dim].as_slice(), false),
    }
}

/// The minimal-norm `δ` (rows of `[N, D]`, float64) with `w·δ = c` and `lo ≤ t + δ ≤ hi`, per
/// row; where the hyperplane cannot be reached inside the box, the box corner nearest to it.
///
/// Moving coordinate `i` in the direction `sign(c w_i)` by at most its room `r_i` to the box,
/// L∞ gives `δ_i = min(λ, r_i)` and L2 `δ_i = min(λ|w_i|, r_i)` (KKT), so `w·δ` is a
/// non-decreasing piecewise-linear function of `λ` whose kinks are the saturation points
/// `r_i` (L∞) or `r_i/|w_i|` (L2). Sorting the kinks and accumulating the saturated and the
/// still-free parts gives that function at every kink; the segment holding `|c|` is found by
/// counting and `λ` solved on it, exactly. L1 fills coordinates greedily by decreasing `|w_i|`.
pub fn project_hyperplane_box(
    norm: Norm,
    t: &Tensor,
    w: &Tensor,
    c: &Tensor,
    bounds: InputBox,
) -> Tensor {
    let t = t.to_kind(Kind::Double);
    let w = w.to_kind(Kind::Double) * c.to_kind(Kind::Double).sign().unsqueeze(1);
    let c = c.to_kind(Kind::Double).abs().unsqueeze(1);
    let up = (-&t + bounds.hi).clamp_min(0.0);
    let down = (&t - bounds.lo).clamp_min(0.0);
    let room = up.where_self(&w.gt(0.0), &down);
    let dir = w.sign();
    let aw = w.abs();
    // Contribution of each coordinate to w·δ once it is saturated.
    let cap = &aw * &room;
    match norm {
        Norm::Linf | Norm::L2 => {
            let scale = match norm {
                Norm::Linf => aw.ones_like(),
                _ => aw.shallow_clone(),
            };
            let slope = &aw * &scale;
            let active = slope.gt(0.0);
            let knee = (&room / scale.clamp_min(1e-300)).where_self(&active, &room.zeros_like());
            let (knee_sorted, order) = knee.sort(1, false);
            let slope_sorted = slope.gather(1, &order, false);
            let cap_sorted = cap.gather(1, &order, false);
            let total_slope = slope.sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
            let saturated = cap_sorted.cumsum(1, Kind::Double);
            let free = &total_slope - slope_sorted.cumsum(1, Kind::Double);
            // Value of w·δ at each kink (coordinates up to that one saturated).
            let at_knee = &saturated + &knee_sorted * &free;
            let dims = t.size()[1];
            let segment =
                at_knee.lt_tensor(&c).sum_dim_intlist([1i64].as_slice(), true, Kind::Int64);
            let zero = c.zeros_like();
            let saturated = Tensor::cat(&[&zero, &saturated], 1).gather(1, &segment, false);
            let free = Tensor::cat(&[&total_slope, &free], 1).gather(1, &segment, false);
            let reachable = segment.lt(dims);
            let lambda = ((&c - saturated) / free.clamp_min(1e-300))
                .clamp(0.0, 1e30)
                .where_self(&reachable, &c.full_like(1e30));
            dir * (lambda * scale).minimum(&room)
        }
        Norm::L1 => {
            let order = aw.argsort(1, true);
            let cap_sorted = cap.gather(1, &order, false);
            let aw_sorted = aw.gather(1, &order, false);
            let room_sorted = room.gather(1, &order, false);
            let before = cap_sorted.cumsum(1, Kind::Double) - &cap_sorted;
            let amount = ((&c - before) / aw_sorted.clamp_min(1e-300))
                .clamp_min(0.0)
                .minimum(&room_sorted)
                .where_self(&aw_sorted.gt(0.0), &aw_sorted.zeros_like());
            dir * aw.zeros_like().scatter(1, &order, &amount)
        }
    }
}

/// The hyperplane of one FAB step, per row: the linearisation `f + w·(z - p)` of the chosen
/// logit difference around the pass point `p` (positive once the goal is reached).
struct Linearization {
    logits: Tensor,
    f: Tensor,
    w: Tensor,
}

impl Fab {
    fn runs(&self, classes: i64) -> usize {
        match self.config.variant {
            FabVariant::Untargeted => self.config.restarts,
            FabVariant::Targeted => self.n_targets(classes) * self.config.restarts,
        }
    }

    fn n_targets(&self, classes: i64) -> usize {
        self.config.n_targets.min((classes - 1).max(1) as usize)
    }

    /// One forward pass at `r.current` and the backward passes for the chosen hyperplanes.
    fn linearize(&self, ctx: &AttackContext<'_>, r: &Rows) -> Result<Linearization> {
        let x = &r.current;
        let b = x.size()[0];
        let xg = x.detach().set_requires_grad(true);
        let exact: Vec<bool> = r.info.iter().map(|i| refining(i.step, self.config.steps)).collect();
        let logits = ctx.model.logits_padded_rows(&xg, &exact)?;
        let z = logits.detach().to_kind(Kind::Double);
        let grad_of = |scalar: Tensor, keep: bool| -> Result<Tensor> {
            let g = Tensor::f_run_backward(&[scalar], &[&xg], keep, false)?;
            let g =
                g.into_iter().next().ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
            Ok(g.flatten(1, -1).to_kind(Kind::Double))
        };
        // Pair hyperplanes: (class that should win, class that should lose).
        let pair = match (self.config.variant, &r.goal_targets, &r.ranking) {
            (FabVariant::Targeted, _, Some(rank)) => {
                let classes = z.size()[1];
                let which: Vec<i64> = r
                    .info
                    .iter()
                    .map(|i| {
                        1 + (i.run / self.config.restarts) as i64 % self.n_targets(classes) as i64
                    })
                    .collect();
                let col = Tensor::from_slice(&which).to_device(x.device()).unsqueeze(1);
                Some((rank.gather(1, &col, false), r.labels.unsqueeze(1)))
            }
            (FabVariant::Targeted, _, None) => {
                return Err(GibbonError::Internal("fab-t rows without a class ranking".into()))
            }
            (FabVariant::Untargeted, Some(t), _) => {
                let t = t.unsqueeze(1);
                let masked = z.scatter_value(1, &t, f64::NEG_INFINITY);
                Some((t, masked.argmax(1, true)))
            }
            (FabVariant::Untargeted, None, _) => None,
        };
        let (f, w) =
            match pair {
                Some((plus, minus)) => {
                    let diff = logits.gather(1, &plus, false) - logits.gather(1, &minus, false);
                    let w = grad_of(diff.sum(Kind::Float), false)?;
                    let f = z.gather(1, &plus, false) - z.gather(1, &minus, false);
                    (f.squeeze_dim(1), w)
                }
                None => {
                    let classes = z.size()[1];
                    let mut grads = Vec::with_capacity(classes as usize);
                    for k in 0..classes {
                        grads.push(grad_of(logits.select(1, k).sum(Kind::Float), k + 1 < classes)?);
                    }
                    let jac = Tensor::stack(&grads, 1);
                    let dims = jac.size()[2];
                    let label = r.labels.unsqueeze(1);
                    let df = &z - z.gather(1, &label, false);
                    let own = jac.gather(1, &label.unsqueeze(2).expand([b, 1, dims], false), false);
                    let dg = jac - own;
                    let dist = (df.abs() / (dual_norm(ctx.threat.norm, &dg, 2) + 1e-12))
                        .scatter_value(1, &label, f64::INFINITY);
                    let nearest = dist.argmin(1, true);
                    let f = df.gather(1, &nearest, false).squeeze_dim(1);
                    let w = dg
                        .gather(1, &nearest.unsqueeze(2).expand([b, 1, dims], false), false)
                        .squeeze_dim(1);
                    (f, w)
                }
            };
        Ok(Linearization { logits: logits.detach(), f, w })
    }

    /// The FAB step from every row's current point (see the module docs).
    fn step(&self, threat: &ThreatModel, r: &Rows, lin: &Linearization) -> Tensor {
        let cfg = &self.config;
        let shape = r.current.size();
        let b = shape[0];
        let p = r.current.to_kind(Kind::Double).flatten(1, -1);
        let x0 = r.x0.to_kind(Kind::Double).flatten(1, -1);
        // w·δ needed to reach the hyperplane from p and from x0.
        let c_p = -&lin.f;
        let c_0 =
            &c_p - (&lin.w * (&x0 - &p)).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        let d = project_hyperplane_box(
            threat.norm,
            &Tensor::cat(&[&p, &x0], 0),
            &Tensor::cat(&[&lin.w, &lin.w], 0),
            &Tensor::cat(&[&c_p, &c_0], 0),
            threat.bounds,
        );
        let size = threat.norm.per_sample(&d).clamp_min(1e-8);
        let (a_p, a_0) = (size.narrow(0, 0, b), size.narrow(0, b, b));
        let alpha = (&a_p / (&a_p + &a_0)).clamp(0.0, cfg.alpha_max).unsqueeze(1);
        let (d_p, d_0) = (d.narrow(0, 0, b), d.narrow(0, b, b));
        let next =
            (p + d_p * cfg.eta) * (alpha.ones_like() - &alpha) + (x0 + d_0 * cfg.eta) * alpha;
        next.clamp(threat.bounds.lo, threat.bounds.hi)
            .view(shape.as_slice())
            .to_kind(r.current.kind())
    }

    /// Start points of the rows' current runs: the clean input, or a point on the sphere of
    /// radius `min(best norm, ε) / 2` (AutoAttack's FAB restarts), clipped to the box.
    fn start_points(&self, ctx: &AttackContext<'_>, x0: &Tensor, info: &[RowInfo]) -> Tensor {
        let threat = ctx.threat;
        let restarts = self.config.restarts;
        let random: Vec<bool> = info
            .iter()
            .map(|i| match self.config.start {
                StartPoint::Clean => false,
                StartPoint::Random => true,
                StartPoint::CleanThenRandom => i.run % restarts > 0,
            })
            .collect();
        if !random.iter().any(|&r| r) || threat.eps == 0.0 {
            return x0.copy();
        }
        let device = x0.device();
        let shape = &x0.size()[1..];
        let keys: Vec<RngKey> =
            info.iter().map(|i| RngKey::new(ctx.seed, i.index).restart(i.run).stream(20)).collect();
        let dir = match threat.norm {
            Norm::Linf => stacked(&keys, shape, device, |k, n| k.uniform(n)) * 2.0 - 1.0,
            Norm::L2 | Norm::L1 => stacked(&keys, shape, device, |k, n| k.normal(n)),
        };
        let size = threat.norm.per_sample(&dir).clamp_min(1e-12);
        let radius: Vec<f64> = info.iter().map(|i| i.best_norm.min(threat.eps) * 0.5).collect();
        let radius = Tensor::from_slice(&radius).to_device(device);
        let view = crate::tensor::per_sample_view(x0);
        let delta = dir.to_kind(Kind::Double) * (radius / size).view(view.as_slice());
        let moved = (x0.to_kind(Kind::Double) + delta)
            .clamp(threat.bounds.lo, threat.bounds.hi)
            .to_kind(x0.kind());
        let mask = Tensor::from_slice(&random).to_device(device).view(view.as_slice());
        moved.where_self(&mask, x0)
    }

    /// Returns the rows `which` of `r`: the smallest adversarial point projected into
    /// ball ∩ box, claimed only if a fresh forward pass confirms it.
    fn finish(
        &self,
        ctx: &AttackContext<'_>,
        r: &Rows,
        which: &[i64],
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        if which.is_empty() {
            return Ok(());
        }
        let done = r.pick(&Keep::new(which.to_vec(), r.x0.device()));
        let found: Vec<bool> = done.info.iter().map(|i| i.best_norm.is_finite()).collect();
        let candidate = ctx.threat.project(&done.x0, &done.best_adv);
        let confirmed: Vec<bool> = if found.iter().any(|&f| f) {
            let logits = ctx.model.logits(&candidate)?;
            Vec::try_from(success_mask(&logits, &done.labels, done.goal_targets.as_ref()))?
        } else {
            vec![false; found.len()]
        };
        for (j, info) in done.info.iter().enumerate() {
            let success = found[j] && confirmed[j];
            sink(AttackRecord {
                index: info.index,
                x_adv: candidate.get(j as i64),
                claimed_success: success,
                step: if success { info.best_step } else { None },
                restart: if found[j] { info.best_run } else { info.run },
                queries: info.queries + u64::from(found[j]),
                min_norm: found[j].then_some(info.best_norm),
            })?;
        }
        Ok(())
    }
}

impl Attack for Fab {
    fn name(&self) -> &'static str {
        self.name
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
        let runs = self.runs(ctx.model.num_classes());
        drive(source, ctx.batch_size, |c| self.admit(ctx, c), |r| self.round(ctx, runs, r, sink))
    }
}

impl Fab {
    /// The rows of new samples; FAB-T ranks their classes by the clean logits (one query).
    fn admit(&self, ctx: &AttackContext<'_>, chunk: Chunk) -> Result<Rows> {
        let targeted = self.config.variant == FabVariant::Targeted;
        let info: Vec<RowInfo> = chunk
            .indices
            .iter()
            .map(|&index| RowInfo {
                index,
                run: 0,
                step: 0,
                total_steps: 0,
                queries: u64::from(targeted),
                best_norm: f64::INFINITY,
                best_step: None,
                best_run: 0,
            })
            .collect();
        let ranking = if targeted {
            Some(class_ranking(&ctx.model.logits(&chunk.x)?, &chunk.labels))
        } else {
            None
        };
        let current = self.start_points(ctx, &chunk.x, &info);
        Ok(Rows {
            info,
            best_adv: chunk.x.copy(),
            x0: chunk.x,
            labels: chunk.labels,
            goal_targets: chunk.targets,
            ranking,
            current,
        })
    }

    /// What every row does after the pass at its current point (its best point is updated).
    fn decide(
        &self,
        ctx: &AttackContext<'_>,
        runs: usize,
        r: &mut Rows,
        lin: &Linearization,
    ) -> Result<(Vec<Next>, Vec<bool>)> {
        let (threat, cfg) = (ctx.threat, &self.config);
        let goal = r.goal_targets.as_ref();
        let near = margin(&lin.logits, &r.labels, goal);
        let logits = exact_where(ctx.model, &r.current, &lin.logits, &near)?;
        let adversarial: Vec<bool> = Vec::try_from(success_mask(&logits, &r.labels, goal))?;
        let norms: Vec<f64> = Vec::try_from(threat.distance(&r.x0, &r.current))?;
        let n = r.info.len();
        let mut improved = vec![false; n];
        let mut next = vec![Next::Step; n];
        for (i, info) in r.info.iter_mut().enumerate() {
            info.queries += 1;
            if adversarial[i] && norms[i] < info.best_norm {
                info.best_norm = norms[i];
                info.best_step = Some(info.total_steps);
                info.best_run = info.run;
                improved[i] = true;
            }
            next[i] = if !cfg.minimize && info.best_norm <= threat.eps {
                Next::Finish
            } else if info.step >= cfg.steps {
                if info.run + 1 < runs {
                    Next::NewRun
                } else {
                    Next::Finish
                }
            } else if adversarial[i] {
                Next::Shrink
            } else {
                Next::Step
            };
        }
        Ok((next, improved))
    }

    /// One FAB iteration for every row: a step, a shrink towards the clean input, a new run or
    /// the end of the sample.
    fn round(
        &self,
        ctx: &AttackContext<'_>,
        runs: usize,
        r: &mut Rows,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let (threat, cfg) = (ctx.threat, &self.config);
        let lin = self.linearize(ctx, r)?;
        let (next, improved) = self.decide(ctx, runs, r, &lin)?;
        let n = r.info.len();
        let device = r.x0.device();
        let view = crate::tensor::per_sample_view(&r.x0);
        let mask_of = |want: Next| {
            let v: Vec<bool> = next.iter().map(|&a| a == want).collect();
            Tensor::from_slice(&v).to_device(device).view(view.as_slice())
        };
        let improved_t = Tensor::from_slice(&improved).to_device(device).view(view.as_slice());
        r.best_adv = r.current.where_self(&improved_t, &r.best_adv);

        let shrunk = (&r.x0.to_kind(Kind::Double)
            + (r.current.to_kind(Kind::Double) - r.x0.to_kind(Kind::Double)) * cfg.beta)
            .to_kind(r.current.kind());
        let mut current = if next.contains(&Next::Step) {
            self.step(threat, r, &lin).where_self(&mask_of(Next::Step), &shrunk)
        } else {
            shrunk
        };
        for (i, info) in r.info.iter_mut().enumerate() {
            match next[i] {
                Next::Step => {
                    info.step += 1;
                    info.total_steps += 1;
                }
                Next::NewRun => {
                    info.run += 1;
                    info.step = 0;
                }
                Next::Shrink | Next::Finish => {}
            }
        }
        let restarting: Vec<i64> =
            (0..n as i64).filter(|&i| next[i as usize] == Next::NewRun).collect();
        if !restarting.is_empty() {
            let rt = Tensor::from_slice(&restarting).to_device(device);
            let info: Vec<RowInfo> =
                restarting.iter().map(|&i| r.info[i as usize].clone()).collect();
            let fresh = self.start_points(ctx, &r.x0.index_select(0, &rt), &info);
            current = current.index_copy(0, &rt, &fresh);
        }
        r.current = current;
        let finished: Vec<i64> =
            (0..n as i64).filter(|&i| next[i as usize] == Next::Finish).collect();
        if !finished.is_empty() {
            self.finish(ctx, r, &finished, sink)?;
            let keep: Vec<i64> =
                (0..n as i64).filter(|&i| next[i as usize] != Next::Finish).collect();
            *r = r.pick(&Keep::new(keep, device));
        }
        Ok(())
    }
}
