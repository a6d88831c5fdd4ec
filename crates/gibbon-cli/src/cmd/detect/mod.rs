//! `gibbon detect fit | eval | attack`: detectors calibrated to a false-positive rate, measured
//! on OOD and adversarial data, and attacked together with the classifier.
pub(crate) mod attack;
pub(crate) mod eval;
pub(crate) mod fit;
mod plots;

use crate::args::detect::{DetectArgs, DetectCommand, SampleRange};
use crate::resolve::usage;
use anyhow::Result;
use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::detect::file::{images_sha256, DataSlice, DetectorFile};
use gibbon::detect::Detector;
use gibbon::model::Classifier;
use std::path::Path;

/// Runs the detect subcommand of `args`.
pub fn run(args: DetectArgs, quiet: bool) -> Result<()> {
    match args.command {
        DetectCommand::Fit(a) => fit::run(a, quiet),
        DetectCommand::Eval(a) => eval::run(a, quiet),
        DetectCommand::Attack(a) => attack::run(a, quiet),
    }
}

/// The samples `range` of `split` of `spec`, and where they came from.
pub(crate) fn load_slice(
    spec: &DataSpec,
    split: Split,
    range: SampleRange,
    role: &str,
) -> Result<(Dataset, DataSlice)> {
    let full = Dataset::load(spec, split, Some(range.end))?;
    if full.len() < range.end {
        return Err(usage(format!(
            "--{role}-range {range}: {spec} ({split}) has only {} samples",
            full.len()
        )));
    }
    let len = (range.end - range.start) as i64;
    let images = full.images().narrow(0, range.start as i64, len);
    let labels = full.labels()[range.start..range.end].to_vec();
    let name = format!("{spec} ({split}) {range}");
    let data = Dataset::from_tensor(images, labels, &name)?;
    let all: Vec<usize> = (0..data.len()).collect();
    let sha256 = images_sha256(&data.try_batch(&all, tch::Device::Cpu)?)?;
    let slice = DataSlice {
        spec: spec.to_string(),
        split: split.to_string(),
        start: range.start,
        end: range.end,
        sha256,
    };
    Ok((data, slice))
}

/// The detector file at `path`, refused unless it was fitted for `model`.
pub(crate) fn load_detector(
    path: &Path,
    model: &dyn Classifier,
) -> Result<(DetectorFile, Box<dyn Detector>)> {
    let file = DetectorFile::load(path)?;
    file.check_model(model.info(), path)?;
    let detector = file.detector()?;
    Ok((file, detector))
}

/// Progress over `n` samples: a bar on a terminal, plain lines elsewhere, nothing with --quiet.
fn bar(n: usize, what: &str, quiet: bool) -> gibbon::progress::Progress {
    gibbon::progress::Progress::new(crate::resolve::progress(quiet), n as u64, what, "samples")
}
