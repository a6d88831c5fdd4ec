//! Resolving the hardening flags: `gibbon train --defense standard|pgd|trades|fast-fgsm|noise|ibp` (with
//! `--beta`, `--sigma`, `--guard-drop`) and `--defense CHAIN` (input defenses such as
//! `jpeg:quality=75,bits:depth=3`) on eval, attack, serve-model and transfer.
use crate::args::TrainArgs;
use crate::resolve::usage;
use anyhow::Result;
use gibbon::defense::input::{Defended, DefenseChain};
use gibbon::model::{Classifier, FlaggedOp, OpEffect};
use gibbon::train::{
    AdversarialTraining, FastFgsmTraining, IbpTraining, NoiseTraining, TradesTraining,
    TrainingDefense,
};

/// The training defense the flags ask for.
pub fn training_defense(args: &TrainArgs) -> Result<TrainingDefense> {
    let d = &args.hardening;
    let name =
        d.defense.as_deref().unwrap_or(if args.adv_eps.is_some() { "pgd" } else { "standard" });
    let eps = || -> Result<f64> {
        args.adv_eps.ok_or_else(|| usage(format!("--defense {name} needs --adv-eps")))
    };
    if d.sigma.is_some() && name != "noise" {
        return Err(usage("--sigma is only for --defense noise"));
    }
    let defense = match name {
        "standard" => {
            if args.adv_eps.is_some() {
                return Err(usage(
                    "--adv-eps asks for adversarial training: drop it or use --defense pgd",
                ));
            }
            TrainingDefense::Standard
        }
        "pgd" => {
            let eps = eps()?;
            TrainingDefense::Pgd(AdversarialTraining {
                norm: args.adv_norm,
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
            let sigma = d.sigma.ok_or_else(|| usage("--defense noise needs --sigma S"))?;
            TrainingDefense::Noise(NoiseTraining { sigma })
        }
        "ibp" => {
            let ibp = IbpTraining::new(eps()?);
            let ramp =
                if args.adv_ramp_epochs > 0 { args.adv_ramp_epochs } else { ibp.ramp_epochs };
            TrainingDefense::Ibp(IbpTraining { ramp_epochs: ramp, ..ibp })
        }
        other => {
            return Err(usage(format!(
                "training defense '{other}' is not standard, pgd, trades, fast-fgsm, noise or ibp"
            )))
        }
    };
    if matches!(
        defense,
        TrainingDefense::Trades(_) | TrainingDefense::FastFgsm(_) | TrainingDefense::Ibp(_)
    ) && args.adv_norm != gibbon::threat::Norm::Linf
    {
        return Err(usage(format!("--defense {name} is L-infinity only")));
    }
    // Out-of-range parameters are reported before any data is loaded.
    defense.trainer()?;
    Ok(defense)
}

/// The chain of `--defense` in its canonical spelling (None without the flag).
pub fn chain_spec(defense: Option<&str>) -> Result<Option<String>> {
    Ok(defense.map(str::parse::<DefenseChain>).transpose()?.map(|c| c.to_string()))
}

/// `model` behind the input-defense chain `defense` (unchanged without one); with `bpda`, its
/// BPDA view (the same answers, gradients through each defense's surrogate). What was swapped
/// is reported by [`report_bpda`].
pub fn defend(
    model: Box<dyn Classifier>,
    defense: Option<&str>,
    bpda: bool,
) -> Result<Box<dyn Classifier>> {
    let Some(text) = defense else { return Ok(model) };
    let chain: DefenseChain = text.parse()?;
    tracing::info!("input defenses: {}", describe(&chain));
    let defended = Defended::new(model, chain)?;
    if !bpda {
        return Ok(Box::new(defended));
    }
    Ok(Box::new(defended.with_bpda()))
}

/// Prints to stderr what the `--bpda` view `model` swapped (each operator or defense and where
/// it is, from its graph scan); warns when nothing was swapped, and names the operations
/// gibbon cannot swap (their gradients stay useless, so gradient-free attacks must decide).
pub fn report_bpda(model: &dyn Classifier) {
    let scan = model.graph_scan();
    let swapped: Vec<&FlaggedOp> = scan.ops.iter().filter(|o| o.swapped).collect();
    for o in &swapped {
        eprintln!(
            "--bpda: swapped {} at {} for {}",
            o.op,
            o.location,
            o.surrogate.as_deref().unwrap_or("a surrogate")
        );
    }
    let list = |ops: Vec<&FlaggedOp>| -> String {
        ops.iter().map(|o| format!("{} at {}", o.op, o.location)).collect::<Vec<_>>().join(", ")
    };
    let stuck = list(scan.unswappable().collect());
    let random = list(scan.ops.iter().filter(|o| o.effect == OpEffect::Random).collect());
    if swapped.is_empty() {
        let why = if !scan.inspected {
            format!("the graph cannot be inspected ({})", scan.source)
        } else if scan.ops.is_empty() {
            format!("no non-differentiable or random operation in {}", scan.source)
        } else {
            format!("gibbon cannot rewrite what it found in {}", scan.source)
        };
        tracing::warn!("--bpda: nothing to swap, gradients are unchanged: {why}");
    }
    if !stuck.is_empty() {
        tracing::warn!(
            "--bpda: gibbon cannot swap {stuck}: their gradients stay zero or cut in every view; \
             use gibbon audit / gradient-free attacks (square, rays)"
        );
    }
    if !random.is_empty() {
        tracing::warn!(
            "--bpda: {random} draw random numbers, which BPDA does not change: one pass's \
             gradient is one draw (use --suite rand, EOT over 20 draws, or gibbon audit)"
        );
    }
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
