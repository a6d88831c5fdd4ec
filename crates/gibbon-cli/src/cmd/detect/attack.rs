//! `gibbon detect attack`: the guarded model (classifier + calibrated detector) under the
//! non-adaptive PGD (which ignores the detector) and under the adaptive PGD on the combined
//! objective, side by side: detection rates and robust accuracy under detection.
use super::{bar, load_detector};
use crate::args::detect::DetectAttackArgs;
use crate::cmd::write_json;
use crate::resolve::{build_model, load_data, set_threads, usage};
use anyhow::Result;
use gibbon::detect::adaptive::{attack_guarded, GuardedAttackConfig, GuardedOutcome};
use gibbon::detect::calibrate::Calibration;
use gibbon::detect::metrics::Rate;
use gibbon::detect::square_guarded::{square_guarded, SquareGuardedConfig};
use gibbon::detect::GuardedModel;
use gibbon::model::ModelInfo;
use gibbon::threat::Norm;
use serde::Serialize;
use std::time::Instant;

/// One attack's summary.
#[derive(Serialize)]
pub(crate) struct AttackSummary {
    config: GuardedAttackConfig,
    /// The gradient-free stage run on the adaptive PGD's survivors, if any.
    square: Option<SquareGuardedConfig>,
    /// Samples the gradient-free stage broke (after the adaptive PGD failed on them).
    square_broke: usize,
    /// Share of inputs classified correctly or flagged after the attack (95% CP).
    robust_accuracy_under_detection: Rate,
    /// Share of returned examples the classifier still gets right (the detector ignored; for
    /// the adaptive attack a failed sample returns its clean input).
    robust_accuracy_classifier: Rate,
    /// Among returned examples the classifier gets wrong, the share the detector flags.
    detection_rate: Rate,
    seconds: f64,
    per_sample: Vec<GuardedOutcome>,
}

#[derive(Serialize)]
pub(crate) struct AttackReport {
    gibbon_version: &'static str,
    command: String,
    model: ModelInfo,
    detector: String,
    calibration: Calibration,
    data: String,
    n: usize,
    norm: Norm,
    eps: f64,
    clean_accuracy: Rate,
    clean_flagged: Rate,
    non_adaptive: AttackSummary,
    adaptive: AttackSummary,
}

