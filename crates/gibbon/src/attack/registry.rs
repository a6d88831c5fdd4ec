//! Every attack, once: its name, what it sees of the model, the norms it supports, whether it
//! follows the minimum-norm contract, a one-line summary, and how to build it. The CLI help,
//! the norm and knowledge checks of an evaluation and the contract test (`tests/contract.rs`)
//! all read this table, so a new attack is one file and one line here.
use super::*;
use crate::threat::Norm;

/// What the registry says about an attack.
#[derive(Debug, Clone, Copy)]
pub struct AttackInfo {
    /// Registry name (`pgd`, `apgd-t` ...).
    pub name: &'static str,
    /// What the attack sees of the model.
    pub knowledge: Knowledge,
    /// Norms it supports; any other is refused before the clean pass, by [`check_norm`].
    pub norms: &'static [Norm],
    /// It searches for the smallest adversarial perturbation and reports `min_norm`.
    pub minimum_norm: bool,
    /// One line for the CLI help: what it is and its paper.
    pub summary: &'static str,
}

type Constructor = fn(&ThreatModel, &AttackOptions) -> Result<Box<dyn Attack>>;

/// An attack's registry entry.
pub struct Registration {
    /// What it is.
    pub info: AttackInfo,
    /// Builds it for a threat model and options (the norm is already checked).
    pub build: Constructor,
}

const ALL: &[Norm] = &[Norm::Linf, Norm::L2, Norm::L1];
const LINF_L2: &[Norm] = &[Norm::Linf, Norm::L2];
const L2: &[Norm] = &[Norm::L2];
const LINF: &[Norm] = &[Norm::Linf];

const fn entry(
    name: &'static str,
    knowledge: Knowledge,
    norms: &'static [Norm],
    minimum_norm: bool,
    summary: &'static str,
    build: Constructor,
) -> Registration {
    Registration { info: AttackInfo { name, knowledge, norms, minimum_norm, summary }, build }
}

use Knowledge::{DecisionBased as Labels, ScoreBased as Scores, WhiteBox as Gradients};

