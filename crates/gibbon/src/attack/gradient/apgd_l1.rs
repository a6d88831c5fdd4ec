//! APGD's L1 variant (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks
//! on image classifiers"), as AutoAttack's standard L1 suite runs it.
//!
//! - Adaptive sparsity: a step moves the top-k gradient coordinates by sign, scaled so that the
//!   step has L1 norm equal to the step size, then projects exactly onto ball ∩ box. k starts at
//!   the L0 size of the start perturbation / 1.5 (20% of the coordinates without a start
//!   perturbation) and, at every checkpoint, becomes the L0 size of the best perturbation / 1.5.
//! - Step size: initial 1·ε; checkpoints every 4% of the iterations; at a checkpoint the step is
//!   divided by 1.5 and clamped to [ε/10, ε], except where the sparsity of the best point shrank
//!   by more than 5%: there it is reset to ε and the search goes back to the best point. No
//!   momentum.
//! - Large-ε schedule: 30% of the iterations at 3ε, 30% at 2ε, the last 40% at ε, each phase
//!   starting from the best point of the previous one projected onto its ball (the first from a
//!   Gaussian start projected onto the 3ε ball). Only the last phase's points can be returned.
use super::apgd::{Apgd, Rows};
use crate::threat::ThreatModel;
use tch::{Kind, Tensor};

/// Initial step size as a multiple of ε.
pub const L1_INITIAL_STEP: f64 = 1.0;
/// Checkpoint interval as a fraction of a phase's iterations.
pub const L1_CHECK_FRACTION: f64 = 0.04;
/// Sparsity without a start perturbation: the fraction of coordinates a step moves.
pub const L1_INITIAL_SPARSITY: f64 = 0.2;
/// k = L0 of the best perturbation / this.
pub const L1_SPARSITY_DIVISOR: f64 = 1.5;
/// The step is divided by this at a checkpoint where the sparsity did not shrink.
pub const L1_STEP_DIVISOR: f64 = 1.5;
/// The step never falls below ε / this.
pub const L1_MIN_STEP_DIVISOR: f64 = 10.0;
/// The sparsity "shrank" when the new L0 is below this fraction of the last one.
pub const L1_SPARSITY_DROP: f64 = 0.95;
/// The large-ε schedule: (radius as a multiple of ε, share of the iterations).
pub const L1_LARGE_EPS: [(f64, f64); 3] = [(3.0, 0.3), (2.0, 0.3), (1.0, 0.4)];

/// The phases of a run of `steps` iterations: the first iteration of each and its radius
/// multiple. Fewer than 3 iterations run one phase at ε.
pub fn phases(steps: usize) -> Vec<(usize, f64)> {
    if steps < L1_LARGE_EPS.len() {
        return vec![(0, 1.0)];
    }
    let first = (L1_LARGE_EPS[0].1 * steps as f64).ceil() as usize;
    let second = (L1_LARGE_EPS[1].1 * steps as f64).ceil() as usize;
    vec![(0, L1_LARGE_EPS[0].0), (first, L1_LARGE_EPS[1].0), (first + second, L1_LARGE_EPS[2].0)]
}

/// The radius multiple and the iterations of the phase that iteration `step` belongs to.
pub fn phase_at(steps: usize, step: usize) -> (f64, usize) {
    let p = phases(steps);
    let k = p.iter().rposition(|&(start, _)| step >= start).unwrap_or(0);
    let end = p.get(k + 1).map_or(steps, |&(s, _)| s);
    (p[k].1, (end - p[k].0).max(1))
}

/// Iteration `step` starts a new phase (other than the first).
pub fn starts_phase(steps: usize, step: usize) -> bool {
    step > 0 && phases(steps).iter().any(|&(start, _)| start == step)
}

/// The checkpoint interval of a phase of `iterations` iterations.
pub fn check_interval(iterations: usize) -> usize {
    ((L1_CHECK_FRACTION * iterations as f64) as usize).max(1)
}

