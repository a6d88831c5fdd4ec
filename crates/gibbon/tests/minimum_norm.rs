//! Minimum-norm attacks (DeepFool, C&W L2).
//!
//! On a linear binary classifier f(x) = v·x + c the smallest perturbation that flips the
//! prediction has L2 norm |f|/‖v‖₂ and L∞ norm |f|/‖v‖₁ (the construction of
//! linear_known_answers.rs, with inputs around 0.4..0.6 so the [0, 1] box never binds). With
//! `minimize` and ε the box diameter, the attacks must land within 1% of that minimum (and never
//! below it); with a fixed ε they must break every sample 1% above it and none 1% below. On the
//! standard reference MNIST model DeepFool must break every correctly classified image and C&W
//! must find smaller perturbations than DeepFool. Results must not depend on the batch size.
mod support;

use gibbon::attack::AttackOptions;
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{load_model, BuiltinModel, Classifier, ModelSpec};
use gibbon::threat::{Norm, ThreatModel};
use std::time::Instant;
use support::{linear, mnist, shared};
use tch::{Device, Tensor};

const DIM: i64 = 20;
const N: i64 = 40;
const DISTANCE: f64 = 0.1;

fn linear_model() -> (BuiltinModel, Tensor) {
    linear::linear_model(&[1, 1, DIM], 5001)
}

fn samples_at_distance(model: &BuiltinModel, v: &Tensor, norm: Norm) -> Dataset {
    linear::samples_at_distance(model, v, N, norm, DISTANCE, 5002)
}

/// Evaluates `attack` on the first `n` samples of `data`.
fn run(
    model: &dyn Classifier,
    data: &Dataset,
    n: usize,
    threat: &ThreatModel,
    attack: &str,
    minimize: bool,
    batch_size: usize,
) -> EvalReport {
    let settings = EvalSettings {
        n: Some(n),
        attacks: vec![attack.into()],
        batch_size,
        options: AttackOptions { minimize, ..Default::default() },
        ..Default::default()
    };
    evaluate(model, data, threat, &settings, &RunInfo::default()).unwrap().0
}

/// C&W runs up to 9 × 1,000 Adam steps per sample: it is checked on fewer samples than DeepFool.
const N_CW: usize = 16;

fn samples_for(attack: &str) -> usize {
    if attack == "cw" {
        N_CW
    } else {
        N as usize
    }
}

fn check_minimum(attack: &str, norm: Norm) {
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, norm);
    let exact = linear::analytic_distances(&model, &v, &data, norm);
    let threat = ThreatModel::new(norm, linear::box_diameter(norm, DIM)).unwrap();
    let started = Instant::now();
    let n = samples_for(attack);
    let report = run(&model, &data, n, &threat, attack, true, 16);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.clean_accuracy, 1.0);
    assert_eq!(report.robust_accuracy, 0.0, "{attack} {norm}: every sample must be broken");
    let mut worst: f64 = 0.0;
    for s in &report.per_sample {
        let d = exact[s.index];
        let n = s.norm.expect("a norm for every attacked sample");
        assert!(n >= d - 1e-4, "{attack} {norm} sample {}: {n} below the minimum {d}", s.index);
        assert!(n <= 1.01 * d, "{attack} {norm} sample {}: {n} above 1.01 × {d}", s.index);
        worst = worst.max(n / d);
    }
    let queries = report.per_sample.iter().map(|s| s.queries).sum::<u64>() as f64 / n as f64;
    eprintln!(
        "{attack} {norm}: worst norm / analytic minimum {worst:.5}, {queries:.1} queries per sample, {seconds:.2} s"
    );
}

#[test]
fn deepfool_l2_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("deepfool", Norm::L2);
}

#[test]
fn deepfool_linf_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("deepfool", Norm::Linf);
}

#[test]
fn cw_l2_reaches_the_minimal_distance_on_a_linear_model() {
    check_minimum("cw", Norm::L2);
}

#[test]
fn with_a_fixed_eps_they_break_exactly_above_the_minimal_distance() {
    let (model, v) = linear_model();
    for (attack, norm) in [("deepfool", Norm::L2), ("deepfool", Norm::Linf), ("cw", Norm::L2)] {
        let data = samples_at_distance(&model, &v, norm);
        for (eps, robust) in [(DISTANCE * 1.01, 0.0), (DISTANCE * 0.99, 1.0)] {
            let threat = ThreatModel::new(norm, eps).unwrap();
            let report = run(&model, &data, samples_for(attack), &threat, attack, false, 16);
            assert_eq!(report.clean_accuracy, 1.0);
            assert_eq!(report.robust_accuracy, robust, "{attack} {norm} eps {eps}");
            for s in &report.per_sample {
                assert!(s.norm.unwrap() <= eps + 1e-6);
            }
        }
    }
}

#[test]
fn l1_and_non_l2_threats_are_rejected() {
    let l1 = ThreatModel::new(Norm::L1, 1.0).unwrap();
    let linf = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let options = AttackOptions::default();
    assert!(gibbon::attack::build_attack("deepfool", &l1, &options).is_err());
    assert!(gibbon::attack::build_attack("cw", &linf, &options).is_err());
    assert!(gibbon::attack::build_attack("cw", &l1, &options).is_err());
}

