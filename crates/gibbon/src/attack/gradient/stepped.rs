//! The engine behind FGSM, BIM and PGD: projected steepest-ascent steps with optional random
//! start and restarts, run as a pool of independent rows.
//!
//! Each row of the working batch is one sample at its own step and restart. After every
//! forward/backward pass, rows whose current point already fools the model leave the batch
//! (their first success is returned) and rows that used up their budget return their best
//! iterate (lowest margin over all steps and restarts, never simply the last). Freed rows are
//! refilled from the [`SampleSource`], so every pass is spent on samples that are still unbroken.
//!
//! With [`SteppedConfig::full_budget`] (for transfer attacks) rows do not leave at their first
//! success: every row runs all steps of all restarts and returns its best iterate, which is then
//! the most confidently adversarial point found rather than one barely across the boundary.
use crate::attack::loss::{confident_success, cross_entropy_objective, margin};
use crate::attack::pool::{drive, row_set, Keep, RowSet};
use crate::attack::{AttackContext, AttackRecord, Chunk, SampleSource};
use crate::error::Result;
use crate::model::precision::{exact_where, refining};
use crate::random::{stacked, RngKey};
use crate::tensor::per_sample_view;
use crate::threat::{Norm, ThreatModel};
use tch::{Kind, Tensor};

/// Parameters of a stepped attack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SteppedConfig {
    /// Gradient steps per restart.
    pub steps: usize,
    /// Number of runs from different starts.
    pub restarts: usize,
    /// Step size in the threat model's norm.
    pub alpha: f64,
    /// Where each restart starts.
    pub start: StartPoint,
    /// MI-FGSM's decay μ: steps follow the accumulated L1-normalised gradient
    /// `g ← μ·g + ∇/‖∇‖₁` instead of the current gradient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// DI-FGSM's probability of the random resize-and-pad input transform, applied to the input
    /// of each gradient computation (success is always judged on the untransformed input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diversity: Option<f64>,
    /// Take every step of every restart even after success and return the lowest-margin iterate
    /// (see [`crate::attack::AttackOptions::full_budget`]). Shown in `params` only when set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub full_budget: bool,
    /// A sample stops early only when its logit margin is below -κ (see
    /// [`crate::attack::AttackOptions::confidence`]). Shown in `params` only when set.
    #[serde(skip_serializing_if = "is_zero")]
    pub confidence: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Where the restarts of a stepped attack start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartPoint {
    /// Every restart starts at the clean input (deterministic).
    Clean,
    /// Every restart starts at a random point of the ball (Madry et al.; torchattacks' default).
    Random,
    /// The first restart starts at the clean input, later ones at random points. On smooth
    /// models the clean start converges to the boundary fastest (a random start leaves an
    /// orthogonal component that L2 projections remove only geometrically); random restarts
    /// then guard against gradient masking at the data point.
    CleanThenRandom,
}

/// A projected-gradient attack driven by a [`SteppedConfig`].
#[derive(Debug, Clone)]
pub struct SteppedAttack {
    /// The registry name (`fgsm`, `bim`, `pgd`, `mifgsm`, `difgsm`).
    pub name: &'static str,
    /// The parameters.
    pub config: SteppedConfig,
}

impl crate::attack::Attack for SteppedAttack {
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
        self.run_rows(ctx, source, sink)
    }
}

struct Rows {
    indices: Vec<usize>,
    step: Vec<usize>,
    restart: Vec<usize>,
    queries: Vec<u64>,
    x0: Tensor,
    labels: Tensor,
    targets: Option<Tensor>,
    x_adv: Tensor,
    best_x: Tensor,
    best_margin: Tensor,
    /// Step and restart at which `best_x` was found.
    best_step: Vec<usize>,
    best_restart: Vec<usize>,
    /// Accumulated gradient (momentum attacks; zeros otherwise).
    velocity: Tensor,
}

row_set!(Rows {
    indices,
    step,
    restart,
    queries,
    x0,
    labels,
    targets,
    x_adv,
    best_x,
    best_margin,
    best_step,
    best_restart,
    velocity,
});

