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
    self, adapt, AdaptiveViews, AuditReport, AuditSubject, Finding, Remedy, StagePlan,
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
    for want in ["graph_ops", "randomness", "gradients", "unbounded", "gradient_free"] {
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
    let truth =
        adapt(&AdaptiveViews { model: &honest, bpda: None }, &data, &t, &nothing, &base, &apgd())
            .unwrap();
    assert!(truth.stages.is_empty());
    assert_eq!(truth.standard.robust, truth.adaptive.robust);
    let saturated = masked(Masking::Saturate);
    let ask = asking_for(&saturated, &data, &t, &[Remedy::RescaledLogits]);
    let r =
        adapt(&AdaptiveViews { model: &saturated, bpda: None }, &data, &t, &ask, &base, &apgd())
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
    let none = adapt(&AdaptiveViews { model: &plain, bpda: None }, &data, &t, &ask, &base, &apgd())
        .unwrap();
    assert!(none.stages.is_empty() && none.skipped.len() == 1, "{none:?}");
    let views = AdaptiveViews { model: &plain, bpda: Some(&bpda) };
    let r = adapt(&views, &data, &t, &ask, &base, &apgd()).unwrap();
    assert!(r.stages[0].remedy == Remedy::Bpda && r.stages[0].newly_broken > 0, "{r:?}");
    assert!(r.adaptive.robust + 5 < r.standard.robust, "{r:?}");
    assert_eq!(r.broken_by.get("bpda").copied().unwrap_or(0), r.stages[0].newly_broken);
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.flatten(0, -1), b.flatten(0, -1));
    (a.dot(&b) / (a.norm() * b.norm())).double_value(&[])
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
    let (p1, p2) = (
        plain.loss_and_input_grad(&x, &ce).unwrap().2,
        plain.loss_and_input_grad(&x, &ce).unwrap().2,
    );
    let eot = EotView::new(masked(Masking::Noise), 32).unwrap();
    let (e1, e2) =
        (eot.loss_and_input_grad(&x, &ce).unwrap().2, eot.loss_and_input_grad(&x, &ce).unwrap().2);
    let (single, averaged) = (cosine(&p1, &p2), cosine(&e1, &e2));
    assert!(averaged > single + 0.2, "cosine of two gradients: EOT {averaged}, one draw {single}");
    assert!(!eot.logits(&x).unwrap().equal(&eot.logits(&x).unwrap()), "one pass per answer");
    assert!(eot.info().arch.as_deref().unwrap().starts_with("eot[32]"));
    assert!(EotView::new(masked(Masking::None), 0).is_err());
}