/// Every attack by name. One line per attack.
#[rustfmt::skip]
pub const REGISTRY: &[Registration] = &[
    entry("fgsm", Gradients, ALL, false, "fast gradient sign, one step (Goodfellow et al. 2015)", |t, o| Ok(Box::new(Fgsm::build(t, o)?))),
    entry("bim", Gradients, ALL, false, "basic iterative method (Kurakin et al. 2017)", |t, o| Ok(Box::new(Bim::build(t, o)?))),
    entry("pgd", Gradients, ALL, false, "projected gradient descent (Madry et al. 2018)", |t, o| Ok(Box::new(Pgd::build(t, o)?))),
    entry("mifgsm", Gradients, ALL, false, "momentum iterative FGSM (Dong et al. 2018)", |t, o| Ok(Box::new(MiFgsm::build(t, o)?))),
    entry("difgsm", Gradients, ALL, false, "input-diversity FGSM (Xie et al. 2019)", |t, o| Ok(Box::new(DiFgsm::build(t, o)?))),
    entry("apgd-ce", Gradients, ALL, false, "Auto-PGD, cross-entropy (Croce & Hein 2020)", |t, o| Ok(Box::new(Apgd::new(t, o, ApgdLoss::Ce, t.budget.steps_or(APGD_STEPS))?))),
    entry("apgd-dlr", Gradients, ALL, false, "Auto-PGD, DLR loss (Croce & Hein 2020)", |t, o| Ok(Box::new(Apgd::new(t, o, ApgdLoss::Dlr, t.budget.steps_or(APGD_STEPS))?))),
    entry("apgd-t", Gradients, ALL, false, "Auto-PGD, targeted DLR over the top classes (Croce & Hein 2020)", |t, o| Ok(Box::new(Apgd::new(t, o, ApgdLoss::TargetedDlr, t.budget.steps_or(APGD_STEPS))?))),
    entry("fab", Gradients, ALL, true, "fast adaptive boundary (Croce & Hein 2020)", |t, o| Ok(Box::new(Fab::new(t, o, FabVariant::Untargeted, t.budget.steps_or(FAB_STEPS))?))),
    entry("fab-t", Gradients, ALL, true, "fast adaptive boundary, targeted (Croce & Hein 2020)", |t, o| Ok(Box::new(Fab::new(t, o, FabVariant::Targeted, t.budget.steps_or(FAB_STEPS))?))),
    entry("square", Scores, ALL, false, "Square attack, random search, AutoAttack's fixed schedule (Andriushchenko et al. 2020)", |t, o| Ok(Box::new(Square::new(t, o, SquareSchedule::Fixed)?))),
    entry("square-rescaled", Scores, ALL, false, "Square attack, schedule rescaled to the budget, torchattacks' default (Andriushchenko et al. 2020)", |t, o| Ok(Box::new(Square::new(t, o, SquareSchedule::Rescaled)?))),
    entry("simba", Scores, LINF_L2, false, "simple black-box attack, DCT basis (Guo et al. 2019)", |t, o| Ok(Box::new(Simba::new(t, o, SimbaBasis::Dct)?))),
    entry("simba-pixel", Scores, LINF_L2, false, "simple black-box attack, pixel basis (Guo et al. 2019)", |t, o| Ok(Box::new(Simba::new(t, o, SimbaBasis::Pixel)?))),
    entry("nes", Scores, LINF_L2, false, "natural evolution strategies (Ilyas et al. 2018)", |t, o| Ok(Box::new(Nes::new(t, o)?))),
    entry("deepfool", Gradients, LINF_L2, true, "DeepFool (Moosavi-Dezfooli et al. 2016)", |t, o| Ok(Box::new(DeepFool::new(t, o)?))),
    entry("cw", Gradients, L2, true, "Carlini & Wagner L2 (2017)", |t, o| Ok(Box::new(Cw::new(t, o)?))),
    entry("hsj", Labels, LINF_L2, true, "HopSkipJump (Chen, Jordan & Wainwright 2020)", |t, o| Ok(Box::new(Hsj::new(t, o)?))),
    entry("boundary", Labels, L2, true, "Boundary attack (Brendel, Rauber & Bethge 2018)", |t, o| Ok(Box::new(Boundary::new(t, o)?))),
    entry("rays", Labels, LINF, true, "RayS, ray searching (Chen & Gu 2020)", |t, o| Ok(Box::new(Rays::new(t, o)?))),
];

/// APGD's default iterations (AutoAttack's 100) when the user did not set `--steps`.
pub const APGD_STEPS: usize = 100;

/// The registry entry of `name` (case-insensitive).
pub fn registration(name: &str) -> Result<&'static Registration> {
    let key = name.to_ascii_lowercase();
    REGISTRY.iter().find(|r| r.info.name == key).ok_or_else(|| {
        GibbonError::invalid(
            "attack",
            format!(
                "'{name}' is not one of {}",
                REGISTRY.iter().map(|r| r.info.name).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// Refuses `norm` for the registered attack `name` unless it declares it: the one message for
/// every attack.
pub fn check_norm(name: &str, norm: Norm) -> Result<()> {
    let info = &registration(name)?.info;
    if info.norms.contains(&norm) {
        return Ok(());
    }
    let supported: Vec<&str> = info.norms.iter().map(|n| n.as_str()).collect();
    let alternatives: Vec<&str> = REGISTRY
        .iter()
        .filter(|r| r.info.knowledge == info.knowledge && r.info.norms.contains(&norm))
        .map(|r| r.info.name)
        .collect();
    let hint = if alternatives.is_empty() {
        String::new()
    } else {
        format!(" ({} attacks for {norm}: {})", info.knowledge.describe(), alternatives.join(", "))
    };
    Err(GibbonError::invalid(
        "norm",
        format!("{} supports {}, not {norm}{hint}", info.name, supported.join(" and ")),
    ))
}

/// Builds the attack `name` for `threat`, after checking that it supports the threat model's
/// norm.
pub fn build_attack(
    name: &str,
    threat: &ThreatModel,
    options: &AttackOptions,
) -> Result<Box<dyn Attack>> {
    let entry = registration(name)?;
    check_norm(entry.info.name, threat.norm)?;
    (entry.build)(threat, options)
}
