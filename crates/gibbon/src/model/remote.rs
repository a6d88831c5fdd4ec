//! A model behind HTTP: `--model http://HOST:PORT/predict`.
//!
//! The protocol (documented with curl examples in `docs/remote-model.md`):
//! - `GET <base>/info` answers [`RemoteInfo`]:
//!   `{"input_shape":[1,28,28],"num_classes":10,"output":"scores"}` (`output` is `scores` or
//!   `labels`; an optional `model` object names the served model).
//! - `POST <base>/predict` takes `{"inputs":[[row],...]}`, each row one input flattened in
//!   row-major order (`input_shape` values), and answers `{"scores":[[K values],...]}` (one row
//!   of `num_classes` scores per input, in order) or `{"labels":[class,...]}`.
//!
//! The URL the user gives is the predict URL; the info URL is the same URL with its last path
//! segment replaced by `info`. Floats travel as the shortest decimal that reads back as the
//! same `f32`, so a remote model's scores are bit-identical to the served model's own.
//!
//! A [`RemoteModel`] answers queries only: every path that needs gradients fails with
//! [`NO_GRADIENTS`]. Requests are sent in batches of at most
//! [`RemoteOptions::max_rows_per_request`] rows, at most [`RemoteOptions::rate_limit_per_s`]
//! per second; connection failures, timeouts and 5xx answers are retried with exponential
//! backoff, 4xx answers and malformed responses are not. Every response is validated (valid
//! JSON, the right key, one row per input, `num_classes` finite scores per row, labels in range)
//! and any violation is an error naming the URL: a remote model never returns a partial or
//! guessed result.
use super::{Classifier, ModelInfo};
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// The error message of every gradient path of a [`RemoteModel`].
pub const NO_GRADIENTS: &str = "a remote model answers queries only (no gradients): use a score- or decision-based attack such as square";

/// Largest response body a [`RemoteModel`] reads.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Longest wait between two attempts (the backoff doubles up to this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Largest [`RemoteOptions::timeout`].
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Largest number of values in one input.
const MAX_INPUT_VALUES: i64 = 1 << 31;

/// What a model server answers to a batch of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteOutput {
    /// One row of scores (logits) per input: enough for score-based attacks.
    Scores,
    /// One predicted class per input: decision-based attacks only.
    Labels,
}

impl RemoteOutput {
    /// The JSON key of the predict response.
    pub fn key(self) -> &'static str {
        match self {
            RemoteOutput::Scores => "scores",
            RemoteOutput::Labels => "labels",
        }
    }
}

impl std::fmt::Display for RemoteOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl std::str::FromStr for RemoteOutput {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "scores" => Ok(RemoteOutput::Scores),
            "labels" => Ok(RemoteOutput::Labels),
            other => Err(GibbonError::invalid(
                "output",
                format!("'{other}' is not one of scores, labels"),
            )),
        }
    }
}

/// The served model's provenance, optional in [`RemoteInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    /// The model spec on the server.
    pub path: String,
    /// sha256 of the served model file.
    pub sha256: String,
    /// Model kind on the server (`torchscript`, `onnx`, ...).
    pub kind: String,
    /// Architecture where known.
    #[serde(default)]
    pub arch: Option<String>,
}

/// The answer of `GET <base>/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteInfo {
    /// Shape of one input, e.g. `[1, 28, 28]`.
    pub input_shape: Vec<i64>,
    /// Number of classes.
    pub num_classes: i64,
    /// Whether `/predict` answers scores or labels.
    pub output: RemoteOutput,
    /// Which model is served (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ServedModel>,
}

/// How a [`RemoteModel`] talks to its server.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// Limit for one whole request (connect, send, answer): 30 s.
    pub timeout: Duration,
    /// Retries after a connection failure, a timeout or a 5xx answer: 3.
    pub retries: u32,
    /// Wait before the first retry, doubled for each further one (at most [`MAX_BACKOFF`]):
    /// 100 ms.
    pub backoff_initial: Duration,
    /// Rows per predict request; larger batches are split: 256.
    pub max_rows_per_request: usize,
    /// Requests per second at most (retries included); unlimited when `None`.
    pub rate_limit_per_s: Option<f64>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff_initial: Duration::from_millis(100),
            max_rows_per_request: 256,
            rate_limit_per_s: None,
        }
    }
}

