//! `gibbon detect eval`: a calibrated detector on OOD and adversarial sets against clean test
//! data: AUROC, TPR at the threshold, FPR at 95% TPR with 95% intervals; JSON and HTML.
use super::{bar, load_detector, load_slice};
use crate::args::detect::DetectEvalArgs;
use crate::cmd::write_json;
use crate::resolve::{build_model, set_threads, usage};
use anyhow::Result;
use gibbon::data::{Dataset, Split};
use gibbon::detect::calibrate::Calibration;
use gibbon::detect::file::{DataSlice, DetectorFile};
use gibbon::detect::metrics::{detection_metrics, DetectionMetrics};
use gibbon::detect::{score_dataset, to_f64s, Detector};
use gibbon::model::{Classifier, ModelInfo};
use serde::Serialize;
use std::time::Instant;

/// One anomalous set's result.
#[derive(Serialize)]
pub(crate) struct SetResult {
    /// `ood` or `adversarial`.
    pub kind: &'static str,
    pub spec: String,
    /// Samples scored (for adversarial sets: the examples the model misclassifies).
    pub n: usize,
    /// Adversarial sets: samples in the file (misclassified or not).
    pub n_total: usize,
    pub metrics: DetectionMetrics,
    #[serde(skip)]
    pub scores: Vec<f64>,
}

/// The JSON of `gibbon detect eval`.
#[derive(Serialize)]
pub(crate) struct EvalReport {
    pub gibbon_version: &'static str,
    pub command: String,
    pub model: ModelInfo,
    pub detector: String,
    pub calibration: Calibration,
    pub calibration_data: DataSlice,
    pub fit_data: Option<DataSlice>,
    pub clean: DataSlice,
    pub sets: Vec<SetResult>,
    pub seconds: f64,
    #[serde(skip)]
    pub clean_scores: Vec<f64>,
}

