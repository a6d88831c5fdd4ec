//! Beam search over word edits (TextAttack's `BeamSearch`): words in deletion-importance order;
//! at each word every state in the beam is expanded by each allowed candidate (and kept
//! unchanged), and the `width` states with the lowest label probability survive.
//!
//! The greedy path ([`super::GreedyWordImportance`]) is carried along inside the beam, and the
//! result is the successful state with the fewest changed words among all states scored, so
//! beam search never returns a worse answer than greedy (fewer or equal words changed, success
//! whenever greedy succeeds) when the query budget allows both.
use super::{deletion_order, greedy_step, Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;
use crate::text::train::argmax;

/// Beam search of `width` states (plus the greedy path).
pub struct BeamSearch {
    /// States kept per step.
    pub width: usize,
}

type Scored = (Edits, f32);

impl TextSearch for BeamSearch {
    fn name(&self) -> &'static str {
        "beam"
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, _seed: RngKey) -> Result<SearchOutcome> {
        let budget_stop = |best: Option<Edits>| {
            let claimed_success = best.is_some();
            Ok(SearchOutcome { edits: best.unwrap_or_default(), claimed_success, stop: "budget" })
        };
        let Some((order, p0)) = deletion_order(problem, oracle)? else { return budget_stop(None) };
        let label = problem.label;
        let mut beam: Vec<Scored> = vec![(Edits::new(), p0[label])];
        let (mut greedy, mut greedy_p, mut greedy_done) = (Edits::new(), p0[label], false);
        let mut best_success: Option<Scored> = None;
        for k in order {
            if !greedy_done {
                match greedy_step(problem, oracle, &greedy, greedy_p, k)? {
                    None => return budget_stop(best_success.map(|b| b.0)),
                    Some((g, p, success)) => {
                        (greedy, greedy_p, greedy_done) = (g, p, success);
                        if success {
                            keep_best(&mut best_success, (greedy.clone(), greedy_p));
                        }
                    }
                }
            }
            let mut children: Vec<Edits> = Vec::new();
            for (state, _) in &beam {
                children.push(state.clone());
                children.extend(
                    problem.candidates[k].iter().filter_map(|c| problem.extend(state, k, c)),
                );
            }
            children.push(greedy.clone());
            children.sort();
            children.dedup();
            let texts: Vec<String> = children.iter().map(|e| problem.apply(e)).collect();
            let Some(probs) = oracle.probabilities(&texts)? else {
                return budget_stop(best_success.map(|b| b.0));
            };
            let mut scored: Vec<Scored> = Vec::new();
            for (e, p) in children.into_iter().zip(&probs) {
                if argmax(p) != label {
                    keep_best(&mut best_success, (e.clone(), p[label]));
                }
                scored.push((e, p[label]));
            }
            scored.sort_by(|a, b| {
                a.1.total_cmp(&b.1).then(a.0.len().cmp(&b.0.len())).then(a.0.cmp(&b.0))
            });
            scored.truncate(self.width.max(1));
            beam = scored;
            if best_success.as_ref().is_some_and(|(e, _)| greedy_done || e.len() <= greedy.len()) {
                break;
            }
        }
        Ok(match best_success {
            Some((edits, _)) => SearchOutcome { edits, claimed_success: true, stop: "success" },
            None => SearchOutcome {
                edits: beam.swap_remove(0).0,
                claimed_success: false,
                stop: "exhausted",
            },
        })
    }
}

/// Keeps the state with fewer changed words (then lower probability).
fn keep_best(best: &mut Option<Scored>, candidate: Scored) {
    let better =
        best.as_ref().is_none_or(|(e, p)| (candidate.0.len(), candidate.1) < (e.len(), *p));
    if better {
        *best = Some(candidate);
    }
}