/// Fraction of coordinates an L1 step moves (sparse steepest ascent, as in Tramèr & Boneh 2019).
const L1_STEP_FRACTION: f64 = 0.01;

/// The start point of a restart: the clean input or a random point of the ball (per key).
pub(in crate::attack) fn start_point(
    threat: &ThreatModel,
    x0: &Tensor,
    keys: &[RngKey],
    start: StartPoint,
    restart: usize,
) -> Tensor {
    let random = match start {
        StartPoint::Clean => false,
        StartPoint::Random => true,
        StartPoint::CleanThenRandom => restart > 0,
    };
    if !random || threat.eps == 0.0 {
        return x0.copy();
    }
    let shape = &x0.size()[1..];
    let device = x0.device();
    let eps = threat.eps;
    let delta = match threat.norm {
        Norm::Linf => {
            stacked(keys, shape, device, |k, n| k.stream(1).uniform(n)) * (2.0 * eps) - eps
        }
        Norm::L2 | Norm::L1 => {
            let dir = stacked(keys, shape, device, |k, n| k.stream(1).normal(n));
            let dir = match threat.norm {
                Norm::L1 => dir.sign() * dir.abs().square(),
                _ => dir,
            };
            let radius = stacked(keys, &[], device, |k, _| k.stream(2).uniform(1)) * eps;
            let norms = threat.norm.per_sample(&dir).to_kind(Kind::Float).clamp_min(1e-12);
            &dir * (radius / norms).view(per_sample_view(x0).as_slice())
        }
    };
    threat.project(x0, &(x0 + delta))
}

/// The steepest-ascent direction of unit size in `norm` (sparse for L1).
pub(crate) fn steepest_direction(norm: Norm, grad: &Tensor) -> Tensor {
    match norm {
        Norm::Linf => grad.sign(),
        Norm::L2 => {
            let n = Norm::L2.per_sample(grad).to_kind(Kind::Float).clamp_min(1e-12);
            grad / n.view(per_sample_view(grad).as_slice())
        }
        Norm::L1 => {
            let flat = grad.flatten(1, -1);
            let d = flat.size()[1];
            let k = ((d as f64 * L1_STEP_FRACTION).ceil() as i64).clamp(1, d);
            let (top, _) = flat.abs().topk(k, 1, true, true);
            let threshold = top.narrow(1, k - 1, 1);
            let mask = flat.abs().ge_tensor(&threshold).to_kind(Kind::Float);
            let count = mask.sum_dim_intlist([1i64].as_slice(), true, Kind::Float).clamp_min(1.0);
            (flat.sign() * mask / count).view(grad.size().as_slice())
        }
    }
}

/// DI-FGSM's input transform (Xie et al. 2019), per sample and shape-preserving: with
/// probability `p` the image is shrunk to a random size in [0.9·H, H] × [0.9·W, W] (nearest
/// neighbour) and zero-padded back to H × W at a random offset. Randomness comes from `keys`.
pub(in crate::attack) fn input_diversity(x: &Tensor, keys: &[RngKey], p: f64) -> Result<Tensor> {
    if x.dim() != 4 {
        return Err(crate::error::GibbonError::invalid(
            "attack",
            format!("input diversity needs image inputs [C, H, W], got {:?}", &x.size()[1..]),
        ));
    }
    let (h, w) = (x.size()[2], x.size()[3]);
    let rows: Vec<Tensor> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let u = key.uniform(4);
            let xi = x.narrow(0, i as i64, 1);
            if u[0] >= p {
                return xi;
            }
            let scale = 0.9 + 0.1 * u[1];
            let sh = ((h as f64 * scale).floor() as i64).clamp(1, h);
            let sw = ((w as f64 * scale).floor() as i64).clamp(1, w);
            let small = xi.upsample_nearest2d([sh, sw], None, None);
            let top = ((u[2] * (h - sh + 1) as f64) as i64).min(h - sh);
            let left = ((u[3] * (w - sw + 1) as f64) as i64).min(w - sw);
            small.constant_pad_nd([left, w - sw - left, top, h - sh - top])
        })
        .collect();
    Ok(Tensor::cat(&rows, 0))
}

