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
//! likely other classes. L∞ steps along sign(∇), L2 along ∇/‖∇‖₂, L1 along the sign of the top
//! 1% gradient coordinates; every iterate is projected exactly onto ball ∩ box.
//!
//! Like every gibbon attack, a sample leaves the batch at its first verified-to-be success
//! candidate (the point is returned), and unbroken samples return their lowest-margin iterate.
use super::loss::{margin, success_mask};
use super::stepped::{start_point, steepest_direction, StartPoint};
use super::{Attack, AttackContext, AttackOptions, AttackRecord, SampleSource};
use crate::error::{GibbonError, Result};
use crate::random::RngKey;
use crate::threat::{per_sample_view, Goal, ThreatModel};
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
        Ok(Apgd {
            config: ApgdConfig {
                loss,
                steps,
                restarts: threat.budget.restarts,
                n_targets: 9,
                momentum: 0.75,
                rho: 0.75,
                initial_step: 2.0,
                eot: options.eot.unwrap_or(1).max(1),
            },
            name,
        })
    }
}

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
    super::loss::cross_entropy_objective(logits, labels, targets)
}

struct Rows {
    indices: Vec<usize>,
    step: Vec<usize>,
    restart: Vec<usize>,
    queries: Vec<u64>,
    since_check: Vec<usize>,
    interval: Vec<usize>,
    increases: Vec<usize>,
    reduced_last_check: Vec<bool>,
    x0: Tensor,
    labels: Tensor,
    /// Targets of the loss (APGD-T's current target, or the goal's target).
    loss_targets: Option<Tensor>,
    /// Targets of the goal (success test), for targeted goals.
    goal_targets: Option<Tensor>,
    /// Classes by decreasing clean logit (APGD-T).
    ranking: Option<Tensor>,
    x_adv: Tensor,
    x_prev: Tensor,
    step_size: Tensor,
    prev_loss: Tensor,
    loss_best: Tensor,
    loss_best_last_check: Tensor,
    x_best_loss: Tensor,
    grad_best: Tensor,
    best_margin: Tensor,
    x_best_margin: Tensor,
}

impl Rows {
    fn select(&self, keep: &[i64]) -> Rows {
        let device = self.x0.device();
        let k = Tensor::from_slice(keep).to_device(device);
        let s = |t: &Tensor| t.index_select(0, &k);
        let v = |v: &[usize]| keep.iter().map(|&i| v[i as usize]).collect::<Vec<_>>();
        Rows {
            indices: v(&self.indices),
            step: v(&self.step),
            restart: v(&self.restart),
            queries: keep.iter().map(|&i| self.queries[i as usize]).collect(),
            since_check: v(&self.since_check),
            interval: v(&self.interval),
            increases: v(&self.increases),
            reduced_last_check: keep.iter().map(|&i| self.reduced_last_check[i as usize]).collect(),
            x0: s(&self.x0),
            labels: s(&self.labels),
            loss_targets: self.loss_targets.as_ref().map(s),
            goal_targets: self.goal_targets.as_ref().map(s),
            ranking: self.ranking.as_ref().map(s),
            x_adv: s(&self.x_adv),
            x_prev: s(&self.x_prev),
            step_size: s(&self.step_size),
            prev_loss: s(&self.prev_loss),
            loss_best: s(&self.loss_best),
            loss_best_last_check: s(&self.loss_best_last_check),
            x_best_loss: s(&self.x_best_loss),
            grad_best: s(&self.grad_best),
            best_margin: s(&self.best_margin),
            x_best_margin: s(&self.x_best_margin),
        }
    }

