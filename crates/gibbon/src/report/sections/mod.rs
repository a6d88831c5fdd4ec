//! The report's sections: each file here is one [`Section`] that renders from a result JSON
//! ([`ResultDoc`]) and returns nothing when the JSON lacks its data; [`SECTIONS`] lists them in
//! page order, and [`report_page`] walks it. `gibbon report`, the `--html` flags and
//! `gibbon redteam` all build their pages this way, so a page written from a JSON file read
//! back later is the page the run itself would have written.
//!
//! Adding a section: write `sections/NAME.rs` with a unit struct implementing [`Section`] that
//! reads the fields its command writes into the result JSON, and add it to [`SECTIONS`]
//! (`detection.rs` is one such: `gibbon detect eval` and `gibbon detect attack` results).
mod accuracy;
mod audit;
mod certified_beside;
mod certify;
mod criteria;
mod curve;
mod detection;
mod gallery;
mod min_norm;
mod per_attack;
mod raw_json;
mod samples;
mod text_attack;
mod threat_model;
mod transfer;

pub use gallery::{gallery_indices, GALLERY_CARDS};
pub use samples::SAMPLE_ROWS;

use super::html::{HtmlReport, Part};
use crate::data::{DataSpec, Dataset, Split};
use crate::error::{GibbonError, Result};
use crate::eval::Examples;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One result as the report sees it: the JSON a command wrote (eval, attack, curve, transfer,
/// audit, certify, redteam) and, for image data, the pictures of the gallery's samples.
#[derive(Debug, Clone)]
pub struct ResultDoc {
    /// Where it came from (a file name), shown when a page holds several results.
    pub source: String,
    /// The result JSON.
    pub json: Value,
    /// Original and adversarial pictures of the samples [`gallery_indices`] picks, when known.
    pub images: Option<SampleImages>,
}

/// The original and adversarial pictures `[C, H, W]` (values in `[0, 1]`) of some samples.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SampleImages {
    /// Channels, height, width.
    pub shape: [usize; 3],
    /// Dataset index → (original, adversarial), each `C·H·W` values.
    pub pairs: BTreeMap<usize, (Vec<f32>, Vec<f32>)>,
}

/// One section of a page.
pub trait Section {
    /// The section's name: its `data-section` attribute and its HTML id.
    fn name(&self) -> &'static str;
    /// Its heading and content, or `None` when `doc` lacks the data it shows.
    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>>;
}

/// Every section, in page order. One line per section.
pub static SECTIONS: &[&(dyn Section + Sync)] = &[
    &criteria::PassCriteria,
    &threat_model::ThreatModelSection,
    &accuracy::Accuracy,
    &gallery::Gallery,
    &per_attack::PerAttack,
    &curve::RobustnessCurve,
    &min_norm::MinNorm,
    &transfer::TransferHeatMap,
    &audit::Audit,
    &certify::Certification,
    &certified_beside::CertifiedBeside,
    &detection::Detection,
    &text_attack::TextAttacks,
    &samples::Samples,
    &raw_json::RawJson,
];

/// The page of `docs`: every section of [`SECTIONS`] that has data, for each result in turn (a
/// result holding `evaluations`, as `gibbon redteam` writes, is followed by each of them).
pub fn report_page(title: &str, intro: &str, docs: &[ResultDoc]) -> Result<HtmlReport> {
    let mut all: Vec<ResultDoc> = Vec::new();
    for doc in docs {
        all.push(doc.clone());
        if let Some(evals) = doc.json.get("evaluations").and_then(Value::as_array) {
            for (k, e) in evals.iter().enumerate() {
                let label = e.get("label").and_then(Value::as_str).unwrap_or("");
                all.push(ResultDoc {
                    source: format!("{} #{} {label}", doc.source, k + 1),
                    json: e.clone(),
                    images: None,
                });
            }
        }
    }
    let mut page = HtmlReport::new(title).intro(intro).self_check();
    for doc in &all {
        for section in SECTIONS {
            let Some((heading, parts)) = section.render(doc)? else { continue };
            let heading = match all.len() {
                1 => heading,
                _ => format!("{heading} · {}", doc.source),
            };
            page = page.add_section(section.name(), heading, parts);
        }
    }
    Ok(page)
}

impl ResultDoc {
    /// A result without pictures.
    pub fn new(source: impl Into<String>, json: Value) -> Self {
        ResultDoc { source: source.into(), json, images: None }
    }

