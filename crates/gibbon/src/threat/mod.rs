//! Threat models: what the attacker may change (norm, ε, input box), what it wants (goal) and
//! what it sees (knowledge), with exact projections onto the allowed set.
//!
//! A [`ThreatModel`] is read from TOML or built from CLI flags, validated once, and embedded in
//! every result so a number is never separated from the threat it was measured under.
pub mod goal;
mod l1;
mod l2;
mod linf;

pub use l1::project_l1_ball_box;
pub use l2::project_l2_ball_box;
pub use linf::project_linf_ball_box;

use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;
use tch::{Kind, Tensor};

/// Tolerance on the perturbation norm used by the verifier (absolute, in input units).
pub const NORM_TOLERANCE: f64 = 1e-6;

/// How far rounding the projected point back to `kind` can move its norm: the projection aims
/// this much inside the ball so the stored (e.g. float32) example still passes the verifier.
pub(crate) fn rounding_margin(kind: Kind, x: &Tensor, bounds: InputBox, norm: Norm) -> f64 {
    let unit = match kind {
        Kind::Double => return 0.0,
        Kind::Float => f32::EPSILON as f64,
        _ => 1e-3,
    };
    let per_coordinate = unit * bounds.lo.abs().max(bounds.hi.abs()).max(1.0);
    let n = (x.numel() / x.size().first().copied().unwrap_or(1).max(1) as usize) as f64;
    match norm {
        Norm::Linf => per_coordinate,
        Norm::L2 => per_coordinate * n.sqrt(),
        Norm::L1 => per_coordinate * n,
    }
}

/// The norm that measures a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Largest absolute change of any input value.
    Linf,
    /// Euclidean length of the perturbation.
    L2,
    /// Sum of absolute changes.
    L1,
}

impl Norm {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
            Norm::L1 => "l1",
        }
    }

    /// Per-sample norms of a batch of perturbations `[B, ...]`, computed in float64.
    pub fn per_sample(self, delta: &Tensor) -> Tensor {
        let flat = delta.to_kind(Kind::Double).flatten(1, -1);
        match self {
            Norm::Linf => flat.abs().amax([1i64].as_slice(), false),
            Norm::L2 => {
                flat.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double).sqrt()
            }
            Norm::L1 => flat.abs().sum_dim_intlist([1i64].as_slice(), false, Kind::Double),
        }
    }
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Norm {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linf" | "l_inf" | "inf" => Ok(Norm::Linf),
            "l2" => Ok(Norm::L2),
            "l1" => Ok(Norm::L1),
            _ => Err(GibbonError::invalid("norm", format!("'{s}' is not one of linf, l2, l1"))),
        }
    }
}

/// The set of valid inputs, one interval for every input value (default [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputBox {
    /// Smallest valid input value.
    pub lo: f64,
    /// Largest valid input value.
    pub hi: f64,
}

impl Default for InputBox {
    fn default() -> Self {
        InputBox { lo: 0.0, hi: 1.0 }
    }
}

/// How a targeted attack picks its target class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "class")]
pub enum TargetSelection {
    /// The same class for every sample (samples of that class are skipped).
    Fixed(i64),
    /// `(label + 1) mod classes`, a deterministic choice used by many papers.
    NextClass,
    /// The class with the highest logit other than the true label.
    MostLikely,
    /// The class with the lowest logit.
    LeastLikely,
}

/// What the attacker wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "target")]
pub enum Goal {
    /// Any wrong class.
    Untargeted,
    /// One chosen class.
    Targeted(TargetSelection),
}

/// What the attacker sees of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knowledge {
    /// Weights and gradients.
    WhiteBox,
    /// Output scores only.
    ScoreBased,
    /// Output labels only.
    DecisionBased,
}

impl FromStr for Knowledge {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "white-box" => Ok(Knowledge::WhiteBox),
            "score-based" | "scores" => Ok(Knowledge::ScoreBased),
            "decision-based" | "labels" => Ok(Knowledge::DecisionBased),
            other => Err(GibbonError::invalid(
                "knowledge",
                format!("'{other}' is not white-box, score-based or decision-based"),
            )),
        }
    }
}

impl Knowledge {
    /// Whether an attacker with this knowledge may run an attack that needs `needed`: white-box
    /// grants everything, score-based grants scores and labels, decision-based labels only.
    pub fn grants(self, needed: Knowledge) -> bool {
        let rank = |k: Knowledge| match k {
            Knowledge::DecisionBased => 0,
            Knowledge::ScoreBased => 1,
            Knowledge::WhiteBox => 2,
        };
        rank(self) >= rank(needed)
    }

    /// A short description for messages ("white-box (gradient)", "score", "label").
    pub fn describe(self) -> &'static str {
        match self {
            Knowledge::WhiteBox => "white-box (gradient)",
            Knowledge::ScoreBased => "score-only",
            Knowledge::DecisionBased => "label-only",
        }
    }
}