    fn concat(self, o: Rows) -> Rows {
        let c = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 0);
        let co = |a: &Option<Tensor>, b: &Option<Tensor>| match (a, b) {
            (Some(a), Some(b)) => Some(c(a, b)),
            _ => None,
        };
        let j = |mut a: Vec<usize>, b: Vec<usize>| {
            a.extend(b);
            a
        };
        let mut queries = self.queries;
        queries.extend(o.queries);
        let mut reduced = self.reduced_last_check;
        reduced.extend(o.reduced_last_check);
        Rows {
            x0: c(&self.x0, &o.x0),
            labels: c(&self.labels, &o.labels),
            loss_targets: co(&self.loss_targets, &o.loss_targets),
            goal_targets: co(&self.goal_targets, &o.goal_targets),
            ranking: co(&self.ranking, &o.ranking),
            x_adv: c(&self.x_adv, &o.x_adv),
            x_prev: c(&self.x_prev, &o.x_prev),
            step_size: c(&self.step_size, &o.step_size),
            prev_loss: c(&self.prev_loss, &o.prev_loss),
            loss_best: c(&self.loss_best, &o.loss_best),
            loss_best_last_check: c(&self.loss_best_last_check, &o.loss_best_last_check),
            x_best_loss: c(&self.x_best_loss, &o.x_best_loss),
            grad_best: c(&self.grad_best, &o.grad_best),
            best_margin: c(&self.best_margin, &o.best_margin),
            x_best_margin: c(&self.x_best_margin, &o.x_best_margin),
            indices: j(self.indices, o.indices),
            step: j(self.step, o.step),
            restart: j(self.restart, o.restart),
            since_check: j(self.since_check, o.since_check),
            interval: j(self.interval, o.interval),
            increases: j(self.increases, o.increases),
            queries,
            reduced_last_check: reduced,
        }
    }
}

