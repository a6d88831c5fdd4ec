//! Serving any [`Classifier`] over HTTP with the protocol of [`super::remote`]
//! (`gibbon serve-model`).
//!
//! One thread evaluates the model; requests are answered in the order they arrive. Scores are
//! the model's [`Classifier::query_logits`] and labels its [`Classifier::query_predict`] (what
//! an in-process query attack sees), which are batch-size-invariant, so a client sees the same
//! numbers as an in-process query attack whatever batches it sends. Bad requests get a 4xx answer with
//! a JSON body `{"error": "..."}` naming the problem.
use super::remote::{RemoteInfo, RemoteOutput, ServedModel};
use super::Classifier;
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

/// Largest request body the server reads (413 beyond).
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;

/// A bound HTTP server, ready to [`serve`](ModelServer::serve) a model.
pub struct ModelServer {
    server: tiny_http::Server,
    addr: SocketAddr,
}

/// An answer: status and JSON body.
struct Reply {
    status: u16,
    body: String,
    rows: usize,
}

impl Reply {
    fn error(status: u16, message: impl Into<String>) -> Self {
        let body = serde_json::json!({ "error": message.into() }).to_string();
        Reply { status, body, rows: 0 }
    }
}

/// Rows are read as float32 directly: the shortest decimal of a float32 reads back exactly.
#[derive(Deserialize)]
struct PredictRequest {
    inputs: Vec<Vec<f32>>,
}

#[derive(Serialize)]
struct ScoresReply<'a> {
    scores: Vec<&'a [f32]>,
}

fn encode(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| GibbonError::Internal(format!("encoding JSON: {e}")))
}

/// An HTTP server listening on `addr`, and the IP address it got (the port chosen for `:0`).
pub(crate) fn listen(
    addr: impl ToSocketAddrs + std::fmt::Debug,
) -> Result<(tiny_http::Server, SocketAddr)> {
    let shown = format!("{addr:?}");
    let server = tiny_http::Server::http(addr)
        .map_err(|e| GibbonError::invalid("port", format!("cannot listen on {shown}: {e}")))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| GibbonError::Internal("the server is not on an IP address".into()))?;
    Ok((server, addr))
}

impl ModelServer {
    /// Binds to `addr` (e.g. `127.0.0.1:0` for a free port on loopback).
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self> {
        let (server, addr) = listen(addr)?;
        Ok(ModelServer { server, addr })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give `--model`.
    pub fn predict_url(&self) -> String {
        format!("http://{}/predict", self.addr)
    }

    /// Answers requests for `model` until `shutdown` is set (checked every 100 ms).
    pub fn serve(
        &self,
        model: &dyn Classifier,
        output: RemoteOutput,
        shutdown: &AtomicBool,
    ) -> Result<()> {
        let source = model.info();
        let info = RemoteInfo {
            input_shape: model.input_shape().to_vec(),
            num_classes: model.num_classes(),
            output,
            model: Some(ServedModel {
                path: source.path.clone(),
                sha256: source.sha256.clone(),
                kind: source.kind.clone(),
                arch: source.arch.clone(),
            }),
        };
        let info = encode(&info)?;
        while !shutdown.load(Ordering::Relaxed) {
            match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(request)) => handle(request, model, output, &info),
                Ok(None) => {}
                Err(e) => tracing::warn!("serve-model: accepting a request failed: {e}"),
            }
        }
        Ok(())
    }
}

fn handle(
    mut request: tiny_http::Request,
    model: &dyn Classifier,
    output: RemoteOutput,
    info: &str,
) {
    use tiny_http::Method;
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.url().split(['?', '#']).next().unwrap_or("").to_string();
    let reply = match (&method, path.as_str()) {
        (Method::Get, "/info") => Reply { status: 200, body: info.to_string(), rows: 0 },
        (Method::Post, "/predict") => {
            let mut body = Vec::new();
            match request.as_reader().take(MAX_REQUEST_BYTES + 1).read_to_end(&mut body) {
                Err(e) => Reply::error(400, format!("reading the request body failed: {e}")),
                Ok(_) if body.len() as u64 > MAX_REQUEST_BYTES => Reply::error(
                    413,
                    format!(
                        "request body over {MAX_REQUEST_BYTES} bytes: send fewer rows per request"
                    ),
                ),
                Ok(_) => predict(&body, model, output),
            }
        }
        (_, "/info") => Reply::error(405, "use GET /info"),
        (_, "/predict") => Reply::error(405, "use POST /predict"),
        _ => Reply::error(404, format!("no endpoint {path}: use GET /info or POST /predict")),
    };
    tracing::info!(
        "{method} {path} rows={} -> {} in {:.1} ms",
        reply.rows,
        reply.status,
        started.elapsed().as_secs_f64() * 1e3
    );
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a valid static header");
    let response = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header);
    if let Err(e) = request.respond(response) {
        tracing::warn!("serve-model: sending the answer failed: {e}");
    }
}

fn predict(body: &[u8], model: &dyn Classifier, output: RemoteOutput) -> Reply {
    let request: PredictRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::error(
                400,
                format!("expected a JSON object {{\"inputs\": [[row of floats], ...]}}: {e}"),
            )
        }
    };
    let shape = model.input_shape();
    let row_len = shape.iter().product::<i64>() as usize;
    let rows = request.inputs.len();
    let mut flat = Vec::with_capacity(rows * row_len);
    for (r, row) in request.inputs.iter().enumerate() {
        if row.len() != row_len {
            return Reply::error(
                400,
                format!(
                    "input row {r} has {} values, expected {row_len} (input shape {shape:?}, flattened row-major)",
                    row.len()
                ),
            );
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Reply::error(400, format!("input row {r}, value {j} is not a finite float32"));
        }
        flat.extend_from_slice(row);
    }
    let mut dims = vec![rows as i64];
    dims.extend_from_slice(shape);
    let answer = (|| -> Result<String> {
        let x = Tensor::from_slice(&flat).view(dims.as_slice()).to_device(model.device());
        match output {
            RemoteOutput::Scores => {
                let k = model.num_classes() as usize;
                let logits = model.query_logits(&x)?.to_kind(Kind::Float);
                let values: Vec<f32> = Vec::try_from(logits.reshape([-1]))?;
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(GibbonError::Internal(format!(
                        "the model produced a non-finite score for input row {}",
                        i / k.max(1)
                    )));
                }
                // Written as float32 (shortest decimal that reads back as the same float32).
                let scores: Vec<&[f32]> = values.chunks(k.max(1)).collect();
                encode(&ScoresReply { scores })
            }
            RemoteOutput::Labels => {
                let labels: Vec<i64> =
                    Vec::try_from(model.query_predict(&x)?.to_kind(Kind::Int64))?;
                encode(&serde_json::json!({ "labels": labels }))
            }
        }
    })();
    match answer {
        Ok(body) => Reply { status: 200, body, rows },
        Err(e) => Reply::error(500, format!("the model failed: {e}")),
    }
}
