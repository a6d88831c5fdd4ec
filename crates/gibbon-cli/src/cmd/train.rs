//! `gibbon train`: a built-in architecture trained with one of the training defenses.
use super::write_json;
use crate::args::TrainArgs;
use crate::resolve::{command_line, load_train_data, set_threads, train_config};
use anyhow::Result;
use gibbon::model::BuiltinModel;

/// Trains, writes the weights to `--out` and the configuration and per-epoch statistics beside
/// them (OUT.train.json).
pub fn run(args: TrainArgs, quiet: bool) -> Result<()> {
    set_threads(args.threads)?;
    let cfg = train_config(&args, quiet)?;
    let data = load_train_data(&args)?;
    tch::manual_seed(args.seed as i64);
    let classes = data.num_classes().max(2) as i64;
    let mut model = BuiltinModel::new(args.arch, &data.sample_shape(), classes, args.device.0)?;
    let report = gibbon::train::train(&mut model, &data, &cfg)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| gibbon::GibbonError::io(dir, e))?;
    }
    model.save(&args.out)?;
    write_json(
        &args.out.with_extension("train.json"),
        &serde_json::json!({"config": cfg, "trainer": report.trainer, "epochs": report.epochs,
            "cost": report.cost, "early_stop": report.early_stop, "command": command_line()}),
    )?;
    print_training_cost(&report);
    eprintln!("wrote {}", args.out.display());
    Ok(())
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
