//! Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
//! of diverse parameter-free attacks"), with the cross-entropy loss (APGD-CE), the
//! difference-of-logits-ratio loss (APGD-DLR) and the targeted DLR loss over the top classes
//! (APGD-T).
//!
//! Constants as in the paper and AutoAttack: initial step size 2ε, momentum 0.75 (none on the
//! first step), checkpoints starting after 22% of the iterations with intervals shrinking by 3%
//! of the iterations down to 6%, step halving when fewer than ρ = 0.75 of the steps since the
//! last checkpoint increased the loss or when neither the step size was reduced nor the best loss
//! improved at the last checkpoint; after a halving the search restarts from the best point.
//! Default: 100 iterations, random start in the ball for every restart, APGD-T over the 9 most
//! likely other classes. L∞ steps along sign(∇), L2 along ∇/‖∇‖₂; every iterate is projected
//! exactly onto ball ∩ box. L1 is AutoAttack's L1-APGD (Croce & Hein 2021, "Mind the box"; see
//! [`super::apgd_l1`]): adaptive sparsity, initial step ε, the large-ε schedule, and by default
//! 5 restarts for APGD-CE/DLR and 5 target classes for APGD-T.
//!
//! Like every gibbon attack, a sample leaves the batch at its first success (the point is
//! returned; with `--confidence κ`, at its first point beyond margin κ), and unbroken samples
//! return their lowest-margin iterate. Under EOT (randomized models) a sample stops only at an
//! iterate that fools every draw; otherwise it runs its whole budget and returns, of its
//! margin-best, loss-best and last iterates, the one with the best fresh EOT margin (deep
//! inside the wrong class, not a lucky estimate on the expected boundary; see
//! [`super::apgd_eot`]); further runs go only to samples still unbroken.
use super::apgd_l1::{self, check_interval, phase_at, project_rows};
use super::stepped::{start_point, steepest_direction, StartPoint};
use crate::attack::loss::{class_ranking, confident_success, margin};
use crate::attack::pool::{drive, row_set, Keep, Pooled, RowSet};
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource};
use crate::error::{GibbonError, Result};
use crate::model::precision::{exact_where, refining};
use crate::random::{stacked, RngKey};
use crate::tensor::per_sample_view;
use crate::threat::{Goal, Norm, ThreatModel};
use tch::{Kind, Tensor};

/// The loss APGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    /// Cross-entropy (towards the target for targeted goals).
    Ce,
    /// Difference of logits ratio, shift and scale invariant.
    Dlr,
    /// Targeted DLR towards each of the top `n_targets` other classes in turn (APGD-T).
    TargetedDlr,
}

/// APGD parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApgdConfig {
    /// The loss.
    pub loss: ApgdLoss,
    /// Iterations per restart (AutoAttack: 100).
    pub steps: usize,
    /// Restarts (for APGD-T: per target class).
    pub restarts: usize,
    /// Target classes tried by APGD-T (AutoAttack: 9).
    pub n_targets: usize,
    /// Momentum (0.75).
    pub momentum: f64,
    /// Oscillation threshold ρ (0.75).
    pub rho: f64,
    /// Initial step size as a multiple of ε (2).
    pub initial_step: f64,
    /// Gradients averaged over this many passes (EOT, for randomized models; 1 otherwise).
    pub eot: usize,
    /// Every row runs all iterations of its run even after success and returns the iterate with
    /// the lowest margin: on by default under EOT, where a first success sits on the expected
    /// boundary and fools a single draw only about half the time (there, an iterate fooling
    /// every draw still stops the row, and the returned point is chosen by a fresh estimate).
    /// Later runs (restarts, APGD-T's next target) run only on rows still unbroken.
    pub full_budget: bool,
    /// Early stop only beyond this logit margin (see [`AttackOptions::confidence`]).
    pub confidence: f64,
    /// L1: adaptive sparsity and the large-ε schedule of L1-APGD (see [`super::apgd_l1`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sparse_l1: bool,
}

