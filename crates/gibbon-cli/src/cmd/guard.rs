//! `gibbon guard serve`: the guard service (see the README's "Guard" section).
use crate::args::guard::{GuardArgs, GuardCommand, GuardServeArgs};
use crate::resolve::{build_model, set_threads, usage};
use anyhow::Result;
use gibbon::data::Dataset;
use gibbon::detect::file::DetectorFile;
use gibbon::guard::{batcher::BatchSettings, policy::Policy, GuardConfig, TokenSet};
use gibbon::guard::{DetectorScreen, ServedScreen};
use std::path::Path;
use std::time::Duration;

/// Runs the `guard` subcommand.
pub fn run(args: GuardArgs) -> Result<()> {
    match args.command {
        GuardCommand::Serve(a) => serve(a),
    }
}

fn serve(args: GuardServeArgs) -> Result<()> {
    set_threads(args.model.threads)?;
    let Some(calib) = &args.calib else {
        return Err(usage(
            "guard serve needs --calib DATA (a clean calibration slice: the MSP screen's \
             threshold, and every screen's clean score distribution for the drift test)",
        ));
    };
    if args.calib_n == 0 || args.max_batch == 0 || args.max_inputs == 0 {
        return Err(usage("--calib-n, --max-batch and --max-inputs must be at least 1"));
    }
    let policy = match &args.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let reviewers = tokens(args.reviewer_tokens.as_deref(), "GIBBON_GUARD_REVIEWER_TOKENS")?
        .ok_or_else(|| usage("reviewer tokens are needed: --reviewer-tokens FILE or GIBBON_GUARD_REVIEWER_TOKENS"))?;
    let classify_tokens = tokens(args.classify_tokens.as_deref(), "GIBBON_GUARD_CLASSIFY_TOKENS")?;
    let data = Dataset::load(calib, args.calib_split, Some(args.calib_n))?;
    let model = build_model(&args.model, &data)?;
    let confidences = gibbon::guard::calibration_confidences(model.as_ref(), &data)?;
    let screens = screens(&args, model.as_ref(), &data)?;
    let config = GuardConfig {
        listen: args.listen,
        db: args.db.clone(),
        policy,
        batch: BatchSettings {
            max_batch: args.max_batch,
            window: Duration::from_millis(args.batch_window_ms),
        },
        max_body_bytes: args.max_body_bytes,
        max_inputs: args.max_inputs,
        rate_per_s: args.rate_limit,
        rate_burst: args.rate_burst,
        timeout: Duration::from_millis(args.timeout_ms),
        queue_capacity: args.queue_capacity,
        reviewers,
        classify_tokens,
    };
    gibbon::guard::serve(model.as_ref(), screens, confidences, config, |addr| {
        println!("guard listening on http://{addr}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        tracing::info!(
            "guard on http://{addr}: POST /v1/classify, GET /v1/health, /metrics, /review"
        );
    })?;
    Ok(())
}

/// The screens: every `--detector` file (fitted and calibrated by `gibbon detect fit` for this
/// model), or, without one, detect's MSP detector calibrated on the guard's calibration slice
/// with detect's split-conformal rule.
fn screens(
    args: &GuardServeArgs,
    model: &dyn gibbon::model::Classifier,
    calib: &Dataset,
) -> Result<Vec<ServedScreen>> {
    if args.detector.is_empty() {
        let (msp, cal) = DetectorScreen::msp(model, calib, args.fpr)?;
        tracing::info!(
            "msp screen: threshold {:.5} (-log max softmax, rank {} of {}) at FPR {}; {} \
             calibration inputs flagged, 95% bound on the true FPR {:.4}",
            cal.threshold,
            cal.rank,
            cal.n,
            args.fpr,
            cal.flagged,
            cal.fpr_upper_bound
        );
        return Ok(vec![msp]);
    }
    let mut out = Vec::new();
    for path in &args.detector {
        let file = DetectorFile::load(path)?;
        let served = DetectorScreen::load(&file, path, model, calib)?;
        tracing::info!(
            "{} screen from {}: threshold {:.5} at FPR {} (calibrated by gibbon detect on n={})",
            served.screen.name(),
            path.display(),
            served.screen.threshold(),
            served.screen.target_fpr(),
            file.calibration.n
        );
        out.push(served);
    }
    Ok(out)
}

/// Tokens from `file`, else from the environment variable `var`, else none.
fn tokens(file: Option<&Path>, var: &str) -> Result<Option<TokenSet>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| gibbon::GibbonError::io(path, e))?;
        return Ok(Some(TokenSet::parse(&text, &path.display().to_string())?));
    }
    match std::env::var(var) {
        Ok(text) if !text.trim().is_empty() => {
            Ok(Some(TokenSet::parse(&text.replace(',', "\n"), var)?))
        }
        _ => Ok(None),
    }
}
