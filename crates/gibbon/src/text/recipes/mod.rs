//! Attack recipes: a transformation, constraints and a search under one name (TextAttack's
//! recipes). Adding a recipe = one file with a `build` function + one line in [`RECIPES`]. Every
//! recipe also has a label-only black-box variant, `NAME-label`: the same transformation and
//! constraints with the hard-label search of Maheshwary et al. 2021 ([`HardLabelGa`]).
mod bad_characters;
mod deepwordbug;
mod deepwordbug_textattack;
mod homoglyph;
mod invisible;
mod pwws;
mod textfooler_wordnet;

use super::constraints::TextConstraints;
use super::search::{HardLabelGa, TextSearch};
use super::transform::{Synonyms, Transformation};
use crate::error::{GibbonError, Result};
use std::sync::Arc;

/// A named attack.
pub struct Recipe {
    /// Its name (with `-label` for the label-only variant).
    pub name: String,
    /// Candidate replacements per word.
    pub transformation: Box<dyn Transformation>,
    /// What may change.
    pub constraints: TextConstraints,
    /// How candidates are combined.
    pub search: Box<dyn TextSearch>,
    /// Where it departs from the paper, in one line (for the result JSON).
    pub notes: &'static str,
}

/// What building a recipe may need.
#[derive(Clone, Default)]
pub struct RecipeContext {
    /// The WordNet synonym table (word-level recipes).
    pub synonyms: Option<Arc<Synonyms>>,
}

impl RecipeContext {
    /// The synonym table, or an error naming the recipe that needs it.
    pub fn synonyms(&self, recipe: &str) -> Result<Arc<Synonyms>> {
        self.synonyms.clone().ok_or_else(|| {
            GibbonError::invalid(
                "recipe",
                format!("{recipe} needs the WordNet synonym table (--synonyms)"),
            )
        })
    }
}

/// Builds a recipe from the shared context.
pub type RecipeBuilder = fn(&RecipeContext) -> Result<Recipe>;

/// The recipes by name.
pub const RECIPES: &[(&str, RecipeBuilder)] = &[
    ("deepwordbug", deepwordbug::build),
    ("deepwordbug-textattack", deepwordbug_textattack::build),
    ("pwws", pwws::build),
    ("textfooler-wordnet", textfooler_wordnet::build),
    ("homoglyph", homoglyph::build),
    ("invisible", invisible::build),
    ("bad-characters", bad_characters::build),
];

/// Every accepted name (each recipe and its `-label` variant).
pub fn recipe_names() -> Vec<String> {
    RECIPES.iter().flat_map(|(n, _)| [n.to_string(), format!("{n}-label")]).collect()
}

/// True when the recipe `name` needs the synonym table.
pub fn needs_synonyms(name: &str) -> bool {
    let base = name.strip_suffix("-label").unwrap_or(name);
    matches!(base, "pwws" | "textfooler-wordnet")
}

/// Builds the recipe `name`.
pub fn recipe_by_name(name: &str, ctx: &RecipeContext) -> Result<Recipe> {
    let (base, label_only) = match name.strip_suffix("-label") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let build = RECIPES.iter().find(|(n, _)| *n == base).map(|(_, b)| b).ok_or_else(|| {
        GibbonError::invalid(
            "recipe",
            format!("unknown recipe {name:?}; known: {}", recipe_names().join(", ")),
        )
    })?;
    let mut recipe = build(ctx)?;
    if label_only {
        recipe.name = name.to_string();
        recipe.search = Box::new(HardLabelGa) as Box<dyn TextSearch>;
    }
    Ok(recipe)
}
