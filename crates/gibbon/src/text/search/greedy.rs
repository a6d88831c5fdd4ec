//! Greedy search by word importance (TextFooler, Jin et al. 2020; DeepWordBug, Gao et al. 2018):
//! words in decreasing deletion importance, each replaced by its best candidate when that lowers
//! the label's probability, until the prediction changes.
use super::{deletion_order, greedy_along, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;

/// Greedy word-importance-ranked search.
pub struct GreedyWordImportance;

impl TextSearch for GreedyWordImportance {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let ranked = deletion_order(problem, oracle)?;
        greedy_along(problem, oracle, ranked)
    }
}
