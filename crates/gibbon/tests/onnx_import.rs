//! ONNX import: every operator fixture (tests/fixtures/onnx, made by
//! scripts/make_onnx_fixtures.py) matches onnx's reference evaluator or eager torch, including
//! input gradients for the ResNet- and transformer-style graphs; the reference SmallCNN .onnx
//! files match their TorchScript twins in logits, input gradients and PGD outcomes; malformed
//! and unsupported files are clean errors, never panics.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::onnx::{inspect, OnnxGraph};
use gibbon::model::{load_model, Classifier, ModelSpec, OnnxModel};
use gibbon::threat::{Norm, ThreatModel};
use gibbon::GibbonError;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use support::{mnist, shared};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx"))
}

fn npz(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_npz(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn get<'a>(arrays: &'a [(String, Tensor)], name: &str) -> Option<&'a Tensor> {
    arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

/// max |a - b| / (1e-5 + 1e-4 |b|): at most 1 means within atol 1e-5 + rtol 1e-4.
fn scaled_error(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    if b.numel() == 0 {
        return 0.0;
    }
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let err = (&a - &b).abs() / (b.abs() * 1e-4 + 1e-5);
    err.max().double_value(&[])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "npz").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_operator_fixture_matches_its_reference_outputs_and_gradients() {
    let mut ops = BTreeSet::new();
    let mut opsets = BTreeSet::new();
    let mut with_grad = 0;
    for name in fixture_names() {
        let path = fixtures().join(format!("{name}.onnx"));
        let summary = inspect(&path).unwrap();
        assert!(summary.unsupported.is_empty(), "{name}: {:?}", summary.unsupported);
        ops.extend(summary.operators.keys().cloned());
        opsets.insert(summary.opset);
        let graph = OnnxGraph::load(&path, Device::Cpu).unwrap();
        let arrays = npz(&fixtures().join(format!("{name}.npz")));
        let x = get(&arrays, "input").unwrap().set_requires_grad(true);
        let outs = graph.run(std::slice::from_ref(&x)).unwrap();
        let mut worst = 0f64;
        for (i, out) in outs.iter().enumerate() {
            let expected = get(&arrays, &format!("output_{i}"))
                .unwrap_or_else(|| panic!("{name}: no expected output {i}"));
            let e = scaled_error(out, expected);
            assert!(e <= 1.0, "{name}: output {i} off by {e} x (1e-5 + 1e-4 |expected|)");
            worst = worst.max(max_abs_diff(out, expected));
        }
        assert_eq!(get(&arrays, &format!("output_{}", outs.len())).map(|_| ()), None);
        if let (Some(gw), Some(grad)) = (get(&arrays, "grad_weight"), get(&arrays, "grad")) {
            let objective = (&outs[0] * gw).sum(Kind::Double);
            let g = Tensor::run_backward(&[objective], &[&x], false, false).remove(0);
            let e = scaled_error(&g, grad);
            assert!(e <= 1.0, "{name}: input gradient off by {e} x tolerance");
            eprintln!("{name}: max |grad diff| {:.2e}", max_abs_diff(&g, grad));
            with_grad += 1;
            // Dynamic batch: each row alone gives the same outputs.
            let n = x.size()[0];
            for r in 0..n {
                let row = graph.run(&[x.narrow(0, r, 1).detach()]).unwrap();
                let d = max_abs_diff(&row[0], &outs[0].narrow(0, r, 1));
                assert!(d < 1e-5, "{name}: row {r} alone differs by {d}");
            }
        }
        eprintln!("{name}: opset {} max |output diff| {worst:.2e}", summary.opset);
    }
    assert!(with_grad >= 3, "ResNet and transformer fixtures carry gradients");
    let required = [
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "Clip",
        "Max",
        "Min",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "BatchNormalization",
        "Flatten",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Gather",
        "Shape",
        "Constant",
        "ConstantOfShape",
        "Identity",
        "Dropout",
        "Pad",
        "ReduceMean",
        "ReduceSum",
        "Erf",
        "Gelu",
        "Pow",
        "Sqrt",
        "LayerNormalization",
    ];
    let missing: Vec<_> = required.iter().filter(|op| !ops.contains(**op)).collect();
    assert!(missing.is_empty(), "operators without a fixture: {missing:?}");
    for opset in [11, 13, 17, 18, 21] {
        assert!(opsets.contains(&opset), "no fixture at opset {opset}: {opsets:?}");
    }
}

#[test]
fn external_data_is_read_from_beside_the_model() {
    let path = fixtures().join("external_data_o13.onnx");
    assert!(std::fs::metadata(&path).unwrap().len() < 400, "weights are not inline");
    let model = OnnxModel::load(&path, &[6], Device::Cpu).unwrap();
    assert_eq!(model.num_classes(), 4);
    let arrays = npz(&fixtures().join("external_data_o13.npz"));
    let logits = model.forward(get(&arrays, "input").unwrap()).unwrap();
    assert!(scaled_error(&logits, get(&arrays, "output_0").unwrap()) <= 1.0);
    // The same bytes from memory, without a directory to look in: a clear error.
    let bytes = std::fs::read(&path).unwrap();
    let err = OnnxModel::from_bytes(&bytes, "mem", None, &[6], Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("external data"), "{err}");
    // A directory without the data file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), &bytes).unwrap();
    let err = OnnxModel::load(&dir.path().join("m.onnx"), &[6], Device::Cpu).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("external_data_o13.weights"), "{err}");
}

