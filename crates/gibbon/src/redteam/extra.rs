//! The optional stages of a threat file beyond the attacks: `[transfer]` (examples crafted on
//! surrogates the attacker owns, sent to the model: `gibbon transfer`) and `[[detection]]`
//! (detectors guarding the model, measured and attacked adaptively: `gibbon detect eval` and
//! `gibbon detect attack`), checked before anything runs.
use super::file::{DetectionSection, ThreatFile};
use super::plan::{At, Run};
use crate::attack::registration;
use crate::data::{DataSpec, Split};
use crate::detect::calibrate::{min_calibration_size, DEFAULT_FPR};
use crate::detect::file::DetectorFile;
use crate::detect::{entry, DetectorOptions};
use crate::error::Result;
use crate::eval::DEFAULT_TRANSFER_ATTACK;
use crate::model::{Arch, ModelSpec};
use crate::threat::Norm;
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;

/// `[transfer]`: transfer attacks from surrogate models at every (norm, ε) of the plan.
#[derive(Debug, Clone)]
pub struct TransferPlan {
    /// The surrogates (white-box to the attacker).
    pub surrogates: Vec<ModelSpec>,
    /// Their architecture (safetensors weights).
    pub arch: Option<Arch>,
    /// The attack run on each surrogate (default MI-FGSM, Dong et al. 2018).
    pub attack: String,
    /// Its steps (the attack's default when `None`).
    pub steps: Option<usize>,
}

/// Where a detector comes from.
#[derive(Debug, Clone)]
pub enum DetectorSource {
    /// A file written by `gibbon detect fit`.
    File(PathBuf),
    /// A registered detector fitted and calibrated by the run.
    Fit(Box<DetectorFit>),
}

/// A detector to fit and calibrate (as `gibbon detect fit` does).
#[derive(Debug, Clone)]
pub struct DetectorFit {
    /// Registry name.
    pub detector: String,
    /// Its options.
    pub options: DetectorOptions,
    /// Clean data the threshold is calibrated on: spec, split, samples.
    pub calib: (DataSpec, Split, Range<usize>),
    /// Labelled data the detector is fitted on (Mahalanobis).
    pub fit: Option<(DataSpec, Split, Range<usize>)>,
    /// Target false-positive rate.
    pub fpr: f64,
}

/// `[[detection]]`: one detector, its evaluation and the attacks on the guarded model.
#[derive(Debug, Clone)]
pub struct DetectionPlan {
    /// The name criteria use (`detector = "..."`): the detector's registry name.
    pub label: String,
    /// Where it comes from.
    pub source: DetectorSource,
    /// OOD sets it is measured on (with the evaluated samples as clean negatives).
    pub ood: Vec<DataSpec>,
    /// Their split.
    pub ood_split: Split,
    /// Norm of the attacks on the guarded model.
    pub norm: Norm,
    /// Their radius.
    pub eps: f64,
    /// PGD steps per restart.
    pub steps: usize,
    /// Restarts.
    pub restarts: usize,
    /// Weight of the detector term of the adaptive objective.
    pub lambda: f64,
    /// Logit margin of the adaptive objective.
    pub kappa: f64,
    /// Gradient-free stage queries (default: 1,000 for detectors without a useful gradient).
    pub square_queries: Option<usize>,
}

