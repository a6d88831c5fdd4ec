//! Invisible characters (Boucher et al. 2022): a zero-width character inserted inside a word; at
//! most 5 per text, greedy by importance.
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::GreedyWordImportance;
use crate::text::transform::unicode::Invisibles;

/// Builds the recipe.
pub fn build(_ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "invisible".into(),
        transformation: Box::new(Invisibles),
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
