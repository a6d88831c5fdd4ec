//! The `gibbon` command line: a thin layer over the `gibbon` library.
//!
//! Exit codes: 0 success, 2 a problem with what the user gave (one line naming the file, field
//! or value), 1 an internal failure.
mod args;
mod cmd;
mod resolve;

use clap::Parser;
use std::process::ExitCode;

/// `gibbon train --task text ...` is `gibbon text train ...` (the same flags): the image and
/// text trainers take different flags, so the alias is resolved before parsing.
fn text_train_alias(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(pos) = argv.iter().position(|a| a == "train") else { return argv };
    if argv[1..pos].iter().any(|a| !a.to_string_lossy().starts_with('-')) {
        return argv;
    }
    let rest = &argv[pos + 1..];
    let task = rest.iter().position(|a| a == "--task=text").map(|i| (i, 1)).or_else(|| {
        rest.windows(2).position(|w| w[0] == "--task" && w[1] == "text").map(|i| (i, 2))
    });
    let Some((i, len)) = task else { return argv };
    let mut out: Vec<std::ffi::OsString> = argv[..pos].to_vec();
    out.extend(["text".into(), "train".into()]);
    out.extend(rest[..i].iter().cloned());
    out.extend(rest[i + len..].iter().cloned());
    out
}

fn main() -> ExitCode {
    let cli = args::Cli::parse_from(text_train_alias(std::env::args_os().collect()));
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
