//! Certificates: lower bounds on robustness, to set beside the attacks' upper bounds.
//!
//! An attack that finds an example proves a sample is not robust; a certificate proves that no
//! example exists within a radius (here with a stated probability). [`smoothing`] is randomized
//! smoothing (Cohen, Rosenfeld & Kolter 2019): the certified L2 radius of the classifier that
//! answers the majority class of the base model under Gaussian input noise. [`smoothadv`]
//! attacks that smoothed classifier (Salman et al. 2019), the upper bound beside the
//! certificate's lower bound. [`interval`] is interval bound propagation (Gowal et al. 2018): a
//! deterministic L∞ certificate (verified robust at ε, or unknown) for gibbon's own
//! architectures.
pub mod interval;
pub mod smoothadv;
pub mod smoothing;

pub use interval::{
    interval_certified_accuracy, IntervalCertificate, IntervalNetwork, IBP_BISECTION_STEPS,
    IBP_MARGIN_TOLERANCE,
};
pub use smoothadv::{
    attacked_accuracy, is_violation, require_scores, SmoothAdvConfig, SmoothAttack,
    SMOOTHADV_NOISE_SAMPLES, SMOOTHADV_PREDICT_DRAWS, SMOOTHADV_STEPS,
};
pub use smoothing::{
    certified_accuracy, Certificate, Smoothed, SmoothingConfig, SMOOTHING_ALPHA, SMOOTHING_N,
    SMOOTHING_N0,
};
