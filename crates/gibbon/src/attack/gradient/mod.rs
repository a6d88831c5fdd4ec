//! The gradient family: attacks that step along the input gradient of a loss. The fixed-ε
//! stepped attacks (FGSM, BIM, PGD, MI-FGSM, DI-FGSM) are configurations of one engine,
//! [`stepped::SteppedAttack`]; APGD (with its L1 and EOT parts) and FAB keep richer per-row
//! state and run on the shared pool ([`crate::attack::pool`]).
pub(in crate::attack) mod apgd;
pub(in crate::attack) mod apgd_eot;
pub(in crate::attack) mod apgd_l1;
pub(in crate::attack) mod bim;
pub(in crate::attack) mod difgsm;
pub(in crate::attack) mod fab;
pub(in crate::attack) mod fgsm;
pub(in crate::attack) mod mifgsm;
pub(in crate::attack) mod pgd;
pub(in crate::attack) mod stepped;
