//! The score family: attacks that see output scores only, through a
//! [`crate::model::ScoreOracle`] that charges every query to its sample and has no gradient, so
//! these attacks cannot reach white-box information even by accident (and attack remote models
//! unchanged). Each keeps its state per sample on the host and runs on the shared pool
//! ([`crate::attack::pool`]).
pub(in crate::attack) mod nes;
pub(in crate::attack) mod simba;
pub(in crate::attack) mod square;