/// Per-sample L0 size of `delta` `[B, ...]` (float `[B]`).
pub fn l0(delta: &Tensor) -> Tensor {
    delta.flatten(1, -1).ne(0.0).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// The sparse step direction: the sign of the gradient on its top `topk` fraction of
/// coordinates (by magnitude, ties included), divided by their number, so that the direction
/// has L1 norm 1.
pub fn sparse_direction(grad: &Tensor, topk: &Tensor) -> Tensor {
    let flat = grad.flatten(1, -1);
    let n = flat.size()[1];
    let (sorted, _) = flat.abs().sort(1, false);
    let position = ((topk.ones_like() - topk) * n as f64)
        .clamp(0.0, (n - 1) as f64)
        .to_kind(Kind::Int64)
        .unsqueeze(1);
    let threshold = sorted.gather(1, &position, false);
    let mask = flat.abs().ge_tensor(&threshold).to_kind(Kind::Float);
    let signs = flat.sign() * mask;
    let count = signs.abs().sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    (signs / (count + 1e-10)).view(grad.size().as_slice())
}

/// Projects every row of `candidate` onto its own ball (radius `mults[i]`·ε) ∩ box.
pub fn project_rows(
    threat: &ThreatModel,
    x0: &Tensor,
    candidate: &Tensor,
    mults: &[f64],
) -> Tensor {
    let mut distinct: Vec<f64> = mults.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() == 1 {
        let t = ThreatModel { eps: threat.eps * distinct[0], ..threat.clone() };
        return t.project(x0, candidate);
    }
    let mut out = candidate.copy();
    for m in distinct {
        let rows: Vec<i64> =
            (0..mults.len()).filter(|&i| mults[i] == m).map(|i| i as i64).collect();
        let idx = Tensor::from_slice(&rows).to_device(x0.device());
        let t = ThreatModel { eps: threat.eps * m, ..threat.clone() };
        let p = t.project(&x0.index_select(0, &idx), &candidate.index_select(0, &idx));
        out = out.index_copy(0, &idx, &p);
    }
    out
}

/// The sparsity of a start point `x` around `x0`: L0 / n / 1.5, or 20% at the clean point.
pub fn start_sparsity(x0: &Tensor, x: &Tensor) -> (Tensor, Tensor) {
    let n = x0.flatten(1, -1).size()[1] as f64;
    let sp = l0(&(x - x0));
    let topk = (&sp / (n * L1_SPARSITY_DIVISOR))
        .where_self(&sp.gt(0.0), &sp.full_like(L1_INITIAL_SPARSITY));
    let sp_old = sp.where_self(&sp.gt(0.0), &sp.full_like(n));
    (topk, sp_old)
}

/// A checkpoint for rows `checked`: the new sparsity from the best points, the step-size rule,
/// and the rows that go back to their best point (returned mask). `radius[i]` is the row's
/// current ball radius.
pub fn checkpoint(
    x0: &Tensor,
    x_best: &Tensor,
    checked: &Tensor,
    radius: &Tensor,
    topk: &mut Tensor,
    sp_old: &mut Tensor,
    step_size: &mut Tensor,
) -> Tensor {
    let n = x0.flatten(1, -1).size()[1] as f64;
    let sp = l0(&(x_best - x0));
    let shrank = (&sp / sp_old.clamp_min(1.0)).lt(L1_SPARSITY_DROP).logical_and(checked);
    let new_topk = &sp / (n * L1_SPARSITY_DIVISOR);
    *topk = new_topk.where_self(checked, topk);
    let stepped = (&*step_size / L1_STEP_DIVISOR)
        .maximum(&(radius * (L1_INITIAL_STEP / L1_MIN_STEP_DIVISOR)))
        .minimum(&(radius * L1_INITIAL_STEP));
    let reset = radius * L1_INITIAL_STEP;
    let next = reset.where_self(&shrank, &stepped);
    *step_size = next.where_self(checked, step_size);
    *sp_old = sp.where_self(checked, sp_old);
    shrank
}

impl Apgd {
    /// L1 checkpoints (see [`super::apgd_l1`]): every row whose phase interval is up gets the
    /// sparsity and step-size rule; returns the rows that go back to their best point.
    pub(in crate::attack) fn checkpoints_l1(
        &self,
        r: &mut Rows,
        mults: &[f64],
        eps: f64,
    ) -> Tensor {
        let checked: Vec<bool> = (r.since_check.iter_mut().zip(&r.step).zip(&r.interval))
            .map(|((since, &step), &interval)| {
                if step == 0 {
                    return false;
                }
                *since += 1;
                let due = *since >= interval;
                if due {
                    *since = 0;
                }
                due
            })
            .collect();
        let device = r.x0.device();
        let checked = Tensor::from_slice(&checked).to_device(device);
        let radius: Vec<f32> = mults.iter().map(|&k| (k * eps) as f32).collect();
        let radius = Tensor::from_slice(&radius).to_device(device);
        let Rows { x0, x_best_loss, topk, sp_old, step_size, .. } = r;
        checkpoint(x0, x_best_loss, &checked, &radius, topk, sp_old, step_size)
    }

    /// Rows whose next iteration starts an L1 phase continue from their best point projected
    /// onto the phase's ball, with the search state of a fresh run.
    pub(in crate::attack) fn enter_phases(&self, threat: &ThreatModel, r: &mut Rows) {
        let steps = self.config.steps;
        let rows: Vec<i64> = (0..r.indices.len())
            .filter(|&i| starts_phase(steps, r.step[i]))
            .map(|i| i as i64)
            .collect();
        if rows.is_empty() {
            return;
        }
        let device = r.x0.device();
        let idx = Tensor::from_slice(&rows).to_device(device);
        let mults: Vec<f64> = rows.iter().map(|&i| phase_at(steps, r.step[i as usize]).0).collect();
        let x0 = r.x0.index_select(0, &idx);
        let start = project_rows(threat, &x0, &r.x_best_loss.index_select(0, &idx), &mults);
        let (topk, sp_old) = start_sparsity(&x0, &start);
        let radius: Vec<f32> =
            mults.iter().map(|&k| (k * threat.eps * self.config.initial_step) as f32).collect();
        let radius = Tensor::from_slice(&radius).to_device(device);
        let minus_inf = radius.full_like(f64::NEG_INFINITY);
        r.x_adv = r.x_adv.index_copy(0, &idx, &start);
        r.x_prev = r.x_prev.index_copy(0, &idx, &start);
        r.x_best_loss = r.x_best_loss.index_copy(0, &idx, &start);
        r.grad_best = r.grad_best.index_fill(0, &idx, 0.0);
        r.topk = r.topk.index_copy(0, &idx, &topk);
        r.sp_old = r.sp_old.index_copy(0, &idx, &sp_old);
        r.step_size = r.step_size.index_copy(0, &idx, &radius);
        for t in [&mut r.prev_loss, &mut r.loss_best, &mut r.loss_best_last_check] {
            *t = t.index_copy(0, &idx, &minus_inf);
        }
        for &i in &rows {
            let i = i as usize;
            r.since_check[i] = 0;
            r.increases[i] = 0;
            r.reduced_last_check[i] = true;
            r.interval[i] = check_interval(phase_at(steps, r.step[i]).1);
        }
    }
}
