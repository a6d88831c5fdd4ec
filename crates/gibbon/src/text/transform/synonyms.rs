//! WordNet synonym swap: candidates from the WordNet 3.0 synonym table
//! (`../shared/data/wordnet_synonyms`: `word<TAB>pos<TAB>syn,syn,...`, gzip). POS-aware: a
//! substitute is proposed only under a part of speech the original word has in WordNet, and the
//! "POS kept" constraint re-checks that the pair shares a WordNet entry. There is no contextual
//! tagger: a word's possible parts of speech are its WordNet lexical categories.
use super::Transformation;
use crate::error::{GibbonError, Result};
use crate::random::RngKey;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The synonym table.
#[derive(Debug, Clone, Default)]
pub struct Synonyms {
    entries: HashMap<String, Vec<(char, Vec<String>)>>,
    /// Candidates kept per word (TextFooler's K = 50).
    pub max_candidates: usize,
}

impl Synonyms {
    /// Reads the gzip TSV at `path`.
    pub fn load(path: &Path) -> Result<Synonyms> {
        let file = std::fs::File::open(path).map_err(|e| GibbonError::io(path, e))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(|e| GibbonError::format(path, format!("not a gzip UTF-8 file: {e}")))?;
        Synonyms::parse(&text).map_err(|m| GibbonError::format(path, m))
    }

    /// Parses the TSV text (header `word<TAB>pos<TAB>synonyms`).
    pub fn parse(text: &str) -> std::result::Result<Synonyms, String> {
        let mut entries: HashMap<String, Vec<(char, Vec<String>)>> = HashMap::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let mut cols = line.split('\t');
            let (Some(word), Some(pos), Some(syns)) = (cols.next(), cols.next(), cols.next())
            else {
                return Err(format!("line {}: expected 3 tab-separated columns", i + 1));
            };
            let pos = pos
                .chars()
                .next()
                .filter(|p| "nvar".contains(*p))
                .ok_or(format!("line {}: bad POS {pos:?}", i + 1))?;
            let list = syns.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            entries.entry(word.to_string()).or_default().push((pos, list));
        }
        Ok(Synonyms { entries, max_candidates: 50 })
    }

    /// True when `substitute` is listed as a synonym of `word` under a shared part of speech.
    pub fn shares_pos(&self, word: &str, substitute: &str) -> bool {
        let sub = substitute.to_lowercase();
        self.entries
            .get(&word.to_lowercase())
            .is_some_and(|e| e.iter().any(|(_, l)| l.contains(&sub)))
    }
}

/// Restores the capitalisation pattern of `like` on `word` (all caps or first capital).
fn match_case(word: &str, like: &str) -> String {
    let upper = like.chars().filter(|c| c.is_alphabetic()).all(char::is_uppercase)
        && like.chars().count() > 1;
    if upper {
        return word.to_uppercase();
    }
    if like.chars().next().is_some_and(char::is_uppercase) {
        let mut c = word.chars();
        return c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default();
    }
    word.to_string()
}

impl Transformation for Synonyms {
    fn name(&self) -> &'static str {
        "wordnet-synonyms"
    }

    fn candidates(&self, word: &str, _key: RngKey) -> Vec<String> {
        let Some(entries) = self.entries.get(&word.to_lowercase()) else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        for (_, list) in entries {
            for s in list {
                let c = match_case(s, word);
                if c.to_lowercase() != word.to_lowercase() && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out.truncate(self.max_candidates);
        out
    }
}

impl Transformation for std::sync::Arc<Synonyms> {
    fn name(&self) -> &'static str {
        "wordnet-synonyms"
    }
    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        self.as_ref().candidates(word, key)
    }
}
