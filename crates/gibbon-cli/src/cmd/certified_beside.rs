//! `gibbon eval --certificates CERT.json`: each sample's randomized-smoothing certificate (from
//! `gibbon certify`, joined by dataset index) beside the smallest adversarial perturbation found.
//!
//! Two classifiers are involved and the JSON keeps them apart. The certificate and SmoothAdv's
//! example (`gibbon certify --attack`) are about the *smoothed* classifier g; `gibbon eval`'s
//! attacks are about the *base* classifier f it was given. A certificate for g says nothing about
//! f, so a base example inside g's certified radius is expected (often, for small σ) and is
//! counted as information (`base_inside_certified_radius`), not as a contradiction. The
//! meaningful check, SmoothAdv's example against g inside g's certificate, is carried over as
//! `smoothed_violations`.
use crate::resolve::usage;
use anyhow::{Context, Result};
use gibbon::certify::SmoothAttack;
use gibbon::eval::EvalReport;
use gibbon::threat::Norm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The fields of a `gibbon certify` JSON that the join reads.
#[derive(Deserialize)]
struct CertifyFile {
    data: String,
    #[serde(default)]
    split: Option<String>,
    model: gibbon::model::ModelInfo,
    config: gibbon::certify::SmoothingConfig,
    per_sample: Vec<CertifiedSample>,
}

#[derive(Deserialize)]
struct CertifiedSample {
    index: usize,
    class: Option<i64>,
    radius: f64,
    #[serde(default)]
    attack: Option<SmoothAttack>,
    #[serde(default)]
    violation: bool,
}

/// One sample: the smoothed classifier's certificate and SmoothAdv example, the base
/// classifier's smallest example.
#[derive(Debug, Serialize)]
pub struct SampleBeside {
    pub index: usize,
    /// Smoothed classifier: its class (`None`: CERTIFY abstained).
    pub smoothed_class: Option<i64>,
    /// Smoothed classifier: certified L2 radius.
    pub certified_radius: f64,
    /// Smoothed classifier: L2 norm of SmoothAdv's smallest example (`gibbon certify --attack`).
    pub smoothed_attack_l2: Option<f64>,
    /// Smoothed classifier: SmoothAdv's example lies inside the certified radius.
    pub smoothed_violation: bool,
    /// Base classifier: the smallest perturbation eval's attacks found (min of `min_norm` and
    /// the returned example's norm), in eval's norm.
    pub base_min_norm: Option<f64>,
    /// Base classifier: its example lies inside the smoothed classifier's certified radius (L2
    /// evaluations only; a different classifier, so no contradiction).
    pub base_inside_certified_radius: Option<bool>,
}

/// The join, for the eval JSON's `certified` field.
#[derive(Debug, Serialize)]
pub struct CertifiedBeside {
    pub source: String,
    /// The base model the certificates smooth, and whether it is the model eval attacked.
    pub certified_model_sha256: String,
    pub same_base_model: bool,
    pub sigma: f64,
    pub draws: usize,
    pub alpha: f64,
    /// Eval's norm (base_min_norm's units).
    pub base_norm: Norm,
    /// Samples with a certificate among those evaluated.
    pub joined: usize,
    /// SmoothAdv examples inside a certified radius (smoothed classifier; expected 0), when
    /// the certify run attacked.
    pub smoothed_violations: Option<usize>,
    /// Base-classifier examples inside the smoothed classifier's radius (L2 only; information).
    pub base_inside_certified_radius: Option<usize>,
    pub per_sample: Vec<SampleBeside>,
}

/// A `gibbon certify` JSON, read and checked before the evaluation runs.
pub struct Certificates {
    source: String,
    file: CertifyFile,
}

/// Reads the certify JSON at `path`; an error (exit 2) unless it was made on `data_spec`.
pub fn load(path: &Path, data_spec: &str, split: &str) -> Result<Certificates> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--certificates {}", path.display()))?;
    let file: CertifyFile = serde_json::from_str(&text).map_err(|e| {
        usage(format!("--certificates {}: not a gibbon certify JSON ({e})", path.display()))
    })?;
    if file.data != data_spec {
        return Err(usage(format!(
            "--certificates {}: certified on data '{}', eval runs on '{data_spec}'",
            path.display(),
            file.data
        )));
    }
    if file.split.as_deref().is_some_and(|s| s != split) {
        return Err(usage(format!(
            "--certificates {}: certified on split '{}', eval runs on '{split}'",
            path.display(),
            file.split.as_deref().unwrap_or_default()
        )));
    }
    Ok(Certificates { source: path.display().to_string(), file })
}

/// Joins the certificates with `report` by dataset index.
pub fn join(certificates: Certificates, report: &EvalReport) -> CertifiedBeside {
    let Certificates { source, file } = certificates;
    let certs: BTreeMap<usize, &CertifiedSample> =
        file.per_sample.iter().map(|s| (s.index, s)).collect();
    let l2 = report.threat.norm == Norm::L2;
    let mut rows = Vec::new();
    for rec in &report.per_sample {
        let Some(c) = certs.get(&rec.index) else { continue };
        let found = [rec.min_norm, rec.norm.filter(|_| rec.broken_by.is_some())];
        let base = found.into_iter().flatten().min_by(|a, b| a.total_cmp(b));
        let base = if rec.clean_pred != rec.label { Some(0.0) } else { base };
        rows.push(SampleBeside {
            index: rec.index,
            smoothed_class: c.class,
            certified_radius: c.radius,
            smoothed_attack_l2: c.attack.and_then(|a| a.perturbation),
            smoothed_violation: c.violation,
            base_min_norm: base,
            base_inside_certified_radius: l2
                .then(|| c.class.is_some() && base.is_some_and(|b| b < c.radius)),
        });
    }
    let attacked = file.per_sample.iter().any(|s| s.attack.is_some());
    CertifiedBeside {
        source,
        same_base_model: file.model.sha256 == report.model.sha256,
        certified_model_sha256: file.model.sha256,
        sigma: file.config.sigma,
        draws: file.config.n,
        alpha: file.config.alpha,
        base_norm: report.threat.norm,
        joined: rows.len(),
        smoothed_violations: attacked.then(|| rows.iter().filter(|r| r.smoothed_violation).count()),
        base_inside_certified_radius: l2
            .then(|| rows.iter().filter(|r| r.base_inside_certified_radius == Some(true)).count()),
        per_sample: rows,
    }
}

/// Prints the join's counts.
pub fn print(beside: &CertifiedBeside) {
    eprintln!(
        "certificates (smoothed classifier, σ = {}, n = {}) joined for {} samples{}",
        beside.sigma,
        beside.draws,
        beside.joined,
        if beside.same_base_model { "" } else { " (they smooth ANOTHER base model)" }
    );
    if let Some(v) = beside.smoothed_violations {
        eprintln!("  SmoothAdv examples inside a certified radius (smoothed classifier): {v}");
    }
    if let Some(b) = beside.base_inside_certified_radius {
        eprintln!(
            "  base-classifier examples inside the smoothed classifier's radius: {b} (different \
             classifiers: not a contradiction)"
        );
    }
}
