//! Character edits of DeepWordBug (Gao et al. 2018, "Black-box Generation of Adversarial Text
//! Sequences to Evade Deep Learning Classifiers"): swap two adjacent characters, substitute a
//! neighbouring key on a QWERTY keyboard, delete a character, insert a random letter. Like
//! TextAttack's recipe, each operation proposes a random position per draw; `per_op` draws each
//! (default 2), so a word gets at most 8 candidates.
use super::Transformation;
use crate::random::RngKey;

/// Neighbouring keys on a QWERTY keyboard (letters only).
fn neighbours(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'q' => "wa",
        'w' => "qes",
        'e' => "wrd",
        'r' => "etf",
        't' => "ryg",
        'y' => "tuh",
        'u' => "yij",
        'i' => "uok",
        'o' => "ipl",
        'p' => "ol",
        'a' => "qsz",
        's' => "awdxz",
        'd' => "sefxc",
        'f' => "drgcv",
        'g' => "fthvb",
        'h' => "gyjbn",
        'j' => "hukmn",
        'k' => "jilm",
        'l' => "kop",
        'z' => "asx",
        'x' => "zsdc",
        'c' => "xdfv",
        'v' => "cfgb",
        'b' => "vghn",
        'n' => "bhjm",
        'm' => "njk",
        _ => "",
    }
}

/// DeepWordBug's four character edits.
pub struct CharEdits {
    /// Random draws per operation.
    pub per_op: usize,
}

impl Default for CharEdits {
    fn default() -> Self {
        CharEdits { per_op: 2 }
    }
}

impl Transformation for CharEdits {
    fn name(&self) -> &'static str {
        "char-edits"
    }

    fn candidates(&self, word: &str, key: RngKey) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let n = chars.len();
        let mut out: Vec<String> = Vec::new();
        let mut push = |v: Vec<char>| {
            let s: String = v.into_iter().collect();
            if s != word && !s.is_empty() && !out.contains(&s) {
                out.push(s);
            }
        };
        for draw in 0..self.per_op {
            let u = key.step(draw).uniform(4);
            let pos = |x: f64, m: usize| ((x * m as f64) as usize).min(m.saturating_sub(1));
            if n >= 2 {
                let i = pos(u[0], n - 1);
                let mut v = chars.clone();
                v.swap(i, i + 1);
                push(v);
            }
            let i = pos(u[1], n);
            let keys = neighbours(chars[i]);
            if !keys.is_empty() {
                let k = keys.chars().nth(pos(u[2], keys.len())).unwrap_or('x');
                let mut v = chars.clone();
                v[i] = if chars[i].is_uppercase() { k.to_ascii_uppercase() } else { k };
                push(v);
            }
            if n >= 2 {
                let mut v = chars.clone();
                v.remove(pos(u[2], n));
                push(v);
            }
            let mut v = chars.clone();
            let letter = (b'a' + pos(u[3], 26) as u8) as char;
            v.insert(pos(u[0], n + 1), letter);
            push(v);
        }
        out
    }
}

/// Levenshtein distance in Unicode scalar values.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
