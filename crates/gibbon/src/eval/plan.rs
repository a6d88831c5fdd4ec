//! What an evaluation checks before it calls the model: the settings, the data against the
//! model, and the attack plan against the threat model (every attack is built, so an
//! unsupported norm or a bad option is refused here) and against what the model answers.
use super::EvalSettings;
use crate::attack::{build_attack, Attack};
use crate::data::Dataset;
use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use crate::threat::{Goal, Knowledge, TargetSelection, ThreatModel};

/// The number of samples to evaluate and the built attack plan, or the first problem found.
pub(super) fn check(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    settings: &EvalSettings,
) -> Result<(usize, Vec<Box<dyn Attack>>)> {
    threat.validate()?;
    if settings.batch_size == 0 {
        return Err(GibbonError::invalid("batch-size", "must be at least 1"));
    }
    let n = settings.n.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(GibbonError::invalid("n", "no samples to evaluate"));
    }
    if data.sample_shape() != model.input_shape() {
        return Err(GibbonError::Mismatch(format!(
            "input shape {:?} of the data does not fit the model, which expects {:?}",
            data.sample_shape(),
            model.input_shape()
        )));
    }
    let classes = model.num_classes();
    if let Some((i, &l)) =
        data.labels()[..n].iter().enumerate().find(|(_, &l)| l < 0 || l >= classes)
    {
        return Err(GibbonError::Mismatch(format!(
            "label {l} of sample {i} is out of range for a model with {classes} classes"
        )));
    }
    let attacks = settings
        .attacks
        .iter()
        .map(|name| build_attack(name, threat, &settings.options))
        .collect::<Result<Vec<_>>>()?;
    if model.labels_only() {
        check_labels_only(threat, &attacks)?;
    }
    for attack in &attacks {
        if !threat.knowledge.grants(attack.knowledge()) {
            return Err(GibbonError::invalid(
                "attack",
                format!(
                    "{} needs {} access, but the threat model grants only {} access",
                    attack.name(),
                    attack.knowledge().describe(),
                    threat.knowledge.describe()
                ),
            ));
        }
    }
    Ok((n, attacks))
}

/// A labels-only model has no likeliest class and no scores for attacks that need them.
fn check_labels_only(threat: &ThreatModel, attacks: &[Box<dyn Attack>]) -> Result<()> {
    if let Goal::Targeted(TargetSelection::MostLikely | TargetSelection::LeastLikely) = threat.goal
    {
        return Err(GibbonError::invalid(
            "targeted",
            "the model answers labels only, so it has no most- or least-likely class; \
             use next or a class number",
        ));
    }
    if let Some(a) = attacks.iter().find(|a| a.knowledge() != Knowledge::DecisionBased) {
        return Err(GibbonError::invalid(
            "attack",
            format!(
                "{} needs {} access, but the model answers labels only; use a \
                 decision-based attack",
                a.name(),
                a.knowledge().describe()
            ),
        ));
    }
    Ok(())
}
