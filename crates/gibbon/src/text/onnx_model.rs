//! User text classifiers in ONNX with a Hugging Face `tokenizer.json`: the texts are tokenized
//! by the `tokenizers` crate (the maintained Rust implementation the Python package wraps) and
//! the graph is run by gibbon's ONNX interpreter ([`crate::model::onnx::OnnxGraph`]).
//!
//! The graph's inputs are recognised by name: one whose name contains `mask` gets the attention
//! mask, one containing `type` gets zeros (token type ids), the remaining one the token ids (all
//! int64 `[batch, tokens]`). Its first output is read as logits `[batch, classes]` (softmax
//! gives the probabilities).
//!
//! Batching never changes a score: texts are batched only with texts of the same token count,
//! so every text is run unpadded, exactly as a model scores it alone. When the graph declares a
//! fixed token dimension, texts are padded to it (the tokenizer's padding id, mask 0).
//!
//! Length: the tokenizer's truncation `max_length` (or the fixed token dimension) is the model's
//! maximum; gibbon turns truncation off and refuses longer texts (an invalid-argument error
//! naming the text and its length) instead of silently cutting them.
//! A text with no token at all is run as one padding token with mask 0.
use super::model::TextClassifier;
use crate::error::{GibbonError, Result};
use crate::model::onnx::OnnxGraph;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

/// An ONNX text classifier and its tokenizer.
pub struct OnnxTextModel {
    graph: OnnxGraph,
    tokenizer: Tokenizer,
    /// For each graph input: what it receives.
    roles: Vec<InputRole>,
    fixed_len: Option<usize>,
    max_len: Option<usize>,
    pad_id: i64,
    classes: usize,
    /// The model file.
    pub model_path: PathBuf,
    /// The tokenizer file.
    pub tokenizer_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum InputRole {
    Ids,
    Mask,
    TypeIds,
}

/// `--model` and `--tokenizer` resolved: a folder holding `model.onnx` and `tokenizer.json`, or
/// an `.onnx` file with the tokenizer given or next to it.
pub fn resolve_paths(model: &Path, tokenizer: Option<&Path>) -> (PathBuf, PathBuf) {
    let onnx = if model.is_dir() { model.join("model.onnx") } else { model.to_path_buf() };
    let tok = match tokenizer {
        Some(t) => t.to_path_buf(),
        None => onnx.parent().unwrap_or(Path::new(".")).join("tokenizer.json"),
    };
    (onnx, tok)
}

/// True when `model` names an ONNX text model (an `.onnx` file, or a folder with `model.onnx`).
pub fn is_onnx_text_model(model: &Path) -> bool {
    model.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        || model.join("model.onnx").is_file()
}

fn role_of(name: &str) -> InputRole {
    let n = name.to_ascii_lowercase();
    if n.contains("mask") {
        InputRole::Mask
    } else if n.contains("type") {
        InputRole::TypeIds
    } else {
        InputRole::Ids
    }
}

impl OnnxTextModel {
    /// Loads the model and tokenizer and checks, by a probe, that a two-text batch gives
    /// `[2, classes]` logits.
    pub fn load(model: &Path, tokenizer: &Path) -> Result<OnnxTextModel> {
        let graph = OnnxGraph::load(model, Device::Cpu)?;
        let origin = model.display().to_string();
        let mut tok = Tokenizer::from_file(tokenizer).map_err(|e| {
            GibbonError::format(tokenizer, format!("not a Hugging Face tokenizer.json: {e}"))
        })?;
        let max_len = tok.get_truncation().map(|t| t.max_length);
        let pad_id = tok
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>", "<PAD>"].iter().find_map(|t| tok.token_to_id(t)))
            .unwrap_or(0) as i64;
        tok.with_truncation(None)
            .map_err(|e| GibbonError::format(tokenizer, format!("tokenizer: {e}")))?;
        tok.with_padding(None);
        let inputs = graph.inputs();
        let roles: Vec<InputRole> = inputs.iter().map(|(n, _)| role_of(n)).collect();
        if roles.iter().filter(|r| **r == InputRole::Ids).count() != 1 {
            let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(GibbonError::model(
                &origin,
                format!(
                    "a text model needs one token-id input (and optionally an attention mask and token type ids); inputs: {names:?}"
                ),
            ));
        }
        let ids_input = roles.iter().position(|r| *r == InputRole::Ids).unwrap_or(0);
        let fixed_len = graph
            .input_dims(ids_input)
            .and_then(|d| d.get(1).cloned())
            .and_then(|d| d.ok())
            .map(|d| d.max(1) as usize);
        let mut m = OnnxTextModel {
            graph,
            tokenizer: tok,
            roles,
            fixed_len,
            max_len: match (max_len, fixed_len) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            pad_id,
            classes: 0,
            model_path: model.to_path_buf(),
            tokenizer_path: tokenizer.to_path_buf(),
        };
        let probe = m.logits(&[vec![pad_id], vec![pad_id]])?;
        let size = probe.size();
        if size.len() != 2 || size[0] != 2 || size[1] < 2 {
            return Err(GibbonError::model(
                &origin,
                format!("expected logits [batch, classes] but a batch of 2 gave {size:?}"),
            ));
        }
        m.classes = size[1] as usize;
        Ok(m)
    }

