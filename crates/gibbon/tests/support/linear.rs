//! Known answers: a linear binary classifier and samples at an exact distance from its boundary.
//!
//! The two logits of an `Arch::Linear` model give the decision function f(x) = v·x + c (logit 1
//! minus logit 0). The smallest perturbation that flips the prediction of x has norm
//! |f(x)| / ‖v‖_dual: |f|/‖v‖₂ in L2, |f|/‖v‖₁ in L∞, |f|/‖v‖∞ in L1. Samples are drawn around
//! 0.4..0.6 and moved along v to exactly the requested distance, so the [0, 1] box rarely binds
//! ([`assert_box_clear`] checks it).
use gibbon::data::Dataset;
use gibbon::model::{Arch, BuiltinModel, Classifier};
use gibbon::threat::Norm;
use tch::{Device, Kind, Tensor};

/// An `Arch::Linear` model over inputs of `shape` (one sample) with weights `w`
/// `[classes, dim]` and bias `b` `[classes]`, weight gradients off.
pub fn with_weights(shape: &[i64], w: &Tensor, b: &Tensor) -> BuiltinModel {
    let classes = w.size()[0];
    let mut model = BuiltinModel::new(Arch::Linear, shape, classes, Device::Cpu).unwrap();
    tch::no_grad(|| {
        let vars = model.var_store().variables();
        vars["fc.weight"].shallow_clone().copy_(w);
        vars["fc.bias"].shallow_clone().copy_(b);
    });
    model.var_store_mut().freeze();
    model
}

/// A linear binary model over inputs of `shape` (one sample) with weights drawn from `seed`,
/// and v, the normal of its decision boundary (weight row 1 minus weight row 0).
pub fn linear_model(shape: &[i64], seed: u64) -> (BuiltinModel, Tensor) {
    let dim: i64 = shape.iter().product();
    let w = gibbon::random::normal_tensor(seed, &[2, dim]);
    let model = with_weights(shape, &w, &Tensor::from_slice(&[0.3f32, -0.2]));
    (model, w.get(1) - w.get(0))
}

/// f(x) = logit 1 − logit 0, in float64, for a batch.
pub fn decision(model: &BuiltinModel, x: &Tensor) -> Tensor {
    let logits = model.logits(x).unwrap().to_kind(Kind::Double);
    logits.select(1, 1) - logits.select(1, 0)
}

/// ‖v‖ in the dual of `norm`.
pub fn dual_norm(v: &Tensor, norm: Norm) -> Tensor {
    match norm {
        Norm::L2 => v.square().sum(Kind::Float).sqrt(),
        Norm::Linf => v.abs().sum(Kind::Float),
        Norm::L1 => v.abs().max(),
    }
}

/// `n` samples (drawn from `seed`) at exactly `distance` from the boundary in `norm`, labelled
/// by the model; checks the construction.
pub fn samples_at_distance(
    model: &BuiltinModel,
    v: &Tensor,
    n: i64,
    norm: Norm,
    distance: f64,
    seed: u64,
) -> Dataset {
    let mut shape = vec![n];
    shape.extend(model.input_shape());
    let x = gibbon::random::uniform_tensor(seed, &shape) * 0.2 + 0.4;
    let fx = decision(model, &x).to_kind(Kind::Float);
    let want = fx.sign() * dual_norm(v, norm) * distance;
    let shift = (&fx - want).unsqueeze(1) / v.square().sum(Kind::Float);
    let x = x - (shift * v.unsqueeze(0)).view(shape.as_slice());
    let labels: Vec<i64> = Vec::try_from(decision(model, &x).gt(0.0).to_kind(Kind::Int64)).unwrap();
    let data = Dataset::from_tensor(x, labels, "linear").unwrap();
    for d in analytic_distances(model, v, &data, norm) {
        assert!((d - distance).abs() < 1e-4, "constructed distance {d}");
    }
    data
}

/// Asserts that every value of `data` is at least `margin` inside [0, 1], so that the box cannot
/// bind for perturbations of that size in any norm.
pub fn assert_box_clear(data: &Dataset, margin: f64) {
    let (lo, hi) = (data.images().min().double_value(&[]), data.images().max().double_value(&[]));
    assert!(lo - margin >= 0.0 && hi + margin <= 1.0, "box binds: [{lo}, {hi}]");
}

/// The analytic minimal distance of every sample of `data` in `norm`: |f(x)| / ‖v‖_dual.
pub fn analytic_distances(
    model: &BuiltinModel,
    v: &Tensor,
    data: &Dataset,
    norm: Norm,
) -> Vec<f64> {
    let f = decision(model, data.images());
    Vec::try_from(f.abs() / dual_norm(v, norm).to_kind(Kind::Double)).unwrap()
}

/// The box diameter in `norm` for inputs of `dim` values in [0, 1]: an ε that never binds.
pub fn box_diameter(norm: Norm, dim: i64) -> f64 {
    match norm {
        Norm::Linf => 1.0,
        Norm::L2 => (dim as f64).sqrt(),
        Norm::L1 => dim as f64,
    }
}

/// Exact minimal distance to misclassification of a linear multi-class model when the box does
/// not bind: min over k≠y of (z_y − z_k) / ‖w_y − w_k‖_dual (dual of L2 is L2, of L∞ is L1).
pub fn linear_min_distance(model: &BuiltinModel, x: &Tensor, label: i64, norm: Norm) -> f64 {
    let vars = model.var_store().variables();
    let w = vars["fc.weight"].to_kind(Kind::Double);
    let z = model.logits(&x.unsqueeze(0)).unwrap().to_kind(Kind::Double).get(0);
    let classes = w.size()[0];
    (0..classes)
        .filter(|&k| k != label)
        .map(|k| {
            let dw = w.get(label) - w.get(k);
            let dual = match norm {
                Norm::L2 => dw.square().sum(Kind::Double).sqrt().double_value(&[]),
                Norm::Linf => dw.abs().sum(Kind::Double).double_value(&[]),
                Norm::L1 => dw.abs().max().double_value(&[]),
            };
            (z.double_value(&[label]) - z.double_value(&[k])) / dual
        })
        .fold(f64::INFINITY, f64::min)
}
