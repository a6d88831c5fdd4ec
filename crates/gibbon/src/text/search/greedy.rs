//! Greedy search by word importance (TextFooler, Jin et al. 2020; DeepWordBug, Gao et al. 2018):
//! words in decreasing deletion importance, each replaced by its best candidate when that lowers
//! the label's probability, until the prediction changes.
use super::{deletion_order, greedy_step, Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;

/// Greedy word-importance-ranked search.
pub struct GreedyWordImportance;

impl TextSearch for GreedyWordImportance {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let mut edits = Edits::new();
        let Some((order, p0)) = deletion_order(problem, oracle)? else {
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
