//! DeepWordBug's character edits exactly as TextAttack 0.3.11's `DeepWordBugGao2018` recipe
//! composes them (Gao et al. 2018; Morris et al. 2020): one random candidate per edit type —
//! swap two neighbouring characters, substitute a random ASCII letter (`string.ascii_letters`,
//! either case), delete a character, insert a random ASCII letter — and none for words of one
//! character. gibbon's own `deepwordbug` ([`super::chars::CharEdits`]) differs: two draws per
//! type and a neighbouring-key substitution instead of a random letter.
use super::Transformation;
use crate::random::RngKey;

/// The 52 letters TextAttack draws from.
const ASCII_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// TextAttack's four random character edits, one candidate each.
pub struct TextAttackCharEdits;

impl Transformation for TextAttackCharEdits {
    fn name(&self) -> &'static str {
        "textattack-char-edits"
    }

    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let n = chars.len();
        if n <= 1 {
            return vec![];
        }
        let u = key.uniform(7);
        let pick = |x: f64, m: usize| ((x * m as f64) as usize).min(m - 1);
        let letter = |x: f64| ASCII_LETTERS[pick(x, ASCII_LETTERS.len())] as char;
        let mut out: Vec<String> = Vec::new();
        let mut push = |v: Vec<char>| {
            let s: String = v.into_iter().collect();
            if s != word && !out.contains(&s) {
                out.push(s);
            }
        };
        let mut v = chars.clone();
        v.swap(pick(u[0], n - 1), pick(u[0], n - 1) + 1);
        push(v);
        let mut v = chars.clone();
        v[pick(u[1], n)] = letter(u[2]);
        push(v);
        let mut v = chars.clone();
        v.remove(pick(u[3], n));
        push(v);
        let mut v = chars.clone();
        v.insert(pick(u[4], n), letter(u[5]));
        push(v);
        out
    }
}
