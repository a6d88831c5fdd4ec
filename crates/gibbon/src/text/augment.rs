//! Augmentation training with the attacks' own transformations (data augmentation against
//! character-level adversaries, as in Pruthi, Dhingra & Lipton 2019 "Combating Adversarial
//! Misspellings with Robust Word Recognition" and Gao et al. 2018's adversarial training with
//! DeepWordBug samples): in every training batch a fraction [`Augmenter::fraction`] of the texts
//! is replaced by a transformed copy, with its label kept. A copy changes each word that the
//! recipe's constraints let change with probability [`Augmenter::word_rate`] (at least one such
//! word when the text has any), to one candidate of a transformation drawn among the recipes
//! given (e.g. `deepwordbug,homoglyph,invisible`), chosen at random. Every choice is a pure
//! function of (seed, epoch, text index), so a run is reproducible.
use super::data::TextDataset;
use super::recipes::{recipe_by_name, Recipe, RecipeContext};
use super::tokenize::Segments;
use super::transform::Synonyms;
use crate::error::{GibbonError, Result};
use crate::random::RngKey;
use serde::{Deserialize, Serialize};

/// What `gibbon text train --augment` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Recipe names whose transformations are used.
    pub recipes: Vec<String>,
    /// Fraction of each batch's texts replaced by a transformed copy.
    pub fraction: f64,
    /// Probability that an editable word of a copy is transformed.
    pub word_rate: f64,
    /// Seed of the choices.
    pub seed: u64,
}

/// Transforms training texts with attack transformations.
pub struct Augmenter {
    /// The settings.
    pub config: AugmentConfig,
    recipes: Vec<Recipe>,
    synonyms: Option<std::sync::Arc<Synonyms>>,
}

impl Augmenter {
    /// An augmenter over the recipes of `config` (built with `ctx`).
    pub fn new(config: AugmentConfig, ctx: &RecipeContext) -> Result<Augmenter> {
        if config.recipes.is_empty() {
            return Err(GibbonError::invalid("augment", "no recipe given"));
        }
        for (name, v) in [("fraction", config.fraction), ("word rate", config.word_rate)] {
            if !(0.0..=1.0).contains(&v) || !v.is_finite() {
                return Err(GibbonError::invalid("augment", format!("{name} {v} not in [0, 1]")));
            }
        }
        let recipes =
            config.recipes.iter().map(|r| recipe_by_name(r, ctx)).collect::<Result<Vec<_>>>()?;
        Ok(Augmenter { config, recipes, synonyms: ctx.synonyms.clone() })
    }

    /// The texts and labels of training batch `indices` (positions in `data`, which also seed
    /// the choices) as training sees them in `epoch`: a fraction replaced by transformed copies,
    /// every label kept.
    pub fn batch(
        &self,
        epoch: usize,
        data: &TextDataset,
        indices: &[usize],
    ) -> (Vec<String>, Vec<usize>) {
        let texts = indices
            .iter()
            .map(|&i| {
                let key = RngKey::new(self.config.seed, i).restart(epoch).stream(0x61_7567);
                if key.uniform(1)[0] < self.config.fraction {
                    self.transform(&data.texts[i], key.stream(1))
                } else {
                    data.texts[i].clone()
                }
            })
            .collect();
        (texts, indices.iter().map(|&i| data.labels[i]).collect())
    }

    /// A transformed copy of `text` (the text itself when no word can change).
    pub fn transform(&self, text: &str, key: RngKey) -> String {
        let recipe = &self.recipes[key.below(self.recipes.len())];
        let mut seg = Segments::new(text);
        let original = seg.clone();
        let mut editable = Vec::new();
        let mut changed = 0usize;
        for k in 0..original.words.len() {
            let w = original.word(k);
            let mut cands = recipe.transformation.candidates(w, key.step(k + 1));
            cands.retain(|c| {
                recipe.constraints.word_edit_allowed(w, c, self.synonyms.as_deref())
                    && Segments::new(c).parts.len() == 1
            });
            if cands.is_empty() {
                continue;
            }
            let u = key.step(k + 1).stream(2).uniform(2);
            let pick = &cands[((u[1] * cands.len() as f64) as usize).min(cands.len() - 1)];
            if u[0] < self.config.word_rate {
                seg.parts[original.words[k]] = pick.clone();
                changed += 1;
            }
            editable.push((k, pick.clone()));
        }
        if changed == 0 && !editable.is_empty() {
            let (k, pick) = &editable[key.stream(3).below(editable.len())];
            seg.parts[original.words[*k]] = pick.clone();
        }
        seg.text()
    }
}
