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
#[derive(Args, Debug)]
pub struct RedteamArgs {
    /// The threat-model file (TOML; see examples/mnist-adv.toml).
    #[arg(value_name = "THREAT.toml")]
    pub threat_file: PathBuf,
    /// Folder for redteam.json, redteam.html, the finished stages and the resumable streams (default: out/redteam-NAME
    /// beside the working directory, NAME the threat file's stem).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Evaluate this many samples instead of the file's `data.n`.
    #[arg(long)]
    pub n: Option<usize>,
    /// Replace the plan by these attacks (a comma list; checked against the file's knowledge),
    /// e.g. a quick check before the full run.
    #[arg(long, value_delimiter = ',')]
    pub attacks: Option<Vec<String>>,
    /// libtorch threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Recompute every stage: forget what earlier runs saved in OUT_DIR/stages (by default a
    /// rerun with the same output folder and an unchanged threat file, --n and --attacks takes
    /// every stage an earlier run finished, and resumes the one it was killed in).
    #[arg(long)]
    pub fresh: bool,
}
