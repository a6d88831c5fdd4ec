//! The checked plan of a threat-model file ([`RedteamPlan::parse`]) and its pass criteria.
use super::criteria::criterion;
use super::extra::{detection_plans, transfer_plan, DetectionPlan, TransferPlan};
use super::file::{EpsList, ThreatFile};
use crate::attack::registration;
use crate::certify::SmoothingConfig;
use crate::data::{DataSpec, Split};
use crate::defense::input::DefenseChain;
use crate::error::{GibbonError, Result};
use crate::eval::Suite;
use crate::model::{Arch, ModelSpec};
use crate::threat::{Knowledge, Norm};
use std::ops::Range;
use std::str::FromStr;
use toml::Spanned;

/// Score-based attacks, strongest first (the plan keeps those that support the norm).
const SCORE_PLAN: &[&str] = &["square", "simba", "nes"];
/// Decision-based attacks, strongest first.
const DECISION_PLAN: &[&str] = &["hsj", "rays"];

/// One evaluation of the plan: a norm and an ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// The norm.
    pub norm: Norm,
    /// The radius.
    pub eps: f64,
}

/// What a pass criterion measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Robust accuracy of one run.
    RobustAccuracy(Run),
    /// Clean accuracy.
    CleanAccuracy,
    /// The number of audit checks that fired.
    AuditFired,
    /// Certified accuracy at an L2 radius (`[certify]`).
    CertifiedAccuracy(f64),
    /// The highest success rate of a surrogate's examples on the model at one run (`[transfer]`).
    TransferSuccessRate(Run),
    /// Share of samples a guarded model keeps (classified correctly or flagged) under the
    /// adaptive attack; the index of the `[[detection]]`.
    RobustAccuracyUnderDetection(usize),
    /// Share of an attack's misclassified examples the detector flags (TPR at the calibrated
    /// threshold): detection index, adaptive (else the non-adaptive attack).
    DetectionRate(usize, bool),
    /// Share of the clean evaluated samples the detector flags (its FPR at the threshold).
    CleanFlagged(usize),
    /// TPR at the threshold on an OOD set: detection index, OOD set index.
    OodTpr(usize, usize),
    /// AUROC on an OOD set: detection index, OOD set index.
    OodAuroc(usize, usize),
}

/// `[certify]`: randomized smoothing of the model on the first samples.
#[derive(Debug, Clone, PartialEq)]
pub struct CertifyPlan {
    /// Noise, draws, α (the seed is the attacker's).
    pub config: SmoothingConfig,
    /// Samples certified (the first `n`, at most the run's).
    pub n: usize,
    /// Radii at which certified accuracy is reported.
    pub radii: Vec<f64>,
}

/// Radii reported when `[certify]` names none.
const DEFAULT_RADII: &[f64] = &[0.0, 0.25, 0.5, 0.75, 1.0];

/// One pass criterion: `min <= metric <= max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// As people read it, e.g. `robust_accuracy >= 0.8 at linf eps 0.3`.
    pub text: String,
    /// What it measures.
    pub metric: Metric,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
}

impl Criterion {
    /// Whether `value` satisfies the criterion.
    pub fn holds(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }
}

/// A threat-model file, checked: everything `gibbon redteam` needs, nothing left to fail on
/// the user's account once it runs.
#[derive(Debug, Clone)]
pub struct RedteamPlan {
    /// The file's path as given.
    pub file: String,
    /// The file's text, recorded in the result.
    pub text: String,
    /// `name`, or the file's stem.
    pub name: String,
    /// The model.
    pub model: ModelSpec,
    /// Its architecture (safetensors weights).
    pub arch: Option<Arch>,
    /// Input-defense chain in front of it.
    pub defense: Option<String>,
    /// The data.
    pub data: DataSpec,
    /// Its split.
    pub split: Split,
    /// Samples (the first `n`; all when `None`).
    pub n: Option<usize>,
    /// What the attacker knows.
    pub knowledge: Knowledge,
    /// The attacks, in order (from the suite when `suite` is set).
    pub attacks: Vec<String>,
    /// AutoAttack's standard suite (white-box without `attacks`).
    pub suite: Option<Suite>,
    /// Seed of every random draw.
    pub seed: u64,
    /// `[budget]` steps.
    pub steps: Option<usize>,
    /// `[budget]` restarts.
    pub restarts: Option<usize>,
    /// `[budget]` queries per sample.
    pub queries: Option<usize>,
    /// Every (norm, ε) to evaluate.
    pub runs: Vec<Run>,
    /// Samples the audit uses, when it runs.
    pub audit_n: Option<usize>,
    /// Certification, when configured.
    pub certify: Option<CertifyPlan>,
    /// Transfer from surrogates, when configured.
    pub transfer: Option<TransferPlan>,
    /// The detectors, when configured.
    pub detection: Vec<DetectionPlan>,
    /// The pass criteria.
    pub criteria: Vec<Criterion>,
}

