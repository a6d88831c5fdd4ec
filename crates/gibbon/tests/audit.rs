//! The gradient-masking audit: every check fires on a model that masks gradients in the way it
//! looks for, stays quiet on the honest model underneath, and the adaptive re-evaluation gets
//! the masked model's robust accuracy down to the honest model's.
//!
//! The masked models are wrappers around the shared standard reference model (a different
//! masking per wrapper, decisions as the deployed model's): rounding the input to 8 levels,
//! logits times 1e4, a gradient killer (`x.detach() + 0·x`), Gaussian input noise σ = 0.2,
//! gibbon's bit-depth defense.
mod support;

use gibbon::audit::{
    self, adapt, AdaptiveViews, AuditReport, AuditSubject, Finding, Remedy, StagePlan, WorkCounts,
};
use gibbon::data::Dataset;
use gibbon::defense::input::Defended;
use gibbon::eval::EvalSettings;
use gibbon::model::{Classifier, ModelInfo};
use gibbon::threat::{Norm, ThreatModel};
use tch::{Device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Masking {
    None,
    Round,
    Saturate,
    Detach,
    Noise,
    /// Forward exactly the honest model; the input gradient's sign flipped on a fixed random
    /// half of the pixels (`x.detach() + (r·x - (r·x).detach())`, r = ±1): nonzero, finite,
    /// and pointing nowhere in particular.
    Scramble,
    /// The input plus a faint high-frequency ripple with a fixed random phase per pixel,
    /// `x + 0.02·sin(1000·x + φ)`, before the network: a shattered gradient (Athalye et al.
    /// 2018), large and jumping in sign.
    Shatter,
}

/// A fixed pattern of uniform numbers in [0, 1) over one MNIST image, from a small LCG (no
/// global RNG).
fn pattern(seed: u64) -> Tensor {
    let mut state = seed;
    let v: Vec<f32> = (0..784)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_slice(&v).view([1, 1, 28, 28])
}

/// A fixed ±1 pattern over one MNIST image.
fn scramble_signs() -> Tensor {
    pattern(0x2545_f491).ge(0.5).to_kind(tch::Kind::Float) * 2.0 - 1.0
}

/// The reference model behind one kind of masking.
struct Masked {
    inner: Box<dyn Classifier>,
    masking: Masking,
    info: ModelInfo,
}

fn masked(masking: Masking) -> Masked {
    let inner = support::reference_model("std");
    let mut info = inner.info().clone();
    info.arch = Some(format!("{masking:?}"));
    Masked { inner, masking, info }
}

impl Classifier for Masked {
    fn forward(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        match self.masking {
            Masking::None => self.inner.forward(x),
            Masking::Round => self.inner.forward(&((x * 7.0).round() / 7.0)),
            Masking::Saturate => Ok(self.inner.forward(x)? * 1e4),
            Masking::Detach => self.inner.forward(&(x.detach() + x * 0.0)),
            Masking::Noise => self.inner.forward(&(x + x.randn_like() * 0.2)),
            Masking::Shatter => {
                let phase = pattern(0x9e37_79b9) * (2.0 * std::f64::consts::PI);
                self.inner.forward(&(x + (x * 1000.0 + phase).sin() * 0.02))
            }
            Masking::Scramble => {
                let rx = x * scramble_signs();
                self.inner.forward(&(x.detach() + (&rx - rx.detach())))
            }
        }
    }
    fn input_shape(&self) -> &[i64] {
        self.inner.input_shape()
    }
    fn num_classes(&self) -> i64 {
        10
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
}

fn threat(eps: f64) -> ThreatModel {
    ThreatModel::new(Norm::Linf, eps).unwrap()
}

/// The finding of the check `name` (looked up in the registry, so removing it fails).
fn finding(name: &str, model: &dyn Classifier, data: &Dataset, eps: f64) -> Finding {
    let t = threat(eps);
    let subject = AuditSubject::new(model, data, &t, data.len(), 0).unwrap();
    audit::check(name).unwrap().run(&subject).unwrap()
}

#[test]
fn the_registry_lists_every_check_once() {
    let names: Vec<&str> = audit::CHECKS.iter().map(|c| c.name()).collect();
    let all = [
        "graph_ops",
        "randomness",
        "gradients",
        "landscape",
        "unbounded",
        "more_work",
        "gradient_free",
    ];
    assert_eq!(names, all, "cheap checks first");
    for want in all {
        assert_eq!(names.iter().filter(|&&n| n == want).count(), 1, "{want} in {names:?}");
        assert!(!audit::check(want).unwrap().question().is_empty());
    }
    assert!(audit::check("nope").is_err());
}

#[test]
fn gradients_fire_on_rounding_detach_and_saturation_not_on_the_honest_model() {
    let data = support::mnist(40);
    let honest = finding("gradients", &masked(Masking::None), &data, 0.3);
    assert!(!honest.fired, "{}", honest.verdict);
    for m in [Masking::Round, Masking::Detach] {
        let f = finding("gradients", &masked(m), &data, 0.3);
        assert!(f.fired, "{m:?}: {}", f.verdict);
        assert!(f.evidence["zero_or_nonfinite_gradient"].as_f64().unwrap() > 0.9, "{m:?}");
        assert!(f.remedies.contains(&Remedy::GradientFree), "{m:?}");
    }
    let f = finding("gradients", &masked(Masking::Saturate), &data, 0.3);
    assert!(f.fired && f.remedies == vec![Remedy::RescaledLogits], "{}", f.verdict);
    assert!(f.evidence["saturated_cross_entropy"].as_f64().unwrap() > 0.5);
}

#[test]
fn randomness_fires_on_input_noise_only() {
    let data = support::mnist(40);
    for m in [Masking::None, Masking::Round, Masking::Saturate] {
        let f = finding("randomness", &masked(m), &data, 0.3);
        assert!(!f.fired, "{m:?}: {}", f.verdict);
    }
    let f = finding("randomness", &masked(Masking::Noise), &data, 0.3);
    assert!(f.fired && f.remedies == vec![Remedy::Eot], "{}", f.verdict);
}

#[test]
fn graph_ops_flag_a_non_differentiable_defense_until_its_bpda_view_swaps_it() {
    let data = support::mnist(8);
    let spec = "bits:depth=3,noise:sigma=0.1";
    let plain = Defended::new(support::reference_model("std"), spec.parse().unwrap()).unwrap();
    let f = finding("graph_ops", &plain, &data, 0.3);
    assert!(f.fired, "{}", f.verdict);
    assert!(f.remedies.contains(&Remedy::Bpda) && f.remedies.contains(&Remedy::Eot), "{f:?}");
    let bpda =
        Defended::new(support::reference_model("std"), "bits:depth=3".parse().unwrap()).unwrap();
    let f = finding("graph_ops", &bpda.with_bpda(), &data, 0.3);
    assert!(!f.fired, "{}", f.verdict);
    assert_eq!(f.evidence["scan"]["ops"][0]["swapped"], true);
}

#[test]
fn an_unbounded_attack_breaks_everything_unless_the_gradient_is_masked() {
    let data = support::mnist(30);
    let honest = finding("unbounded", &masked(Masking::None), &data, 0.3);
    assert!(!honest.fired, "{}", honest.verdict);
    assert_eq!(honest.evidence["surviving"], 0);
    let f = finding("unbounded", &masked(Masking::Round), &data, 0.3);
    assert!(f.fired, "{}", f.verdict);
}

#[test]
fn gradient_free_beating_apgd_fires_on_rounding_not_on_the_honest_model() {
    let data = support::mnist(30);
    let honest = finding("gradient_free", &masked(Masking::None), &data, 0.15);
    assert!(!honest.fired, "{}", honest.verdict);
    let f = finding("gradient_free", &masked(Masking::Round), &data, 0.15);
    assert!(f.fired, "{}", f.verdict);
    assert!(f.evidence["square_broken_after_apgd"].as_u64().unwrap() >= 3);
}

#[test]
fn the_landscape_flags_a_gradient_that_points_nowhere() {
    let data = support::mnist(30);
    for m in [Masking::None, Masking::Saturate] {
        let f = finding("landscape", &masked(m), &data, 0.3);
        assert!(!f.fired, "{m:?}: {}", f.verdict);
        assert!(f.evidence["gradient_beats_random"].as_f64().unwrap() > 0.9, "{m:?}: {f:?}");
        let jag = f.evidence["median_jaggedness"].as_f64().unwrap();
        assert!(jag < 1.5, "{m:?}: a ReLU network is near linear near its input: {jag}");
    }
    let f = finding("landscape", &masked(Masking::Scramble), &data, 0.3);
    assert!(f.fired, "{}", f.verdict);
    assert!(f.evidence["gradient_beats_random"].as_f64().unwrap() < 0.5, "{f:?}");
    assert!(f.remedies.contains(&Remedy::GradientFree));
    let f = finding("landscape", &masked(Masking::Shatter), &data, 0.3);
    assert!(f.fired, "{}", f.verdict);
    let jag = f.evidence["median_jaggedness"].as_f64().unwrap();
    assert!(jag > 2.0, "a shattered gradient makes the local landscape jagged: {f:?}");
    // The scrambled gradient is not zero: the gradient check cannot see it.
    assert!(!finding("gradients", &masked(Masking::Scramble), &data, 0.3).fired);
}

#[test]
fn more_work_fires_when_less_work_breaks_more_or_more_steps_keep_breaking() {
    let counts = |single_step, few_steps, many_steps| WorkCounts {
        correct: 100,
        single_step,
        few_steps,
        many_steps,
    };
    // An honest model: FGSM < PGD-10 <= PGD-100, small gain from the long run.
    assert!(!counts(60, 80, 84).more_work_hurts() && !counts(60, 80, 84).not_converged());
    assert!(!counts(6, 12, 12).more_work_hurts() && !counts(6, 12, 12).not_converged());
    // Less work broke more: by a clear margin only (3 samples or 3%).
    assert!(counts(40, 30, 36).more_work_hurts());
    assert!(counts(10, 50, 46).more_work_hurts());
    assert!(!counts(10, 50, 47).more_work_hurts());
    // More steps keep breaking: more than 10% of the correct samples.
    assert!(counts(5, 10, 21).not_converged() && !counts(5, 10, 20).not_converged());
    let small = WorkCounts { correct: 20, single_step: 0, few_steps: 0, many_steps: 4 };
    assert!(!small.not_converged(), "at least 5 samples");
    // On the honest model the check runs the three evaluations and stays quiet.
    let data = support::mnist(30);
    let f = finding("more_work", &masked(Masking::None), &data, 0.1);
    assert!(!f.fired, "{}", f.verdict);
    let (few, many) =
        (f.evidence["pgd_few_broken"].as_u64(), f.evidence["pgd_many_broken"].as_u64());
    assert!(many >= few, "{f:?}");
}

/// An audit report that asks for exactly `remedies` (the plan's stages are tested one by one;
/// which checks ask for which remedy is tested above).
fn asking_for(
    model: &dyn Classifier,
    data: &Dataset,
    t: &ThreatModel,
    remedies: &[Remedy],
) -> AuditReport {
    let subject = AuditSubject::new(model, data, t, data.len(), 0).unwrap();
    let mut report = run_checks_named(&subject, &["randomness"]);
    report.remedies = remedies.to_vec();
    report
}

fn run_checks_named(subject: &AuditSubject, names: &[&str]) -> AuditReport {
    let findings: Vec<Finding> =
        names.iter().map(|n| audit::check(n).unwrap().run(subject).unwrap()).collect();
    AuditReport {
        model: subject.model.info().clone(),
        threat: subject.threat.clone(),
        n: subject.n,
        correct: subject.clean().unwrap().indices.len(),
        fired: findings.iter().filter(|f| f.fired).map(|f| f.check).collect(),
        findings,
        remedies: Vec::new(),
    }
}

/// The plan of the adaptive tests: APGD-CE alone (the suites are tested elsewhere, and cost
/// minutes here).
fn apgd() -> StagePlan {
    StagePlan::Attacks(vec!["apgd-ce".into()])
}

/// Rescaled logits recover the honest model's number on the saturated one (same decisions);
/// the stage runs only on the standard suite's survivors, and its examples are re-verified on
/// the deployed model.
#[test]
fn rescaled_logits_recover_the_honest_number_under_saturation() {
    let data = support::mnist(24);
    let t = threat(0.1);
    let base = EvalSettings { n: Some(24), ..EvalSettings::default() };
    let honest = masked(Masking::None);
    let nothing = asking_for(&honest, &data, &t, &[]);
    let truth = adapt(
        &AdaptiveViews { model: &honest, bpda: None, surrogate: None },
        &data,
        &t,
        &nothing,
        &base,
        &apgd(),
    )
    .unwrap();
    assert!(truth.stages.is_empty());
    assert_eq!(truth.standard.robust, truth.adaptive.robust);
    let saturated = masked(Masking::Saturate);
    let ask = asking_for(&saturated, &data, &t, &[Remedy::RescaledLogits]);
    let r = adapt(
        &AdaptiveViews { model: &saturated, bpda: None, surrogate: None },
        &data,
        &t,
        &ask,
        &base,
        &apgd(),
    )
    .unwrap();
    assert_eq!(r.stages.len(), 1);
    assert!(r.stages[0].view.starts_with("rescaled[T="), "{}", r.stages[0].view);
    assert!(r.adaptive.robust <= truth.adaptive.robust + 1, "{r:?} vs {truth:?}");
    assert!(r.standard.robust >= truth.standard.robust + 5, "masked: {r:?} vs {truth:?}");
}

/// BPDA through gibbon's bit-depth defense breaks what the standard suite could not.
#[test]
fn a_bpda_stage_breaks_through_bit_depth_reduction() {
    let data = support::mnist(24);
    let t = threat(0.15);
    let base = EvalSettings { n: Some(24), ..EvalSettings::default() };
    let spec = "bits:depth=3";
    let plain = Defended::new(support::reference_model("std"), spec.parse().unwrap()).unwrap();
    let bpda =
        Defended::new(support::reference_model("std"), spec.parse().unwrap()).unwrap().with_bpda();
    let ask = asking_for(&plain, &data, &t, &[Remedy::Bpda]);
    let none = adapt(
        &AdaptiveViews { model: &plain, bpda: None, surrogate: None },
        &data,
        &t,
        &ask,
        &base,
        &apgd(),
    )
    .unwrap();
    assert!(none.stages.is_empty() && none.skipped.len() == 1, "{none:?}");
    let views = AdaptiveViews { model: &plain, bpda: Some(&bpda), surrogate: None };
    let r = adapt(&views, &data, &t, &ask, &base, &apgd()).unwrap();
    assert!(r.stages[0].remedy == Remedy::Bpda && r.stages[0].newly_broken > 0, "{r:?}");
    assert!(r.adaptive.robust + 5 < r.standard.robust, "{r:?}");
    assert_eq!(r.broken_by.get("bpda").copied().unwrap_or(0), r.stages[0].newly_broken);
}

/// Longer attacks find what a short plan missed: APGD-CE with 2 steps, then the more-iterations
/// stage with five times as many.
#[test]
fn a_more_iterations_stage_finds_what_short_attacks_missed() {
    let data = support::mnist(24);
    let mut t = threat(0.1);
    t.budget.steps = Some(2);
    let base = EvalSettings { n: Some(24), ..EvalSettings::default() };
    let honest = masked(Masking::None);
    let ask = asking_for(&honest, &data, &t, &[Remedy::MoreIterations]);
    let r = adapt(
        &AdaptiveViews { model: &honest, bpda: None, surrogate: None },
        &data,
        &t,
        &ask,
        &base,
        &apgd(),
    )
    .unwrap();
    assert_eq!(r.stages.len(), 1, "{r:?}");
    assert_eq!(r.stages[0].remedy, Remedy::MoreIterations);
    assert!(r.stages[0].newly_broken > 0, "{r:?}");
    assert_eq!(r.adaptive.robust + r.stages[0].newly_broken, r.standard.robust, "{r:?}");
}

/// The mean over samples of the cosine between two gradients `[B, ...]`.
/// Transfer from a differentiable surrogate breaks a gradient-killed model (same decisions as
/// the surrogate) down to the surrogate's own number; without a surrogate the stage is skipped
/// and said so.
#[test]
fn a_transfer_stage_breaks_a_gradient_killed_model_from_its_surrogate() {
    let data = support::mnist(24);
    let t = threat(0.1);
    let base = EvalSettings { n: Some(24), ..EvalSettings::default() };
    let (honest, killed) = (masked(Masking::None), masked(Masking::Detach));
    let nothing = asking_for(&honest, &data, &t, &[]);
    let views = AdaptiveViews { model: &honest, bpda: None, surrogate: None };
    let truth = adapt(&views, &data, &t, &nothing, &base, &apgd()).unwrap();
    let ask = asking_for(&killed, &data, &t, &[Remedy::Transfer]);
    let alone = AdaptiveViews { model: &killed, bpda: None, surrogate: None };
    let r = adapt(&alone, &data, &t, &ask, &base, &apgd()).unwrap();
    assert!(r.stages.is_empty() && r.skipped[0].contains("--surrogate"), "{r:?}");
    let views = AdaptiveViews { model: &killed, bpda: None, surrogate: Some(&honest) };
    let r = adapt(&views, &data, &t, &ask, &base, &apgd()).unwrap();
    assert_eq!(r.stages[0].remedy, Remedy::Transfer);
    assert!(r.standard.robust >= truth.standard.robust + 5, "masked: {r:?} vs {truth:?}");
    assert!(r.adaptive.robust <= truth.adaptive.robust, "{r:?} vs {truth:?}");
    assert_eq!(r.broken_by.get("transfer").copied(), Some(r.stages[0].newly_broken), "{r:?}");
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.flatten(1, -1), b.flatten(1, -1));
    let dot = (&a * &b).sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float);
    let norms = a.norm_scalaropt_dim(2, [1i64].as_slice(), false)
        * b.norm_scalaropt_dim(2, [1i64].as_slice(), false);
    (dot / norms.clamp_min(1e-12)).mean(tch::Kind::Float).double_value(&[])
}

