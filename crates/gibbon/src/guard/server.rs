//! The HTTP routes (axum on tokio): classify, health, metrics, the reviewer API and page.
use super::auth::{RateLimiter, TokenSet};
use super::batcher::{ModelJob, RowAnswer};
use super::decode::{decode_request, encode_png, DecodeError, DecodeLimits};
use super::drift::{DriftMonitor, DriftReport};
use super::metrics::Metrics;
use super::policy::{Decision, Policy};
use super::queue::{QueueError, ReviewItem, ReviewQueue};
use super::screen::Screen;
use super::session::{SessionStore, CSRF_HEADER};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the handlers share.
pub struct AppState {
    pub jobs: SyncSender<ModelJob>,
    pub screens: Vec<Arc<dyn Screen>>,
    pub policy: Policy,
    pub queue: Arc<Mutex<ReviewQueue>>,
    pub metrics: Arc<Metrics>,
    pub drift: Mutex<DriftState>,
    pub reviewers: TokenSet,
    /// Signed-in reviewers of the page.
    pub sessions: SessionStore,
    pub classify_tokens: Option<TokenSet>,
    pub limiter: RateLimiter,
    pub limits: DecodeLimits,
    pub timeout: Duration,
    /// The body cap, for the 413 message.
    pub max_body_bytes: usize,
    pub model_name: String,
    pub num_classes: i64,
    pub id_prefix: String,
    pub id_seq: AtomicU64,
}

/// The drift monitors and whether each is currently alerting (to log crossings once).
pub struct DriftState {
    pub monitors: Vec<DriftMonitor>,
    pub alerting: Vec<bool>,
    pub pushes: u64,
}

impl DriftState {
    fn reports(&self) -> Vec<DriftReport> {
        self.monitors.iter().map(DriftMonitor::report).collect()
    }
}

/// An error answer: status and a JSON `{"error": message}` body.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

/// The router over `state`, with the body cap, the timeout and the request metrics.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/review/items", get(list_items))
        .route("/v1/review/items/{id}", get(get_item))
        .route("/v1/review/items/{id}/image.png", get(get_image))
        .route("/v1/review/items/{id}/decision", post(decide))
        .route("/review", get(super::page::review_page))
        .route("/review/login", post(super::page::login))
        .route("/review/logout", post(super::page::logout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Rate limit, timeout, request metrics and a log line (method, route, status: never headers).
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().clone();
    let limited = route.starts_with("/v1/classify")
        || route.starts_with("/v1/review")
        || route.starts_with("/review");
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let response = if limited && peer.is_some_and(|ip| !st.limiter.allow(ip)) {
        err(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded; slow down").into_response()
    } else {
        match tokio::time::timeout(st.timeout, next.run(req)).await {
            // axum's own 413 is plain text: answer in the API's JSON form.
            Ok(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let msg = format!("request body over the {} byte limit", st.max_body_bytes);
                err(StatusCode::PAYLOAD_TOO_LARGE, msg).into_response()
            }
            Ok(r) => r,
            Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response(),
        }
    };
    let status = response.status().as_u16();
    st.metrics.request(&route, status, start.elapsed().as_secs_f64());
    tracing::debug!(
        "{method} {route} -> {status} in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    response
}

impl AppState {
    /// The reviewer of a request: the holder of its bearer token, else of its session cookie.
    fn reviewer_of(&self, headers: &HeaderMap) -> Option<(String, bool)> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(name) = self.reviewers.authorize(auth) {
            return Some((name.to_string(), false));
        }
        let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        self.sessions.reviewer(cookie).map(|name| (name, true))
    }

    /// The reviewer allowed to see the review page, if any.
    pub fn page_reviewer(&self, headers: &HeaderMap) -> Option<String> {
        self.reviewer_of(headers).map(|(name, _)| name)
    }
}

/// The reviewer of the request (bearer token or session cookie), or 401. A cookie-authenticated
/// request that `changes_state` must carry the CSRF header (403 without it).
fn reviewer(st: &AppState, headers: &HeaderMap, changes_state: bool) -> Result<String, ApiError> {
    let (name, by_cookie) = st.reviewer_of(headers).ok_or_else(|| {
        err(StatusCode::UNAUTHORIZED, "a reviewer bearer token or session is required")
    })?;
    if by_cookie && changes_state && !headers.contains_key(CSRF_HEADER) {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("a session-authenticated decision needs the {CSRF_HEADER} header"),
        ));
    }
    Ok(name)
}

