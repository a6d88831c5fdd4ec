//! The commands: [`run`] dispatches to one module per command; each reads its typed flags
//! (`crate::args`), turns them into library values (`crate::resolve`) and calls the library.
mod attack;
mod audit;
mod certified_beside;
mod certify;
mod certify_ibp;
mod demo;
mod detect;
mod eval;
mod guard;
mod inspect;
mod redteam;
mod report;
mod serve;
mod text;
mod tradeoff;
mod train;
mod transfer;

use crate::args::{Cli, Command};
use anyhow::{Context, Result};
use gibbon::eval::EvalReport;
use std::path::Path;

/// Runs the command of `cli`.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(a) => eval::run(a, cli.quiet),
        Command::Attack(a) => attack::run(a, cli.quiet),
        Command::Train(a) => train::run(a, cli.quiet),
        Command::Demo(a) => demo::run(a, cli.quiet),
        Command::Inspect(a) => inspect::run(a),
        Command::ServeModel(a) => serve::run(a),
        Command::Transfer(a) => transfer::run(a, cli.quiet),
        Command::Tradeoff(a) => tradeoff::run(a, cli.quiet),
        Command::Audit(a) => audit::run(a, cli.quiet),
        Command::Certify(a) => certify::run(a, cli.quiet),
        Command::Detect(a) => detect::run(a, cli.quiet),
        Command::Report(a) => report::run(a),
        Command::Redteam(a) => redteam::run(a, cli.quiet),
        Command::Guard(a) => guard::run(a),
        Command::Text(a) => text::run(a),
    }
}

/// Writes `value` as pretty JSON to `path` (through a temporary file, so a reader never sees
/// half a file), creating the parent folder.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| gibbon::GibbonError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| gibbon::GibbonError::io(path, e))?;
    Ok(())
}

/// The one-line summary of an evaluation, on stderr.
fn print_summary(report: &EvalReport) {
    eprintln!(
        "{}: clean accuracy {:.4}, robust accuracy {:.4} (95% CI {:.4}-{:.4}) under {} eps {} on n={} in {:.1}s",
        report.model.path,
        report.clean_accuracy,
        report.robust_accuracy,
        report.robust_accuracy_ci95[0],
        report.robust_accuracy_ci95[1],
        report.threat.norm,
        report.threat.eps,
        report.n,
        report.seconds
    );
}