pub fn run(args: DetectEvalArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    if args.ood.is_empty() && args.adversarial.is_empty() {
        return Err(usage("give at least one --ood or --adversarial set"));
    }
    if args.n == Some(0) {
        return Err(usage("--n must be at least 1"));
    }
    let (clean, clean_slice) =
        load_slice(&args.clean, args.clean_split, args.clean_range, "clean")?;
    let model = build_model(&args.model, &clean)?;
    let (file, detector) = load_detector(&args.detector, model.as_ref())?;
    let mut ood = Vec::new();
    for spec in &args.ood {
        ood.push((spec.to_string(), Dataset::load(spec, args.ood_split, args.n)?));
    }
    let mut adversarial = Vec::new();
    for spec in &args.adversarial {
        adversarial.push((spec.to_string(), Dataset::load(spec, Split::Test, args.n)?));
    }
    let sets = Sets { clean: &clean, clean_slice, ood, adversarial };
    let report =
        evaluate_detector(model.as_ref(), &file, detector.as_ref(), sets, args.seed, quiet)?;
    if !quiet {
        print_table(&report);
    }
    if let Some(path) = &args.html {
        super::plots::eval_page(&report)?.write(path)?;
    }
    match &args.out {
        Some(out) => write_json(out, &report)?,
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// The data a detector is measured on: clean negatives (held out from its calibration) and
/// OOD and adversarial sets, each with its name.
pub(crate) struct Sets<'a> {
    pub clean: &'a Dataset,
    pub clean_slice: DataSlice,
    pub ood: Vec<(String, Dataset)>,
    pub adversarial: Vec<(String, Dataset)>,
}

/// `gibbon detect eval`'s measurements of `detector` (calibrated in `file`) guarding `model`.
pub(crate) fn evaluate_detector(
    model: &dyn Classifier,
    file: &DetectorFile,
    detector: &dyn Detector,
    sets: Sets,
    seed: u64,
    quiet: bool,
) -> Result<EvalReport> {
    let started = Instant::now();
    let (clean, clean_slice) = (sets.clean, sets.clean_slice);
    let c = &file.calibration_data;
    if c.spec == clean_slice.spec
        && c.split == clean_slice.split
        && c.start < clean_slice.end
        && clean_slice.start < c.end
    {
        return Err(usage(format!(
            "the clean range {}..{} (--clean-range; in redteam the evaluated samples) overlaps the detector's calibration samples {}..{} of {}: evaluate on held-out data",
            clean_slice.start, clean_slice.end, c.start, c.end, c.spec
        )));
    }
    let threshold = file.calibration.threshold;
    let score = |data: &Dataset, what: &str| -> Result<Vec<f64>> {
        let progress = bar(data.len(), what, quiet);
        let mut tick = |k: usize| progress.inc(k as u64);
        let s = score_dataset(detector, model, data, model.device(), &mut tick)?;
        progress.finish();
        Ok(s)
    };
    let clean_scores = score(clean, "clean")?;
    let mut results = Vec::new();
    for (spec, data) in &sets.ood {
        check_shape(data, clean)?;
        let scores = score(data, "ood")?;
        let metrics = detection_metrics(&clean_scores, &scores, threshold, seed)?;
        results.push(SetResult {
            kind: "ood",
            spec: spec.clone(),
            n: scores.len(),
            n_total: data.len(),
            metrics,
            scores,
        });
    }
    for (spec, data) in &sets.adversarial {
        check_shape(data, clean)?;
        let fooled = misclassified(model, data)?;
        if fooled.is_empty() {
            return Err(usage(format!(
                "{spec}: the model classifies every example correctly; nothing to detect"
            )));
        }
        let scores = score(data, "adversarial")?;
        let scores: Vec<f64> = fooled.iter().map(|&i| scores[i]).collect();
        let metrics = detection_metrics(&clean_scores, &scores, threshold, seed)?;
        results.push(SetResult {
            kind: "adversarial",
            spec: spec.clone(),
            n: scores.len(),
            n_total: data.len(),
            metrics,
            scores,
        });
    }
    Ok(EvalReport {
        gibbon_version: gibbon::VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: model.info().clone(),
        detector: file.kind.clone(),
        calibration: file.calibration.clone(),
        calibration_data: file.calibration_data.clone(),
        fit_data: file.fit_data.clone(),
        clean: clean_slice,
        sets: results,
        seconds: started.elapsed().as_secs_f64(),
        clean_scores,
    })
}

fn check_shape(data: &Dataset, clean: &Dataset) -> Result<()> {
    if data.sample_shape() != clean.sample_shape() {
        return Err(usage(format!(
            "{}: samples of shape {:?}, the clean data's are {:?}",
            data.name(),
            data.sample_shape(),
            clean.sample_shape()
        )));
    }
    Ok(())
}

/// Indices of the samples of `data` the model misclassifies.
fn misclassified(model: &dyn Classifier, data: &Dataset) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(gibbon::detect::SCORE_BATCH) {
        let x = data.try_batch(chunk, model.device())?;
        let pred = to_f64s(&model.predict(&x)?)?;
        for (&i, p) in chunk.iter().zip(pred) {
            if p as i64 != data.labels()[i] {
                out.push(i);
            }
        }
    }
    Ok(out)
}

pub(crate) fn print_table(report: &EvalReport) {
    let c = &report.calibration;
    eprintln!(
        "{} on {} clean samples; threshold {:.6} (target FPR {}, calibration n = {}, 95% bound {:.4})",
        report.detector, report.clean.end - report.clean.start, c.threshold, c.fpr_target, c.n, c.fpr_upper_bound
    );
    for s in &report.sets {
        let m = &s.metrics;
        eprintln!(
            "  {} {} (n = {}): AUROC {:.4} [{:.4}, {:.4}]  TPR@thr {:.4} [{:.4}, {:.4}]  FPR@thr {:.4} [{:.4}, {:.4}]  FPR@95%TPR {:.4} [{:.4}, {:.4}]",
            s.kind, s.spec, s.n, m.auroc, m.auroc_ci95[0], m.auroc_ci95[1],
            m.tpr_at_threshold.rate, m.tpr_at_threshold.ci95[0], m.tpr_at_threshold.ci95[1],
            m.fpr_at_threshold.rate, m.fpr_at_threshold.ci95[0], m.fpr_at_threshold.ci95[1],
            m.fpr_at_95_tpr, m.fpr_at_95_tpr_ci95[0], m.fpr_at_95_tpr_ci95[1]
        );
    }
}
