//! Robustness curves over ε (minimum-norm run + fixed-ε plan), the AutoAttack-equivalent suites,
//! majority verdicts for randomized models, and EOT.
mod support;

use gibbon::attack::AttackOptions;
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, robustness_curve, EvalSettings, RunInfo, Suite};
use gibbon::model::{BuiltinModel, Classifier, ModelInfo};
use gibbon::threat::{Norm, ThreatModel};
use std::cell::Cell;
use support::{linear, mnist};
use tch::{Device, Kind, Tensor};

fn reference(name: &str) -> Box<dyn Classifier> {
    support::reference_model(name)
}

const DIM: i64 = 16;

/// A binary linear model f = v·(x − c) whose boundary passes through the box centre c = 0.5, and
/// samples at the given L2 distances from it (alternating sides): points of the boundary near c,
/// moved by ±d along v/‖v‖.
fn linear_with_distances(distances: &[f64]) -> (BuiltinModel, Dataset) {
    let w = gibbon::random::normal_tensor(2001, &[2, DIM]) * 0.5;
    let v = (w.get(1) - w.get(0)).to_kind(Kind::Double);
    // z₁ − z₀ = v·x + (b₁ − b₀) = v·(x − c) with b = (0, −v·c).
    let offset = -(v.sum(Kind::Double) * 0.5).double_value(&[]);
    let model =
        linear::with_weights(&[1, 1, DIM], &w, &Tensor::from_slice(&[0.0f32, offset as f32]));
    let n = distances.len() as i64;
    let unit = &v / v.square().sum(Kind::Double).sqrt();
    let jitter = gibbon::random::uniform_tensor(2002, &[n, DIM]).to_kind(Kind::Double) * 0.1 - 0.05;
    let along = jitter.matmul(&unit);
    let on_boundary = jitter - along.unsqueeze(1) * unit.unsqueeze(0) + 0.5;
    let sign: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let step = Tensor::from_slice(distances) * Tensor::from_slice(&sign);
    let x = on_boundary + step.unsqueeze(1) * unit.unsqueeze(0);
    let labels: Vec<i64> = sign.iter().map(|&s| (s > 0.0) as i64).collect();
    let data =
        Dataset::from_tensor(x.to_kind(Kind::Float).view([n, 1, 1, DIM]), labels, "lin").unwrap();
    (model, data)
}

#[test]
fn the_curve_over_eps_matches_the_exact_minimal_distances_of_a_linear_model() {
    // Distances 0.02 ... 0.25: every sample stays inside the box after the construction and at its
    // minimal adversarial point, so the box never binds.
    let distances: Vec<f64> = (0..24).map(|i| 0.02 + 0.01 * i as f64).collect();
    let (model, data) = linear_with_distances(&distances);
    // No ε within 9% of a distance.
    let eps = [0.0, 0.055, 0.125, 0.205, 0.3];
    let threat = ThreatModel::new(Norm::L2, eps[0]).unwrap();
    for min_norm in ["fab", "deepfool"] {
        let settings =
            EvalSettings { attacks: vec!["apgd-ce".into()], batch_size: 8, ..Default::default() };
        let r = robustness_curve(
            &model,
            &data,
            &threat,
            &eps,
            min_norm,
            &settings,
            &RunInfo::default(),
        )
        .unwrap();
        assert_eq!(r.clean_accuracy, 1.0);
        for p in &r.curve {
            let expected =
                distances.iter().filter(|&&d| d > p.eps).count() as f64 / distances.len() as f64;
            assert_eq!(p.robust_accuracy, expected, "{min_norm} at eps {}", p.eps);
            assert!(p.robust_accuracy_ci95[0] <= expected && expected <= p.robust_accuracy_ci95[1]);
        }
        // The minimum-norm run alone settles every sample: the plan has nothing left to break.
        assert!(r.curve.iter().all(|p| p.broken_by_plan == 0), "{min_norm}: {:?}", r.curve);
        for (i, m) in r.min_norms.iter().enumerate() {
            let m = m.expect("every sample has a minimal norm");
            assert!(
                m >= distances[i] - 1e-4 && m <= distances[i] * 1.01 + 1e-4,
                "{min_norm} sample {i}: {m} vs exact {}",
                distances[i]
            );
        }
    }
}

/// A model that answers with the reference model's logits, but on every `period`-th call (over
/// all calls) with the logits of another class on top: a toy randomized model whose majority
/// answer is known.
struct Flaky {
    inner: Box<dyn Classifier>,
    calls: Cell<usize>,
    wrong_every: usize,
    info: ModelInfo,
}