pub fn run(args: DetectAttackArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    if !args.eps.is_finite() || args.eps < 0.0 {
        return Err(usage(format!("--eps {}: must be finite and >= 0", args.eps)));
    }
    if args.batch_size == 0 || args.steps == 0 || args.restarts == 0 {
        return Err(usage("--batch-size, --steps and --restarts must be at least 1"));
    }
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let (file, detector) = load_detector(&args.detector, model.as_ref())?;
    let params = GuardedAttackParams {
        norm: args.norm,
        eps: args.eps,
        steps: args.steps,
        restarts: args.restarts,
        step_size: args.step_size,
        lambda: args.lambda,
        kappa: args.kappa,
        square_queries: args.square_queries,
        batch_size: args.batch_size,
        seed: args.seed,
    };
    let report = attack_detector(model.as_ref(), &file, detector.as_ref(), &data, &params, quiet)?;
    if !quiet {
        print_summary(&report);
    }
    match &args.out {
        Some(out) => write_json(out, &report)?,
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// The settings of the attacks on a guarded model (`gibbon detect attack`'s flags).
pub(crate) struct GuardedAttackParams {
    pub norm: Norm,
    pub eps: f64,
    pub steps: usize,
    pub restarts: usize,
    pub step_size: Option<f64>,
    pub lambda: f64,
    pub kappa: f64,
    pub square_queries: Option<usize>,
    pub batch_size: usize,
    pub seed: u64,
}

/// The guarded model (`model` + `detector` at the threshold of `file`) under the non-adaptive
/// and the adaptive attack, on every sample of `data`.
pub(crate) fn attack_detector(
    model: &dyn gibbon::model::Classifier,
    file: &gibbon::detect::file::DetectorFile,
    detector: &dyn gibbon::detect::Detector,
    data: &gibbon::data::Dataset,
    params: &GuardedAttackParams,
    quiet: bool,
) -> Result<AttackReport> {
    let guarded = GuardedModel { model, detector, threshold: file.calibration.threshold };
    let adaptive = GuardedAttackConfig {
        steps: params.steps,
        restarts: params.restarts,
        step_size: params.step_size,
        lambda: params.lambda,
        kappa: params.kappa,
        seed: params.seed,
        ..GuardedAttackConfig::adaptive_in(params.norm, params.eps)
    };
    let non_adaptive =
        GuardedAttackConfig { lambda: 0.0, kappa: 0.0, delta: 0.0, ..adaptive.clone() };
    let scale = file.calibration.score_scale;
    let queries = params.square_queries.unwrap_or(if detector.differentiable() { 0 } else { 1000 });
    let square = (queries > 0).then_some(SquareGuardedConfig {
        norm: params.norm,
        eps: params.eps,
        queries,
        p_init: 0.8,
        lambda: params.lambda,
        kappa: params.kappa,
        delta: adaptive.delta,
        seed: params.seed,
    });
    let run_one = |config: GuardedAttackConfig,
                   square: Option<SquareGuardedConfig>,
                   what: &str|
     -> Result<AttackSummary> {
        let started = Instant::now();
        let progress = bar(data.len(), what, quiet);
        let all: Vec<usize> = (0..data.len()).collect();
        let mut outcomes = Vec::with_capacity(data.len());
        let mut square_broke = 0;
        for chunk in all.chunks(params.batch_size) {
            let x = data.try_batch(chunk, model.device())?;
            let y = data.try_labels_of(chunk, model.device())?;
            let mut batch = attack_guarded(&guarded, scale, &x, &y, chunk, &config)?;
            if let Some(sq) = &square {
                let run: Vec<bool> = batch.iter().map(|o| !o.success).collect();
                let found = square_guarded(&guarded, scale, &x, &y, chunk, &run, sq)?;
                for (o, f) in batch.iter_mut().zip(found) {
                    if !o.success && f.success {
                        *o = f;
                        square_broke += 1;
                    }
                }
            }
            outcomes.extend(batch);
            progress.inc(chunk.len() as u64);
        }
        progress.finish();
        let mut summary = summarize(config, outcomes, started.elapsed().as_secs_f64());
        summary.square_broke = square_broke;
        summary.square = square;
        Ok(summary)
    };
    let non_adaptive = run_one(non_adaptive, None, "non-adaptive PGD")?;
    let adaptive = run_one(adaptive, square, "adaptive PGD")?;
    let outcomes = &adaptive.per_sample;
    let n = outcomes.len();
    Ok(AttackReport {
        gibbon_version: gibbon::VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: model.info().clone(),
        detector: file.kind.clone(),
        calibration: file.calibration.clone(),
        data: data.name().to_string(),
        n,
        norm: params.norm,
        eps: params.eps,
        clean_accuracy: Rate::new(
            outcomes.iter().filter(|o| o.clean_prediction == o.label).count(),
            n,
        ),
        clean_flagged: Rate::new(outcomes.iter().filter(|o| o.clean_flagged).count(), n),
        non_adaptive,
        adaptive,
    })
}

fn summarize(
    config: GuardedAttackConfig,
    per_sample: Vec<GuardedOutcome>,
    seconds: f64,
) -> AttackSummary {
    let n = per_sample.len();
    let wrong: Vec<&GuardedOutcome> =
        per_sample.iter().filter(|o| o.adv_prediction != o.label).collect();
    AttackSummary {
        config,
        square: None,
        square_broke: 0,
        robust_accuracy_under_detection: Rate::new(
            per_sample.iter().filter(|o| !o.success).count(),
            n,
        ),
        robust_accuracy_classifier: Rate::new(n - wrong.len(), n),
        detection_rate: Rate::new(wrong.iter().filter(|o| o.adv_flagged).count(), wrong.len()),
        seconds,
        per_sample,
    }
}

pub(crate) fn print_summary(r: &AttackReport) {
    let show = |x: &Rate| {
        format!("{:.4} ({}/{}, 95% CI {:.4}-{:.4})", x.rate, x.k, x.n, x.ci95[0], x.ci95[1])
    };
    eprintln!(
        "{} guarding {} at threshold {:.6} (target FPR {}), {} eps {} on {} samples: clean accuracy {}, clean flagged {}",
        r.detector, r.model.path, r.calibration.threshold, r.calibration.fpr_target, r.norm.as_str(), r.eps, r.n,
        show(&r.clean_accuracy), show(&r.clean_flagged)
    );
    for (name, s) in [("non-adaptive", &r.non_adaptive), ("adaptive", &r.adaptive)] {
        eprintln!(
            "  {name:>12}: detection rate {}  robust accuracy under detection {}  returned examples classified correctly {}  ({:.1}s{})",
            show(&s.detection_rate), show(&s.robust_accuracy_under_detection), show(&s.robust_accuracy_classifier), s.seconds,
            match &s.square {
                Some(q) => format!("; gradient-free stage ({} queries) broke {} more", q.queries, s.square_broke),
                None => String::new(),
            }
        );
    }
}
