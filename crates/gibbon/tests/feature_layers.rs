//! Feature layers (for feature-space detectors such as Mahalanobis) across model kinds and
//! wrappers: the TorchScript export of the shared SmallCNN exposes the same penultimate
//! features, with the same input gradients, as the builtin architecture loaded from the same
//! weights; named graph values and submodules are other layers; an unknown name lists the
//! available ones; input-defense and EOT wrappers pass the feature layer through.
mod support;

use gibbon::defense::input::Defended;
use gibbon::model::{load_model, Arch, Classifier, EotView, ModelSpec};
use support::{mnist, reference_path};
use tch::{Device, Kind, Tensor};

fn builtin() -> Box<dyn Classifier> {
    let spec = ModelSpec::Safetensors(reference_path("std", "safetensors"));
    load_model(&spec, Some(Arch::SmallCnn), &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn images(n: usize) -> Tensor {
    let data = mnist(n);
    data.try_batch(&(0..n).collect::<Vec<_>>(), Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Features of `layer` and the input gradient of their sum weighted by a fixed pattern.
fn features_and_grad(model: &dyn Classifier, x: &Tensor, layer: Option<&str>) -> (Tensor, Tensor) {
    let xg = x.detach().set_requires_grad(true);
    let f = model.features(&xg, layer).unwrap();
    let weights = Tensor::arange(f.size()[1], (Kind::Float, Device::Cpu)).remainder(7.0) - 3.0;
    let g = Tensor::run_backward(&[(&f * weights).sum(Kind::Float)], &[&xg], false, false);
    (f.detach(), g[0].shallow_clone())
}

#[test]
fn torchscript_penultimate_features_and_gradients_match_the_builtin_model() {
    let _guard = support::serial();
    let x = images(70); // 70 rows: three tiles, the last one padded.
    let (ts, bi) = (support::reference_model("std"), builtin());
    let (f_ts, g_ts) = features_and_grad(ts.as_ref(), &x, None);
    let (f_bi, g_bi) = features_and_grad(bi.as_ref(), &x, None);
    assert_eq!(f_ts.size(), [70, 200]);
    let scale = f_bi.abs().max().double_value(&[]);
    assert!(max_abs_diff(&f_ts, &f_bi) <= 1e-5 * scale, "{}", max_abs_diff(&f_ts, &f_bi));
    let gscale = g_bi.abs().max().double_value(&[]);
    assert!(gscale > 0.0, "the gradient flows");
    assert!(max_abs_diff(&g_ts, &g_bi) <= 1e-4 * gscale, "{}", max_abs_diff(&g_ts, &g_bi));
    // The same value by its name in the TorchScript code (`input6 = relu(fc2(input5))`).
    let named = ts.features(&x, Some("input6")).unwrap();
    assert!(named.equal(&f_ts));
    // The submodule fc2 is the linear layer before its functional ReLU: another layer.
    let fc2 = ts.features(&x, Some("fc2")).unwrap();
    assert!(fc2.min().double_value(&[]) < 0.0, "pre-activation values");
    assert!(max_abs_diff(&fc2.relu(), &f_ts) <= 1e-6 * scale);
    // A convolutional layer comes flattened: conv4 gives 64·8·8 values per image.
    assert_eq!(ts.features(&x, Some("conv4")).unwrap().size(), [70, 64 * 8 * 8]);
}

#[test]
fn an_unknown_torchscript_layer_lists_the_available_ones() {
    let ts = support::reference_model("std");
    let err = ts.features(&images(2), Some("conv9")).unwrap_err().to_string();
    assert!(err.contains("feature layer 'conv9' not found"), "{err}");
    for name in ["penultimate", "conv1", "fc2", "input6"] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn defense_and_eot_wrappers_pass_the_feature_layer_through() {
    let _guard = support::serial();
    let x = images(8);
    let plain = builtin();
    // A deterministic defense: the features of the defended input.
    let defended = Defended::new(builtin(), "bits:depth=1".parse().unwrap()).unwrap();
    let squeezed = defended.chain().apply(&x).unwrap();
    let want = plain.features(&squeezed, None).unwrap();
    assert!(defended.features(&x, None).unwrap().equal(&want));
    assert!(!plain.features(&x, None).unwrap().equal(&want), "the defense changes them");
    // Its BPDA view: the same values, and a gradient through the straight-through surrogate.
    let bpda = Defended::new(builtin(), "bits:depth=1".parse().unwrap()).unwrap().with_bpda();
    let (f, g) = features_and_grad(&bpda, &x, None);
    assert!(f.equal(&want));
    assert!(g.abs().max().double_value(&[]) > 0.0);
    // EOT over a randomized defense: the mean of the draws on the autograd path (different
    // from any one draw), one draw as deployed otherwise; the feature layer name reaches the
    // inner model (an unknown one is still refused).
    let eot =
        EotView::new(Defended::new(builtin(), "noise:sigma=0.2".parse().unwrap()).unwrap(), 8)
            .unwrap();
    let (mean, g) = features_and_grad(&eot, &x, None);
    assert_eq!(mean.size(), [8, 200]);
    assert!(g.abs().max().double_value(&[]) > 0.0);
    let one = eot.features(&x, None).unwrap();
    assert!(!one.equal(&mean));
    assert!(eot.features(&x, Some("conv9")).is_err());
}

/// Submodule paths two levels deep, in a traced and in a scripted module (see
/// scripts/make_feature_fixtures.py): the layers agree with each other as the architecture says.
#[test]
fn nested_submodule_paths_in_traced_and_scripted_modules() {
    let x = images(5);
    for file in ["nested_traced.pt", "nested_scripted.pt"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/torchscript")
            .join(file);
        let spec = ModelSpec::TorchScript(path);
        let model = load_model(&spec, None, &[1, 28, 28], 3, Device::Cpu).unwrap();
        let layer = |name: &str| model.features(&x, Some(name)).unwrap();
        let conv = layer("features.2.0");
        assert_eq!(conv.size(), [5, 4 * 24 * 24], "{file}");
        assert!(conv.min().double_value(&[]) < 0.0, "{file}: before the ReLU");
        let relu = layer("features.2.1");
        assert!(relu.equal(&conv.relu()), "{file}");
        assert!(layer("features.2").equal(&relu), "{file}: the inner Sequential's output");
        assert!(layer("features").equal(&relu), "{file}: flattened, the same values");
        assert!(layer("penultimate").equal(&relu), "{file}: the head's input");
        assert_eq!(layer("features.0").size(), [5, 4 * 26 * 26], "{file}");
        let err = model.features(&x, Some("features.9")).unwrap_err().to_string();
        assert!(err.contains("features.2.0"), "{file}: {err}");
    }
}
