//! gibbon: adversarial robustness of machine-learning classifiers.
//!
//! The crate is organised by concept: [`threat`] says what the attacker may do, [`model`] what
//! is attacked, [`data`] what it is attacked on, [`attack`] how, [`eval`] how the result is
//! measured and verified, [`defense`] how models are hardened (training defenses, re-exported
//! as [`train`]) and how their inputs are preprocessed, [`report`] how the result is shown. The `gibbon` binary (crate `gibbon-cli`) is a thin layer on top.
pub mod attack;
pub mod audit;
pub mod certify;
pub mod data;
pub mod defense;
pub mod detect;
pub mod error;
pub mod eval;
pub mod guard;
pub mod model;
pub mod progress;
pub mod random;
pub mod redteam;
pub mod report;
pub mod tensor;
pub mod text;
pub mod threat;
/// The training defenses under their earlier path (`gibbon::train`).
pub use defense::training as train;

pub use error::{GibbonError, Result};

/// gibbon's version, recorded in every result.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