async fn classify(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if let Some(tokens) = &st.classify_tokens {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if tokens.authorize(auth).is_none() {
            return Err(err(StatusCode::UNAUTHORIZED, "a classify bearer token is required"));
        }
    }
    let batch = decode_request(&body, &st.limits).map_err(|e| match e {
        DecodeError::Malformed(_) => err(StatusCode::BAD_REQUEST, e.to_string()),
        DecodeError::Invalid { .. } => err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    })?;
    let pixels = batch.pixels.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.jobs.try_send(ModelJob { batch, reply: tx }).map_err(|e| match e {
        TrySendError::Full(_) => {
            err(StatusCode::SERVICE_UNAVAILABLE, "model queue full; retry later")
        }
        TrySendError::Disconnected(_) => {
            err(StatusCode::SERVICE_UNAVAILABLE, "model worker stopped")
        }
    })?;
    let answers = rx
        .await
        .map_err(|_| err(StatusCode::INTERNAL_SERVER_ERROR, "model worker dropped the request"))?
        .map_err(|m| err(StatusCode::INTERNAL_SERVER_ERROR, format!("model failed: {m}")))?;
    let per_row = st.limits.input_shape.iter().product::<i64>() as usize;
    let mut results = Vec::with_capacity(answers.len());
    for (i, answer) in answers.iter().enumerate() {
        let row = pixels[i * per_row..(i + 1) * per_row].to_vec();
        results.push(decide_row(&st, answer, row).await?);
    }
    Ok(Json(json!({ "results": results })))
}

/// Policy decision for one answer; an escalation is committed to the queue before returning.
async fn decide_row(
    st: &Arc<AppState>,
    answer: &RowAnswer,
    pixels: Vec<f32>,
) -> Result<Value, ApiError> {
    let screens: Vec<&dyn Screen> = st.screens.iter().map(|s| s.as_ref()).collect();
    let verdict = st.policy.decide(answer.confidence, &answer.scores, &screens);
    let id = format!("{}-{:08x}", st.id_prefix, st.id_seq.fetch_add(1, Ordering::Relaxed));
    let scores: serde_json::Map<String, Value> = screens
        .iter()
        .zip(&answer.scores)
        .map(|(s, &v)| {
            let entry =
                json!({ "score": v, "threshold": s.threshold(), "flagged": v > s.threshold() });
            (s.name().to_string(), entry)
        })
        .collect();
    if verdict.decision == Decision::Escalate {
        let item = ReviewItem {
            id: id.clone(),
            created_at: super::utc_now(),
            shape: st.limits.input_shape.clone(),
            pixels,
            label: answer.label,
            confidence: answer.confidence,
            scores: Value::Object(scores.clone()),
            rule: verdict.rule.clone(),
            status: "pending".into(),
            reviewer: None,
            reviewed_label: None,
            note: None,
            decided_at: None,
        };
        let queue = st.queue.clone();
        tokio::task::spawn_blocking(move || lock(&queue).insert(&item))
            .await
            .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    st.metrics.decision(verdict.decision.as_str());
    record_drift(st, answer);
    Ok(json!({
        "request_id": id,
        "label": answer.label,
        "confidence": answer.confidence,
        "scores": scores,
        "decision": verdict.decision.as_str(),
        "rule": verdict.rule,
    }))
}

/// Feeds the drift monitors (screen scores, then confidence) and logs alert crossings.
fn record_drift(st: &AppState, answer: &RowAnswer) {
    let mut d = st.drift.lock().unwrap_or_else(|e| e.into_inner());
    let values: Vec<f64> = answer.scores.iter().copied().chain([answer.confidence]).collect();
    for (m, v) in d.monitors.iter_mut().zip(values) {
        m.push(v);
    }
    d.pushes += 1;
    if !d.pushes.is_multiple_of(25) {
        return;
    }
    let reports = d.reports();
    for (i, r) in reports.iter().enumerate() {
        if r.drifted != d.alerting[i] {
            d.alerting[i] = r.drifted;
            let p = r.p_value.unwrap_or(f64::NAN);
            if r.drifted {
                tracing::warn!(
                    "drift: {} KS D = {:.3}, p = {p:.2e} over the last {} inputs",
                    r.signal,
                    r.ks_statistic,
                    r.window_n
                );
            } else {
                tracing::info!("drift cleared: {} KS p = {p:.3}", r.signal);
            }
        }
    }
}

fn lock(q: &Mutex<ReviewQueue>) -> std::sync::MutexGuard<'_, ReviewQueue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a queue operation off the async threads.
async fn with_queue<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&mut ReviewQueue) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, ApiError> {
    let queue = st.queue.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&queue)))
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| match e {
            QueueError::NotFound(_) => err(StatusCode::NOT_FOUND, e.to_string()),
            QueueError::AlreadyDecided(_) => err(StatusCode::CONFLICT, e.to_string()),
            _ => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })
}

