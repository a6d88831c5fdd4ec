//! `gibbon detect fit`: fit the detector, calibrate its threshold on held-out clean data, save.
use super::{bar, load_slice};
use crate::args::detect::DetectFitArgs;
use crate::resolve::{build_model, set_threads, usage};
use anyhow::Result;
use gibbon::data::Dataset;
use gibbon::detect::calibrate::{calibrate, min_calibration_size};
use gibbon::detect::file::DataSlice;
use gibbon::detect::file::DetectorFile;
use gibbon::detect::{entry, score_dataset, DetectorEntry, DetectorOptions, FitInput};
use gibbon::model::Classifier;

pub fn run(args: DetectFitArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let entry = entry(&args.detector)?;
    if !(args.fpr > 0.0 && args.fpr < 1.0) {
        return Err(usage(format!("--fpr {}: must be in (0, 1)", args.fpr)));
    }
    let need = min_calibration_size(args.fpr);
    let have = args.calib_range.end - args.calib_range.start;
    if have < need {
        return Err(usage(format!(
            "--calib-range {}: {have} calibration samples are too few for --fpr {}: need at least {need} (ceil(10 / fpr))",
            args.calib_range, args.fpr
        )));
    }
    let (calib, calib_slice) =
        load_slice(&args.calib, args.calib_split, args.calib_range, "calib")?;
    let model = build_model(&args.model, &calib)?;
    let fit = match (&args.fit_data, entry.needs_fit_data) {
        (Some(spec), true) => Some(load_slice(spec, args.fit_split, args.fit_range, "fit")?),
        (None, true) => {
            return Err(usage(format!(
                "--detector {}: give labelled training data with --fit-data",
                entry.name
            )))
        }
        (_, false) => None,
    };
    if let Some((_, fs)) = &fit {
        let same = fs.spec == calib_slice.spec && fs.split == calib_slice.split;
        if same && fs.start < calib_slice.end && calib_slice.start < fs.end {
            return Err(usage(format!(
                "--fit-range {} overlaps --calib-range {}: calibrate on held-out data",
                args.fit_range, args.calib_range
            )));
        }
    }
    let options = DetectorOptions {
        temperature: args.temperature,
        noise: args.noise,
        feature_layer: args.feature_layer.clone(),
        squeezers: args.squeezers.clone(),
    };
    let slices = FitSlices { calib: (calib, calib_slice), fit };
    let file = fit_detector(model.as_ref(), entry, &options, slices, args.fpr, quiet)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| gibbon::GibbonError::io(dir, e))?;
    }
    file.save(&args.out)?;
    Ok(())
}

/// The data of a fit: the calibration slice and, for detectors that need it, the fit slice.
pub(crate) struct FitSlices {
    pub calib: (Dataset, DataSlice),
    pub fit: Option<(Dataset, DataSlice)>,
}

/// Fits detector `entry` for `model` and calibrates its threshold to `fpr` on the calibration
/// slice: the detector file `gibbon detect fit` writes.
pub(crate) fn fit_detector(
    model: &dyn Classifier,
    entry: &DetectorEntry,
    options: &DetectorOptions,
    slices: FitSlices,
    fpr: f64,
    quiet: bool,
) -> Result<DetectorFile> {
    let (calib, calib_slice) = (&slices.calib.0, slices.calib.1.clone());
    let input = FitInput { model, options, data: slices.fit.as_ref().map(|(d, _)| d) };
    let detector = (entry.fit)(&input)?;
    let progress = bar(calib.len(), "calibrating", quiet);
    let mut tick = |k: usize| progress.inc(k as u64);
    let scores = score_dataset(detector.as_ref(), model, calib, model.device(), &mut tick)?;
    progress.finish();
    let calibration = calibrate(&scores, fpr)?;
    if !quiet {
        eprintln!(
            "{}: threshold {:.6} at target FPR {} on n = {} calibration samples ({} above it, {:.4}); \
             95% upper bound on the true FPR {:.4}",
            entry.name,
            calibration.threshold,
            calibration.fpr_target,
            calibration.n,
            calibration.flagged,
            calibration.calibration_fpr,
            calibration.fpr_upper_bound
        );
    }
    Ok(DetectorFile {
        gibbon_version: gibbon::VERSION.to_string(),
        kind: entry.name.to_string(),
        params: detector.params(),
        calibration,
        model: model.info().clone(),
        fit_data: slices.fit.map(|(_, s)| s),
        calibration_data: calib_slice,
    })
}
