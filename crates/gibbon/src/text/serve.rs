//! Serving a [`TextClassifier`] over HTTP with the text protocol of [`super::remote`]
//! (`gibbon text serve`): `GET /info`, `POST /predict {"texts": [...]}`.
//!
//! One thread evaluates the model, requests are answered in arrival order. Scores are the
//! model's probabilities, labels their arg-max (ties to the lowest class, as every gibbon text
//! search reads them), so a remote attack sees the same numbers as an in-process one. Bad
//! requests get a 4xx answer `{"error": "..."}` naming the problem (a text over the model's
//! length: 400).
use super::model::TextClassifier;
use super::remote::RemoteTextInfo;
use super::train::argmax;
use crate::error::{GibbonError, Result};
use crate::model::remote::RemoteOutput;
use serde::Deserialize;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest request body read (413 beyond).
const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// A bound HTTP server, ready to serve a text model.
pub struct TextModelServer {
    server: tiny_http::Server,
    addr: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    texts: Vec<String>,
}

impl TextModelServer {
    /// Binds to `addr` (`127.0.0.1:0`: a free port on loopback).
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self> {
        let (server, addr) = crate::model::serve::listen(addr)?;
        Ok(TextModelServer { server, addr })
    }

    /// The URL to give `--model`.
    pub fn predict_url(&self) -> String {
        format!("http://{}/predict", self.addr)
    }

    /// Answers requests for `model` until `shutdown` is set (checked every 100 ms).
    pub fn serve(
        &self,
        model: &dyn TextClassifier,
        output: RemoteOutput,
        class_names: &[String],
        described: serde_json::Value,
        shutdown: &AtomicBool,
    ) -> Result<()> {
        let info = RemoteTextInfo {
            modality: "text".into(),
            num_classes: model.num_classes(),
            output,
            class_names: class_names.to_vec(),
            model: Some(described),
        };
        let info =
            serde_json::to_string(&info).map_err(|e| GibbonError::Internal(e.to_string()))?;
        while !shutdown.load(Ordering::Relaxed) {
            match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(request)) => handle(request, model, output, &info),
                Ok(None) => {}
                Err(e) => tracing::warn!("text serve: accepting a request failed: {e}"),
            }
        }
        Ok(())
    }
}

fn handle(mut request: tiny_http::Request, m: &dyn TextClassifier, out: RemoteOutput, info: &str) {
    use tiny_http::Method;
    let method = request.method().clone();
    let path = request.url().split(['?', '#']).next().unwrap_or("").to_string();
    let (status, body) = match (&method, path.as_str()) {
        (Method::Get, "/info") => (200, info.to_string()),
        (Method::Post, "/predict") => {
            let mut body = Vec::new();
            match request.as_reader().take(MAX_REQUEST_BYTES + 1).read_to_end(&mut body) {
                Err(e) => error(400, format!("reading the request body failed: {e}")),
                Ok(_) if body.len() as u64 > MAX_REQUEST_BYTES => {
                    error(413, "request body too large: send fewer texts per request")
                }
                Ok(_) => predict(&body, m, out),
            }
        }
        (_, "/info") => error(405, "use GET /info"),
        (_, "/predict") => error(405, "use POST /predict"),
        _ => error(404, format!("no endpoint {path}: use GET /info or POST /predict")),
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a valid static header");
    let response =
        tiny_http::Response::from_string(body).with_status_code(status).with_header(header);
    if let Err(e) = request.respond(response) {
        tracing::warn!("text serve: sending the answer failed: {e}");
    }
}

fn error(status: u16, message: impl Into<String>) -> (u16, String) {
    (status, serde_json::json!({ "error": message.into() }).to_string())
}

fn predict(body: &[u8], model: &dyn TextClassifier, output: RemoteOutput) -> (u16, String) {
    let request: PredictRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(400, format!("expected a JSON object {{\"texts\": [\"...\", ...]}}: {e}"))
        }
    };
    match model.probabilities(&request.texts) {
        Ok(p) => match output {
            RemoteOutput::Scores => (200, serde_json::json!({ "scores": p }).to_string()),
            RemoteOutput::Labels => {
                let labels: Vec<usize> = p.iter().map(|r| argmax(r)).collect();
                (200, serde_json::json!({ "labels": labels }).to_string())
            }
        },
        Err(e) if e.is_user_error() => error(400, e.to_string()),
        Err(e) => error(500, format!("the model failed: {e}")),
    }
}
