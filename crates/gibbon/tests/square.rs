//! The Square attack: known answers on a linear model (L∞ and L2), the torchattacks reference on
//! the standard MNIST SmallCNN, the per-sample query budget, query counting through a
//! score-only model, targeted goals and batch-size independence.
//!
//! The targeted and L2 checks on the standard model are `#[ignore]`d (minutes); run them with
//! `cargo test --release -p gibbon --test square -- --ignored --nocapture`.
mod support;

use gibbon::attack::{
    AttackOptions, AttackRecord, Chunk, Square, SquareConfig, SquareSchedule, TensorSource,
    SQUARE_P_INIT,
};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{BuiltinModel, Classifier, ScoreModel, ScoreOracle, ScoresOf};
use gibbon::threat::{Goal, Norm, TargetSelection, ThreatModel};
use std::cell::Cell;
use std::time::Instant;
use support::{linear, mnist};
use tch::{Device, Tensor};

// ---------------------------------------------------------------------------------------------
// Linear model with samples at a known distance from the boundary (as in linear_known_answers),
// on 8×8 single-channel "images" so that squares have room to move.

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

/// One intra-op thread: on a shared 2-core machine 2-thread libtorch is several times slower
/// (results do not depend on the thread count).
fn one_thread() {
    tch::set_num_threads(1);
}

fn square_eval(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    batch_size: usize,
) -> EvalReport {
    let settings =
        EvalSettings { attacks: vec!["square".into()], batch_size, ..Default::default() };
    evaluate(model, data, threat, &settings, &RunInfo::default()).unwrap().0
}

#[test]
fn square_breaks_a_linear_model_exactly_above_the_minimal_distance() {
    let (model, v) = linear_model();
    for norm in [Norm::Linf, Norm::L2] {
        let data = samples_at_distance(&model, &v, norm);
        let started = Instant::now();
        let above = ThreatModel::new(norm, DISTANCE * 1.5).unwrap();
        let above = square_eval(&model, &data, &above, 32);
        assert_eq!(above.clean_accuracy, 1.0);
        assert_eq!(above.robust_accuracy, 0.0, "{norm}: 1.5 × the minimal distance");
        let queries: Vec<u64> = above.per_sample.iter().map(|s| s.queries).collect();
        let below = ThreatModel::new(norm, DISTANCE * 0.99).unwrap();
        let below = square_eval(&model, &data, &below, 32);
        assert_eq!(below.robust_accuracy, 1.0, "{norm}: 0.99 × the minimal distance");
        for s in &above.per_sample {
            let n = s.norm.unwrap();
            assert!(n <= DISTANCE * 1.5 + 1e-6, "{norm}: norm {n}");
        }
        for s in &below.per_sample {
            let n = s.norm.unwrap();
            assert!(n <= DISTANCE * 0.99 + 1e-6, "{norm}: norm {n}");
            // Unbroken samples spent the whole default budget.
            assert_eq!(s.queries, 5000);
        }
        eprintln!(
            "linear {norm}: queries at 1.5×: max {} mean {:.1}; {:.1} s",
            queries.iter().max().unwrap(),
            queries.iter().sum::<u64>() as f64 / queries.len() as f64,
            started.elapsed().as_secs_f64()
        );
    }
}