/// The `[transfer]` table, checked: the attack exists and supports every norm.
pub(super) fn transfer_plan(
    at: &At,
    raw: &ThreatFile,
    runs: &[Run],
) -> Result<Option<TransferPlan>> {
    let Some(section) = &raw.transfer else { return Ok(None) };
    let t = section.get_ref();
    if t.surrogates.get_ref().is_empty() {
        return Err(at.error(t.surrogates.span(), "transfer.surrogates: list at least one model"));
    }
    let surrogates = t
        .surrogates
        .get_ref()
        .iter()
        .map(|s| at.parse::<ModelSpec>("transfer.surrogates", s))
        .collect::<Result<Vec<_>>>()?;
    let attack = match &t.attack {
        Some(a) => {
            let info = &registration(a.get_ref())
                .map_err(|e| at.error(a.span(), format!("transfer.attack: {e}")))?
                .info;
            if let Some(r) = runs.iter().find(|r| !info.norms.contains(&r.norm)) {
                return Err(at.error(
                    a.span(),
                    format!(
                        "transfer.attack: `{}` does not support the {} norm",
                        info.name, r.norm
                    ),
                ));
            }
            a.get_ref().clone()
        }
        None => DEFAULT_TRANSFER_ATTACK.to_string(),
    };
    if t.steps == Some(0) {
        return Err(at.error(section.span(), "transfer.steps must be at least 1"));
    }
    Ok(Some(TransferPlan {
        surrogates,
        arch: t.arch.as_ref().map(|a| at.parse("transfer.arch", a)).transpose()?,
        attack,
        steps: t.steps,
    }))
}

/// `START..END` with START < END.
fn range(at: &At, key: &str, value: &Spanned<String>) -> Result<Range<usize>> {
    let bad = || {
        at.error(
            value.span(),
            format!(
                "{key}: expected START..END with START < END, e.g. 2000..2300, got '{}'",
                value.get_ref()
            ),
        )
    };
    let (a, b) = value.get_ref().split_once("..").ok_or_else(bad)?;
    let start: usize = a.trim().parse().map_err(|_| bad())?;
    let end: usize = b.trim().parse().map_err(|_| bad())?;
    if start >= end {
        return Err(bad());
    }
    Ok(start..end)
}

/// Every `[[detection]]` table, checked (detector files are read now, so a missing or broken
/// one is an error naming its line).
pub(super) fn detection_plans(
    at: &At,
    raw: &ThreatFile,
    data: &DataSpec,
    split: Split,
    runs: &[Run],
) -> Result<Vec<DetectionPlan>> {
    let Some(list) = &raw.detection else { return Ok(Vec::new()) };
    let mut plans: Vec<DetectionPlan> = Vec::new();
    for section in list.get_ref() {
        let mut plan = detection_plan(at, section, data, split, runs)?;
        let same = plans.iter().filter(|p| p.label.split('#').next() == Some(&plan.label)).count();
        if same > 0 {
            plan.label = format!("{}#{}", plan.label, same + 1);
        }
        plans.push(plan);
    }
    Ok(plans)
}

fn detection_plan(
    at: &At,
    section: &Spanned<DetectionSection>,
    data: &DataSpec,
    split: Split,
    runs: &[Run],
) -> Result<DetectionPlan> {
    let d = section.get_ref();
    let span = section.span();
    let (label, source) =
        match (&d.file, &d.detector) {
            (Some(_), Some(name)) => {
                return Err(at.error(name.span(), "detection: give `file` or `detector`, not both"))
            }
            (None, None) => return Err(at.error(
                span,
                "detection: give `file` (from gibbon detect fit) or `detector` with `calib_range`",
            )),
            (Some(file), None) => {
                let path = PathBuf::from(file.get_ref());
                let loaded = DetectorFile::load(&path)
                    .map_err(|e| at.error(file.span(), format!("detection.file: {e}")))?;
                (loaded.kind, DetectorSource::File(path))
            }
            (None, Some(name)) => {
                let fit = detector_fit(at, d, name, data, split)?;
                (fit.detector.clone(), DetectorSource::Fit(Box::new(fit)))
            }
        };
    let norm = match &d.norm {
        Some(n) => at.parse::<Norm>("detection.norm", n)?,
        None if runs.iter().any(|r| r.norm == Norm::Linf) => Norm::Linf,
        None => runs.first().map_or(Norm::Linf, |r| r.norm),
    };
    let eps = match &d.eps {
        Some(e) if !e.get_ref().is_finite() || *e.get_ref() < 0.0 => {
            return Err(at.error(
                e.span(),
                format!("detection.eps: ε = {} must be finite and >= 0", e.get_ref()),
            ))
        }
        Some(e) => *e.get_ref(),
        None => runs.iter().filter(|r| r.norm == norm).map(|r| r.eps).reduce(f64::max).ok_or_else(
            || {
                at.error(
                    span.clone(),
                    format!("detection: give `eps` (no {norm} [[perturbation]] to take it from)"),
                )
            },
        )?,
    };
    if d.steps == Some(0) || d.restarts == Some(0) {
        return Err(at.error(span, "detection.steps and detection.restarts must be at least 1"));
    }
    Ok(DetectionPlan {
        label,
        source,
        ood: d.ood.iter().map(|s| at.parse("detection.ood", s)).collect::<Result<Vec<_>>>()?,
        ood_split: d
            .ood_split
            .as_ref()
            .map_or(Ok(Split::Test), |s| at.parse("detection.ood_split", s))?,
        norm,
        eps,
        steps: d.steps.unwrap_or(100),
        restarts: d.restarts.unwrap_or(2),
        lambda: d.lambda.unwrap_or(1.0),
        kappa: d.kappa.unwrap_or(5.0),
        square_queries: d.square_queries,
    })
}

