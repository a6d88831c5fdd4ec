//! Searches over word edits: the attacker's strategy. A search sees a [`Problem`] (the text's
//! words and, per word, the candidate replacements that already keep the per-word constraints)
//! and an [`Oracle`] (the model behind a counted, budgeted query interface, scores or labels
//! only). Adding a search = one file implementing [`TextSearch`] + one line in [`SEARCHES`].
mod beam;
mod greedy;
mod greedy_unk;
mod hard_label;
mod label_only;
mod pwws;

pub use beam::BeamSearch;
pub use greedy::GreedyWordImportance;
pub use greedy_unk::GreedyUnkImportance;
pub use hard_label::HardLabelGa;
pub use label_only::LabelOnlyRandomWalk;
pub use pwws::Pwws;

use super::constraints::TextConstraints;
use super::model::TextClassifier;
use super::tokenize::Segments;
use super::train::argmax;
use super::transform::chars::edit_distance;
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};

/// Word index → its replacement.
pub type Edits = BTreeMap<usize, String>;

/// One text to attack.
pub struct Problem<'a> {
    /// The original text's segments.
    pub original: Segments,
    /// The label the prediction must move away from (untargeted goal).
    pub label: usize,
    /// Per word, the replacements allowed (per-word constraints already applied).
    pub candidates: Vec<Vec<String>>,
    /// The constraints (budgets are checked by the search on every proposal).
    pub constraints: &'a TextConstraints,
}

impl Problem<'_> {
    /// The text with `edits` applied.
    pub fn apply(&self, edits: &Edits) -> String {
        let mut seg = self.original.clone();
        for (&k, w) in edits {
            seg.parts[seg.words[k]] = w.clone();
        }
        seg.text()
    }

    /// True when `edits` keep the whole-text budgets (fraction of words, character edits).
    pub fn within_budget(&self, edits: &Edits) -> bool {
        let chars: usize =
            edits.iter().map(|(&k, w)| edit_distance(self.original.word(k), w)).sum();
        self.constraints.within_budget(edits.len(), self.original.words.len().max(1), chars)
    }

    /// `edits` plus word `k` → `c`, when that keeps the budgets.
    pub fn extend(&self, edits: &Edits, k: usize, c: &str) -> Option<Edits> {
        let mut next = edits.clone();
        next.insert(k, c.to_string());
        self.within_budget(&next).then_some(next)
    }

    /// The text with word `k` replaced by `w` and no other edit.
    pub fn with_word(&self, k: usize, w: &str) -> String {
        self.original.with_word(k, w).text()
    }
}

/// What a search returns: its best edits and whether it believes they succeed (the verifier
/// decides).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The edits.
    pub edits: Edits,
    /// The search's own belief that the prediction moved away from the label.
    pub claimed_success: bool,
    /// Why it stopped without success: "budget" (queries ran out) or "exhausted".
    pub stop: &'static str,
}

/// The model behind a query interface: counts every text sent, refuses past the budget, and in
/// label-only mode answers only the predicted class. A cache answers repeated texts for free.
pub struct Oracle<'a> {
    model: &'a dyn TextClassifier,
    /// Answers labels only (black-box, hard-label).
    pub label_only: bool,
    /// Texts sent to the model so far.
    pub queries: usize,
    /// Largest number of queries.
    pub budget: usize,
    cache: HashMap<String, Vec<f32>>,
}

impl<'a> Oracle<'a> {
    /// An oracle over `model`.
    pub fn new(model: &'a dyn TextClassifier, label_only: bool, budget: usize) -> Self {
        Oracle { model, label_only, queries: 0, budget, cache: HashMap::new() }
    }

    fn ask(&mut self, texts: &[String]) -> Result<Option<Vec<Vec<f32>>>> {
        let new: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            texts
                .iter()
                .filter(|t| !self.cache.contains_key(*t) && seen.insert((*t).clone()))
                .cloned()
                .collect()
        };
        if self.queries + new.len() > self.budget {
            return Ok(None);
        }
        self.queries += new.len();
        if !new.is_empty() {
            for (t, p) in new.iter().zip(self.model.probabilities(&new)?) {
                self.cache.insert(t.clone(), p);
            }
        }
        Ok(Some(texts.iter().map(|t| self.cache[t].clone()).collect()))
    }

    /// Class probabilities (score access); `None` when the budget would be exceeded.
    pub fn probabilities(&mut self, texts: &[String]) -> Result<Option<Vec<Vec<f32>>>> {
        if self.label_only {
            return Err(crate::GibbonError::Internal(
                "a score-based search ran on a label-only oracle".into(),
            ));
        }
        self.ask(texts)
    }

    /// Predicted classes (label access); `None` when the budget would be exceeded.
    pub fn labels(&mut self, texts: &[String]) -> Result<Option<Vec<usize>>> {
        Ok(self.ask(texts)?.map(|ps| ps.iter().map(|p| argmax(p)).collect()))
    }
}

