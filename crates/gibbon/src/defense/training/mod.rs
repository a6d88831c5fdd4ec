//! Training defenses: one shared loop ([`train`]: optimizer, learning-rate schedule, ε ramp,
//! deterministic shuffling, per-epoch checkpoints, per-epoch clean and robust accuracy on a
//! held-out slice, progress bar, cost accounting) and one [`Trainer`] per defense, each in its
//! own file:
//!
//! | defense | file | paper |
//! |---|---|---|
//! | standard | `standard.rs` | cross-entropy on clean inputs |
//! | `pgd` | `pgd.rs` | Madry, Makelov, Schmidt, Tsipras & Vladu 2018 |
//! | `trades` | `trades.rs` | Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019 |
//! | `fast-fgsm` | `fast_fgsm.rs` | Wong, Rice & Kolter 2020 |
//! | `noise` | `noise.rs` | Gaussian augmentation (Cohen, Rosenfeld & Kolter 2019) |
//!
//! A trainer only says how one batch's loss is built and what that costs; the loop does the
//! rest, so every defense gets the same schedules, checkpoints and measurements.
mod fast_fgsm;
mod guard;
mod ibp;
mod noise;
mod pgd;
mod resume;
mod run;
mod standard;
mod trades;

pub use fast_fgsm::{FastFgsmTraining, DEFAULT_GUARD_DROP};
pub use guard::{GuardVerdict, OverfitGuard};
pub use ibp::{
    IbpTraining, IBP_DEFAULT_RAMP_EPOCHS, IBP_INIT_SCALE, IBP_KAPPA_FINAL, IBP_WARMUP_SHARE,
};
pub use noise::NoiseTraining;
pub use pgd::AdversarialTraining;
pub use run::train;
pub use trades::TradesTraining;

use crate::error::{GibbonError, Result};
use crate::model::BuiltinModel;
use crate::random::RngKey;
use crate::threat::Norm;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Tensor;

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba 2015) with default betas.
    Adam,
    /// SGD with the given momentum.
    Sgd {
        /// Momentum coefficient.
        momentum: f64,
    },
}

/// Learning-rate schedule over the optimizer steps of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Schedule {
    /// Constant rate.
    Constant,
    /// Cosine decay from the base rate to 0 over all steps.
    Cosine,
    /// Multiply by 0.1 at 50% and 75% of the epochs.
    Step,
    /// One cycle (Smith 2017; Wong, Rice & Kolter 2020's "cyclic" rate): linear from 0 up to the
    /// base rate at 2/5 of the run, then linear down to 0 at the end.
    Cyclic,
}

impl std::str::FromStr for Schedule {
    type Err = GibbonError;
    /// `constant`, `cosine`, `step` or `cyclic` (the command line's `--schedule`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step),
            "cyclic" => Ok(Schedule::Cyclic),
            other => Err(GibbonError::invalid(
                "schedule",
                format!("'{other}' is not constant, cosine, step or cyclic"),
            )),
        }
    }
}

/// Which training defense, with its parameters (serialized into the training JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "defense", rename_all = "kebab-case")]
pub enum TrainingDefense {
    /// Standard training: cross-entropy on clean inputs.
    Standard,
    /// PGD adversarial training.
    Pgd(AdversarialTraining),
    /// TRADES.
    Trades(TradesTraining),
    /// Fast FGSM adversarial training with the catastrophic-overfitting guard.
    FastFgsm(FastFgsmTraining),
    /// Gaussian noise augmentation.
    Noise(NoiseTraining),
    /// Interval-bound-propagation training (verifiable robustness).
    Ibp(IbpTraining),
}

impl TrainingDefense {
    /// The trainer of this defense, after checking its parameters (the registry: one line per
    /// defense).
    pub fn trainer(&self) -> Result<Box<dyn Trainer + '_>> {
        Ok(match self {
            TrainingDefense::Standard => Box::new(standard::StandardTrainer),
            TrainingDefense::Pgd(cfg) => Box::new(cfg.validated()?),
            TrainingDefense::Trades(cfg) => Box::new(cfg.validated()?),
            TrainingDefense::FastFgsm(cfg) => Box::new(cfg.validated()?),
            TrainingDefense::Noise(cfg) => Box::new(cfg.validated()?),
            TrainingDefense::Ibp(cfg) => Box::new(cfg.validated()?),
        })
    }
}

/// One training batch as a trainer sees it.
pub struct Batch<'a> {
    /// Clean inputs `[B, ...]`.
    pub x: &'a Tensor,
    /// Labels `[B]`.
    pub y: &'a Tensor,
    /// One counter-based random key per sample (seed, dataset index, epoch as restart), so a
    /// sample's random start or noise does not depend on its batch.
    pub keys: &'a [RngKey],
    /// The fraction of the final ε in force (the ε ramp), in (0, 1].
    pub eps_scale: f64,
}