impl Apgd {
    fn first_interval(&self) -> usize {
        ((0.22 * self.config.steps as f64) as usize).max(1)
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
        let x_adv = start_point(threat, &x0, &keys, StartPoint::Random, 0);
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
            increases: vec![0; n],
            reduced_last_check: vec![true; n],
            step: vec![0; n],
            restart: restarts,
            queries,
            x_prev: x_adv.copy(),
            step_size: full(self.config.initial_step * threat.eps),
            prev_loss: full(f64::NEG_INFINITY),
            loss_best: full(f64::NEG_INFINITY),
            loss_best_last_check: full(f64::NEG_INFINITY),
            x_best_loss: x_adv.copy(),
            grad_best: x_adv.zeros_like(),
            best_margin: full(f64::INFINITY),
            x_best_margin: x0.copy(),
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
        let threat = ctx.threat;
        let cfg = &self.config;
        let batch = ctx.batch_size.max(1);
        let runs = self.runs(ctx.model.num_classes());
        let mut rows: Option<Rows> = None;
        let mut exhausted = false;
        loop {
            let active = rows.as_ref().map_or(0, |r| r.indices.len());
            if active < batch && !exhausted {
                match source.take(batch - active)? {
                    None => exhausted = true,
                    Some(chunk) => {
                        let n = chunk.indices.len();
                        let mut queries = vec![0u64; n];
                        let ranking = if cfg.loss == ApgdLoss::TargetedDlr {
                            for q in queries.iter_mut() {
                                *q += 1;
                            }
                            let logits = ctx.model.logits(&chunk.x)?;
                            // Classes by decreasing logit, the label first (it is the clean
                            // prediction for every sample that reaches an attack).
                            let masked = logits.to_kind(Kind::Float).scatter_value(
                                1,
                                &chunk.labels.unsqueeze(1),
                                f64::INFINITY,
                            );
                            Some(masked.argsort(1, true))
                        } else {
                            None
                        };
                        let fresh = self.fresh_state(
                            ctx,
                            chunk.indices,
                            chunk.x,
                            chunk.labels,
                            chunk.targets,
                            ranking,
                            vec![0; n],
                            queries,
                        );
                        rows = Some(match rows.take() {
                            None => fresh,
                            Some(old) => old.concat(fresh),
                        });
                        continue;
                    }
                }
            }
            let Some(r) = rows.as_mut() else { break };
            if r.indices.is_empty() {
                break;
            }
            let lt = r.loss_targets.as_ref();
            let labels = &r.labels;
            let loss_kind = cfg.loss;
            let objective = |logits: &Tensor| match loss_kind {
                ApgdLoss::Ce => ce_loss(logits, labels, lt),
                ApgdLoss::Dlr | ApgdLoss::TargetedDlr => dlr_loss(logits, labels, lt),
            };
            let (mut loss, mut logits, mut grad) =
                ctx.model.loss_and_input_grad(&r.x_adv, &objective)?;
            for _ in 1..cfg.eot {
                let (l, z, g) = ctx.model.loss_and_input_grad(&r.x_adv, &objective)?;
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
            let view = per_sample_view(&r.x_adv);
            let gt = r.goal_targets.as_ref();
            let m = margin(&logits, &r.labels, gt);
            let improved_margin = m.lt_tensor(&r.best_margin);
            r.best_margin = m.minimum(&r.best_margin);
            r.x_best_margin =
                r.x_adv.where_self(&improved_margin.view(view.as_slice()), &r.x_best_margin);
            let success: Vec<bool> = Vec::try_from(success_mask(&logits, &r.labels, gt))?;

            // Loss bookkeeping: best point, increases since the last checkpoint.
            let loss = loss.to_kind(Kind::Float);
            let increased: Vec<bool> = Vec::try_from(loss.gt_tensor(&r.prev_loss))?;
            let better = loss.gt_tensor(&r.loss_best);
            r.x_best_loss = r.x_adv.where_self(&better.view(view.as_slice()), &r.x_best_loss);
            r.grad_best = grad.where_self(&better.view(view.as_slice()), &r.grad_best);
            r.loss_best = loss.maximum(&r.loss_best);
            r.prev_loss = loss.shallow_clone();

            // Checkpoints: halve the step and go back to the best point where progress stalled.
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
            let checked: Vec<bool> =
                (0..n).map(|i| r.step[i] > 0 && r.since_check[i] == 0).collect();
            let checked_t = Tensor::from_slice(&checked).to_device(r.x0.device());
            r.loss_best_last_check = r.loss_best.where_self(&checked_t, &r.loss_best_last_check);
            let halve_t = Tensor::from_slice(&halve).to_device(r.x0.device());
            r.step_size = r.step_size.where_self(&halve_t.logical_not(), &(&r.step_size * 0.5));
            let hv = halve_t.view(view.as_slice());
            let x_cur = r.x_best_loss.where_self(&hv, &r.x_adv);
            let g_cur = r.grad_best.where_self(&hv, &grad);

            // The APGD step with momentum (none on the first step of a run).
            let first: Vec<f32> =
                r.step.iter().map(|&s| if s == 0 { 1.0 } else { cfg.momentum as f32 }).collect();
            let a = Tensor::from_slice(&first).to_device(r.x0.device()).view(view.as_slice());
            let eta = r.step_size.view(view.as_slice());
            let z =
                threat.project(&r.x0, &(&x_cur + steepest_direction(threat.norm, &g_cur) * &eta));
            let x_next = threat.project(
                &r.x0,
                &(&x_cur + (&z - &x_cur) * &a + (&x_cur - &r.x_prev) * (a.ones_like() - &a)),
            );

            let mut keep: Vec<i64> = Vec::new();
            let mut restarting: Vec<i64> = Vec::new();
            for (i, &succeeded) in success.iter().enumerate() {
                if succeeded {
                    sink(AttackRecord {
                        index: r.indices[i],
                        x_adv: r.x_adv.get(i as i64),
                        claimed_success: true,
                        step: Some(r.step[i]),
                        restart: r.restart[i],
                        queries: r.queries[i],
                        min_norm: None,
                    })?;
                } else if r.step[i] >= cfg.steps {
                    if r.restart[i] + 1 < runs {
                        restarting.push(keep.len() as i64);
                        keep.push(i as i64);
                    } else {
                        sink(AttackRecord {
                            index: r.indices[i],
                            x_adv: r.x_best_margin.get(i as i64),
                            claimed_success: false,
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
            r.x_prev = x_cur;
            r.x_adv = x_next;
            let mut next = r.select(&keep);
            if !restarting.is_empty() {
                // Restarted rows get a fresh state (new start point, or APGD-T's next target),
                // keeping their margin-best point and query count.
                let again = next.select(&restarting);
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
                let stay: Vec<i64> =
                    (0..next.indices.len() as i64).filter(|i| !restarting.contains(i)).collect();
                next = next.select(&stay).concat(fresh);
            }
            *r = next;
        }
        Ok(())
    }
}
