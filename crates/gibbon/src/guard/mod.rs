//! The guard: a classifier served behind calibrated screens and a decision policy, with a
//! durable human review queue and production monitoring (`gibbon guard serve`).
//!
//! One concept per module: [`screen`] (detectors and their calibration), [`policy`] (scores to
//! decisions), [`decode`] (request validation), [`batcher`] (the model worker), [`queue`]
//! (SQLite review queue), [`auth`] (tokens, rate limit), [`metrics`] (Prometheus), [`drift`]
//! (KS test), [`server`] (routes), [`page`] (the reviewer page) and [`session`] (its sign-in
//! sessions).
pub mod auth;
pub mod batcher;
pub mod decode;
pub mod drift;
pub mod metrics;
pub mod page;
pub mod policy;
pub mod queue;
pub mod screen;
pub mod server;
pub mod session;

use crate::model::Classifier;
use crate::{GibbonError, Result};
use batcher::BatchSettings;
use drift::DriftMonitor;
use policy::Policy;
use screen::{Screen, ScreenScorer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use auth::TokenSet;
pub use policy::Decision;
pub use screen::{DetectorScreen, ServedScreen};

/// Everything `gibbon guard serve` is configured with, besides the model and its screens.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub policy: Policy,
    pub batch: BatchSettings,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most inputs in one classify request.
    pub max_inputs: usize,
    /// Per-client requests per second (0: no limit) and burst.
    pub rate_per_s: f64,
    pub rate_burst: f64,
    /// Limit for one request, queueing for the model included (503 beyond).
    pub timeout: Duration,
    /// Requests waiting for the model before new ones get 503.
    pub queue_capacity: usize,
    pub reviewers: TokenSet,
    pub classify_tokens: Option<TokenSet>,
}

/// Confidence (top softmax probability) of every calibration row, for the drift monitor.
pub fn confidences(probs: &[f32], classes: usize) -> Vec<f64> {
    probs
        .chunks(classes.max(1))
        .map(|r| r.iter().copied().fold(f32::MIN, f32::max) as f64)
        .collect()
}

/// Serves until SIGINT or SIGTERM: the HTTP server on a tokio runtime, the model on the calling
/// thread (it owns `model`). `calibration_confidences` feed the confidence drift monitor;
/// `on_listen` gets the bound address before the first request is accepted.
pub fn serve(
    model: &dyn Classifier,
    served: Vec<ServedScreen>,
    calibration_confidences: Vec<f64>,
    config: GuardConfig,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    let mut screens: Vec<Arc<dyn Screen>> = Vec::with_capacity(served.len());
    let mut scorers: Vec<Box<dyn ScreenScorer>> = Vec::with_capacity(served.len());
    for s in served {
        screens.push(s.screen);
        scorers.push(s.scorer);
    }
    let queue = queue::ReviewQueue::open(&config.db)
        .map_err(|e| GibbonError::invalid("db", format!("{}: {e}", config.db.display())))?;
    let d = &config.policy.drift;
    let mut monitors: Vec<DriftMonitor> = screens
        .iter()
        .map(|s| {
            DriftMonitor::new(
                s.name(),
                s.calibration().to_vec(),
                d.window,
                d.min_samples,
                d.p_alert,
            )
        })
        .collect();
    monitors.push(DriftMonitor::new(
        "confidence",
        calibration_confidences,
        d.window,
        d.min_samples,
        d.p_alert,
    ));
    let metrics = Arc::new(metrics::Metrics::new(d.window));
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
    let state = Arc::new(server::AppState {
        jobs: jobs_tx,
        screens: screens.clone(),
        policy: config.policy.clone(),
        queue: Arc::new(Mutex::new(queue)),
        metrics: metrics.clone(),
        drift: Mutex::new(server::DriftState {
            alerting: vec![false; monitors.len()],
            monitors,
            pushes: 0,
        }),
        reviewers: config.reviewers.clone(),
        sessions: Default::default(),
        classify_tokens: config.classify_tokens.clone(),
        limiter: auth::RateLimiter::new(config.rate_per_s, config.rate_burst),
        limits: decode::DecodeLimits {
            input_shape: model.input_shape().to_vec(),
            max_inputs: config.max_inputs,
        },
        timeout: config.timeout,
        max_body_bytes: config.max_body_bytes,
        model_name: model.info().path.clone(),
        num_classes: model.num_classes(),
        id_prefix: id_prefix(),
        id_seq: Default::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| GibbonError::Internal(format!("tokio runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .map_err(|e| GibbonError::invalid("listen", format!("{}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| GibbonError::Internal(e.to_string()))?;
    let app = server::router(state, config.max_body_bytes)
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = runtime.spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
    });
    on_listen(addr);
    let screen_refs: Vec<&dyn ScreenScorer> = scorers.iter().map(|s| s.as_ref()).collect();
    // Returns once the server has stopped and dropped every sender (its state).
    batcher::run_worker(model, &screen_refs, jobs_rx, config.batch, &metrics);
    let result = runtime.block_on(server);
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(GibbonError::Internal(format!("server: {e}"))),
        Err(e) => Err(GibbonError::Internal(format!("server task: {e}"))),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ctrl_c.await.unwrap_or(()),
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// A request-id prefix unique to this process start (microseconds since the epoch, hex).
fn id_prefix() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:x}", now.as_micros())
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-12-06T18:30:00.123Z`.
pub fn utc_now() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// The confidence (top softmax probability, as the service computes it) of every row of a
/// clean slice: the confidence drift monitor's baseline.
pub fn calibration_confidences(
    model: &dyn Classifier,
    data: &crate::data::Dataset,
) -> Result<Vec<f64>> {
    let classes = model.num_classes() as usize;
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(256) {
        let x = data.try_batch(chunk, model.device())?;
        out.extend(confidences(&batcher::softmax_rows(model, &x)?, classes));
    }
    Ok(out)
}
