//! Query-only access to a model: what a score-based or decision-based attacker sees.
//!
//! An attack written against [`ScoreModel`] can ask for output scores and nothing else: the
//! trait has no gradient, no weights and no autograd graph, so such an attack cannot reach
//! white-box information even by accident, and the same code attacks a remote model.
use super::Classifier;
use crate::error::Result;
use tch::{Device, Tensor};

/// A model that answers queries with scores (logits or probabilities) `[B, classes]`.
pub trait ScoreModel {
    /// Scores for inputs `[B, ...input_shape]`, computed without autograd. Higher is more
    /// likely; the attack only relies on the ordering and on differences of these scores.
    fn scores(&self, x: &Tensor) -> Result<Tensor>;
    /// Shape of one input.
    fn input_shape(&self) -> &[i64];
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Device that inputs should live on.
    fn device(&self) -> Device;
}

/// The score-only view of a white-box [`Classifier`]: forward passes without autograd.
pub struct ScoresOf<'a>(pub &'a dyn Classifier);

impl ScoreModel for ScoresOf<'_> {
    fn scores(&self, x: &Tensor) -> Result<Tensor> {
        self.0.logits(x)
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
}

/// A model that answers queries with predicted labels only `[B]` (int64): what a decision-based
/// attacker (HopSkipJump, Boundary, RayS) sees.
pub trait LabelModel {
    /// Predicted class per input `[B, ...input_shape]`.
    fn labels(&self, x: &Tensor) -> Result<Tensor>;
    /// Shape of one input.
    fn input_shape(&self) -> &[i64];
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Device that inputs should live on.
    fn device(&self) -> Device;
}

/// The label-only view of any [`ScoreModel`]: the arg-max of its scores.
pub struct LabelsOf<'a>(pub &'a dyn ScoreModel);

impl LabelModel for LabelsOf<'_> {
    fn labels(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.scores(x)?.argmax(-1, false))
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
}