impl RemoteOptions {
    /// Checks that the options can be used.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(GibbonError::invalid(
                "remote-timeout",
                format!("{:?}: must be more than 0 ms and at most a day", self.timeout),
            ));
        }
        if self.max_rows_per_request == 0 {
            return Err(GibbonError::invalid("remote-max-rows", "must be at least 1"));
        }
        if let Some(r) = self.rate_limit_per_s {
            if !(r.is_finite() && r >= 1e-3) {
                return Err(GibbonError::invalid(
                    "remote-rate-limit",
                    format!("{r} requests per second: must be finite and at least 0.001"),
                ));
            }
        }
        Ok(())
    }
}

/// Why one HTTP attempt failed: worth another try, or not.
enum Failure {
    Retry(String),
    Fatal(String),
}

/// A classifier served over HTTP (see the module docs for the protocol).
pub struct RemoteModel {
    predict_url: String,
    info_url: String,
    remote: RemoteInfo,
    options: RemoteOptions,
    agent: ureq::Agent,
    info: ModelInfo,
    /// Earliest start of the next request under the rate limit.
    next_request: Mutex<Option<Instant>>,
    requests: AtomicU64,
}

impl RemoteModel {
    /// Connects to the model whose predict endpoint is `predict_url` and reads its `/info`.
    pub fn connect(predict_url: &str, options: RemoteOptions) -> Result<Self> {
        options.validate()?;
        let info_url = info_url_for(predict_url)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(options.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut model = RemoteModel {
            predict_url: predict_url.to_string(),
            info_url: info_url.clone(),
            remote: RemoteInfo {
                input_shape: Vec::new(),
                num_classes: 0,
                output: RemoteOutput::Scores,
                model: None,
            },
            options,
            agent,
            info: ModelInfo {
                path: predict_url.to_string(),
                sha256: String::new(),
                kind: "remote".into(),
                arch: None,
            },
            next_request: Mutex::new(None),
            requests: AtomicU64::new(0),
        };
        let text = model.call(&info_url, None)?;
        let remote: RemoteInfo = serde_json::from_str(&text).map_err(|e| {
            GibbonError::model(
                &info_url,
                format!(
                    "expected {{\"input_shape\":[...],\"num_classes\":K,\"output\":\"scores\"|\"labels\"}}, got {} ({e})",
                    excerpt(&text)
                ),
            )
        })?;
        let values = remote.input_shape.iter().try_fold(1i64, |p, &d| p.checked_mul(d));
        if remote.input_shape.is_empty()
            || remote.input_shape.iter().any(|&d| d < 1)
            || values.is_none_or(|v| v > MAX_INPUT_VALUES)
        {
            return Err(GibbonError::model(
                &info_url,
                format!(
                    "input_shape {:?} must be a non-empty list of sizes >= 1 (at most 2^31 values)",
                    remote.input_shape
                ),
            ));
        }
        if remote.num_classes < 2 {
            return Err(GibbonError::model(
                &info_url,
                format!("num_classes {} must be at least 2", remote.num_classes),
            ));
        }
        model.info.sha256 = match &remote.model {
            Some(served) => served.sha256.clone(),
            None => super::sha256_hex(text.as_bytes()),
        };
        model.info.arch = remote.model.as_ref().and_then(|m| m.arch.clone());
        model.remote = remote;
        tracing::debug!(
            "remote model {predict_url}: inputs {:?}, {} classes, answers {}",
            model.remote.input_shape,
            model.remote.num_classes,
            model.remote.output
        );
        Ok(model)
    }

    /// Connects and checks that the model takes inputs of `input_shape` (one sample).
    pub fn load(predict_url: &str, options: RemoteOptions, input_shape: &[i64]) -> Result<Self> {
        let model = Self::connect(predict_url, options)?;
        if model.remote.input_shape != input_shape {
            return Err(GibbonError::Mismatch(format!(
                "input shape {input_shape:?} does not fit the remote model {predict_url}, which takes {:?}",
                model.remote.input_shape
            )));
        }
        Ok(model)
    }

    /// The predict URL.
    pub fn predict_url(&self) -> &str {
        &self.predict_url
    }

    /// The info URL.
    pub fn info_url(&self) -> &str {
        &self.info_url
    }

    /// What the server said about itself.
    pub fn remote_info(&self) -> &RemoteInfo {
        &self.remote
    }

    /// Whether the server answers scores or labels.
    pub fn output(&self) -> RemoteOutput {
        self.remote.output
    }

    /// The options in use.
    pub fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// HTTP requests sent so far (info and predict, retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Scores `[B, classes]` (float32, CPU) for inputs `[B, ...input_shape]`; an error on a
    /// server that answers labels only.
    pub fn query_scores(&self, x: &Tensor) -> Result<Tensor> {
        if self.remote.output == RemoteOutput::Labels {
            return Err(GibbonError::model(
                &self.predict_url,
                "the server answers labels only (its /info says output \"labels\"): use a decision-based attack",
            ));
        }
        let Answer::Scores(values) = self.query(x, RemoteOutput::Scores)? else {
            return Err(GibbonError::Internal("scores query answered labels".into()));
        };
        let rows = (values.len() / self.remote.num_classes as usize) as i64;
        Ok(Tensor::from_slice(&values).view([rows, self.remote.num_classes]))
    }

    /// Predicted classes `[B]` (int64, CPU): the server's labels, or the arg-max of its scores.
    pub fn query_labels(&self, x: &Tensor) -> Result<Tensor> {
        match self.remote.output {
            RemoteOutput::Scores => Ok(self.query_scores(x)?.argmax(-1, false)),
            RemoteOutput::Labels => {
                let Answer::Labels(labels) = self.query(x, RemoteOutput::Labels)? else {
                    return Err(GibbonError::Internal("labels query answered scores".into()));
                };
                Ok(Tensor::from_slice(&labels))
            }
        }
    }

    /// Sends `x` in batches; answers the scores (`num_classes` per row) or labels, in order,
    /// validated.
    fn query(&self, x: &Tensor, output: RemoteOutput) -> Result<Answer> {
        let size = x.size();
        if size.len() != self.remote.input_shape.len() + 1 || size[1..] != self.remote.input_shape {
            return Err(GibbonError::Mismatch(format!(
                "the remote model {} takes inputs of shape [B, {}], got {size:?}",
                self.predict_url,
                self.remote
                    .input_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let row_len: usize = self.remote.input_shape.iter().product::<i64>() as usize;
        let flat: Vec<f32> =
            Vec::try_from(x.detach().to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]))?;
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(GibbonError::model(
                &self.predict_url,
                format!(
                    "input row {} holds a non-finite value, which JSON cannot carry",
                    i / row_len
                ),
            ));
        }
        let mut answer = match output {
            RemoteOutput::Scores => Answer::Scores(Vec::new()),
            RemoteOutput::Labels => Answer::Labels(Vec::new()),
        };
        for chunk in flat.chunks(row_len.saturating_mul(self.options.max_rows_per_request)) {
            let rows: Vec<&[f32]> = chunk.chunks(row_len).collect();
            let body = serde_json::to_string(&PredictRequest { inputs: rows })
                .map_err(|e| GibbonError::Internal(format!("encoding a predict request: {e}")))?;
            let text = self.call(&self.predict_url, Some(&body))?;
            let parsed = parse_predict_response(
                &text,
                output,
                chunk.len() / row_len,
                self.remote.num_classes,
            )
            .map_err(|m| GibbonError::model(&self.predict_url, m))?;
            match (&mut answer, parsed) {
                (Answer::Scores(all), Answer::Scores(part)) => all.extend(part),
                (Answer::Labels(all), Answer::Labels(part)) => all.extend(part),
                _ => return Err(GibbonError::Internal("mixed remote answers".into())),
            }
        }
        Ok(answer)
    }

    /// One request with retries: the response body of a 200 answer.
    fn call(&self, url: &str, body: Option<&str>) -> Result<String> {
        let attempts = self.options.retries.saturating_add(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = self
                    .options
                    .backoff_initial
                    .saturating_mul(1 << (attempt - 1).min(20))
                    .min(MAX_BACKOFF);
                tracing::warn!(
                    "{url}: {last}; retry {attempt} of {} in {} ms",
                    self.options.retries,
                    wait.as_millis()
                );
                std::thread::sleep(wait);
            }
            self.wait_for_rate_limit();
            self.requests.fetch_add(1, Ordering::Relaxed);
            match self.attempt(url, body) {
                Ok(text) => return Ok(text),
                Err(Failure::Retry(message)) => last = message,
                Err(Failure::Fatal(message)) => return Err(GibbonError::model(url, message)),
            }
        }
        Err(GibbonError::model(
            url,
            format!(
                "{last} (gave up after {attempts} attempts, {} retries with backoff)",
                self.options.retries
            ),
        ))
    }

    fn attempt(&self, url: &str, body: Option<&str>) -> std::result::Result<String, Failure> {
        let timeout = self.options.timeout;
        let sent = match body {
            Some(b) => self.agent.post(url).header("Content-Type", "application/json").send(b),
            None => self.agent.get(url).call(),
        };
        let mut response = sent.map_err(|e| classify(e, timeout))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| classify(e, timeout))?;
        match status {
            200 => Ok(text),
            500..=599 => Err(Failure::Retry(format!("server error {status}: {}", excerpt(&text)))),
            _ => Err(Failure::Fatal(format!("server answered {status}: {}", excerpt(&text)))),
        }
    }