/// A detector fitted here: the registry name, the calibration slice (at least ceil(10 / fpr)
/// samples), fit data when the detector needs it.
fn detector_fit(
    at: &At,
    d: &DetectionSection,
    name: &Spanned<String>,
    data: &DataSpec,
    split: Split,
) -> Result<DetectorFit> {
    let entry = entry(name.get_ref())
        .map_err(|e| at.error(name.span(), format!("detection.detector: {e}")))?;
    let fpr = match &d.fpr {
        Some(f) if !(*f.get_ref() > 0.0 && *f.get_ref() < 1.0) => {
            return Err(
                at.error(f.span(), format!("detection.fpr: {} must be in (0, 1)", f.get_ref()))
            )
        }
        Some(f) => *f.get_ref(),
        None => DEFAULT_FPR,
    };
    let Some(calib_range) = &d.calib_range else {
        return Err(at.error(name.span(), "detection: a fitted detector needs `calib_range` (clean samples held out from the evaluated ones, e.g. \"2000..2300\")"));
    };
    let calib = range(at, "detection.calib_range", calib_range)?;
    let need = min_calibration_size(fpr);
    if calib.len() < need {
        return Err(at.error(calib_range.span(), format!("detection.calib_range: {} samples are too few for fpr {fpr}: need at least {need} (ceil(10 / fpr))", calib.len())));
    }
    let calib_spec =
        d.calib.as_ref().map_or(Ok(data.clone()), |s| at.parse("detection.calib", s))?;
    let calib_split =
        d.calib_split.as_ref().map_or(Ok(split), |s| at.parse("detection.calib_split", s))?;
    let fit = match (&d.fit_data, entry.needs_fit_data) {
        (Some(spec), true) => {
            let fit_range = match &d.fit_range {
                Some(r) => range(at, "detection.fit_range", r)?,
                None => 0..10000,
            };
            let fit_split = d
                .fit_split
                .as_ref()
                .map_or(Ok(Split::Train), |s| at.parse("detection.fit_split", s))?;
            Some((at.parse::<DataSpec>("detection.fit_data", spec)?, fit_split, fit_range))
        }
        (None, true) => {
            return Err(at.error(
                name.span(),
                format!("detection: {} needs labelled training data: give `fit_data`", entry.name),
            ))
        }
        (_, false) => None,
    };
    Ok(DetectorFit {
        detector: entry.name.to_string(),
        options: DetectorOptions {
            temperature: d.temperature,
            noise: d.noise,
            feature_layer: d.feature_layer.clone(),
            squeezers: d.squeezers.clone(),
        },
        calib: (calib_spec, calib_split, calib),
        fit,
        fpr,
    })
}
