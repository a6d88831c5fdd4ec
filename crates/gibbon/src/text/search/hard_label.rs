//! The hard-label search of Maheshwary, Maheshwary & Pudi 2021 ("Generating Natural Language
//! Attacks in a Hard Label Black Box Setting", AAAI; HLBB): the attacker sees only the predicted
//! class. Three phases, as in the paper:
//!
//! 1. **Random initialisation**: words are visited in a seeded random order and given a random
//!    allowed substitute, cumulatively, until the prediction changes; up to [`INIT_TRIES`]
//!    walks with fresh random choices.
//! 2. **Search-space reduction**: every substituted word is put back to its original value when
//!    the text stays adversarial (passes repeated until none can be restored), so the
//!    adversarial point keeps as few substitutions as labels can tell.
//! 3. **Population-based optimisation**: the paper's mutation (each substituted word tried with
//!    its other candidates) done exhaustively from the best set, extended with every candidate
//!    of every unsubstituted word added, up to [`SWEEPS`] times while it improves, each
//!    adversarial mutant reduced as in phase 2 (the added word restored last); then a population of adversarial
//!    edit sets ([`POPULATION`]) evolves for [`GENERATIONS`] generations of [`CHILDREN`]
//!    children by crossover (a position substituted in both parents takes either parent's word,
//!    one substituted in one parent is kept with probability 1/2) and one random mutation
//!    (another candidate at a substituted position, or one substitution restored and a new
//!    position substituted), every adversarial child reduced. Only adversarial edit sets enter
//!    the population, so the result is always adversarial by the labels seen.
//!
//! Departure from the paper: its fitness is the Universal Sentence Encoder similarity to the
//! original; gibbon ranks by (words changed, character edits), the quantities its constraints
//! bound, so no sentence encoder is needed. Every query goes through the [`Oracle`] (counted,
//! budgeted, labels only); when the budget runs out the best adversarial set found is returned.
use super::{Edits, Oracle, Problem, SearchOutcome, TextSearch};
use crate::error::Result;
use crate::random::RngKey;
use crate::text::transform::chars::edit_distance;

/// Random walks tried in phase 1 before giving up.
pub const INIT_TRIES: usize = 8;
/// Adversarial edit sets kept in phase 3.
pub const POPULATION: usize = 8;
/// Generations of phase 3.
pub const GENERATIONS: usize = 12;
/// Children proposed per generation.
pub const CHILDREN: usize = 8;
/// Largest number of exhaustive mutation sweeps (each from the best set so far).
pub const SWEEPS: usize = 4;

/// HLBB-style hard-label search (Maheshwary et al. 2021).
pub struct HardLabelGa;

/// Whether a set is adversarial; `None` when the budget ran out.
type Verdict = Option<bool>;

struct Ctx<'a, 'p, 'o> {
    problem: &'a Problem<'p>,
    oracle: &'a mut Oracle<'o>,
    out_of_budget: bool,
}

impl Ctx<'_, '_, '_> {
    fn adversarial(&mut self, edits: &Edits) -> Result<Verdict> {
        if self.out_of_budget {
            return Ok(None);
        }
        match self.oracle.labels(&[self.problem.apply(edits)])? {
            Some(l) => Ok(Some(l[0] != self.problem.label)),
            None => {
                self.out_of_budget = true;
                Ok(None)
            }
        }
    }

    /// Phase 2: restore substituted words while the text stays adversarial, in a random order
    /// (with `last`, a just-added position, tried after the others).
    fn reduce(&mut self, mut edits: Edits, key: RngKey, last: Option<usize>) -> Result<Edits> {
        loop {
            let mut order: Vec<usize> =
                edits.keys().copied().filter(|&k| Some(k) != last).collect();
            crate::text::data::shuffle(&mut order, key.uniform(1)[0].to_bits());
            order.extend(last.filter(|k| edits.contains_key(k)));
            let mut changed = false;
            for k in order {
                let mut restored = edits.clone();
                restored.remove(&k);
                match self.adversarial(&restored)? {
                    Some(true) => {
                        edits = restored;
                        changed = true;
                    }
                    Some(false) => {}
                    None => return Ok(edits),
                }
            }
            if !changed {
                return Ok(edits);
            }
        }
    }
}

/// Lower is better: words changed, then character edits.
fn fitness(problem: &Problem, edits: &Edits) -> (usize, usize) {
    let chars = edits.iter().map(|(&k, w)| edit_distance(problem.original.word(k), w)).sum();
    (edits.len(), chars)
}

fn positions(problem: &Problem) -> Vec<usize> {
    (0..problem.candidates.len()).filter(|&k| !problem.candidates[k].is_empty()).collect()
}

