//! Tokenization: words by Unicode word boundaries (UAX #29, the `unicode-segmentation` crate),
//! lower-cased; a word vocabulary trained on the train split and saved with the model; hashed
//! word and character n-grams for the linear model.
//!
//! A text is kept as its boundary segments ([`Segments`]), so an attack edits words in place and
//! the text between them (spaces, punctuation) is carried over byte for byte.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use unicode_segmentation::UnicodeSegmentation;

/// A text split at UAX #29 word boundaries: every segment, and which of them are words (contain
/// an alphanumeric character).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segments {
    /// The segments; their concatenation is the text.
    pub parts: Vec<String>,
    /// Indices into `parts` of the words, in order.
    pub words: Vec<usize>,
}

impl Segments {
    /// Splits `text`.
    pub fn new(text: &str) -> Segments {
        let parts: Vec<String> = text.split_word_bounds().map(str::to_string).collect();
        let words =
            (0..parts.len()).filter(|&i| parts[i].chars().any(char::is_alphanumeric)).collect();
        Segments { parts, words }
    }

    /// The text.
    pub fn text(&self) -> String {
        self.parts.concat()
    }

    /// The `k`-th word.
    pub fn word(&self, k: usize) -> &str {
        &self.parts[self.words[k]]
    }

    /// A copy with the `k`-th word replaced by `replacement`.
    pub fn with_word(&self, k: usize, replacement: &str) -> Segments {
        let mut out = self.clone();
        out.parts[self.words[k]] = replacement.to_string();
        out
    }
}

/// The model's tokens of `text`: its UAX #29 words, lower-cased.
pub fn word_tokens(text: &str) -> Vec<String> {
    text.split_word_bounds()
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .map(str::to_lowercase)
        .collect()
}

/// A word vocabulary: id 0 is padding, id 1 unknown, then words by decreasing train count
/// (ties by the word), those seen at least `min_count` times, at most `max_size` ids in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    /// Words by id (ids 0 and 1 are `<pad>` and `<unk>`).
    pub words: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, i64>,
}

/// Id of the padding token.
pub const PAD: i64 = 0;
/// Id of unknown words.
pub const UNK: i64 = 1;

impl Vocab {
    /// Trains a vocabulary on `texts`.
    pub fn train(texts: &[String], min_count: usize, max_size: usize) -> Vocab {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for w in word_tokens(t) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> =
            counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut words = vec!["<pad>".to_string(), "<unk>".to_string()];
        words.extend(ranked.into_iter().take(max_size.saturating_sub(2)).map(|(w, _)| w));
        Vocab::from_words(words)
    }

    /// A vocabulary from its word list (as saved).
    pub fn from_words(words: Vec<String>) -> Vocab {
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as i64)).collect();
        Vocab { words, index }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when only the special tokens are there.
    pub fn is_empty(&self) -> bool {
        self.words.len() <= 2
    }

    /// The ids of `text`'s tokens (unknown words → [`UNK`]), at most `max_len`, padded with
    /// [`PAD`] to at least `min_len`.
    pub fn encode(&self, text: &str, min_len: usize, max_len: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = word_tokens(text)
            .iter()
            .take(max_len)
            .map(|w| self.index.get(w).copied().unwrap_or(UNK))
            .collect();
        ids.resize(ids.len().max(min_len), PAD);
        ids
    }
}

/// FNV-1a, 64 bits: the hash of the n-gram features (stable across platforms and runs).
fn fnv1a(bytes: &[u8], salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hashed bag-of-n-grams features (Joulin et al. 2017 fastText-style hashing trick): word
/// unigrams and bigrams and character n-grams of `char_n` lengths taken over each word padded
/// with `<` and `>`, hashed into `buckets` ids. Returns the ids (with repetition).
pub fn hashed_ngrams(text: &str, buckets: u64, char_n: &[usize]) -> Vec<i64> {
    let words = word_tokens(text);
    let mut ids = Vec::with_capacity(words.len() * 8);
    for (i, w) in words.iter().enumerate() {
        ids.push((fnv1a(w.as_bytes(), 1) % buckets) as i64);
        if let Some(next) = words.get(i + 1) {
            let bigram = format!("{w} {next}");
            ids.push((fnv1a(bigram.as_bytes(), 2) % buckets) as i64);
        }
        let chars: Vec<char> =
            std::iter::once('<').chain(w.chars()).chain(std::iter::once('>')).collect();
        for &n in char_n {
            for window in chars.windows(n) {
                let gram: String = window.iter().collect();
                ids.push((fnv1a(gram.as_bytes(), 3 + n as u64) % buckets) as i64);
            }
        }
    }
    ids
}