    fn wait_for_rate_limit(&self) {
        let Some(rate) = self.options.rate_limit_per_s else { return };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut next = self.next_request.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let start = match *next {
            Some(t) if t > now => {
                std::thread::sleep(t - now);
                t
            }
            _ => now,
        };
        *next = Some(start + interval);
    }

    fn no_gradients(&self) -> GibbonError {
        GibbonError::model(&self.predict_url, NO_GRADIENTS)
    }
}

#[derive(Serialize)]
struct PredictRequest<'a> {
    inputs: Vec<&'a [f32]>,
}

/// A validated predict response.
enum Answer {
    /// `num_classes` scores per row, row after row.
    Scores(Vec<f32>),
    /// One class per row.
    Labels(Vec<i64>),
}

/// The scores of a predict response, read as float32 directly (exact for the shortest decimal
/// of a float32, where a detour through f64 could round twice).
#[derive(Deserialize)]
struct ScoresResponse {
    scores: Vec<Vec<f32>>,
}

/// Validates a predict response: `rows` rows of `classes` finite scores, or `rows` labels in
/// `[0, classes)`.
fn parse_predict_response(
    text: &str,
    output: RemoteOutput,
    rows: usize,
    classes: i64,
) -> std::result::Result<Answer, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("response is not valid JSON ({e}): {}", excerpt(text)))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("response is not a JSON object: {}", excerpt(text)))?;
    let key = output.key();
    let list = match object.get(key) {
        Some(v) => v.as_array().ok_or_else(|| format!("\"{key}\" is not a list"))?,
        None => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(format!("response has no \"{key}\" key (keys: {keys:?})"));
        }
    };
    if list.len() != rows {
        return Err(format!("server returned {} rows for {rows} inputs", list.len()));
    }
    match output {
        RemoteOutput::Scores => {
            for (r, row) in list.iter().enumerate() {
                let row = row.as_array().ok_or_else(|| format!("scores row {r} is not a list"))?;
                if row.len() != classes as usize {
                    return Err(format!(
                        "scores row {r} has {} values, expected {classes} (one per class)",
                        row.len()
                    ));
                }
                for (j, v) in row.iter().enumerate() {
                    if !v.as_f64().is_some_and(|f| (f as f32).is_finite()) {
                        return Err(format!(
                            "scores row {r}, class {j}: {v} is not a finite float32"
                        ));
                    }
                }
            }
            let exact: ScoresResponse = serde_json::from_str(text)
                .map_err(|e| format!("reading the scores as float32 failed: {e}"))?;
            let values: Vec<f32> = exact.scores.into_iter().flatten().collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("score {i} is not a finite float32"));
            }
            Ok(Answer::Scores(values))
        }
        RemoteOutput::Labels => {
            let mut out = Vec::with_capacity(rows);
            for (r, v) in list.iter().enumerate() {
                match v.as_i64() {
                    Some(l) if (0..classes).contains(&l) => out.push(l),
                    Some(l) => {
                        return Err(format!(
                            "label {l} of row {r} is out of range for {classes} classes"
                        ))
                    }
                    None => return Err(format!("label of row {r} is not an integer: {v}")),
                }
            }
            Ok(Answer::Labels(out))
        }
    }
}

