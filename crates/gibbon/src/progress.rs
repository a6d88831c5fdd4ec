//! Progress of a long loop over samples: an indicatif bar with the expected remaining time on a
//! terminal, and plain lines through `tracing` (at info) when stderr is not a terminal (CI
//! logs, `| tee`), one every [`LINE_EVERY_PERCENT`] percent but at most one per
//! [`MIN_LINE_SECONDS`], at least one per [`MAX_QUIET_SECONDS`], and one when the loop ends.
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A plain line each time this many more percent are done ...
pub const LINE_EVERY_PERCENT: u64 = 10;
/// ... but not sooner than this after the last line ...
pub const MIN_LINE_SECONDS: u64 = 5;
/// ... and at least this often while items complete.
pub const MAX_QUIET_SECONDS: u64 = 60;

/// A progress display over `len` items (see the module docs).
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: Option<Mutex<Lines>>,
}

/// The plain-line state.
struct Lines {
    name: String,
    unit: String,
    len: u64,
    pos: u64,
    started: Instant,
    last_line: Instant,
    last_percent: u64,
}

impl Progress {
    /// Nothing shown.
    pub fn hidden() -> Self {
        Progress { bar: None, lines: None }
    }

    /// A display named `name` over `len` items called `unit` (e.g. "samples"), shown when
    /// `show`: a bar on a terminal, plain lines elsewhere.
    pub fn new(show: bool, len: u64, name: &str, unit: &str) -> Self {
        if !show {
            return Self::hidden();
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len);
            let template = format!(
                "{{prefix:>10}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{eta}} left)"
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.set_prefix(name.to_string());
            return Progress { bar: Some(bar), lines: None };
        }
        let now = Instant::now();
        let lines = Lines {
            name: name.to_string(),
            unit: unit.to_string(),
            len,
            pos: 0,
            started: now,
            last_line: now,
            last_percent: 0,
        };
        Progress { bar: None, lines: Some(Mutex::new(lines)) }
    }

    /// `k` more items done.
    pub fn inc(&self, k: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(k);
        }
        if let Some(lines) = &self.lines {
            let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
            l.pos = (l.pos + k).min(l.len);
            let percent = l.pos * 100 / l.len.max(1);
            let now = Instant::now();
            if line_due(percent, l.last_percent, now - l.last_line) && l.pos < l.len {
                l.last_line = now;
                l.last_percent = percent;
                l.emit(now);
            }
        }
    }

    /// The loop ended: the bar is cleared; off a terminal, a last line says how far it got.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(lines) = &self.lines {
            let l = lines.lock().unwrap_or_else(|e| e.into_inner());
            l.emit(Instant::now());
        }
    }
}

impl Lines {
    fn emit(&self, now: Instant) {
        let elapsed = (now - self.started).as_secs_f64();
        let left = if self.pos == 0 || self.pos >= self.len {
            String::new()
        } else {
            let rest = elapsed * (self.len - self.pos) as f64 / self.pos as f64;
            format!(", about {rest:.0} s left")
        };
        tracing::info!(
            "progress {}: {}/{} {} ({}%) in {elapsed:.0} s{left}",
            self.name,
            self.pos,
            self.len,
            self.unit,
            self.pos * 100 / self.len.max(1)
        );
    }
}

/// Whether a plain line is due at `percent` done, the last at `last_percent`, `since` ago.
fn line_due(percent: u64, last_percent: u64, since: Duration) -> bool {
    let step = percent / LINE_EVERY_PERCENT > last_percent / LINE_EVERY_PERCENT;
    (step && since >= Duration::from_secs(MIN_LINE_SECONDS))
        || since >= Duration::from_secs(MAX_QUIET_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_every_ten_percent_but_not_too_often_and_not_too_rarely() {
        let s = Duration::from_secs;
        assert!(line_due(10, 0, s(MIN_LINE_SECONDS)));
        assert!(line_due(35, 20, s(6)));
        assert!(!line_due(10, 0, s(1)), "too soon after the last line");
        assert!(!line_due(19, 10, s(30)), "same ten percent, not quiet long enough");
        assert!(line_due(11, 10, s(MAX_QUIET_SECONDS)), "quiet too long");
    }

    #[test]
    fn hidden_and_plain_progress_count_without_panicking() {
        let p = Progress::new(true, 3, "test", "samples");
        p.inc(2);
        p.inc(5);
        p.finish();
        let lines = p.lines.as_ref().map(|l| l.lock().unwrap().pos);
        // Tests run with stderr captured (not a terminal): plain lines, capped at len.
        assert!(lines.is_none_or(|pos| pos == 3));
        Progress::hidden().inc(1);
    }
}
