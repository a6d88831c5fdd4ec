//! `gibbon guard` flags.
use super::{parse_flag, ModelArgs};
use clap::{Args, Subcommand};
use gibbon::data::{DataSpec, Split};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub command: GuardCommand,
}

#[derive(Subcommand, Debug)]
pub enum GuardCommand {
    /// Serve a classifier behind calibrated screens and a decision policy (accept, refuse,
    /// escalate to a human review queue), with metrics and drift monitoring (README, "Guard").
    Serve(GuardServeArgs),
}

#[derive(Args, Debug)]
pub struct GuardServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A detector file from `gibbon detect fit` for this model (repeatable); its threshold and
    /// target FPR decide flags, and its scores on --calib are the drift baseline. Without one,
    /// the guard calibrates detect's MSP detector on --calib (detect's split-conformal rule).
    #[arg(long)]
    pub detector: Vec<PathBuf>,
    /// Clean calibration data for the maximum-softmax-probability screen (idx:DIR, ...).
    #[arg(long, value_parser = parse_flag::<DataSpec>)]
    pub calib: Option<DataSpec>,
    /// Split of the calibration data.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "test")]
    pub calib_split: Split,
    /// Calibration inputs (the first N of the split).
    #[arg(long, default_value_t = 1000)]
    pub calib_n: usize,
    /// Target false-positive rate of the screen's threshold on clean data.
    #[arg(long, default_value_t = 0.05)]
    pub fpr: f64,
    /// Policy file (TOML; defaults in the README). Without it, the default policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The review queue's SQLite database (created if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// Address to listen on; port 0 picks a free one. The first line on stdout names the URL.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Most rows in one model pass.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// How long the model worker waits for more inputs after the first of a pass.
    #[arg(long, default_value_t = 2)]
    pub batch_window_ms: u64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most inputs in one classify request.
    #[arg(long, default_value_t = 64)]
    pub max_inputs: usize,
    /// Requests per second per client address on /v1/classify and /v1/review (0: no limit).
    #[arg(long, default_value_t = 100.0)]
    pub rate_limit: f64,
    /// Burst allowed by the rate limit.
    #[arg(long, default_value_t = 200.0)]
    pub rate_burst: f64,
    /// Limit for one request, waiting for the model included (503 beyond).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Requests waiting for the model before new ones get 503.
    #[arg(long, default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Reviewer tokens, `name:token` lines (else the GIBBON_GUARD_REVIEWER_TOKENS variable).
    #[arg(long)]
    pub reviewer_tokens: Option<PathBuf>,
    /// Tokens /v1/classify requires, `name:token` lines (else GIBBON_GUARD_CLASSIFY_TOKENS;
    /// with neither, classify is open).
    #[arg(long)]
    pub classify_tokens: Option<PathBuf>,
}
