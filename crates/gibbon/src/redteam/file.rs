//! The threat-model file of `gibbon redteam` as written (TOML), with the position of every
//! value that a later check may have to point at.
use serde::Deserialize;
use toml::Spanned;

/// The whole file. Unknown keys are refused everywhere.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ThreatFile {
    pub name: Option<String>,
    pub model: Spanned<ModelSection>,
    pub data: Spanned<DataSection>,
    pub attacker: Spanned<AttackerSection>,
    pub perturbation: Spanned<Vec<Spanned<PerturbationSection>>>,
    #[serde(default)]
    pub budget: BudgetSection,
    pub audit: Option<AuditSection>,
    pub certify: Option<Spanned<CertifySection>>,
    #[serde(default)]
    pub pass: Vec<Spanned<PassSection>>,
    pub transfer: Option<Spanned<TransferSection>>,
    /// `[[detection]]` (an array of tables: one per detector).
    pub detection: Option<Spanned<Vec<Spanned<DetectionSection>>>>,
}

/// `[transfer]`: surrogate models the attacker owns (white-box), whose examples are sent to
/// the model (`gibbon transfer`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferSection {
    pub surrogates: Spanned<Vec<Spanned<String>>>,
    pub arch: Option<Spanned<String>>,
    pub attack: Option<Spanned<String>>,
    pub steps: Option<usize>,
}

/// `[[detection]]`: one detector guarding the model: a file from `gibbon detect fit`, or a
/// registered detector fitted and calibrated here on a slice of data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DetectionSection {
    pub file: Option<Spanned<String>>,
    pub detector: Option<Spanned<String>>,
    pub calib: Option<Spanned<String>>,
    pub calib_split: Option<Spanned<String>>,
    pub calib_range: Option<Spanned<String>>,
    pub fpr: Option<Spanned<f64>>,
    pub fit_data: Option<Spanned<String>>,
    pub fit_split: Option<Spanned<String>>,
    pub fit_range: Option<Spanned<String>>,
    pub temperature: Option<f64>,
    pub noise: Option<f64>,
    pub feature_layer: Option<String>,
    pub squeezers: Option<String>,
    #[serde(default)]
    pub ood: Vec<Spanned<String>>,
    pub ood_split: Option<Spanned<String>>,
    /// Norm of the attacks on the guarded model (default: linf if a linf ε is declared).
    pub norm: Option<Spanned<String>>,
    pub eps: Option<Spanned<f64>>,
    pub steps: Option<usize>,
    pub restarts: Option<usize>,
    pub lambda: Option<f64>,
    pub kappa: Option<f64>,
    pub square_queries: Option<usize>,
}

/// `[model]`: what is attacked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelSection {
    pub spec: Spanned<String>,
    pub arch: Option<Spanned<String>>,
    pub defense: Option<Spanned<String>>,
}

/// `[data]`: what it is attacked on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DataSection {
    pub spec: Spanned<String>,
    pub split: Option<Spanned<String>>,
    pub n: Option<Spanned<i64>>,
}

/// `[attacker]`: what the attacker knows and, optionally, the attacks to run instead of the
/// strongest plan that knowledge allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttackerSection {
    pub knowledge: Spanned<String>,
    pub attacks: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub seed: u64,
}

/// One ε or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum EpsList {
    One(f64),
    Many(Vec<f64>),
}

/// `[[perturbation]]`: a norm and the ε to test under it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PerturbationSection {
    pub norm: Spanned<String>,
    pub eps: Spanned<EpsList>,
}

/// `[budget]`: per-sample budgets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetSection {
    pub steps: Option<usize>,
    pub restarts: Option<usize>,
    pub queries: Option<usize>,
}

/// `[audit]`: the gradient-masking audit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub n: Option<usize>,
}

fn yes() -> bool {
    true
}

/// `[certify]`: randomized smoothing (Cohen, Rosenfeld & Kolter 2019) of the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertifySection {
    pub sigma: f64,
    pub draws: Option<usize>,
    pub selection_draws: Option<usize>,
    pub alpha: Option<f64>,
    pub n: Option<usize>,
    pub radii: Option<Vec<f64>>,
}

/// `[[pass]]`: one pass criterion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PassSection {
    pub metric: Spanned<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub eps: Option<Spanned<f64>>,
    pub norm: Option<Spanned<String>>,
    pub radius: Option<Spanned<f64>>,
    /// Detection criteria: which `[[detection]]` (its detector name; default the only one).
    pub detector: Option<Spanned<String>>,
    /// `detection_rate`: `adaptive` (default) or `non-adaptive`.
    pub attack: Option<Spanned<String>>,
    /// `ood_tpr` / `ood_auroc`: which OOD set (its spec; default the first).
    pub ood: Option<Spanned<String>>,
}
