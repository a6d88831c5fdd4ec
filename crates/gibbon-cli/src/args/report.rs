//! Flags of `gibbon report` and `gibbon redteam`.
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Result JSON files written by gibbon (eval, attack's result.json, a curve, transfer,
    /// audit, certify, redteam). Beside an attack's result.json, adversarial.npy and the data
    /// the result names give the gallery its pictures.
    #[arg(required = true, value_name = "RESULT.json")]
    pub results: Vec<PathBuf>,
    /// The HTML file to write (one self-contained page).
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// The page title (default: from the first result).
    #[arg(long)]
    pub title: Option<String>,
}
