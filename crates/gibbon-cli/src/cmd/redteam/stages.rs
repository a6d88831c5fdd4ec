//! The stages of a red-team run, in order: the evaluations (largest ε first), transfer from
//! the surrogates, the audit, certification, detection. Each is taken from the store when an
//! earlier run with the same fingerprint finished it, and saved there when it finishes.
use super::resume::Store;
use super::Outcome;
use crate::cmd::print_summary;
use crate::resolve::{command_line, progress};
use anyhow::Result;
use gibbon::audit::{run_checks_resuming, AuditSubject, Finding};
use gibbon::certify::{certified_accuracy, Certificate, Smoothed};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, transfer_matrix, EvalSettings, RunInfo, TransferSettings};
use gibbon::model::{load_model, Classifier};
use gibbon::progress::Progress;
use gibbon::redteam::{CertifyPlan, RedteamPlan, Run, TransferPlan};
use gibbon::report::{ResultDoc, SampleImages};
use gibbon::threat::{Knowledge, ThreatModel};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::Device;

/// What every stage works on.
pub(super) struct Context<'a> {
    pub plan: &'a RedteamPlan,
    pub model: &'a dyn Classifier,
    pub data: &'a Dataset,
    pub out_dir: &'a Path,
    pub store: &'a Store,
    pub quiet: bool,
}

/// Counts and announces stages.
struct Stages {
    done: usize,
    total: usize,
    taken: usize,
}

impl Stages {
    /// Announces the next stage; `earlier` when the store has it.
    fn start(&mut self, what: &str, earlier: bool) {
        self.done += 1;
        self.taken += usize::from(earlier);
        let note =
            if earlier { " (finished by an earlier run: taken from out_dir/stages)" } else { "" };
        eprintln!("redteam stage {}/{}: {what}{note}", self.done, self.total);
    }
}

/// Runs (or takes from the store) every stage of the plan.
pub(super) fn run_stages(cx: &Context) -> Result<Outcome> {
    let plan = cx.plan;
    let transfer_runs = if plan.transfer.is_some() { plan.runs.len() } else { 0 };
    let total = plan.runs.len()
        + transfer_runs
        + usize::from(plan.audit_n.is_some())
        + usize::from(plan.certify.is_some())
        + plan.detection.len();
    let mut stages = Stages { done: 0, total, taken: 0 };
    // Largest ε first: the page opens on the evaluation the attacker did most with.
    let mut order: Vec<Run> = plan.runs.clone();
    order.sort_by(|a, b| b.eps.total_cmp(&a.eps));
    let mut out = Outcome::default();
    for run in &order {
        let name = format!("eval-{}-{}", run.norm, run.eps);
        let earlier = cx.store.done(&name);
        let what = format!(
            "{} ε = {}, {} ({})",
            run.norm,
            run.eps,
            plan.attacks.join(", "),
            plan.knowledge.describe()
        );
        stages.start(&what, earlier.is_some());
        let doc = match earlier {
            Some(doc) => doc,
            None => {
                let doc = evaluate_run(cx, run)?;
                cx.store.save(&name, &doc)?;
                let _ = std::fs::remove_file(stream_path(cx.out_dir, run));
                doc
            }
        };
        out.evaluations.push((*run, doc.json.clone()));
        out.docs.push(doc);
    }
    if let Some(t) = &plan.transfer {
        transfer_stages(cx, t, &order, &mut stages, &mut out)?;
    }
    if let Some(audit_n) = plan.audit_n {
        let audit_n = audit_n.min(cx.data.len());
        let earlier = cx.store.done("audit");
        stages.start(&format!("gradient-masking audit on {audit_n} samples"), earlier.is_some());
        let doc = match earlier {
            Some(doc) => doc,
            None => {
                let doc = ResultDoc::new("audit", audit(cx, audit_n)?);
                cx.store.save("audit", &doc)?;
                doc
            }
        };
        out.audit = Some(doc.json);
    }
    if let Some(c) = &plan.certify {
        let earlier = cx.store.done("certify");
        stages.start(&format!("randomized smoothing σ = {}", c.config.sigma), earlier.is_some());
        let doc = match earlier {
            Some(doc) => doc,
            None => {
                let doc = ResultDoc::new("certification", certify(cx, c)?);
                cx.store.save("certify", &doc)?;
                doc
            }
        };
        out.certification = Some(doc.json.clone());
        out.docs.push(doc);
    }
    for (k, d) in plan.detection.iter().enumerate() {
        let name = format!("detection-{}", d.label);
        let earlier = cx.store.done(&name);
        let what = format!(
            "detector {}: measured, then attacked at L∞ ε = {} (non-adaptive and adaptive PGD)",
            d.label, d.eps
        );
        stages.start(&what, earlier.is_some());
        let doc = match earlier {
            Some(doc) => doc,
            None => {
                let doc = super::detection::detection_stage(cx, k)?;
                cx.store.save(&name, &doc)?;
                doc
            }
        };
        out.detection.push(doc.json.clone());
        out.docs.push(doc);
    }
    out.stages = (stages.taken, stages.total);
    Ok(out)
}

