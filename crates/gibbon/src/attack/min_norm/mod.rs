//! The finishing stage shared by the minimum-norm attacks (DeepFool, C&W): once an attack has
//! observed an adversarial point, decide what to return under the ε cap of the threat model.
//!
//! * With `minimize` the segment from the clean input to the adversarial point is bisected
//!   (`REFINE_STEPS` forward passes): the smallest adversarial point observed on it is kept. This
//!   removes the overshoot of DeepFool and the optimizer jitter of C&W around the boundary.
//! * If the smallest adversarial point lies inside the ε-ball it is returned as a success.
//!   Otherwise one more forward pass checks its projection onto ball ∩ box; if that is still
//!   adversarial it is returned as a success, else the projection is returned unbroken, with the
//!   norm of the smallest adversarial point found reported as `min_norm`.
//!
//! Every point returned as a success was itself evaluated by a forward pass here or in the
//! attack (the exact float32 tensor), so no success is claimed without being observed.
//!
//! The family's attacks: [`deepfool`] and [`cw`].
pub(in crate::attack) mod cw;
pub(in crate::attack) mod deepfool;

use super::loss::success_mask;
use super::pool::{drive, Pooled};
use super::{AttackContext, AttackRecord, Chunk, SampleSource};
use crate::error::Result;
use crate::threat::ThreatModel;
use tch::{Kind, Tensor};

/// Bisection steps on the segment clean → adversarial (minimize mode): the bracket shrinks to
/// 2⁻¹² of the segment.
pub(super) const REFINE_STEPS: usize = 12;

/// One sample of an attack pool: its clean input, label, optional target and queries so far.
pub(super) struct Sample {
    pub index: usize,
    /// Clean input `[1, ...]`.
    pub x0: Tensor,
    /// Label `[1]` (int64).
    pub label: Tensor,
    /// Target `[1]` for targeted goals.
    pub target: Option<Tensor>,
    /// Forward passes spent on the sample.
    pub queries: u64,
}

/// An adversarial point that was observed by a forward pass.
pub(super) struct Found {
    /// The point `[1, ...]`, exactly as evaluated.
    pub x: Tensor,
    /// Its distance to the clean input in the threat model's norm.
    pub norm: f64,
}

enum EpsProbe {
    NotYet,
    Failed(Tensor),
}

/// A sample in the finishing stage.
pub(super) struct Refining {
    sample: Sample,
    /// Step (and restart) at which the attack first found the adversarial point.
    step: usize,
    restart: usize,
    best: Found,
    delta: Tensor,
    lo: f64,
    hi: f64,
    probes_left: usize,
    probe: EpsProbe,
}

/// Concatenates per-sample tensors `[1, ...]` into a batch.
pub(super) fn cat(parts: &[&Tensor]) -> Tensor {
    Tensor::cat(parts, 0)
}

/// The pool of a minimum-norm attack: rows still searching, and rows in the finishing stage.
struct MinNormPool<R> {
    searching: Vec<R>,
    refining: Vec<Refining>,
}

impl<R> Pooled for MinNormPool<R> {
    fn len(&self) -> usize {
        self.searching.len() + self.refining.len()
    }
    fn join(mut self, fresh: Self) -> Self {
        self.searching.extend(fresh.searching);
        self.refining.extend(fresh.refining);
        self
    }
}

/// Runs a minimum-norm attack on the shared pool: new samples become searching rows
/// (`admit`); every round takes one search step on the searching rows (`step`, which hands
/// the rows that observed an adversarial point to the finisher and returns the others), then
/// one finishing pass.
pub(super) fn drive_min_norm<R>(
    ctx: &AttackContext<'_>,
    finisher: &Finisher<'_>,
    source: &mut dyn SampleSource,
    sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    mut admit: impl FnMut(Chunk) -> Result<Vec<R>>,
    mut step: impl FnMut(
        Vec<R>,
        &mut Vec<Refining>,
        &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<Vec<R>>,
) -> Result<()> {
    let fresh = |chunk| Ok(MinNormPool { searching: admit(chunk)?, refining: Vec::new() });
    drive(source, ctx.batch_size, fresh, |pool: &mut MinNormPool<R>| {
        if !pool.searching.is_empty() {
            let searching = std::mem::take(&mut pool.searching);
            pool.searching = step(searching, &mut pool.refining, &mut *sink)?;
        }
        finisher.pass(ctx, &mut pool.refining, &mut *sink)
    })
}

/// The finishing stage (see the module docs).
pub(super) struct Finisher<'t> {
    pub threat: &'t ThreatModel,
    pub minimize: bool,
}