fn std_model() -> Box<dyn Classifier> {
    let spec = ModelSpec::TorchScript(shared().join("reference/mnist_smallcnn_std.pt"));
    load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Norms of the broken samples, by index.
fn broken_norms(report: &EvalReport) -> Vec<(usize, f64)> {
    report
        .per_sample
        .iter()
        .filter(|s| s.broken_by.is_some())
        .map(|s| (s.index, s.norm.unwrap()))
        .collect()
}

/// DeepFool-L2 (unbounded, minimize) breaks every correctly classified image among the first
/// `n` and lands below torchattacks' median; returns the norms by index.
fn deepfool_on_std(n: usize) -> Vec<(usize, f64)> {
    let model = std_model();
    let data = mnist(n);
    let threat = ThreatModel::new(Norm::L2, 28.0).unwrap();
    let started = Instant::now();
    let df = run(model.as_ref(), &data, n, &threat, "deepfool", true, 100);
    let seconds = started.elapsed().as_secs_f64();
    let correct = df.per_sample.iter().filter(|s| s.clean_pred == s.label).count();
    let norms = broken_norms(&df);
    assert_eq!(norms.len(), correct, "deepfool must break every correctly classified image");
    assert_eq!(df.robust_accuracy, 0.0);
    let df_median = median(norms.iter().map(|p| p.1).collect());
    eprintln!(
        "deepfool L2 on {n} std images: {} broken of {correct} correct, median L2 {df_median:.3} (torchattacks: 2.061 on the 56 of 99 it broke), {seconds:.1} s",
        norms.len()
    );
    norms
}

#[test]
fn on_the_std_reference_model_deepfool_breaks_every_correct_image() {
    let norms = deepfool_on_std(100);
    // torchattacks stalls on 44 of 99 images; breaking all of them must not cost a larger median.
    assert!(median(norms.iter().map(|p| p.1).collect()) < 2.1);
}

/// C&W (default settings, minimize) against DeepFool on the first 32 images: smaller median L2 on
/// the images both broke, and smaller on most images. Slow (up to 9 × 1,000 Adam steps per image):
/// `cargo test --release -p gibbon --test minimum_norm -- --ignored --nocapture`
#[test]
#[ignore]
fn on_the_std_reference_model_cw_finds_smaller_norms_than_deepfool() {
    let n = 32;
    let df_norms = deepfool_on_std(n);
    let model = std_model();
    let data = mnist(n);
    let threat = ThreatModel::new(Norm::L2, 28.0).unwrap();
    let started = Instant::now();
    let cw = run(model.as_ref(), &data, n, &threat, "cw", true, 32);
    let seconds = started.elapsed().as_secs_f64();
    let cw_norms = broken_norms(&cw);
    let correct = cw.per_sample.iter().filter(|s| s.clean_pred == s.label).count();
    let both: Vec<(f64, f64)> = cw_norms
        .iter()
        .filter_map(|&(i, c)| df_norms.iter().find(|p| p.0 == i).map(|&(_, d)| (c, d)))
        .collect();
    let cw_median = median(cw_norms.iter().map(|p| p.1).collect());
    let cw_both = median(both.iter().map(|p| p.0).collect());
    let df_both = median(both.iter().map(|p| p.1).collect());
    let smaller = both.iter().filter(|p| p.0 <= p.1).count();
    let queries = cw.per_sample.iter().map(|s| s.queries).sum::<u64>() as f64 / n as f64;
    eprintln!(
        "cw L2 on {n} std images: {} broken of {correct} correct, median L2 {cw_median:.3} (torchattacks c=1: 1.167 on the 21 of 99 it broke); on the {} images both broke: cw {cw_both:.3} vs deepfool {df_both:.3}, cw smaller on {smaller}; {queries:.0} queries per image, {seconds:.1} s",
        cw_norms.len(),
        both.len()
    );
    assert!(cw_norms.len() * 10 >= correct * 9, "cw must break at least 90% of the correct images");
    assert!(cw_both < df_both, "cw median {cw_both} must be below deepfool's {df_both}");
    assert!(smaller * 10 >= both.len() * 8, "cw must beat deepfool on at least 80% of the images");
}

#[test]
fn per_sample_results_do_not_depend_on_the_batch_size() {
    let model = std_model();
    let data = mnist(3);
    let threat = ThreatModel::new(Norm::L2, 28.0).unwrap();
    let json = |r: EvalReport| serde_json::to_string(&r.per_sample).unwrap();
    for minimize in [true, false] {
        let one = json(run(model.as_ref(), &data, 3, &threat, "deepfool", minimize, 1));
        assert_eq!(one, json(run(model.as_ref(), &data, 3, &threat, "deepfool", minimize, 16)));
    }
    let (linear, v) = linear_model();
    let data = samples_at_distance(&linear, &v, Norm::L2);
    for (eps, minimize) in [(DISTANCE * 1.01, false), (linear::box_diameter(Norm::L2, DIM), true)] {
        let threat = ThreatModel::new(Norm::L2, eps).unwrap();
        let one = json(run(&linear, &data, 5, &threat, "cw", minimize, 1));
        let all = json(run(&linear, &data, 5, &threat, "cw", minimize, 16));
        assert_eq!(one, all, "cw eps {eps} minimize {minimize}");
    }
}
