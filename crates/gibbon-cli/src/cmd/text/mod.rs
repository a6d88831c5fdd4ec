//! `gibbon text train | attack | guard`: the text modality (README, "Text").
mod attack;
mod guard;
mod score;
mod serve;
pub mod source;
mod train;

use crate::args::text::{FormatArg, TextArgs, TextCommand, TextDataArgs};
use anyhow::Result;
use gibbon::text::{load_text_dataset, TextDataset, TextFormat};
use std::path::Path;

/// Runs the text subcommand of `args`.
pub fn run(args: TextArgs) -> Result<()> {
    match args.command {
        TextCommand::Train(a) => train::run(a),
        TextCommand::Attack(a) => attack::run(a),
        TextCommand::Guard(a) => guard::run(a),
        TextCommand::Score(a) => score::run(a),
        TextCommand::Serve(a) => serve::run(a),
    }
}

/// The format flag, or the one the file name implies.
fn format_of(path: &Path, flag: Option<FormatArg>) -> TextFormat {
    match flag {
        Some(FormatArg::Sms) => TextFormat::Sms,
        Some(FormatArg::Tsv) => TextFormat::Tsv,
        Some(FormatArg::Jsonl) => TextFormat::Jsonl,
        None => TextFormat::from_path(path),
    }
}

/// Loads `--data` in its format.
fn load(data: &TextDataArgs) -> Result<(TextDataset, TextFormat)> {
    let format = format_of(&data.data, data.format);
    Ok((load_text_dataset(&data.data, format)?, format))
}

/// The threshold on class 1's probability flagging at most `fpr` of the class-0 `scores`: the
/// smallest value above the k-th largest benign score, k = floor(fpr · n).
fn threshold_at_fpr(benign_scores: &[f32], fpr: f64) -> Result<f32> {
    if !(0.0..1.0).contains(&fpr) {
        return Err(crate::resolve::usage(format!("--fpr {fpr} must be in [0, 1)")));
    }
    if benign_scores.is_empty() {
        return Err(crate::resolve::usage("no class-0 texts to set the threshold on"));
    }
    let mut s = benign_scores.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let k = (fpr * s.len() as f64).floor() as usize;
    Ok(next_up(s[k.min(s.len() - 1)]))
}

/// The next float above `x` (f32::next_up is recent; this is the same for finite positive x).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}
