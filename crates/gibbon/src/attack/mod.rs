//! Attacks. One file per attack; each implements [`Attack`] and is registered once in
//! [`REGISTRY`] (`registry.rs`), which declares its name, what it sees of the model, the norms
//! it supports and whether it searches for the minimum norm. The CLI help, the norm and
//! knowledge checks of an evaluation and the contract test (`tests/contract.rs`) read the
//! registry.
//!
//! The attacks live in one folder per family, each with its driver:
//! - `gradient/`: input-gradient attacks; the stepped engine (`stepped.rs`: FGSM, BIM, PGD,
//!   MI-FGSM, DI-FGSM are configurations of it), APGD and FAB on the shared pool;
//! - `min_norm/`: minimum-norm attacks (DeepFool, C&W) on the finisher in `min_norm/mod.rs`;
//! - `score/`: score-only attacks (Square, SimBA, NES) against a score oracle;
//! - `decision/`: label-only searches (HopSkipJump, Boundary, RayS) implementing
//!   `decision::Search`, run by the one driver in `decision/mod.rs`.
//!
//! Every family runs its rows on the one take / refill / retire pool (`pool.rs`). To add an
//! attack: write `FAMILY/myattack.rs`, declare it in `FAMILY/mod.rs`, and add one line to
//! [`REGISTRY`].
//!
//! An attack pulls samples from a [`SampleSource`] and hands each finished sample to a sink as
//! an [`AttackRecord`]. It never decides the verdict: the evaluation's verifier re-checks every
//! returned example (norm, box, finiteness, and a fresh forward pass).
mod decision;
mod gradient;
mod host;
mod loss;
mod min_norm;
pub(crate) mod pool;
mod registry;
mod score;
pub(crate) use score::square::MassMoves;

pub use decision::boundary::{Boundary, BoundaryConfig, BOUNDARY_QUERIES};
pub use decision::hsj::{Hsj, HsjConfig, HSJ_INITIAL_EVALS, HSJ_MAX_EVALS, HSJ_QUERIES};
pub use decision::rays::{Rays, RaysConfig, RAYS_QUERIES};
pub use gradient::apgd::{dlr_loss, Apgd, ApgdConfig, ApgdLoss};
pub use gradient::bim::Bim;
pub use gradient::difgsm::DiFgsm;
pub use gradient::fab::{project_hyperplane_box, Fab, FabConfig, FabVariant, FAB_STEPS};
pub use gradient::fgsm::Fgsm;
pub use gradient::mifgsm::MiFgsm;
pub use gradient::pgd::{Pgd, PGD_RESTARTS};
pub(crate) use gradient::stepped::steepest_direction;
pub use gradient::stepped::{StartPoint, SteppedAttack, SteppedConfig};
pub use loss::{cross_entropy_objective, margin, success_mask};
pub use min_norm::cw::{Cw, CwConfig, CW_STEPS};
pub use min_norm::deepfool::{DeepFool, DeepFoolConfig, DEEPFOOL_STEPS};
pub use registry::{
    build_attack, check_norm, registration, AttackInfo, Registration, APGD_STEPS, REGISTRY,
};
pub use score::nes::{Nes, NesConfig, NES_QUERIES, NES_SAMPLES, NES_SIGMA};
pub use score::simba::{dct2, dct_matrix, idct2, Simba, SimbaBasis, SimbaConfig, SIMBA_QUERIES};
pub use score::square::{Square, SquareConfig, SquareSchedule, SQUARE_P_INIT, SQUARE_QUERIES};

use crate::error::{GibbonError, Result};
use crate::model::Classifier;
use crate::threat::{Knowledge, ThreatModel};
use tch::Tensor;

/// A chunk of samples to attack: `x` `[b, ...]`, labels `[b]`, optional targets `[b]`.
pub struct Chunk {
    /// Dataset indices, one per row.
    pub indices: Vec<usize>,
    /// Inputs on the model's device.
    pub x: Tensor,
    /// True labels (int64).
    pub labels: Tensor,
    /// Target classes for targeted goals (int64).
    pub targets: Option<Tensor>,
}

/// One sample of a [`Chunk`] on the host, for query-based attacks that keep their state in
/// plain vectors.
pub(crate) struct HostSample {
    /// Dataset index.
    pub index: usize,
    /// True label.
    pub label: i64,
    /// Target class for targeted goals.
    pub target: Option<i64>,
    /// The clean input, flattened (float32).
    pub x0: Vec<f32>,
}

