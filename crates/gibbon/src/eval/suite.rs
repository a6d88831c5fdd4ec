//! Named attack plans: AutoAttack-equivalent ensembles (Croce & Hein 2020, "Reliable evaluation
//! of adversarial robustness with an ensemble of diverse parameter-free attacks").
//!
//! - `standard`: APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes), Square (5,000
//!   queries), each on the samples the previous ones left unbroken; APGD and FAB with 100
//!   iterations and one restart. For L1 ("Mind the box", Croce & Hein 2021): L1-APGD-CE with 5
//!   restarts, L1-APGD-T with 5 target classes (both with adaptive sparsity and the large-ε
//!   schedule), FAB-T, Square-L1 (5,000 queries).
//!   Square uses AutoAttack's fixed p-schedule (`resc_schedule=False`); a query budget the user
//!   sets on purpose is kept, and the report then says the suite is no longer equivalent.
//! - `rand`, for randomized models: APGD-CE and APGD-DLR with Expectation over Transformation
//!   (gradients averaged over 20 draws, Athalye et al. 2018), every sample running its whole
//!   budget and returning its best-EOT-margin iterate, and every verdict taken by majority over
//!   5 fresh forward passes (AutoAttack's single-pass verdict is reported beside it).
//!
//! The report's `suite` field names the suite and lists every deviation from AutoAttack.
use super::EvalSettings;
use crate::error::{GibbonError, Result};
use crate::threat::{Norm, ThreatModel};
use serde::Serialize;
use std::str::FromStr;

/// What a report says about the suite that set its plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteRecord {
    /// `standard` or `rand`.
    pub name: String,
    /// No deviation from AutoAttack's settings.
    pub autoattack_equivalent: bool,
    /// Every way this run differs from AutoAttack's suite (empty when equivalent).
    pub deviations: Vec<String>,
}

/// Square's query budget in the standard suite (AutoAttack's).
pub const SUITE_SQUARE_QUERIES: usize = 5_000;
/// EOT draws per gradient in the rand suite (AutoAttack's).
pub const SUITE_EOT_DRAWS: usize = 20;
/// Forward passes per verdict in the rand suite.
pub const SUITE_RAND_VERDICT_PASSES: usize = 5;

/// An ensemble of attacks with fixed, parameter-free settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// APGD-CE, APGD-T, FAB-T, Square.
    Standard,
    /// APGD-CE and APGD-DLR with EOT, majority verdicts.
    Rand,
}

impl FromStr for Suite {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "standard" => Ok(Suite::Standard),
            "rand" => Ok(Suite::Rand),
            other => Err(GibbonError::invalid(
                "suite",
                format!("'{other}' is not one of standard, rand"),
            )),
        }
    }
}

impl Suite {
    /// The attack plan for `norm`, in order.
    pub fn attacks(self, norm: Norm) -> Vec<String> {
        let names: &[&str] = match (self, norm) {
            (Suite::Standard, _) => &["apgd-ce", "apgd-t", "fab-t", "square"],
            (Suite::Rand, _) => &["apgd-ce", "apgd-dlr"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Sets the plan and the suite's fixed parameters on `settings` and `threat`. The suite's
    /// iteration counts are its own (100 for APGD and FAB), so a generic `--steps` is ignored;
    /// a query budget already in the threat model is kept.
    pub fn apply(self, threat: &mut ThreatModel, settings: &mut EvalSettings) {
        settings.attacks = self.attacks(threat.norm);
        threat.budget.steps = None;
        threat.budget.restarts = None;
        settings.options.alpha = None;
        settings.options.random_start = None;
        let mut deviations = Vec::new();
        if settings.options.confidence > 0.0 {
            deviations.push(format!(
                "early stop only beyond a logit margin of {} (--confidence)",
                settings.options.confidence
            ));
        }
        match self {
            Suite::Standard => match threat.budget.queries {
                Some(q) if q != SUITE_SQUARE_QUERIES => deviations.push(format!(
                    "Square has {q} queries per sample, not AutoAttack's \
                         {SUITE_SQUARE_QUERIES} (the query budget was set explicitly)"
                )),
                _ => threat.budget.queries = Some(SUITE_SQUARE_QUERIES),
            },
            Suite::Rand => {
                settings.options.eot = Some(SUITE_EOT_DRAWS);
                settings.verify_passes = SUITE_RAND_VERDICT_PASSES;
            }
        }
        settings.suite = Some(SuiteRecord {
            name: self.name().into(),
            autoattack_equivalent: deviations.is_empty(),
            deviations,
        });
    }

    /// The suite's name (`standard`, `rand`).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Standard => "standard",
            Suite::Rand => "rand",
        }
    }
}
