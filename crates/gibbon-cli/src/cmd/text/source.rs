//! `--model` of the text commands: a gibbon text model folder, a user ONNX model with its
//! `tokenizer.json` (an `.onnx` file or a folder holding `model.onnx` and `tokenizer.json`;
//! `--tokenizer` overrides), or a text model server (`http://HOST:PORT/predict`).
use crate::resolve::usage;
use anyhow::Result;
use gibbon::text::onnx_model::{is_onnx_text_model, resolve_paths, too_long};
use gibbon::text::tokenize::word_tokens;
use gibbon::text::{OnnxTextModel, RemoteTextModel, TextArch, TextClassifier, TextModel};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A loaded text model of any source.
pub enum TextSource {
    /// Trained by `gibbon text train`.
    Gibbon(TextModel),
    /// ONNX + tokenizer.json.
    Onnx(Box<OnnxTextModel>),
    /// Behind HTTP.
    Remote(RemoteTextModel),
}

impl TextSource {
    /// Loads `--model` (and `--tokenizer` for ONNX).
    pub fn load(model: &Path, tokenizer: Option<&Path>) -> Result<TextSource> {
        let spec = model.to_string_lossy();
        if spec.contains("://") {
            if tokenizer.is_some() {
                return Err(usage("--tokenizer is for ONNX models, not a remote model"));
            }
            return Ok(TextSource::Remote(RemoteTextModel::connect(
                &spec,
                Duration::from_secs(60),
            )?));
        }
        if tokenizer.is_some() || is_onnx_text_model(model) {
            let (onnx, tok) = resolve_paths(model, tokenizer);
            return Ok(TextSource::Onnx(Box::new(OnnxTextModel::load(&onnx, &tok)?)));
        }
        Ok(TextSource::Gibbon(TextModel::load(model)?))
    }

    /// The classifier attacks query.
    pub fn classifier(&self) -> &dyn TextClassifier {
        match self {
            TextSource::Gibbon(m) => m,
            TextSource::Onnx(m) => m.as_ref(),
            TextSource::Remote(m) => m,
        }
    }

    /// The gibbon model, when it is one (its training record, recorded split).
    pub fn gibbon(&self) -> Option<&TextModel> {
        match self {
            TextSource::Gibbon(m) => Some(m),
            _ => None,
        }
    }

    /// Class names.
    pub fn class_names(&self) -> Vec<String> {
        match self {
            TextSource::Gibbon(m) => m.meta.class_names.clone(),
            TextSource::Onnx(m) => (0..m.num_classes()).map(|c| c.to_string()).collect(),
            TextSource::Remote(m) => m.info.class_names.clone(),
        }
    }

    /// True when the model answers labels only (a label-only server).
    pub fn labels_only(&self) -> bool {
        matches!(self, TextSource::Remote(m) if m.labels_only())
    }

    /// What the result JSON says about the model.
    pub fn describe(&self, spec: &Path) -> Value {
        match self {
            TextSource::Gibbon(m) => {
                json!({"path": spec, "kind": "gibbon", "arch": m.meta.arch_name(),
                "class_names": m.meta.class_names, "test_accuracy": m.meta.training.get("test_accuracy")})
            }
            TextSource::Onnx(m) => {
                json!({"path": m.model_path, "kind": "onnx", "tokenizer": m.tokenizer_path,
                "max_len": m.max_len(), "class_names": self.class_names()})
            }
            TextSource::Remote(m) => json!({"path": m.predict_url(), "kind": "remote",
                "output": m.info.output, "served": m.info.model, "class_names": m.info.class_names}),
        }
    }

    /// Refuses texts longer than the model takes (a CNN's `max_len` words, an ONNX model's
    /// tokenizer maximum): an error naming the text (`indices[i]`, its row in the data) and its
    /// length. gibbon never cuts a text silently.
    pub fn check_lengths(&self, texts: &[&String], indices: &[usize]) -> Result<()> {
        match self {
            TextSource::Gibbon(m) => {
                if let TextArch::Cnn { max_len, .. } = &m.meta.arch {
                    for (t, &i) in texts.iter().zip(indices) {
                        let n = word_tokens(t).len();
                        if n > *max_len {
                            let e = too_long(i, n, *max_len).to_string();
                            return Err(usage(e.replace("tokens", "words")));
                        }
                    }
                }
            }
            TextSource::Onnx(m) => {
                for (t, &i) in texts.iter().zip(indices) {
                    m.check_lengths(std::slice::from_ref(*t), i)?;
                }
            }
            TextSource::Remote(_) => {}
        }
        Ok(())
    }
}