/// `--eot N`: the view's gradient is the mean over draws (two calls agree far better than two
/// single draws do); its answers without autograd stay single passes of the deployed model.
#[test]
fn the_eot_view_averages_gradients_and_answers_as_deployed() {
    use gibbon::model::EotView;
    let data = support::mnist(8);
    let idx: Vec<usize> = (0..8).collect();
    let (x, y) = (data.batch(&idx, Device::Cpu), data.labels_of(&idx, Device::Cpu));
    let ce = |z: &Tensor| z.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0);
    let plain = masked(Masking::Noise);
    let grad = |m: &dyn Classifier| m.loss_and_input_grad(&x, &ce).unwrap().2;
    // Four pairs of each, per-sample cosines: the statistic does not hang on one lucky draw.
    let pairs = 4;
    let eot = EotView::new(masked(Masking::Noise), 32).unwrap();
    let (mut single, mut averaged) = (0.0, 0.0);
    for _ in 0..pairs {
        single += cosine(&grad(&plain), &grad(&plain)) / pairs as f64;
        averaged += cosine(&grad(&eot), &grad(&eot)) / pairs as f64;
    }
    assert!(averaged > 0.85, "two EOT-32 gradients agree: cosine {averaged}");
    assert!(averaged > single + 0.2, "cosine of two gradients: EOT {averaged}, one draw {single}");
    assert!(!eot.logits(&x).unwrap().equal(&eot.logits(&x).unwrap()), "one pass per answer");
    assert!(eot.info().arch.as_deref().unwrap().starts_with("eot[32]"));
    assert!(EotView::new(masked(Masking::None), 0).is_err());
}