/// The attacker's compute budget: what the user set (a flag or the threat file), every field
/// `None` where the user left it to the attack, which then uses its own default (PGD: 40 steps
/// and 2 restarts; APGD and FAB: 100 steps and 1 restart; C&W, DeepFool, MI-FGSM and the query
/// attacks their own). The one place an attack reads its budget from; the values it actually
/// used are in its `params` in the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Iterations per restart of an iterative attack.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Number of runs per sample (1 = a single run).
    #[serde(default)]
    pub restarts: Option<usize>,
    /// Model queries per sample for query-based attacks.
    #[serde(default)]
    pub queries: Option<usize>,
}

impl Budget {
    /// The steps the user set, else the attack's `default`.
    pub fn steps_or(&self, default: usize) -> usize {
        self.steps.unwrap_or(default)
    }

    /// The restarts the user set, else the attack's `default`.
    pub fn restarts_or(&self, default: usize) -> usize {
        self.restarts.unwrap_or(default)
    }
}

/// Everything that defines what counts as a successful attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatModel {
    /// The norm that measures perturbations.
    pub norm: Norm,
    /// The radius of the allowed ball.
    pub eps: f64,
    /// The valid input range.
    #[serde(default, rename = "box")]
    pub bounds: InputBox,
    /// What the attacker wants.
    #[serde(default = "default_goal")]
    pub goal: Goal,
    /// What the attacker sees.
    #[serde(default = "default_knowledge")]
    pub knowledge: Knowledge,
    /// Steps, restarts, queries.
    #[serde(default)]
    pub budget: Budget,
    /// The input-defense chain the attacked model is deployed behind (e.g.
    /// `jpeg:quality=75,bits:depth=3`, see `defense::input`), recorded so results say what was
    /// attacked; `None` for an undefended model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defense: Option<String>,
}

fn default_goal() -> Goal {
    Goal::Untargeted
}

fn default_knowledge() -> Knowledge {
    Knowledge::WhiteBox
}

impl ThreatModel {
    /// The per-sample query budget of a query attack: `budget.queries`, or the attack's
    /// `default` when the threat model sets none; 0 is refused.
    pub fn query_budget(&self, default: usize) -> Result<usize> {
        match self.budget.queries.unwrap_or(default) {
            0 => Err(GibbonError::invalid("queries", "must be at least 1")),
            queries => Ok(queries),
        }
    }

    /// An untargeted white-box threat model with the default budget.
    pub fn new(norm: Norm, eps: f64) -> Result<Self> {
        let t = ThreatModel {
            norm,
            eps,
            bounds: InputBox::default(),
            goal: Goal::Untargeted,
            knowledge: Knowledge::WhiteBox,
            budget: Budget::default(),
            defense: None,
        };
        t.validate()?;
        Ok(t)
    }

    /// Reads a threat model from a TOML file, e.g.
    /// `norm = "linf"`, `eps = 0.3`, `[budget] steps = 40, restarts = 1`.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GibbonError::io(path, e))?;
        let t: ThreatModel =
            toml::from_str(&text).map_err(|e| GibbonError::format(path, e.to_string()))?;
        t.validate().map_err(|e| GibbonError::format(path, e.to_string()))?;
        Ok(t)
    }

    /// Checks every field: ε finite and ≥ 0, a non-empty box, a budget of at least one step.
    pub fn validate(&self) -> Result<()> {
        if !self.eps.is_finite() || self.eps < 0.0 {
            return Err(GibbonError::invalid(
                "eps",
                format!("{} must be finite and >= 0", self.eps),
            ));
        }
        if !(self.bounds.lo.is_finite() && self.bounds.hi.is_finite())
            || self.bounds.lo >= self.bounds.hi
        {
            return Err(GibbonError::invalid(
                "box",
                format!(
                    "[{}, {}] is not a finite, non-empty interval",
                    self.bounds.lo, self.bounds.hi
                ),
            ));
        }
        if self.budget.steps == Some(0) {
            return Err(GibbonError::invalid("steps", "must be at least 1"));
        }
        if self.budget.restarts == Some(0) {
            return Err(GibbonError::invalid("restarts", "must be at least 1"));
        }
        if self.budget.queries == Some(0) {
            return Err(GibbonError::invalid("queries", "must be at least 1"));
        }
        Ok(())
    }

    /// The nearest point to `candidate` inside the ε-ball around `x` intersected with the box.
    /// Both tensors are `[B, ...]`; the projection is per sample and exact.
    pub fn project(&self, x: &Tensor, candidate: &Tensor) -> Tensor {
        match self.norm {
            Norm::Linf => project_linf_ball_box(x, candidate, self.eps, self.bounds),
            Norm::L2 => project_l2_ball_box(x, candidate, self.eps, self.bounds),
            Norm::L1 => project_l1_ball_box(x, candidate, self.eps, self.bounds),
        }
    }

    /// Per-sample norm of `x_adv - x` (float64 tensor `[B]`).
    pub fn distance(&self, x: &Tensor, x_adv: &Tensor) -> Tensor {
        self.norm.per_sample(&(x_adv.to_kind(Kind::Double) - x.to_kind(Kind::Double)))
    }
}
