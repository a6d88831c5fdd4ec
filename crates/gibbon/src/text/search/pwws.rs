//! Probability Weighted Word Saliency (Ren et al. 2019, "Generating Natural Language Adversarial
//! Examples through Probability Weighted Word Saliency", ACL). Word saliency S(k) is the drop of
//! the label's probability when word k is replaced by an unknown word (`unk`); each word's best
//! substitute c*(k) is the one with the largest drop ΔP*(k) on the original text; words are
//! ranked by softmax(S)(k) · ΔP*(k) and their best substitutes applied in that order until the
//! prediction changes.
use super::{Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;
use crate::text::train::argmax;

/// PWWS.
pub struct Pwws;

/// The unknown word of the saliency (Ren et al.: "unknown").
const UNKNOWN: &str = "unk";

impl TextSearch for Pwws {
    fn name(&self) -> &'static str {
        "pwws"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let budget =
            |edits: Edits| Ok(SearchOutcome { edits, claimed_success: false, stop: "budget" });
        let label = problem.label;
        let ks: Vec<usize> =
            (0..problem.candidates.len()).filter(|&k| !problem.candidates[k].is_empty()).collect();
        let mut texts = vec![problem.original.text()];
        texts.extend(ks.iter().map(|&k| problem.with_word(k, UNKNOWN)));
        let Some(probs) = oracle.probabilities(&texts)? else { return budget(Edits::new()) };
        let p0 = probs[0][label];
        let saliency: Vec<f32> = probs[1..].iter().map(|p| p0 - p[label]).collect();
        let max_s = saliency.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = saliency.iter().map(|s| (s - max_s).exp()).sum();
        let mut ranked: Vec<(usize, String, f32)> = Vec::new();
        for (i, &k) in ks.iter().enumerate() {
            let subs: Vec<String> = problem.candidates[k].clone();
            let texts: Vec<String> = subs.iter().map(|c| problem.with_word(k, c)).collect();
            let Some(probs) = oracle.probabilities(&texts)? else { return budget(Edits::new()) };
            let (best, drop) = (0..subs.len())
                .map(|j| (j, p0 - probs[j][label]))
                .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            ranked.push((k, subs[best].clone(), (saliency[i] - max_s).exp() / z * drop));
        }
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        let mut edits = Edits::new();
        for (k, c, _) in ranked {
            let Some(next) = problem.extend(&edits, k, &c) else { continue };
            let Some(p) = oracle.probabilities(&[problem.apply(&next)])? else {
                return budget(edits);
            };
            edits = next;
            if argmax(&p[0]) != label {
                return Ok(SearchOutcome { edits, claimed_success: true, stop: "success" });
            }
        }
        Ok(SearchOutcome { edits, claimed_success: false, stop: "exhausted" })
    }
}
