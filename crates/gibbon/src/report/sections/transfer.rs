//! The transfer matrix (`gibbon transfer`) as a heat map: rows are surrogates (crafted on),
//! columns are targets (queried), each cell the success rate with its 95% interval in a table
//! below, plus each surrogate's white-box rate.
use super::{num, text, ResultDoc, Section};
use crate::error::Result;
use crate::report::html::Part;
use crate::report::plot::heat_map;
use serde_json::Value;

/// The "Transfer matrix" section (results with a `matrix`).
pub struct TransferHeatMap;

fn names(json: &Value, key: &str) -> Vec<String> {
    let list = json.get(key).and_then(Value::as_array);
    let path = |r: &Value| r.get("model").and_then(|m| text(m, "path")).unwrap_or_default();
    let short = |p: String| p.rsplit('/').next().map(str::to_string).unwrap_or(p);
    list.into_iter().flatten().map(|r| short(path(r))).collect()
}

fn cell_text(cell: &Value) -> String {
    match num(cell, "success_rate") {
        Some(rate) => format!(
            "{rate:.3} ({}/{}; {:.3}-{:.3})",
            text(cell, "successes").unwrap_or_default(),
            text(cell, "n").unwrap_or_default(),
            num(cell, "ci_low").unwrap_or(0.0),
            num(cell, "ci_high").unwrap_or(1.0)
        ),
        None => "n/a".into(),
    }
}

impl Section for TransferHeatMap {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn render(&self, doc: &ResultDoc) -> Result<Option<(String, Vec<Part>)>> {
        let Some(matrix) = doc.json.get("matrix").and_then(Value::as_array) else {
            return Ok(None);
        };
        let (rows, columns) = (names(&doc.json, "surrogates"), names(&doc.json, "targets"));
        let cells: Vec<Vec<Option<f64>>> = matrix
            .iter()
            .map(|r| {
                let r = r.as_array().cloned().unwrap_or_default();
                r.iter().map(|c| num(c, "success_rate")).collect()
            })
            .collect();
        let svg = heat_map(&rows, &columns, &cells)?;
        let mut headers = vec!["surrogate \\ target".to_string()];
        headers.extend(columns.iter().cloned());
        headers.push("white-box".into());
        let mut t = crate::report::html::SummaryTable::new(headers);
        let surrogates = doc.json.get("surrogates").and_then(Value::as_array);
        for (k, r) in matrix.iter().enumerate() {
            let mut row = vec![rows.get(k).cloned().unwrap_or_default()];
            row.extend(r.as_array().into_iter().flatten().map(cell_text));
            let white = surrogates.and_then(|s| s.get(k)).and_then(|s| s.get("white_box"));
            row.push(white.map_or("n/a".into(), cell_text));
            t.push_row(row);
        }
        let attack = doc.json.get("attack").and_then(|a| text(a, "name")).unwrap_or_default();
        let note = format!(
            "Success rate of {attack} examples crafted on each surrogate (rows) when given to each \
             target (columns), with successes / samples and the 95% Clopper-Pearson interval."
        );
        Ok(Some(("Transfer matrix".into(), vec![Part::Note(note), Part::Svg(svg), Part::Table(t)])))
    }
}
