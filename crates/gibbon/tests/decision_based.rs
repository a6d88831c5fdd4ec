//! The decision-based attacks (HopSkipJump L2/L∞, Boundary L2, RayS L∞): known answers on
//! linear models, the standard reference MNIST model, exact per-sample query budgets, targeted
//! goals and batch-size independence. Every evaluation goes through `gibbon::eval::evaluate`, so
//! the verifier re-checks every returned example.
//!
//! Slow checks are `#[ignore]`d; run them with
//! `cargo test --release -p gibbon --test decision_based -- --ignored --nocapture`.
mod support;

use gibbon::attack::{
    AttackOptions, AttackRecord, Boundary, Chunk, Hsj, Rays, TensorSource, BOUNDARY_QUERIES,
    HSJ_QUERIES, RAYS_QUERIES,
};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{BuiltinModel, Classifier, LabelModel, LabelOracle, PredictionsOf};
use gibbon::threat::{Goal, Knowledge, Norm, TargetSelection, ThreatModel};
use std::cell::Cell;
use std::time::Instant;
use support::{linear, mnist};
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------------------------
// A linear binary model on 8×8 single-channel inputs with samples at a known distance from the
// boundary (as in tests/square.rs).

const SIDE: i64 = 8;
const DIM: i64 = SIDE * SIDE;
const N: i64 = 12;
const DISTANCE: f64 = 0.1;

/// One intra-op thread: on a shared 2-core machine 2-thread libtorch is several times slower
/// (results do not depend on the thread count).
fn one_thread() {
    tch::set_num_threads(1);
}

fn linear_model() -> (BuiltinModel, Tensor) {
    one_thread();
    linear::linear_model(&[1, SIDE, SIDE], 7001)
}

fn samples_at_distance(model: &BuiltinModel, v: &Tensor, norm: Norm) -> Dataset {
    let data = linear::samples_at_distance(model, v, N, norm, DISTANCE, 7002);
    linear::assert_box_clear(&data, 1.5 * DISTANCE);
    data
}

fn settings(attack: &str, minimize: bool, batch_size: usize) -> EvalSettings {
    EvalSettings {
        attacks: vec![attack.into()],
        batch_size,
        options: AttackOptions { minimize, ..Default::default() },
        ..Default::default()
    }
}

/// Evaluates `attack` (through the verifier) on `data`.
fn eval(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    attack: &str,
    minimize: bool,
    batch_size: usize,
) -> EvalReport {
    let settings = settings(attack, minimize, batch_size);
    evaluate(model, data, threat, &settings, &RunInfo::default()).unwrap().0
}

/// With `minimize` and ε the box diameter, the attack's smallest adversarial norm must lie within
/// 5% of the analytic minimum for every sample, within the default budget; returns the worst
/// ratio.
fn check_minimum(attack: &str, norm: Norm, default_budget: u64) -> f64 {
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, norm);
    let exact = linear::analytic_distances(&model, &v, &data, norm);
    let threat = ThreatModel::new(norm, linear::box_diameter(norm, DIM)).unwrap();
    let started = Instant::now();
    let report = eval(&model, &data, &threat, attack, true, 16);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.clean_accuracy, 1.0);
    assert_eq!(report.robust_accuracy, 0.0, "{attack} {norm}: every sample must be broken");
    let (mut worst, mut mean) = (0.0f64, 0.0);
    for s in &report.per_sample {
        let d = exact[s.index];
        let min_norm = s.min_norm.expect("a min_norm for every sample");
        // ε never binds: the returned example is the smallest adversarial point found.
        assert!((s.norm.unwrap() - min_norm).abs() < 1e-9, "{attack} {norm}: returned != best");
        assert!(
            min_norm >= d * (1.0 - 1e-4),
            "{attack} {norm} sample {}: {min_norm} < {d}",
            s.index
        );
        assert!(s.queries <= default_budget, "{attack}: {} queries", s.queries);
        worst = worst.max(min_norm / d);
        mean += min_norm / d / report.per_sample.len() as f64;
    }
    let queries = report.per_sample.iter().map(|s| s.queries).sum::<u64>() as f64 / N as f64;
    eprintln!(
        "{attack} {norm}: min_norm / analytic minimum: worst {worst:.4}, mean {mean:.4}; \
         {queries:.0} queries per sample; {seconds:.2} s"
    );
    assert!(worst <= 1.05, "{attack} {norm}: worst ratio {worst}");
    worst
}

#[test]
fn hsj_l2_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("hsj", Norm::L2, HSJ_QUERIES as u64);
}

