//! The stages of an evaluation after the clean pass: examples found earlier (candidates), then
//! each attack of the plan on the samples still unbroken. Every returned example goes through
//! the verifier; the ledger settles broken samples at once and the survivors after the last
//! stage.
use super::clean::{targets_tensor, CleanPass};
use super::ledger::Ledger;
use super::verify::{verify_batch_repeated, Containment};
use super::{
    run_in_batches, AttackSummary, Candidates, EvalSettings, Examples, RecordBatch, SampleRecord,
};
use crate::attack::{Attack, AttackContext, AttackRecord};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::{Classifier, SearchModel};
use crate::threat::ThreatModel;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// An evaluation between its clean pass and its report.
pub(super) struct Evaluation<'a> {
    pub model: &'a dyn Classifier,
    pub data: &'a Dataset,
    pub threat: &'a ThreatModel,
    pub settings: &'a EvalSettings,
    pub clean: CleanPass,
    pub ledger: Ledger,
    pub examples: Examples,
}

impl Evaluation<'_> {
    /// Checks the candidate examples of the samples still unbroken; the ones inside the threat
    /// model that the verifier confirms settle their sample (credited to `c.source`).
    pub fn candidates(&mut self, c: &Candidates) -> Result<()> {
        let (threat, device) = (self.threat, self.model.device());
        let inside: Vec<usize> =
            self.ledger.survivors().into_iter().filter(|i| c.examples.contains_key(i)).collect();
        for idx in inside.chunks(self.settings.batch_size) {
            let x = self.data.try_batch(idx, device)?;
            let x_adv = Tensor::stack(
                &idx.iter().map(|i| c.examples[i].to_kind(Kind::Float)).collect::<Vec<_>>(),
                0,
            )
            .to_device(device);
            // Only candidates inside this threat model are checked (the rest are simply unused).
            let measured = Containment::measure(threat, &x, &x_adv)?;
            let ok: Vec<usize> = (0..idx.len()).filter(|&j| measured.inside(threat, j)).collect();
            if ok.is_empty() {
                continue;
            }
            let sel = Tensor::from_slice(&ok.iter().map(|&j| j as i64).collect::<Vec<_>>())
                .to_device(device);
            let sub: Vec<usize> = ok.iter().map(|&j| idx[j]).collect();
            let y = self.data.try_labels_of(&sub, device)?;
            let t = targets_tensor(&sub, &self.clean.targets, threat.goal, device);
            let verdicts = verify_batch_repeated(
                self.model,
                threat,
                &sub,
                &x.index_select(0, &sel),
                &x_adv.index_select(0, &sel),
                &y,
                t.as_ref(),
                self.settings.verify_passes,
            )?;
            for (k, (&i, v)) in sub.iter().zip(verdicts).enumerate() {
                if !v.broken {
                    continue;
                }
                let mut r = self.clean.record(i);
                r.single_pass_broken = (self.settings.verify_passes > 1).then_some(true);
                r.adv_pred = v.prediction;
                r.adv_confidence = v.confidence;
                r.norm = Some(v.norm);
                r.robust = false;
                r.broken_by = Some(c.source.clone());
                if self.settings.keep_examples {
                    self.examples.insert(i, x_adv.get(ok[k] as i64).to_device(Device::Cpu));
                }
                self.ledger.settle(r)?;
            }
        }
        Ok(())
    }

    /// Runs `attack` on the samples still unbroken; after the `last` stage every sample it ran
    /// on is settled.
    pub fn stage(&mut self, attack: &dyn Attack, last: bool) -> Result<AttackSummary> {
        let started = Instant::now();
        let order = self.ledger.survivors();
        let (mut broken, mut queries, mut disagreements) = (0usize, 0u64, 0usize);
        let search = SearchModel::new(self.model, self.settings.precision.search);
        let ctx = AttackContext {
            model: &search,
            threat: self.threat,
            seed: self.settings.seed,
            batch_size: self.settings.batch_size,
        };
        let Evaluation { model, data, threat, settings, clean, ledger, examples } = self;
        let device = model.device();
        let on_batch = |batch: RecordBatch| -> Result<()> {
            let RecordBatch { records, indices: idx, x, x_adv } = batch;
            let y = data.try_labels_of(&idx, device)?;
            let t = targets_tensor(&idx, &clean.targets, threat.goal, device);
            let verdicts = verify_batch_repeated(
                *model,
                threat,
                &idx,
                &x,
                &x_adv,
                &y,
                t.as_ref(),
                settings.verify_passes,
            )?;
            for (j, (rec, v)) in records.into_iter().zip(verdicts).enumerate() {
                queries += rec.queries;
                let prior = ledger.take_held(rec.index);
                if rec.claimed_success && !v.broken {
                    disagreements += 1;
                }
                let mut r = verdict_record(clean.record(rec.index), prior, &rec, &v, attack.name());
                if settings.verify_passes <= 1 {
                    r.single_pass_broken = None;
                }
                if settings.keep_examples {
                    examples.insert(rec.index, x_adv.get(j as i64).to_device(Device::Cpu));
                }
                if v.broken {
                    broken += 1;
                    ledger.settle(r)?;
                } else if last {
                    ledger.settle(r)?;
                } else {
                    ledger.hold(r);
                }
            }
            Ok(())
        };
        run_in_batches(attack, &ctx, data, &order, &clean.targets, settings.progress, on_batch)?;
        Ok(AttackSummary {
            name: attack.name().to_string(),
            params: attack.params(),
            broken,
            attacked: order.len(),
            seconds: started.elapsed().as_secs_f64(),
            queries,
            verifier_disagreements: disagreements,
        })
    }
}

/// The record of a sample after an attack returned `rec` and the verifier said `v`: queries
/// and minimum norm accumulate over the stages (`prior` is the sample's record so far).
fn verdict_record(
    mut r: SampleRecord,
    prior: Option<SampleRecord>,
    rec: &AttackRecord,
    v: &super::Verdict,
    attack: &str,
) -> SampleRecord {
    r.queries = prior.as_ref().map_or(0, |p| p.queries) + rec.queries;
    r.adv_pred = v.prediction;
    r.adv_confidence = v.confidence;
    r.norm = Some(v.norm);
    let fooled_before = prior.as_ref().and_then(|p| p.single_pass_broken).unwrap_or(false);
    r.single_pass_broken = Some(fooled_before || v.first_pass_broken);
    r.min_norm = match (rec.min_norm, prior.and_then(|p| p.min_norm)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if rec.claimed_success && !v.broken {
        tracing::warn!(
            "sample {}: {attack} claimed success but the verifier disagrees ({} of the fresh \
             passes fooled); counted in verifier_disagreements",
            rec.index,
            v.fooled_passes
        );
    }
    if v.broken {
        r.robust = false;
        r.broken_by = Some(attack.to_string());
        r.step = rec.step;
        r.restart = Some(rec.restart);
    }
    r
}