impl Classifier for Flaky {
    fn forward(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        let z = self.inner.forward(x)?;
        let call = self.calls.get();
        self.calls.set(call + 1);
        if call.is_multiple_of(self.wrong_every) {
            // Shift every row's prediction to the next class.
            let pred = z.argmax(-1, true);
            let next = (pred + 1).remainder(10);
            return Ok(z.scatter_value(1, &next, 1e6));
        }
        Ok(z)
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

#[test]
fn a_verdict_over_several_passes_takes_the_majority() {
    let data = mnist(20);
    let x = data.batch(&(0..20).collect::<Vec<_>>(), Device::Cpu);
    let y = Tensor::from_slice(&data.labels()[..20]);
    let threat = ThreatModel::new(Norm::Linf, 0.0).unwrap();
    let idx: Vec<usize> = (0..20).collect();
    let clean_pred: Vec<i64> = Vec::try_from(reference("std").predict(&x).unwrap()).unwrap();
    // Wrong on 1 call in 3: the clean input is not broken by a 3-pass majority ...
    for (wrong_every, passes, broken) in [(3usize, 3usize, false), (1, 3, true), (2, 4, false)] {
        let m = reference("std");
        let info = m.info().clone();
        let flaky = Flaky { inner: m, calls: Cell::new(0), wrong_every, info };
        let verdicts =
            gibbon::eval::verify_batch_repeated(&flaky, &threat, &idx, &x, &x, &y, None, passes)
                .unwrap();
        // Pass p is call p of the model: shifted when p % wrong_every == 0.
        let expected: Vec<bool> = (0..20)
            .map(|i| {
                let label = data.labels()[i];
                let wrong = (0..passes)
                    .filter(|p| {
                        let pred = if p.is_multiple_of(wrong_every) {
                            (clean_pred[i] + 1) % 10
                        } else {
                            clean_pred[i]
                        };
                        pred != label
                    })
                    .count();
                2 * wrong > passes
            })
            .collect();
        assert_eq!(expected.iter().filter(|&&b| b).count() > 10, broken);
        for (i, v) in verdicts.iter().enumerate() {
            assert_eq!(
                v.broken, expected[i],
                "wrong every {wrong_every}, {passes} passes, sample {i}"
            );
        }
    }
}

/// The adversarially trained reference model behind Gaussian input noise (σ = 0.3): a randomized
/// defense of the kind the rand suite is for.
struct Noisy(Box<dyn Classifier>, ModelInfo);

impl Classifier for Noisy {
    fn forward(&self, x: &Tensor) -> gibbon::Result<Tensor> {
        self.0.forward(&(x + x.randn_like() * 0.3))
    }
    fn input_shape(&self) -> &[i64] {
        self.0.input_shape()
    }
    fn num_classes(&self) -> i64 {
        10
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn info(&self) -> &ModelInfo {
        &self.1
    }
}

#[test]
fn eot_makes_apgd_stronger_against_a_randomized_model() {
    tch::manual_seed(0);
    let data = mnist(60);
    let m = reference("std");
    let info = m.info().clone();
    let noisy = Noisy(m, info);
    let mut threat = ThreatModel::new(Norm::Linf, 0.1).unwrap();
    threat.budget.steps = Some(20);
    let run = |eot: Option<usize>| {
        let settings = EvalSettings {
            attacks: vec!["apgd-ce".into()],
            options: AttackOptions { eot, ..Default::default() },
            verify_passes: 5,
            batch_size: 60,
            ..Default::default()
        };
        evaluate(&noisy, &data, &threat, &settings, &RunInfo::default()).unwrap().0
    };
    let single = run(None);
    let eot = run(Some(8));
    eprintln!(
        "APGD-CE vs noisy model: 1 draw {} | EOT 8 draws {}",
        single.robust_accuracy, eot.robust_accuracy
    );
    assert!(eot.robust_accuracy <= single.robust_accuracy, "EOT must not be weaker");
    assert!(eot.per_attack[0].queries >= 8 * single.per_attack[0].queries / 2);
}

#[test]
fn the_suites_name_their_plans() {
    assert_eq!(Suite::Standard.attacks(Norm::Linf), ["apgd-ce", "apgd-t", "fab-t", "square"]);
    assert_eq!(Suite::Standard.attacks(Norm::L1), ["apgd-ce", "apgd-t", "fab-t", "square"]);
    assert_eq!(Suite::Rand.attacks(Norm::L2), ["apgd-ce", "apgd-dlr"]);
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let mut settings = EvalSettings::default();
    Suite::Standard.apply(&mut threat, &mut settings);
    assert_eq!(threat.budget.queries, Some(5000));
    // Every attack of every suite exists in the registry.
    for suite in [Suite::Standard, Suite::Rand] {
        for norm in [Norm::Linf, Norm::L2, Norm::L1] {
            let t = ThreatModel::new(norm, 0.1).unwrap();
            for name in suite.attacks(norm) {
                gibbon::attack::build_attack(&name, &t, &AttackOptions::default())
                    .unwrap_or_else(|e| panic!("{name} ({norm}): {e}"));
            }
        }
    }
}

#[test]
fn the_standard_suite_leaves_no_standard_model_digit_robust() {
    // Undefended model, ε = 0.3: every digit falls (torchattacks' AutoAttack: 0.000).
    let data = mnist(50);
    let m = reference("std");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    let mut settings = EvalSettings { batch_size: 64, ..Default::default() };
    Suite::Standard.apply(&mut threat, &mut settings);
    let (r, _) = evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
    assert_eq!(r.robust_accuracy, 0.0);
    assert_eq!(r.per_attack.len(), 4);
}

/// The slow check behind the per-image test (`tests/per_image_peers.rs`): the standard suite on
/// the first 1,000 test images of both reference models must be no weaker than the strongest
/// peer number on the same images (torchattacks: PGD-40 0.000 on the standard model, APGD-CE
/// 0.781 on the adversarially trained one; measured at 0.776 in 50 minutes on one core). Run
/// with `scripts/test --test curves_and_suites -- --ignored`.
#[test]
#[ignore]
fn standard_suite_on_the_reference_models_beats_every_peer_number() {
    let data = mnist(1000);
    for (name, bound) in [("std", 0.0), ("adv", 0.781)] {
        let m = reference(name);
        let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
        let mut settings = EvalSettings { batch_size: 128, ..Default::default() };
        Suite::Standard.apply(&mut threat, &mut settings);
        let (r, _) = evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
        for a in &r.per_attack {
            eprintln!(
                "{name}: {} broke {} of {} in {:.0}s",
                a.name, a.broken, a.attacked, a.seconds
            );
        }
        eprintln!("{name}: robust {} in {:.0}s", r.robust_accuracy, r.seconds);
        assert!(r.robust_accuracy <= bound, "{name}: {}", r.robust_accuracy);
    }
}
