//! `deepwordbug-textattack`: DeepWordBug (Gao et al. 2018) configured like TextAttack 0.3.11's
//! `DeepWordBugGao2018` recipe, for the side-by-side comparison (scripts/textattack_compare.sh):
//! its four random character edits with one candidate each ([`TextAttackCharEdits`]), `[UNK]`
//! importance ([`GreedyUnkImportance`]), Levenshtein ≤ 30, each word changed at most once,
//! stopwords protected. Differences left: gibbon sums the per-word Levenshtein distances (≥
//! TextAttack's whole-text distance, so gibbon is the stricter), segments words by UAX #29, and
//! its random draws are its own (counter-based), not numpy's.
use super::{Recipe, RecipeContext};
use crate::error::Result;
use crate::text::constraints::TextConstraints;
use crate::text::search::GreedyUnkImportance;
use crate::text::transform::textattack_chars::TextAttackCharEdits;

/// Builds the recipe.
pub fn build(_ctx: &RecipeContext) -> Result<Recipe> {
    Ok(Recipe {
        name: "deepwordbug-textattack".into(),
        transformation: Box::new(TextAttackCharEdits),
        constraints: TextConstraints { max_char_edits: Some(30), ..Default::default() },
        search: Box::new(GreedyUnkImportance),
        notes: "TextAttack 0.3.11 DeepWordBugGao2018 settings: 1 random draw per edit type, random-letter substitution, [UNK] importance",
    })
}