fn reference(name: &str, ext: &str) -> Box<dyn Classifier> {
    let path = support::reference_path(name, ext);
    let spec: ModelSpec = path.to_str().unwrap().parse().unwrap();
    load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn per_sample_ce(logits: &Tensor, labels: &Tensor) -> Tensor {
    -logits.log_softmax(-1, Kind::Float).gather(1, &labels.unsqueeze(1), false).squeeze_dim(1)
}

#[test]
fn reference_smallcnn_onnx_matches_torchscript_logits_and_input_gradients() {
    let data = mnist(200);
    let idx: Vec<usize> = (0..200).collect();
    let x = data.batch(&idx, Device::Cpu);
    let labels = data.labels_of(&idx, Device::Cpu);
    let sha = [
        ("std", "be9a4f12f3a609bb855b0a690c180ae73cbcf0fb5174c60e54abd9866affc276"),
        ("adv", "53696ab65e1e2e569876099015030583f4b2ebd0e2f9ef44619fde37c3c7d0e7"),
    ];
    for (name, sha256) in sha {
        let onnx = reference(name, "onnx");
        let ts = reference(name, "pt");
        assert_eq!(onnx.info().kind, "onnx");
        assert_eq!(onnx.info().sha256, sha256);
        assert_eq!(onnx.num_classes(), 10);
        let d_logits = max_abs_diff(&onnx.logits(&x).unwrap(), &ts.logits(&x).unwrap());
        let loss = |l: &Tensor| per_sample_ce(l, &labels);
        let (_, _, g_onnx) = onnx.loss_and_input_grad(&x, &loss).unwrap();
        let (_, _, g_ts) = ts.loss_and_input_grad(&x, &loss).unwrap();
        let d_grad = max_abs_diff(&g_onnx, &g_ts);
        eprintln!("{name}: max |logit diff| {d_logits:.3e}, max |grad diff| {d_grad:.3e}");
        assert!(d_logits <= 1e-4, "{name}: logits differ by {d_logits}");
        assert!(d_grad <= 1e-4, "{name}: input gradients differ by {d_grad}");
    }
}

fn pgd40(model: &dyn Classifier, data: &Dataset) -> EvalReport {
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(40);
    let settings = EvalSettings { batch_size: 100, ..Default::default() };
    evaluate(model, data, &threat, &settings, &RunInfo::default()).unwrap().0
}

/// PGD-40 (L∞ ε = 0.3, default step) on the first 100 t10k images: identical per-sample outcomes.
fn same_pgd_outcomes(name: &str) {
    let data = mnist(100);
    let a = pgd40(reference(name, "onnx").as_ref(), &data);
    let b = pgd40(reference(name, "pt").as_ref(), &data);
    assert_eq!(a.per_sample.len(), 100);
    for (x, y) in a.per_sample.iter().zip(&b.per_sample) {
        assert_eq!(
            (x.index, x.clean_pred, x.robust, x.adv_pred),
            (y.index, y.clean_pred, y.robust, y.adv_pred),
            "{name}"
        );
    }
    assert_eq!(a.robust_accuracy, b.robust_accuracy);
    eprintln!("{name}: clean {} robust {}", a.clean_accuracy, a.robust_accuracy);
}

#[test]
fn reference_smallcnn_std_onnx_gives_the_same_pgd_outcomes_as_torchscript() {
    same_pgd_outcomes("std");
}

#[test]
fn reference_smallcnn_adv_onnx_gives_the_same_pgd_outcomes_as_torchscript() {
    same_pgd_outcomes("adv");
}

fn load_err(bytes: &[u8]) -> GibbonError {
    match OnnxModel::from_bytes(bytes, "test.onnx", None, &[1, 28, 28], Device::Cpu) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

#[test]
fn malformed_and_unsupported_files_are_clear_errors() {
    // Random bytes.
    let mut state = 0x2545F4914F6CDD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let err = load_err(&random);
    assert!(matches!(err, GibbonError::Format { .. }) && err.is_user_error(), "{err}");
    // Empty and truncated files.
    let real = std::fs::read(shared().join("reference/mnist_smallcnn_std.onnx")).unwrap();
    for cut in [0, 1, 10, 100, real.len() / 3, real.len() / 2, real.len() - 1] {
        let err = load_err(&real[..cut]);
        assert!(err.is_user_error(), "cut {cut}: {err}");
        eprintln!("cut at {cut}: {err}");
    }
    let err = load_err(&real[..real.len() / 2]);
    assert!(err.to_string().contains("protobuf"), "{err}");
    // An operator gibbon does not implement: named with its node and opset.
    let err =
        OnnxGraph::load(&fixtures().join("unsupported_hardmax_o13.onnx"), Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GibbonError::Model { .. }), "{text}");
    assert!(
        text.contains("Hardmax") && text.contains("Hardmax_y") && text.contains("opset 13"),
        "{text}"
    );
    // An opset outside 11..21.
    let err =
        OnnxGraph::load(&fixtures().join("unsupported_opset22.onnx"), Device::Cpu).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("opset 22"), "{err}");
    // inspect reports rather than fails.
    let s = inspect(&fixtures().join("unsupported_hardmax_o13.onnx")).unwrap();
    assert_eq!(s.unsupported.len(), 1);
    assert!(s.to_string().contains("supported:  no"));
    // A model whose input does not fit the data.
    let err = OnnxModel::load(
        &shared().join("reference/mnist_smallcnn_std.onnx"),
        &[3, 32, 32],
        Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, GibbonError::Mismatch(_)), "{err}");
}

