//! Homoglyphs (Boucher et al. 2022): one letter per word replaced by a UTS #39 confusable; at most
//! 5 perturbed characters per text (their perturbation budget of 1–5), greedy by importance.
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::GreedyWordImportance;
use crate::text::transform::unicode::Homoglyphs;

/// Builds the recipe.
pub fn build(_ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "homoglyph".into(),
        transformation: Box::new(Homoglyphs { max_per_word: 3 }),
        constraints: TextConstraints {
            protect_stopwords: false,
            max_word_edit: Some(1),
            max_char_edits: Some(5),
            ..Default::default()
        },
        search: Box::new(GreedyWordImportance),
        notes: "greedy by deletion importance instead of the paper's differential evolution",
    })
}