/// What every chunk of one run of a query attack shares: the sample shape and whether the goal
/// is targeted (both set from the first chunk by [`Chunk::to_host`]).
#[derive(Debug, Default)]
pub(crate) struct HostRun {
    /// Shape of one sample.
    pub shape: Vec<i64>,
    /// Whether the samples have targets.
    pub targeted: Option<bool>,
}

impl Chunk {
    /// The chunk's samples on the host. Every chunk of a run must have `run`'s sample shape and
    /// goal kind, which the first chunk sets (`attack` names the attack in the error).
    pub(crate) fn to_host(&self, attack: &str, run: &mut HostRun) -> Result<Vec<HostSample>> {
        let size = self.x.size();
        let shape = &mut run.shape;
        if shape.is_empty() {
            *shape = size[1..].to_vec();
        } else if shape.as_slice() != &size[1..] {
            return Err(GibbonError::Mismatch(format!(
                "{attack}: samples of shape {:?} and {:?} in one run",
                shape,
                &size[1..]
            )));
        }
        let targeted = self.targets.is_some();
        if *run.targeted.get_or_insert(targeted) != targeted {
            return Err(GibbonError::Internal(format!(
                "{attack}: targeted and untargeted samples in one run"
            )));
        }
        let d = shape.iter().product::<i64>() as usize;
        let host = |t: &Tensor, kind| t.to_device(tch::Device::Cpu).to_kind(kind);
        let x: Vec<f32> = Vec::try_from(host(&self.x, tch::Kind::Float).flatten(0, -1))?;
        let labels: Vec<i64> = Vec::try_from(host(&self.labels, tch::Kind::Int64))?;
        let targets: Option<Vec<i64>> = match &self.targets {
            Some(t) => Some(Vec::try_from(host(t, tch::Kind::Int64))?),
            None => None,
        };
        Ok(self
            .indices
            .iter()
            .enumerate()
            .map(|(i, &index)| HostSample {
                index,
                label: labels[i],
                target: targets.as_ref().map(|t| t[i]),
                x0: x[i * d..(i + 1) * d].to_vec(),
            })
            .collect())
    }
}

/// Where an attack gets its samples from; lets an attack refill its batch as samples finish.
pub trait SampleSource {
    /// Up to `max` more samples, or `None` when the source is exhausted.
    fn take(&mut self, max: usize) -> Result<Option<Chunk>>;
}

/// One finished sample, as the attack saw it (the verifier decides).
#[derive(Debug)]
pub struct AttackRecord {
    /// Dataset index.
    pub index: usize,
    /// The best example found (the first success, or the lowest-margin iterate), shape `[...]`.
    pub x_adv: Tensor,
    /// Whether the attack believes it succeeded.
    pub claimed_success: bool,
    /// Gradient steps (or queries' iterations) taken before the returned point, counted over
    /// all restarts; `None` if no success.
    pub step: Option<usize>,
    /// The restart in which the returned point was found.
    pub restart: usize,
    /// Forward passes spent on this sample (model queries).
    pub queries: u64,
    /// Minimum-norm attacks: the smallest perturbation norm (threat model's norm) of any
    /// adversarial point found, even one outside the ε-ball (which is then not returned).
    /// `None` for fixed-ε attacks or when no adversarial point was found.
    pub min_norm: Option<f64>,
}

impl AttackRecord {
    /// The record of a fixed-ε gradient attack (no minimum norm): the returned point, whether
    /// it is a claimed success, and the step and restart it was found at.
    pub(crate) fn stepped(
        index: usize,
        x_adv: Tensor,
        success: Option<usize>,
        restart: usize,
        queries: u64,
    ) -> Self {
        AttackRecord {
            index,
            x_adv,
            claimed_success: success.is_some(),
            step: success,
            restart,
            queries,
            min_norm: None,
        }
    }

    /// The record of a score-based search (one run, no minimum norm): a success found at
    /// iteration `step`, or, with `step` `None`, the sample's best unbroken point.
    pub(crate) fn searched(index: usize, x_adv: Tensor, step: Option<usize>, queries: u64) -> Self {
        AttackRecord {
            index,
            x_adv,
            claimed_success: step.is_some(),
            step,
            restart: 0,
            queries,
            min_norm: None,
        }
    }
}