    /// Reads a result JSON file. When `adversarial.npy` lies beside it (`gibbon attack
    /// --out-dir`), the gallery's pictures are loaded from it and from the data the result
    /// names (`data.spec`, `data.split`); when that data cannot be read the page has no gallery
    /// and a warning says why.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GibbonError::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            GibbonError::invalid(path.display().to_string(), format!("not a result JSON: {e}"))
        })?;
        if !json.is_object() {
            return Err(GibbonError::invalid(
                path.display().to_string(),
                "not a result JSON: expected an object",
            ));
        }
        let source = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into());
        let mut doc = ResultDoc::new(source, json);
        let npy = path.with_file_name("adversarial.npy");
        if npy.exists() {
            match SampleImages::from_attack_dir(&doc.json, &npy) {
                Ok(images) => doc.images = images,
                Err(e) => tracing::warn!("{}: no gallery: {e}", path.display()),
            }
        }
        Ok(doc)
    }
}

impl SampleImages {
    /// The pictures of the gallery's samples from an evaluation's kept examples (samples
    /// without one, e.g. resumed from a stream, are left out).
    pub fn from_examples(
        json: &Value,
        data: &Dataset,
        examples: &Examples,
    ) -> Result<Option<Self>> {
        let shape = data.sample_shape();
        let [c, h, w] = shape[..] else { return Ok(None) };
        let mut images =
            SampleImages { shape: [c as usize, h as usize, w as usize], ..Default::default() };
        for (index, _) in gallery_indices(json) {
            // Samples resumed from a stream have no example in memory: no card, rather than
            // a card that shows no change.
            let Some(adv) = examples.get(&index) else { continue };
            let clean = data.try_batch(&[index], tch::Device::Cpu)?.get(0);
            let original: Vec<f32> = Vec::try_from(clean.to_kind(tch::Kind::Float).flatten(0, -1))?;
            let adversarial: Vec<f32> =
                Vec::try_from(adv.to_kind(tch::Kind::Float).flatten(0, -1))?;
            images.pairs.insert(index, (original, adversarial));
        }
        Ok(Some(images))
    }

    /// The pictures of the gallery's samples from `adversarial.npy` (rows in `per_sample`
    /// order, as `gibbon attack` writes it) and the data named by `json`.
    pub fn from_attack_dir(json: &Value, npy: &Path) -> Result<Option<Self>> {
        let field = |k: &str| json.get("data").and_then(|d| d.get(k)).and_then(Value::as_str);
        let Some(spec) = field("spec") else { return Ok(None) };
        let split: Split = field("split").unwrap_or("test").parse()?;
        let chosen = gallery_indices(json);
        let Some(last) = chosen.iter().map(|&(i, _)| i).max() else { return Ok(None) };
        let data = Dataset::load(&spec.parse::<DataSpec>()?, split, Some(last + 1))?;
        let labels = npy.with_file_name("labels.npy");
        let adv =
            Dataset::load(&DataSpec::Npy { images: npy.to_path_buf(), labels }, Split::Test, None)?;
        let mut examples = Examples::new();
        for (index, row) in chosen {
            if row >= adv.len() {
                return Err(GibbonError::invalid(
                    npy.display().to_string(),
                    format!("has {} rows; the result has more samples", adv.len()),
                ));
            }
            examples.insert(index, adv.try_batch(&[row], tch::Device::Cpu)?.get(0));
        }
        Self::from_examples(json, &data, &examples)
    }
}

/// `value[key]` as a number.
pub(crate) fn num(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

/// `value[key]` as text (strings as they are, other values as JSON).
pub(crate) fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A `[low, high]` JSON pair as `low-high` with 4 decimals.
pub(crate) fn interval(value: Option<&Value>) -> String {
    let pair = value.and_then(Value::as_array);
    match pair.map(|p| (p.first().and_then(Value::as_f64), p.get(1).and_then(Value::as_f64))) {
        Some((Some(lo), Some(hi))) => format!("{lo:.4}-{hi:.4}"),
        _ => "n/a".into(),
    }
}

/// A table with these column headers.
pub(crate) fn table(columns: &[&str]) -> super::html::SummaryTable {
    super::html::SummaryTable::new(columns.iter().map(|s| s.to_string()).collect())
}