/// The input gradient of `objective` through [`input_diversity`].
fn diverse_input_grad(
    ctx: &AttackContext<'_>,
    x: &Tensor,
    keys: &[RngKey],
    p: f64,
    objective: &dyn Fn(&Tensor) -> Tensor,
    exact: &[bool],
) -> Result<Tensor> {
    let xg = x.detach().set_requires_grad(true);
    let logits = ctx.model.logits_padded_rows(&input_diversity(&xg, keys, p)?, exact)?;
    let total = objective(&logits).sum(Kind::Float);
    let grads = Tensor::f_run_backward(&[total], &[&xg], false, false)?;
    grads
        .into_iter()
        .next()
        .ok_or_else(|| crate::error::GibbonError::Internal("no gradient".into()))
}

impl SteppedAttack {
    /// Runs the attack (see the module docs).
    pub fn run_rows(
        &self,
        ctx: &AttackContext<'_>,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        drive(
            source,
            ctx.batch_size,
            |chunk| Ok(self.admit(ctx, chunk)),
            |r| self.round(ctx, r, sink),
        )
    }

    /// The rows of new samples, at step 0 of restart 0.
    fn admit(&self, ctx: &AttackContext<'_>, chunk: Chunk) -> Rows {
        let keys: Vec<RngKey> = chunk.indices.iter().map(|&i| RngKey::new(ctx.seed, i)).collect();
        let x_adv = start_point(ctx.threat, &chunk.x, &keys, self.config.start, 0);
        let n = chunk.indices.len();
        Rows {
            step: vec![0; n],
            restart: vec![0; n],
            best_step: vec![0; n],
            best_restart: vec![0; n],
            queries: vec![0; n],
            best_x: chunk.x.copy(),
            best_margin: Tensor::full([n as i64], f64::INFINITY, (Kind::Float, chunk.x.device())),
            indices: chunk.indices,
            x0: chunk.x,
            labels: chunk.labels,
            targets: chunk.targets,
            velocity: x_adv.zeros_like(),
            x_adv,
        }
    }

    /// The loss gradient at every row's current point (through the random input transform for
    /// DI-FGSM, accumulated for MI-FGSM), with the logits at the point.
    fn gradient(&self, ctx: &AttackContext<'_>, r: &mut Rows) -> Result<(Tensor, Tensor)> {
        let targets = r.targets.as_ref();
        let labels = &r.labels;
        let objective = |logits: &Tensor| cross_entropy_objective(logits, labels, targets);
        let exact: Vec<bool> = r.step.iter().map(|&s| refining(s, self.config.steps)).collect();
        let (logits, grad) = match self.config.diversity {
            None => {
                let (_, logits, grad) =
                    ctx.model.loss_and_input_grad_rows(&r.x_adv, &objective, &exact)?;
                (logits, grad)
            }
            Some(p) => {
                let keys: Vec<RngKey> = (0..r.indices.len())
                    .map(|i| {
                        RngKey::new(ctx.seed, r.indices[i])
                            .restart(r.restart[i])
                            .step(r.step[i])
                            .stream(20)
                    })
                    .collect();
                let grad = diverse_input_grad(ctx, &r.x_adv, &keys, p, &objective, &exact)?;
                (ctx.model.logits(&r.x_adv)?, grad)
            }
        };
        let grad = match self.config.momentum {
            None => grad,
            Some(mu) => {
                let l1 = Norm::L1.per_sample(&grad).to_kind(Kind::Float).clamp_min(1e-12);
                r.velocity =
                    &r.velocity * mu + grad / l1.view(per_sample_view(&r.x_adv).as_slice());
                r.velocity.shallow_clone()
            }
        };
        Ok((logits, grad))
    }

    /// One step for every row: best-iterate bookkeeping, retirement of broken rows and of rows
    /// whose budget is spent, restarts, and the projected step of the rows that stay.
    fn round(
        &self,
        ctx: &AttackContext<'_>,
        r: &mut Rows,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let (threat, cfg) = (ctx.threat, &self.config);
        let (logits, grad) = self.gradient(ctx, r)?;
        let targets = r.targets.as_ref();
        let kappa = margin(&logits, &r.labels, targets) + cfg.confidence;
        let logits = exact_where(ctx.model, &r.x_adv, &logits, &kappa)?;
        for q in r.queries.iter_mut() {
            *q += 1;
        }
        let m = margin(&logits, &r.labels, targets);
        let improved = m.lt_tensor(&r.best_margin);
        r.best_margin = m.minimum(&r.best_margin);
        r.best_x =
            r.x_adv.where_self(&improved.view(per_sample_view(&r.x_adv).as_slice()), &r.best_x);
        for (i, better) in Vec::<bool>::try_from(&improved)?.into_iter().enumerate() {
            if better {
                r.best_step[i] = r.step[i];
                r.best_restart[i] = r.restart[i];
            }
        }
        let success: Vec<bool> =
            Vec::try_from(confident_success(&logits, &r.labels, targets, cfg.confidence))?;
        // The returned best iterate succeeded if its margin is negative (with the full budget,
        // or with a margin κ that was not reached).
        let best_success: Vec<bool> = Vec::try_from(r.best_margin.lt(0.0))?;
        let stepped =
            threat.project(&r.x0, &(&r.x_adv + steepest_direction(threat.norm, &grad) * cfg.alpha));
        let mut keep: Vec<i64> = Vec::new();
        let mut restarting: Vec<i64> = Vec::new();
        for (i, &succeeded) in success.iter().enumerate() {
            if succeeded && !cfg.full_budget {
                let x = r.x_adv.get(i as i64);
                sink(AttackRecord::stepped(
                    r.indices[i],
                    x,
                    Some(r.step[i]),
                    r.restart[i],
                    r.queries[i],
                ))?;
            } else if r.step[i] >= cfg.steps {
                // Restarts go only to samples still unbroken (with the full budget, a restart
                // that ended adversarial has done its job).
                if r.restart[i] + 1 < cfg.restarts && !(cfg.full_budget && best_success[i]) {
                    r.restart[i] += 1;
                    r.step[i] = 0;
                    restarting.push(keep.len() as i64);
                    keep.push(i as i64);
                } else {
                    let claimed = best_success[i];
                    sink(AttackRecord {
                        index: r.indices[i],
                        x_adv: r.best_x.get(i as i64),
                        claimed_success: claimed,
                        step: claimed.then_some(r.best_step[i]),
                        restart: if claimed { r.best_restart[i] } else { r.restart[i] },
                        queries: r.queries[i],
                        min_norm: None,
                    })?;
                }
            } else {
                r.step[i] += 1;
                keep.push(i as i64);
            }
        }
        r.x_adv = stepped;
        let keep = Keep::new(keep, r.x0.device());
        *r = r.pick(&keep);
        if !restarting.is_empty() {
            self.restart(ctx, r, &restarting);
        }
        Ok(())
    }

    /// Moves the rows at positions `restarting` to the start point of their new restart.
    fn restart(&self, ctx: &AttackContext<'_>, r: &mut Rows, restarting: &[i64]) {
        let rt = Tensor::from_slice(restarting).to_device(r.x0.device());
        let keys: Vec<RngKey> = restarting
            .iter()
            .map(|&j| RngKey::new(ctx.seed, r.indices[j as usize]).restart(r.restart[j as usize]))
            .collect();
        let fresh =
            start_point(ctx.threat, &r.x0.index_select(0, &rt), &keys, self.config.start, 1);
        r.x_adv = r.x_adv.index_copy(0, &rt, &fresh);
        r.velocity = r.velocity.index_fill(0, &rt, 0.0);
    }
}