impl Finisher<'_> {
    /// Starts finishing `sample` from the observed adversarial point `found`; emits the sample
    /// at once when nothing is left to check.
    pub fn admit(
        &self,
        sample: Sample,
        found: Found,
        step: usize,
        restart: usize,
        rows: &mut Vec<Refining>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        let delta = &found.x - &sample.x0;
        let probes_left = if self.minimize && found.norm > 0.0 { REFINE_STEPS } else { 0 };
        let row = Refining {
            sample,
            step,
            restart,
            best: found,
            delta,
            lo: 0.0,
            hi: 1.0,
            probes_left,
            probe: EpsProbe::NotYet,
        };
        if let Some(row) = self.settle(row, sink)? {
            rows.push(row);
        }
        Ok(())
    }

    /// Emits the row if it is finished, else hands it back.
    fn settle(
        &self,
        row: Refining,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<Option<Refining>> {
        if row.probes_left > 0 {
            return Ok(Some(row));
        }
        if row.best.norm <= self.threat.eps {
            sink(AttackRecord {
                index: row.sample.index,
                x_adv: row.best.x.squeeze_dim(0),
                claimed_success: true,
                step: Some(row.step),
                restart: row.restart,
                queries: row.sample.queries,
                min_norm: Some(row.best.norm),
            })?;
            return Ok(None);
        }
        match row.probe {
            EpsProbe::NotYet => Ok(Some(row)),
            EpsProbe::Failed(x) => {
                sink(AttackRecord {
                    index: row.sample.index,
                    x_adv: x.squeeze_dim(0),
                    claimed_success: false,
                    step: None,
                    restart: row.restart,
                    queries: row.sample.queries,
                    min_norm: Some(row.best.norm),
                })?;
                Ok(None)
            }
        }
    }

    /// One forward pass over every finishing row: a bisection probe, or the ε-ball probe.
    pub fn pass(
        &self,
        ctx: &AttackContext<'_>,
        rows: &mut Vec<Refining>,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let threat = self.threat;
        let mut probes = Vec::with_capacity(rows.len());
        let mut ts = Vec::with_capacity(rows.len());
        for row in rows.iter() {
            if row.probes_left > 0 {
                let t = 0.5 * (row.lo + row.hi);
                let point =
                    (&row.sample.x0 + &row.delta * t).clamp(threat.bounds.lo, threat.bounds.hi);
                probes.push(threat.project(&row.sample.x0, &point));
                ts.push(Some(t));
            } else {
                probes.push(threat.project(&row.sample.x0, &row.best.x));
                ts.push(None);
            }
        }
        let x = cat(&probes.iter().collect::<Vec<_>>());
        let x0 = cat(&rows.iter().map(|r| &r.sample.x0).collect::<Vec<_>>());
        let labels = cat(&rows.iter().map(|r| &r.sample.label).collect::<Vec<_>>());
        let targets: Option<Vec<&Tensor>> = rows.iter().map(|r| r.sample.target.as_ref()).collect();
        let targets = targets.map(|t| cat(&t));
        let logits = ctx.model.logits(&x)?;
        let adversarial: Vec<bool> =
            Vec::try_from(success_mask(&logits, &labels, targets.as_ref()))?;
        let norms: Vec<f64> = Vec::try_from(threat.distance(&x0, &x).to_kind(Kind::Double))?;
        let mut kept = Vec::with_capacity(rows.len());
        for (i, (mut row, probe)) in rows.drain(..).zip(probes).enumerate() {
            row.sample.queries += 1;
            match ts[i] {
                Some(t) => {
                    row.probes_left -= 1;
                    if adversarial[i] {
                        row.hi = t;
                        if norms[i] < row.best.norm {
                            row.best = Found { x: probe, norm: norms[i] };
                        }
                    } else {
                        row.lo = t;
                    }
                }
                None => {
                    if adversarial[i] && norms[i] <= threat.eps {
                        row.best = Found { x: probe, norm: norms[i] };
                    } else {
                        row.probe = EpsProbe::Failed(probe);
                    }
                }
            }
            if let Some(row) = self.settle(row, sink)? {
                kept.push(row);
            }
        }
        *rows = kept;
        Ok(())
    }
}
