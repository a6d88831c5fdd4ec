//! Graph scans of TorchScript and ONNX models (issue 14): the masked fixtures
//! (tests/fixtures/masked, made by scripts/make_masked_models.py) are flagged with the right
//! operator, effect and location, the honest reference models scan clean, broken archives are
//! opaque scans rather than panics; ONNX Round/Floor/Ceil/Sign run, and the straight-through
//! view answers bit for bit as the plain model while its input gradient is no longer zero.
mod support;

use gibbon::model::scan::{GraphScan, OpEffect};
use gibbon::model::torchscript_scan::{scan_archive, REWRITE_SURROGATE};
use gibbon::model::{Classifier, OnnxModel, TorchScriptModel};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn masked(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/masked")).join(name)
}

fn torchscript(name: &str) -> TorchScriptModel {
    TorchScriptModel::load(&masked(name), &[1, 28, 28], Device::Cpu).unwrap()
}

fn onnx(name: &str) -> OnnxModel {
    OnnxModel::load(&masked(name), &[1, 28, 28], Device::Cpu).unwrap()
}

/// The fixtures' input: x[i,0,h,w] = ((i*784 + h*28 + w) * 37 % 256) / 255, i in 0..3.
fn formula_input() -> Tensor {
    let v: Vec<f32> = (0..3 * 784).map(|k| ((k * 37) % 256) as f32 / 255.0).collect();
    Tensor::from_slice(&v).view([3, 1, 28, 28])
}

fn expected_logits(file: &str) -> Tensor {
    let text = std::fs::read_to_string(masked("tiny_fixtures.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = json["files"][file]["expected_logits"].as_array().unwrap();
    let v: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect();
    Tensor::from_slice(&v).view([3, 10])
}

fn ce_grad(model: &dyn Classifier, x: &Tensor) -> Tensor {
    let y = Tensor::from_slice(&[0i64, 1, 2]);
    let loss =
        |l: &Tensor| l.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0);
    model.loss_and_input_grad(x, &loss).unwrap().2
}

fn abs_sum(t: &Tensor) -> f64 {
    t.abs().sum(Kind::Double).double_value(&[])
}

fn ops(scan: &GraphScan) -> Vec<(&str, OpEffect)> {
    scan.ops.iter().map(|o| (o.op.as_str(), o.effect)).collect()
}

#[test]
fn torchscript_masked_fixtures_are_flagged_with_their_code_line() {
    let plain = torchscript("tiny_plain.pt").graph_scan();
    assert!(plain.inspected && plain.ops.is_empty(), "{plain:?}");
    assert!(plain.source.starts_with("torchscript code (4 files"), "{}", plain.source);

    let round = torchscript("tiny_round.pt").graph_scan();
    assert!(round.inspected);
    assert_eq!(ops(&round), [("aten::round", OpEffect::ZeroGradient)], "{round:?}");
    let op = &round.ops[0];
    assert_eq!(op.location, "tiny_round/code/__torch__.py:9");
    assert_eq!(
        (op.surrogate.as_deref(), op.swapped),
        (Some(REWRITE_SURROGATE), false),
        "the BPDA rewrite can swap it; this view does not"
    );
    assert_eq!(round.unswappable().count(), 0);
    assert_eq!(round.swappable().count(), 1);

    let detach = torchscript("tiny_detach.pt").graph_scan();
    assert_eq!(ops(&detach), [("aten::detach", OpEffect::Detached)], "{detach:?}");
    assert!(detach.ops[0].location.starts_with("tiny_detach/code/__torch__.py:"));
}

#[test]
fn honest_reference_models_scan_clean() {
    for name in ["std", "adv"] {
        let bytes = std::fs::read(support::reference_path(name, "pt")).unwrap();
        let scan = scan_archive(&bytes);
        assert!(scan.inspected && scan.ops.is_empty(), "{name}.pt: {scan:?}");
        let model =
            OnnxModel::load(&support::reference_path(name, "onnx"), &[1, 28, 28], Device::Cpu)
                .unwrap();
        let scan = model.graph_scan();
        assert!(scan.inspected && scan.ops.is_empty(), "{name}.onnx: {scan:?}");
    }
}

#[test]
fn broken_archives_are_opaque_scans() {
    let bytes = std::fs::read(masked("tiny_round.pt")).unwrap();
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 30] {
        let scan = scan_archive(&bytes[..cut]);
        assert!(!scan.inspected && scan.ops.is_empty(), "cut at {cut}: {scan:?}");
        assert!(scan.source.starts_with("torchscript archive:"), "{}", scan.source);
    }
    // Corrupt bytes inside the archive never panic (the scan may still read what survives).
    for at in (0..bytes.len()).step_by(997) {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        let _ = scan_archive(&b);
    }
}

