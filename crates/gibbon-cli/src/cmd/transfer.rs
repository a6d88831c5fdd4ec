//! `gibbon transfer`: craft on each surrogate (white-box), evaluate on each target (queries
//! only); prints the matrix of success rates and writes it as JSON.
use super::write_json;
use crate::args::TransferArgs;
use crate::resolve::{load_data, load_model_list, run_info, set_threads, transfer_settings};
use anyhow::Result;
use gibbon::eval::transfer_matrix;
use gibbon::model::Classifier;

/// Runs the attack on every surrogate and classifies its examples with every target.
pub fn run(args: TransferArgs, quiet: bool) -> Result<()> {
    set_threads(args.threads)?;
    let (threat, transfer) = transfer_settings(&args, quiet)?;
    let data = load_data(&args.data)?;
    let (arch, normalize, device) = (args.arch, args.normalize.as_ref(), args.device.0);
    let surrogates =
        load_model_list(&args.surrogates, "surrogate", arch, normalize, device, &data)?;
    let targets = load_model_list(&args.targets, "target", arch, normalize, device, &data)?
        .into_iter()
        .map(|m| crate::resolve::defend(m, args.defense.as_deref(), false))
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(
        "transfer: {} surrogate(s) x {} target(s), {} under {} eps {}",
        surrogates.len(),
        targets.len(),
        transfer.attack,
        threat.norm,
        threat.eps
    );
    let surrogate_refs: Vec<&dyn Classifier> = surrogates.iter().map(|m| m.as_ref()).collect();
    let target_refs: Vec<&dyn Classifier> = targets.iter().map(|m| m.as_ref()).collect();
    let report = transfer_matrix(
        &surrogate_refs,
        &target_refs,
        &data,
        &threat,
        &transfer,
        &run_info(&args.data),
    )?;
    print!("{}", report.table());
    if let Some(out) = &args.out {
        write_json(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(path) = &args.html {
        let doc = gibbon::report::ResultDoc::new("transfer", serde_json::to_value(&report)?);
        super::report::write_page(path, "gibbon transfer", &[doc])?;
    }
    Ok(())
}
