//! The model worker: owns the model (libtorch modules are not shared across threads), collects
//! the inputs of concurrent requests for a short window or up to a maximum batch, runs one
//! forward pass and answers each request on its own channel.
use super::decode::DecodedBatch;
use super::metrics::Metrics;
use super::screen::ScreenScorer;
use crate::model::Classifier;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tch::Tensor;
use tokio::sync::oneshot;

/// The model's answer for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct RowAnswer {
    /// Arg-max class.
    pub label: i64,
    /// Its softmax probability.
    pub confidence: f64,
    /// One score per screen, in the screens' order.
    pub scores: Vec<f64>,
}

/// One request's inputs and where to send their answers.
#[derive(Debug)]
pub struct ModelJob {
    pub batch: DecodedBatch,
    pub reply: oneshot::Sender<Result<Vec<RowAnswer>, String>>,
}

/// How passes are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Stop collecting at this many rows (a single larger request runs alone).
    pub max_batch: usize,
    /// Wait at most this long after the first input of a pass for more.
    pub window: Duration,
}

/// Serves jobs from `jobs` until every sender is gone.
pub fn run_worker(
    model: &dyn Classifier,
    screens: &[&dyn ScreenScorer],
    jobs: Receiver<ModelJob>,
    settings: BatchSettings,
    metrics: &Metrics,
) {
    while let Ok(first) = jobs.recv() {
        let mut pending = vec![first];
        let mut rows = pending[0].batch.rows;
        let deadline = Instant::now() + settings.window;
        while rows < settings.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    rows += job.batch.rows;
                    pending.push(job);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics.batch(rows);
        let pixels: Vec<f32> =
            pending.iter().flat_map(|j| j.batch.pixels.iter().copied()).collect();
        match classify_rows(model, screens, &pixels, rows) {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for job in pending {
                    let mine: Vec<RowAnswer> = answers.by_ref().take(job.batch.rows).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(message) => {
                tracing::error!("model pass over {rows} rows failed: {message}");
                for job in pending {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One forward pass over `rows` inputs: label, confidence and screen scores per row.
pub fn classify_rows(
    model: &dyn Classifier,
    screens: &[&dyn ScreenScorer],
    pixels: &[f32],
    rows: usize,
) -> Result<Vec<RowAnswer>, String> {
    let x = input_tensor(model, pixels, rows).map_err(|e| e.to_string())?;
    let logits = model.query_logits(&x).map_err(|e| e.to_string())?;
    let probs = softmax_of(&logits).map_err(|e| e.to_string())?;
    let classes = model.num_classes() as usize;
    let per_screen = screens
        .iter()
        .map(|s| s.scores(model, &x, &logits))
        .collect::<crate::Result<Vec<Vec<f64>>>>()
        .map_err(|e| e.to_string())?;
    Ok(probs
        .chunks(classes)
        .enumerate()
        .map(|(i, row)| {
            let (label, p) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |best, (k, &p)| if p > best.1 { (k, p) } else { best });
            RowAnswer {
                label: label as i64,
                confidence: p as f64,
                scores: per_screen.iter().map(|s| s[i]).collect(),
            }
        })
        .collect())
}

/// The inputs of a pass as one tensor `[rows, ...input_shape]` on the model's device.
pub fn input_tensor(model: &dyn Classifier, pixels: &[f32], rows: usize) -> crate::Result<Tensor> {
    let mut shape = vec![rows as i64];
    shape.extend_from_slice(model.input_shape());
    Ok(Tensor::from_slice(pixels).f_view(shape.as_slice())?.f_to_device(model.device())?)
}

/// Softmax probabilities (`rows × classes`, row-major) of the model on `x`.
pub fn softmax_rows(model: &dyn Classifier, x: &Tensor) -> crate::Result<Vec<f32>> {
    softmax_of(&model.query_logits(x)?)
}

/// Softmax probabilities (`rows × classes`, row-major) of `logits`.
fn softmax_of(logits: &Tensor) -> crate::Result<Vec<f32>> {
    let probs =
        logits.f_softmax(-1, tch::Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    Ok(Vec::<f32>::try_from(probs.f_flatten(0, -1)?)?)
}
