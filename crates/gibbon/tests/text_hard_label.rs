//! The hard-label search (Maheshwary et al. 2021) on bag-of-words linear classifiers where the
//! minimal number of substitutions is known by brute force: it reaches the exact minimum on the
//! greedy-optimal fixture, stays within one word of it on random fixtures, never claims a
//! success the model does not confirm, and keeps to its query budget.
use gibbon::random::RngKey;
use gibbon::text::constraints::TextConstraints;
use gibbon::text::search::{Edits, HardLabelGa, Oracle, Problem, TextSearch};
use gibbon::text::tokenize::Segments;
use gibbon::text::TextClassifier;
use std::collections::HashMap;

struct BagOfWords {
    weights: HashMap<String, f32>,
    bias: f32,
}

impl BagOfWords {
    fn logit(&self, text: &str) -> f32 {
        self.bias
            + gibbon::text::tokenize::word_tokens(text)
                .iter()
                .map(|w| self.weights.get(w).copied().unwrap_or(0.0))
                .sum::<f32>()
    }
}

impl TextClassifier for BagOfWords {
    fn num_classes(&self) -> usize {
        2
    }
    fn probabilities(&self, texts: &[String]) -> gibbon::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let p = 1.0 / (1.0 + (-self.logit(t)).exp());
                vec![1.0 - p, p]
            })
            .collect())
    }
}

/// The fewest substitutions making the prediction class 0 (None when none does).
fn brute_force_minimum(problem: &Problem, model: &BagOfWords) -> Option<usize> {
    let n = problem.candidates.len();
    let mut best: Option<usize> = None;
    let mut choice = vec![0usize; n];
    loop {
        let mut edits = Edits::new();
        for (k, &c) in choice.iter().enumerate() {
            if c > 0 {
                edits.insert(k, problem.candidates[k][c - 1].clone());
            }
        }
        if model.logit(&problem.apply(&edits)) < 0.0 {
            best = Some(best.map_or(edits.len(), |b: usize| b.min(edits.len())));
        }
        let mut k = 0;
        while k < n {
            choice[k] += 1;
            if choice[k] <= problem.candidates[k].len() {
                break;
            }
            choice[k] = 0;
            k += 1;
        }
        if k == n {
            return best;
        }
    }
}

/// (success by the model, words changed, queries); asserts the claim matches the model.
fn run(problem: &Problem, model: &BagOfWords, budget: usize, seed: u64) -> (bool, usize, usize) {
    let mut oracle = Oracle::new(model, true, budget);
    let out = HardLabelGa.run(problem, &mut oracle, RngKey::new(seed, 0)).unwrap();
    let success = model.logit(&problem.apply(&out.edits)) < 0.0;
    assert_eq!(success, out.claimed_success, "the search's claim matches the model");
    assert!(oracle.queries <= budget, "{} queries over the budget {budget}", oracle.queries);
    assert!(problem.within_budget(&out.edits));
    (success, out.edits.len(), oracle.queries)
}

fn lcg(state: &mut u64) -> f32 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*state >> 33) as f32) / (1u64 << 31) as f32
}

#[test]
fn hard_label_reaches_the_exact_minimum_on_the_linear_fixture() {
    // Eight words, weights decreasing, logit 5.4; candidates weigh 0 except "bravox" (-0.5):
    // alpha -> alphax and bravo -> bravox (3 + 2.5 > 5.4) is the only 2-word flip.
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    let w = [3.0, 2.0, 1.5, 0.4, 0.3, 0.2, 0.1, 0.1];
    let mut weights: HashMap<String, f32> =
        words.iter().zip(w).map(|(a, b)| (a.to_string(), b)).collect();
    weights.insert("bravox".into(), -0.5);
    let model = BagOfWords { weights, bias: -2.2 };
    let constraints = TextConstraints { protect_stopwords: false, ..Default::default() };
    let seg = Segments::new(&words.join(" "));
    let candidates =
        (0..seg.words.len()).map(|k| vec![format!("{}x", seg.word(k)), "zz".into()]).collect();
    let problem = Problem { original: seg, label: 1, candidates, constraints: &constraints };
    let exact = brute_force_minimum(&problem, &model).expect("a flip exists");
    assert_eq!(exact, 2);
    for seed in 0..5 {
        let (ok, changed, queries) = run(&problem, &model, 100_000, seed);
        assert!(ok, "seed {seed}");
        assert_eq!(changed, exact, "seed {seed}: {changed} words ({queries} queries)");
    }
}

#[test]
fn hard_label_stays_within_one_word_of_the_minimum_and_never_claims_falsely() {
    let mut state = 11u64;
    let constraints = TextConstraints { protect_stopwords: false, ..Default::default() };
    let (mut cases, mut exact_hits, mut found) = (0, 0, 0);
    for case in 0..120 {
        let n = 4 + case % 4;
        let mut weights = HashMap::new();
        let (mut words, mut candidates) = (Vec::new(), Vec::new());
        for k in 0..n {
            let w = format!("w{k}");
            weights.insert(w.clone(), lcg(&mut state) * 3.0);
            let mut cands = Vec::new();
            for c in 0..(1 + (lcg(&mut state) * 3.0) as usize) {
                let cw = format!("w{k}c{c}");
                weights.insert(cw.clone(), lcg(&mut state) * 4.0 - 2.5);
                cands.push(cw);
            }
            words.push(w);
            candidates.push(cands);
        }
        let model = BagOfWords { weights, bias: 0.5 - lcg(&mut state) * 2.0 };
        let text = words.join(" ");
        if model.logit(&text) <= 0.0 {
            continue;
        }
        let problem = Problem {
            original: Segments::new(&text),
            label: 1,
            candidates,
            constraints: &constraints,
        };
        let Some(exact) = brute_force_minimum(&problem, &model) else {
            let (ok, _, _) = run(&problem, &model, 100_000, case as u64);
            assert!(!ok, "case {case}: no flip exists");
            continue;
        };
        cases += 1;
        let (ok, changed, _) = run(&problem, &model, 100_000, case as u64);
        if ok {
            found += 1;
            assert!(changed >= exact, "case {case}: below the exact minimum");
            assert!(changed <= exact + 1, "case {case}: {changed} words, minimum {exact}");
            exact_hits += usize::from(changed == exact);
        }
    }
    assert!(cases > 40, "enough flippable fixtures ({cases})");
    // Measured: a flip in 120 of 120, the exact minimum in 120 of 120.
    assert_eq!(found, cases, "found a flip in {found} of {cases} flippable fixtures");
    assert!(exact_hits * 20 >= found * 19, "exact minimum in {exact_hits} of {found}");
    eprintln!("flip found in {found}/{cases}; exact minimum in {exact_hits}/{found}");
}

#[test]
fn hard_label_returns_nothing_unverified_when_the_budget_is_tiny() {
    let words = ["alpha", "bravo", "charlie", "delta"];
    let model =
        BagOfWords { weights: words.iter().map(|w| (w.to_string(), 1.0)).collect(), bias: -1.5 };
    let constraints = TextConstraints { protect_stopwords: false, ..Default::default() };
    let seg = Segments::new(&words.join(" "));
    let candidates = (0..4).map(|k| vec![format!("{}z", words[k])]).collect();
    let problem = Problem { original: seg, label: 1, candidates, constraints: &constraints };
    for budget in 0..12 {
        // Three substitutions are needed: with 2 queries or fewer no flip can be seen.
        let (ok, _, _) = run(&problem, &model, budget, 3);
        if budget < 3 {
            assert!(!ok, "budget {budget}");
        }
    }
}
