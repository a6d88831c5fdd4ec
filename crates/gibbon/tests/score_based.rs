//! Score-based attacks SimBA (DCT and pixel bases) and NES: known answers on a linear model,
//! the standard MNIST SmallCNN broken at the ε where PGD breaks it, exact per-sample query
//! budgets, batch-size independence, targeted goals and the orthonormal DCT.
//!
//! Slow measurements are `#[ignore]`d; run them with
//! `cargo test --release -p gibbon --test score_based -- --ignored --nocapture`.
mod support;

use gibbon::attack::{
    dct2, dct_matrix, idct2, AttackOptions, AttackRecord, Chunk, Nes, Simba, SimbaBasis,
    TensorSource,
};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{BuiltinModel, Classifier, ScoreOracle, ScoresOf};
use gibbon::threat::{Goal, Norm, TargetSelection, ThreatModel};
use std::time::Instant;
use support::{linear, mnist};
use tch::{Device, Kind, Tensor};

/// One intra-op thread: on a shared 2-core machine 2-thread libtorch is several times slower
/// (results do not depend on the thread count).
fn one_thread() {
    tch::set_num_threads(1);
}

fn reference_model(name: &str) -> Box<dyn Classifier> {
    one_thread();
    support::reference_model(name)
}

fn threat(norm: Norm, eps: f64, queries: Option<usize>) -> ThreatModel {
    let mut t = ThreatModel::new(norm, eps).unwrap();
    t.budget.queries = queries;
    t
}

/// Evaluates `attack` through the evaluation, so that the verifier re-checks every example.
fn eval_with(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    attack: &str,
    alpha: Option<f64>,
    batch_size: usize,
) -> EvalReport {
    let settings = EvalSettings {
        attacks: vec![attack.into()],
        batch_size,
        options: AttackOptions { alpha, ..Default::default() },
        ..Default::default()
    };
    evaluate(model, data, threat, &settings, &RunInfo::default()).unwrap().0
}

fn median(v: &mut [u64]) -> f64 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    }
}

/// Robust accuracy and the mean and median queries of the samples the attack broke.
fn summary(report: &EvalReport) -> (f64, f64, f64) {
    let mut broken: Vec<u64> =
        report.per_sample.iter().filter(|s| s.broken_by.is_some()).map(|s| s.queries).collect();
    let mean = broken.iter().sum::<u64>() as f64 / broken.len().max(1) as f64;
    (report.robust_accuracy, mean, median(&mut broken))
}

/// Measures one configuration on the standard model, from the environment:
/// `SCORE_ATTACK` (simba, simba-pixel, nes, square), `SCORE_NORM` (linf, l2), `SCORE_EPS`,
/// `SCORE_N` (images, default 100), optional `SCORE_ALPHA` and `SCORE_QUERIES`.
#[test]
#[ignore = "a measurement, minutes; set SCORE_ATTACK etc. and run with --ignored"]
fn measure_on_the_standard_model() {
    let var = |k: &str| std::env::var(k).ok();
    let attack = var("SCORE_ATTACK").unwrap_or_else(|| "simba".into());
    let norm: Norm = var("SCORE_NORM").unwrap_or_else(|| "linf".into()).parse().unwrap();
    let eps: f64 = var("SCORE_EPS").map(|v| v.parse().unwrap()).unwrap_or(0.3);
    let n: usize = var("SCORE_N").map(|v| v.parse().unwrap()).unwrap_or(100);
    let alpha: Option<f64> = var("SCORE_ALPHA").map(|v| v.parse().unwrap());
    let queries: Option<usize> = var("SCORE_QUERIES").map(|v| v.parse().unwrap());
    let model = reference_model("std");
    let data = mnist(n);
    let started = Instant::now();
    let report = eval_with(model.as_ref(), &data, &threat(norm, eps, queries), &attack, alpha, 100);
    let (robust, mean, median) = summary(&report);
    eprintln!(
        "MEASURE {attack} {norm} eps {eps} alpha {alpha:?} queries {queries:?} n {n}: clean {:.3} \
         robust {robust:.3}; broken: mean {mean:.1} median {median} queries; total {} queries; \
         {:.1} s",
        report.clean_accuracy,
        report.total_queries,
        started.elapsed().as_secs_f64()
    );
    for s in report.per_sample.iter().filter(|s| s.robust) {
        eprintln!(
            "  unbroken {}: label {} confidence {:.4} after {} queries",
            s.index, s.label, s.adv_confidence, s.queries
        );
    }
}

