//! Barely adversarial points and the verifier: a forward pass that is not bit-exact (GPU,
//! oneDNN copies) can flip a first-success point back. The disagreement is counted and
//! reported, never a silent "robust", and `--confidence κ` makes attacks go past the boundary by
//! a logit margin κ so that their points survive. Also: PGD's default restarts and the suites'
//! AutoAttack-equivalence record.
mod support;

use gibbon::attack::{build_attack, AttackOptions, PGD_RESTARTS};
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo, Suite};
use gibbon::model::{BuiltinModel, Classifier, ModelInfo};
use gibbon::threat::{Norm, ThreatModel};
use support::linear;
use tch::{Device, Tensor};

const DIM: i64 = 20;
const DISTANCE: f64 = 0.1;
const EPS: f64 = 0.2;
const STEPS: usize = 40;

/// A linear binary model whose verdict pass (`logits`) favours class 0 by `skew` logits, while
/// the attack's passes (`forward`, gradients) see the plain model: the verifier disagrees with
/// any success by a margin below `skew`.
struct Skewed {
    inner: BuiltinModel,
    skew: f64,
}

impl Classifier for Skewed {
    fn forward(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        self.inner.forward(x)
    }
    fn logits(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        let z = tch::no_grad(|| self.inner.forward(x))?;
        let skew = Tensor::from_slice(&[self.skew as f32, 0.0]).to_kind(z.kind());
        Ok(z + skew.unsqueeze(0))
    }
    fn input_shape(&self) -> &[i64] {
        self.inner.input_shape()
    }
    fn num_classes(&self) -> i64 {
        2
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
}

/// Samples of class 0 at L2 distance [`DISTANCE`] from the boundary, the model, and the logit
/// change of one PGD step (α‖v‖₂, α = 2.5ε/steps): the most a first success can overshoot by.
fn setup() -> (Dataset, BuiltinModel, f64) {
    let (model, v) = linear::linear_model(&[1, 1, DIM], 4101);
    let data = linear::samples_at_distance(&model, &v, 40, Norm::L2, DISTANCE, 4102);
    let keep: Vec<usize> = (0..data.len()).filter(|&i| data.labels()[i] == 0).collect();
    assert!(keep.len() >= 10, "{} samples of class 0", keep.len());
    let x = data.try_batch(&keep, Device::Cpu).unwrap();
    let class0 = Dataset::from_tensor(x, vec![0; keep.len()], "class 0").unwrap();
    let step = 2.5 * EPS / STEPS as f64 * v.norm().double_value(&[]);
    (class0, model, step)
}

/// PGD from the clean start only (a random start can land deep past the boundary at once).
fn pgd(model: &dyn Classifier, data: &Dataset, confidence: f64) -> EvalReport {
    let mut threat = ThreatModel::new(Norm::L2, EPS).unwrap();
    threat.budget.steps = Some(STEPS);
    threat.budget.restarts = Some(1);
    let settings = EvalSettings {
        options: AttackOptions { confidence, ..Default::default() },
        batch_size: 16,
        ..Default::default()
    };
    evaluate(model, data, &threat, &settings, &RunInfo::default()).unwrap().0
}

#[test]
fn a_verifier_disagreement_is_counted_and_reported() {
    let (data, inner, step) = setup();
    // 5% above one step's change: float32 rounding must not decide the verdict.
    let model = Skewed { inner, skew: 1.05 * step };
    let r = pgd(&model, &data, 0.0);
    let n = data.len();
    assert_eq!(r.clean_accuracy, 1.0);
    // Every first success lands less than one step's logit change past the boundary, where
    // the verdict pass's skew flips it back: each one is a counted disagreement.
    assert_eq!(r.robust_accuracy, 1.0);
    assert_eq!(r.per_attack[0].verifier_disagreements, n, "{:?}", r.per_attack[0]);
    assert_eq!(r.verifier_disagreements, n);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["verifier_disagreements"], n);
    assert_eq!(json["per_attack"][0]["verifier_disagreements"], n);
}

#[test]
fn a_confidence_margin_makes_the_examples_survive_the_verifier() {
    let (data, inner, step) = setup();
    let model = Skewed { inner, skew: 1.05 * step };
    let r = pgd(&model, &data, 2.0 * step);
    assert_eq!(r.robust_accuracy, 0.0, "{:?}", r.per_attack[0]);
    assert_eq!(r.verifier_disagreements, 0);
    assert_eq!(r.per_attack[0].params["confidence"], 2.0 * step);
    // On the plain model, every returned example is past the boundary by more than κ.
    let plain = pgd(&model.inner, &data, 2.0 * step);
    assert_eq!(plain.robust_accuracy, 0.0);
}

#[test]
fn pgd_restarts_twice_unless_told_otherwise() {
    let threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let default = build_attack("pgd", &threat, &AttackOptions::default()).unwrap();
    assert_eq!(default.params()["restarts"], PGD_RESTARTS);
    assert_eq!(default.params()["start"], "clean-then-random");
    let mut once = threat.clone();
    once.budget.restarts = Some(1);
    assert_eq!(
        build_attack("pgd", &once, &AttackOptions::default()).unwrap().params()["restarts"],
        1
    );
    let mut five = threat.clone();
    five.budget.restarts = Some(5);
    assert_eq!(
        build_attack("pgd", &five, &AttackOptions::default()).unwrap().params()["restarts"],
        5
    );
}

#[test]
fn the_suite_record_says_when_the_run_is_no_longer_autoattack() {
    let apply = |norm: Norm, queries: Option<usize>| {
        let mut threat = ThreatModel::new(norm, 0.3).unwrap();
        threat.budget.queries = queries;
        let mut settings = EvalSettings::default();
        Suite::Standard.apply(&mut threat, &mut settings);
        (threat, settings.suite.unwrap())
    };
    let (threat, record) = apply(Norm::Linf, None);
    assert_eq!(threat.budget.queries, Some(5000));
    assert!(record.autoattack_equivalent && record.deviations.is_empty(), "{record:?}");
    let (_, record) = apply(Norm::Linf, Some(5000));
    assert!(record.autoattack_equivalent);
    let (threat, record) = apply(Norm::L2, Some(1000));
    assert_eq!(threat.budget.queries, Some(1000), "an explicit budget is kept");
    assert!(!record.autoattack_equivalent);
    assert!(record.deviations[0].contains("1000"), "{record:?}");
    // The report carries the record.
    let (model, v) = linear::linear_model(&[1, 1, DIM], 4101);
    let data = linear::samples_at_distance(&model, &v, 4, Norm::Linf, DISTANCE, 4102);
    let mut threat = ThreatModel::new(Norm::Linf, 0.01).unwrap();
    threat.budget.queries = Some(50);
    let mut settings = EvalSettings::default();
    Suite::Standard.apply(&mut threat, &mut settings);
    let (r, _) = evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["suite"]["name"], "standard");
    assert_eq!(json["suite"]["autoattack_equivalent"], false);
    assert_eq!(json["per_attack"][3]["params"]["schedule"], "fixed");
}
