//! `gibbon train`: standard or PGD adversarial training of a built-in architecture.
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
    let stats = gibbon::train::train(&mut model, &data, &cfg)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| gibbon::GibbonError::io(dir, e))?;
    }
    model.save(&args.out)?;
    write_json(
        &args.out.with_extension("train.json"),
        &serde_json::json!({"config": cfg, "epochs": stats, "command": command_line()}),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
