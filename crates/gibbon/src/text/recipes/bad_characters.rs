//! Bad Characters (Boucher et al. 2022): homoglyphs and invisible characters together, at most 5
//! perturbed characters per text, beam search (width 4) by importance. Reorderings (bidi
//! controls) and deletions (backspace characters) of the paper are not included.
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::BeamSearch;
use crate::text::transform::unicode::{Homoglyphs, Invisibles};
use crate::text::transform::Union;

/// Builds the recipe.
pub fn build(_ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "bad-characters".into(),
        transformation: Box::new(Union(vec![Box::new(Homoglyphs { max_per_word: 3 }), Box::new(Invisibles)])),
        constraints: TextConstraints { protect_stopwords: false, max_word_edit: Some(1), max_char_edits: Some(5), ..Default::default() },
        search: Box::new(BeamSearch { width: 4 }),
        notes: "homoglyphs + invisibles; no reorderings or deletions; beam search, not differential evolution",
    })
}
