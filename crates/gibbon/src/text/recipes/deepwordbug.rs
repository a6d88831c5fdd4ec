//! DeepWordBug (Gao et al. 2018): character edits (swap, neighbouring key, delete, insert) on the
//! most important words, greedy; as TextAttack's recipe: total Levenshtein distance ≤ 30,
//! stopwords protected. Importance is the deletion score (their "replace-1" score family).
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::GreedyWordImportance;
use crate::text::transform::chars::CharEdits;

/// Builds the recipe.
pub fn build(_ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "deepwordbug".into(),
        transformation: Box::new(CharEdits::default()),
        constraints: TextConstraints { max_char_edits: Some(30), ..Default::default() },
        search: Box::new(GreedyWordImportance),
        notes: "Gao et al. 2018 edits, 2 random draws per edit type per word; deletion importance",
    })
}
