//! Training a text classifier: Adam on cross-entropy, mini-batches in a seeded order.
use super::data::{shuffle, TextDataset};
use super::model::{TextClassifier, TextModel};
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{nn, Tensor};

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextTrainConfig {
    /// Passes over the training texts.
    pub epochs: usize,
    /// Texts per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initialisation, dropout and order.
    pub seed: u64,
}

/// One epoch's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextEpoch {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Accuracy on the evaluation texts.
    pub eval_accuracy: f64,
    /// Seconds for the epoch.
    pub seconds: f64,
}

/// Trains `model` on `train`, measuring accuracy on `eval` after each epoch.
pub fn train_text_model(
    model: &mut TextModel,
    train: &TextDataset,
    eval: &TextDataset,
    cfg: &TextTrainConfig,
) -> Result<Vec<TextEpoch>> {
    train_text_model_augmented(model, train, eval, cfg, None)
}

/// [`train_text_model`], with each batch passed through `augment` (augmentation training).
pub fn train_text_model_augmented(
    model: &mut TextModel,
    train: &TextDataset,
    eval: &TextDataset,
    cfg: &TextTrainConfig,
    augment: Option<&super::augment::Augmenter>,
) -> Result<Vec<TextEpoch>> {
    if cfg.epochs == 0 || cfg.batch_size == 0 || cfg.lr <= 0.0 || !cfg.lr.is_finite() {
        return Err(GibbonError::invalid("training", "epochs, batch size and lr must be positive"));
    }
    if train.is_empty() {
        return Err(GibbonError::invalid("training data", "no texts"));
    }
    tch::manual_seed(cfg.seed as i64);
    let mut opt = nn::Adam::default().build(model.var_store(), cfg.lr)?;
    let mut epochs = Vec::new();
    for epoch in 1..=cfg.epochs {
        let start = std::time::Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        shuffle(&mut order, cfg.seed.wrapping_add(epoch as u64));
        let mut total = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let (texts, labels) = match augment {
                Some(a) => a.batch(epoch, train, batch),
                None => (
                    batch.iter().map(|&i| train.texts[i].clone()).collect(),
                    batch.iter().map(|&i| train.labels[i]).collect(),
                ),
            };
            let labels: Vec<i64> = labels.into_iter().map(|l| l as i64).collect();
            let loss =
                model.logits(&texts, true).cross_entropy_for_logits(&Tensor::from_slice(&labels));
            opt.backward_step(&loss);
            total += loss.double_value(&[]) * batch.len() as f64;
        }
        let eval_accuracy = accuracy(model, eval)?;
        let e = TextEpoch {
            epoch,
            train_loss: total / train.len() as f64,
            eval_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "epoch {epoch}: loss {:.4}, eval accuracy {:.4} ({:.1}s)",
            e.train_loss,
            e.eval_accuracy,
            e.seconds
        );
        epochs.push(e);
    }
    Ok(epochs)
}

/// The predicted class of each text.
pub fn predict(model: &dyn TextClassifier, texts: &[String]) -> Result<Vec<usize>> {
    Ok(model.probabilities(texts)?.iter().map(|p| argmax(p)).collect())
}

/// Accuracy of `model` on `data`.
pub fn accuracy(model: &dyn TextClassifier, data: &TextDataset) -> Result<f64> {
    if data.is_empty() {
        return Ok(0.0);
    }
    let pred = predict(model, &data.texts)?;
    let correct = pred.iter().zip(&data.labels).filter(|(p, l)| p == l).count();
    Ok(correct as f64 / data.len() as f64)
}

/// Index of the largest value (the first on ties).
pub fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = i;
        }
    }
    best
}
