//! For a linear binary classifier f(x) = v·x + c the minimal L2 perturbation is |f|/‖v‖₂ and the
//! minimal L∞ one is |f|/‖v‖₁. A fixed-ε attack must break every sample at ε 1% above that
//! distance and none 1% below.
use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::{Arch, BuiltinModel, Classifier};
use gibbon::threat::{Norm, ThreatModel};
use tch::{Device, Kind, Tensor};

const DIM: i64 = 20;
const N: i64 = 40;
const DISTANCE: f64 = 0.1;

fn linear_model() -> (BuiltinModel, Tensor) {
    tch::manual_seed(7);
    let mut model = BuiltinModel::new(Arch::Linear, &[1, 1, DIM], 2, Device::Cpu).unwrap();
    let w = gibbon::random::normal_tensor(4001, &[2, DIM]);
    let b = Tensor::from_slice(&[0.3f32, -0.2]);
    tch::no_grad(|| {
        let vars = model.var_store().variables();
        vars["fc.weight"].shallow_clone().copy_(&w);
        vars["fc.bias"].shallow_clone().copy_(&b);
    });
    model.var_store_mut().freeze();
    let v = w.get(1) - w.get(0);
    (model, v)
}

/// Samples at exactly `DISTANCE` from the decision boundary in `norm` (dual norm of v).
fn samples_at_distance(model: &BuiltinModel, v: &Tensor, norm: Norm) -> Dataset {
    let x = gibbon::random::uniform_tensor(4002, &[N, 1, 1, DIM]) * 0.2 + 0.4;
    let f = |x: &Tensor| {
        let logits = model.logits(x).unwrap();
        logits.select(1, 1) - logits.select(1, 0)
    };
    let fx = f(&x);
    let dual = match norm {
        Norm::L2 => v.square().sum(Kind::Float).sqrt(),
        Norm::Linf => v.abs().sum(Kind::Float),
        Norm::L1 => v.abs().max(),
    };
    let want = fx.sign() * &dual * DISTANCE;
    let shift = (&fx - want).unsqueeze(1) / v.square().sum(Kind::Float);
    let x = x - (shift * v.unsqueeze(0)).view([N, 1, 1, DIM]);
    let labels: Vec<i64> = Vec::try_from(f(&x).gt(0.0).to_kind(Kind::Int64)).unwrap();
    // Check the construction: |f| / dual == DISTANCE for every sample.
    let d: Vec<f64> = Vec::try_from((f(&x).abs() / &dual).to_kind(Kind::Double)).unwrap();
    for di in d {
        assert!((di - DISTANCE).abs() < 1e-4, "constructed distance {di}");
    }
    Dataset::from_tensor(x, labels, "linear").unwrap()
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
