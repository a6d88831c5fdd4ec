//! Interval bound propagation: exact on linear models (the radius is the minimal L∞ distance to
//! the boundary, inside the box too), sound on the SmallCNN reference (the bounds contain the
//! margins of points in the ball, and no attack finds an example inside a certified radius), and
//! refusals.
mod support;

use gibbon::certify::{
    interval_certified_accuracy, IntervalNetwork, IBP_BISECTION_STEPS, IBP_MARGIN_TOLERANCE,
};
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::{Arch, BuiltinModel, Classifier, ModelSpec};
use gibbon::threat::{Norm, ThreatModel};
use support::{linear, mnist, reference_path};
use tch::{Device, Kind, Tensor};

/// A linear model with `classes` outputs on `dim` inputs, random weights from `seed`.
fn linear_model(classes: i64, dim: i64, seed: u64) -> BuiltinModel {
    let w = gibbon::random::normal_tensor(seed, &[classes, dim]);
    let b = gibbon::random::normal_tensor(seed + 1, &[classes]) * 0.1;
    linear::with_weights(&[1, 1, dim], &w, &b)
}

fn adv_reference() -> BuiltinModel {
    let spec = ModelSpec::Safetensors(reference_path("adv", "safetensors"));
    gibbon::model::load_builtin_model(&spec, Some(Arch::SmallCnn), &[1, 28, 28], 10, Device::Cpu)
        .unwrap()
}

/// `min_{j≠c} z_c − z_j` of the model's (float32) logits, per row, in float64.
fn margins(model: &dyn Classifier, x: &Tensor, classes: &Tensor) -> Tensor {
    let z = model.logits(x).unwrap().to_kind(Kind::Double);
    let own = z.gather(1, &classes.unsqueeze(1), false).squeeze_dim(1);
    let others =
        z.masked_fill(&classes.one_hot(z.size()[1]).to_kind(Kind::Bool), f64::NEG_INFINITY);
    own - others.amax([1], false)
}

#[test]
fn the_radius_of_a_linear_model_is_its_minimal_linf_distance() {
    let model = linear_model(4, 30, 5);
    let ibp = IntervalNetwork::from_builtin(&model).unwrap();
    let x = gibbon::random::normal_tensor(9, &[40, 1, 1, 30]) * 0.05 + 0.5;
    let classes = model.predict(&x).unwrap();
    // A box far away: the radius is min_j (z_c − z_j − tolerance) / ‖w_c − w_j‖₁, in float64.
    let certs = ibp.certify(&x, &classes, (-1e3, 1e3), 10.0).unwrap();
    // The bisection stops within max_eps / 2^steps; the margin tolerance shifts it a little more.
    let resolution = 2.0 * 10.0 / 2f64.powi(IBP_BISECTION_STEPS as i32);
    let vars = model.var_store().variables();
    let (w, b) = (vars["fc.weight"].to_kind(Kind::Double), vars["fc.bias"].to_kind(Kind::Double));
    for (i, c) in certs.iter().enumerate() {
        let z = w.mv(&x.get(i as i64).flatten(0, -1).to_kind(Kind::Double)) + &b;
        // The largest ε at which every margin stays above the tolerance.
        let exact = (0..4)
            .filter(|&j| j != c.class)
            .map(|j| {
                let gap = (z.get(c.class) - z.get(j)).double_value(&[]) - IBP_MARGIN_TOLERANCE;
                gap / (w.get(c.class) - w.get(j)).abs().sum(Kind::Double).double_value(&[])
            })
            .fold(f64::INFINITY, f64::min);
        let r = c.radius.expect("a linear model's clean answer verifies");
        assert!(r <= exact * (1.0 + 1e-9), "sample {i}: radius {r} beyond the boundary {exact}");
        assert!(r >= exact - resolution, "sample {i}: radius {r} below the exact {exact}");
    }
}

