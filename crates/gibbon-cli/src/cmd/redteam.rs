//! `gibbon redteam THREAT.toml`: the threat-model file checked first (exit 2 naming the key and
//! line), then one evaluation per (norm, ε) with the strongest plan the declared knowledge
//! allows (each streamed to OUT_DIR/eval-NORM-EPS.partial.jsonl, so a killed run resumes), the
//! gradient-masking audit when configured, and the pass criteria: redteam.json and
//! redteam.html in the output folder; exit 0 when every criterion holds, 1 when one fails.
use super::print_summary;
use crate::args::RedteamArgs;
use crate::resolve::{command_line, defend, progress, set_threads, usage};
use anyhow::Result;
use gibbon::audit::{run_checks, AuditReport, AuditSubject};
use gibbon::certify::{certified_accuracy, Smoothed};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{load_model, Classifier};
use gibbon::redteam::{CertifyPlan, Metric, RedteamPlan, Run};
use gibbon::report::{report_page, ResultDoc, SampleImages};
use gibbon::threat::ThreatModel;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// Checks the threat file, runs it, writes redteam.json and redteam.html, exits 1 when a
/// criterion fails.
pub fn run(args: RedteamArgs, quiet: bool) -> Result<()> {
    let mut plan = RedteamPlan::load(&args.threat_file)?;
    if let Some(attacks) = &args.attacks {
        plan.override_attacks(attacks)?;
    }
    set_threads(args.threads)?;
    let n = args.n.or(plan.n);
    if n == Some(0) {
        return Err(usage("--n must be at least 1"));
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("redteam-{}", plan.name)));
    std::fs::create_dir_all(&out_dir).map_err(|e| gibbon::GibbonError::io(&out_dir, e))?;
    let started = Instant::now();
    let data = Dataset::load(&plan.data, plan.split, n)?;
    let classes = data.num_classes().max(2) as i64;
    let model = load_model(&plan.model, plan.arch, &data.sample_shape(), classes, Device::Cpu)?;
    let model = defend(model, plan.defense.as_deref(), false)?;
    let (evaluations, mut docs, audit, certification) =
        run_stages(&plan, model.as_ref(), &data, &out_dir, quiet)?;
    let criteria = judge(&plan, &evaluations, audit.as_ref(), certification.as_ref());
    let passed = criteria.iter().all(|c| c["passed"] == json!(true));
    let top = json!({
        "gibbon_version": gibbon::VERSION,
        "command": command_line(),
        "name": plan.name,
        "threat_file": plan.file,
        "threat_text": plan.text,
        "knowledge": plan.knowledge,
        "plan": plan.attacks,
        "seconds": started.elapsed().as_secs_f64(),
        "passed": passed,
        "criteria": criteria,
        "audit": audit,
        "model": evaluations.first().map(|(_, r)| &r.model),
        "threat": threat_summary(&plan, data.len()),
        "n": evaluations.first().map(|(_, r)| r.n),
        "clean_accuracy": evaluations.first().map(|(_, r)| r.clean_accuracy),
        "curve": curve(&evaluations),
    });
    let mut full = top.clone();
    let evaluation_docs = docs.iter().take(evaluations.len());
    full["evaluations"] = Value::Array(evaluation_docs.map(|d| d.json.clone()).collect());
    full["certification"] = certification.unwrap_or(Value::Null);
    super::write_json(&out_dir.join("redteam.json"), &full)?;
    docs.insert(0, ResultDoc::new(plan.file.clone(), top));
    let title = format!("gibbon redteam: {} ({})", plan.name, if passed { "PASS" } else { "FAIL" });
    let intro = format!(
        "Threat file {}: model {} on {}; the attacker has {} access; plan {}. Every adversarial \
         example was re-verified by gibbon (inside the ball and the box, finite, misclassified \
         by a fresh forward pass). {:.1} s.",
        plan.file,
        plan.model,
        data.name(),
        plan.knowledge.describe(),
        plan.attacks.join(", "),
        started.elapsed().as_secs_f64()
    );
    let html = out_dir.join("redteam.html");
    report_page(&title, &intro, &docs)?.write(&html)?;
    for (run, _) in &evaluations {
        let _ = std::fs::remove_file(stream_path(&out_dir, run));
    }
    print_verdict(&criteria, passed, &out_dir, started.elapsed().as_secs_f64());
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// Every stage: the evaluations (largest ε first), the audit, certification. Returns the
/// evaluations, their report sections (and certification's), the audit and certification.
#[allow(clippy::type_complexity)]
fn run_stages(
    plan: &RedteamPlan,
    model: &dyn Classifier,
    data: &Dataset,
    out_dir: &Path,
    quiet: bool,
) -> Result<(Vec<(Run, EvalReport)>, Vec<ResultDoc>, Option<AuditReport>, Option<Value>)> {
    let stages =
        plan.runs.len() + usize::from(plan.audit_n.is_some()) + usize::from(plan.certify.is_some());
    // Largest ε first: the page opens on the evaluation the attacker did most with.
    let mut order: Vec<usize> = (0..plan.runs.len()).collect();
    order.sort_by(|&a, &b| plan.runs[b].eps.total_cmp(&plan.runs[a].eps));
    let mut evaluations = Vec::new();
    let mut docs = Vec::new();
    for (k, run) in order.iter().map(|&i| &plan.runs[i]).enumerate() {
        eprintln!(
            "redteam stage {}/{stages}: {} ε = {}, {} ({})",
            k + 1,
            run.norm,
            run.eps,
            plan.attacks.join(", "),
            plan.knowledge.describe()
        );
        let (report, doc) = evaluate_run(plan, run, model, data, out_dir, quiet)?;
        docs.push(doc);
        evaluations.push((*run, report));
    }
    let audit = match plan.audit_n {
        Some(audit_n) => {
            let audit_n = audit_n.min(data.len());
            let stage = plan.runs.len() + 1;
            eprintln!(
                "redteam stage {stage}/{stages}: gradient-masking audit on {audit_n} samples"
            );
            Some(audit(plan, model, data, audit_n)?)
        }
        None => None,
    };
    let certification = match &plan.certify {
        Some(c) => {
            eprintln!(
                "redteam stage {stages}/{stages}: randomized smoothing σ = {}",
                c.config.sigma
            );
            let doc = certify(c, model, data, quiet)?;
            docs.push(ResultDoc::new("certification", doc.clone()));
            Some(doc)
        }
        None => None,
    };
    Ok((evaluations, docs, audit, certification))
}

