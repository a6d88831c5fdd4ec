//! The flags of `gibbon detect fit | eval | attack`.
use super::{parse_flag, DataArgs, ModelArgs};
use clap::{Args, Subcommand};
use gibbon::data::{DataSpec, Split};
use gibbon::threat::Norm;
use std::path::PathBuf;
use std::str::FromStr;

/// The help listing every registered detector.
fn detector_help() -> String {
    let lines: Vec<String> =
        gibbon::detect::DETECTORS.iter().map(|d| format!("{}: {}", d.name, d.summary)).collect();
    format!("Detectors:\n  {}", lines.join("\n  "))
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(subcommand)]
    pub command: DetectCommand,
}

#[derive(Subcommand, Debug)]
pub enum DetectCommand {
    /// Fit a detector, calibrate its threshold to a false-positive rate on clean data, save it.
    #[command(after_help = detector_help())]
    Fit(DetectFitArgs),
    /// AUROC, TPR at the threshold and FPR at 95% TPR (95% intervals) on OOD and adversarial
    /// sets against clean test data; JSON and HTML (ROC curves, score histograms).
    Eval(DetectEvalArgs),
    /// Attack the guarded model (classifier + detector): the non-adaptive PGD vs the adaptive
    /// one on the combined objective; detection rates and robust accuracy under detection.
    Attack(DetectAttackArgs),
}

/// A slice of samples `START..END` (END exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRange {
    pub start: usize,
    pub end: usize,
}

impl FromStr for SampleRange {
    type Err = gibbon::GibbonError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            gibbon::GibbonError::invalid(
                "range",
                format!("'{s}': expected START..END with START < END, e.g. 50000..60000"),
            )
        };
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let start: usize = a.trim().parse().map_err(|_| bad())?;
        let end: usize = b.trim().parse().map_err(|_| bad())?;
        if start >= end {
            return Err(bad());
        }
        Ok(SampleRange { start, end })
    }
}

impl std::fmt::Display for SampleRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

#[derive(Args, Debug)]
pub struct DetectFitArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The detector (see below).
    #[arg(long)]
    pub detector: String,
    /// Labelled in-distribution data the detector is fitted on (mahalanobis).
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub fit_data: Option<DataSpec>,
    /// Split of --fit-data.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "train")]
    pub fit_split: Split,
    /// Samples of --fit-data used, START..END.
    #[arg(long, value_parser = parse_flag::<SampleRange>, default_value = "0..10000")]
    pub fit_range: SampleRange,
    /// Clean data the threshold is calibrated on (held out from the evaluation data).
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub calib: DataSpec,
    /// Split of --calib.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "test")]
    pub calib_split: Split,
    /// Samples of --calib used, START..END. The default, MNIST test images 2000..5000, is held
    /// out from `detect eval`'s default clean range 0..2000 and from the model's training
    /// images, and comes from the same half of the MNIST test set (its first 5,000 and last
    /// 5,000 images were written by different people: a threshold calibrated on one half does
    /// not hold its false-positive rate on the other).
    #[arg(long, value_parser = parse_flag::<SampleRange>, default_value = "2000..5000")]
    pub calib_range: SampleRange,
    /// Target false-positive rate on clean data.
    #[arg(long, default_value_t = gibbon::detect::calibrate::DEFAULT_FPR, allow_hyphen_values = true)]
    pub fpr: f64,
    /// Softmax temperature (energy: 1; odin: 1000).
    #[arg(long, allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// Input-preprocessing step (odin: 0.0014; mahalanobis: 0).
    #[arg(long, allow_hyphen_values = true)]
    pub noise: Option<f64>,
    /// Feature layer for mahalanobis (default: penultimate).
    #[arg(long)]
    pub feature_layer: Option<String>,
    /// Squeezers for squeeze, '+'-separated input-defense specs (default bits:depth=1+median:size=2).
    #[arg(long)]
    pub squeezers: Option<String>,
    /// Write the detector file (JSON) here.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DetectEvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The detector file written by `gibbon detect fit`.
    #[arg(long)]
    pub detector: PathBuf,
    /// Clean test data (negatives).
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub clean: DataSpec,
    /// Split of --clean.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "test")]
    pub clean_split: Split,
    /// Samples of --clean used, START..END.
    #[arg(long, value_parser = parse_flag::<SampleRange>, default_value = "0..2000")]
    pub clean_range: SampleRange,
    /// Out-of-distribution data (repeatable), e.g. idx:../shared/data/notmnist.
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub ood: Vec<DataSpec>,
    /// Split of the --ood sets.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "test")]
    pub ood_split: Split,
    /// Adversarial examples (repeatable), e.g. npy:D/adversarial.npy,D/labels.npy from
    /// `gibbon attack --out-dir D`.
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub adversarial: Vec<DataSpec>,
    /// Use the first N samples of every OOD and adversarial set.
    #[arg(long)]
    pub n: Option<usize>,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the JSON result here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write an HTML page: metrics, ROC curves and score histograms.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DetectAttackArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The detector file written by `gibbon detect fit`.
    #[arg(long)]
    pub detector: PathBuf,
    /// Norm of the ball: linf, l2 or l1 (L1: sparse steepest-descent PGD steps).
    #[arg(long, value_parser = parse_flag::<Norm>, default_value = "linf")]
    pub norm: Norm,
    /// Radius in --norm.
    #[arg(long, allow_hyphen_values = true)]
    pub eps: f64,
    /// PGD steps per restart.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Restarts (clean start, then random starts).
    #[arg(long, default_value_t = 2)]
    pub restarts: usize,
    /// Step size (default 2.5·eps/steps).
    #[arg(long, allow_hyphen_values = true)]
    pub step_size: Option<f64>,
    /// Weight of the detector term of the adaptive objective.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub lambda: f64,
    /// Logit margin κ of the adaptive objective.
    #[arg(long, default_value_t = 5.0, allow_hyphen_values = true)]
    pub kappa: f64,
    /// Queries per sample of the gradient-free stage (Square's random search on the combined
    /// objective) run on the samples the adaptive PGD left; default 1,000 for a detector
    /// without a useful gradient (squeeze), else 0 (no such stage).
    #[arg(long)]
    pub square_queries: Option<usize>,
    /// Samples per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the JSON result here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}
