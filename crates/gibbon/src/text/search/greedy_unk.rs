//! Greedy search by word importance with TextAttack's default importance (`GreedyWordSwapWIR`,
//! `wir_method="unk"`; Morris et al. 2020): a word's importance is the drop in the label's
//! probability when it is replaced by the token `[UNK]` (instead of deleted, as
//! [`super::GreedyWordImportance`] does); then words in that order each get their best candidate
//! when it lowers the label's probability, until the prediction changes.
use super::{greedy_step, Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;

/// The text TextAttack puts in place of a word to rank it.
pub const UNK_TOKEN: &str = "[UNK]";

/// Greedy search with `[UNK]`-replacement importance.
pub struct GreedyUnkImportance;

/// Words with candidates in decreasing `[UNK]` importance (ties by position) and the original's
/// probabilities; `None` when the budget ran out.
fn unk_order(problem: &Problem, oracle: &mut Oracle) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    let ks: Vec<usize> =
        (0..problem.candidates.len()).filter(|&k| !problem.candidates[k].is_empty()).collect();
    let mut texts = vec![problem.original.text()];
    texts.extend(ks.iter().map(|&k| problem.with_word(k, UNK_TOKEN)));
    let Some(probs) = oracle.probabilities(&texts)? else { return Ok(None) };
    let p0 = probs[0][problem.label];
    let mut scored: Vec<(usize, f32)> =
        ks.iter().zip(&probs[1..]).map(|(&k, p)| (k, p0 - p[problem.label])).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Some((scored.into_iter().map(|(k, _)| k).collect(), probs[0].clone())))
}

impl TextSearch for GreedyUnkImportance {
    fn name(&self) -> &'static str {
        "greedy-unk"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let mut edits = Edits::new();
        let Some((order, p0)) = unk_order(problem, oracle)? else {
            return Ok(SearchOutcome { edits, claimed_success: false, stop: "budget" });
        };
        let mut p = p0[problem.label];
        for k in order {
            match greedy_step(problem, oracle, &edits, p, k)? {
                None => return Ok(SearchOutcome { edits, claimed_success: false, stop: "budget" }),
                Some((next, p_next, success)) => {
                    edits = next;
                    p = p_next;
                    if success {
                        return Ok(SearchOutcome { edits, claimed_success: true, stop: "success" });
                    }
                }
            }
        }
        Ok(SearchOutcome { edits, claimed_success: false, stop: "exhausted" })
    }
}