// ---------------------------------------------------------------------------------------------
// DCT.

#[test]
fn the_dct_is_orthonormal() {
    for n in [1usize, 2, 7, 8, 28] {
        let c = dct_matrix(n);
        for a in 0..n {
            for b in 0..n {
                let dot: f64 = (0..n).map(|i| c[a * n + i] * c[b * n + i]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "n {n}: <row {a}, row {b}> = {dot}");
            }
        }
    }
    // dct2 and idct2 are inverse, norm-preserving, and rectangular planes work per channel.
    let x = gibbon::random::normal_tensor(5, &[3, 2, 5, 7]).to_kind(Kind::Double);
    let back = idct2(&dct2(&x));
    assert!(f64::try_from((&back - &x).abs().max()).unwrap() < 1e-12);
    let norm = |t: &Tensor| f64::try_from(t.square().sum(Kind::Double)).unwrap();
    assert!((norm(&dct2(&x)) - norm(&x)).abs() < 1e-9 * norm(&x));
    // The basis vector of frequency (u, v) is the outer product of rows u and v, with unit norm.
    let (h, w) = (5usize, 7usize);
    let (ch, cw) = (dct_matrix(h), dct_matrix(w));
    for (u, v) in [(0usize, 0usize), (1, 3), (4, 6)] {
        let one_hot = Tensor::zeros([h as i64, w as i64], (Kind::Double, Device::Cpu));
        let _ = one_hot.get(u as i64).get(v as i64).fill_(1.0);
        let q = idct2(&one_hot);
        assert!((norm(&q) - 1.0).abs() < 1e-12);
        for i in 0..h {
            for j in 0..w {
                let got = q.double_value(&[i as i64, j as i64]);
                let want = ch[u * h + i] * cw[v * w + j];
                assert!((got - want).abs() < 1e-12);
            }
        }
    }
    // The DC coefficient of a constant plane is its mean times √(h·w).
    let ones = Tensor::ones([1, 4, 6], (Kind::Double, Device::Cpu));
    assert!((dct2(&ones).double_value(&[0, 0, 0]) - 24f64.sqrt()).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Linear model with samples at a known distance from the boundary (as in tests/square.rs), on
// 8×8 single-channel "images" so that the DCT basis has two dimensions.

const SIDE: i64 = 8;
const N: i64 = 24;
const DISTANCE: f64 = 0.1;

fn linear_model() -> (BuiltinModel, Tensor) {
    one_thread();
    linear::linear_model(&[1, SIDE, SIDE], 7001)
}

fn samples_at_distance(model: &BuiltinModel, v: &Tensor, norm: Norm) -> Dataset {
    let data = linear::samples_at_distance(model, v, N, norm, DISTANCE, 7002);
    linear::assert_box_clear(&data, 1.5 * DISTANCE);
    data
}

const ATTACKS: [&str; 3] = ["simba", "simba-pixel", "nes"];

/// The first `k` samples of `data`.
fn first(data: &Dataset, k: usize) -> Dataset {
    let indices: Vec<usize> = (0..k).collect();
    Dataset::from_tensor(data.batch(&indices, Device::Cpu), data.labels()[..k].to_vec(), "first")
        .unwrap()
}

/// Queries an unbroken sample spends: SimBA the whole budget; NES whole iterations of n + 1.
fn unbroken_queries(attack: &str, budget: usize) -> u64 {
    if attack == "nes" {
        let n = gibbon::attack::NES_SAMPLES.min(budget.saturating_sub(1) / 2 * 2);
        if n == 0 {
            return 0;
        }
        (budget / (n + 1) * (n + 1)) as u64
    } else {
        budget as u64
    }
}

#[test]
fn score_based_attacks_break_a_linear_model_exactly_above_the_minimal_distance() {
    let (model, v) = linear_model();
    let budget = 1000;
    for norm in [Norm::Linf, Norm::L2] {
        let data = samples_at_distance(&model, &v, norm);
        for attack in ATTACKS {
            let above = eval_with(
                &model,
                &data,
                &threat(norm, DISTANCE * 1.5, Some(budget)),
                attack,
                None,
                32,
            );
            assert_eq!(above.clean_accuracy, 1.0);
            let (robust, mean, median) = summary(&above);
            eprintln!("linear {attack} {norm} at 1.5 d: robust {robust}, queries mean {mean:.1} median {median}");
            assert_eq!(robust, 0.0, "{attack} {norm}: 1.5 × the minimal distance");
            let below = eval_with(
                &model,
                &data,
                &threat(norm, DISTANCE * 0.99, Some(budget)),
                attack,
                None,
                32,
            );
            assert_eq!(below.robust_accuracy, 1.0, "{attack} {norm}: 0.99 × the minimal distance");
            for s in &below.per_sample {
                assert!(s.norm.unwrap() <= DISTANCE * 0.99 + 1e-6);
                assert_eq!(s.queries, unbroken_queries(attack, budget), "{attack} {norm}");
            }
        }
    }
}

/// Runs `attack` directly through a score oracle of `budget` queries per sample (no evaluation)
/// and returns its records, in the order they were finished.
fn records(
    attack: &str,
    model: &dyn Classifier,
    threat: &ThreatModel,
    data: &Dataset,
    batch_size: usize,
) -> Vec<AttackRecord> {
    let indices: Vec<usize> = (0..data.len()).collect();
    let chunk = Chunk {
        x: data.batch(&indices, Device::Cpu),
        labels: data.labels_of(&indices, Device::Cpu),
        targets: None,
        indices,
    };
    let mut source = TensorSource::new(chunk);
    let scores = ScoresOf(model);
    let budget = threat.budget.queries.unwrap() as u64;
    let oracle = ScoreOracle::new("test", &scores, budget, None);
    let mut out = Vec::new();
    let mut sink = |r: AttackRecord| {
        out.push(r);
        Ok(())
    };
    let options = AttackOptions::default();
    match attack {
        "nes" => Nes::new(threat, &options).unwrap().run_oracle(
            &oracle,
            threat,
            0,
            batch_size,
            &mut source,
            &mut sink,
        ),
        _ => {
            let basis = if attack == "simba" { SimbaBasis::Dct } else { SimbaBasis::Pixel };
            Simba::new(threat, &options, basis).unwrap().run_oracle(
                &oracle,
                threat,
                0,
                batch_size,
                &mut source,
                &mut sink,
            )
        }
    }
    .unwrap();
    for r in &out {
        assert_eq!(r.queries, oracle.used(r.index), "{attack}: reported vs charged queries");
    }
    out
}

/// Every sample's queries stay within the budget for many budgets and batch sizes (the oracle
/// refuses any query past it, so an overrun is an error); an unbroken SimBA sample spends the
/// budget exactly, an unbroken NES sample stops when no further whole iteration fits.
#[test]
fn no_attack_ever_exceeds_its_query_budget() {
    let (model, v) = linear_model();
    let samples = 8;
    for norm in [Norm::Linf, Norm::L2] {
        let data = first(&samples_at_distance(&model, &v, norm), samples);
        for attack in ATTACKS {
            for budget in [1usize, 2, 7, 33, 150, 400] {
                let threat = threat(norm, DISTANCE * 1.2, Some(budget));
                let mut broken_counts = Vec::new();
                let batch_sizes: &[usize] = if budget > 150 { &[16] } else { &[1, 5, 16] };
                for &batch_size in batch_sizes {
                    let recs = records(attack, &model, &threat, &data, batch_size);
                    let mut indices: Vec<usize> = recs.iter().map(|r| r.index).collect();
                    indices.sort_unstable();
                    assert_eq!(indices, (0..samples).collect::<Vec<_>>());
                    for r in &recs {
                        assert!(r.queries <= budget as u64, "{attack} {norm} budget {budget}");
                        if !r.claimed_success {
                            assert_eq!(
                                r.queries,
                                unbroken_queries(attack, budget),
                                "{attack} {norm} budget {budget} batch {batch_size}"
                            );
                        }
                    }
                    broken_counts.push(recs.iter().filter(|r| r.claimed_success).count());
                }
                eprintln!("{attack} {norm} budget {budget}: broken {broken_counts:?} of {samples}");
            }
        }
    }
    // A real network: the adversarially trained model leaves most samples unbroken.
    let model = reference_model("adv");
    let data = mnist(6);
    for attack in ATTACKS {
        for (norm, eps) in [(Norm::Linf, 0.3), (Norm::L2, 2.0)] {
            let budget = 57;
            let recs = records(attack, model.as_ref(), &threat(norm, eps, Some(budget)), &data, 16);
            assert_eq!(recs.len(), 6);
            let unbroken = recs.iter().filter(|r| !r.claimed_success).count();
            assert!(unbroken > 0, "{attack} {norm}");
            for r in &recs {
                assert!(r.queries <= budget as u64);
                if !r.claimed_success {
                    assert_eq!(r.queries, unbroken_queries(attack, budget), "{attack} {norm}");
                }
            }
        }
    }
}

#[test]
fn per_sample_results_do_not_depend_on_the_batch_size() {
    let per_sample = |report: EvalReport| serde_json::to_string(&report.per_sample).unwrap();
    // The adversarially trained model: few samples break within a small budget, so the
    // returned points depend on every query.
    let model = reference_model("adv");
    // (SimBA-pixel shares SimBA-DCT's search loop; it is covered on the linear model below.)
    for (attack, images, budget) in [("simba", 4, 25), ("nes", 2, 52)] {
        let data = mnist(images);
        for (norm, eps) in [(Norm::Linf, 0.3), (Norm::L2, 2.0)] {
            let threat = threat(norm, eps, Some(budget));
            let run =
                |batch| per_sample(eval_with(model.as_ref(), &data, &threat, attack, None, batch));
            let one = run(1);
            assert_eq!(one, run(16), "{attack} {norm}: batch 1 vs 16");
        }
    }
    // The linear model, over more iterations, with samples breaking at different times.
    let (linear, v) = linear_model();
    for norm in [Norm::Linf, Norm::L2] {
        let data = first(&samples_at_distance(&linear, &v, norm), 8);
        let threat = threat(norm, DISTANCE * 1.2, Some(400));
        for attack in ATTACKS {
            let run = |batch| per_sample(eval_with(&linear, &data, &threat, attack, None, batch));
            let one = run(1);
            assert_eq!(one, run(16), "linear {attack} {norm}: batch 1 vs 16");
            assert_eq!(one, run(5), "linear {attack} {norm}: batch 1 vs 5");
            // NES attacks two samples together at 128 rows per pass.
            assert_eq!(one, run(128), "linear {attack} {norm}: batch 1 vs 128");
        }
    }
}

/// The standard (undefended) model at L∞ ε = 0.3, first 50 images: white-box PGD leaves
/// nothing (reference: 0.000 on the first 1,000 for torchattacks PGD-40), and neither do the
/// score-based attacks within a reduced budget (measured: robust 0.000 for all three, median
/// queries 28 SimBA-DCT, 364 SimBA-pixel, 306 NES; on the first 100 with the default 10,000
/// queries only image 71 survives, NES; Square: none, median 44). The bounds allow one survivor
/// of 50 and about twice the measured median queries. About 30 s.
#[test]
fn score_based_attacks_break_the_standard_model_where_pgd_does() {
    let model = reference_model("std");
    let data = mnist(50);
    let linf = threat(Norm::Linf, 0.3, None);
    let pgd = eval_with(model.as_ref(), &data, &linf, "pgd", None, 50);
    assert_eq!(pgd.robust_accuracy, 0.0, "PGD");
    for (attack, budget, max_median) in
        [("simba", 2000, 60.0), ("simba-pixel", 2000, 750.0), ("nes", 3000, 650.0)]
    {
        let started = Instant::now();
        let report = eval_with(
            model.as_ref(),
            &data,
            &threat(Norm::Linf, 0.3, Some(budget)),
            attack,
            None,
            50,
        );
        let (robust, mean, median) = summary(&report);
        eprintln!(
            "std Linf 0.3, first 50: {attack} ({budget} queries) robust {robust:.3}, \
             queries mean {mean:.1} median {median}; {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(report.per_sample.iter().all(|s| s.queries <= budget as u64));
        assert!(robust <= 0.02, "{attack}: robust accuracy {robust}");
        assert!(median <= max_median, "{attack}: median queries {median}");
    }
}

/// L2 ε = 2 on the standard model, first 100 images, default budgets (10,000 queries). Here
/// white-box PGD-L2 does not break everything either (torchattacks PGD-L2, 40 steps: 0.168 on the
/// first 1,000). Measured (seed 0): SimBA-DCT 0.15 (median 143.5 queries of the broken),
/// SimBA-pixel 0.12 (761), NES 0.20 (1,020); Square (5,000 queries) 0.30. The bound: within 0.05
/// of gibbon's PGD-L2 on the same images, or the measured value + 0.03.
#[test]
#[ignore = "about 10 minutes: unbroken samples use all 10,000 queries; run with --ignored"]
fn l2_attacks_on_the_standard_model() {
    let model = reference_model("std");
    let data = mnist(100);
    let l2 = threat(Norm::L2, 2.0, None);
    let pgd = eval_with(model.as_ref(), &data, &l2, "pgd", None, 100).robust_accuracy;
    eprintln!("std L2 2.0, first 100: PGD robust {pgd:.3}");
    for (attack, measured) in [("simba", 0.15), ("simba-pixel", 0.12), ("nes", 0.20)] {
        let started = Instant::now();
        let report = eval_with(model.as_ref(), &data, &l2, attack, None, 100);
        let (robust, mean, median) = summary(&report);
        eprintln!(
            "std L2 2.0, first 100: {attack} robust {robust:.3}, queries mean {mean:.1} median \
             {median}; {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(robust <= (pgd + 0.05).max(measured + 0.03), "{attack}: {robust} (PGD {pgd})");
    }
}

/// How many samples reach their target, how many were attacked, and the median queries of the
/// successful ones.
fn targeted_on_the_standard_model(attack: &str, images: usize, budget: usize) -> (usize, usize) {
    let model = reference_model("std");
    let data = mnist(images);
    let mut linf = threat(Norm::Linf, 0.3, Some(budget));
    linf.goal = Goal::Targeted(TargetSelection::NextClass);
    let started = Instant::now();
    let report = eval_with(model.as_ref(), &data, &linf, attack, None, images);
    let hit = report
        .per_sample
        .iter()
        .filter(|s| s.broken_by.is_some() && Some(s.adv_pred) == s.target)
        .count();
    let attacked = report.per_sample.iter().filter(|s| s.clean_pred == s.label).count();
    let (_, mean, median) = summary(&report);
    eprintln!(
        "targeted {attack}, first {images}, {budget} queries: {hit} of {attacked} reach the next \
         class, queries mean {mean:.1} median {median}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (hit, attacked)
}

/// Targeted SimBA-DCT (next class) on the standard model, L∞ ε = 0.3, first 10 images: most
/// reach the target within 1,000 queries (measured: 8 of 10, median 68 queries; the other two
/// stall in a local optimum of the greedy search).
#[test]
fn targeted_simba_reaches_the_next_class_on_the_standard_model() {
    let (hit, attacked) = targeted_on_the_standard_model("simba", 10, 1000);
    assert!(hit * 10 >= attacked * 7, "{hit} of {attacked}");
}

/// Targeted (next class), all three attacks, first 20 images, 3,000 queries. Measured: SimBA-DCT
/// 17, SimBA-pixel 19 and NES 17 of 20 (median queries 86, 611 and 612).
#[test]
#[ignore = "about 90 s; run with --ignored"]
fn targeted_attacks_reach_the_next_class_on_the_standard_model() {
    for attack in ATTACKS {
        let (hit, attacked) = targeted_on_the_standard_model(attack, 20, 3000);
        assert!(hit * 4 >= attacked * 3, "{attack}: {hit} of {attacked}");
    }
}

/// With two classes the next class is the other one: the targeted objectives must reach it
/// above the minimal distance only, like the untargeted ones.
#[test]
fn targeted_attacks_reach_the_target_of_a_linear_model() {
    let (model, v) = linear_model();
    for norm in [Norm::Linf, Norm::L2] {
        let data = samples_at_distance(&model, &v, norm);
        for attack in ATTACKS {
            for (factor, robust) in [(1.5, 0.0), (0.99, 1.0)] {
                let mut t = threat(norm, DISTANCE * factor, Some(600));
                t.goal = Goal::Targeted(TargetSelection::NextClass);
                let report = eval_with(&model, &data, &t, attack, None, 32);
                assert_eq!(
                    report.robust_accuracy, robust,
                    "{attack} {norm} targeted at {factor} ×"
                );
                for s in &report.per_sample {
                    assert_eq!(s.target, Some(1 - s.label));
                    assert!(s.queries <= 600);
                }
            }
        }
    }
}

#[test]
fn attacks_are_registered_with_their_defaults() {
    use gibbon::attack::build_attack;
    use gibbon::threat::Knowledge;
    let options = AttackOptions::default();
    let linf = threat(Norm::Linf, 0.3, None);
    let l2 = threat(Norm::L2, 2.0, Some(123));
    for (name, basis) in [("simba", "dct"), ("simba-pixel", "pixel")] {
        let attack = build_attack(name, &linf, &options).unwrap();
        assert_eq!(attack.name(), name);
        assert_eq!(attack.knowledge(), Knowledge::ScoreBased);
        let params = attack.params();
        assert_eq!(params["basis"], basis);
        assert_eq!(params["queries"], 10_000);
        assert_eq!(params["step"], 0.3);
        let params = build_attack(name, &l2, &options).unwrap().params();
        assert_eq!(params["queries"], 123);
        assert_eq!(params["step"], 0.5);
    }
    let nes = build_attack("nes", &linf, &options).unwrap();
    assert_eq!(nes.name(), "nes");
    assert_eq!(nes.knowledge(), Knowledge::ScoreBased);
    let params = nes.params();
    assert_eq!(params["queries"], 10_000);
    assert_eq!(params["samples"], 50);
    assert_eq!(params["sigma"], 0.001);
    assert!((params["step"].as_f64().unwrap() - 0.06).abs() < 1e-12);
    let alpha = AttackOptions { alpha: Some(0.01), ..Default::default() };
    assert_eq!(build_attack("nes", &linf, &alpha).unwrap().params()["step"], 0.01);
    assert_eq!(build_attack("simba", &linf, &alpha).unwrap().params()["step"], 0.01);
    // L1 is refused, as is an attacker who sees labels only.
    let l1 = threat(Norm::L1, 1.0, None);
    for name in ATTACKS {
        assert!(build_attack(name, &l1, &options).is_err(), "{name} on l1");
    }
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::Linf);
    let mut labels_only = threat(Norm::Linf, 0.15, None);
    labels_only.knowledge = Knowledge::DecisionBased;
    for name in ATTACKS {
        let settings = EvalSettings { attacks: vec![name.into()], ..Default::default() };
        assert!(evaluate(&model, &data, &labels_only, &settings, &RunInfo::default()).is_err());
    }
}
