//! The service's counters and histograms, rendered in the Prometheus text format
//! (`GET /metrics`).
use super::drift::DriftReport;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Upper bounds of the batch-size histogram, in rows.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }
    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

#[derive(Debug)]
struct State {
    requests: BTreeMap<(String, u16), u64>,
    decisions: BTreeMap<String, u64>,
    latency: Histogram,
    batch_rows: Histogram,
    recent_flags: VecDeque<bool>,
}

/// Everything `/metrics` reports, shared by the handlers and the model worker.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
    flag_window: usize,
}

impl Metrics {
    /// Metrics whose flag rate covers the last `flag_window` decisions.
    pub fn new(flag_window: usize) -> Metrics {
        Metrics {
            state: Mutex::new(State {
                requests: BTreeMap::new(),
                decisions: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BUCKETS),
                batch_rows: Histogram::new(BATCH_BUCKETS),
                recent_flags: VecDeque::new(),
            }),
            flag_window: flag_window.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a finished request on `route` with `status`, taking `seconds`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut s = self.state();
        *s.requests.entry((route.to_string(), status)).or_default() += 1;
        s.latency.observe(seconds);
    }

    /// Counts a decision (`accept`, `refuse`, `escalate`).
    pub fn decision(&self, kind: &str) {
        let mut s = self.state();
        *s.decisions.entry(kind.to_string()).or_default() += 1;
        if s.recent_flags.len() == self.flag_window {
            s.recent_flags.pop_front();
        }
        s.recent_flags.push_back(kind != "accept");
    }

    /// Records the rows of one model pass.
    pub fn batch(&self, rows: usize) {
        self.state().batch_rows.observe(rows as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, pending: u64, drift: &[DriftReport]) -> String {
        let s = self.state();
        let mut out = String::new();
        out.push_str("# HELP gibbon_guard_requests_total Requests by route and HTTP status.\n");
        out.push_str("# TYPE gibbon_guard_requests_total counter\n");
        for ((route, status), n) in &s.requests {
            let _ = writeln!(
                out,
                "gibbon_guard_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP gibbon_guard_decisions_total Decisions by kind.\n");
        out.push_str("# TYPE gibbon_guard_decisions_total counter\n");
        for kind in ["accept", "refuse", "escalate"] {
            let n = s.decisions.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "gibbon_guard_decisions_total{{decision=\"{kind}\"}} {n}");
        }
        s.latency.render(&mut out, "gibbon_guard_request_seconds", "Request latency.");
        s.batch_rows.render(&mut out, "gibbon_guard_batch_rows", "Rows per model pass.");
        let _ = writeln!(
            out,
            "# HELP gibbon_guard_review_pending Items waiting for a reviewer.\n# TYPE gibbon_guard_review_pending gauge\ngibbon_guard_review_pending {pending}"
        );
        let flagged = s.recent_flags.iter().filter(|&&f| f).count();
        let rate = if s.recent_flags.is_empty() {
            0.0
        } else {
            flagged as f64 / s.recent_flags.len() as f64
        };
        let _ = writeln!(
            out,
            "# HELP gibbon_guard_flag_rate Fraction of refuse or escalate among the last decisions.\n# TYPE gibbon_guard_flag_rate gauge\ngibbon_guard_flag_rate{{window=\"{}\"}} {rate}",
            self.flag_window
        );
        out.push_str("# HELP gibbon_guard_drift_p_value KS p-value of the recent window against calibration.\n# TYPE gibbon_guard_drift_p_value gauge\n");
        for d in drift {
            let p = d.p_value.map_or("NaN".to_string(), |p| p.to_string());
            let _ = writeln!(out, "gibbon_guard_drift_p_value{{signal=\"{}\"}} {p}", d.signal);
        }
        out.push_str("# HELP gibbon_guard_drift_ks_statistic KS statistic of the recent window.\n# TYPE gibbon_guard_drift_ks_statistic gauge\n");
        for d in drift {
            let _ = writeln!(
                out,
                "gibbon_guard_drift_ks_statistic{{signal=\"{}\"}} {}",
                d.signal, d.ks_statistic
            );
        }
        out.push_str("# HELP gibbon_guard_drift_alert 1 when the p-value is below the configured level.\n# TYPE gibbon_guard_drift_alert gauge\n");
        for d in drift {
            let _ = writeln!(
                out,
                "gibbon_guard_drift_alert{{signal=\"{}\"}} {}",
                d.signal,
                u8::from(d.drifted)
            );
        }
        out
    }
}