/// What a plan computes, for checking its criteria.
pub(super) struct Computed<'a> {
    pub runs: &'a [Run],
    pub audit: bool,
    pub certify: Option<&'a CertifyPlan>,
    pub transfer: bool,
    pub detection: &'a [DetectionPlan],
}

/// Where an error points: the file and a byte span.
pub(super) struct At<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl At<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    pub fn error(&self, span: Range<usize>, message: impl std::fmt::Display) -> GibbonError {
        GibbonError::invalid(
            format!("threat file {} line {}", self.file, self.line(span)),
            message.to_string(),
        )
    }

    /// `value.parse()`, an error naming `key` and its line.
    pub fn parse<T: FromStr<Err = GibbonError>>(
        &self,
        key: &str,
        value: &Spanned<String>,
    ) -> Result<T> {
        value.get_ref().parse().map_err(|e: GibbonError| {
            let message = match e {
                GibbonError::InvalidArgument { message, .. } => message,
                other => other.to_string(),
            };
            self.error(value.span(), format!("{key}: {message}"))
        })
    }
}

/// Levenshtein distance between two keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The words between backticks in a serde message (`unknown field `x`, expected `a`, `b``).
fn quoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// A TOML or schema error as one line naming the line and the key, with the closest known
/// key for an unknown one.
fn syntax_error(at: &At, e: &toml::de::Error) -> GibbonError {
    let message = e.message().trim().to_string();
    let span = e.span().unwrap_or(0..0);
    if let Some(rest) = message.strip_prefix("unknown field") {
        let names = quoted(rest);
        if let Some((unknown, known)) = names.split_first() {
            let best = known.iter().min_by_key(|k| edit_distance(unknown, k));
            let hint = match best {
                Some(k) if edit_distance(unknown, k) <= unknown.len().div_ceil(2) => {
                    format!("; did you mean `{k}`?")
                }
                _ => String::new(),
            };
            return at.error(
                span,
                format!("unknown key `{unknown}`{hint} (known keys here: {})", known.join(", ")),
            );
        }
    }
    if let Some(rest) = message.strip_prefix("missing field") {
        let key = quoted(rest).first().copied().unwrap_or("?").to_string();
        return at.error(span, format!("missing key `{key}` (required)"));
    }
    if message.starts_with("invalid type: map, expected a sequence") {
        return at.error(
            span,
            format!("{message}: a table that may repeat is written with double brackets, e.g. [[detection]], [[perturbation]], [[pass]]"),
        );
    }
    at.error(span, message)
}

