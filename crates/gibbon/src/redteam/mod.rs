//! `gibbon redteam`: a threat-model file (TOML) names the model, the data, what the attacker
//! knows, the perturbation sets and budgets, and what "pass" means; [`RedteamPlan::parse`]
//! checks all of it before anything runs, and every error names the file, the line and the
//! key (unknown keys with the closest known one). The plan for each knowledge level:
//!
//! - white-box: AutoAttack's standard suite (Croce & Hein 2020: APGD-CE, APGD-T, FAB-T,
//!   Square; gibbon's `--suite standard`);
//! - score-based: Square (Andriushchenko et al. 2020), SimBA (Guo et al. 2019) and NES (Ilyas
//!   et al. 2018), those that support the norm;
//! - decision-based: HopSkipJump (Chen et al. 2020) and RayS (Chen & Gu 2020), those that
//!   support the norm.
//!
//! `attacks = [...]` in `[attacker]` replaces the plan; an attack that needs more than the
//! declared knowledge is refused. The audit runs when `[audit]` is present and the attacker is
//! white-box; randomized smoothing (Cohen, Rosenfeld & Kolter 2019) when `[certify]` is.
//! `[transfer]` adds transfer attacks from surrogate models the attacker owns (any knowledge:
//! the model is only queried for labels); `[[detection]]` adds detectors guarding the model
//! (a file from `gibbon detect fit`, or a registered detector fitted and calibrated on a slice),
//! each measured on the evaluated samples and OOD sets and attacked by the non-adaptive and the
//! adaptive PGD (Carlini & Wagner 2017).
mod criteria;
mod extra;
mod file;
mod plan;

pub use extra::{DetectionPlan, DetectorFit, DetectorSource, TransferPlan};
pub use plan::{CertifyPlan, Criterion, Metric, RedteamPlan, Run};
