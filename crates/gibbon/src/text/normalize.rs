//! The Unicode normalization defense in front of a text model: NFKC (compatibility forms, e.g.
//! fullwidth letters; Unicode Standard Annex #15), removal of default-ignorable characters (zero-width and other invisible
//! format characters: the UTS #39 skeleton drops them), and every remaining non-ASCII character
//! whose UTS #39 confusable skeleton is ASCII replaced by that skeleton (Cyrillic `а` → `a`).
//! ASCII is left alone (the skeleton would also map `m` → `rn`, `l`/`I` → `l`, hurting accuracy).
use super::model::TextClassifier;
use crate::error::Result;
use unicode_normalization::UnicodeNormalization;

/// The normalization, character by character: ASCII is kept; a default-ignorable character is
/// dropped; a character whose skeleton is ASCII becomes that skeleton; anything else is
/// NFKC-folded and each resulting character mapped the same way (so `ϲ`, whose NFKC form is
/// `ς`, still maps through its own skeleton to `c`).
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        match ascii_skeleton(c) {
            Some(sk) => out.push_str(&sk),
            None => {
                for d in std::iter::once(c).nfkc() {
                    match ascii_skeleton(d) {
                        Some(sk) => out.push_str(&sk),
                        None => out.push(d),
                    }
                }
            }
        }
    }
    out
}

/// The UTS #39 skeleton of `c` when it is ASCII (empty for default-ignorable characters).
fn ascii_skeleton(c: char) -> Option<String> {
    if c.is_ascii() {
        return Some(c.to_string());
    }
    let mut buf = [0u8; 4];
    let sk: String = unicode_security::skeleton(c.encode_utf8(&mut buf)).collect();
    sk.is_ascii().then_some(sk)
}

/// A model behind [`normalize_text`]: attacks on it see the deployed, defended system.
pub struct Normalized<M> {
    /// The model.
    pub inner: M,
}

impl<M: TextClassifier> TextClassifier for Normalized<M> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let normalized: Vec<String> = texts.iter().map(|t| normalize_text(t)).collect();
        self.inner.probabilities(&normalized)
    }
}

/// A binary model deciding class 1 when its probability is at least `threshold` (an operating
/// point such as 5% FPR): the probabilities are shifted in logit space so that the argmax is
/// that decision, and attacks aim at the deployed threshold.
pub struct Thresholded<M> {
    /// The model.
    pub inner: M,
    /// Decision threshold on class 1's probability.
    pub threshold: f32,
}

impl<M: TextClassifier> TextClassifier for Thresholded<M> {
    fn num_classes(&self) -> usize {
        2
    }
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let logit = |p: f32| (p.clamp(1e-7, 1.0 - 1e-7) / (1.0 - p.clamp(1e-7, 1.0 - 1e-7))).ln();
        let shift = logit(self.threshold);
        Ok(self
            .inner
            .probabilities(texts)?
            .into_iter()
            .map(|p| {
                let q = 1.0 / (1.0 + (-(logit(p[1]) - shift)).exp());
                vec![1.0 - q, q]
            })
            .collect())
    }
}

impl<T: TextClassifier + ?Sized> TextClassifier for &T {
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).probabilities(texts)
    }
}

impl<T: TextClassifier + ?Sized> TextClassifier for Box<T> {
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).probabilities(texts)
    }
}
