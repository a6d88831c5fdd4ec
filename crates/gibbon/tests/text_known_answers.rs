//! Text attacks on a bag-of-words linear classifier, where the minimal number of word
//! substitutions flipping a prediction (over a given candidate set) is computed exactly by
//! brute force: greedy reaches it on a fixture where greedy is optimal, beam search is never
//! worse than greedy, neither goes below the exact minimum; the verifier rejects constraint
//! violations; a label-only search never sees scores.
use gibbon::random::RngKey;
use gibbon::text::constraints::TextConstraints;
use gibbon::text::search::{
    search_by_name, BeamSearch, Edits, GreedyWordImportance, Oracle, Problem, TextSearch,
};
use gibbon::text::tokenize::Segments;
use gibbon::text::TextClassifier;
use std::collections::HashMap;

/// p(class 1) = sigmoid(bias + Σ weight(word)), words by whitespace, unknown words weigh 0.
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

/// The fewest substitutions making the prediction class 0, over every combination of
/// candidates (None when no combination does).
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

fn run(search: &dyn TextSearch, problem: &Problem, model: &BagOfWords) -> (bool, usize, usize) {
    let mut oracle = Oracle::new(model, search.label_only(), 1_000_000);
    let out = search.run(problem, &mut oracle, RngKey::new(0, 0)).unwrap();
    let success = model.logit(&problem.apply(&out.edits)) < 0.0;
    assert_eq!(success, out.claimed_success, "the search's claim matches the model");
    (success, out.edits.len(), oracle.queries)
}

/// A tiny deterministic generator for the random fixtures.
fn lcg(state: &mut u64) -> f32 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*state >> 33) as f32) / (1u64 << 31) as f32
}

#[test]
fn greedy_reaches_the_exact_minimum_where_greedy_is_optimal() {
    // Word weights decrease along the sentence, each word's only candidate weighs 0: deleting a
    // word and substituting it gain the same, so importance order = gain order and greedy is
    // optimal. Margin 5.5 - 0.5: the three heaviest words (3 + 2 + 1.5 > 5) are needed.
    let words = ["alpha", "bravo", "charlie", "delta", "echo"];
    let w = [3.0, 2.0, 1.5, 0.4, 0.1];
    let model = BagOfWords {
        weights: words.iter().zip(w).map(|(a, b)| (a.to_string(), b)).collect(),
        bias: -1.5,
    };
    let constraints = TextConstraints { protect_stopwords: false, ..Default::default() };
    let text = "echo delta charlie bravo alpha";
    let seg = Segments::new(text);
    let candidates = (0..seg.words.len()).map(|k| vec![format!("{}x", seg.word(k))]).collect();
    let problem = Problem { original: seg, label: 1, candidates, constraints: &constraints };
    let exact = brute_force_minimum(&problem, &model).expect("a flip exists");
    assert_eq!(exact, 3);
    let (ok, words_changed, _) = run(&GreedyWordImportance, &problem, &model);
    assert!(ok);
    assert_eq!(words_changed, exact, "greedy must reach the exact minimum on this fixture");
    let (ok, beam_words, _) = run(&BeamSearch { width: 3 }, &problem, &model);
    assert!(ok && beam_words == exact);
}

#[test]
fn beam_is_never_worse_than_greedy_and_neither_beats_the_exact_minimum() {
    let mut state = 7u64;
    let constraints = TextConstraints { protect_stopwords: false, ..Default::default() };
    let (mut strictly_better, mut cases) = (0, 0);
    for case in 0..150 {
        let n = 3 + case % 4;
        let mut weights = HashMap::new();
        let mut words = Vec::new();
        let mut candidates = Vec::new();
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
        let exact = brute_force_minimum(&problem, &model);
        let greedy = run(&GreedyWordImportance, &problem, &model);
        let beam = run(&BeamSearch { width: 3 }, &problem, &model);
        cases += 1;
        // Greedy applies every improving best substitute, so on a linear model it finds a flip
        // whenever one exists.
        assert_eq!(greedy.0, exact.is_some(), "case {case}");
        assert_eq!(beam.0, exact.is_some(), "case {case}");
        if let Some(exact) = exact {
            assert!(greedy.1 >= exact && beam.1 >= exact, "case {case}: below the exact minimum");
            assert!(beam.1 <= greedy.1, "case {case}: beam {} words, greedy {}", beam.1, greedy.1);
            strictly_better += usize::from(beam.1 < greedy.1);
        }
    }
    assert!(cases > 60, "enough fixtures start on class 1 ({cases})");
    eprintln!("beam strictly better than greedy in {strictly_better} of {cases} fixtures");
}

#[test]
fn every_registered_search_respects_the_word_budget_and_the_label_only_one_sees_no_scores() {
    let words = ["alpha", "bravo", "charlie", "delta"];
    let model =
        BagOfWords { weights: words.iter().map(|w| (w.to_string(), 1.0)).collect(), bias: -1.0 };
    let constraints =
        TextConstraints { protect_stopwords: false, max_word_fraction: 0.5, ..Default::default() };
    let seg = Segments::new("alpha bravo charlie delta");
    let candidates = (0..4).map(|k| vec![format!("{}z", words[k])]).collect();
    let problem =
        Problem { original: seg.clone(), label: 1, candidates, constraints: &constraints };
    for name in ["greedy", "greedy-unk", "beam", "pwws", "label-only", "hard-label"] {
        let search = search_by_name(name).unwrap();
        let mut oracle = Oracle::new(&model, search.label_only(), 10_000);
        let out = search.run(&problem, &mut oracle, RngKey::new(1, 0)).unwrap();
        // A flip needs at least 3 of the 4 words; the 50% budget allows 2: no success.
        assert!(out.edits.len() <= 2, "{name} changed {} words", out.edits.len());
        assert!(!out.claimed_success, "{name}");
    }
    let mut oracle = Oracle::new(&model, true, 10);
    assert!(
        oracle.probabilities(&["alpha".to_string()]).is_err(),
        "label-only oracle refuses scores"
    );
    let mut oracle = Oracle::new(&model, false, 2);
    assert!(
        oracle.labels(&["a".into(), "b".into(), "c".into()]).unwrap().is_none(),
        "budget refuses 3 queries"
    );
    assert_eq!(oracle.queries, 0);
}

#[test]
fn the_constraint_check_rejects_every_violation() {
    let c = TextConstraints {
        max_word_fraction: 0.5,
        protect_stopwords: true,
        keep_pos: false,
        max_word_edit: Some(2),
        max_char_edits: Some(3),
    };
    let orig = Segments::new("the quick brown fox");
    let ok = orig.with_word(1, "quack");
    assert!(c.check(&orig, &ok, None).violations.is_empty());
    for (bad, what) in [
        (orig.with_word(0, "a"), "stopword"),
        (orig.with_word(1, "slowly"), "edit distance"),
        (orig.with_word(1, "quack").with_word(2, "brawn").with_word(3, "fax"), "word fraction"),
        (orig.with_word(1, "qu").with_word(2, "bro"), "character budget"),
    ] {
        let v = c.check(&orig, &bad, None);
        assert!(!v.violations.is_empty(), "{what} not caught");
    }
    let mut sep = orig.clone();
    sep.parts[1] = "  ".into();
    assert!(!c.check(&orig, &sep, None).violations.is_empty(), "a changed separator is caught");
    let pos = TextConstraints { keep_pos: true, ..c.clone() };
    assert!(!pos.check(&orig, &ok, None).violations.is_empty(), "POS kept needs the synonym table");
}
