//! Training built-in architectures: standard training and PGD adversarial training
//! (Madry, Makelov, Schmidt, Tsipras & Vladu 2018), with Adam or SGD with momentum, a learning
//! rate schedule, an ε ramp, per-epoch checkpoints and per-epoch clean and robust accuracy on a
//! held-out slice of the training split.
//!
//! Adversarial training uses the final PGD iterate (no early stop: the model should see the
//! strongest point the inner maximisation found), random start, and trains on adversarial
//! examples only, as in the paper.
use crate::attack::{cross_entropy_objective, AttackOptions};
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::eval::{evaluate, EvalSettings, RunInfo};
use crate::model::{BuiltinModel, Classifier};
use crate::random::{splitmix64, RngKey};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use std::path::PathBuf;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

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

/// Learning-rate schedule over epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Schedule {
    /// Constant rate.
    Constant,
    /// Cosine decay from the base rate to 0 over all steps.
    Cosine,
    /// Multiply by 0.1 at 50% and 75% of the epochs.
    Step,
}

impl std::str::FromStr for Schedule {
    type Err = GibbonError;
    /// `constant`, `cosine` or `step` (the command line's `--schedule`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step),
            other => Err(GibbonError::invalid(
                "schedule",
                format!("'{other}' is not constant, cosine or step"),
            )),
        }
    }
}

/// PGD adversarial training settings.
#[derive(Debug, Clone, Serialize)]
pub struct AdversarialTraining {
    /// Threat model of the inner maximisation (norm, ε, steps).
    pub norm: Norm,
    /// Final ε.
    pub eps: f64,
    /// PGD steps per batch.
    pub steps: usize,
    /// PGD step size.
    pub alpha: f64,
    /// ε grows linearly from 0 over this many epochs (0 = full ε from the start).
    pub ramp_epochs: usize,
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
    /// Base learning rate.
    pub lr: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Adversarial training, or `None` for standard training.
    pub adversarial: Option<AdversarialTraining>,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
    /// Samples at the end of the split kept out of training for per-epoch accuracy.
    pub holdout: usize,
    /// Use only the first `limit` samples (before the hold-out is split off).
    pub limit: Option<usize>,
    /// Write `epoch-N.safetensors` here after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one epoch achieved.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Clean accuracy on the hold-out slice.
    pub holdout_clean_accuracy: f64,
    /// PGD-10 robust accuracy on the hold-out slice (at the adversarial ε, or none).
    pub holdout_robust_accuracy: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time.
    pub seconds: f64,
}

fn lr_at(cfg: &TrainConfig, progress: f64) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Step => {
            cfg.lr
                * if progress >= 0.75 {
                    0.01
                } else if progress >= 0.5 {
                    0.1
                } else {
                    1.0
                }
        }
    }
}

/// Trains `model` on `data` (the training split) and returns per-epoch statistics.
pub fn train(
    model: &mut BuiltinModel,
    data: &Dataset,
    cfg: &TrainConfig,
) -> Result<Vec<EpochStats>> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(GibbonError::invalid("epochs/batch-size", "must be at least 1"));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(GibbonError::invalid("lr", format!("{} must be > 0", cfg.lr)));
    }
    let total = cfg.limit.unwrap_or(data.len()).min(data.len());
    if cfg.holdout >= total {
        return Err(GibbonError::invalid(
            "holdout",
            format!("{} leaves no training samples of {total}", cfg.holdout),
        ));
    }
    let train_n = total - cfg.holdout;
    let holdout: Vec<usize> = (train_n..total).collect();
    let device = model.device();
    model.var_store_mut().unfreeze();
    let vs_path = model.var_store();
    let mut opt = match cfg.optimizer {
        OptimizerKind::Adam => {
            nn::Adam { wd: cfg.weight_decay, ..Default::default() }.build(vs_path, cfg.lr)?
        }
        OptimizerKind::Sgd { momentum } => {
            nn::Sgd { momentum, wd: cfg.weight_decay, ..Default::default() }
                .build(vs_path, cfg.lr)?
        }
    };
    let steps_per_epoch = train_n.div_ceil(cfg.batch_size);
    let mut stats = Vec::new();
    for epoch in 0..cfg.epochs {
        let started = std::time::Instant::now();
        // Deterministic shuffle: sort by a hash of (seed, epoch, index).
        let mut order: Vec<usize> = (0..train_n).collect();
        order.sort_by_key(|&i| splitmix64(splitmix64(cfg.seed ^ (epoch as u64) << 32) ^ i as u64));
        let bar = if cfg.progress {
            let b = indicatif::ProgressBar::new(steps_per_epoch as u64);
            if let Ok(s) = indicatif::ProgressStyle::with_template(&format!(
                "epoch {}/{} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} batches ({{eta}} left) {{msg}}",
                epoch + 1,
                cfg.epochs
            )) {
                b.set_style(s);
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut loss_sum = 0.0;
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let progress =
                (epoch * steps_per_epoch + b) as f64 / (cfg.epochs * steps_per_epoch) as f64;
            lr = lr_at(cfg, progress);
            opt.set_lr(lr);
            let x = data.try_batch(chunk, device)?;
            let y = data.try_labels_of(chunk, device)?;
            let x_train = match &cfg.adversarial {
                None => x,
                Some(adv) => {
                    let ramp = if adv.ramp_epochs == 0 {
                        1.0
                    } else {
                        ((epoch * steps_per_epoch + b + 1) as f64
                            / (adv.ramp_epochs * steps_per_epoch) as f64)
                            .min(1.0)
                    };
                    model.set_train(false);
                    let keys: Vec<RngKey> =
                        chunk.iter().map(|&i| RngKey::new(cfg.seed, i).restart(epoch)).collect();
                    pgd_final_iterate(model, &x, &y, adv, adv.eps * ramp, &keys)?
                }
            };
            model.set_train(true);
            let logits = model.forward(&x_train)?;
            let loss = logits.cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            loss_sum += loss.double_value(&[]);
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / (b + 1) as f64));
        }
        bar.finish_and_clear();
        model.set_train(false);
        model.var_store_mut().freeze();
        let (clean, robust) = holdout_accuracy(model, data, &holdout, cfg)?;
        model.var_store_mut().unfreeze();
        let s = EpochStats {
            epoch: epoch + 1,
            train_loss: loss_sum / steps_per_epoch as f64,
            holdout_clean_accuracy: clean,
            holdout_robust_accuracy: robust,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "epoch {}: loss {:.4}, hold-out clean {:.4}, robust {:?}, {:.1}s",
            s.epoch,
            s.train_loss,
            s.holdout_clean_accuracy,
            s.holdout_robust_accuracy,
            s.seconds
        );
        if let Some(dir) = &cfg.checkpoint_dir {
            std::fs::create_dir_all(dir).map_err(|e| GibbonError::io(dir, e))?;
            model.save(&dir.join(format!("epoch-{}.safetensors", epoch + 1)))?;
        }
        stats.push(s);
    }
    model.var_store_mut().freeze();
    model.set_train(false);
    Ok(stats)
}

