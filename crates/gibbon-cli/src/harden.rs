//! The hardening flags: `gibbon train --defense standard|pgd|trades|fast-fgsm|noise` (with
//! `--beta`, `--sigma`, `--guard-drop`) and `--defense CHAIN` (input defenses such as
//! `jpeg:quality=75,bits:depth=3`) on eval, attack, serve-model and transfer.
use crate::commands::TrainArgs;
use anyhow::Result;
use clap::Args;
use gibbon::defense::input::{Defended, DefenseChain};
use gibbon::model::Classifier;
use gibbon::train::{
    AdversarialTraining, FastFgsmTraining, NoiseTraining, TradesTraining, TrainingDefense,
};

/// `gibbon train` flags that choose and tune the training defense.
#[derive(Args, Debug, Clone)]
pub struct TrainDefenseArgs {
    /// Training defense: standard, pgd (Madry et al. 2018), trades (Zhang et al. 2019),
    /// fast-fgsm (Wong et al. 2020, with the catastrophic-overfitting guard) or noise
    /// (Gaussian augmentation, --sigma). Default: pgd when --adv-eps is given, else standard.
    /// pgd, trades and fast-fgsm use --adv-eps, --adv-steps, --adv-alpha, --adv-ramp-epochs
    /// (TRADES's MNIST constants: --adv-eps 0.3 --adv-steps 40 --adv-alpha 0.01; fast-fgsm's
    /// step defaults to 1.25 eps; pair it with --schedule cyclic).
    #[arg(long)]
    pub defense: Option<String>,
    /// TRADES: weight of the KL term (the paper's MNIST and CIFAR-10 value: 6).
    #[arg(long, default_value_t = 6.0, allow_hyphen_values = true)]
    pub beta: f64,
    /// noise: standard deviation of the Gaussian augmentation.
    #[arg(long, allow_hyphen_values = true)]
    pub sigma: Option<f64>,
    /// fast-fgsm: hold-out PGD robust accuracy this far below the best epoch counts as
    /// catastrophic overfitting (roll back to the last good epoch and stop).
    #[arg(long, default_value_t = gibbon::train::DEFAULT_GUARD_DROP)]
    pub guard_drop: f64,
}

/// The training defense the flags ask for.
pub fn training_defense(args: &TrainArgs) -> Result<TrainingDefense> {
    let d = &args.hardening;
    let name =
        d.defense.as_deref().unwrap_or(if args.adv_eps.is_some() { "pgd" } else { "standard" });
    let eps = || -> Result<f64> {
        args.adv_eps
            .ok_or_else(|| crate::commands::usage(format!("--defense {name} needs --adv-eps")))
    };
    if d.sigma.is_some() && name != "noise" {
        return Err(crate::commands::usage("--sigma is only for --defense noise"));
    }
    let defense = match name {
        "standard" => {
            if args.adv_eps.is_some() {
                return Err(crate::commands::usage(
                    "--adv-eps asks for adversarial training: drop it or use --defense pgd",
                ));
            }
            TrainingDefense::Standard
        }
        "pgd" => {
            let eps = eps()?;
            TrainingDefense::Pgd(AdversarialTraining {
                norm: args.adv_norm.parse()?,
                eps,
                steps: args.adv_steps,
                alpha: args.adv_alpha.unwrap_or(2.5 * eps / args.adv_steps.max(1) as f64),
                ramp_epochs: args.adv_ramp_epochs,
            })
        }
        "trades" => {
            let eps = eps()?;
            TrainingDefense::Trades(TradesTraining {
                eps,
                steps: args.adv_steps,
                step_size: args.adv_alpha.unwrap_or(2.5 * eps / args.adv_steps.max(1) as f64),
                beta: d.beta,
                ramp_epochs: args.adv_ramp_epochs,
            })
        }
        "fast-fgsm" => {
            let fast = FastFgsmTraining::new(eps()?);
            TrainingDefense::FastFgsm(FastFgsmTraining {
                alpha: args.adv_alpha.unwrap_or(fast.alpha),
                ramp_epochs: args.adv_ramp_epochs,
                guard_drop: d.guard_drop,
                ..fast
            })
        }
        "noise" => {
            let sigma =
                d.sigma.ok_or_else(|| crate::commands::usage("--defense noise needs --sigma S"))?;
            TrainingDefense::Noise(NoiseTraining { sigma })
        }
        other => {
            return Err(crate::commands::usage(format!(
                "training defense '{other}' is not standard, pgd, trades, fast-fgsm or noise"
            )))
        }
    };
    if matches!(defense, TrainingDefense::Trades(_) | TrainingDefense::FastFgsm(_))
        && args.adv_norm != "linf"
    {
        return Err(crate::commands::usage(format!("--defense {name} is L-infinity only")));
    }
    // Out-of-range parameters are reported before any data is loaded.
    defense.trainer()?;
    Ok(defense)
}

/// The chain of `--defense` in its canonical spelling (None without the flag).
pub fn chain_spec(defense: Option<&str>) -> Result<Option<String>> {
    Ok(defense.map(str::parse::<DefenseChain>).transpose()?.map(|c| c.to_string()))
}

/// `model` behind the input-defense chain `defense` (unchanged without one).
pub fn defend(model: Box<dyn Classifier>, defense: Option<&str>) -> Result<Box<dyn Classifier>> {
    let Some(text) = defense else { return Ok(model) };
    let chain: DefenseChain = text.parse()?;
    tracing::info!("input defenses: {}", describe(&chain));
    Ok(Box::new(Defended::new(model, chain)?))
}

fn describe(chain: &DefenseChain) -> String {
    chain
        .describe()
        .iter()
        .map(|d| {
            format!(
                "{} ({}, {}, BPDA surrogate {:?})",
                d.spec,
                if d.differentiable { "differentiable" } else { "zero gradient" },
                if d.deterministic { "deterministic" } else { "randomized" },
                d.bpda_surrogate
            )
        })
        .collect::<Vec<_>>()
        .join(" then ")
}

/// The per-epoch curve and the cost of a training run, on stderr.
pub fn print_training_cost(report: &gibbon::train::TrainReport) {
    eprintln!("{:>6} {:>10} {:>12} {:>12} {:>9}", "epoch", "loss", "clean", "robust", "seconds");
    for e in &report.epochs {
        eprintln!(
            "{:>6} {:>10.4} {:>12.4} {:>12} {:>9.1}",
            e.epoch,
            e.train_loss,
            e.holdout_clean_accuracy,
            e.holdout_robust_accuracy.map_or("-".into(), |r| format!("{r:.4}")),
            e.seconds
        );
    }
    let c = &report.cost;
    eprintln!(
        "{}: {} epochs, {:.1}s wall ({:.1}s training), {} passes per batch, {} per epoch, {:.1} samples/s",
        report.trainer,
        c.epochs_run,
        c.wall_seconds,
        c.train_seconds,
        c.passes_per_batch,
        c.passes_per_epoch,
        c.samples_per_second
    );
    if let Some(stop) = &report.early_stop {
        eprintln!(
            "stopped at epoch {} ({}); restored epoch {}",
            stop.epoch, stop.reason, stop.restored_epoch
        );
    }
}
