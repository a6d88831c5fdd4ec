//! DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
//! fool deep neural networks"), multi-class, for the L2 and L∞ norms.
//!
//! At every step the differences `f_k = z_k - z_y` between the logit of a candidate class `k` and
//! the label's logit are linearized at the current point; the class with the smallest
//! `|f_k| / ‖∇f_k‖_dual` (dual norm: L2 for L2, L1 for L∞) has the nearest linearized boundary,
//! and the step goes there (`|f_k|/‖∇f_k‖₂² · ∇f_k` for L2, `|f_k|/‖∇f_k‖₁ · sign ∇f_k` for
//! L∞). As in the paper and Foolbox, the steps are accumulated into `p` and the iterate is
//! `clip(x + (1 + overshoot)·p)` to the input box. Unlike the paper, coordinates sitting at a face
//! of the box that the gradient pushes outwards are left out of the linearization (their
//! gradient entries are zeroed): they cannot move, and counting them makes every clipped step
//! fall short, so that plain DeepFool stalls on images with saturated pixels such as MNIST. The candidate classes are the `candidates`
//! classes with the highest clean logits (label included), as Foolbox does. For targeted goals
//! only `z_t - max_{k≠t} z_k` is linearized.
//!
//! One forward pass per step (counted as one query) and one backward pass per candidate class.
//! Defaults as in the paper, torchattacks and Foolbox: 50 steps, overshoot 0.02, 10 candidates.
//!
//! The ε of the threat model caps what is returned (see [`super`]): the first
//! adversarial iterate is returned when it lies in the ε-ball (unless `minimize`); with
//! `minimize`, the segment from the clean input to it is bisected to remove the overshoot.
use super::{cat, drive_min_norm, Finisher, Found, Refining, Sample};
use crate::attack::check_norm;
use crate::attack::loss::success_mask;
use crate::attack::{Attack, AttackContext, AttackOptions, AttackRecord, Chunk, SampleSource};
use crate::error::{GibbonError, Result};
use crate::tensor::per_sample_view;
use crate::threat::{Goal, Norm, ThreatModel};
use tch::{Kind, Tensor};

/// DeepFool's default number of steps.
pub const DEEPFOOL_STEPS: usize = 50;

/// Added to every step's length (input units, as Foolbox does) so that a point exactly on a
/// boundary (two tied logits, `f = 0`) still moves across it.
const CROSSING: f64 = 1e-4;

/// DeepFool parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeepFoolConfig {
    /// Maximum linearization steps per sample (50).
    pub steps: usize,
    /// Relative overshoot of the accumulated perturbation (0.02).
    pub overshoot: f64,
    /// Classes with the highest clean logits considered, the label included (10).
    pub candidates: usize,
    /// Keep minimizing after the first success (bisection towards the clean input).
    pub minimize: bool,
}

/// Multi-class DeepFool (L2 or L∞).
#[derive(Debug, Clone)]
pub struct DeepFool {
    /// Parameters.
    pub config: DeepFoolConfig,
}

impl DeepFool {
    /// DeepFool for `threat` (L2 or L∞); `threat.budget.steps` overrides the 50 steps.
    pub fn new(threat: &ThreatModel, options: &AttackOptions) -> Result<Self> {
        check_norm("deepfool", threat.norm)?;
        let steps = threat.budget.steps_or(DEEPFOOL_STEPS);
        if steps == 0 {
            return Err(GibbonError::invalid("steps", "must be at least 1"));
        }
        Ok(DeepFool {
            config: DeepFoolConfig {
                steps,
                overshoot: 0.02,
                candidates: 10,
                minimize: options.minimize,
            },
        })
    }
}

struct Row {
    sample: Sample,
    /// Other classes to linearize, by decreasing clean logit `[1, C-1]`; set on the first pass.
    others: Option<Tensor>,
    /// Accumulated perturbation `[1, ...]`.
    total: Tensor,
    /// Current iterate `[1, ...]`.
    x: Tensor,
    step: usize,
}

impl Attack for DeepFool {
    fn name(&self) -> &'static str {
        "deepfool"
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
        check_norm("deepfool", threat.norm)?;
        let finisher = Finisher { threat, minimize: self.config.minimize };
        let admit = |chunk: Chunk| {
            Ok(chunk
                .indices
                .iter()
                .enumerate()
                .map(|(i, &index)| {
                    let i = i as i64;
                    let x0 = chunk.x.narrow(0, i, 1);
                    Row {
                        total: x0.zeros_like(),
                        x: x0.copy(),
                        sample: Sample {
                            index,
                            label: chunk.labels.narrow(0, i, 1),
                            target: chunk.targets.as_ref().map(|t| t.narrow(0, i, 1)),
                            x0,
                            queries: 0,
                        },
                        others: None,
                        step: 0,
                    }
                })
                .collect())
        };
        drive_min_norm(ctx, &finisher, source, sink, admit, |rows, refining, sink| {
            self.step(ctx, &finisher, rows, refining, sink)
        })
    }
}