/// The info URL for a predict URL: its last path segment replaced by `info`.
pub fn info_url_for(predict_url: &str) -> Result<String> {
    let bad = |why: &str| {
        GibbonError::invalid(
            "model",
            format!("'{predict_url}': {why} (expected e.g. http://127.0.0.1:8000/predict)"),
        )
    };
    let lower = predict_url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &predict_url["http://".len()..]
    } else if lower.starts_with("https://") {
        return Err(bad(
            "https is not supported (gibbon carries no TLS stack): serve the model over plain http \
             on this machine, or put a local TLS-terminating proxy in front of the remote server",
        ));
    } else {
        return Err(bad("a remote model URL starts with http://"));
    };
    if predict_url.contains(['?', '#']) {
        return Err(bad("query strings and fragments are not supported"));
    }
    let Some((host, path)) = rest.split_once('/') else {
        return Err(bad("the URL must name the predict endpoint"));
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    match path.rsplit_once('/') {
        _ if path.is_empty() || path.ends_with('/') => {
            Err(bad("the URL must end with the predict endpoint's name"))
        }
        Some((dir, _)) => {
            Ok(format!("{}{host}/{dir}/info", &predict_url[..predict_url.len() - rest.len()]))
        }
        None => Ok(format!("{}{host}/info", &predict_url[..predict_url.len() - rest.len()])),
    }
}

