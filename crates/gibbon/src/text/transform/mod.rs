//! Transformations: for one word of a text, the replacements an attack may try. Each is built
//! from the original word only (a word is changed at most once, as TextAttack's
//! `RepeatModification` constraint does), deterministically from (seed, sample, word).
pub mod chars;
pub mod obfuscate;
pub mod synonyms;
pub mod textattack_chars;
pub mod unicode;

pub use synonyms::Synonyms;

use crate::random::RngKey;

/// Candidate replacements for one word.
pub trait Transformation: Send + Sync {
    /// Its name in results.
    fn name(&self) -> &'static str;
    /// Replacements for `word` (never `word` itself); `key` seeds any random choice.
    fn candidates(&self, word: &str, key: RngKey) -> Vec<String>;
}

/// The union of several transformations' candidates (duplicates removed, order kept).
pub struct Union(pub Vec<Box<dyn Transformation>>);

impl Transformation for Union {
    fn name(&self) -> &'static str {
        "union"
    }
    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, t) in self.0.iter().enumerate() {
            for c in t.candidates(word, key.stream(100 + i as u64)) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

/// A fixed candidate list per (lower-cased) word: tests and user-given substitution tables.
pub struct Table(pub std::collections::HashMap<String, Vec<String>>);

impl Transformation for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    fn candidates(&self, word: &str, _key: RngKey) -> Vec<String> {
        self.0.get(&word.to_lowercase()).cloned().unwrap_or_default()
    }
}
