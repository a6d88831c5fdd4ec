//! The detection stage of `gibbon redteam`: a `[[detection]]` detector (read from its file, or
//! fitted and calibrated here as `gibbon detect fit` does, and saved as
//! OUT_DIR/detector-LABEL.json) measured as `gibbon detect eval` measures it, with the run's
//! samples as the clean negatives and the declared OOD sets, then attacked as
//! `gibbon detect attack` attacks it: the non-adaptive PGD and the adaptive PGD on the combined
//! objective (Carlini & Wagner 2017). One JSON holds both (the report's detection section).
use super::stages::Context;
use crate::args::detect::SampleRange;
use crate::cmd::detect::attack::{attack_detector, print_summary, GuardedAttackParams};
use crate::cmd::detect::eval::{evaluate_detector, print_table, Sets};
use crate::cmd::detect::fit::{fit_detector, FitSlices};
use crate::cmd::detect::{load_detector, load_slice};
use anyhow::Result;
use gibbon::data::Dataset;
use gibbon::detect::entry;
use gibbon::detect::file::{images_sha256, DataSlice, DetectorFile};
use gibbon::redteam::DetectorSource;
use gibbon::report::ResultDoc;
use serde_json::json;
use std::ops::Range;

fn sample_range(r: &Range<usize>) -> SampleRange {
    SampleRange { start: r.start, end: r.end }
}

/// The detector of `[[detection]]` number `k`: its file, read or fitted (and saved).
fn detector_file(cx: &Context, k: usize) -> Result<DetectorFile> {
    let plan = &cx.plan.detection[k];
    match &plan.source {
        DetectorSource::File(path) => Ok(load_detector(path, cx.model)?.0),
        DetectorSource::Fit(fit) => {
            let (spec, split, range) = &fit.calib;
            let calib = load_slice(spec, *split, sample_range(range), "calib")?;
            let fit_slice = match &fit.fit {
                Some((spec, split, range)) => {
                    Some(load_slice(spec, *split, sample_range(range), "fit")?)
                }
                None => None,
            };
            if let Some((_, fs)) = &fit_slice {
                let c = &calib.1;
                if fs.spec == c.spec && fs.split == c.split && fs.start < c.end && c.start < fs.end
                {
                    return Err(crate::resolve::usage(format!(
                        "detection {}: fit_range overlaps calib_range: calibrate on held-out data",
                        plan.label
                    )));
                }
            }
            let slices = FitSlices { calib, fit: fit_slice };
            let file = fit_detector(
                cx.model,
                entry(&fit.detector)?,
                &fit.options,
                slices,
                fit.fpr,
                cx.quiet,
            )?;
            let path = cx.out_dir.join(format!("detector-{}.json", plan.label.replace('#', "-")));
            file.save(&path)?;
            eprintln!("  detector {} fitted and calibrated: {}", plan.label, path.display());
            Ok(file)
        }
    }
}

/// Measures and attacks detector number `k` guarding the model.
pub(super) fn detection_stage(cx: &Context, k: usize) -> Result<ResultDoc> {
    let plan = &cx.plan.detection[k];
    let file = detector_file(cx, k)?;
    file.check_model(cx.model.info(), std::path::Path::new(&plan.label))?;
    let detector = file.detector()?;
    let all: Vec<usize> = (0..cx.data.len()).collect();
    let clean_slice = DataSlice {
        spec: cx.plan.data.to_string(),
        split: cx.plan.split.to_string(),
        start: 0,
        end: cx.data.len(),
        sha256: images_sha256(&cx.data.try_batch(&all, tch::Device::Cpu)?)?,
    };
    let mut ood = Vec::new();
    for spec in &plan.ood {
        ood.push((spec.to_string(), Dataset::load(spec, plan.ood_split, Some(cx.data.len()))?));
    }
    let sets = Sets { clean: cx.data, clean_slice, ood, adversarial: Vec::new() };
    let measured =
        evaluate_detector(cx.model, &file, detector.as_ref(), sets, cx.plan.seed, cx.quiet)?;
    if !cx.quiet {
        print_table(&measured);
    }
    let params = GuardedAttackParams {
        norm: plan.norm,
        eps: plan.eps,
        steps: plan.steps,
        restarts: plan.restarts,
        step_size: None,
        lambda: plan.lambda,
        kappa: plan.kappa,
        square_queries: plan.square_queries,
        batch_size: 128,
        seed: cx.plan.seed,
    };
    let attacked = attack_detector(cx.model, &file, detector.as_ref(), cx.data, &params, cx.quiet)?;
    if !cx.quiet {
        print_summary(&attacked);
    }
    let mut json = serde_json::to_value(&measured)?;
    let attack_json = serde_json::to_value(&attacked)?;
    for key in
        ["data", "n", "norm", "eps", "clean_accuracy", "clean_flagged", "non_adaptive", "adaptive"]
    {
        json[key] = attack_json[key].clone();
    }
    json["label"] = json!(format!("detector {}", plan.label));
    Ok(ResultDoc::new(format!("detection {}", plan.label), json))
}