fn classify(error: ureq::Error, timeout: Duration) -> Failure {
    use std::io::ErrorKind;
    let timed_out = || format!("no answer within the timeout of {} ms", timeout.as_millis());
    match error {
        ureq::Error::Timeout(_) => Failure::Retry(timed_out()),
        ureq::Error::Io(e) => match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Retry(timed_out()),
            ErrorKind::ConnectionRefused => {
                Failure::Retry("connection refused (is the server running?)".into())
            }
            _ => Failure::Retry(format!("connection failed: {e}")),
        },
        ureq::Error::ConnectionFailed => Failure::Retry("connection failed".into()),
        ureq::Error::HostNotFound => Failure::Fatal("host not found".into()),
        ureq::Error::Protocol(e) => Failure::Fatal(format!("malformed HTTP response: {e}")),
        ureq::Error::BodyExceedsLimit(n) => {
            Failure::Fatal(format!("response is larger than {n} bytes"))
        }
        other => Failure::Fatal(other.to_string()),
    }
}

/// A response body for an error message: the `error` field of a JSON body, or its start.
fn excerpt(text: &str) -> String {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(text) {
        if let Some(serde_json::Value::String(e)) = o.get("error") {
            return e.clone();
        }
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = trimmed.chars().take(200).collect();
    if s.len() < trimmed.len() {
        s.push_str("...");
    }
    format!("{s:?}")
}

impl Classifier for RemoteModel {
    fn labels_only(&self) -> bool {
        self.remote.output == RemoteOutput::Labels
    }

    /// Scores over HTTP for inputs that need no gradient; an error when `x` requires one.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.requires_grad() {
            return Err(self.no_gradients());
        }
        self.query_scores(x)
    }
    fn input_shape(&self) -> &[i64] {
        &self.remote.input_shape
    }
    fn num_classes(&self) -> i64 {
        self.remote.num_classes
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// No padding: the server computes batch-size-invariant scores itself.
    fn logits_padded(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)
    }
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.query_scores(x)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        self.query_labels(x)
    }
    fn loss_and_input_grad(
        &self,
        _x: &Tensor,
        _loss: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Err(self.no_gradients())
    }
}