    /// The longest token sequence the model takes, if it has a limit.
    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// The token ids of `text` (special tokens added as the tokenizer's post-processor says).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| GibbonError::invalid("text", format!("the tokenizer failed: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Checks every text's token count against the maximum; the error names the first text
    /// over it (by its position in `texts` plus `first_index`) and its length.
    pub fn check_lengths(&self, texts: &[String], first_index: usize) -> Result<()> {
        let Some(max) = self.max_len else { return Ok(()) };
        for (i, t) in texts.iter().enumerate() {
            let n = self.encode(t)?.len();
            if n > max {
                return Err(too_long(first_index + i, n, max));
            }
        }
        Ok(())
    }

    /// Logits of token sequences of one length (or any lengths when the graph's length is
    /// fixed: they are padded to it).
    fn logits(&self, seqs: &[Vec<i64>]) -> Result<Tensor> {
        let len = self.fixed_len.unwrap_or_else(|| seqs.iter().map(Vec::len).max().unwrap_or(1));
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            let (real, fill) = if s.is_empty() { (vec![self.pad_id], 0) } else { (s.clone(), 1) };
            mask.extend(std::iter::repeat_n(fill, real.len()));
            mask.extend(std::iter::repeat_n(0i64, len - real.len()));
            ids.extend(real.iter().copied());
            ids.extend(std::iter::repeat_n(self.pad_id, len - real.len()));
        }
        let shape = [seqs.len() as i64, len as i64];
        let ids = Tensor::from_slice(&ids).view(shape);
        let mask = Tensor::from_slice(&mask).view(shape);
        let inputs: Vec<Tensor> = self
            .roles
            .iter()
            .map(|r| match r {
                InputRole::Ids => ids.shallow_clone(),
                InputRole::Mask => mask.shallow_clone(),
                InputRole::TypeIds => ids.zeros_like(),
            })
            .collect();
        let out = tch::no_grad(|| self.graph.run(&inputs))?;
        let logits = out.into_iter().next().ok_or_else(|| {
            GibbonError::model(
                self.model_path.display().to_string(),
                "the graph returned no output",
            )
        })?;
        Ok(logits.f_to_kind(Kind::Float)?)
    }
}

/// The error for a text longer than the model takes.
pub fn too_long(index: usize, len: usize, max: usize) -> GibbonError {
    GibbonError::invalid(
        "text",
        format!(
            "text {index} has {len} tokens, more than the model's maximum length {max} (gibbon does not cut texts; shorten or drop it)"
        ),
    )
}

/// Texts scored per graph run.
const BATCH: usize = 256;

impl TextClassifier for OnnxTextModel {
    fn num_classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut by_len: BTreeMap<usize, Vec<(usize, Vec<i64>)>> = BTreeMap::new();
        for (i, t) in texts.iter().enumerate() {
            let ids = self.encode(t)?;
            if let Some(max) = self.max_len.filter(|&m| ids.len() > m) {
                return Err(too_long(i, ids.len(), max));
            }
            let key = if self.fixed_len.is_some() { 0 } else { ids.len() };
            by_len.entry(key).or_default().push((i, ids));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for group in by_len.values() {
            for chunk in group.chunks(BATCH) {
                let seqs: Vec<Vec<i64>> = chunk.iter().map(|(_, s)| s.clone()).collect();
                let p = self.logits(&seqs)?.f_softmax(1, Kind::Float)?;
                if p.size() != [seqs.len() as i64, self.classes as i64] {
                    return Err(GibbonError::model(
                        self.model_path.display().to_string(),
                        format!("logits of shape {:?} for {} texts", p.size(), seqs.len()),
                    ));
                }
                let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(p)?;
                for ((i, _), row) in chunk.iter().zip(rows) {
                    out[*i] = row;
                }
            }
        }
        Ok(out)
    }
}
