//! Query budgets and query accounting for every score- and decision-based attack: the oracle
//! refuses a query past a sample's budget, no registered query-based attack ever reports more
//! queries than its budget (property test over budgets, batch sizes and norms), the query log
//! records exactly the queries the results report, and an evaluation refuses an attack that
//! needs more access than the threat model grants.
mod support;

use gibbon::attack::{build_attack, AttackOptions, REGISTRY};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::{
    BuiltinModel, Classifier, LabelOracle, PredictionsOf, QueryLog, ScoreOracle, ScoresOf,
};
use gibbon::threat::{Knowledge, Norm, ThreatModel};
use proptest::prelude::*;
use std::io::BufRead;
use support::linear;
use tch::Tensor;

const SIDE: i64 = 8;

/// A 3-class linear model on 8×8 single-channel inputs with fixed random weights.
fn linear_model() -> BuiltinModel {
    tch::set_num_threads(1);
    let dim = SIDE * SIDE;
    let w = gibbon::random::normal_tensor(9101, &[3, dim]) * 0.5;
    let b = Tensor::from_slice(&[0.1f32, -0.1, 0.0]);
    linear::with_weights(&[1, SIDE, SIDE], &w, &b)
}

/// `n` inputs labelled with the model's own predictions (all clean-correct).
fn data(model: &BuiltinModel, n: i64) -> Dataset {
    let x = gibbon::random::uniform_tensor(9102, &[n, 1, SIDE, SIDE]);
    let labels: Vec<i64> = Vec::try_from(model.predict(&x).unwrap()).unwrap();
    Dataset::from_tensor(x, labels, "linear").unwrap()
}

/// Registry names of the attacks that see scores or labels only.
fn query_attacks() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|r| r.info.knowledge != Knowledge::WhiteBox)
        .map(|r| r.info.name)
        .collect()
}

#[test]
fn the_oracles_refuse_a_query_past_the_budget() {
    let model = linear_model();
    let x = gibbon::random::uniform_tensor(1, &[3, 1, SIDE, SIDE]);
    let scores = ScoresOf(&model);
    let oracle = ScoreOracle::new("test", &scores, 2, None);
    let _ = oracle.scores(&[4, 4], &x.narrow(0, 0, 2)).unwrap();
    assert_eq!(oracle.used(4), 2);
    assert_eq!(oracle.remaining(4), 0);
    let err = oracle.scores(&[5, 4, 6], &x).unwrap_err().to_string();
    assert!(err.contains("sample 4 would exceed its query budget of 2"), "{err}");
    // A refused batch is not charged to anyone.
    assert_eq!((oracle.used(5), oracle.used(6), oracle.total()), (0, 0, 2));
    // Rows and indices must agree.
    assert!(oracle.scores(&[1], &x).is_err());

    let labels = PredictionsOf(&model);
    let oracle = LabelOracle::new("test", &labels, 3, None);
    let y = oracle.labels(&[0, 1, 2], &x).unwrap();
    assert_eq!(y, model.predict(&x).unwrap());
    let _ = oracle.labels(&[0, 0], &x.narrow(0, 0, 2)).unwrap();
    assert!(oracle.labels(&[0, 0], &x.narrow(0, 0, 2)).is_err());
    assert_eq!(oracle.used(0), 3);
}

#[test]
fn every_query_attack_is_found_and_covered() {
    let mut names = query_attacks();
    names.sort_unstable();
    assert_eq!(
        names,
        ["boundary", "hsj", "nes", "rays", "simba", "simba-pixel", "square", "square-rescaled"]
    );
}

#[test]
fn the_query_log_records_exactly_the_reported_queries() {
    let model = linear_model();
    let data = data(&model, 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.jsonl");
    let mut threat = ThreatModel::new(Norm::Linf, 0.05).unwrap();
    threat.budget.queries = Some(30);
    for attack in query_attacks() {
        let log = QueryLog::create(&path).unwrap();
        let options = AttackOptions { query_log: Some(log), ..Default::default() };
        let settings = EvalSettings {
            attacks: vec![attack.into()],
            options,
            batch_size: 4,
            ..Default::default()
        };
        let Ok((report, _)) = evaluate(&model, &data, &threat, &settings, &RunInfo::default())
        else {
            continue; // the attack does not support L∞
        };
        let lines: Vec<serde_json::Value> =
            std::io::BufReader::new(std::fs::File::open(&path).unwrap())
                .lines()
                .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
                .collect();
        assert!(!lines.is_empty(), "{attack}: empty log");
        let logged: u64 = lines.iter().map(|l| l["rows"].as_u64().unwrap()).sum();
        assert_eq!(logged, report.total_queries, "{attack}");
        assert_eq!(lines.last().unwrap()["total"].as_u64().unwrap(), report.total_queries);
        let mut per_sample = vec![0u64; 10];
        for l in &lines {
            assert_eq!(l["attack"], attack);
            for s in l["samples"].as_array().unwrap() {
                per_sample[s.as_u64().unwrap() as usize] += 1;
            }
        }
        let reported: Vec<u64> = report.per_sample.iter().map(|s| s.queries).collect();
        assert_eq!(per_sample, reported, "{attack}");
    }
}

#[test]
fn an_evaluation_refuses_attacks_that_need_more_access_than_granted() {
    let model = linear_model();
    let data = data(&model, 4);
    let mut threat = ThreatModel::new(Norm::Linf, 0.05).unwrap();
    threat.knowledge = Knowledge::ScoreBased;
    let settings = EvalSettings { attacks: vec!["pgd".into()], ..Default::default() };
    let err = evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap_err();
    assert!(err.to_string().contains("pgd needs white-box (gradient) access"), "{err}");
    let settings = EvalSettings { attacks: vec!["square".into()], ..Default::default() };
    assert!(evaluate(&model, &data, &threat, &settings, &RunInfo::default()).is_ok());
    threat.knowledge = Knowledge::DecisionBased;
    let err = evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap_err();
    assert!(err.to_string().contains("square needs score-only access"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the budget, batch size and norm, no query-based attack reports more queries
    /// for a sample than its budget (and the oracle would have refused them anyway).
    #[test]
    fn no_query_attack_exceeds_its_budget(
        budget in 1usize..120,
        batch_size in 1usize..9,
        l2 in any::<bool>(),
        eps_scale in 0.2f64..2.0,
    ) {
        let model = linear_model();
        let data = data(&model, 8);
        let (norm, eps) = if l2 { (Norm::L2, 0.5 * eps_scale) } else { (Norm::Linf, 0.05 * eps_scale) };
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        threat.budget.queries = Some(budget);
        for attack in query_attacks() {
            if build_attack(attack, &threat, &AttackOptions::default()).is_err() {
                continue; // norm not supported by this attack
            }
            let settings =
                EvalSettings { attacks: vec![attack.into()], batch_size, ..Default::default() };
            let (report, _) = evaluate(&model, &data, &threat, &settings, &RunInfo::default())
                .unwrap_or_else(|e| panic!("{attack}, budget {budget}: {e}"));
            for s in &report.per_sample {
                prop_assert!(
                    s.queries <= budget as u64,
                    "{} used {} queries on sample {} (budget {})", attack, s.queries, s.index, budget
                );
            }
        }
    }
}