#[test]
fn hsj_linf_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("hsj", Norm::Linf, HSJ_QUERIES as u64);
}

#[test]
fn boundary_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("boundary", Norm::L2, BOUNDARY_QUERIES as u64);
}

#[test]
fn rays_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("rays", Norm::Linf, RAYS_QUERIES as u64);
}

/// With a fixed ε (no `minimize`) the attacks break every sample when ε is 25% above the minimal
/// distance (the verifier confirms each example) and none when it is 1% below; a sample stops as
/// soon as it holds an adversarial point within ε.
#[test]
fn with_a_fixed_eps_they_break_a_linear_model_above_the_minimal_distance_only() {
    let (model, v) = linear_model();
    for (attack, norm) in
        [("hsj", Norm::L2), ("hsj", Norm::Linf), ("boundary", Norm::L2), ("rays", Norm::Linf)]
    {
        let data = samples_at_distance(&model, &v, norm);
        let above = ThreatModel::new(norm, 1.25 * DISTANCE).unwrap();
        let report = eval(&model, &data, &above, attack, false, 16);
        assert_eq!(report.robust_accuracy, 0.0, "{attack} {norm} at 1.25 × the minimal distance");
        let mean = report.per_sample.iter().map(|s| s.queries).sum::<u64>() as f64 / N as f64;
        for s in &report.per_sample {
            assert!(s.norm.unwrap() <= 1.25 * DISTANCE + 1e-6);
            assert!(s.min_norm.unwrap() <= 1.25 * DISTANCE);
        }
        let below = ThreatModel::new(norm, 0.99 * DISTANCE).unwrap();
        let report = eval(&model, &data, &below, attack, false, 16);
        assert_eq!(report.robust_accuracy, 1.0, "{attack} {norm} at 0.99 × the minimal distance");
        for s in &report.per_sample {
            assert!(s.norm.unwrap() <= 0.99 * DISTANCE + 1e-6);
            // The smallest adversarial point found lies outside the ball, and is reported.
            assert!(s.min_norm.unwrap() > 0.99 * DISTANCE);
        }
        eprintln!("{attack} {norm}: {mean:.0} queries per sample to get within 1.25 × the minimum");
    }
}

// ---------------------------------------------------------------------------------------------
// Query budgets.

/// A label-only model that counts the rows it is asked about.
struct Counting<'a> {
    inner: PredictionsOf<'a>,
    rows: Cell<u64>,
}

impl LabelModel for Counting<'_> {
    fn labels(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        self.rows.set(self.rows.get() + x.size()[0] as u64);
        self.inner.labels(x)
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

/// One direct run of an attack on a label oracle (no evaluation).
#[derive(Clone, Copy)]
struct Direct<'a> {
    attack: &'a str,
    minimize: bool,
    budget: usize,
    batch_size: usize,
    seed: u64,
}

/// Runs the attack on a label oracle over `model` with `run.budget` queries per sample and
/// returns its records and the rows the model answered.
fn records(
    run: Direct<'_>,
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
) -> (Vec<AttackRecord>, u64) {
    let n = data.len();
    let indices: Vec<usize> = (0..n).collect();
    let chunk = Chunk {
        x: data.batch(&indices, Device::Cpu),
        labels: data.labels_of(&indices, Device::Cpu),
        targets: None,
        indices,
    };
    let mut threat = threat.clone();
    threat.budget.queries = Some(run.budget);
    let options = AttackOptions { minimize: run.minimize, ..Default::default() };
    let counting = Counting { inner: PredictionsOf(model), rows: Cell::new(0) };
    let oracle = LabelOracle::new("test", &counting, run.budget as u64, None);
    let mut out = Vec::new();
    let mut source = TensorSource::new(chunk);
    let mut sink = |r: AttackRecord| {
        out.push(r);
        Ok(())
    };
    let (seed, batch) = (run.seed, run.batch_size);
    let result = match run.attack {
        "hsj" => Hsj::new(&threat, &options).unwrap().run_oracle(
            &oracle,
            &threat,
            seed,
            batch,
            &mut source,
            &mut sink,
        ),
        "boundary" => Boundary::new(&threat, &options).unwrap().run_oracle(
            &oracle,
            &threat,
            seed,
            batch,
            &mut source,
            &mut sink,
        ),
        "rays" => Rays::new(&threat, &options).unwrap().run_oracle(
            &oracle,
            &threat,
            seed,
            batch,
            &mut source,
            &mut sink,
        ),
        other => panic!("unknown attack {other}"),
    };
    result.unwrap();
    (out, counting.rows.get())
}