/// A search strategy.
pub trait TextSearch: Send + Sync {
    /// Its name in results.
    fn name(&self) -> &'static str;
    /// True when it needs only labels.
    fn label_only(&self) -> bool {
        false
    }
    /// Searches edits moving the prediction away from `problem.label`.
    fn run(
        &self,
        problem: &Problem,
        oracle: &mut Oracle,
        seed: crate::random::RngKey,
    ) -> Result<SearchOutcome>;
}

/// Builds a search with its default parameters.
pub type SearchBuilder = fn() -> Box<dyn TextSearch>;

/// The searches by name.
pub const SEARCHES: &[(&str, SearchBuilder)] = &[
    ("greedy", || Box::new(GreedyWordImportance)),
    ("greedy-unk", || Box::new(GreedyUnkImportance)),
    ("beam", || Box::new(BeamSearch { width: 4 })),
    ("pwws", || Box::new(Pwws)),
    ("label-only", || Box::new(LabelOnlyRandomWalk)),
    ("hard-label", || Box::new(HardLabelGa)),
];

/// The search registered as `name`.
pub fn search_by_name(name: &str) -> Option<Box<dyn TextSearch>> {
    SEARCHES.iter().find(|(n, _)| *n == name).map(|(_, f)| f())
}

/// Deletion importance (TextFooler, Jin et al. 2020; DeepWordBug's replace-1 score): for every
/// word with candidates, the drop in the label's probability when the word is removed. Returns
/// the words in decreasing importance (ties by position) and the original probability; `None`
/// when the budget ran out.
pub fn deletion_order(
    problem: &Problem,
    oracle: &mut Oracle,
) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    importance_order(problem, oracle, "")
}

/// Word importance as the drop in the label's probability when the word is replaced by
/// `stand_in` (`""`: deleted), for every word with candidates; the words in decreasing
/// importance (ties by position) and the original's probabilities, `None` when the budget ran
/// out.
pub fn importance_order(
    problem: &Problem,
    oracle: &mut Oracle,
    stand_in: &str,
) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    let ks: Vec<usize> =
        (0..problem.candidates.len()).filter(|&k| !problem.candidates[k].is_empty()).collect();
    let mut texts = vec![problem.original.text()];
    texts.extend(ks.iter().map(|&k| problem.with_word(k, stand_in)));
    let Some(probs) = oracle.probabilities(&texts)? else { return Ok(None) };
    let p0 = probs[0][problem.label];
    let mut scored: Vec<(usize, f32)> =
        ks.iter().zip(&probs[1..]).map(|(&k, p)| (k, p0 - p[problem.label])).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Some((scored.into_iter().map(|(k, _)| k).collect(), probs[0].clone())))
}

/// The greedy search along an importance ranking (`ranked`: the words in order and the
/// original's probabilities, `None` when ranking ran out of budget): each word in turn gets
/// its best candidate when that lowers the label's probability, until the prediction changes.
pub fn greedy_along(
    problem: &Problem,
    oracle: &mut Oracle,
    ranked: Option<(Vec<usize>, Vec<f32>)>,
) -> Result<SearchOutcome> {
    let mut edits = Edits::new();
    let Some((order, p0)) = ranked else {
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

/// One greedy step at word `k` from `current` (label probability `p_current`): every allowed
/// candidate is scored and the best kept when it lowers the label's probability (a successful
/// candidate first). Returns the new state, its probability and success; `None` when the budget
/// ran out.
pub fn greedy_step(
    problem: &Problem,
    oracle: &mut Oracle,
    current: &Edits,
    p_current: f32,
    k: usize,
) -> Result<Option<(Edits, f32, bool)>> {
    let trials: Vec<Edits> =
        problem.candidates[k].iter().filter_map(|c| problem.extend(current, k, c)).collect();
    if trials.is_empty() {
        return Ok(Some((current.clone(), p_current, false)));
    }
    let texts: Vec<String> = trials.iter().map(|e| problem.apply(e)).collect();
    let Some(probs) = oracle.probabilities(&texts)? else { return Ok(None) };
    let key = |i: usize| (argmax(&probs[i]) == problem.label, probs[i][problem.label]);
    let best = (0..trials.len())
        .min_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
        })
        .expect("trials is not empty");
    let (unbroken, p) = key(best);
    if !unbroken || p < p_current {
        Ok(Some((trials[best].clone(), p, !unbroken)))
    } else {
        Ok(Some((current.clone(), p_current, false)))
    }
}