impl RedteamPlan {
    /// Reads and checks the threat-model file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GibbonError::io(path, e))?;
        let stem: String =
            path.file_stem().map_or("redteam".into(), |s| s.to_string_lossy().into());
        Self::parse(&path.display().to_string(), &text, &stem)
    }

    /// Checks the text of a threat-model file (`file` names it in errors; `stem` is the
    /// default name).
    pub fn parse(file: &str, text: &str, stem: &str) -> Result<Self> {
        let at = At { file, text };
        let raw: ThreatFile = toml::from_str(text).map_err(|e| syntax_error(&at, &e))?;
        let model = raw.model.get_ref();
        let data = raw.data.get_ref();
        let attacker = raw.attacker.get_ref();
        let knowledge: Knowledge = at.parse("attacker.knowledge", &attacker.knowledge)?;
        let n = match &data.n {
            Some(n) if *n.get_ref() < 1 => {
                return Err(at.error(n.span(), "data.n must be at least 1"))
            }
            Some(n) => Some(*n.get_ref() as usize),
            None => None,
        };
        let runs = runs(&at, &raw)?;
        let (attacks, suite) = plan_attacks(&at, knowledge, attacker.attacks.as_ref(), &runs)?;
        let audit_n = match &raw.audit {
            Some(a) if a.enabled && knowledge == Knowledge::WhiteBox => {
                Some(a.n.unwrap_or(50).max(1))
            }
            Some(a) if a.enabled => {
                return Err(at.error(
                    raw.attacker.span(),
                    "[audit] needs gradients: the audit's checks are white-box attacks, \
                     so set attacker.knowledge = \"white-box\" or audit.enabled = false",
                ))
            }
            _ => None,
        };
        let certify = certify_plan(&at, &raw, attacker.seed)?;
        let transfer = transfer_plan(&at, &raw, &runs)?;
        let data_spec: DataSpec = at.parse("data.spec", &data.spec)?;
        let split = data.split.as_ref().map_or(Ok(Split::Test), |s| at.parse("data.split", s))?;
        let detection = detection_plans(&at, &raw, &data_spec, split, &runs)?;
        let computed = Computed {
            runs: &runs,
            audit: audit_n.is_some(),
            certify: certify.as_ref(),
            transfer: transfer.is_some(),
            detection: &detection,
        };
        let criteria =
            raw.pass.iter().map(|p| criterion(&at, p, &computed)).collect::<Result<Vec<_>>>()?;
        Ok(RedteamPlan {
            file: file.to_string(),
            text: text.to_string(),
            name: raw.name.clone().unwrap_or_else(|| stem.to_string()),
            model: at.parse("model.spec", &model.spec)?,
            arch: model.arch.as_ref().map(|a| at.parse("model.arch", a)).transpose()?,
            defense: match &model.defense {
                Some(d) => Some(at.parse::<DefenseChain>("model.defense", d)?.to_string()),
                None => None,
            },
            data: data_spec,
            split,
            n,
            knowledge,
            attacks,
            suite,
            seed: attacker.seed,
            steps: raw.budget.steps,
            restarts: raw.budget.restarts,
            queries: raw.budget.queries,
            runs,
            audit_n,
            certify,
            transfer,
            detection,
            criteria,
        })
    }
}

impl RedteamPlan {
    /// The file as parsed, without its `[[pass]]` criteria: what the stages compute depends on
    /// this text only (comments, layout and criteria do not change it).
    pub fn computed_text(&self) -> String {
        let mut parsed: toml::Table = self.text.parse().unwrap_or_default();
        parsed.remove("pass");
        toml::to_string(&parsed).unwrap_or_else(|_| self.text.clone())
    }

    /// Replaces the plan by `names` (e.g. a quicker plan from the command line), checked like
    /// `attacker.attacks`: each must exist, be allowed by the knowledge and support every norm.
    pub fn override_attacks(&mut self, names: &[String]) -> Result<()> {
        let text = names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
        let snippet = format!("[{text}]");
        let at = At { file: "--attacks", text: &snippet };
        let list: Vec<Spanned<String>> =
            names.iter().map(|n| Spanned::new(0..0, n.clone())).collect();
        let listed = Spanned::new(0..0, list);
        let (attacks, suite) = plan_attacks(&at, self.knowledge, Some(&listed), &self.runs)?;
        self.attacks = attacks;
        self.suite = suite;
        Ok(())
    }
}

