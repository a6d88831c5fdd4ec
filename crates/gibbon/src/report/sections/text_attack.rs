//! Text attacks (`gibbon text attack`): per recipe the success rate with its interval, words and
//! characters changed and queries per success, then the first successful texts with the edited
//! words highlighted (original struck through, replacement marked; invisible and non-ASCII
//! characters of a replacement shown as `⟨U+XXXX⟩` so the edit can be seen).
use super::{interval, num, table, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::{Part, TextDiff};
use serde_json::Value;

/// The "Text attacks" section (results with `text_attack`).
pub struct TextAttacks;

/// Successful texts shown per recipe.
const SHOWN: usize = 5;

impl Section for TextAttacks {
    fn name(&self) -> &'static str {
        "text-attacks"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(recipes) = doc.json.get("text_attack").and_then(Value::as_array) else {
            return Ok(None);
        };
        let mut t = table(&[
            "recipe",
            "search",
            "attacked",
            "success rate [95% CI]",
            "words changed",
            "chars changed",
            "queries / success",
            "seconds",
        ]);
        for r in recipes {
            let s = r.get("summary").cloned().unwrap_or(Value::Null);
            let f = |k: &str, d: usize| num(&s, k).map_or("n/a".into(), |v| format!("{v:.d$}"));
            t.push_row(vec![
                r.get("name").and_then(Value::as_str).unwrap_or("?").into(),
                r.get("search").and_then(Value::as_str).unwrap_or("?").into(),
                s.get("attacked").map_or("?".into(), Value::to_string),
                format!("{} ({})", f("success_rate", 4), interval(s.get("success_rate_ci95"))),
                f("mean_words_changed", 2),
                f("mean_char_edits", 2),
                f("mean_queries_per_success", 1),
                f("seconds", 1),
            ]);
        }
        let mut parts = vec![
            Part::Note("Untargeted: a success is a correctly classified text whose prediction changes, as re-checked by the verifier (constraints and a fresh model call).".into()),
            Part::Table(t),
        ];
        for r in recipes {
            let diffs: Vec<TextDiff> = r
                .get("per_sample")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|s| s.get("success").and_then(Value::as_bool) == Some(true))
                .take(SHOWN)
                .map(|s| diff(r.get("name").and_then(Value::as_str).unwrap_or("?"), s))
                .collect();
            if !diffs.is_empty() {
                parts.push(Part::TextDiffs(diffs));
            }
        }
        Ok(Some(("Text attacks".into(), parts)))
    }
}

/// Shows invisible and non-ASCII characters as code points.
fn visible(word: &str) -> String {
    word.chars()
        .map(|c| if c.is_ascii() { c.to_string() } else { format!("⟨U+{:04X}⟩", c as u32) })
        .collect()
}

/// The spans of one sample from its text and edits (byte offsets into the original).
fn diff(recipe: &str, s: &Value) -> TextDiff {
    let text = s.get("text").and_then(Value::as_str).unwrap_or("");
    let mut edits: Vec<(usize, String, String)> = s
        .get("edits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e.get("offset")?.as_u64()? as usize,
                e.get("from")?.as_str()?.to_string(),
                e.get("to")?.as_str()?.to_string(),
            ))
        })
        .collect();
    edits.sort();
    let (mut original, mut adversarial, mut at) = (Vec::new(), Vec::new(), 0);
    for (offset, from, to) in edits {
        let Some(before) = text.get(at..offset) else { continue };
        original.push((before.to_string(), false));
        adversarial.push((before.to_string(), false));
        original.push((from.clone(), true));
        adversarial.push((visible(&to), true));
        at = offset + from.len();
    }
    let rest = text.get(at..).unwrap_or("").to_string();
    original.push((rest.clone(), false));
    adversarial.push((rest, false));
    TextDiff {
        caption: format!(
            "{recipe}: text {} (label {}, prediction {} → {}), {} queries",
            s.get("index").map_or("?".into(), Value::to_string),
            s.get("label").map_or("?".into(), Value::to_string),
            s.get("clean_pred").map_or("?".into(), Value::to_string),
            s.get("adv_pred").map_or("?".into(), Value::to_string),
            s.get("queries").map_or("?".into(), Value::to_string),
        ),
        original,
        adversarial,
    }
}