/// The four attack configurations: (attack, norm).
const CONFIGURATIONS: [(&str, Norm); 4] =
    [("hsj", Norm::L2), ("hsj", Norm::Linf), ("boundary", Norm::L2), ("rays", Norm::Linf)];

/// Every sample gets exactly one record, within its budget, and the reported queries add up to
/// the rows the model answered.
fn check_budget(
    run: Direct<'_>,
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
) -> Vec<AttackRecord> {
    let (recs, rows) = records(run, model, data, threat);
    let (attack, budget) = (run.attack, run.budget);
    let mut indices: Vec<usize> = recs.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..data.len()).collect::<Vec<_>>(), "{attack}: one record per sample");
    for r in &recs {
        assert!(
            r.queries <= budget as u64,
            "{attack} sample {}: {} > {budget}",
            r.index,
            r.queries
        );
        if r.claimed_success {
            assert!(r.min_norm.unwrap() <= threat.eps);
        }
    }
    assert_eq!(rows, recs.iter().map(|r| r.queries).sum::<u64>(), "{attack}: rows answered");
    recs
}

#[test]
fn no_sample_exceeds_a_small_query_budget() {
    let (model, v) = linear_model();
    for (attack, norm) in CONFIGURATIONS {
        let data = samples_at_distance(&model, &v, norm);
        let threat = ThreatModel::new(norm, linear::box_diameter(norm, DIM)).unwrap();
        for budget in [1usize, 10, 57, 300] {
            for batch_size in [1usize, 7] {
                let recs = check_budget(
                    Direct { attack, minimize: true, budget, batch_size, seed: 0 },
                    &model,
                    &data,
                    &threat,
                );
                // With `minimize` a sample uses its whole budget, except the gradient-based HSJ,
                // which stops when a gradient estimate and its step no longer fit.
                for r in &recs {
                    if attack != "hsj" {
                        assert_eq!(r.queries, budget as u64, "{attack} {budget}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_budget_holds_on_the_standard_model() {
    let model = reference_model("std");
    let data = mnist(6);
    for (attack, norm) in CONFIGURATIONS {
        let threat = ThreatModel::new(norm, linear::box_diameter(norm, 784)).unwrap();
        for budget in [10usize, 57] {
            let run = Direct { attack, minimize: true, budget, batch_size: 7, seed: 0 };
            check_budget(run, model.as_ref(), &data, &threat);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any budget, batch size, seed, ε and `minimize`: no sample ever exceeds its budget (the
    /// oracle would refuse the query, which fails the run) and the counts add up.
    #[test]
    fn no_attack_ever_exceeds_its_query_budget(
        configuration in 0usize..4,
        budget in 1usize..400,
        batch_size in 1usize..12,
        seed in 0u64..1000,
        eps_factor in 0.5f64..2.0,
        minimize: bool,
    ) {
        let (attack, norm) = CONFIGURATIONS[configuration];
        let (model, v) = linear_model();
        let data = samples_at_distance(&model, &v, norm);
        let threat = ThreatModel::new(norm, eps_factor * DISTANCE).unwrap();
        check_budget(Direct { attack, minimize, budget, batch_size, seed }, &model, &data, &threat);
    }
}

#[test]
fn per_sample_results_do_not_depend_on_the_batch_size() {
    let (linear, v) = linear_model();
    let std = reference_model("std");
    let images = mnist(5);
    for (attack, norm) in CONFIGURATIONS {
        let points = samples_at_distance(&linear, &v, norm);
        let threat = ThreatModel::new(norm, linear::box_diameter(norm, DIM)).unwrap();
        let mut threat = threat.clone();
        threat.budget.queries = Some(400);
        let json = |r: EvalReport| serde_json::to_string(&r.per_sample).unwrap();
        let one = json(eval(&linear, &points, &threat, attack, true, 1));
        assert_eq!(one, json(eval(&linear, &points, &threat, attack, true, 7)), "{attack} {norm}");
        assert_eq!(one, json(eval(&linear, &points, &threat, attack, true, 16)), "{attack} {norm}");

        let eps = if norm == Norm::L2 { 2.0 } else { 0.3 };
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        threat.budget.queries = Some(150);
        let one = json(eval(std.as_ref(), &images, &threat, attack, false, 1));
        assert_eq!(
            one,
            json(eval(std.as_ref(), &images, &threat, attack, false, 7)),
            "std {attack}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Targeted goals on a 3-class linear model.

const CLASSES: i64 = 3;

fn three_class_model() -> (BuiltinModel, Tensor, Tensor) {
    one_thread();
    tch::manual_seed(12);
    let w = gibbon::random::normal_tensor(7101, &[CLASSES, DIM]) * 0.5;
    let b = Tensor::from_slice(&[0.1f32, -0.1, 0.05]);
    let model = linear::with_weights(&[1, SIDE, SIDE], &w, &b);
    (model, w.to_kind(Kind::Double), b.to_kind(Kind::Double))
}

/// Inputs in [0.45, 0.55] labelled by the model itself.
fn three_class_samples(model: &BuiltinModel, n: i64) -> Dataset {
    let x = gibbon::random::uniform_tensor(7102, &[n, 1, SIDE, SIDE]) * 0.1 + 0.45;
    let labels: Vec<i64> = Vec::try_from(model.logits(&x).unwrap().argmax(1, false)).unwrap();
    Dataset::from_tensor(x, labels, "three-class").unwrap()
}

/// A lower bound on the smallest L∞ perturbation that makes class `t` win: the largest of the
/// single half-space distances `m_j / ‖a_j‖₁`.
fn targeted_linf_lower_bound(w: &Tensor, b: &Tensor, x: &Tensor, t: i64) -> f64 {
    let x = x.to_kind(Kind::Double).flatten(0, -1);
    let z = w.matmul(&x) + b;
    (0..CLASSES)
        .filter(|&j| j != t)
        .map(|j| {
            let margin = z.double_value(&[j]) - z.double_value(&[t]);
            margin.max(0.0) / (w.get(t) - w.get(j)).abs().sum(Kind::Double).double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// The smallest L2 perturbation that makes class `t` win over both other classes (ties count):
/// the projection onto the intersection of two half-spaces `a_j·δ ≥ m_j`, from the KKT
/// conditions (one constraint active, else both); the box is far away and ignored.
fn targeted_l2_minimum(w: &Tensor, b: &Tensor, x: &Tensor, t: i64) -> f64 {
    let x = x.to_kind(Kind::Double).flatten(0, -1);
    let z = w.matmul(&x) + b;
    let others: Vec<i64> = (0..CLASSES).filter(|&j| j != t).collect();
    let a: Vec<Tensor> = others.iter().map(|&j| w.get(t) - w.get(j)).collect();
    let m: Vec<f64> = others.iter().map(|&j| z.double_value(&[j]) - z.double_value(&[t])).collect();
    let feasible = |delta: &Tensor| {
        a.iter().zip(&m).all(|(aj, &mj)| aj.dot(delta).double_value(&[]) >= mj - 1e-9)
    };
    let mut best = f64::INFINITY;
    for (aj, &mj) in a.iter().zip(&m) {
        let delta = aj * (mj.max(0.0) / aj.dot(aj).double_value(&[]));
        if feasible(&delta) {
            best = best.min(delta.norm().double_value(&[]));
        }
    }
    // Both active: δ = λ₁a₁ + λ₂a₂ with a_i·δ = m_i.
    let g = |p: &Tensor, q: &Tensor| p.dot(q).double_value(&[]);
    let (g11, g12, g22) = (g(&a[0], &a[0]), g(&a[0], &a[1]), g(&a[1], &a[1]));
    let det = g11 * g22 - g12 * g12;
    let l1 = (m[0] * g22 - m[1] * g12) / det;
    let l2 = (m[1] * g11 - m[0] * g12) / det;
    if l1 >= 0.0 && l2 >= 0.0 {
        let delta = &a[0] * l1 + &a[1] * l2;
        best = best.min(delta.norm().double_value(&[]));
    }
    best
}

/// Targeted (next class) attacks on the 3-class linear model with `minimize`: every sample
/// reaches its target (verified), never below the minimal distance; HSJ-L2 and Boundary land
/// within 5% of the exact targeted L2 minimum (for L∞ only a lower bound is computed here).
#[test]
fn targeted_attacks_reach_the_target_of_a_three_class_linear_model() {
    let (model, w, b) = three_class_model();
    let data = three_class_samples(&model, 9);
    for (attack, norm) in CONFIGURATIONS {
        let mut threat = ThreatModel::new(norm, linear::box_diameter(norm, DIM)).unwrap();
        threat.goal = Goal::Targeted(TargetSelection::NextClass);
        let started = Instant::now();
        let report = eval(&model, &data, &threat, attack, true, 16);
        let mut worst: f64 = 0.0;
        for s in &report.per_sample {
            let target = s.target.unwrap();
            assert_eq!(target, (s.label + 1) % CLASSES);
            assert_eq!(s.adv_pred, target, "{attack} {norm} sample {}", s.index);
            assert!(!s.robust);
            let x = data.images().get(s.index as i64);
            let reference = match norm {
                Norm::L2 => targeted_l2_minimum(&w, &b, &x, target),
                _ => targeted_linf_lower_bound(&w, &b, &x, target),
            };
            let ratio = s.min_norm.unwrap() / reference;
            assert!(ratio >= 1.0 - 1e-4, "{attack} {norm} sample {}: below the minimum", s.index);
            worst = worst.max(ratio);
        }
        let reference = if norm == Norm::L2 { "exact minimum" } else { "lower bound" };
        eprintln!(
            "targeted {attack} {norm}: worst min_norm / {reference} {worst:.4}; {:.2} s",
            started.elapsed().as_secs_f64()
        );
        if norm == Norm::L2 {
            assert!(worst <= 1.05, "targeted {attack}: worst ratio {worst}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The standard reference MNIST model.

fn reference_model(name: &str) -> Box<dyn Classifier> {
    one_thread();
    support::reference_model(name)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// HSJ-L2 with `minimize`, ε = 28 (the box diameter) and `queries` per image on the first `n`
/// test images of the standard model: every correctly classified image is broken; returns the
/// median smallest L2 norm.
fn hsj_on_std(n: usize, queries: usize, batch_size: usize) -> f64 {
    let model = reference_model("std");
    let data = mnist(n);
    let mut threat = ThreatModel::new(Norm::L2, 28.0).unwrap();
    threat.budget.queries = Some(queries);
    threat.knowledge = Knowledge::DecisionBased;
    let started = Instant::now();
    let report = eval(model.as_ref(), &data, &threat, "hsj", true, batch_size);
    let seconds = started.elapsed().as_secs_f64();
    let correct: Vec<_> = report.per_sample.iter().filter(|s| s.clean_pred == s.label).collect();
    let norms: Vec<f64> = correct.iter().filter_map(|s| s.min_norm).collect();
    assert_eq!(norms.len(), correct.len(), "every correct image gets a min_norm");
    assert_eq!(report.robust_accuracy, 0.0, "every correct image is broken");
    assert!(correct.iter().all(|s| s.queries <= queries as u64));
    let mean_queries = correct.iter().map(|s| s.queries).sum::<u64>() as f64 / n as f64;
    let m = median(norms.clone());
    eprintln!(
        "HSJ-L2, {queries} queries, std model, first {n} images: {} correct, all broken; median \
         L2 {m:.3} (min {:.3}, max {:.3}); {mean_queries:.0} queries per image; {seconds:.1} s",
        correct.len(),
        norms.iter().cloned().fold(f64::INFINITY, f64::min),
        norms.iter().cloned().fold(0.0, f64::max),
    );
    m
}

/// HSJ-L2 with 1,000 queries breaks each of the first 20 images of the standard model. Measured:
/// median L2 2.57 (white-box DeepFool: about 2.0 on the first 100, tests/minimum_norm.rs), from a
/// median of 10.7 right after the start point (noise bisected towards the image, about 16
/// queries; a 30-query budget leaves no room for a gradient step). The bounds: at most 3.2 (25%
/// above the measurement) and at most a third of the start median, so a broken gradient
/// estimate or step search fails the test.
#[test]
fn hsj_l2_breaks_the_standard_model_within_1000_queries() {
    let start = hsj_on_std(20, 30, 20);
    let m = hsj_on_std(20, 1000, 20);
    assert!(m < 3.2, "median L2 {m}");
    assert!(m < start / 3.0, "median L2 {m} after 1,000 queries, {start} after the start point");
}

/// Targeted (next class) runs with `minimize`, ε the box diameter and `queries` per image on the
/// first `n` images of the standard model; returns (images that reached their target, correctly
/// classified images, median smallest norm of those that did).
fn targeted_on_std(attack: &str, norm: Norm, queries: usize, n: usize) -> (usize, usize, f64) {
    let model = reference_model("std");
    let data = mnist(n);
    let mut threat = ThreatModel::new(norm, linear::box_diameter(norm, 784)).unwrap();
    threat.goal = Goal::Targeted(TargetSelection::NextClass);
    threat.budget.queries = Some(queries);
    let started = Instant::now();
    let report = eval(model.as_ref(), &data, &threat, attack, true, n);
    let correct: Vec<_> = report.per_sample.iter().filter(|s| s.clean_pred == s.label).collect();
    let hit: Vec<_> = correct.iter().filter(|s| s.target == Some(s.adv_pred)).collect();
    let m = median(hit.iter().filter_map(|s| s.min_norm).collect());
    eprintln!(
        "targeted {attack} {norm}, {queries} queries, std model, first {n} images: {} of {} \
         reach the next class, median smallest {norm} {m:.3}; {:.1} s",
        hit.len(),
        correct.len(),
        started.elapsed().as_secs_f64()
    );
    (hit.len(), correct.len(), m)
}

/// HSJ-L2 targeted on the standard model: every image of the first 10 reaches the next class
/// within 1,000 queries (the first image has no earlier sample of its target class and starts
/// from noise). Measured: 10 of 10, median L2 3.61 (20 images: 20 of 20, median 3.78).
#[test]
fn targeted_hsj_reaches_the_next_class_on_the_standard_model() {
    let (hit, correct, m) = targeted_on_std("hsj", Norm::L2, 1000, 10);
    assert_eq!(hit, correct);
    assert!(m < 6.0, "median L2 {m}");
}

/// All targeted configurations on the first 20 images with 1,000 queries; measured: HSJ-L2 20/20
/// (median L2 3.78), Boundary 20/20 (5.76), HSJ-L∞ 20/20 (median L∞ 0.355), RayS 19/20 (0.284).
/// About a minute: `cargo test --release -p gibbon --test decision_based -- --ignored --nocapture`
#[test]
#[ignore]
fn targeted_attacks_reach_the_next_class_on_the_standard_model() {
    for (attack, norm) in CONFIGURATIONS {
        let (hit, correct, _) = targeted_on_std(attack, norm, 1000, 20);
        assert!(hit * 10 >= correct * 9, "{attack} {norm}: {hit} of {correct}");
    }
}

/// The reference number: HSJ-L2's median smallest L2 distance after 1,000 queries on the
/// first 1,000 test images of the standard model. Measured (seed 0, batch 100, one thread): all
/// 976 correctly classified images broken, median L2 2.645 (min 0.057, max 6.06), 975 queries per
/// image on average, 930 s. Run it with
/// `cargo test --release -p gibbon --test decision_based hsj_l2_median_on_1000 -- --ignored --nocapture`
#[test]
#[ignore]
fn hsj_l2_median_on_1000_std_images() {
    let m = hsj_on_std(1000, 1000, 100);
    assert!(m < 3.2, "median L2 {m}");
}

#[test]
fn decision_attacks_are_registered_label_only_and_check_their_norm() {
    let options = AttackOptions::default();
    let l2 = ThreatModel::new(Norm::L2, 1.0).unwrap();
    let linf = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let l1 = ThreatModel::new(Norm::L1, 5.0).unwrap();
    for (name, ok, refused, default) in [
        ("hsj", vec![&l2, &linf], vec![&l1], HSJ_QUERIES),
        ("boundary", vec![&l2], vec![&linf, &l1], BOUNDARY_QUERIES),
        ("rays", vec![&linf], vec![&l2, &l1], RAYS_QUERIES),
    ] {
        for threat in ok {
            let attack = gibbon::attack::build_attack(name, threat, &options).unwrap();
            assert_eq!(attack.name(), name);
            assert_eq!(attack.knowledge(), Knowledge::DecisionBased);
            assert_eq!(attack.params()["queries"], default);
            let mut limited = threat.clone();
            limited.budget.queries = Some(123);
            let attack = gibbon::attack::build_attack(name, &limited, &options).unwrap();
            assert_eq!(attack.params()["queries"], 123);
        }
        for threat in refused {
            let Err(err) = gibbon::attack::build_attack(name, threat, &options) else {
                panic!("{name} accepted {}", threat.norm)
            };
            assert!(err.to_string().contains("norm"), "{name}: {err}");
        }
    }
    // A decision-based threat model admits them and refuses a white-box attack.
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::L2);
    let mut threat = ThreatModel::new(Norm::L2, 1.25 * DISTANCE).unwrap();
    threat.knowledge = Knowledge::DecisionBased;
    assert_eq!(eval(&model, &data, &threat, "boundary", false, 16).robust_accuracy, 0.0);
    let settings = settings("pgd", false, 16);
    assert!(evaluate(&model, &data, &threat, &settings, &RunInfo::default()).is_err());
}
