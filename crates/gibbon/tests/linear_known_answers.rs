//! For a linear binary classifier f(x) = v·x + c the minimal L2 perturbation is |f|/‖v‖₂ and the
//! minimal L∞ one is |f|/‖v‖₁. A fixed-ε attack must break every sample at ε 1% above that
//! distance and none 1% below.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::BuiltinModel;
use gibbon::threat::{Norm, ThreatModel};
use support::linear;
use tch::Tensor;

const DIM: i64 = 20;
const N: i64 = 40;
const DISTANCE: f64 = 0.1;

fn linear_model() -> (BuiltinModel, Tensor) {
    linear::linear_model(&[1, 1, DIM], 4001)
}

fn samples_at_distance(model: &BuiltinModel, v: &Tensor, norm: Norm) -> Dataset {
    linear::samples_at_distance(model, v, N, norm, DISTANCE, 4002)
}

fn robust_accuracy(
    model: &BuiltinModel,
    data: &Dataset,
    norm: Norm,
    eps: f64,
    attack: &str,
) -> f64 {
    let threat = ThreatModel::new(norm, eps).unwrap();
    let settings =
        EvalSettings { attacks: vec![attack.into()], batch_size: 16, ..Default::default() };
    let (report, _) = evaluate(model, data, &threat, &settings, &RunInfo::default()).unwrap();
    assert_eq!(report.clean_accuracy, 1.0);
    for s in &report.per_sample {
        if let Some(n) = s.norm {
            assert!(n <= eps + 1e-6);
        }
    }
    report.robust_accuracy
}

#[test]
fn pgd_l2_breaks_exactly_above_the_minimal_distance() {
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::L2);
    assert_eq!(robust_accuracy(&model, &data, Norm::L2, DISTANCE * 1.01, "pgd"), 0.0);
    assert_eq!(robust_accuracy(&model, &data, Norm::L2, DISTANCE * 0.99, "pgd"), 1.0);
}

#[test]
fn pgd_linf_breaks_exactly_above_the_minimal_distance() {
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::Linf);
    assert_eq!(robust_accuracy(&model, &data, Norm::Linf, DISTANCE * 1.01, "pgd"), 0.0);
    assert_eq!(robust_accuracy(&model, &data, Norm::Linf, DISTANCE * 0.99, "pgd"), 1.0);
}

#[test]
fn fgsm_and_bim_reach_the_linf_optimum_on_a_linear_model() {
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::Linf);
    for attack in ["fgsm", "bim"] {
        assert_eq!(
            robust_accuracy(&model, &data, Norm::Linf, DISTANCE * 1.01, attack),
            0.0,
            "{attack}"
        );
        assert_eq!(
            robust_accuracy(&model, &data, Norm::Linf, DISTANCE * 0.99, attack),
            1.0,
            "{attack}"
        );
    }
}

#[test]
fn pgd_l1_breaks_above_the_minimal_distance() {
    // Minimal L1 distance is |f| / ‖v‖∞ (move the single largest coordinate).
    let (model, v) = linear_model();
    let data = samples_at_distance(&model, &v, Norm::L1);
    assert_eq!(robust_accuracy(&model, &data, Norm::L1, DISTANCE * 1.01, "pgd"), 0.0);
    assert_eq!(robust_accuracy(&model, &data, Norm::L1, DISTANCE * 0.99, "pgd"), 1.0);
}
