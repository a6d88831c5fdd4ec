//! The clean pass of an evaluation: every sample's prediction and confidence on the clean
//! input, whether it is correct, and its target class for targeted goals (chosen from the
//! clean scores where the goal asks for the most or least likely class).
use super::verify::ModelAnswer;
use super::SampleRecord;
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use crate::threat::{Goal, TargetSelection};
use tch::{Device, Kind, Tensor};

/// The clean answers for the first `n` samples of a dataset.
pub(super) struct CleanPass {
    /// True labels.
    pub labels: Vec<i64>,
    /// Clean predictions.
    pub pred: Vec<i64>,
    /// Softmax probabilities of the clean predictions.
    pub conf: Vec<f64>,
    /// Target classes (targeted goals).
    pub targets: Vec<Option<i64>>,
    /// Clean prediction equals the label.
    pub correct: Vec<bool>,
}

impl CleanPass {
    /// Classifies the first `n` samples of `data` in batches of `batch_size`.
    pub fn run(
        model: &dyn Classifier,
        data: &Dataset,
        n: usize,
        goal: Goal,
        batch_size: usize,
    ) -> Result<CleanPass> {
        let labels = data.labels()[..n].to_vec();
        let classes = model.num_classes();
        let (mut pred, mut conf, mut targets) = (vec![0i64; n], vec![0f64; n], vec![None; n]);
        for start in (0..n).step_by(batch_size) {
            let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
            let answer = ModelAnswer::of(model, &data.try_batch(&idx, model.device())?)?;
            let c: Vec<f64> = Vec::try_from(&answer.confidence)?;
            let p: Vec<i64> = Vec::try_from(&answer.prediction)?;
            let chosen =
                choose_targets(&answer.scores, &labels[start..start + idx.len()], goal, classes)?;
            for (j, &i) in idx.iter().enumerate() {
                pred[i] = p[j];
                conf[i] = c[j];
                targets[i] = chosen[j];
            }
        }
        let correct = (0..n).map(|i| pred[i] == labels[i]).collect();
        Ok(CleanPass { labels, pred, conf, targets, correct })
    }

    /// Sample `i` needs no attack: wrong when clean, or its label is the fixed target.
    pub fn settled(&self, i: usize) -> bool {
        !self.correct[i] || self.targets[i] == Some(self.labels[i])
    }

    /// The record of sample `i` as the clean pass left it.
    pub fn record(&self, i: usize) -> SampleRecord {
        SampleRecord {
            index: i,
            label: self.labels[i],
            target: self.targets[i],
            clean_pred: self.pred[i],
            clean_confidence: self.conf[i],
            adv_pred: self.pred[i],
            adv_confidence: self.conf[i],
            robust: self.correct[i],
            broken_by: None,
            step: None,
            restart: None,
            norm: None,
            queries: 0,
            min_norm: None,
            single_pass_broken: None,
        }
    }
}

pub(super) fn choose_targets(
    logits: &Tensor,
    labels: &[i64],
    goal: Goal,
    classes: i64,
) -> Result<Vec<Option<i64>>> {
    let sel = match goal {
        Goal::Untargeted => return Ok(vec![None; labels.len()]),
        Goal::Targeted(sel) => sel,
    };
    Ok(match sel {
        TargetSelection::Fixed(c) => {
            if c < 0 || c >= classes {
                return Err(GibbonError::invalid(
                    "target",
                    format!("class {c} is out of range 0..{classes}"),
                ));
            }
            vec![Some(c); labels.len()]
        }
        TargetSelection::NextClass => labels.iter().map(|&l| Some((l + 1) % classes)).collect(),
        TargetSelection::MostLikely | TargetSelection::LeastLikely => {
            let y = Tensor::from_slice(labels).to_device(logits.device());
            let fill =
                if sel == TargetSelection::MostLikely { f64::NEG_INFINITY } else { f64::INFINITY };
            let masked = logits.to_kind(Kind::Float).scatter_value(1, &y.unsqueeze(1), fill);
            let pick = if sel == TargetSelection::MostLikely {
                masked.argmax(-1, false)
            } else {
                masked.argmin(-1, false)
            };
            Vec::<i64>::try_from(pick)?.into_iter().map(Some).collect()
        }
    })
}

pub(super) fn targets_tensor(
    idx: &[usize],
    targets: &[Option<i64>],
    goal: Goal,
    device: Device,
) -> Option<Tensor> {
    match goal {
        Goal::Untargeted => None,
        Goal::Targeted(_) => {
            let t: Vec<i64> = idx.iter().map(|&i| targets[i].unwrap_or(0)).collect();
            Some(Tensor::from_slice(&t).to_device(device))
        }
    }
}
