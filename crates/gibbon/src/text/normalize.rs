//! The Unicode normalization defense in front of a text model: NFKC (compatibility forms, e.g.
//! fullwidth letters), removal of default-ignorable characters (zero-width and other invisible
//! format characters: the UTS #39 skeleton drops them), and every remaining non-ASCII character
//! whose UTS #39 confusable skeleton is ASCII replaced by that skeleton (Cyrillic `а` → `a`).
//! ASCII is left alone (the skeleton would also map `m` → `rn`, `l`/`I` → `l`, hurting accuracy).
use super::model::TextClassifier;
use crate::error::Result;
use unicode_normalization::UnicodeNormalization;

/// The normalization.
pub fn normalize_text(text: &str) -> String {
    let nfkc: String = text.nfkc().collect();
    let mut out = String::with_capacity(nfkc.len());
    let mut buf = [0u8; 4];
    for c in nfkc.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let sk: String = unicode_security::skeleton(c.encode_utf8(&mut buf)).collect();
        if sk.is_empty() {
            continue;
        }
        if sk.is_ascii() {
            out.push_str(&sk);
        } else {
            out.push(c);
        }
    }
    out
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
