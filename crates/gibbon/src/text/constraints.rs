//! Constraints on a text perturbation and their check. The search only proposes edits that keep
//! them, and the verifier re-checks every returned example from the two texts' segments alone.
use super::tokenize::Segments;
use super::transform::chars::edit_distance;
use super::transform::Synonyms;
use serde::{Deserialize, Serialize};

/// What an attack may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConstraints {
    /// Largest fraction of the text's words changed (1.0: any number).
    pub max_word_fraction: f64,
    /// Stopwords ([`STOPWORDS`]) are never changed.
    pub protect_stopwords: bool,
    /// A substitute must share a WordNet part of speech with the word it replaces.
    pub keep_pos: bool,
    /// Largest Levenshtein distance between a word and its replacement (characters).
    pub max_word_edit: Option<usize>,
    /// Largest total Levenshtein distance over all changed words (characters).
    pub max_char_edits: Option<usize>,
}

impl Default for TextConstraints {
    fn default() -> Self {
        TextConstraints {
            max_word_fraction: 1.0,
            protect_stopwords: true,
            keep_pos: false,
            max_word_edit: None,
            max_char_edits: None,
        }
    }
}

/// The constraint values of one perturbation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConstraintValues {
    /// Words changed.
    pub words_changed: usize,
    /// Words changed / words in the text.
    pub word_fraction: f64,
    /// Total Levenshtein distance over the changed words.
    pub char_edits: usize,
    /// Largest Levenshtein distance of one word.
    pub max_word_edit: usize,
    /// Every constraint the perturbation breaks (empty when it keeps them all).
    pub violations: Vec<String>,
}

/// English stopwords never changed when [`TextConstraints::protect_stopwords`] is set (function
/// words: articles, pronouns, auxiliaries, prepositions, conjunctions, negations).
pub const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "n't",
    "'s",
    "won't",
    "don't",
    "can't",
    "isn't",
    "aren't",
];

/// True when `word` (any case) is a stopword.
pub fn is_stopword(word: &str) -> bool {
    let w = word.to_lowercase();
    STOPWORDS.contains(&w.as_str())
}

impl TextConstraints {
    /// True when the single-word edit `from → to` keeps the per-word constraints.
    pub fn word_edit_allowed(&self, from: &str, to: &str, synonyms: Option<&Synonyms>) -> bool {
        !(self.protect_stopwords && is_stopword(from))
            && self.max_word_edit.is_none_or(|m| edit_distance(from, to) <= m)
            && (!self.keep_pos || synonyms.is_some_and(|s| s.shares_pos(from, to)))
    }

    /// The budgets on the whole perturbation: `words` changed out of `total`, `chars` edits.
    pub fn within_budget(&self, words: usize, total: usize, chars: usize) -> bool {
        words as f64 <= self.max_word_fraction * total as f64 + 1e-9
            && self.max_char_edits.is_none_or(|m| chars <= m)
    }

    /// Checks `adversarial` against `original` (the segments of the same text before and after
    /// the attack): same segmentation outside the words, and every constraint.
    pub fn check(
        &self,
        original: &Segments,
        adversarial: &Segments,
        synonyms: Option<&Synonyms>,
    ) -> ConstraintValues {
        let mut v = ConstraintValues::default();
        if original.parts.len() != adversarial.parts.len() || original.words != adversarial.words {
            v.violations
                .push("the adversarial text's segments do not line up with the original's".into());
            return v;
        }
        for (i, (a, b)) in original.parts.iter().zip(&adversarial.parts).enumerate() {
            if a == b {
                continue;
            }
            if !original.words.contains(&i) {
                v.violations.push(format!("non-word segment {i} changed ({a:?} -> {b:?})"));
                continue;
            }
            let d = edit_distance(a, b);
            v.words_changed += 1;
            v.char_edits += d;
            v.max_word_edit = v.max_word_edit.max(d);
            if !self.word_edit_allowed(a, b, synonyms) {
                v.violations.push(format!("word {a:?} -> {b:?} breaks a per-word constraint (stopword, edit distance or POS)"));
            }
        }
        let total = original.words.len().max(1);
        v.word_fraction = v.words_changed as f64 / total as f64;
        if !self.within_budget(v.words_changed, total, v.char_edits) {
            v.violations.push(format!(
                "budget exceeded: {} of {} words, {} character edits",
                v.words_changed, total, v.char_edits
            ));
        }
        v
    }
}