/// OUT_DIR/eval-NORM-EPS.partial.jsonl: the sample stream a killed evaluation resumes from.
fn stream_path(out_dir: &Path, run: &Run) -> PathBuf {
    out_dir.join(format!("eval-{}-{}.partial.jsonl", run.norm, run.eps))
}

/// One evaluation of the plan at `run`, with the gallery's pictures.
fn evaluate_run(cx: &Context, run: &Run) -> Result<ResultDoc> {
    let plan = cx.plan;
    let mut threat = threat_at(plan, run)?;
    let mut settings = EvalSettings {
        seed: plan.seed,
        attacks: plan.attacks.clone(),
        keep_examples: true,
        progress: progress(cx.quiet),
        stream: Some(stream_path(cx.out_dir, run)),
        ..Default::default()
    };
    if let Some(suite) = plan.suite {
        suite.apply(&mut threat, &mut settings);
    }
    let info = RunInfo {
        command: command_line(),
        data_spec: plan.data.to_string(),
        split: plan.split.to_string(),
    };
    let (report, examples) = evaluate(cx.model, cx.data, &threat, &settings, &info)?;
    print_summary(&report);
    if report.resumed > 0 {
        eprintln!(
            "resumed {} samples from {}",
            report.resumed,
            stream_path(cx.out_dir, run).display()
        );
    }
    let mut json = serde_json::to_value(&report)?;
    let label = format!("{} ε = {}", run.norm, run.eps);
    json["label"] = json!(label);
    let images = SampleImages::from_examples(&json, cx.data, &examples)?;
    Ok(ResultDoc { source: label, json, images })
}

/// The threat model of one run: the file's knowledge, budgets and defenses.
fn threat_at(plan: &RedteamPlan, run: &Run) -> Result<ThreatModel> {
    let mut threat = ThreatModel::new(run.norm, run.eps)?;
    threat.knowledge = plan.knowledge;
    threat.budget.steps = plan.steps;
    threat.budget.restarts = plan.restarts;
    threat.budget.queries = plan.queries;
    threat.defense = plan.defense.clone();
    Ok(threat)
}

/// Transfer from the surrogates at every run (`gibbon transfer`'s matrix, the model the only
/// target, queried for labels only). The surrogates are loaded only when a run is left to do.
fn transfer_stages(
    cx: &Context,
    t: &TransferPlan,
    order: &[Run],
    stages: &mut Stages,
    out: &mut Outcome,
) -> Result<()> {
    let mut surrogates: Option<Vec<Box<dyn Classifier>>> = None;
    for run in order {
        let name = format!("transfer-{}-{}", run.norm, run.eps);
        let earlier = cx.store.done(&name);
        stages.start(
            &format!(
                "transfer ({}) from {} surrogate(s) at {} ε = {}",
                t.attack,
                t.surrogates.len(),
                run.norm,
                run.eps
            ),
            earlier.is_some(),
        );
        let doc = match earlier {
            Some(doc) => doc,
            None => {
                if surrogates.is_none() {
                    let shape = cx.data.sample_shape();
                    let classes = cx.model.num_classes();
                    let loaded = t
                        .surrogates
                        .iter()
                        .map(|s| load_model(s, t.arch, &shape, classes, Device::Cpu));
                    surrogates = Some(loaded.collect::<gibbon::Result<Vec<_>>>()?);
                }
                let models = surrogates
                    .as_ref()
                    .map(|s| s.iter().map(|m| m.as_ref()).collect::<Vec<_>>())
                    .unwrap_or_default();
                let doc = transfer_run(cx, t, run, &models)?;
                cx.store.save(&name, &doc)?;
                doc
            }
        };
        out.transfers.push((*run, doc.json.clone()));
        out.docs.push(doc);
    }
    Ok(())
}

