//! Text classifiers gibbon trains (in libtorch through tch) and the interface attacks see.
//!
//! - `linear`: a linear model over hashed word uni/bigrams and character 2–4-grams (the hashing
//!   trick of Joulin et al. 2017 "Bag of Tricks for Efficient Text Classification", without a
//!   hidden layer): `EmbeddingBag(buckets, classes, mean) + bias`, i.e. logistic regression on
//!   n-gram frequencies — the shape of most deployed spam filters.
//! - `cnn`: the word-CNN of Kim 2014 ("Convolutional Neural Networks for Sentence
//!   Classification"): embeddings (dim 64, trained from scratch: no pretrained vectors are
//!   shipped), filter widths 3, 4, 5 with 64 maps each, ReLU, max-over-time, dropout 0.5, linear.
//!
//! A model is a folder: `model.json` (kind, hyper-parameters, class names, the word vocabulary
//! for `cnn`, the training record) and `weights.safetensors`.
use super::tokenize::{hashed_ngrams, Vocab};
use crate::error::{GibbonError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// The architectures `gibbon text train --arch` builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum TextArch {
    /// Hashed word + char n-grams, linear.
    Linear {
        /// Hash buckets.
        buckets: u64,
        /// Character n-gram lengths.
        char_n: Vec<usize>,
    },
    /// Kim (2014) word-CNN.
    Cnn {
        /// Word vocabulary (saved with the model).
        vocab: Vec<String>,
        /// Embedding dimension.
        dim: i64,
        /// Feature maps per filter width.
        maps: i64,
        /// Words read per text (longer texts are cut).
        max_len: usize,
    },
}

/// What a model folder's `model.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextModelMeta {
    /// The architecture and its parameters.
    pub arch: TextArch,
    /// Class names.
    pub class_names: Vec<String>,
    /// How it was trained (data, split, accuracy), as `gibbon text train` recorded it.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl TextModelMeta {
    /// "linear" or "cnn".
    pub fn arch_name(&self) -> &'static str {
        match self.arch {
            TextArch::Linear { .. } => "linear",
            TextArch::Cnn { .. } => "cnn",
        }
    }
}

/// Anything that scores texts: the interface every text attack sees.
pub trait TextClassifier {
    /// Number of classes.
    fn num_classes(&self) -> usize;
    /// Class probabilities of each text.
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// A trained text model.
pub struct TextModel {
    /// Its metadata.
    pub meta: TextModelMeta,
    vs: nn::VarStore,
    net: Net,
    vocab: Option<Vocab>,
}

enum Net {
    Linear { table: Tensor, bias: Tensor },
    Cnn { embed: nn::Embedding, convs: Vec<nn::Conv1D>, out: nn::Linear },
}

/// Filter widths of the word-CNN (Kim 2014).
pub const CNN_WIDTHS: [i64; 3] = [3, 4, 5];

impl TextModel {
    /// A freshly initialised model.
    pub fn new(arch: TextArch, class_names: Vec<String>) -> TextModel {
        let vs = nn::VarStore::new(Device::Cpu);
        let classes = class_names.len() as i64;
        let root = vs.root();
        let (net, vocab) = match &arch {
            TextArch::Linear { buckets, .. } => {
                let table = root.zeros("ngram_weight", &[*buckets as i64, classes]);
                let bias = root.zeros("bias", &[classes]);
                (Net::Linear { table, bias }, None)
            }
            TextArch::Cnn { vocab, dim, maps, .. } => {
                let cfg = nn::EmbeddingConfig { padding_idx: 0, ..Default::default() };
                let embed = nn::embedding(&root / "embed", vocab.len() as i64, *dim, cfg);
                let convs = CNN_WIDTHS
                    .iter()
                    .map(|&w| {
                        nn::conv1d(&root / format!("conv{w}"), *dim, *maps, w, Default::default())
                    })
                    .collect();
                let out = nn::linear(
                    &root / "out",
                    maps * CNN_WIDTHS.len() as i64,
                    classes,
                    Default::default(),
                );
                (Net::Cnn { embed, convs, out }, Some(Vocab::from_words(vocab.clone())))
            }
        };
        TextModel {
            meta: TextModelMeta { arch, class_names, training: serde_json::Value::Null },
            vs,
            net,
            vocab,
        }
    }

