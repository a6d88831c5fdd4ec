//! `gibbon text score`: a line protocol so another tool (e.g. a TextAttack model wrapper) can
//! query a gibbon text model: one JSON array of texts per
//! stdin line, one JSON array of probability rows per stdout line.
use super::source::TextSource;
use crate::args::text::TextScoreArgs;
use crate::resolve::{set_threads, usage};
use anyhow::Result;
use std::io::{BufRead, Write};

/// Answers until stdin closes.
pub fn run(args: TextScoreArgs) -> Result<()> {
    set_threads(args.threads)?;
    let source = TextSource::load(&args.model, args.tokenizer.as_deref())?;
    let model = source.classifier();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| usage(format!("stdin line {}: {e}", i + 1)))?;
        let texts: Vec<String> = serde_json::from_str(&line).map_err(|e| {
            usage(format!("stdin line {}: not a JSON array of strings: {e}", i + 1))
        })?;
        let refs: Vec<&String> = texts.iter().collect();
        let indices: Vec<usize> = (0..texts.len()).collect();
        source.check_lengths(&refs, &indices)?;
        let probs = model.probabilities(&texts)?;
        writeln!(out, "{}", serde_json::to_string(&probs)?)?;
        out.flush()?;
    }
    Ok(())
}