/// Everything an attack needs besides its own parameters.
pub struct AttackContext<'a> {
    /// The white-box model.
    pub model: &'a dyn Classifier,
    /// What is allowed and what is wanted.
    pub threat: &'a ThreatModel,
    /// Seed of the counter-based generator.
    pub seed: u64,
    /// Rows per forward/backward pass.
    pub batch_size: usize,
}

/// An adversarial attack (white-box, score-based or decision-based; see [`Attack::knowledge`]).
pub trait Attack {
    /// The registry name (`pgd`, `fgsm` ...).
    fn name(&self) -> &'static str;
    /// The parameters as JSON, for results.
    fn params(&self) -> serde_json::Value;
    /// What the attack sees of the model: gradients, scores only, or labels only, as its
    /// [`REGISTRY`] entry declares (white-box for an attack that is not registered). An
    /// evaluation refuses an attack that needs more than the threat model's `knowledge`.
    fn knowledge(&self) -> Knowledge {
        registration(self.name()).map_or(Knowledge::WhiteBox, |r| r.info.knowledge)
    }
    /// Attacks every sample of `source`, calling `sink` once per sample.
    fn run(
        &self,
        ctx: &AttackContext<'_>,
        source: &mut dyn SampleSource,
        sink: &mut dyn FnMut(AttackRecord) -> Result<()>,
    ) -> Result<()>;
}

/// Options an attack may take from the command line, on top of the threat model.
#[derive(Debug, Clone, Default)]
pub struct AttackOptions {
    /// Step size (input units); attack default when `None`.
    pub alpha: Option<f64>,
    /// `Some(true)`: every restart starts at a random point; `Some(false)`: every restart starts
    /// at the clean input; `None`: the attack's default (see [`StartPoint`]).
    pub random_start: Option<bool>,
    /// Minimum-norm attacks (DeepFool, C&W, FAB): keep shrinking the perturbation after the
    /// first success, for ε-curves. By default a sample stops as soon as it is broken within ε.
    pub minimize: bool,
    /// Expectation over Transformation (Athalye et al. 2018): gradients averaged over this many
    /// forward/backward passes, for randomized models (APGD). `None` or 1: one pass.
    pub eot: Option<usize>,
    /// Query-based attacks record every batch of queries here (JSON lines).
    pub query_log: Option<crate::model::QueryLog>,
    /// Run every step of every restart even after a sample succeeds, and return the iterate with
    /// the lowest margin (the most confidently adversarial one) instead of the first success.
    /// For transfer attacks (`gibbon transfer`): an example that barely crosses the surrogate's
    /// boundary rarely fools another model. Honoured by the stepped attacks (fgsm, bim, pgd,
    /// mifgsm, difgsm; their `params` then show `"full_budget": true`); other attacks ignore it.
    pub full_budget: bool,
    /// Logit margin κ a success must exceed before an attack stops a sample early (C&W's κ;
    /// 0 = the first misclassified iterate). Honoured by the stepped attacks, APGD and Square
    /// (their `params` show it), so returned points are not barely adversarial.
    pub confidence: f64,
}

/// A [`SampleSource`] over tensors already in memory (handy for tests and small runs).
pub struct TensorSource {
    chunk: Option<Chunk>,
    offset: i64,
}

impl TensorSource {
    /// Serves the rows of `chunk` in order.
    pub fn new(chunk: Chunk) -> Self {
        TensorSource { chunk: Some(chunk), offset: 0 }
    }
}

impl SampleSource for TensorSource {
    fn take(&mut self, max: usize) -> Result<Option<Chunk>> {
        let Some(chunk) = &self.chunk else { return Ok(None) };
        let n = chunk.indices.len() as i64;
        if self.offset >= n || max == 0 {
            return Ok(None);
        }
        let len = (max as i64).min(n - self.offset);
        let out = Chunk {
            indices: chunk.indices[self.offset as usize..(self.offset + len) as usize].to_vec(),
            x: chunk.x.narrow(0, self.offset, len),
            labels: chunk.labels.narrow(0, self.offset, len),
            targets: chunk.targets.as_ref().map(|t| t.narrow(0, self.offset, len)),
        };
        self.offset += len;
        Ok(Some(out))
    }
}