/// One transfer matrix: examples crafted on each surrogate (white-box to the attacker, who
/// owns it) at `run`, classified by the model.
fn transfer_run(
    cx: &Context,
    t: &TransferPlan,
    run: &Run,
    surrogates: &[&dyn Classifier],
) -> Result<ResultDoc> {
    let mut threat = threat_at(cx.plan, run)?;
    threat.knowledge = Knowledge::WhiteBox;
    threat.budget.steps = t.steps;
    threat.budget.restarts = None;
    threat.budget.queries = None;
    let settings = TransferSettings {
        attack: t.attack.clone(),
        seed: cx.plan.seed,
        progress: progress(cx.quiet),
        ..Default::default()
    };
    let info = RunInfo {
        command: command_line(),
        data_spec: cx.plan.data.to_string(),
        split: cx.plan.split.to_string(),
    };
    let report = transfer_matrix(surrogates, &[cx.model], cx.data, &threat, &settings, &info)?;
    if !cx.quiet {
        eprint!("{}", report.table());
    }
    let mut json = serde_json::to_value(&report)?;
    let label = format!("transfer {} ε = {}", run.norm, run.eps);
    json["label"] = json!(label);
    Ok(ResultDoc::new(label, json))
}

/// The audit at the largest ε of the first norm; each check's finding is streamed, so a
/// killed audit resumes after its last finished check.
fn audit(cx: &Context, n: usize) -> Result<Value> {
    let plan = cx.plan;
    let norm = plan.runs[0].norm;
    let eps = plan.runs.iter().filter(|r| r.norm == norm).map(|r| r.eps).fold(0.0, f64::max);
    let threat = threat_at(plan, &Run { norm, eps })?;
    let subject = AuditSubject::new(cx.model, cx.data, &threat, n.min(cx.data.len()), plan.seed)?;
    let mut stream = cx.store.stream("audit")?;
    let earlier: Vec<Finding> = stream.earlier.iter().filter_map(Finding::from_json).collect();
    for f in &earlier {
        eprintln!(
            "  audit {}: {} (finished by an earlier run)",
            f.check,
            if f.fired { "FIRED" } else { "ok" }
        );
    }
    let mut failed = None;
    let report = run_checks_resuming(&subject, earlier, |f| {
        eprintln!("  audit {}: {}", f.check, if f.fired { "FIRED" } else { "ok" });
        let written =
            serde_json::to_value(f).map_err(anyhow::Error::from).and_then(|v| stream.append(&v));
        if let Err(e) = written {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(serde_json::to_value(&report)?)
}

/// Randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter 2019) on the first samples, as
/// the JSON `gibbon certify` writes (the report's certification section reads it). Each
/// certificate is streamed; a killed run certifies only the samples it had not finished.
fn certify(cx: &Context, plan: &CertifyPlan) -> Result<Value> {
    let smoothed = Smoothed::new(cx.model, plan.config.clone())?;
    let n = plan.n.min(cx.data.len());
    let mut stream = cx.store.stream("certify")?;
    let mut records: Vec<Option<Value>> = vec![None; n];
    for r in std::mem::take(&mut stream.earlier) {
        if let Some(i) = r["index"].as_u64().map(|i| i as usize).filter(|&i| i < n) {
            records[i] = Some(r);
        }
    }
    let resumed = records.iter().flatten().count();
    if resumed > 0 {
        eprintln!("  certify: {resumed} of {n} samples certified by an earlier run");
    }
    let bar = Progress::new(progress(cx.quiet), n as u64, "certify", "samples");
    for (i, slot) in records.iter_mut().enumerate() {
        if slot.is_none() {
            let x = cx.data.try_batch(&[i], Device::Cpu)?.squeeze_dim(0);
            let label = cx.data.try_labels_of(&[i], Device::Cpu)?.int64_value(&[0]);
            let certificate = smoothed.certify(&x, i)?;
            let mut record = serde_json::to_value(certificate)?;
            record["index"] = json!(i);
            record["label"] = json!(label);
            record["correct"] = json!(certificate.class == Some(label));
            stream.append(&record)?;
            *slot = Some(record);
        }
        bar.inc(1);
    }
    bar.finish();
    let records: Vec<Value> = records.into_iter().flatten().collect();
    let mut pairs = Vec::new();
    for r in &records {
        let certificate: Certificate = serde_json::from_value(r.clone())?;
        pairs.push((certificate, r["label"].as_i64().unwrap_or(-1)));
    }
    let abstained = pairs.iter().filter(|(c, _)| c.class.is_none()).count();
    Ok(json!({
        "model": cx.model.info(), "config": plan.config, "n": n, "abstained": abstained,
        "certified_accuracy": certified_accuracy(&pairs, &plan.radii), "per_sample": records,
    }))
}