fn pgd_final_iterate(
    model: &BuiltinModel,
    x: &Tensor,
    y: &Tensor,
    adv: &AdversarialTraining,
    eps: f64,
    keys: &[RngKey],
) -> Result<Tensor> {
    let threat = ThreatModel::new(adv.norm, eps)?;
    if eps == 0.0 {
        return Ok(x.shallow_clone());
    }
    let shape = &x.size()[1..];
    let start = match adv.norm {
        Norm::Linf => {
            crate::random::stacked(keys, shape, x.device(), |k, n| k.stream(1).uniform(n))
                * (2.0 * eps)
                - eps
        }
        _ => x.zeros_like(),
    };
    let mut x_adv = threat.project(x, &(x + start));
    let alpha = adv.alpha * eps / adv.eps;
    for _ in 0..adv.steps {
        let xg = x_adv.detach().set_requires_grad(true);
        let logits = model.forward(&xg)?;
        let loss = cross_entropy_objective(&logits, y, None).sum(Kind::Float);
        let grad = Tensor::f_run_backward(&[loss], &[&xg], false, false)?.remove(0);
        let dir = match adv.norm {
            Norm::Linf => grad.sign(),
            _ => {
                let n = Norm::L2.per_sample(&grad).to_kind(Kind::Float).clamp_min(1e-12);
                &grad / n.view(crate::threat::per_sample_view(x).as_slice())
            }
        };
        x_adv = threat.project(x, &(x_adv.detach() + dir * alpha));
    }
    Ok(x_adv.detach())
}

fn holdout_accuracy(
    model: &BuiltinModel,
    data: &Dataset,
    holdout: &[usize],
    cfg: &TrainConfig,
) -> Result<(f64, Option<f64>)> {
    if holdout.is_empty() {
        return Ok((f64::NAN, None));
    }
    let device = model.device();
    let mut correct = 0usize;
    for chunk in holdout.chunks(256) {
        let pred = model.predict(&data.try_batch(chunk, device)?)?;
        let y = data.try_labels_of(chunk, device)?;
        correct += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]) as usize;
    }
    let clean = correct as f64 / holdout.len() as f64;
    let Some(adv) = &cfg.adversarial else { return Ok((clean, None)) };
    // PGD-10 through the evaluation path on the hold-out slice (a copy of those samples).
    let x = data.try_batch(holdout, tch::Device::Cpu)?;
    let labels: Vec<i64> = holdout.iter().map(|&i| data.labels()[i]).collect();
    let slice = Dataset::from_tensor(x, labels, "holdout")?;
    let mut threat = ThreatModel::new(adv.norm, adv.eps)?;
    threat.budget.steps = 10;
    let settings = EvalSettings {
        batch_size: 256,
        seed: cfg.seed,
        attacks: vec!["pgd".into()],
        options: AttackOptions::default(),
        ..Default::default()
    };
    let (report, _) = evaluate(model, &slice, &threat, &settings, &RunInfo::default())?;
    Ok((clean, Some(report.robust_accuracy)))
}
