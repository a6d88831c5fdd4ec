//! TextFooler (Jin et al. 2020) with WordNet: deletion importance, greedy, up to 50 candidates per
//! word, POS kept, stopwords protected. It uses WordNet synonyms INSTEAD of the counter-fitted
//! embedding neighbours (cosine ≥ 0.5) and has NO Universal Sentence Encoder similarity check;
//! in their place at most 25% of the words may change.
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::GreedyWordImportance;

/// Builds the recipe.
pub fn build(ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "textfooler-wordnet".into(),
        transformation: Box::new(ctx.synonyms("textfooler-wordnet")?),
        constraints: TextConstraints {
            keep_pos: true,
            max_word_fraction: 0.25,
            ..Default::default()
        },
        search: Box::new(GreedyWordImportance),
        notes: "WordNet instead of counter-fitted embeddings; no sentence encoder; <= 25% of words",
    })
}
