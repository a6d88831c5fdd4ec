//! The label-only (hard-label, black-box) search: the attacker sees only the predicted class.
//! Words are visited in a seeded random order and one random allowed candidate is applied to
//! each, cumulatively, until the prediction changes (the random initialisation of hard-label
//! attacks such as HLBB, Maheshwary et al. 2021); then every changed word is tried back at its
//! original value and left reverted when the text stays adversarial (their pruning step), so
//! the result changes as few words as that walk can tell.
use super::{Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;

/// Random walk + pruning with label access only.
pub struct LabelOnlyRandomWalk;

impl TextSearch for LabelOnlyRandomWalk {
    fn name(&self) -> &'static str {
        "label-only"
    }

    fn label_only(&self) -> bool {
        true
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, seed: RngKey) -> Result<SearchOutcome> {
        let mut order: Vec<usize> =
            (0..problem.candidates.len()).filter(|&k| !problem.candidates[k].is_empty()).collect();
        crate::text::data::shuffle(&mut order, seed.uniform(1)[0].to_bits());
        let mut edits = Edits::new();
        let mut success = false;
        for (step, &k) in order.iter().enumerate() {
            let cands = &problem.candidates[k];
            let c = &cands[seed.step(step + 1).below(cands.len())];
            let Some(next) = problem.extend(&edits, k, c) else { continue };
            let Some(l) = oracle.labels(&[problem.apply(&next)])? else {
                return Ok(SearchOutcome { edits, claimed_success: false, stop: "budget" });
            };
            edits = next;
            if l[0] != problem.label {
                success = true;
                break;
            }
        }
        if !success {
            return Ok(SearchOutcome { edits, claimed_success: false, stop: "exhausted" });
        }
        for k in edits.keys().copied().collect::<Vec<_>>() {
            let mut reverted = edits.clone();
            reverted.remove(&k);
            let Some(l) = oracle.labels(&[problem.apply(&reverted)])? else { break };
            if l[0] != problem.label {
                edits = reverted;
            }
        }
        Ok(SearchOutcome { edits, claimed_success: true, stop: "success" })
    }
}
