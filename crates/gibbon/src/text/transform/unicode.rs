//! Imperceptible perturbations of Boucher et al. 2022 ("Bad Characters: Imperceptible NLP
//! Attacks", IEEE S&P): homoglyphs (a letter replaced by a visually confusable character) and
//! invisible characters (zero-width characters inserted inside a word).
//!
//! The homoglyphs come from the Unicode confusables data (UTS #39) of the maintained
//! `unicode-security` crate: every code point whose skeleton is a single ASCII letter is a
//! homoglyph of that letter (e.g. Cyrillic `а` for `a`), Cyrillic and Greek ones first.
use super::Transformation;
use crate::random::RngKey;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The invisible characters inserted: ZERO WIDTH SPACE, ZERO WIDTH NON-JOINER, ZERO WIDTH
/// JOINER, WORD JOINER (all default-ignorable, rendered as nothing).
pub const INVISIBLE: [char; 4] = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}'];

/// ASCII letter → its confusable homoglyphs (non-ASCII), in code point order.
pub fn homoglyph_table() -> &'static BTreeMap<char, Vec<char>> {
    static TABLE: OnceLock<BTreeMap<char, Vec<char>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: BTreeMap<char, Vec<char>> = BTreeMap::new();
        for cp in 0x80u32..0x2_0000 {
            let Some(c) = char::from_u32(cp) else { continue };
            let mut buf = [0u8; 4];
            let sk: Vec<char> = unicode_security::skeleton(c.encode_utf8(&mut buf)).collect();
            if let [p] = sk[..] {
                if p.is_ascii_alphabetic() {
                    table.entry(p).or_default().push(c);
                }
            }
        }
        // Cyrillic and Greek look-alikes first (the classic homoglyphs), then by code point.
        let script_rank = |c: &char| match *c as u32 {
            0x400..=0x4FF => 0,
            0x370..=0x3FF => 1,
            _ => 2,
        };
        for glyphs in table.values_mut() {
            glyphs.sort_by_key(|c| (script_rank(c), *c as u32));
        }
        table
    })
}

/// Letters replaced by a homoglyph: one position per candidate, the first homoglyph of that
/// letter in the table (`max_per_word` positions, from the start of the word).
pub struct Homoglyphs {
    /// Candidates per word.
    pub max_per_word: usize,
}

impl Transformation for Homoglyphs {
    fn name(&self) -> &'static str {
        "homoglyphs"
    }
    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        let table = homoglyph_table();
        let chars: Vec<char> = word.chars().collect();
        let mut out = Vec::new();
        for (i, c) in chars.iter().enumerate() {
            if let Some(glyphs) = table.get(c) {
                let g = glyphs[key.step(i).below(glyphs.len().min(3))];
                let mut v = chars.clone();
                v[i] = g;
                out.push(v.into_iter().collect());
            }
            if out.len() >= self.max_per_word {
                break;
            }
        }
        out
    }
}

/// An invisible character inserted after the first character, and in the middle of the word.
pub struct Invisibles;

impl Transformation for Invisibles {
    fn name(&self) -> &'static str {
        "invisible-chars"
    }
    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() < 2 {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for pos in [1, chars.len() / 2] {
            let z = INVISIBLE[key.step(pos).below(INVISIBLE.len())];
            let mut v = chars.clone();
            v.insert(pos, z);
            let s: String = v.into_iter().collect();
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}
