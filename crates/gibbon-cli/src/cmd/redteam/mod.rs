//! `gibbon redteam THREAT.toml`: the threat-model file checked first (exit 2 naming the key and
//! line), then its stages: one evaluation per (norm, ε) with the strongest plan the declared
//! knowledge allows, transfer from declared surrogates, the gradient-masking audit, randomized
//! smoothing and the declared detectors (measured, then attacked non-adaptively and
//! adaptively), and the pass criteria: redteam.json and redteam.html in the output folder; exit
//! 0 when every criterion holds, 1 when one fails. Every stage is resumable ([`resume`]).
mod detection;
mod judge;
mod resume;
mod stages;

use crate::args::RedteamArgs;
use crate::resolve::{command_line, defend, set_threads, usage};
use anyhow::Result;
use gibbon::data::Dataset;
use gibbon::model::load_model;
use gibbon::redteam::{DetectorSource, RedteamPlan, Run};
use gibbon::report::{report_page, ResultDoc};
use resume::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// What the stages produced: each evaluation's run and JSON, the transfer results by run, the
/// audit, certification and detection results, and the report sections of them all.
#[derive(Default)]
pub(super) struct Outcome {
    evaluations: Vec<(Run, Value)>,
    transfers: Vec<(Run, Value)>,
    audit: Option<Value>,
    certification: Option<Value>,
    detection: Vec<Value>,
    docs: Vec<ResultDoc>,
    /// Stages taken from earlier runs, and all stages.
    stages: (usize, usize),
}

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
    let store = Store::open(&out_dir, &plan, n, args.fresh)?;
    let started = Instant::now();
    let data = Dataset::load(&plan.data, plan.split, n)?;
    let classes = data.num_classes().max(2) as i64;
    let model = load_model(&plan.model, plan.arch, &data.sample_shape(), classes, Device::Cpu)?;
    let model = defend(model, plan.defense.as_deref(), false)?;
    let context = stages::Context {
        plan: &plan,
        model: model.as_ref(),
        data: &data,
        out_dir: &out_dir,
        store: &store,
        quiet,
    };
    let outcome = stages::run_stages(&context)?;
    let criteria = judge::judge(&plan, &outcome);
    let passed = criteria.iter().all(|c| c["passed"] == json!(true));
    let first = outcome.evaluations.first().map(|(_, r)| r);
    let top = json!({
        "gibbon_version": gibbon::VERSION,
        "command": command_line(),
        "name": plan.name,
        "threat_file": plan.file,
        "threat_text": plan.text,
        "knowledge": plan.knowledge,
        "plan": plan.attacks,
        "seconds": started.elapsed().as_secs_f64(),
        "stages_taken_from_earlier_runs": outcome.stages.0,
        "stages": outcome.stages.1,
        "passed": passed,
        "criteria": criteria,
        "audit": outcome.audit,
        "model": first.map(|r| &r["model"]),
        "threat": threat_summary(&plan, data.len()),
        "n": first.map(|r| &r["n"]),
        "clean_accuracy": first.map(|r| &r["clean_accuracy"]),
        "curve": curve(&outcome.evaluations),
    });
    let mut full = top.clone();
    full["evaluations"] =
        Value::Array(outcome.evaluations.iter().map(|(_, v)| v.clone()).collect());
    full["transfers"] = Value::Array(outcome.transfers.iter().map(|(_, v)| v.clone()).collect());
    full["certification"] = outcome.certification.clone().unwrap_or(Value::Null);
    full["detection"] = Value::Array(outcome.detection.clone());
    super::write_json(&out_dir.join("redteam.json"), &full)?;
    let mut docs = outcome.docs;
    docs.insert(0, ResultDoc::new(plan.file.clone(), top));
    let title = format!("gibbon redteam: {} ({})", plan.name, if passed { "PASS" } else { "FAIL" });
    let intro = format!(
        "Threat file {}: model {} on {}; the attacker has {} access; plan {}{}. Every adversarial \
         example was re-verified by gibbon (inside the ball and the box, finite, misclassified \
         by a fresh forward pass). This run: {:.1} s{}.",
        plan.file,
        plan.model,
        data.name(),
        plan.knowledge.describe(),
        plan.attacks.join(", "),
        plan.transfer.as_ref().map_or(String::new(), |t| format!(
            "; transfer ({}) from {}",
            t.attack,
            t.surrogates.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        )),
        started.elapsed().as_secs_f64(),
        match outcome.stages {
            (0, _) => String::new(),
            (taken, total) => format!(
                " ({taken} of {total} stages were finished by an earlier run in this folder; \
                 each stage's result JSON gives its own time)"
            ),
        }
    );
    let html = out_dir.join("redteam.html");
    report_page(&title, &intro, &docs)?.write(&html)?;
    print_verdict(&criteria, passed, &out_dir, started.elapsed().as_secs_f64());
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// The threat model as the file states it, for the report's threat-model section.
fn threat_summary(plan: &RedteamPlan, samples: usize) -> Value {
    let eps: Vec<String> = plan.runs.iter().map(|r| format!("{} {}", r.norm, r.eps)).collect();
    let transfer = plan.transfer.as_ref().map(|t| {
        let surrogates: Vec<String> = t.surrogates.iter().map(|s| s.to_string()).collect();
        json!({ "surrogates": surrogates.join(", "), "attack": t.attack })
    });
    let detectors: Vec<String> = plan
        .detection
        .iter()
        .map(|d| match &d.source {
            DetectorSource::File(p) => format!("{} ({})", d.label, p.display()),
            DetectorSource::Fit(f) => format!(
                "{} (fitted here; calibrated on {} {}..{} at FPR {})",
                d.label, f.calib.0, f.calib.2.start, f.calib.2.end, f.fpr
            ),
        })
        .collect();
    json!({
        "knowledge": plan.knowledge,
        "norm": plan.runs[0].norm.to_string(),
        "perturbations": eps.join(", "),
        "attacks": plan.attacks.join(", "),
        "budget": { "steps": plan.steps, "restarts": plan.restarts, "queries": plan.queries },
        "defense": plan.defense,
        "audit_samples": plan.audit_n.map(|n| n.min(samples)),
        "transfer": transfer,
        "detectors": (!detectors.is_empty()).then(|| detectors.join("; ")),
    })
}

/// Robust accuracy against ε for the first norm (the report draws it with its band).
fn curve(evals: &[(Run, Value)]) -> Value {
    let norm = evals.first().map(|(r, _)| r.norm);
    let mut evals: Vec<&(Run, Value)> = evals.iter().collect();
    evals.sort_by(|a, b| a.0.eps.total_cmp(&b.0.eps));
    let points = evals.iter().filter(|(r, _)| Some(r.norm) == norm).map(|(r, e)| {
        json!({ "eps": r.eps, "robust_accuracy": e["robust_accuracy"], "robust_accuracy_ci95": e["robust_accuracy_ci95"] })
    });
    Value::Array(points.collect())
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
