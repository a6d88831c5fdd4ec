//! `gibbon detect`: fit + eval on a few hundred MNIST / notMNIST images with the shared standard
//! SmallCNN, the adaptive attack beating the non-adaptive one on a guarded model, and bad input
//! as one error line with exit code 2.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn shared(path: &str) -> String {
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"));
    shared.join(path).display().to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("GIBBON_LOG", "warn").output().expect("run gibbon")
}

fn mnist() -> String {
    format!("idx:{}", shared("data/mnist"))
}

/// The standard reference SmallCNN as safetensors (its penultimate features are available).
fn std_model() -> Vec<String> {
    let model = shared("reference/mnist_smallcnn_std.safetensors");
    ["--model", &model, "--arch", "smallcnn", "--threads", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `gibbon detect fit` of `detector` on the standard model, calibrated on MNIST test images
/// 2000..2400 (unless `extra` names another --calib-range), with `extra` flags.
fn fit(detector: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["detect".into(), "fit".into()];
    args.extend(std_model());
    let data = mnist();
    let out = out.to_str().unwrap();
    args.extend(
        ["--detector", detector, "--calib", &data, "--out", out].iter().map(|s| s.to_string()),
    );
    if !extra.contains(&"--calib-range") {
        args.extend(["--calib-range".to_string(), "2000..2400".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Exit code 2 and one `error:` line containing `needle`.
fn user_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(needle), "{err}");
}

fn eval(detector: &Path, out: &Path, html: Option<&Path>) -> serde_json::Value {
    let mut args: Vec<String> = vec!["detect".into(), "eval".into()];
    args.extend(std_model());
    let notmnist = format!("idx:{}", shared("data/notmnist"));
    let (clean, d, o) =
        (mnist(), detector.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
    args.extend(
        [
            "--detector",
            &d,
            "--clean",
            &clean,
            "--clean-range",
            "0..300",
            "--ood",
            &notmnist,
            "--n",
            "300",
            "--out",
            &o,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if let Some(h) = html {
        args.extend(["--html".to_string(), h.to_str().unwrap().to_string()]);
    }
    ok(&gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// Measured on these 300 + 300 images: MSP AUROC 0.93, Mahalanobis 0.86 (2,000 + 2,000: 0.915
/// and 0.85); a broken score (constant, or the wrong sign) gives 0.5 or below.
#[test]
fn msp_and_mahalanobis_separate_notmnist_from_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let (msp, maha) = (dir.path().join("msp.json"), dir.path().join("maha.json"));
    ok(&fit("msp", &msp, &[]));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&msp).unwrap()).unwrap();
    assert_eq!(file["kind"], "msp");
    assert_eq!(file["calibration"]["n"], 400);
    assert_eq!(file["calibration_data"]["start"], 2000);
    assert!(file["calibration"]["fpr_upper_bound"].as_f64().unwrap() < 0.075);
    let html = dir.path().join("msp.html");
    let report = eval(&msp, &dir.path().join("msp_eval.json"), Some(&html));
    let m = &report["sets"][0]["metrics"];
    let auroc = m["auroc"].as_f64().unwrap();
    assert!(auroc > 0.85, "MSP AUROC {auroc}");
    let ci = m["auroc_ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= auroc && auroc <= ci[1].as_f64().unwrap());
    let fpr = m["fpr_at_threshold"]["rate"].as_f64().unwrap();
    assert!(fpr < 0.12, "clean test FPR at the 5% threshold: {fpr}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("ROC curves") && page.contains("Score histograms"));
    assert!(page.contains("data:image/svg+xml;base64,"));

    let fit_data = mnist();
    ok(&fit("mahalanobis", &maha, &["--fit-data", &fit_data, "--fit-range", "0..3000"]));
    let report = eval(&maha, &dir.path().join("maha_eval.json"), None);
    let auroc = report["sets"][0]["metrics"]["auroc"].as_f64().unwrap();
    assert!(auroc > 0.75, "Mahalanobis AUROC {auroc}");
    assert_eq!(report["fit_data"]["end"], 3000);
}

/// On 20 images at L∞ 0.3 (measured at n = 100: non-adaptive 0.99, adaptive 0.01 robust
/// accuracy under detection).
#[test]
fn the_adaptive_attack_beats_the_non_adaptive_one_on_a_guarded_model() {
    let dir = tempfile::tempdir().unwrap();
    let msp = dir.path().join("msp.json");
    ok(&fit("msp", &msp, &[]));
    let out = dir.path().join("attack.json");
    let mut args: Vec<String> = vec!["detect".into(), "attack".into()];
    args.extend(std_model());
    let data = mnist();
    let (d, o) = (msp.to_str().unwrap(), out.to_str().unwrap());
    args.extend(
        [
            "--detector",
            d,
            "--data",
            &data,
            "--n",
            "20",
            "--eps",
            "0.3",
            "--steps",
            "50",
            "--out",
            o,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    ok(&gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let rate = |attack: &str, key: &str| r[attack][key]["rate"].as_f64().unwrap();
    let (naive, adaptive) = (
        rate("non_adaptive", "robust_accuracy_under_detection"),
        rate("adaptive", "robust_accuracy_under_detection"),
    );
    assert!(naive >= 0.8 && adaptive <= 0.2, "non-adaptive {naive}, adaptive {adaptive}");
    assert!(rate("non_adaptive", "detection_rate") >= 0.8);
    assert!(rate("non_adaptive", "robust_accuracy_classifier") <= 0.1);
    for s in r["adaptive"]["per_sample"].as_array().unwrap() {
        assert!(s["linf"].as_f64().unwrap() <= 0.3 + 1e-6, "{s}");
        if s["success"].as_bool().unwrap() {
            assert!(
                !s["adv_flagged"].as_bool().unwrap() && s["adv_prediction"] != s["label"],
                "{s}"
            );
        }
    }
}

/// The ONNX export's penultimate layer (found as the input of its last Gemm, or named) gives
/// the builtin SmallCNN's Mahalanobis detector.
#[test]
fn onnx_models_expose_the_penultimate_and_named_feature_layers() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist();
    let threshold = |model: &[&str], extra: &[&str]| {
        let out = dir.path().join("m.json");
        let mut args = vec!["detect", "fit", "--detector", "mahalanobis", "--fit-data", &data];
        args.extend(["--fit-range", "0..1000", "--calib", &data, "--calib-range", "2000..2400"]);
        args.extend(["--threads", "1", "--out", out.to_str().unwrap()]);
        args.extend(model);
        args.extend(extra);
        ok(&gibbon(&args));
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        file["calibration"]["threshold"].as_f64().unwrap()
    };
    let (st, onnx) = (
        shared("reference/mnist_smallcnn_std.safetensors"),
        shared("reference/mnist_smallcnn_std.onnx"),
    );
    let builtin = threshold(&["--model", &st, "--arch", "smallcnn"], &[]);
    let found = threshold(&["--model", &onnx], &[]);
    let named = threshold(&["--model", &onnx], &["--feature-layer", "/Relu_5_output_0"]);
    assert!((found - builtin).abs() <= 1e-3 * builtin.abs(), "{found} vs {builtin}");
    assert_eq!(found, named);
    let fc1 = threshold(&["--model", &onnx], &["--feature-layer", "/Relu_4_output_0"]);
    assert!((fc1 - builtin).abs() > 1e-3 * builtin.abs(), "another layer, another detector");
}

/// The TorchScript export's penultimate layer (the input of its last linear layer, or the
/// graph value `input6` as in its code) gives the builtin SmallCNN's Mahalanobis detector; the
/// submodule `fc2` (before its functional ReLU) is another layer.
#[test]
fn torchscript_models_expose_the_penultimate_and_named_feature_layers() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist();
    let threshold = |model: &[&str], extra: &[&str]| {
        let out = dir.path().join("m.json");
        let mut args = vec!["detect", "fit", "--detector", "mahalanobis", "--fit-data", &data];
        args.extend(["--fit-range", "0..1000", "--calib", &data, "--calib-range", "2000..2400"]);
        args.extend(["--threads", "1", "--out", out.to_str().unwrap()]);
        args.extend(model);
        args.extend(extra);
        ok(&gibbon(&args));
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        file["calibration"]["threshold"].as_f64().unwrap()
    };
    let (st, ts) = (
        shared("reference/mnist_smallcnn_std.safetensors"),
        shared("reference/mnist_smallcnn_std.pt"),
    );
    let builtin = threshold(&["--model", &st, "--arch", "smallcnn"], &[]);
    let found = threshold(&["--model", &ts], &[]);
    let named = threshold(&["--model", &ts], &["--feature-layer", "input6"]);
    assert!((found - builtin).abs() <= 1e-6 * builtin.abs(), "{found} vs {builtin}");
    assert_eq!(found, named);
    let fc2 = threshold(&["--model", &ts], &["--feature-layer", "fc2"]);
    assert!((fc2 - builtin).abs() > 1e-3 * builtin.abs(), "another layer, another detector");
}

/// Mahalanobis on a defended model is fitted on the features of the defended input (other
/// class means, another threshold than the plain model's), and works through the EOT view.
#[test]
fn mahalanobis_fits_through_defense_and_eot_wrappers() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist();
    let fitted = |extra: &[&str]| {
        let out = dir.path().join("m.json");
        let mut args = vec!["--fit-data", data.as_str(), "--fit-range", "0..1000"];
        args.extend(extra);
        ok(&fit("mahalanobis", &out, &args));
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let mean = file["params"]["means"][0][0].as_f64().unwrap();
        (file["calibration"]["threshold"].as_f64().unwrap(), mean, file["model"]["arch"].clone())
    };
    let plain = fitted(&[]);
    let median = fitted(&["--defense", "median:size=3"]);
    assert!((median.0 - plain.0).abs() > 1e-3 * plain.0.abs(), "{median:?} vs {plain:?}");
    assert!((median.1 - plain.1).abs() > 1e-3, "{median:?} vs {plain:?}");
    assert!(median.2.as_str().unwrap().contains("defended[median:size=3]"), "{median:?}");
    let eot = fitted(&["--defense", "noise:sigma=0.05", "--eot", "2"]);
    assert!(eot.0.is_finite() && eot.0 > 0.0 && eot.1 != plain.1, "{eot:?}");
}

/// The guarded model under L2 PGD (ε = 2, 20 images): every returned example inside the L2
/// ball, and the adaptive attack beats the non-adaptive one (measured at n = 50: 1.00 vs 0.24).
#[test]
fn detect_attack_runs_in_l2() {
    let dir = tempfile::tempdir().unwrap();
    let msp = dir.path().join("msp.json");
    ok(&fit("msp", &msp, &[]));
    let out = dir.path().join("attack.json");
    let mut args: Vec<String> = vec!["detect".into(), "attack".into()];
    args.extend(std_model());
    let data = mnist();
    let (d, o) = (msp.to_str().unwrap(), out.to_str().unwrap());
    let flags = ["--detector", d, "--data", &data, "--n", "20", "--norm", "l2", "--eps", "2"];
    args.extend(flags.iter().chain(&["--steps", "50", "--out", o]).map(|s| s.to_string()));
    ok(&gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["norm"], "l2");
    let rate =
        |attack: &str| r[attack]["robust_accuracy_under_detection"]["rate"].as_f64().unwrap();
    let (naive, adaptive) = (rate("non_adaptive"), rate("adaptive"));
    assert!(naive >= 0.8 && adaptive <= 0.5, "non-adaptive {naive}, adaptive {adaptive}");
    for attack in ["non_adaptive", "adaptive"] {
        for s in r[attack]["per_sample"].as_array().unwrap() {
            assert!(s["distance"].as_f64().unwrap() <= 2.0 + 1e-6, "{s}");
        }
    }
}

/// C&W L2 examples written by `gibbon attack --out-dir` are an adversarial set of `detect
/// eval`: only the misclassified ones count, and MSP separates them from clean images (C&W
/// stops right past the decision boundary; measured on 100 images: AUROC 0.997).
#[test]
fn cw_examples_are_an_adversarial_set() {
    let dir = tempfile::tempdir().unwrap();
    let msp = dir.path().join("msp.json");
    ok(&fit("msp", &msp, &[]));
    let cw = dir.path().join("cw");
    let data = mnist();
    let mut args: Vec<String> = vec!["attack".into()];
    args.extend(std_model());
    let flags = ["--data", &data, "--n", "8", "--attack", "cw", "--norm", "l2", "--eps", "3"];
    let more = ["--steps", "50", "--alpha", "0.05", "--png", "0", "--no-resume", "--out-dir"];
    args.extend(flags.iter().chain(&more).map(|s| s.to_string()));
    args.push(cw.display().to_string());
    ok(&gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let attack: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cw.join("result.json")).unwrap()).unwrap();
    let wrong = attack["per_sample"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["adv_pred"] != s["label"])
        .count();
    assert!(wrong >= 4, "C&W broke {wrong} of 8");
    let out = dir.path().join("eval.json");
    let set = format!("npy:{0}/adversarial.npy,{0}/labels.npy", cw.display());
    let mut args: Vec<String> = vec!["detect".into(), "eval".into()];
    args.extend(std_model());
    let (d, o) = (msp.to_str().unwrap(), out.to_str().unwrap());
    let flags = ["--detector", d, "--clean", &data, "--clean-range", "0..300"];
    args.extend(flags.iter().chain(&["--adversarial", &set, "--out", o]).map(|s| s.to_string()));
    ok(&gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let s = &r["sets"][0];
    assert_eq!(s["kind"], "adversarial");
    assert_eq!(s["n"].as_u64().unwrap() as usize, wrong);
    let auroc = s["metrics"]["auroc"].as_f64().unwrap();
    assert!(auroc > 0.9, "MSP AUROC on C&W examples {auroc}");
}

#[test]
fn the_help_lists_every_registered_detector() {
    let o = gibbon(&["detect", "fit", "--help"]);
    ok(&o);
    let help = String::from_utf8_lossy(&o.stdout);
    for d in gibbon::detect::DETECTORS {
        assert!(
            help.contains(&format!("{}: {}", d.name, d.summary.split_whitespace().next().unwrap())),
            "{}",
            d.name
        );
    }
}

#[test]
fn bad_input_is_one_error_line_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let msp = dir.path().join("msp.json");
    ok(&fit("msp", &msp, &[]));
    // A calibration set too small for the target FPR.
    user_error(
        &fit("msp", &dir.path().join("x.json"), &["--calib-range", "2000..2100"]),
        "too few",
    );
    // A feature layer that does not exist (a builtin model, a TorchScript model).
    let fit_data = mnist();
    let o = fit(
        "mahalanobis",
        &dir.path().join("x.json"),
        &["--fit-data", &fit_data, "--feature-layer", "conv9"],
    );
    user_error(&o, "feature layer 'conv9' not found");
    let ts = shared("reference/mnist_smallcnn_std.pt");
    let o = gibbon(&[
        "detect",
        "fit",
        "--model",
        &ts,
        "--detector",
        "mahalanobis",
        "--fit-data",
        &fit_data,
        "--calib",
        &fit_data,
        "--feature-layer",
        "conv9",
        "--out",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    user_error(&o, "feature layer 'conv9' not found");
    assert!(String::from_utf8_lossy(&o.stderr).contains("fc2"), "lists the submodules");
    // An unknown detector, and a fit set that overlaps the calibration set.
    user_error(&fit("lof", &dir.path().join("x.json"), &[]), "unknown detector");
    let o = fit(
        "mahalanobis",
        &dir.path().join("x.json"),
        &["--fit-data", &fit_data, "--fit-split", "test"],
    );
    user_error(&o, "overlaps");
    // A detector file for another model.
    let adv = shared("reference/mnist_smallcnn_adv.safetensors");
    let notmnist = format!("idx:{}", shared("data/notmnist"));
    let eval_with = |model: &[&str], detector: &str, clean_range: &str| {
        let mut args = vec!["detect", "eval"];
        args.extend(model);
        args.extend([
            "--detector",
            detector,
            "--clean",
            &fit_data,
            "--clean-range",
            clean_range,
            "--ood",
            &notmnist,
            "--n",
            "50",
        ]);
        gibbon(&args)
    };
    let o = eval_with(&["--model", &adv, "--arch", "smallcnn"], msp.to_str().unwrap(), "0..50");
    user_error(&o, "fitted for model");
    // Evaluating on the calibration images; a missing or corrupt detector file.
    let model = shared("reference/mnist_smallcnn_std.safetensors");
    let std = ["--model", model.as_str(), "--arch", "smallcnn"];
    user_error(&eval_with(&std, msp.to_str().unwrap(), "2100..2200"), "overlaps");
    user_error(
        &eval_with(&std, dir.path().join("none.json").to_str().unwrap(), "0..50"),
        "none.json",
    );
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"kind\": \"msp\"").unwrap();
    user_error(&eval_with(&std, corrupt.to_str().unwrap(), "0..50"), "not a gibbon detector file");
}