/// With two classes the next class is the other one: the targeted goal (cross-entropy to the
/// target) must reach it exactly as the untargeted goal does, above the minimal distance only.
#[test]
fn targeted_square_reaches_the_target_of_a_linear_model() {
    let (model, v) = linear_model();
    for norm in [Norm::Linf, Norm::L2] {
        let data = samples_at_distance(&model, &v, norm);
        for (factor, queries, robust) in [(1.5, 5000, 0.0), (0.99, 300, 1.0)] {
            let mut threat = ThreatModel::new(norm, DISTANCE * factor).unwrap();
            threat.goal = Goal::Targeted(TargetSelection::NextClass);
            threat.budget.queries = Some(queries);
            let report = square_eval(&model, &data, &threat, 32);
            assert_eq!(report.robust_accuracy, robust, "{norm} targeted at {factor} ×");
            for s in &report.per_sample {
                assert_eq!(s.target, Some(1 - s.label));
                assert!(s.queries <= queries as u64);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference models.

fn reference_model(name: &str) -> Box<dyn Classifier> {
    one_thread();
    support::reference_model(name)
}

fn linf(eps: f64, queries: usize) -> ThreatModel {
    let mut threat = ThreatModel::new(Norm::Linf, eps).unwrap();
    threat.budget.queries = Some(queries);
    threat
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

/// Square L∞ ε = 0.3 with 5,000 queries on the first `n` t10k images of the standard model;
/// torchattacks' Square reaches robust accuracy 0.000 on the first 200 (reference README).
fn std_model_reference(n: usize) {
    let model = reference_model("std");
    let data = mnist(n);
    let started = Instant::now();
    let report = square_eval(model.as_ref(), &data, &linf(0.3, 5000), 100);
    let seconds = started.elapsed().as_secs_f64();
    let mut broken: Vec<u64> = report
        .per_sample
        .iter()
        .filter(|s| s.broken_by.as_deref() == Some("square"))
        .map(|s| s.queries)
        .collect();
    let mean = broken.iter().sum::<u64>() as f64 / broken.len().max(1) as f64;
    let total: u64 = report.per_attack.iter().map(|a| a.queries).sum();
    let attack_seconds: f64 = report.per_attack.iter().map(|a| a.seconds).sum();
    eprintln!(
        "std, first {n} images, Square Linf 0.3, 5000 queries: clean {:.3} robust {:.3}; \
         successful samples: {} with mean {mean:.1} and median {} queries; \
         {total} queries in {attack_seconds:.1} s of attack ({:.0} queries/s), {seconds:.1} s total",
        report.clean_accuracy,
        report.robust_accuracy,
        broken.len(),
        median(&mut broken),
        total as f64 / attack_seconds,
    );
    assert!(report.robust_accuracy <= 0.01, "robust accuracy {}", report.robust_accuracy);
}

/// About 20 s with one thread on a loaded 2-core machine (7,468 queries).
#[test]
fn square_linf_breaks_the_standard_model_on_100_images() {
    std_model_reference(100);
}

/// The acceptance run: the first 1,000 images, robust accuracy at most torchattacks'
/// Square (0.000, the only peer row) + 1 point. A few minutes; run with
/// `cargo test --release -p gibbon --test square -- --ignored square_linf_on_1000 --nocapture`.
#[test]
#[ignore = "a few minutes; run with --ignored"]
fn square_linf_on_1000_standard_images() {
    std_model_reference(1000);
}

/// Square L2 ε = 2 with 5,000 queries on the first 100 images of the standard model. There is no
/// peer row for Square L2; white-box torchattacks PGD-L2 (40 steps) leaves 0.168 on the first
/// 1,000 (README), and a batch-shared-randomness re-implementation of AutoAttack's Square L2 left
/// 0.26 on these 100 images (two seeds); gibbon measured 0.30 (seed 0) and 0.28 (seed 1).
#[test]
#[ignore = "a few minutes: unbroken samples use all 5,000 queries; run with --ignored"]
fn square_l2_on_the_standard_model() {
    let model = reference_model("std");
    let data = mnist(100);
    let mut threat = ThreatModel::new(Norm::L2, 2.0).unwrap();
    threat.budget.queries = Some(5000);
    let started = Instant::now();
    let report = square_eval(model.as_ref(), &data, &threat, 100);
    let mut broken: Vec<u64> =
        report.per_sample.iter().filter(|s| s.broken_by.is_some()).map(|s| s.queries).collect();
    let total: u64 = report.per_attack.iter().map(|a| a.queries).sum();
    eprintln!(
        "std, first 100 images, Square L2 2.0: clean {:.3} robust {:.3}; median {} queries of \
         successful samples; {total} queries in {:.1} s",
        report.clean_accuracy,
        report.robust_accuracy,
        median(&mut broken),
        started.elapsed().as_secs_f64()
    );
    assert!(report.robust_accuracy <= 0.35, "robust accuracy {}", report.robust_accuracy);
}

/// Runs the attack directly (no evaluation) and returns its records.
fn records(
    square: &Square,
    model: &dyn ScoreModel,
    threat: &ThreatModel,
    data: &Dataset,
    n: usize,
    batch_size: usize,
    after_each: &mut dyn FnMut(&AttackRecord),
) -> Vec<AttackRecord> {
    let indices: Vec<usize> = (0..n).collect();
    let chunk = Chunk {
        x: data.batch(&indices, Device::Cpu),
        labels: data.labels_of(&indices, Device::Cpu),
        targets: None,
        indices,
    };
    let mut out = Vec::new();
    let mut source = TensorSource::new(chunk);
    let oracle = ScoreOracle::new("square", model, square.config.queries as u64, None);
    square
        .run_scores(&oracle, threat, 0, batch_size, &mut source, &mut |r| {
            after_each(&r);
            out.push(r);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn no_sample_exceeds_a_small_query_budget() {
    let model = reference_model("adv");
    let scores = ScoresOf(model.as_ref());
    let data = mnist(40);
    for budget in [20usize, 57] {
        let threat = linf(0.3, budget);
        let square =
            Square::new(&threat, &AttackOptions::default(), SquareSchedule::Fixed).unwrap();
        assert_eq!(square.config.queries, budget);
        let recs = records(&square, &scores, &threat, &data, 40, 16, &mut |_| {});
        assert_eq!(recs.len(), 40);
        let mut indices: Vec<usize> = recs.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..40).collect::<Vec<_>>());
        let unbroken = recs.iter().filter(|r| !r.claimed_success).count();
        for r in &recs {
            assert!(r.queries <= budget as u64, "sample {}: {} queries", r.index, r.queries);
            if r.claimed_success {
                // The start point is query 1, proposal k is query k + 1.
                assert_eq!(r.queries, r.step.unwrap() as u64 + 1);
            } else {
                assert_eq!(r.queries, budget as u64, "unbroken sample {}", r.index);
            }
        }
        // The evaluation's per-sample counts obey the budget as well.
        let report = square_eval(model.as_ref(), &data, &threat, 16);
        assert!(report.per_sample.iter().all(|s| s.queries <= budget as u64));
        for s in report.per_sample.iter().filter(|s| s.robust) {
            assert_eq!(s.queries, budget as u64);
        }
        eprintln!("adv, budget {budget}: {unbroken} of 40 unbroken");
        assert!(unbroken > 0, "the adversarially trained model resists {budget} queries");
    }
}

/// A score-only model that counts the rows it is asked about.
struct Counting<'a> {
    inner: ScoresOf<'a>,
    rows: Cell<u64>,
}

impl ScoreModel for Counting<'_> {
    fn scores(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        self.rows.set(self.rows.get() + x.size()[0] as u64);
        self.inner.scores(x)
    }
    fn input_shape(&self) -> &[i64] {
        self.inner.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.inner.num_classes()
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
}

#[test]
fn reported_queries_equal_the_rows_the_score_model_answered() {
    let model = reference_model("adv");
    let counting = Counting { inner: ScoresOf(model.as_ref()), rows: Cell::new(0) };
    let data = mnist(8);
    for norm in [Norm::Linf, Norm::L2] {
        let eps = if norm == Norm::Linf { 0.3 } else { 2.0 };
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        threat.budget.queries = Some(20);
        let square =
            Square::new(&threat, &AttackOptions::default(), SquareSchedule::Fixed).unwrap();
        // Batch 1: one sample at a time, so the rows answered since the previous record are
        // exactly this sample's queries.
        counting.rows.set(0);
        let mut last = 0u64;
        let recs = records(&square, &counting, &threat, &data, 8, 1, &mut |r| {
            let now = counting.rows.get();
            assert_eq!(now - last, r.queries, "{norm} sample {}", r.index);
            last = now;
        });
        assert_eq!(recs.len(), 8);
        // A pooled batch: the total agrees.
        counting.rows.set(0);
        let recs = records(&square, &counting, &threat, &data, 8, 3, &mut |_| {});
        assert_eq!(counting.rows.get(), recs.iter().map(|r| r.queries).sum::<u64>(), "{norm}");
    }
}

#[test]
fn per_sample_results_do_not_depend_on_the_batch_size() {
    // The adversarially trained model (few samples break within a small budget, so the
    // returned best points depend on every draw) and the linear model (more iterations).
    let model = reference_model("adv");
    let data = mnist(6);
    let (linear, v) = linear_model();
    for (norm, eps) in [(Norm::Linf, 0.3), (Norm::L2, 2.0)] {
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        threat.budget.queries = Some(15);
        let run = |batch| {
            serde_json::to_string(&square_eval(model.as_ref(), &data, &threat, batch).per_sample)
                .unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(16), "{norm}: batch 1 vs 16");
        assert_eq!(one, run(4), "{norm}: batch 1 vs 4");

        let points = samples_at_distance(&linear, &v, norm);
        let mut threat = ThreatModel::new(norm, DISTANCE * 1.2).unwrap();
        threat.budget.queries = Some(150);
        let run = |batch| {
            serde_json::to_string(&square_eval(&linear, &points, &threat, batch).per_sample)
                .unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(16), "linear {norm}: batch 1 vs 16");
        assert_eq!(one, run(5), "linear {norm}: batch 1 vs 5");
    }
}

/// Targeted Square on the standard model (next class): at least 90% reach their target.
#[test]
#[ignore = "about a minute under load; run with --ignored"]
fn targeted_square_reaches_the_next_class_on_the_standard_model() {
    let model = reference_model("std");
    let data = mnist(20);
    let mut threat = linf(0.3, 2000);
    threat.goal = Goal::Targeted(TargetSelection::NextClass);
    let report = square_eval(model.as_ref(), &data, &threat, 20);
    let hit = report
        .per_sample
        .iter()
        .filter(|s| s.broken_by.is_some() && Some(s.adv_pred) == s.target)
        .count();
    let attacked = report.per_sample.iter().filter(|s| s.clean_pred == s.label).count();
    let mut queries: Vec<u64> =
        report.per_sample.iter().filter(|s| s.broken_by.is_some()).map(|s| s.queries).collect();
    eprintln!(
        "targeted: {hit} of {attacked} reach the next class, median {} queries",
        median(&mut queries)
    );
    assert!(hit as f64 >= 0.9 * attacked as f64, "{hit} of {attacked}");
}

fn fraction_at(schedule: SquareSchedule, queries: usize, iteration: usize) -> f64 {
    let config = SquareConfig { queries, p_init: SQUARE_P_INIT, schedule, confidence: 0.0 };
    Square { config, log: None }.fraction(iteration)
}

#[test]
fn the_rescaled_square_schedule_stretches_to_the_budget() {
    let at = |queries, iteration| fraction_at(SquareSchedule::Rescaled, queries, iteration);
    assert_eq!(at(10_000, 0), 0.8);
    assert_eq!(at(10_000, 10), 0.8);
    assert_eq!(at(10_000, 11), 0.4);
    assert_eq!(at(10_000, 50), 0.4);
    assert_eq!(at(10_000, 51), 0.2);
    assert_eq!(at(10_000, 8000), 0.8 / 256.0);
    assert_eq!(at(10_000, 8001), 0.8 / 512.0);
    // Halved budget: breakpoints come twice as early.
    assert_eq!(at(5000, 5), 0.8);
    assert_eq!(at(5000, 6), 0.4);
    assert_eq!(at(5000, 4001), 0.8 / 512.0);
}

/// AutoAttack's standard suite (`resc_schedule=False`): the halvings come at fixed iterations
/// whatever the budget, so 5,000 queries end at p/128 (after iteration 4,000), not p/512.
#[test]
fn the_default_square_schedule_is_autoattacks_fixed_one() {
    let at = |iteration| fraction_at(SquareSchedule::Fixed, 5000, iteration);
    assert_eq!(at(10), 0.8);
    assert_eq!(at(11), 0.4);
    assert_eq!(at(200), 0.8 / 4.0);
    assert_eq!(at(201), 0.8 / 8.0);
    assert_eq!(at(2001), 0.8 / 64.0);
    assert_eq!(at(4000), 0.8 / 64.0);
    assert_eq!(at(4001), 0.8 / 128.0);
    assert_eq!(at(4999), 0.8 / 128.0);
    let threat = linf(0.3, 5000);
    let square =
        gibbon::attack::build_attack("square", &threat, &AttackOptions::default()).unwrap();
    assert_eq!(square.params()["schedule"], "fixed");
    let rescaled =
        gibbon::attack::build_attack("square-rescaled", &threat, &AttackOptions::default())
            .unwrap();
    assert_eq!(rescaled.name(), "square-rescaled");
    assert_eq!(rescaled.params()["schedule"], "rescaled");
}

#[test]
fn square_takes_every_norm_and_is_registered() {
    let l1 = ThreatModel::new(Norm::L1, 1.0).unwrap();
    assert!(Square::new(&l1, &AttackOptions::default(), SquareSchedule::Fixed).is_ok());
    let attack =
        gibbon::attack::build_attack("square", &linf(0.3, 123), &AttackOptions::default()).unwrap();
    assert_eq!(attack.name(), "square");
    assert_eq!(attack.params()["queries"], 123);
    let default = ThreatModel::new(Norm::L2, 1.0).unwrap();
    let s = Square::new(&default, &AttackOptions::default(), SquareSchedule::Fixed).unwrap();
    assert_eq!(s.config.queries, 5000);
}

/// Square-L1 on a linear model: every sample falls at ε well above its L1 distance (the search
/// only sees scores), and every returned example is inside the L1 ball and the box.
#[test]
fn square_l1_breaks_a_linear_model_inside_the_ball() {
    let (model, v) = linear::linear_model(&[1, 8, 8], 5201);
    let data = linear::samples_at_distance(&model, &v, 20, Norm::L1, 0.2, 5202);
    let mut threat = ThreatModel::new(Norm::L1, 2.0).unwrap();
    threat.budget.queries = Some(2000);
    let settings = EvalSettings { attacks: vec!["square".into()], ..Default::default() };
    let (r, _) = evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap();
    assert_eq!(r.clean_accuracy, 1.0);
    for s in &r.per_sample {
        assert!(s.norm.unwrap() <= 2.0 + 1e-5, "sample {}: norm {:?}", s.index, s.norm);
    }
    assert_eq!(r.robust_accuracy, 0.0, "{:?}", r.per_attack[0]);
}