/// Phase 1: one cumulative random walk; the adversarial set or `None`.
fn random_walk(ctx: &mut Ctx, key: RngKey) -> Result<Option<Edits>> {
    let problem = ctx.problem;
    let mut order = positions(problem);
    crate::text::data::shuffle(&mut order, key.uniform(1)[0].to_bits());
    let mut edits = Edits::new();
    for (step, &k) in order.iter().enumerate() {
        let cands = &problem.candidates[k];
        let c = &cands[key.step(step + 1).below(cands.len())];
        let Some(next) = problem.extend(&edits, k, c) else { continue };
        edits = next;
        match ctx.adversarial(&edits)? {
            Some(true) => return Ok(Some(edits)),
            Some(false) => {}
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// A child of `a` and `b`: a position substituted in both parents takes either parent's
/// substitute, one substituted in one parent only is kept with probability 1/2; then one
/// mutation (another candidate at a substituted position, or one substitution restored and a
/// new position substituted).
fn child(problem: &Problem, a: &Edits, b: &Edits, key: RngKey) -> Option<Edits> {
    let mut out = Edits::new();
    let mut draw = 0usize;
    let mut coin = |n: usize| {
        draw += 1;
        key.step(draw).below(n)
    };
    for (k, w) in a.iter().chain(b.iter()) {
        if out.contains_key(k) {
            continue;
        }
        let (in_a, in_b) = (a.get(k), b.get(k));
        match (in_a, in_b) {
            (Some(x), Some(y)) => {
                out.insert(*k, if coin(2) == 0 { x.clone() } else { y.clone() });
            }
            _ if coin(2) == 0 => {
                out.insert(*k, w.clone());
            }
            _ => {}
        }
    }
    let keys: Vec<usize> = out.keys().copied().collect();
    if coin(2) == 0 && !keys.is_empty() {
        let k = keys[coin(keys.len())];
        let cands = &problem.candidates[k];
        out.insert(k, cands[coin(cands.len())].clone());
    } else {
        if !keys.is_empty() {
            out.remove(&keys[coin(keys.len())]);
        }
        let free: Vec<usize> =
            positions(problem).into_iter().filter(|k| !out.contains_key(k)).collect();
        if !free.is_empty() {
            let k = free[coin(free.len())];
            let cands = &problem.candidates[k];
            out.insert(k, cands[coin(cands.len())].clone());
        }
    }
    (!out.is_empty() && problem.within_budget(&out)).then_some(out)
}

/// The paper's mutation made exhaustive, from `edits`: every other candidate at every
/// substituted position, then every candidate at every unsubstituted position added (the
/// reduction then tries the added word last, so a stronger word can replace several weaker
/// ones). Each adversarial mutant is reduced (phase 2); those no larger than `edits` are
/// returned.
fn sweep(ctx: &mut Ctx, edits: &Edits, key: RngKey) -> Result<Vec<Edits>> {
    let problem = ctx.problem;
    let mut moves: Vec<(usize, &String)> = Vec::new();
    for (&k, current) in edits {
        moves.extend(problem.candidates[k].iter().filter(|c| *c != current).map(|c| (k, c)));
    }
    for k in positions(problem).into_iter().filter(|k| !edits.contains_key(k)) {
        moves.extend(problem.candidates[k].iter().map(|c| (k, c)));
    }
    let mut found = Vec::new();
    for (i, (k, c)) in moves.into_iter().enumerate() {
        let Some(next) = problem.extend(edits, k, c) else { continue };
        match ctx.adversarial(&next)? {
            Some(true) => {
                let reduced = ctx.reduce(next, key.step(i), Some(k))?;
                if reduced.len() <= edits.len() {
                    found.push(reduced);
                }
            }
            Some(false) => {}
            None => return Ok(found),
        }
    }
    Ok(found)
}

impl TextSearch for HardLabelGa {
    fn name(&self) -> &'static str {
        "hard-label-ga"
    }

    fn label_only(&self) -> bool {
        true
    }

    fn run(&self, problem: &Problem, oracle: &mut Oracle, seed: RngKey) -> Result<SearchOutcome> {
        let mut ctx = Ctx { problem, oracle, out_of_budget: false };
        let mut start = None;
        for t in 0..INIT_TRIES {
            if let Some(e) = random_walk(&mut ctx, seed.restart(t).stream(11))? {
                start = Some(e);
                break;
            }
            if ctx.out_of_budget {
                break;
            }
        }
        let Some(start) = start else {
            let stop = if ctx.out_of_budget { "budget" } else { "exhausted" };
            return Ok(SearchOutcome { edits: Edits::new(), claimed_success: false, stop });
        };
        let mut population = vec![ctx.reduce(start, seed.stream(12), None)?];
        // Mutation sweeps from the best set while they improve it.
        for round in 0..SWEEPS {
            let best = population[0].clone();
            for e in sweep(&mut ctx, &best, seed.restart(round).stream(16))? {
                if !population.contains(&e) {
                    population.push(e);
                }
            }
            population.sort_by_key(|e| fitness(problem, e));
            if population[0] == best || ctx.out_of_budget {
                break;
            }
        }
        population.truncate(POPULATION);
        'generations: for g in 0..GENERATIONS {
            for c in 0..CHILDREN {
                if ctx.out_of_budget {
                    break 'generations;
                }
                let key = seed.restart(g + 1).step(c).stream(13);
                let pick = |i: u64| {
                    // Tournament of two: the fitter of two random members.
                    let u = key.stream(14 + i).uniform(2);
                    let n = population.len();
                    let (x, y) = ((u[0] * n as f64) as usize, (u[1] * n as f64) as usize);
                    let (x, y) = (x.min(n - 1), y.min(n - 1));
                    if fitness(problem, &population[x]) <= fitness(problem, &population[y]) {
                        x
                    } else {
                        y
                    }
                };
                let (a, b) = (pick(0), pick(1));
                let Some(kid) = child(problem, &population[a], &population[b], key) else {
                    continue;
                };
                if population.contains(&kid) || ctx.adversarial(&kid)? != Some(true) {
                    continue;
                }
                let kid = ctx.reduce(kid, key.stream(15), None)?;
                if !population.contains(&kid) {
                    population.push(kid);
                }
            }
            population.sort_by_key(|e| fitness(problem, e));
            population.truncate(POPULATION);
        }
        population.sort_by_key(|e| fitness(problem, e));
        let edits = population.swap_remove(0);
        Ok(SearchOutcome { edits, claimed_success: true, stop: "success" })
    }
}