/// APGD-CE, APGD-DLR or APGD-T, depending on the loss.
#[derive(Debug, Clone)]
pub struct Apgd {
    /// Parameters.
    pub config: ApgdConfig,
    name: &'static str,
}

impl Apgd {
    /// APGD with `loss` for `threat` (steps and restarts from the threat model's budget; the
    /// budget's default of 40 steps is raised to AutoAttack's 100 unless `steps` was set).
    pub fn new(
        threat: &ThreatModel,
        options: &AttackOptions,
        loss: ApgdLoss,
        steps: usize,
    ) -> Result<Self> {
        if loss == ApgdLoss::TargetedDlr && threat.goal != Goal::Untargeted {
            return Err(GibbonError::invalid(
                "attack",
                "apgd-t picks its own targets and needs an untargeted goal; use apgd-ce or apgd-dlr with --targeted",
            ));
        }
        let name = match loss {
            ApgdLoss::Ce => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
            ApgdLoss::TargetedDlr => "apgd-t",
        };
        let l1 = threat.norm == Norm::L1;
        let targeted = loss == ApgdLoss::TargetedDlr;
        // AutoAttack's L1 suite: APGD-CE with 5 restarts, APGD-T with 5 targets and 1 restart.
        let restarts = match (l1, targeted) {
            (true, false) => threat.budget.restarts_or(APGD_L1_RESTARTS),
            _ => threat.budget.restarts_or(1),
        };
        Ok(Apgd {
            config: ApgdConfig {
                loss,
                steps,
                restarts,
                n_targets: if l1 { APGD_L1_TARGETS } else { 9 },
                momentum: if l1 { 0.0 } else { 0.75 },
                rho: 0.75,
                initial_step: if l1 { apgd_l1::L1_INITIAL_STEP } else { 2.0 },
                eot: options.eot.unwrap_or(1).max(1),
                full_budget: options.full_budget || options.eot.unwrap_or(1) > 1,
                confidence: options.confidence,
                sparse_l1: l1,
            },
            name,
        })
    }
}

/// APGD-CE/DLR's restarts for L1 (AutoAttack's L1 suite) unless the user set `--restarts`.
pub const APGD_L1_RESTARTS: usize = 5;
/// APGD-T's target classes for L1 (AutoAttack's L1 suite).
pub const APGD_L1_TARGETS: usize = 5;

