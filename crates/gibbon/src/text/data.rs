//! Text datasets: the SMS Spam Collection format (`ham<TAB>text`), TSV with a header naming a
//! `sentence` or `text` column and a `label` column (GLUE SST-2), and JSON lines
//! `{"text": str, "label": int}`. Every line is checked: invalid UTF-8, a missing field, an empty
//! text or an unknown label is an error naming the file and line, never a panic.
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Texts with integer labels and the labels' names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextDataset {
    /// The texts, as given (no normalization).
    pub texts: Vec<String>,
    /// Labels in `0..class_names.len()`.
    pub labels: Vec<usize>,
    /// Class names (`["ham", "spam"]`, or `["0", "1"]` for numeric labels).
    pub class_names: Vec<String>,
}

/// The file formats [`load_text_dataset`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// `ham|spam<TAB>text` per line, no header (Almeida et al. 2011).
    Sms,
    /// A header line naming `sentence` or `text` and `label`; integer labels.
    Tsv,
    /// One `{"text": ..., "label": ...}` object per line; integer labels.
    Jsonl,
}

impl TextFormat {
    /// The format a file's name implies: `.tsv`, `.jsonl`, else the SMS format.
    pub fn from_path(path: &Path) -> TextFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("tsv") => TextFormat::Tsv,
            Some("jsonl") => TextFormat::Jsonl,
            _ => TextFormat::Sms,
        }
    }
}

impl TextDataset {
    /// Number of texts.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// True when there are no texts.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The subset at `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> TextDataset {
        TextDataset {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }
}

/// Reads `path` in `format`.
pub fn load_text_dataset(path: &Path, format: TextFormat) -> Result<TextDataset> {
    let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
    parse_text_dataset(&bytes, format, path)
}

/// Parses the bytes of a dataset file; `path` only names the file in errors.
pub fn parse_text_dataset(bytes: &[u8], format: TextFormat, path: &Path) -> Result<TextDataset> {
    let mut rows = Vec::new();
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
    if format == TextFormat::Tsv {
        let (_, header) = lines.next().ok_or_else(|| GibbonError::format(path, "empty file"))?;
        check_tsv_header(line_str(header, 1, path)?, path)?;
    }
    for (i, raw) in lines {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let line = line_str(raw, i + 1, path)?;
        let row = match format {
            TextFormat::Sms => sms_row(line),
            TextFormat::Tsv => tsv_row(line),
            TextFormat::Jsonl => jsonl_row(line),
        }
        .map_err(|m| GibbonError::format(path, format!("line {}: {m}", i + 1)))?;
        if row.0.trim().is_empty() {
            return Err(GibbonError::format(path, format!("line {}: empty text", i + 1)));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(GibbonError::format(path, "no texts"));
    }
    let class_names = match format {
        TextFormat::Sms => vec!["ham".to_string(), "spam".to_string()],
        _ => {
            let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
            (0..=max.max(1)).map(|c| c.to_string()).collect()
        }
    };
    let (texts, labels) = rows.into_iter().unzip();
    Ok(TextDataset { texts, labels, class_names })
}

fn line_str<'a>(raw: &'a [u8], line: usize, path: &Path) -> Result<&'a str> {
    std::str::from_utf8(raw).map_err(|e| {
        GibbonError::format(path, format!("line {line}: invalid UTF-8 at byte {}", e.valid_up_to()))
    })
}

fn check_tsv_header(header: &str, path: &Path) -> Result<()> {
    let cols: Vec<&str> = header.trim_end_matches('\r').split('\t').collect();
    if cols.len() == 2 && matches!(cols[0], "sentence" | "text") && cols[1] == "label" {
        Ok(())
    } else {
        Err(GibbonError::format(
            path,
            format!(
                "line 1: header must be `sentence<TAB>label` or `text<TAB>label`, got {header:?}"
            ),
        ))
    }
}

fn sms_row(line: &str) -> std::result::Result<(String, usize), String> {
    let (label, text) = line.split_once('\t').ok_or("no tab between label and text")?;
    let label = match label {
        "ham" => 0,
        "spam" => 1,
        other => return Err(format!("label must be ham or spam, got {other:?}")),
    };
    Ok((text.to_string(), label))
}

fn tsv_row(line: &str) -> std::result::Result<(String, usize), String> {
    let (text, label) = line.rsplit_once('\t').ok_or("no tab between text and label")?;
    Ok((text.trim_end().to_string(), parse_label(label.trim())?))
}

fn parse_label(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(l) if l < 1000 => Ok(l),
        _ => Err(format!("label must be an integer in 0..1000, got {s:?}")),
    }
}

#[derive(Deserialize)]
struct JsonRow {
    text: String,
    label: serde_json::Value,
}

fn jsonl_row(line: &str) -> std::result::Result<(String, usize), String> {
    let row: JsonRow =
        serde_json::from_str(line).map_err(|e| format!("not a {{text, label}} object: {e}"))?;
    let label = match &row.label {
        serde_json::Value::Number(n) => parse_label(&n.to_string())?,
        serde_json::Value::String(s) => parse_label(s)?,
        other => return Err(format!("label must be an integer, got {other}")),
    };
    Ok((row.text, label))
}

/// A stratified split: within each class, indices are shuffled with `seed` (SplitMix64) and the
/// first `round(test_fraction · n_class)` go to the test side. Returns (train, test) indices,
/// each sorted.
pub fn stratified_split(
    labels: &[usize],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        shuffle(&mut idx, seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n_test = (test_fraction * idx.len() as f64).round() as usize;
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Fisher-Yates with SplitMix64 draws keyed by `seed`.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    for i in (1..items.len()).rev() {
        let draw = crate::random::splitmix64(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let j = (draw % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Where a dataset came from and which part of it was used, for the result JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextDataRecord {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: TextFormat,
    /// Texts read.
    pub n: usize,
}
