//! APGD (CE, DLR, targeted DLR): linear known answers, strength against torchattacks' APGD on
//! the adversarially trained reference model, robustness to softmax saturation (gradient
//! masking), MI-/DI-FGSM sanity, and batch-size independence.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{BuiltinModel, Classifier, ModelInfo};
use gibbon::threat::{Norm, ThreatModel};
use support::{linear, mnist, shared};
use tch::{Device, Tensor};

fn reference(name: &str) -> Box<dyn Classifier> {
    support::reference_model(name)
}

fn run(
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    attacks: &[&str],
    batch_size: usize,
    steps: Option<usize>,
) -> EvalReport {
    let mut threat = threat.clone();
    threat.budget.steps = steps;
    let settings = EvalSettings {
        batch_size,
        attacks: attacks.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    evaluate(model, data, &threat, &settings, &RunInfo::default()).unwrap().0
}

/// The torchattacks reference mask (`robust_mask` of a reference.json row): robust count among
/// the first `n` images.
fn peer_robust(model: &str, attack_key: &str, n: usize) -> usize {
    let text = std::fs::read_to_string(shared().join("reference/reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let row = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model && r["attack_key"] == attack_key)
        .unwrap_or_else(|| panic!("no reference row {model}/{attack_key}"));
    let mask = row["robust_mask"].as_str().unwrap();
    mask.chars().take(n).filter(|&c| c == '1').count()
}

/// A linear classifier with `classes` outputs on `dim` inputs, random weights.
fn linear(classes: i64, dim: i64, seed: i64) -> BuiltinModel {
    tch::manual_seed(seed);
    let w = gibbon::random::normal_tensor(1001, &[classes, dim]);
    let b = gibbon::random::normal_tensor(1002, &[classes]) * 0.1;
    linear::with_weights(&[1, 1, dim], &w, &b)
}

#[test]
fn apgd_breaks_linear_models_exactly_above_the_minimal_distance() {
    // Per sample: the threat radius 1% above / below its own exact minimal distance. Samples are
    // evaluated one by one (each has its own ε); inputs sit mid-box so the box does not bind.
    for classes in [2i64, 3, 10] {
        let model = linear(classes, 30, 11 + classes);
        let x = gibbon::random::uniform_tensor(1003, &[12, 1, 1, 30]) * 0.02 + 0.49;
        let labels: Vec<i64> = Vec::try_from(model.predict(&x).unwrap()).unwrap();
        // With many classes only the targeted attack is exact: an untargeted loss ascends towards
        // a mix of classes, not necessarily the one whose boundary is nearest.
        let attacks: &[&str] =
            if classes > 3 { &["apgd-t"] } else { &["apgd-ce", "apgd-dlr", "apgd-t"] };
        for norm in [Norm::Linf, Norm::L2] {
            for &attack in attacks {
                let (mut above, mut below) = (0, 0);
                for i in 0..12 {
                    let xi = x.get(i);
                    let d = linear::linear_min_distance(&model, &xi, labels[i as usize], norm);
                    let data =
                        Dataset::from_tensor(xi.unsqueeze(0), vec![labels[i as usize]], "lin")
                            .unwrap();
                    for (factor, count) in [(1.01, &mut above), (0.99, &mut below)] {
                        let threat = ThreatModel::new(norm, d * factor).unwrap();
                        let r = run(&model, &data, &threat, &[attack], 4, Some(50));
                        *count += (r.robust_accuracy == 0.0) as usize;
                    }
                }
                assert_eq!(above, 12, "{classes} classes, {attack} {norm}: broken at 1.01·d");
                assert_eq!(below, 0, "{classes} classes, {attack} {norm}: broken at 0.99·d");
            }
        }
    }
}

#[test]
fn apgd_ce_is_at_least_as_strong_as_torchattacks_apgd_on_the_adversarially_trained_model() {
    // torchattacks APGD (L∞, ε = 0.3, CE, 100 steps): robust 0.781 on 1,000 images. Here the
    // first 200, compared image-count to image-count with the per-image mask.
    let n = 200;
    let data = mnist(n);
    let m = reference("adv");
    let threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let r = run(m.as_ref(), &data, &threat, &["apgd-ce"], 128, None);
    let ours = r.per_sample.iter().filter(|s| s.robust).count();
    let peer = peer_robust("adv", "apgd", n);
    eprintln!("APGD-CE on adv, first {n}: gibbon {ours} robust, torchattacks {peer}");
    assert!(ours <= peer + 1, "gibbon APGD-CE leaves {ours} robust, torchattacks {peer}");
}

/// The reference model with logits multiplied by 1e4: softmax saturates and cross-entropy
/// gradients vanish (numerically zero), a classic case of gradient masking.
struct Saturated(Box<dyn Classifier>, ModelInfo);

impl Classifier for Saturated {
    fn forward(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        Ok(self.0.forward(x)? * 1e4)
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        self.0.num_classes()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
    fn info(&self) -> &ModelInfo {
        &self.1
    }
}

#[test]
fn dlr_losses_see_through_softmax_saturation() {
    let n = 100;
    let data = mnist(n);
    let threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let plain = reference("adv");
    let info = plain.info().clone();
    let saturated = Saturated(reference("adv"), info);
    // The suite's gradient attacks (APGD-CE then APGD-T), with fewer steps to keep the test fast.
    let steps = Some(20);
    let plan = ["apgd-ce", "apgd-t"];
    let base = run(plain.as_ref(), &data, &threat, &plan, 100, steps);
    let ce_only = run(&saturated, &data, &threat, &["apgd-ce"], 100, steps);
    let with_dlr = run(&saturated, &data, &threat, &plan, 100, steps);
    assert!(ce_only.robust_accuracy > base.robust_accuracy, "the saturation must mask CE");
    eprintln!(
        "unscaled {} | x1e4: APGD-CE alone {} | APGD-CE + APGD-T {}",
        base.robust_accuracy, ce_only.robust_accuracy, with_dlr.robust_accuracy
    );
    assert!(
        with_dlr.robust_accuracy <= base.robust_accuracy + 0.01,
        "the DLR attack must not be fooled by logit scaling: {} vs {}",
        with_dlr.robust_accuracy,
        base.robust_accuracy
    );
}

#[test]
fn apgd_results_do_not_depend_on_the_batch_size() {
    let data = mnist(12);
    let m = reference("adv");
    let mut threat = ThreatModel::new(Norm::L2, 1.5).unwrap();
    for (attack, restarts) in [("apgd-ce", 2), ("apgd-t", 1), ("mifgsm", 2), ("difgsm", 1)] {
        threat.budget.restarts = Some(restarts);
        let json = |batch| {
            let r = run(m.as_ref(), &data, &threat, &[attack], batch, Some(5));
            serde_json::to_string(&r.per_sample).unwrap()
        };
        assert_eq!(json(1), json(16), "{attack}: batch 1 vs 16");
    }
}

#[test]
fn momentum_attacks_break_the_standard_model() {
    // MI-FGSM and DI-FGSM with their 10 default steps break almost every image of the standard
    // model at ε = 0.3 (torchattacks' FGSM alone leaves 5.5%, PGD-40 0%).
    let data = mnist(100);
    let m = reference("std");
    let threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    for attack in ["mifgsm", "difgsm"] {
        let r = run(m.as_ref(), &data, &threat, &[attack], 100, None);
        eprintln!("{attack}: robust {}", r.robust_accuracy);
        assert!(r.robust_accuracy <= 0.02, "{attack}: robust accuracy {}", r.robust_accuracy);
    }
}
