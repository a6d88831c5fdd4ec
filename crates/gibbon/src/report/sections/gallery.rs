//! The gallery: original / perturbation (amplified, with its factor) / adversarial triptychs
//! with the model's answer and confidence, the worst cases first: broken samples by the
//! model's confidence in its wrong answer, then samples that held by the model's confidence
//! (least sure first). At most [`GALLERY_CARDS`] cards, whatever the size of the result.
use super::{num, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::{ExampleCard, Part};
use crate::report::png_image::ImageData;
use serde_json::Value;

/// Most cards a gallery shows.
pub const GALLERY_CARDS: usize = 24;

/// The samples the gallery shows, worst first, as (dataset index, position in `per_sample`):
/// broken ones by descending confidence in the adversarial answer, then robust ones by
/// ascending confidence; samples misclassified when clean are left out.
pub fn gallery_indices(json: &Value) -> Vec<(usize, usize)> {
    let Some(records) = json.get("per_sample").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut broken = Vec::new();
    let mut held = Vec::new();
    for (row, r) in records.iter().enumerate() {
        let Some(index) = r.get("index").and_then(Value::as_u64) else { continue };
        let confidence = num(r, "adv_confidence").unwrap_or(0.0);
        let by = r.get("broken_by").is_some_and(|b| !b.is_null());
        if by {
            broken.push((index as usize, row, confidence));
        } else if r.get("robust").and_then(Value::as_bool) == Some(true) {
            held.push((index as usize, row, confidence));
        }
    }
    broken.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    held.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    broken.into_iter().chain(held).take(GALLERY_CARDS).map(|(i, row, _)| (i, row)).collect()
}

fn norm_symbol(norm: &str) -> &str {
    match norm {
        "linf" => "L∞",
        "l2" => "L2",
        "l1" => "L1",
        other => other,
    }
}

/// The "Gallery" section (results with per-sample records and their pictures).
pub struct Gallery;

impl Section for Gallery {
    fn name(&self) -> &'static str {
        "gallery"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(images) = &doc.images else { return Ok(None) };
        let Some(records) = doc.json.get("per_sample").and_then(Value::as_array) else {
            return Ok(None);
        };
        let norm = doc.json.get("threat").and_then(|t| t.get("norm")).and_then(Value::as_str);
        let norm = norm_symbol(norm.unwrap_or(""));
        let [c, h, w] = images.shape;
        let mut cards = Vec::new();
        for (index, row) in gallery_indices(&doc.json) {
            let Some((original, adversarial)) = images.pairs.get(&index) else { continue };
            let r = &records[row];
            let int = |k: &str| r.get(k).map_or(String::new(), |v| v.to_string());
            cards.push(ExampleCard {
                index,
                label: int("label"),
                original: ImageData::new(c, h, w, original.clone())?,
                adversarial: ImageData::new(c, h, w, adversarial.clone())?,
                clean_prediction: int("clean_pred"),
                clean_confidence: num(r, "clean_confidence").unwrap_or(f64::NAN) as f32,
                adversarial_prediction: int("adv_pred"),
                adversarial_confidence: num(r, "adv_confidence").unwrap_or(f64::NAN) as f32,
                norm_text: format!("{norm} {:.3}", num(r, "norm").unwrap_or(0.0)),
                broken: r.get("robust").and_then(Value::as_bool) != Some(true),
            });
        }
        if cards.is_empty() {
            return Ok(None);
        }
        let note = format!(
            "What the attacker changed: the clean input, the perturbation (amplified by the factor \
             shown; grey = unchanged, lighter = raised, darker = lowered) and the adversarial \
             input, with the model's answer and confidence. Worst cases first: broken samples by \
             the model's confidence in its wrong answer, then samples that held, least sure \
             first; {} of {} samples shown.",
            cards.len(),
            records.len()
        );
        Ok(Some((
            "Gallery: what the attacker changed".into(),
            vec![Part::Note(note), Part::Examples(cards)],
        )))
    }
}
