//! The decision policy: maps a model answer (confidence) and screen scores to `accept`,
//! `refuse` or `escalate`, naming the rule that decided.
//!
//! Rules, in order (the first that fires decides):
//! 1. `refuse:far-past-threshold:<screen>`: the score is past the screen's threshold and
//!    at most `refuse_tail` of the clean calibration scores are as high (default 0.002).
//! 2. `escalate:past-threshold:<screen>`: the score is past the screen's calibrated threshold.
//! 3. `escalate:low-confidence`: the top softmax probability is below `min_confidence`
//!    (default 0.6).
//! 4. `accept`.
use super::screen::Screen;
use crate::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The decision for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Refuse,
    Escalate,
}

impl Decision {
    /// `accept`, `refuse` or `escalate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Refuse => "refuse",
            Decision::Escalate => "escalate",
        }
    }
}

/// Drift monitoring settings (the `[drift]` table of the policy file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSettings {
    /// Recent inputs compared with the calibration sample.
    pub window: usize,
    /// No drift verdict before the window holds this many inputs.
    pub min_samples: usize,
    /// Drift is signalled when the KS p-value falls below this level.
    pub p_alert: f64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings { window: 500, min_samples: 100, p_alert: 1e-3 }
    }
}

/// The policy file (TOML); every field has a default, so an empty file is the default policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Refuse when a flagged score's clean-calibration tail probability is at most this.
    pub refuse_tail: f64,
    /// Escalate when the top softmax probability is below this.
    pub min_confidence: f64,
    /// Escalate (rather than accept) inputs past a screen's threshold but not far past it.
    pub escalate_past_threshold: bool,
    pub drift: DriftSettings,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            refuse_tail: 0.002,
            min_confidence: 0.6,
            escalate_past_threshold: true,
            drift: DriftSettings::default(),
        }
    }
}

/// A decision and the rule that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub rule: String,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| GibbonError::io(path, e))?;
        let policy: Policy =
            toml::from_str(&text).map_err(|e| GibbonError::format(path, e.to_string()))?;
        policy.validate().map_err(|e| GibbonError::format(path, e.to_string()))?;
        Ok(policy)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(GibbonError::invalid(name, format!("{v} is not in [0, 1]")))
            }
        };
        unit("refuse_tail", self.refuse_tail)?;
        unit("min_confidence", self.min_confidence)?;
        unit("drift.p_alert", self.drift.p_alert)?;
        if self.drift.window == 0 || self.drift.min_samples > self.drift.window {
            return Err(GibbonError::invalid(
                "drift.window",
                format!(
                    "window {} must be positive and at least min_samples {}",
                    self.drift.window, self.drift.min_samples
                ),
            ));
        }
        Ok(())
    }

    /// Decides for one input with top probability `confidence` and `scores` (one per screen,
    /// in the order of `screens`).
    pub fn decide(&self, confidence: f64, scores: &[f64], screens: &[&dyn Screen]) -> Verdict {
        let flagged: Vec<(&dyn Screen, f64)> = screens
            .iter()
            .zip(scores)
            .filter(|(s, &v)| v > s.threshold())
            .map(|(s, &v)| (*s, v))
            .collect();
        for (screen, score) in &flagged {
            if screen.tail_probability(*score) <= self.refuse_tail {
                return verdict(
                    Decision::Refuse,
                    format!("refuse:far-past-threshold:{}", screen.name()),
                );
            }
        }
        if self.escalate_past_threshold {
            if let Some((screen, _)) = flagged.first() {
                return verdict(
                    Decision::Escalate,
                    format!("escalate:past-threshold:{}", screen.name()),
                );
            }
        }
        if confidence < self.min_confidence {
            return verdict(Decision::Escalate, "escalate:low-confidence".into());
        }
        verdict(Decision::Accept, "accept".into())
    }
}

fn verdict(decision: Decision, rule: String) -> Verdict {
    Verdict { decision, rule }
}
