//! Defenses: how models are hardened ([`training`]: standard, PGD-AT, TRADES, fast FGSM-AT,
//! Gaussian noise augmentation, all through one loop) and how their inputs are preprocessed
//! when deployed ([`input`]: JPEG, bit depth, median smoothing, Gaussian noise, as composable
//! wrappers around any classifier).
pub mod input;
pub mod training;