/// Every (norm, ε) of the `[[perturbation]]` tables; ε must be finite and ≥ 0.
fn runs(at: &At, raw: &ThreatFile) -> Result<Vec<Run>> {
    if raw.perturbation.get_ref().is_empty() {
        return Err(
            at.error(raw.perturbation.span(), "perturbation: at least one [[perturbation]]")
        );
    }
    let mut runs = Vec::new();
    for p in raw.perturbation.get_ref() {
        let p = p.get_ref();
        let norm: Norm = at.parse("perturbation.norm", &p.norm)?;
        let list = match p.eps.get_ref() {
            EpsList::One(e) => vec![*e],
            EpsList::Many(list) => list.clone(),
        };
        if list.is_empty() {
            return Err(at.error(p.eps.span(), "perturbation.eps: give at least one ε"));
        }
        for eps in list {
            if !eps.is_finite() || eps < 0.0 {
                return Err(at.error(
                    p.eps.span(),
                    format!("perturbation.eps: ε = {eps} must be finite and >= 0"),
                ));
            }
            runs.push(Run { norm, eps });
        }
    }
    Ok(runs)
}

/// The attacks for `knowledge` (or the listed ones, checked against it and every norm).
fn plan_attacks(
    at: &At,
    knowledge: Knowledge,
    listed: Option<&Spanned<Vec<Spanned<String>>>>,
    runs: &[Run],
) -> Result<(Vec<String>, Option<Suite>)> {
    if let Some(list) = listed {
        if list.get_ref().is_empty() {
            return Err(at.error(list.span(), "attacker.attacks: list at least one attack"));
        }
        for name in list.get_ref() {
            let info = &registration(name.get_ref())
                .map_err(|e| at.error(name.span(), format!("attacker.attacks: {e}")))?
                .info;
            if !knowledge.grants(info.knowledge) {
                return Err(at.error(
                    name.span(),
                    format!(
                        "attacker.attacks: `{}` needs {} access, more than knowledge = {:?} grants",
                        info.name,
                        info.knowledge.describe(),
                        knowledge
                    ),
                ));
            }
            if let Some(r) = runs.iter().find(|r| !info.norms.contains(&r.norm)) {
                return Err(at.error(
                    name.span(),
                    format!(
                        "attacker.attacks: `{}` does not support the {} norm",
                        info.name, r.norm
                    ),
                ));
            }
        }
        return Ok((list.get_ref().iter().map(|s| s.get_ref().clone()).collect(), None));
    }
    if knowledge == Knowledge::WhiteBox {
        let norm = runs[0].norm;
        return Ok((Suite::Standard.attacks(norm), Some(Suite::Standard)));
    }
    let preferred = if knowledge == Knowledge::ScoreBased { SCORE_PLAN } else { DECISION_PLAN };
    let usable: Vec<String> = preferred
        .iter()
        .filter(|a| {
            let info = &registration(a).map(|r| &r.info);
            info.as_ref().is_ok_and(|i| runs.iter().all(|r| i.norms.contains(&r.norm)))
        })
        .map(|a| a.to_string())
        .collect();
    if usable.is_empty() {
        return Err(at.error(
            0..0,
            format!("no {knowledge:?} attack supports every norm of [[perturbation]]"),
        ));
    }
    Ok((usable, None))
}

/// The `[certify]` table, checked.
fn certify_plan(at: &At, raw: &ThreatFile, seed: u64) -> Result<Option<CertifyPlan>> {
    let Some(section) = &raw.certify else { return Ok(None) };
    let c = section.get_ref();
    let mut config = SmoothingConfig::new(c.sigma);
    config.n = c.draws.unwrap_or(config.n);
    config.n0 = c.selection_draws.unwrap_or(config.n0);
    config.alpha = c.alpha.unwrap_or(config.alpha);
    config.seed = seed;
    config.validate().map_err(|e| at.error(section.span(), format!("certify: {e}")))?;
    let radii = c.radii.clone().unwrap_or_else(|| DEFAULT_RADII.to_vec());
    if let Some(r) = radii.iter().find(|r| !r.is_finite() || **r < 0.0) {
        return Err(
            at.error(section.span(), format!("certify.radii: {r} is not a finite radius >= 0"))
        );
    }
    let n = c.n.unwrap_or(20);
    if n == 0 {
        return Err(at.error(section.span(), "certify.n must be at least 1"));
    }
    Ok(Some(CertifyPlan { config, n, radii }))
}
