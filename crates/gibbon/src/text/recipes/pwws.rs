//! PWWS (Ren et al. 2019): WordNet synonyms, POS kept, stopwords protected, saliency-weighted
//! ranking. No named-entity substitutions (the paper's NE swap is left out).
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::Pwws;

/// Builds the recipe.
pub fn build(ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "pwws".into(),
        transformation: Box::new(ctx.synonyms("pwws")?),
        constraints: TextConstraints { keep_pos: true, ..Default::default() },
        search: Box::new(Pwws),
        notes:
            "WordNet synonyms (POS = WordNet lexical category, no tagger); no named-entity swaps",
    })
}