#[test]
fn onnx_round_fixture_matches_torch_and_is_flagged_swappable() {
    let x = formula_input();
    for (file, json) in [("tiny_round.onnx", "tiny_round.pt"), ("tiny_plain.onnx", "tiny_plain.pt")]
    {
        let logits = onnx(file).logits(&x).unwrap();
        let err = (&logits - expected_logits(json)).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{file}: max abs error {err}");
    }
    let plain = onnx("tiny_plain.onnx").graph_scan();
    assert!(plain.inspected && plain.ops.is_empty(), "{plain:?}");
    let scan = onnx("tiny_round.onnx").graph_scan();
    assert!(scan.inspected && scan.source.starts_with("onnx graph ("), "{scan:?}");
    assert_eq!(ops(&scan), [("Round", OpEffect::ZeroGradient)], "{scan:?}");
    assert_eq!(scan.ops[0].surrogate.as_deref(), Some("identity (straight-through)"));
    assert!(!scan.ops[0].swapped);
    assert!(!scan.ops[0].location.is_empty());
    assert_eq!(scan.swappable().count(), 1);
}

#[test]
fn onnx_straight_through_view_answers_bit_for_bit_with_a_nonzero_gradient() {
    let x = formula_input();
    let plain = onnx("tiny_round.onnx");
    let bpda = onnx("tiny_round.onnx").with_straight_through();
    assert!(bpda.straight_through() && !plain.straight_through());
    assert!(bpda.info().arch.as_deref().unwrap().starts_with("bpda["), "{:?}", bpda.info());
    assert_eq!(plain.info().arch, None);
    let want = plain.logits(&x).unwrap();
    assert!(bpda.logits(&x).unwrap().equal(&want), "logits without autograd");
    let xg = x.detach().set_requires_grad(true);
    assert!(bpda.logits_padded(&xg).unwrap().detach().equal(&want), "logits on the autograd path");
    assert!(bpda.query_logits(&x).unwrap().equal(&plain.query_logits(&x).unwrap()));

    let g_plain = ce_grad(&plain, &x);
    assert_eq!(abs_sum(&g_plain), 0.0, "Round kills the gradient");
    let g_bpda = ce_grad(&bpda, &x);
    assert!(abs_sum(&g_bpda) > 1e-3, "straight-through gradient: {}", abs_sum(&g_bpda));
    // Straight-through Round(7x)/7 is the identity in the backward pass: the gradient is the
    // MLP's own gradient at the quantized input.
    let mlp = onnx("tiny_plain.onnx");
    let q = (&x * 7.0).round() / 7.0;
    let g_mlp = ce_grad(&mlp, &q);
    let err = (&g_bpda - &g_mlp).abs().max().double_value(&[]);
    assert!(err < 1e-6, "gradient differs from the MLP's at the quantized input by {err}");

    let scan = bpda.graph_scan();
    assert_eq!(ops(&scan), [("Round", OpEffect::ZeroGradient)]);
    assert!(scan.ops[0].swapped, "{scan:?}");
    assert_eq!(scan.swappable().count(), 0);
    // The plain model has no straight-through op: the view changes nothing.
    let mlp_bpda = onnx("tiny_plain.onnx").with_straight_through();
    assert!(mlp_bpda.graph_scan().ops.is_empty());
}

/// The TorchScript BPDA rewrite (C++ shim): the rounding and the gradient killer get the
/// identity's gradient, answers stay bit for bit; an in-place round is refused, not rewritten.
#[test]
fn torchscript_bpda_rewrite_answers_bit_for_bit_and_passes_the_gradient() {
    let x = formula_input();
    let plain_mlp = torchscript("tiny_plain.pt");
    for (file, op) in [("tiny_round.pt", "aten::round"), ("tiny_detach.pt", "aten::detach")] {
        let plain = torchscript(file);
        let bpda = torchscript(file).with_straight_through().unwrap();
        assert_eq!(bpda.swapped(), [op], "{file}");
        assert!(bpda.info().arch.as_deref().unwrap().starts_with("bpda[torchscript: "), "{file}");
        assert!(bpda.logits(&x).unwrap().equal(&plain.logits(&x).unwrap()), "{file}: logits");
        let xg = x.detach().set_requires_grad(true);
        let on_graph = bpda.logits_padded(&xg).unwrap().detach();
        assert!(on_graph.equal(&plain.logits(&x).unwrap()), "{file}: logits with autograd");
        assert_eq!(abs_sum(&ce_grad(&plain, &x)), 0.0, "{file}: the plain gradient is masked");
        let g = ce_grad(&bpda, &x);
        assert!(abs_sum(&g) > 0.0, "{file}: the BPDA gradient passes");
        // Straight through: the MLP's own gradient at the input the MLP sees.
        let seen = if op == "aten::round" { (&x * 7.0).round() / 7.0 } else { x.shallow_clone() };
        let want = ce_grad(&plain_mlp, &seen);
        assert!((&g - &want).abs().max().double_value(&[]) < 1e-6, "{file}: gradient");
        let scan = bpda.graph_scan();
        assert!(scan.ops.iter().all(|o| o.swapped), "{file}: {scan:?}");
        assert!(scan.swappable().next().is_none() && scan.unswappable().next().is_none());
    }
    let inplace = torchscript("tiny_round_inplace.pt");
    let scan = inplace.graph_scan();
    assert_eq!(ops(&scan), [("aten::round_", OpEffect::ZeroGradient)], "{scan:?}");
    assert!(scan.ops[0].surrogate.is_none());
    let same = inplace.with_straight_through().unwrap();
    assert!(same.swapped().is_empty() && same.info().arch.is_none());
    let got = same.logits(&x).unwrap();
    assert!(got.allclose(&expected_logits("tiny_round.pt"), 1e-5, 1e-5, false), "{got}");
}