impl DeepFool {
    /// One DeepFool step for every searching row; returns the rows still searching.
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
        let x = cat(&rows.iter().map(|r| &r.x).collect::<Vec<_>>());
        let x0 = cat(&rows.iter().map(|r| &r.sample.x0).collect::<Vec<_>>());
        let labels = cat(&rows.iter().map(|r| &r.sample.label).collect::<Vec<_>>());
        let targets: Option<Vec<&Tensor>> = rows.iter().map(|r| r.sample.target.as_ref()).collect();
        let targets = targets.map(|t| cat(&t));
        if targets.is_none() && threat.goal != Goal::Untargeted {
            return Err(GibbonError::Internal("targeted goal without targets".into()));
        }
        let view = per_sample_view(&x);

        let xg = x.detach().set_requires_grad(true);
        let logits = ctx.model.logits_padded(&xg)?;
        let z = logits.detach().to_kind(Kind::Float);
        let classes = z.size()[1];
        let success: Vec<bool> = Vec::try_from(success_mask(&z, &labels, targets.as_ref()))?;

        // Candidate classes from the clean logits (every row's first pass is at the clean input).
        let n_others = (cfg.candidates as i64).clamp(2, classes) - 1;
        let mut rows = rows;
        for (i, row) in rows.iter_mut().enumerate() {
            if row.others.is_none() {
                let zi = z.narrow(0, i as i64, 1);
                let masked = zi.scatter_value(1, &row.sample.label.unsqueeze(1), f64::NEG_INFINITY);
                row.others = Some(masked.topk(n_others, 1, true, true).1);
            }
        }

        // The linearized functions: f < 0 until its boundary is crossed.
        let functions: Vec<Tensor> = match &targets {
            None => {
                let others =
                    cat(&rows.iter().filter_map(|r| r.others.as_ref()).collect::<Vec<_>>());
                let own = logits.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
                (0..n_others)
                    .map(|j| logits.gather(1, &others.narrow(1, j, 1), false).squeeze_dim(1) - &own)
                    .collect()
            }
            Some(t) => {
                let zt = logits.gather(1, &t.unsqueeze(1), false).squeeze_dim(1);
                let mask = z.zeros_like().scatter_value(1, &t.unsqueeze(1), f64::NEG_INFINITY);
                vec![zt - (&logits + mask).amax([1i64].as_slice(), false)]
            }
        };
        let b = rows.len() as i64;
        let device = x.device();
        let mut best_dist = Tensor::full([b], f64::INFINITY, (Kind::Float, device));
        let mut best_f = Tensor::zeros([b], (Kind::Float, device));
        let mut best_g = x.zeros_like();
        let count = functions.len();
        for (j, f) in functions.iter().enumerate() {
            let grads =
                Tensor::f_run_backward(&[f.sum(Kind::Float)], &[&xg], j + 1 < count, false)?;
            let g = grads
                .into_iter()
                .next()
                .ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
            // Coordinates at a face of the box that the gradient pushes outwards cannot move:
            // leave them out of the linearization (else the clipped step falls short).
            let blocked = x
                .le(threat.bounds.lo)
                .logical_and(&g.lt(0.0))
                .logical_or(&x.ge(threat.bounds.hi).logical_and(&g.gt(0.0)));
            let g = g.zeros_like().where_self(&blocked, &g);
            let f = f.detach().to_kind(Kind::Float);
            let dual = match threat.norm {
                Norm::Linf => Norm::L1.per_sample(&g),
                _ => Norm::L2.per_sample(&g),
            }
            .to_kind(Kind::Float);
            let dist = f.abs() / (dual + 1e-12);
            let better = dist.lt_tensor(&best_dist);
            best_dist = dist.where_self(&better, &best_dist);
            best_f = f.where_self(&better, &best_f);
            best_g = g.where_self(&better.view(view.as_slice()), &best_g);
        }
        let step = match threat.norm {
            Norm::Linf => {
                let l1 = Norm::L1.per_sample(&best_g).to_kind(Kind::Float);
                best_g.sign() * (best_f.abs() / (l1 + 1e-12) + CROSSING).view(view.as_slice())
            }
            _ => {
                let l2 = Norm::L2.per_sample(&best_g).to_kind(Kind::Float);
                &best_g / (&l2 + 1e-12).view(view.as_slice())
                    * (best_f.abs() / (l2 + 1e-12) + CROSSING).view(view.as_slice())
            }
        };
        let totals = cat(&rows.iter().map(|r| &r.total).collect::<Vec<_>>()) + step;
        let next =
            (&x0 + &totals * (1.0 + cfg.overshoot)).clamp(threat.bounds.lo, threat.bounds.hi);
        let norms: Vec<f64> = Vec::try_from(threat.distance(&x0, &x))?;

        let mut searching = Vec::with_capacity(rows.len());
        for (i, mut row) in rows.into_iter().enumerate() {
            let k = i as i64;
            row.sample.queries += 1;
            if success[i] {
                let found = Found { x: x.narrow(0, k, 1), norm: norms[i] };
                finisher.admit(row.sample, found, row.step, 0, refining, sink)?;
            } else if row.step >= cfg.steps {
                sink(AttackRecord {
                    index: row.sample.index,
                    x_adv: threat.project(&row.sample.x0, &row.x).squeeze_dim(0),
                    claimed_success: false,
                    step: None,
                    restart: 0,
                    queries: row.sample.queries,
                    min_norm: None,
                })?;
            } else {
                row.step += 1;
                row.total = totals.narrow(0, k, 1);
                row.x = next.narrow(0, k, 1);
                searching.push(row);
            }
        }
        Ok(searching)
    }
}
