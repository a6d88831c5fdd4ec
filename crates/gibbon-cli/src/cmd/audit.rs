//! `gibbon audit`: the gradient-masking checks, and with `--adaptive` the re-evaluation they
//! call for. Exit code 3 with `--strict` when a check fired.
use super::write_json;
use crate::args::AuditArgs;
use crate::resolve::{build_model, load_data, progress, set_threads, usage};
use anyhow::Result;
use gibbon::audit::{
    adapt, run_checks, AdaptiveReport, AdaptiveViews, AuditReport, AuditSubject, StagePlan,
};
use gibbon::eval::EvalSettings;
use gibbon::model::Classifier;
use gibbon::threat::{Norm, ThreatModel};
use serde::Serialize;

/// The JSON of `gibbon audit`.
#[derive(Serialize)]
struct AuditOutput {
    gibbon_version: &'static str,
    command: String,
    audit: AuditReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    adaptive: Option<AdaptiveReport>,
}

/// Samples audited when `--n` is not given.
const DEFAULT_N: usize = 200;

/// Runs the audit (and the adaptive re-evaluation) and writes the JSON.
pub fn run(args: AuditArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let threat = audit_threat(&args)?;
    for name in args.attacks.iter().flatten() {
        gibbon::attack::check_norm(name, threat.norm)?;
    }
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    // Loaded before the checks run, so a bad --surrogate fails at once.
    let surrogate = match &args.surrogate {
        Some(spec) => {
            let mut m = args.model.clone();
            (m.model, m.defense, m.bpda, m.eot) = (spec.clone(), None, None, None);
            Some(build_model(&m, &data)?)
        }
        None => None,
    };
    let n = args.data.n.unwrap_or(DEFAULT_N).min(data.len());
    let mut subject = AuditSubject::new(model.as_ref(), &data, &threat, n, args.run.seed)?;
    subject.batch_size = args.run.batch_size;
    if !quiet {
        eprintln!(
            "audit of {} on {n} samples, {} eps {}",
            model.info().path,
            threat.norm,
            threat.eps
        );
    }
    let audit = run_checks(&subject, |f| {
        if !quiet {
            eprintln!(
                "  {:<14} {:<6} {}",
                f.check,
                if f.fired { "FIRED" } else { "ok" },
                f.verdict
            );
        }
    })?;
    if !quiet {
        match audit.clean() {
            true => eprintln!("no sign of gradient masking"),
            false => eprintln!("gradient masking suspected: {}", audit.fired.join(", ")),
        }
    }
    let adaptive = match args.adaptive {
        true => {
            let views = (model.as_ref(), surrogate.as_deref());
            Some(adaptive(&args, views, &data, &threat, &audit, n, quiet)?)
        }
        false => None,
    };
    let fired = !audit.clean();
    let out = AuditOutput {
        gibbon_version: gibbon::VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        audit,
        adaptive,
    };
    if let Some(path) = &args.html {
        let page =
            gibbon::report::HtmlReport::new(format!("gibbon audit: {}", out.audit.model.path))
                .intro(format!(
                    "{} {} eps {} on the first {} samples ({} classified correctly). Command: {}",
                    out.audit.model.arch.as_deref().unwrap_or(&out.audit.model.kind),
                    out.audit.threat.norm,
                    out.audit.threat.eps,
                    out.audit.n,
                    out.audit.correct,
                    out.command
                ));
        let page = gibbon::report::audit_sections(page, &out.audit, out.adaptive.as_ref());
        let page = page.add_json("The audit as JSON", &serde_json::to_value(&out)?);
        page.write(path)?;
    }
    match &args.out {
        Some(path) => write_json(path, &out)?,
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    if args.strict && fired {
        std::process::exit(3);
    }
    Ok(())
}

/// The threat model: `--threat` (or L∞ by default) with `--norm` and `--eps` on top.
fn audit_threat(args: &AuditArgs) -> Result<ThreatModel> {
    let mut threat = match &args.threat {
        Some(path) => ThreatModel::from_toml_file(path)?,
        None => {
            let eps = args.eps.ok_or_else(|| usage("--eps is required (or give --threat FILE)"))?;
            ThreatModel::new(args.norm.unwrap_or(Norm::Linf), eps)?
        }
    };
    if let Some(n) = args.norm {
        threat.norm = n;
    }
    if let Some(e) = args.eps {
        threat.eps = e;
    }
    threat.defense = crate::resolve::chain_spec(args.model.defense.as_deref())?;
    threat.validate()?;
    Ok(threat)
}

/// The adaptive re-evaluation of `model`, with a BPDA view when the graph has ops gibbon can
/// swap, and the user's surrogate for the transfer stage.
fn adaptive(
    args: &AuditArgs,
    (model, surrogate): (&dyn Classifier, Option<&dyn Classifier>),
    data: &gibbon::data::Dataset,
    threat: &ThreatModel,
    audit: &AuditReport,
    n: usize,
    quiet: bool,
) -> Result<AdaptiveReport> {
    let bpda = match model.graph_scan().swappable().next() {
        Some(_) => {
            let mut m = args.model.clone();
            m.bpda = Some(crate::args::BpdaMode::Auto);
            Some(build_model(&m, data)?)
        }
        None => None,
    };
    let views = AdaptiveViews { model, bpda: bpda.as_deref(), surrogate };
    let base = EvalSettings {
        n: Some(n),
        batch_size: args.run.batch_size,
        seed: args.run.seed,
        progress: progress(quiet),
        ..EvalSettings::default()
    };
    let plan = match &args.attacks {
        Some(a) => StagePlan::Attacks(a.clone()),
        None => StagePlan::Suites,
    };
    let report = adapt(&views, data, threat, audit, &base, &plan)?;
    if !quiet {
        for s in &report.stages {
            eprintln!(
                "  stage {:<16} on {} ({}): {} more broken in {:.1}s",
                format!("{:?}", s.remedy),
                s.view,
                s.attacks.join(", "),
                s.newly_broken,
                s.seconds
            );
        }
        for s in &report.skipped {
            eprintln!("  skipped: {s}");
        }
        let (a, b) = (&report.standard, &report.adaptive);
        let baseline = match &args.attacks {
            Some(list) => format!("baseline ({})", list.join(", ")),
            None => "standard suite".to_string(),
        };
        eprintln!(
            "{baseline}: robust {:.4} (95% CI {:.4}-{:.4}); adaptive: robust {:.4} (95% CI \
             {:.4}-{:.4}) on n={}",
            a.robust_accuracy,
            a.ci95[0],
            a.ci95[1],
            b.robust_accuracy,
            b.ci95[0],
            b.ci95[1],
            report.n
        );
    }
    Ok(report)
}
