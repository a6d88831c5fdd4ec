//! Greedy search by word importance with TextAttack's default importance (`GreedyWordSwapWIR`,
//! `wir_method="unk"`; Morris et al. 2020): a word's importance is the drop in the label's
//! probability when it is replaced by the token `[UNK]` (instead of deleted, as
//! [`super::GreedyWordImportance`] does); then words in that order each get their best candidate
//! when it lowers the label's probability, until the prediction changes.
use super::{greedy_along, importance_order, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;

/// The text TextAttack puts in place of a word to rank it.
pub const UNK_TOKEN: &str = "[UNK]";

/// Greedy search with `[UNK]`-replacement importance.
pub struct GreedyUnkImportance;

impl TextSearch for GreedyUnkImportance {
    fn name(&self) -> &'static str {
        "greedy-unk"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let ranked = importance_order(problem, oracle, UNK_TOKEN)?;
        greedy_along(problem, oracle, ranked)
    }
}