/// Feeds thousands of mutated versions of real fixtures to the loader (and runs the ones that
/// load): every outcome must be Ok or an error, never a panic or an abort.
#[test]
fn mutated_files_never_panic() {
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names = fixture_names();
    let mut loaded = 0;
    let mut total = 0;
    for round in 0..3000 {
        let name = &names[round % names.len()];
        let mut bytes = std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap();
        let edits = 1 + next() % 4;
        for _ in 0..edits {
            let len = bytes.len().max(1) as u64;
            let pos = (next() % len) as usize;
            match next() % 5 {
                0 => {
                    if let Some(b) = bytes.get_mut(pos) {
                        *b ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    if let Some(b) = bytes.get_mut(pos) {
                        *b = next() as u8;
                    }
                }
                2 => bytes.truncate(pos),
                3 => bytes.insert(pos.min(bytes.len()), next() as u8),
                _ => {
                    // Small varint values land in lengths, dims, attribute ints and axes.
                    if let Some(b) = bytes.get_mut(pos) {
                        *b = [0u8, 1, 2, 0x7f, 0xff, 0x80][(next() % 6) as usize];
                    }
                }
            }
        }
        total += 1;
        let arrays_path = fixtures().join(format!("{name}.npz"));
        let result = std::panic::catch_unwind(|| {
            let Ok(graph) = OnnxGraph::from_bytes(&bytes, "fuzz", None, Device::Cpu) else {
                return false;
            };
            let arrays = Tensor::read_npz(&arrays_path).unwrap();
            let x = arrays.iter().find(|(n, _)| n == "input").map(|(_, t)| t.shallow_clone());
            if let Some(x) = x {
                let _ = graph.run(&[x]);
            }
            true
        });
        match result {
            Ok(true) => loaded += 1,
            Ok(false) => {}
            Err(_) => panic!("panic on a mutation of {name} (round {round})"),
        }
    }
    eprintln!("{total} mutated files, {loaded} still loaded");
    assert!(loaded > 0 && loaded < total);
}

/// Throughput of forward + input gradient, ONNX-imported vs TorchScript SmallCNN, batch 128,
/// one libtorch thread. Not a test (timings depend on the machine); run with
/// `cargo test --release -p gibbon --test onnx_import -- --ignored --nocapture onnx_throughput`.
#[test]
#[ignore]
fn onnx_throughput_vs_torchscript() {
    tch::set_num_threads(1);
    let data = mnist(128);
    let idx: Vec<usize> = (0..128).collect();
    let x = data.batch(&idx, Device::Cpu);
    let labels = data.labels_of(&idx, Device::Cpu);
    let loss = |l: &Tensor| per_sample_ce(l, &labels);
    let models = [("onnx", reference("adv", "onnx")), ("torchscript", reference("adv", "pt"))];
    for (_, m) in &models {
        for _ in 0..3 {
            let _ = m.loss_and_input_grad(&x, &loss).unwrap();
        }
    }
    // Interleave the two so that load changes on a shared machine hit both alike.
    let mut best = [f64::INFINITY; 2];
    let mut total = [0f64; 2];
    let (rounds, passes) = (7, 5);
    for _ in 0..rounds {
        for (i, (_, m)) in models.iter().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..passes {
                let _ = m.loss_and_input_grad(&x, &loss).unwrap();
            }
            let s = start.elapsed().as_secs_f64() / passes as f64;
            best[i] = best[i].min(s);
            total[i] += s;
        }
    }
    for (i, (name, _)) in models.iter().enumerate() {
        eprintln!(
            "{name}: best {:.0} images/s, mean {:.0} images/s (forward + input gradient, batch 128, 1 thread)",
            128.0 / best[i],
            128.0 * rounds as f64 / total[i]
        );
    }
    eprintln!("onnx / torchscript (best): {:.3}", best[1] / best[0]);
}
