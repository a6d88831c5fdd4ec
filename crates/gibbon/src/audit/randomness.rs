//! Check 2 (Carlini et al. 2019, section 5.5; AutoAttack's `check_randomized`): does the model
//! answer the same input twice the same way? A randomized model needs gradients averaged over
//! draws (EOT, Athalye et al. 2018) and verdicts by repeated votes.
use super::{fraction, AuditSubject, Check, Finding, Remedy};
use crate::error::Result;
use serde_json::json;

/// Forward passes compared.
pub const PASSES: usize = 4;

/// Two passes of a deterministic model on the same tensor are bit-identical (gibbon runs every
/// pass on the same tile shape); differences above this, relative to `max(1, largest |logit|)`,
/// mean the model draws random numbers. The slack covers nothing but float noise.
pub const TOLERANCE: f64 = 1e-5;

/// What [`PASSES`] forward passes of the audited samples showed.
pub struct RepeatedPasses {
    /// Largest logit difference from the first pass.
    pub max_diff: f64,
    /// The same, relative to `max(1, largest |logit|)`.
    pub relative: f64,
    /// Per sample: its prediction changed in some pass.
    pub flipped: Vec<bool>,
}

impl RepeatedPasses {
    /// The passes differ beyond float noise.
    pub fn randomized(&self) -> bool {
        !self.relative.is_finite() || self.relative > TOLERANCE
    }
}

/// Runs the correctly classified samples [`PASSES`] times.
pub fn repeated_passes(subject: &AuditSubject) -> Result<RepeatedPasses> {
    let clean = subject.clean()?;
    let first = subject.model.logits(&clean.x)?;
    let pred0 = first.argmax(-1, false);
    let scale = first.abs().max().double_value(&[]).max(1.0);
    let (mut max_diff, mut flipped) = (0f64, vec![false; clean.indices.len()]);
    for _ in 1..PASSES {
        let again = subject.model.logits(&clean.x)?;
        max_diff = max_diff.max((&again - &first).abs().max().double_value(&[]));
        let changed: Vec<bool> = Vec::try_from(&again.argmax(-1, false).ne_tensor(&pred0))?;
        for (f, c) in flipped.iter_mut().zip(changed) {
            *f |= c;
        }
    }
    Ok(RepeatedPasses { max_diff, relative: max_diff / scale, flipped })
}

/// Fires when repeated forward passes of the same inputs differ. Remedy: EOT and repeated
/// verdicts (the `rand` suite).
pub struct Randomness;

impl Check for Randomness {
    fn name(&self) -> &'static str {
        "randomness"
    }
    fn question(&self) -> &'static str {
        "do repeated forward passes of the same input give different answers?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let passes = repeated_passes(subject)?;
        let (relative, fired, flipped) = (passes.relative, passes.randomized(), &passes.flipped);
        let flips = flipped.iter().filter(|&&f| f).count();
        let flip_rate = fraction(flips, flipped.len());
        let verdict = if fired {
            format!(
                "randomized: logits differ by up to {relative:.3e} (relative) between passes; \
                 {flips} of {} predictions changed in {PASSES} passes",
                flipped.len()
            )
        } else {
            format!("deterministic: {PASSES} passes agree (max relative difference {relative:.1e})")
        };
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired,
            verdict,
            evidence: json!({
                "passes": PASSES,
                "max_abs_logit_difference": passes.max_diff,
                "relative_difference": relative,
                "tolerance": TOLERANCE,
                "prediction_flip_rate": flip_rate,
            }),
            remedies: if fired { vec![Remedy::Eot] } else { Vec::new() },
        })
    }
}
