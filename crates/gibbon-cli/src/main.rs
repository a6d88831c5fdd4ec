//! The `gibbon` command line: a thin layer over the `gibbon` library.
//!
//! Exit codes: 0 success, 2 a problem with what the user gave (one line naming the file, field
//! or value), 1 an internal failure.
mod args;
mod cmd;
mod resolve;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let filter = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GIBBON_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let user = err.downcast_ref::<gibbon::GibbonError>().is_some_and(|e| e.is_user_error())
                || err.downcast_ref::<resolve::UsageError>().is_some();
            eprintln!("error: {}", one_line(&err));
            if user {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn one_line(err: &anyhow::Error) -> String {
    let mut parts = vec![err.to_string()];
    for cause in err.chain().skip(1) {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