async fn health(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let pending = with_queue(&st, |q| q.pending_count()).await?;
    let drift = st.drift.lock().unwrap_or_else(|e| e.into_inner()).reports();
    let drifted = drift.iter().any(|r| r.drifted);
    Ok(Json(json!({
        "status": if drifted { "drift" } else { "ok" },
        "model": st.model_name,
        "review_pending": pending,
        "drift": drift,
    })))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let pending = with_queue(&st, |q| q.pending_count()).await?;
    let drift = st.drift.lock().unwrap_or_else(|e| e.into_inner()).reports();
    let text = st.metrics.render(pending, &drift);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_items(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    reviewer(&st, &headers, false)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let items = with_queue(&st, move |q| q.pending(limit)).await?;
    Ok(Json(json!({ "items": items, "num_classes": st.num_classes })))
}

async fn get_item(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reviewer(&st, &headers, false)?;
    let item = with_queue(&st, move |q| q.get(&id)).await?;
    let png = encode_png(&item.pixels, &item.shape).unwrap_or_default();
    let mut value = serde_json::to_value(&item).unwrap_or(Value::Null);
    value["image_png"] =
        Value::String(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png));
    Ok(Json(value))
}

async fn get_image(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    reviewer(&st, &headers, false)?;
    let item = with_queue(&st, move |q| q.get(&id)).await?;
    let png = encode_png(&item.pixels, &item.shape).ok_or_else(|| {
        err(StatusCode::INTERNAL_SERVER_ERROR, "the stored input is not an image")
    })?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    label: i64,
    #[serde(default)]
    note: String,
}

async fn decide(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = reviewer(&st, &headers, true)?;
    let d: DecisionBody = serde_json::from_slice(&body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("malformed decision: {e}")))?;
    if !(0..st.num_classes).contains(&d.label) {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("label {} is not a class (0 to {})", d.label, st.num_classes - 1),
        ));
    }
    if d.note.len() > 4096 {
        return Err(err(StatusCode::UNPROCESSABLE_ENTITY, "note is longer than 4096 bytes"));
    }
    let now = super::utc_now();
    let (id2, name2, note, now2) = (id.clone(), name.clone(), d.note.clone(), now.clone());
    with_queue(&st, move |q| q.decide(&id2, &name2, d.label, &note, &now2)).await?;
    tracing::info!("review item {id} decided by {name}: label {}", d.label);
    Ok(Json(
        json!({ "id": id, "status": "decided", "reviewer": name, "label": d.label, "decided_at": now }),
    ))
}