    /// The variables (for the optimizer).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Logits `[texts, classes]`; `train` turns dropout on.
    pub fn logits(&self, texts: &[String], train: bool) -> Tensor {
        match (&self.net, &self.meta.arch) {
            (Net::Linear { table, bias }, TextArch::Linear { buckets, char_n }) => {
                let mut ids = Vec::new();
                let mut offsets = Vec::with_capacity(texts.len());
                for t in texts {
                    offsets.push(ids.len() as i64);
                    ids.extend(hashed_ngrams(t, *buckets, char_n));
                }
                let (bag, _, _, _) = Tensor::embedding_bag(
                    table,
                    &Tensor::from_slice(&ids),
                    &Tensor::from_slice(&offsets),
                    false,
                    1,
                    false,
                    None::<Tensor>,
                    false,
                );
                bag + bias
            }
            (Net::Cnn { embed, convs, out }, TextArch::Cnn { max_len, .. }) => {
                let vocab = self.vocab.as_ref().expect("cnn has a vocabulary");
                let encoded: Vec<Vec<i64>> =
                    texts.iter().map(|t| vocab.encode(t, 5, *max_len)).collect();
                // Every text gets at least one all-padding window of the widest filter after
                // it: max-over-time then sees the same windows whatever the batch's longest
                // text, so a text's scores do not depend on the texts batched with it.
                let widest = *CNN_WIDTHS.last().expect("widths") as usize;
                let len = encoded.iter().map(Vec::len).max().unwrap_or(5) + widest;
                let flat: Vec<i64> = encoded
                    .into_iter()
                    .flat_map(|mut e| {
                        e.resize(len, 0);
                        e
                    })
                    .collect();
                let ids = Tensor::from_slice(&flat).view([texts.len() as i64, len as i64]);
                let x = embed.forward(&ids).transpose(1, 2);
                let pooled: Vec<Tensor> =
                    convs.iter().map(|c| c.forward(&x).relu().amax([2], false)).collect();
                out.forward(&Tensor::cat(&pooled, 1).dropout(0.5, train))
            }
            _ => unreachable!("net and arch are built together"),
        }
    }

    /// Saves the model folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| GibbonError::io(dir, e))?;
        let json = serde_json::to_string_pretty(&self.meta)
            .map_err(|e| GibbonError::Internal(e.to_string()))?;
        let meta = dir.join("model.json");
        std::fs::write(&meta, json).map_err(|e| GibbonError::io(&meta, e))?;
        crate::model::weights::save(&self.vs, &dir.join("weights.safetensors"))
    }

    /// Loads a model folder written by [`TextModel::save`].
    pub fn load(dir: &Path) -> Result<TextModel> {
        let meta_path = dir.join("model.json");
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| GibbonError::io(&meta_path, e))?;
        let meta: TextModelMeta = serde_json::from_str(&text).map_err(|e| {
            GibbonError::format(&meta_path, format!("not a gibbon text model: {e}"))
        })?;
        if meta.class_names.len() < 2 {
            return Err(GibbonError::format(&meta_path, "fewer than 2 classes"));
        }
        let mut model = TextModel::new(meta.arch.clone(), meta.class_names.clone());
        model.meta.training = meta.training;
        let weights = dir.join("weights.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| GibbonError::io(&weights, e))?;
        crate::model::weights::load_into(&mut model.vs, &bytes, &weights.display().to_string())?;
        Ok(model)
    }
}

/// Texts scored per forward pass.
const SCORE_BATCH: usize = 256;

impl TextClassifier for TextModel {
    fn num_classes(&self) -> usize {
        self.meta.class_names.len()
    }

    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let _guard = tch::no_grad_guard();
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(SCORE_BATCH) {
            let p = self.logits(chunk, false).softmax(1, Kind::Float);
            let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(p)?;
            out.extend(rows);
        }
        Ok(out)
    }
}
