//! The result JSON itself, collapsed, with every array longer than [`MAX_ITEMS`] cut short
//! (the page of a 10,000-sample result stays small; the file has everything).
use super::{ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use serde_json::Value;

/// Items kept of each array.
const MAX_ITEMS: usize = 20;

/// The "Result JSON" section (every result).
pub struct RawJson;

fn shorten(value: &Value) -> Value {
    match value {
        Value::Array(items) if items.len() > MAX_ITEMS => {
            let mut kept: Vec<Value> = items[..MAX_ITEMS].iter().map(shorten).collect();
            kept.push(Value::String(format!("... {} more in the file", items.len() - MAX_ITEMS)));
            Value::Array(kept)
        }
        Value::Array(items) => Value::Array(items.iter().map(shorten).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shorten(v))).collect())
        }
        other => other.clone(),
    }
}

impl Section for RawJson {
    fn name(&self) -> &'static str {
        "json"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let short = shorten(&doc.json);
        let text = serde_json::to_string_pretty(&short).unwrap_or_else(|_| short.to_string());
        let summary = format!("{} (arrays cut to {MAX_ITEMS} items)", doc.source);
        Ok(Some(("Result JSON".into(), vec![Part::Code { summary, text }])))
    }
}