/// How one training defense builds a batch's loss.
pub trait Trainer {
    /// The name recorded in the training JSON (`--defense` value).
    fn name(&self) -> &'static str;
    /// Forward passes over the batch that one optimizer step costs (each followed by a backward
    /// pass, except forward passes that only compute targets), for the cost report.
    fn passes_per_batch(&self) -> usize;
    /// Norm and ε of the per-epoch robust check on the hold-out slice (`None`: clean only).
    fn holdout_threat(&self) -> Option<(Norm, f64)>;
    /// Epochs over which ε grows linearly from 0 (0: the full ε from the start).
    fn ramp_epochs(&self) -> usize {
        0
    }
    /// Robust-accuracy drop below the best epoch that counts as catastrophic overfitting
    /// (`None`: no guard). When it fires the loop restores the last good epoch and stops.
    fn overfit_guard(&self) -> Option<OverfitGuard> {
        None
    }
    /// The factor `train` applies to the freshly initialized weights (not the biases) before
    /// the first epoch; 1 leaves tch's initialization as it is.
    fn initial_weight_scale(&self) -> f64 {
        1.0
    }
    /// The scalar loss of one batch, with a graph to the weights. The model is in evaluation
    /// mode on entry; a trainer switches it to training mode for the passes the optimizer
    /// learns from.
    fn batch_loss(&self, model: &BuiltinModel, batch: &Batch) -> Result<Tensor>;
}

/// Training settings.
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    /// Passes over the training samples.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Base (for `Cyclic`: peak) learning rate.
    pub lr: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// The training defense.
    pub defense: TrainingDefense,
    /// Seed for initialisation, shuffling and random starts.
    pub seed: u64,
    /// Samples at the end of the split kept out of training for per-epoch accuracy.
    pub holdout: usize,
    /// Use only the first `limit` samples (before the hold-out is split off).
    pub limit: Option<usize>,
    /// Write `epoch-N.safetensors` and `epoch-N.json` here after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Go on from the latest checkpoint in `checkpoint_dir` written under the same
    /// configuration (none yet: start afresh). The optimizer's moments restart from zero.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one epoch achieved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Clean accuracy on the hold-out slice.
    pub holdout_clean_accuracy: f64,
    /// APGD-CE (20 iterations) robust accuracy on the hold-out slice (at the adversarial ε, or none).
    pub holdout_robust_accuracy: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time of the epoch (training and hold-out check).
    pub seconds: f64,
    /// Wall time of the training steps alone.
    pub train_seconds: f64,
}

/// What training cost.
#[derive(Debug, Clone, Serialize)]
pub struct TrainCost {
    /// Wall time of the whole run, hold-out checks included.
    pub wall_seconds: f64,
    /// Wall time of the training steps alone.
    pub train_seconds: f64,
    /// Epochs run (fewer than asked when the overfitting guard stopped the run).
    pub epochs_run: usize,
    /// Forward passes over a batch per optimizer step.
    pub passes_per_batch: usize,
    /// Forward passes over a batch per epoch (optimizer steps × passes per batch).
    pub passes_per_epoch: usize,
    /// Training samples per epoch.
    pub samples_per_epoch: usize,
    /// Training samples processed per second of training-step time.
    pub samples_per_second: f64,
}

/// Why a run stopped before its last epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EarlyStop {
    /// The epoch whose check fired.
    pub epoch: usize,
    /// The epoch whose weights were restored.
    pub restored_epoch: usize,
    /// What happened.
    pub reason: String,
}

/// The result of a training run: per-epoch statistics, cost and any early stop.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The trainer's name.
    pub trainer: String,
    /// One entry per epoch run.
    pub epochs: Vec<EpochStats>,
    /// What it cost.
    pub cost: TrainCost,
    /// Set when the overfitting guard stopped the run.
    pub early_stop: Option<EarlyStop>,
    /// The epoch whose checkpoint this run resumed from, if it resumed.
    pub resumed_from_epoch: Option<usize>,
}

/// The learning rate at `progress` ∈ [0, 1] of the run.
pub fn lr_at(schedule: Schedule, base: f64, progress: f64) -> f64 {
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Step => {
            base * if progress >= 0.75 {
                0.01
            } else if progress >= 0.5 {
                0.1
            } else {
                1.0
            }
        }
        Schedule::Cyclic => {
            if progress <= 0.4 {
                base * progress / 0.4
            } else {
                base * (1.0 - progress).max(0.0) / 0.6
            }
        }
    }
}

/// A uniform start in the L∞ ball of radius `eps` per sample (stream 1 of each key).
pub(crate) fn uniform_linf_start(x: &Tensor, keys: &[RngKey], eps: f64) -> Tensor {
    let shape = &x.size()[1..];
    crate::random::stacked(keys, shape, x.device(), |k, n| k.stream(1).uniform(n)) * (2.0 * eps)
        - eps
}
