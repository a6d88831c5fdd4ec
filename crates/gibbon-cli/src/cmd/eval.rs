//! `gibbon eval`: clean and robust accuracy as JSON; several `--eps` give a robustness curve.
use super::{print_summary, write_json};
use crate::args::EvalArgs;
use crate::resolve::{
    build_model, build_threat, eps_values, eval_settings, load_data, min_norm_attack, run_info,
    set_threads,
};
use anyhow::Result;
use gibbon::audit::{run_checks, AuditReport, AuditSubject};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, robustness_curve, EvalReport, EvalSettings};
use gibbon::model::Classifier;
use gibbon::threat::ThreatModel;
use std::path::{Path, PathBuf};

/// Evaluates the plan (or the curve over several ε) and writes the JSON to `--out` or stdout;
/// per-sample records stream to OUT.partial.jsonl meanwhile (removed after success).
pub fn run(args: EvalArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let mut threat = build_threat(&args.threat)?;
    threat.defense = crate::resolve::chain_spec(args.model.defense.as_deref())?;
    let data = load_data(&args.data)?;
    let certificates = match &args.certificates {
        Some(path) => {
            let info = run_info(&args.data);
            Some(super::certified_beside::load(path, &info.data_spec, &info.split)?)
        }
        None => None,
    };
    let model = build_model(&args.model, &data)?;
    let mut s = eval_settings(&args.threat, &args.run, args.data.n, quiet, &mut threat)?;
    crate::resolve::apply_eot(&args.model, &mut s);
    crate::resolve::set_precision(&args.run, model.as_ref(), &mut s)?;
    let eps = eps_values(&args.threat);
    if eps.len() > 1 {
        if args.certificates.is_some() {
            return Err(crate::resolve::usage("--certificates needs a single --eps"));
        }
        return curve(&args, model.as_ref(), &data, &threat, eps, &s);
    }
    let stream = args.out.as_ref().filter(|_| !args.run.no_resume).map(|o| partial_path(o));
    s.stream = stream.clone();
    s.keep_examples |= args.html.is_some();
    let (report, examples) = evaluate(model.as_ref(), &data, &threat, &s, &run_info(&args.data))?;
    print_summary(&report);
    let mut audit = None;
    if args.audit {
        let n = report.n.min(200);
        let mut subject = AuditSubject::new(model.as_ref(), &data, &threat, n, args.run.seed)?;
        subject.batch_size = args.run.batch_size;
        let checks = run_checks(&subject, |_| {})?;
        for f in checks.findings.iter().filter(|f| f.fired) {
            tracing::warn!("audit: {} fired: {}", f.check, f.verdict);
        }
        if checks.clean() {
            eprintln!(
                "audit: no sign of gradient masking ({} checks on n={n})",
                checks.findings.len()
            );
        } else {
            tracing::warn!(
                "audit: this robust accuracy may be false (gradient masking suspected); run \
                 gibbon audit --adaptive for the adaptive number"
            );
        }
        audit = Some(checks);
    }
    let certified = certificates.map(|c| super::certified_beside::join(c, &report));
    if let Some(c) = &certified {
        super::certified_beside::print(c);
    }
    let result =
        Evaluated { report: &report, audit: audit.as_ref(), certified: certified.as_ref() };
    if let Some(path) = &args.html {
        super::report::write_evaluation_page(path, &report.model.path, &result, &data, &examples)?;
    }
    match &args.out {
        Some(out) => {
            write_json(out, &result)?;
            if let Some(p) = stream {
                let _ = std::fs::remove_file(p);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(())
}

/// The result JSON of `gibbon eval`: the evaluation's fields, and `audit` when `--audit` ran
/// (docs/result-schema.md).
#[derive(serde::Serialize)]
struct Evaluated<'a> {
    #[serde(flatten)]
    report: &'a EvalReport,
    /// The gradient-masking audit of the evaluated model: a robust accuracy is only as good as
    /// the gradients the attacks used.
    #[serde(skip_serializing_if = "Option::is_none")]
    audit: Option<&'a AuditReport>,
    /// With --certificates: the smoothed classifier's certificates beside the base classifier's
    /// smallest examples, by sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    certified: Option<&'a super::certified_beside::CertifiedBeside>,
}

/// `eval` with several ε: a robustness curve (JSON: gibbon::eval::CurveReport).
fn curve(
    args: &EvalArgs,
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    eps: &[f64],
    settings: &EvalSettings,
) -> Result<()> {
    let min_norm = min_norm_attack(&args.threat, threat.norm)?;
    let report =
        robustness_curve(model, data, threat, eps, &min_norm, settings, &run_info(&args.data))?;
    eprintln!(
        "{}: clean accuracy {:.4}; {} median minimal {} norm {}",
        report.model.path,
        report.clean_accuracy,
        min_norm,
        threat.norm,
        report.median_min_norm.map_or("n/a (most unbroken)".into(), |m| format!("{m:.4}"))
    );
    eprintln!("{:>10} {:>9} {:>17} {:>9} {:>8}", "eps", "robust", "95% CI", "min-norm", "plan");
    for p in &report.curve {
        eprintln!(
            "{:>10} {:>9.4} {:>8.4}-{:<8.4} {:>9} {:>8}",
            p.eps,
            p.robust_accuracy,
            p.robust_accuracy_ci95[0],
            p.robust_accuracy_ci95[1],
            p.broken_by_min_norm,
            p.broken_by_plan
        );
    }
    if let Some(path) = &args.html {
        let doc = gibbon::report::ResultDoc::new("curve", serde_json::to_value(&report)?);
        let title = super::report::default_title(std::slice::from_ref(&doc));
        super::report::write_page(path, &title, &[doc])?;
    }
    match &args.out {
        Some(out) => write_json(out, &report)?,
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// OUT.partial.jsonl beside `out`: the per-sample stream a later run resumes from.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial.jsonl");
    out.with_file_name(name)
}