/// Inside the [0, 1] box the worst point of the ball for the pair (c, j) is the corner
/// `clamp(x − ε·sign(w_c − w_j))`: it keeps the class just below the radius, and just above it
/// some pair's corner brings the margin under the tolerance.
#[test]
fn the_radius_of_a_linear_model_is_tight_where_the_box_binds() {
    let model = linear_model(3, 12, 21);
    let ibp = IntervalNetwork::from_builtin(&model).unwrap();
    let x = gibbon::random::uniform_tensor(4, &[60, 1, 1, 12]);
    let classes = model.predict(&x).unwrap();
    let certs = ibp.certify(&x, &classes, (0.0, 1.0), 1.0).unwrap();
    let w = model.var_store().variables()["fc.weight"].to_kind(Kind::Double);
    let b = model.var_store().variables()["fc.bias"].to_kind(Kind::Double);
    let worst_margin = |i: i64, c: i64, eps: f64| -> f64 {
        let xi = x.get(i).flatten(0, -1).to_kind(Kind::Double);
        (0..3)
            .filter(|&j| j != c)
            .map(|j| {
                let dw = w.get(c) - w.get(j);
                let corner = (&xi - dw.sign() * eps).clamp(0.0, 1.0);
                (dw.dot(&corner) + b.get(c) - b.get(j)).double_value(&[])
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut binding = 0;
    for (i, c) in certs.iter().enumerate() {
        let r = c.radius.unwrap();
        let i = i as i64;
        assert!(worst_margin(i, c.class, r * (1.0 - 1e-6)) > 0.0, "sample {i}: broken below {r}");
        if r < 1.0 {
            let above = worst_margin(i, c.class, r * (1.0 + 1e-6));
            assert!(above < IBP_MARGIN_TOLERANCE, "sample {i}: verifiable above {r}: {above}");
        }
        let xi = x.get(i);
        let clear =
            (xi.min().double_value(&[]) - r > 0.0) && (xi.max().double_value(&[]) + r < 1.0);
        binding += usize::from(!clear);
    }
    assert!(binding >= 30, "the box binds for only {binding} of 60 samples");
}

#[test]
fn the_bounds_contain_the_margins_of_points_in_the_ball() {
    let model = adv_reference();
    let ibp = IntervalNetwork::from_builtin(&model).unwrap();
    let data = mnist(16);
    let x = data.batch(&(0..16).collect::<Vec<_>>(), Device::Cpu);
    let classes = model.predict(&x).unwrap();
    let clean = margins(&model, &x, &classes);
    let at_zero = ibp
        .margin_lower_bounds(
            &x,
            &classes,
            &Tensor::zeros([16], (Kind::Double, Device::Cpu)),
            (0.0, 1.0),
        )
        .unwrap();
    let gap = (&at_zero - &clean).abs().max().double_value(&[]);
    assert!(gap < 1e-3, "at ε = 0 the bound is the margin itself; differs by {gap}");
    let eps = 0.02;
    let lower = ibp
        .margin_lower_bounds(
            &x,
            &classes,
            &Tensor::full([16], eps, (Kind::Double, Device::Cpu)),
            (0.0, 1.0),
        )
        .unwrap();
    for k in 0..64u64 {
        let signs =
            gibbon::random::uniform_tensor(100 + k, &[16, 1, 28, 28]).ge(0.5).to_kind(Kind::Float)
                * 2.0
                - 1.0;
        let corner = (&x + signs * eps).clamp(0.0, 1.0);
        let m = margins(&model, &corner, &classes);
        let slack = (&m - &lower).min().double_value(&[]);
        assert!(slack > -1e-3, "corner {k}: a margin {slack} below its lower bound");
    }
    assert!(
        (&clean - &lower).min().double_value(&[]) > 0.0,
        "the bound at ε must be below the clean margin"
    );
}

/// Every sample's certified radius is below the smallest L∞ example FAB finds for it (FAB
/// minimizes the perturbation, so this tests each certificate at its own scale), and samples
/// verified at ε all survive APGD at ε.
#[test]
fn no_attack_finds_an_example_inside_a_certified_radius() {
    let model = adv_reference();
    let ibp = IntervalNetwork::from_builtin(&model).unwrap();
    let n = 60;
    let data = mnist(n);
    let x = data.batch(&(0..n).collect::<Vec<_>>(), Device::Cpu);
    let labels = data.labels_of(&(0..n).collect::<Vec<_>>(), Device::Cpu);
    let classes = model.predict(&x).unwrap();
    let certs = ibp.certify(&x, &classes, (0.0, 1.0), 1.0).unwrap();
    let eval = |attack: &str, eps: f64, minimize: bool| {
        let threat = ThreatModel::new(Norm::Linf, eps).unwrap();
        let mut settings = EvalSettings { attacks: vec![attack.into()], ..Default::default() };
        settings.options.minimize = minimize;
        evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap().0
    };
    let fab = eval("fab", 1.0, true);
    let mut compared = 0;
    for r in &fab.per_sample {
        let cert = certs[r.index];
        if let (Some(radius), Some(found), false) = (cert.radius, r.norm, r.robust) {
            assert!(
                found >= radius,
                "sample {}: FAB example at {found} inside the radius {radius}",
                r.index
            );
            compared += 1;
        }
    }
    assert!(compared >= n / 2, "FAB broke only {compared} of {n}");
    let mut radii: Vec<f64> = certs.iter().filter_map(|c| c.radius).collect();
    radii.sort_by(f64::total_cmp);
    let eps = radii[radii.len() / 4];
    let verified: Vec<usize> =
        (0..n).filter(|&i| certs[i].radius.is_some_and(|r| r >= eps)).collect();
    assert!(verified.len() >= n / 2, "{} of {n} verified at {eps}", verified.len());
    let apgd = eval("apgd-ce", eps, false);
    for &i in &verified {
        let record = apgd.per_sample.iter().find(|r| r.index == i).unwrap();
        assert!(
            record.robust || record.clean_pred != record.label,
            "sample {i} verified at {eps} but broken"
        );
    }
    let records: Vec<_> =
        certs.iter().zip(Vec::<i64>::try_from(&labels).unwrap()).map(|(c, y)| (*c, y)).collect();
    let curve = interval_certified_accuracy(&records, &[0.0, eps]);
    assert!(
        curve[0].1 >= curve[1].1 && curve[1].1 <= apgd.robust_accuracy,
        "{curve:?} vs {}",
        apgd.robust_accuracy
    );
}

#[test]
fn unsupported_models_and_bad_radii_are_refused() {
    let resnet = BuiltinModel::new(Arch::PreActResNet18, &[3, 32, 32], 10, Device::Cpu).unwrap();
    let err = IntervalNetwork::from_builtin(&resnet).unwrap_err().to_string();
    assert!(err.contains("preact-resnet18"), "{err}");
    let model = linear_model(3, 8, 1);
    let ibp = IntervalNetwork::from_builtin(&model).unwrap();
    let x = Tensor::full([2, 1, 1, 8], 0.5, (Kind::Float, Device::Cpu));
    let classes = model.predict(&x).unwrap();
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let err = ibp.certify(&x, &classes, (0.0, 1.0), bad).unwrap_err().to_string();
        assert!(err.contains("max_eps"), "{bad}: {err}");
    }
    let nan = x.copy().fill_(f64::NAN);
    let err = ibp.certify(&nan, &classes, (0.0, 1.0), 1.0).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
}