/// OUT_DIR/eval-NORM-EPS.partial.jsonl: the stream a killed run resumes from.
fn stream_path(out_dir: &Path, run: &Run) -> PathBuf {
    out_dir.join(format!("eval-{}-{}.partial.jsonl", run.norm, run.eps))
}

/// One evaluation of the plan at `run`, with the gallery's pictures.
fn evaluate_run(
    plan: &RedteamPlan,
    run: &Run,
    model: &dyn Classifier,
    data: &Dataset,
    out_dir: &Path,
    quiet: bool,
) -> Result<(EvalReport, ResultDoc)> {
    let mut threat = threat_at(plan, run)?;
    let mut settings = EvalSettings {
        seed: plan.seed,
        attacks: plan.attacks.clone(),
        keep_examples: true,
        progress: progress(quiet),
        stream: Some(stream_path(out_dir, run)),
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
    let (report, examples) = evaluate(model, data, &threat, &settings, &info)?;
    print_summary(&report);
    if report.resumed > 0 {
        eprintln!(
            "resumed {} samples from {}",
            report.resumed,
            stream_path(out_dir, run).display()
        );
    }
    let mut json = serde_json::to_value(&report)?;
    let label = format!("{} ε = {}", run.norm, run.eps);
    json["label"] = json!(label);
    let images = SampleImages::from_examples(&json, data, &examples)?;
    Ok((report, ResultDoc { source: label, json, images }))
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

/// The threat model as the file states it, for the report's threat-model section.
fn threat_summary(plan: &RedteamPlan, samples: usize) -> Value {
    let eps: Vec<String> = plan.runs.iter().map(|r| format!("{} {}", r.norm, r.eps)).collect();
    json!({
        "knowledge": plan.knowledge,
        "norm": plan.runs[0].norm.to_string(),
        "perturbations": eps.join(", "),
        "attacks": plan.attacks.join(", "),
        "budget": { "steps": plan.steps, "restarts": plan.restarts, "queries": plan.queries },
        "defense": plan.defense,
        "audit_samples": plan.audit_n.map(|n| n.min(samples)),
    })
}

/// Robust accuracy against ε for the first norm (the report draws it with its band).
fn curve(evals: &[(Run, EvalReport)]) -> Value {
    let norm = evals.first().map(|(r, _)| r.norm);
    let mut evals: Vec<&(Run, EvalReport)> = evals.iter().collect();
    evals.sort_by(|a, b| a.0.eps.total_cmp(&b.0.eps));
    let points = evals.iter().filter(|(r, _)| Some(r.norm) == norm).map(|(r, e)| {
        json!({ "eps": r.eps, "robust_accuracy": e.robust_accuracy, "robust_accuracy_ci95": e.robust_accuracy_ci95 })
    });
    Value::Array(points.collect())
}

/// The audit at the largest ε of the first norm.
fn audit(
    plan: &RedteamPlan,
    model: &dyn Classifier,
    data: &Dataset,
    n: usize,
) -> Result<AuditReport> {
    let norm = plan.runs[0].norm;
    let eps = plan.runs.iter().filter(|r| r.norm == norm).map(|r| r.eps).fold(0.0, f64::max);
    let threat = threat_at(plan, &Run { norm, eps })?;
    let subject = AuditSubject::new(model, data, &threat, n.min(data.len()), plan.seed)?;
    let report = run_checks(&subject, |f| {
        eprintln!("  audit {}: {}", f.check, if f.fired { "FIRED" } else { "ok" });
    })?;
    Ok(report)
}

/// Randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter 2019) on the first samples, as
/// the JSON `gibbon certify` writes (the report's certification section reads it).
fn certify(
    plan: &CertifyPlan,
    model: &dyn Classifier,
    data: &Dataset,
    quiet: bool,
) -> Result<Value> {
    let smoothed = Smoothed::new(model, plan.config.clone())?;
    let n = plan.n.min(data.len());
    let bar = indicatif::ProgressBar::new(n as u64);
    if !progress(quiet) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "   certify [{elapsed_precise}] {bar:40} {pos}/{len} samples ({eta} left)",
    ) {
        bar.set_style(style);
    }
    let mut records = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..n {
        let x = data.try_batch(&[i], Device::Cpu)?.squeeze_dim(0);
        let label = data.try_labels_of(&[i], Device::Cpu)?.int64_value(&[0]);
        let certificate = smoothed.certify(&x, i)?;
        let correct = certificate.class == Some(label);
        records.push(json!({ "index": i, "label": label, "radius": certificate.radius,
            "class": certificate.class, "p_lower": certificate.p_lower, "correct": correct }));
        pairs.push((certificate, label));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let abstained = pairs.iter().filter(|(c, _)| c.class.is_none()).count();
    Ok(json!({
        "model": model.info(), "config": plan.config, "n": n, "abstained": abstained,
        "certified_accuracy": certified_accuracy(&pairs, &plan.radii), "per_sample": records,
    }))
}

/// Every criterion with its measured value (and interval) and verdict.
fn judge(
    plan: &RedteamPlan,
    evals: &[(Run, EvalReport)],
    audit: Option<&AuditReport>,
    certification: Option<&Value>,
) -> Vec<Value> {
    let first = evals.first().map(|(_, r)| r);
    plan.criteria
        .iter()
        .map(|c| {
            let (measured, ci) = match c.metric {
                Metric::RobustAccuracy(run) => {
                    let r = evals.iter().find(|(r, _)| *r == run).map(|(_, r)| r);
                    (r.map(|r| r.robust_accuracy), r.map(|r| r.robust_accuracy_ci95))
                }
                Metric::CleanAccuracy => (first.map(|r| r.clean_accuracy), None),
                Metric::AuditFired => (audit.map(|a| a.fired.len() as f64), None),
                Metric::CertifiedAccuracy(radius) => {
                    let table = certification.and_then(|c| c["certified_accuracy"].as_array());
                    let at = table.into_iter().flatten().find(|p| p[0].as_f64() == Some(radius));
                    (at.and_then(|p| p[1].as_f64()), None)
                }
            };
            let passed = measured.is_some_and(|m| c.holds(m));
            json!({ "criterion": c.text, "measured": measured, "ci95": ci, "passed": passed })
        })
        .collect()
}

fn print_verdict(criteria: &[Value], passed: bool, out_dir: &Path, seconds: f64) {
    for c in criteria {
        let verdict = if c["passed"] == json!(true) { "PASS" } else { "FAIL" };
        let measured = c["measured"].as_f64().map_or("n/a".into(), |m| format!("{m:.4}"));
        eprintln!("{verdict}  {}  (measured {measured})", c["criterion"].as_str().unwrap_or(""));
    }
    let verdict = if passed { "PASS: every criterion holds" } else { "FAIL: a criterion fails" };
    println!(
        "redteam {verdict}; report {} ({seconds:.1} s)",
        out_dir.join("redteam.html").display()
    );
}