/// Per-sample DLR loss to be maximised: untargeted `-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3)`,
/// targeted `-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)` (π sorts the logits in decreasing order).
/// The ratio needs 3 classes (4 for the targeted form); with fewer, the denominator is 1, i.e.
/// the plain logit margin (the C&W loss), which is what the ratio reduces to in spirit.
pub fn dlr_loss(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Tensor {
    let z = logits.to_kind(Kind::Float);
    let classes = z.size()[1];
    let (sorted, _) = z.sort(1, true);
    let zy = z.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let col = |i: i64| sorted.select(1, i);
    match targets {
        None => {
            let mask = z.zeros_like().scatter_value(1, &labels.unsqueeze(1), f64::NEG_INFINITY);
            let other = (&z + mask).amax([1i64].as_slice(), false);
            let margin = zy - other;
            if classes < 3 {
                return -margin;
            }
            -margin / (col(0) - col(2) + 1e-12)
        }
        Some(t) => {
            let zt = z.gather(1, &t.unsqueeze(1), false).squeeze_dim(1);
            if classes < 4 {
                return -(zy - zt);
            }
            -(zy - zt) / (col(0) - (col(2) + col(3)) * 0.5 + 1e-12)
        }
    }
}

fn ce_loss(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Tensor {
    crate::attack::loss::cross_entropy_objective(logits, labels, targets)
}

/// The working state of every row (one sample at its own iteration and run).
pub(in crate::attack) struct Rows {
    pub(in crate::attack) indices: Vec<usize>,
    pub(in crate::attack) step: Vec<usize>,
    pub(in crate::attack) restart: Vec<usize>,
    pub(in crate::attack) queries: Vec<u64>,
    pub(in crate::attack) since_check: Vec<usize>,
    pub(in crate::attack) interval: Vec<usize>,
    pub(in crate::attack) increases: Vec<usize>,
    pub(in crate::attack) reduced_last_check: Vec<bool>,
    pub(in crate::attack) x0: Tensor,
    pub(in crate::attack) labels: Tensor,
    /// Targets of the loss (APGD-T's current target, or the goal's target).
    pub(in crate::attack) loss_targets: Option<Tensor>,
    /// Targets of the goal (success test), for targeted goals.
    pub(in crate::attack) goal_targets: Option<Tensor>,
    /// Classes by decreasing clean logit (APGD-T).
    pub(in crate::attack) ranking: Option<Tensor>,
    pub(in crate::attack) x_adv: Tensor,
    pub(in crate::attack) x_prev: Tensor,
    pub(in crate::attack) step_size: Tensor,
    pub(in crate::attack) prev_loss: Tensor,
    pub(in crate::attack) loss_best: Tensor,
    pub(in crate::attack) loss_best_last_check: Tensor,
    pub(in crate::attack) x_best_loss: Tensor,
    pub(in crate::attack) grad_best: Tensor,
    pub(in crate::attack) best_margin: Tensor,
    pub(in crate::attack) x_best_margin: Tensor,
    /// EOT: most draws an iterate fooled, and that iterate.
    best_fooled: Tensor,
    x_best_fooled: Tensor,
    /// L1: fraction of coordinates a step moves, and the last checkpoint's L0 size.
    pub(in crate::attack) topk: Tensor,
    pub(in crate::attack) sp_old: Tensor,
}

row_set!(Rows {
    indices,
    step,
    restart,
    queries,
    since_check,
    interval,
    increases,
    reduced_last_check,
    x0,
    labels,
    loss_targets,
    goal_targets,
    ranking,
    x_adv,
    x_prev,
    step_size,
    prev_loss,
    loss_best,
    loss_best_last_check,
    x_best_loss,
    grad_best,
    best_margin,
    x_best_margin,
    best_fooled,
    x_best_fooled,
    topk,
    sp_old,
});

impl Apgd {
    fn first_interval(&self) -> usize {
        if self.config.sparse_l1 {
            return check_interval(phase_at(self.config.steps, 0).1);
        }
        ((0.22 * self.config.steps as f64) as usize).max(1)
    }

    /// Every row's ball radius as a multiple of ε (1 except in L1's large-ε phases).
    fn radius_mults(&self, r: &Rows) -> Vec<f64> {
        if !self.config.sparse_l1 {
            return vec![1.0; r.indices.len()];
        }
        r.step.iter().map(|&s| phase_at(self.config.steps, s).0).collect()
    }

    /// Target classes APGD-T tries on a model with `classes` classes.
    fn targets_for(&self, classes: i64) -> usize {
        self.config.n_targets.min((classes.max(2) - 1) as usize)
    }

    fn runs(&self, classes: i64) -> usize {
        match self.config.loss {
            ApgdLoss::TargetedDlr => self.targets_for(classes) * self.config.restarts,
            _ => self.config.restarts,
        }
    }

    /// Fresh state for rows `x0` at restart numbers `restarts`.
    #[allow(clippy::too_many_arguments)]
    fn fresh_state(
        &self,
        ctx: &AttackContext<'_>,
        indices: Vec<usize>,
        x0: Tensor,
        labels: Tensor,
        goal_targets: Option<Tensor>,
        ranking: Option<Tensor>,
        restarts: Vec<usize>,
        queries: Vec<u64>,
    ) -> Rows {
        let threat = ctx.threat;
        let n = indices.len();
        let n_targets = self.targets_for(ctx.model.num_classes());
        let device = x0.device();
        let keys: Vec<RngKey> = indices
            .iter()
            .zip(&restarts)
            .map(|(&i, &r)| RngKey::new(ctx.seed, i).restart(r).stream(10))
            .collect();
        let x_adv = if self.config.sparse_l1 {
            // A Gaussian start projected onto the first phase's ball (AutoAttack's L1 start).
            let noise = stacked(&keys, &x0.size()[1..], device, |k, m| k.stream(1).normal(m));
            let (mult, _) = phase_at(self.config.steps, 0);
            project_rows(threat, &x0, &(&x0 + noise), &vec![mult; n])
        } else {
            start_point(threat, &x0, &keys, StartPoint::Random, 0)
        };
        let (topk, sp_old) = apgd_l1::start_sparsity(&x0, &x_adv);
        let first_radius =
            if self.config.sparse_l1 { phase_at(self.config.steps, 0).0 } else { 1.0 };
        let loss_targets = match (&ranking, self.config.loss) {
            (Some(rank), ApgdLoss::TargetedDlr) => {
                let which: Vec<i64> =
                    restarts.iter().map(|&r| 1 + (r % n_targets) as i64).collect();
                let col = Tensor::from_slice(&which).to_device(device).unsqueeze(1);
                Some(rank.gather(1, &col, false).squeeze_dim(1))
            }
            _ => goal_targets.as_ref().map(|t| t.shallow_clone()),
        };
        let full = |v: f64| Tensor::full([n as i64], v, (Kind::Float, device));
        Rows {
            since_check: vec![0; n],
            interval: vec![self.first_interval(); n],
            topk,
            sp_old,
            increases: vec![0; n],
            reduced_last_check: vec![true; n],
            step: vec![0; n],
            restart: restarts,
            queries,
            x_prev: x_adv.copy(),
            step_size: full(self.config.initial_step * threat.eps * first_radius),
            prev_loss: full(f64::NEG_INFINITY),
            loss_best: full(f64::NEG_INFINITY),
            loss_best_last_check: full(f64::NEG_INFINITY),
            x_best_loss: x_adv.copy(),
            grad_best: x_adv.zeros_like(),
            best_margin: full(f64::INFINITY),
            x_best_margin: x0.copy(),
            best_fooled: full(-1.0),
            x_best_fooled: x0.copy(),
            x_adv,
            indices,
            x0,
            labels,
            loss_targets,
            goal_targets,
            ranking,
        }
    }
}

impl Attack for Apgd {
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

impl Apgd {
    /// The rows of new samples; APGD-T ranks their classes by the clean logits (one query).
    fn admit(&self, ctx: &AttackContext<'_>, chunk: Chunk) -> Result<Rows> {
        let n = chunk.indices.len();
        let mut queries = vec![0u64; n];
        let ranking = if self.config.loss == ApgdLoss::TargetedDlr {
            for q in queries.iter_mut() {
                *q += 1;
            }
            Some(class_ranking(&ctx.model.logits(&chunk.x)?, &chunk.labels))
        } else {
            None
        };
        Ok(self.fresh_state(
            ctx,
            chunk.indices,
            chunk.x,
            chunk.labels,
            chunk.targets,
            ranking,
            vec![0; n],
            queries,
        ))
    }

    /// Loss, logits and input gradient at every row's point, averaged over the EOT passes, and
    /// in how many of the passes the point reached the goal (beyond the margin κ).
    fn gradient(
        &self,
        ctx: &AttackContext<'_>,
        r: &mut Rows,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let cfg = &self.config;
        let gt = r.goal_targets.as_ref();
        let lt = r.loss_targets.as_ref();
        let labels = &r.labels;
        let objective = |logits: &Tensor| match cfg.loss {
            ApgdLoss::Ce => ce_loss(logits, labels, lt),
            ApgdLoss::Dlr | ApgdLoss::TargetedDlr => dlr_loss(logits, labels, lt),
        };
        let exact: Vec<bool> = r.step.iter().map(|&s| refining(s, cfg.steps)).collect();
        let (mut loss, mut logits, mut grad) =
            ctx.model.loss_and_input_grad_rows(&r.x_adv, &objective, &exact)?;
        let fooled_by =
            |z: &Tensor| confident_success(z, labels, gt, cfg.confidence).to_kind(Kind::Int64);
        let mut fooled = fooled_by(&logits);
        for _ in 1..cfg.eot {
            let (l, z, g) = ctx.model.loss_and_input_grad_rows(&r.x_adv, &objective, &exact)?;
            fooled += fooled_by(&z);
            loss += l;
            logits += z;
            grad += g;
        }
        if cfg.eot > 1 {
            let k = cfg.eot as f64;
            (loss, logits, grad) = (loss / k, logits / k, grad / k);
        }
        for q in r.queries.iter_mut() {
            *q += cfg.eot as u64;
        }
        Ok((loss, logits, grad, fooled))
    }

    /// Checkpoint bookkeeping after the loss at the current points is known: which rows halve
    /// their step size and go back to their best point (oscillation or no progress).
    fn checkpoints(&self, r: &mut Rows, increased: &[bool]) -> Result<Tensor> {
        let cfg = &self.config;
        let n = r.indices.len();
        let loss_best_v: Vec<f32> = Vec::try_from(&r.loss_best)?;
        let last_check_v: Vec<f32> = Vec::try_from(&r.loss_best_last_check)?;
        let mut halve = vec![false; n];
        let min_interval = ((0.06 * cfg.steps as f64) as usize).max(1);
        let decrease = ((0.03 * cfg.steps as f64) as usize).max(1);
        for i in 0..n {
            if r.step[i] == 0 {
                continue;
            }
            if increased[i] {
                r.increases[i] += 1;
            }
            r.since_check[i] += 1;
            if r.since_check[i] == r.interval[i] {
                let oscillating = (r.increases[i] as f64) <= r.interval[i] as f64 * cfg.rho;
                let no_progress = !r.reduced_last_check[i] && last_check_v[i] >= loss_best_v[i];
                halve[i] = oscillating || no_progress;
                r.reduced_last_check[i] = halve[i];
                r.since_check[i] = 0;
                r.increases[i] = 0;
                r.interval[i] = r.interval[i].saturating_sub(decrease).max(min_interval);
            }
        }
        let checked: Vec<bool> = (0..n).map(|i| r.step[i] > 0 && r.since_check[i] == 0).collect();
        let checked_t = Tensor::from_slice(&checked).to_device(r.x0.device());
        r.loss_best_last_check = r.loss_best.where_self(&checked_t, &r.loss_best_last_check);
        let halve_t = Tensor::from_slice(&halve).to_device(r.x0.device());
        r.step_size = r.step_size.where_self(&halve_t.logical_not(), &(&r.step_size * 0.5));
        Ok(halve_t)
    }

    /// One APGD iteration for every row, then retirement and restarts.
    fn round(
        &self,
        ctx: &AttackContext<'_>,
        runs: usize,
        r: &mut Rows,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let (threat, cfg) = (ctx.threat, &self.config);
        let (loss, logits, grad, fooled) = self.gradient(ctx, r)?;
        let kappa = margin(&logits, &r.labels, r.goal_targets.as_ref()) + cfg.confidence;
        let logits = exact_where(ctx.model, &r.x_adv, &logits, &kappa)?;
        let view = per_sample_view(&r.x_adv);
        let gt = r.goal_targets.as_ref();
        let m = margin(&logits, &r.labels, gt);
        // Only points inside the ε-ball count (L1's large-ε phases search outside it).
        let mults = self.radius_mults(r);
        let at_eps: Vec<bool> = mults.iter().map(|&k| k == 1.0).collect();
        let at_eps_t = Tensor::from_slice(&at_eps).to_device(r.x0.device());
        let improved_margin = m.lt_tensor(&r.best_margin).logical_and(&at_eps_t);
        r.best_margin = m.where_self(&improved_margin, &r.best_margin);
        r.x_best_margin =
            r.x_adv.where_self(&improved_margin.view(view.as_slice()), &r.x_best_margin);
        if cfg.eot > 1 {
            let f = fooled.to_kind(Kind::Float);
            let more = f.gt_tensor(&r.best_fooled).logical_and(&at_eps_t);
            r.best_fooled = f.where_self(&more, &r.best_fooled);
            r.x_best_fooled = r.x_adv.where_self(&more.view(view.as_slice()), &r.x_best_fooled);
        }
        let success: Vec<bool> = if cfg.eot > 1 {
            // Randomized model: stop only where every draw is fooled (see `apgd_eot`).
            let all: Vec<i64> = Vec::try_from(&fooled)?;
            all.iter().zip(&at_eps).map(|(&k, &inside)| inside && k == cfg.eot as i64).collect()
        } else if cfg.full_budget {
            vec![false; r.indices.len()]
        } else {
            let reached: Vec<bool> =
                Vec::try_from(confident_success(&logits, &r.labels, gt, cfg.confidence))?;
            reached.iter().zip(&at_eps).map(|(&s, &inside)| s && inside).collect()
        };

        // Loss bookkeeping: best point, increases since the last checkpoint.
        let loss = loss.to_kind(Kind::Float);
        let increased: Vec<bool> = Vec::try_from(loss.gt_tensor(&r.prev_loss))?;
        let better = loss.gt_tensor(&r.loss_best);
        r.x_best_loss = r.x_adv.where_self(&better.view(view.as_slice()), &r.x_best_loss);
        r.grad_best = grad.where_self(&better.view(view.as_slice()), &r.grad_best);
        r.loss_best = loss.maximum(&r.loss_best);
        r.prev_loss = loss.shallow_clone();

        // Checkpoints: halve the step and go back to the best point where progress stalled.
        let hv = if cfg.sparse_l1 {
            self.checkpoints_l1(r, &mults, threat.eps)
        } else {
            self.checkpoints(r, &increased)?
        };
        let hv = hv.view(view.as_slice());
        let x_cur = r.x_best_loss.where_self(&hv, &r.x_adv);
        let g_cur = r.grad_best.where_self(&hv, &grad);

        // The APGD step with momentum (none on the first step of a run).
        let first: Vec<f32> =
            r.step.iter().map(|&s| if s == 0 { 1.0 } else { cfg.momentum as f32 }).collect();
        let a = Tensor::from_slice(&first).to_device(r.x0.device()).view(view.as_slice());
        let eta = r.step_size.view(view.as_slice());
        let x_next = if cfg.sparse_l1 {
            let step = apgd_l1::sparse_direction(&g_cur, &r.topk) * &eta;
            project_rows(threat, &r.x0, &(&x_cur + step), &mults)
        } else {
            let z =
                threat.project(&r.x0, &(&x_cur + steepest_direction(threat.norm, &g_cur) * &eta));
            threat.project(
                &r.x0,
                &(&x_cur + (&z - &x_cur) * &a + (&x_cur - &r.x_prev) * (a.ones_like() - &a)),
            )
        };
        if cfg.eot > 1 {
            self.choose_fresh(ctx, r, &success)?;
        }
        let (keep, restarting) = self.retire(r, &success, runs, sink)?;
        r.x_prev = x_cur;
        r.x_adv = x_next;
        let device = r.x0.device();
        let mut next = r.pick(&Keep::new(keep, device));
        if !restarting.is_empty() {
            // Restarted rows get a fresh state (new start point, or APGD-T's next target),
            // keeping their margin-best point and query count; they move to the end.
            let again = next.pick(&Keep::new(restarting.clone(), device));
            let restarts: Vec<usize> = again.restart.iter().map(|r| r + 1).collect();
            let mut fresh = self.fresh_state(
                ctx,
                again.indices.clone(),
                again.x0.shallow_clone(),
                again.labels.shallow_clone(),
                again.goal_targets.as_ref().map(|t| t.shallow_clone()),
                again.ranking.as_ref().map(|t| t.shallow_clone()),
                restarts,
                again.queries.clone(),
            );
            fresh.best_margin = again.best_margin.shallow_clone();
            fresh.x_best_margin = again.x_best_margin.shallow_clone();
            fresh.best_fooled = again.best_fooled.shallow_clone();
            fresh.x_best_fooled = again.x_best_fooled.shallow_clone();
            let stay: Vec<i64> =
                (0..next.indices.len() as i64).filter(|i| !restarting.contains(i)).collect();
            next = next.pick(&Keep::new(stay, device)).join(fresh);
        }
        *r = next;
        if cfg.sparse_l1 {
            self.enter_phases(threat, r);
        }
        Ok(())
    }

    /// Randomized model: the rows ending their run take, as their margin-best point, the
    /// candidate with the best fresh EOT estimate (see `apgd_eot`).
    fn choose_fresh(&self, ctx: &AttackContext<'_>, r: &mut Rows, success: &[bool]) -> Result<()> {
        let ending: Vec<i64> = (0..r.indices.len())
            .filter(|&i| !success[i] && r.step[i] >= self.config.steps)
            .map(|i| i as i64)
            .collect();
        if ending.is_empty() {
            return Ok(());
        }
        let idx = Tensor::from_slice(&ending).to_device(r.x0.device());
        let pick = |t: &Tensor| t.index_select(0, &idx);
        let (fooled_best, margin_best, loss_best, last) =
            (pick(&r.x_best_fooled), pick(&r.x_best_margin), pick(&r.x_best_loss), pick(&r.x_adv));
        let gt = r.goal_targets.as_ref().map(pick);
        let (x, m) = super::apgd_eot::freshest_best(
            ctx.model,
            &[&fooled_best, &margin_best, &loss_best, &last],
            &pick(&r.labels),
            gt.as_ref(),
            self.config.eot,
        )?;
        r.x_best_margin = r.x_best_margin.index_copy(0, &idx, &x);
        r.best_margin = r.best_margin.index_copy(0, &idx, &m);
        for &i in &ending {
            r.queries[i as usize] += 4 * self.config.eot as u64;
        }
        Ok(())
    }

    /// Hands broken rows and rows out of runs to `sink`; returns the positions of the rows that
    /// stay and, among those, of the rows that start their next run.
    fn retire(
        &self,
        r: &mut Rows,
        success: &[bool],
        runs: usize,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut keep: Vec<i64> = Vec::new();
        let mut restarting: Vec<i64> = Vec::new();
        // The margin-best point is adversarial (only possible with the full budget, or with a
        // margin κ that was never exceeded).
        let reached: Vec<bool> = Vec::try_from(r.best_margin.lt(0.0))?;
        for (i, &succeeded) in success.iter().enumerate() {
            if succeeded {
                let x = r.x_adv.get(i as i64);
                sink(AttackRecord::stepped(
                    r.indices[i],
                    x,
                    Some(r.step[i]),
                    r.restart[i],
                    r.queries[i],
                ))?;
            } else if r.step[i] >= self.config.steps {
                if r.restart[i] + 1 < runs && !reached[i] {
                    restarting.push(keep.len() as i64);
                    keep.push(i as i64);
                } else {
                    sink(AttackRecord {
                        index: r.indices[i],
                        x_adv: r.x_best_margin.get(i as i64),
                        claimed_success: reached[i],
                        step: None,
                        restart: r.restart[i],
                        queries: r.queries[i],
                        min_norm: None,
                    })?;
                }
            } else {
                r.step[i] += 1;
                keep.push(i as i64);
            }
        }
        Ok((keep, restarting))
    }
}
