//! Text classifiers over HTTP: the remote-model protocol of [`crate::model::remote`] with texts
//! instead of tensors (`--model http://HOST:PORT/predict`).
//!
//! - `GET <base>/info` answers [`RemoteTextInfo`]:
//!   `{"modality":"text","num_classes":2,"output":"scores","class_names":["0","1"]}`.
//! - `POST <base>/predict` takes `{"texts":["...", ...]}` and answers
//!   `{"scores":[[p0, p1], ...]}` (one row of class probabilities per text, in order) or
//!   `{"labels":[class, ...]}` (label-only: only the `-label` recipes can attack it).
//!
//! The client validates every answer (one row per text, `num_classes` finite values, labels in
//! range) and retries connection failures and 5xx answers with exponential backoff (4xx answers
//! are errors naming the URL and the server's message). Every text sent is one query of the
//! attack's budget, exactly as for an in-process model: the [`TextClassifier`] the attack's
//! oracle counts is this client. [`TextModelServer`] serves any [`TextClassifier`].
use super::model::TextClassifier;
use crate::error::{GibbonError, Result};
use crate::model::remote::{info_url_for, RemoteOutput};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What `GET /info` of a text model server answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteTextInfo {
    /// Always `text` (an image model server's /info has `input_shape` instead).
    pub modality: String,
    /// Number of classes.
    pub num_classes: usize,
    /// Whether `/predict` answers scores (probabilities) or labels.
    pub output: RemoteOutput,
    /// Class names (optional).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// The served model (optional): path, kind, arch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
}

/// Texts per predict request.
pub const TEXTS_PER_REQUEST: usize = 256;
/// Attempts after a connection failure, a timeout or a 5xx answer.
const RETRIES: u32 = 3;
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// A text classifier behind HTTP.
pub struct RemoteTextModel {
    predict_url: String,
    /// What the server said about itself.
    pub info: RemoteTextInfo,
    agent: ureq::Agent,
    requests: AtomicU64,
}

impl RemoteTextModel {
    /// Connects and reads `/info`.
    pub fn connect(predict_url: &str, timeout: Duration) -> Result<RemoteTextModel> {
        let info_url = info_url_for(predict_url)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut m = RemoteTextModel {
            predict_url: predict_url.to_string(),
            info: RemoteTextInfo {
                modality: String::new(),
                num_classes: 0,
                output: RemoteOutput::Scores,
                class_names: vec![],
                model: None,
            },
            agent,
            requests: AtomicU64::new(0),
        };
        let text = m.call(&info_url, None)?;
        let info: RemoteTextInfo = serde_json::from_str(&text).map_err(|e| {
            GibbonError::model(
                &info_url,
                format!("expected {{\"modality\":\"text\",\"num_classes\":K,\"output\":\"scores\"|\"labels\"}}: {e}"),
            )
        })?;
        if info.modality != "text" || info.num_classes < 2 {
            return Err(GibbonError::model(
                &info_url,
                format!(
                    "not a text classifier (modality {:?}, {} classes)",
                    info.modality, info.num_classes
                ),
            ));
        }
        m.info = info;
        if m.info.class_names.len() != m.info.num_classes {
            m.info.class_names = (0..m.info.num_classes).map(|c| c.to_string()).collect();
        }
        Ok(m)
    }

    /// True when the server answers labels only.
    pub fn labels_only(&self) -> bool {
        self.info.output == RemoteOutput::Labels
    }

    /// HTTP requests sent (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The predict URL.
    pub fn predict_url(&self) -> &str {
        &self.predict_url
    }

    fn call(&self, url: &str, body: Option<&str>) -> Result<String> {
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << (attempt - 1)));
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = match body {
                Some(b) => self.agent.post(url).header("Content-Type", "application/json").send(b),
                None => self.agent.get(url).call(),
            };
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = match response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_string()
            {
                Ok(t) => t,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match status {
                200 => return Ok(text),
                500..=599 => last = format!("server error {status}: {}", excerpt(&text)),
                _ => {
                    return Err(GibbonError::model(
                        url,
                        format!("server answered {status}: {}", excerpt(&text)),
                    ))
                }
            }
        }
        Err(GibbonError::model(url, format!("{last} (gave up after {} attempts)", RETRIES + 1)))
    }

    fn predict_chunk(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let body = serde_json::json!({ "texts": texts }).to_string();
        let text = self.call(&self.predict_url, Some(&body))?;
        parse_answer(&text, self.info.output, texts.len(), self.info.num_classes)
            .map_err(|m| GibbonError::model(&self.predict_url, m))
    }
}

fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

#[derive(Deserialize)]
struct ScoresAnswer {
    scores: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct LabelsAnswer {
    labels: Vec<i64>,
}

/// A validated predict answer as probability rows (labels become one-hot rows).
fn parse_answer(
    text: &str,
    output: RemoteOutput,
    rows: usize,
    classes: usize,
) -> std::result::Result<Vec<Vec<f32>>, String> {
    let out: Vec<Vec<f32>> = match output {
        RemoteOutput::Scores => {
            let a: ScoresAnswer = serde_json::from_str(text)
                .map_err(|e| format!("expected {{\"scores\": [[...], ...]}}: {e}"))?;
            if let Some((i, r)) = a
                .scores
                .iter()
                .enumerate()
                .find(|(_, r)| r.len() != classes || r.iter().any(|v| !v.is_finite()))
            {
                return Err(format!("score row {i} is not {classes} finite values: {r:?}"));
            }
            a.scores
        }
        RemoteOutput::Labels => {
            let a: LabelsAnswer = serde_json::from_str(text)
                .map_err(|e| format!("expected {{\"labels\": [...]}}: {e}"))?;
            if let Some(l) = a.labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
                return Err(format!("label {l} is not a class (0..{classes})"));
            }
            a.labels
                .iter()
                .map(|&l| (0..classes).map(|c| if c == l as usize { 1.0 } else { 0.0 }).collect())
                .collect()
        }
    };
    if out.len() != rows {
        return Err(format!("{} answers for {rows} texts", out.len()));
    }
    Ok(out)
}

impl TextClassifier for RemoteTextModel {
    fn num_classes(&self) -> usize {
        self.info.num_classes
    }

    /// Class probabilities; for a label-only server, one-hot rows of its labels (only the
    /// label-only searches may read them: the CLI refuses score recipes on such a server).
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(TEXTS_PER_REQUEST) {
            out.extend(self.predict_chunk(chunk)?);
        }
        Ok(out)
    }
}

pub use super::serve::TextModelServer;
