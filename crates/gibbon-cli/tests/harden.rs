//! `--defense`: input-defense chains on eval are recorded in the result's threat model; bad
//! chains and bad training defenses are one `error:` line and exit code 2; a tiny
//! `train --defense fast-fgsm` run writes its per-epoch curve and cost.
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

fn mnist() -> String {
    format!("idx:{}", shared().join("data/mnist").display())
}

fn std_model() -> String {
    shared().join("reference/mnist_smallcnn_std.pt").display().to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("GIBBON_LOG", "warn").output().expect("run gibbon")
}

fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
}

#[test]
fn bad_defense_chains_are_one_error_line_and_exit_2() {
    let (model, data) = (std_model(), mnist());
    for (chain, needle) in [
        ("blur:size=3", "unknown input defense 'blur'"),
        ("jpeg:quality=0", "quality"),
        ("jpeg:quality=101", "quality"),
        ("bits:depth=0", "depth"),
        ("bits:depth=9", "depth"),
        ("noise:sigma=-0.5", "sigma"),
    ] {
        let out = gibbon(&[
            "eval",
            "--model",
            &model,
            "--data",
            &data,
            "--n",
            "4",
            "--eps",
            "0.3",
            "--defense",
            chain,
        ]);
        assert_user_error(&out, needle);
    }
}

#[test]
fn jpeg_on_a_non_image_input_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // Four samples of 4 channels of 8×8 (not grayscale or RGB) and their labels, as .npy.
    let x = npy("<f4", "(4, 4, 8, 8)", &[0u8; 4 * 256 * 4]);
    let y = npy("<i8", "(4,)", &[0u8; 4 * 8]);
    std::fs::write(dir.path().join("x.npy"), x).unwrap();
    std::fs::write(dir.path().join("y.npy"), y).unwrap();
    let data = format!(
        "npy:{},{}",
        dir.path().join("x.npy").display(),
        dir.path().join("y.npy").display()
    );
    let weights = dir.path().join("linear.safetensors");
    let out = gibbon(&[
        "train",
        "--arch",
        "linear",
        "--data",
        &data,
        "--split",
        "test",
        "--epochs",
        "1",
        "--holdout",
        "1",
        "--out",
        weights.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gibbon(&[
        "eval",
        "--model",
        weights.to_str().unwrap(),
        "--arch",
        "linear",
        "--data",
        &data,
        "--split",
        "test",
        "--eps",
        "0.1",
        "--defense",
        "jpeg:quality=75",
    ]);
    assert_user_error(&out, "defense 'jpeg'");
}

fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn bad_training_defenses_are_one_error_line_and_exit_2() {
    let data = mnist();
    let base = [
        "train",
        "--arch",
        "smallcnn",
        "--data",
        &data,
        "--split",
        "test",
        "--out",
        "/nonexistent/x.safetensors",
    ];
    for (extra, needle) in [
        (&["--defense", "magic"][..], "training defense 'magic'"),
        (&["--defense", "trades"][..], "needs --adv-eps"),
        (&["--defense", "noise"][..], "needs --sigma"),
        (&["--defense", "noise", "--sigma", "-1"][..], "sigma"),
        (&["--defense", "trades", "--adv-eps", "0.3", "--beta", "-2"][..], "beta"),
        (&["--defense", "fast-fgsm", "--adv-eps", "0.3", "--adv-norm", "l2"][..], "L-infinity"),
        (&["--schedule", "sawtooth"][..], "'sawtooth' is not constant, cosine, step or cyclic"),
        (&["--defense", "ibp"][..], "needs --adv-eps"),
        (&["--defense", "ibp", "--adv-eps", "1.5"][..], "adv_eps"),
        (&["--defense", "ibp", "--adv-eps", "0.1", "--adv-norm", "l2"][..], "L-infinity"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        assert_user_error(&gibbon(&args), needle);
    }
}

#[test]
fn eval_behind_a_chain_records_it_in_the_threat_model() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("r.json");
    let out = gibbon(&[
        "eval",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--n",
        "16",
        "--eps",
        "0.3",
        "--steps",
        "5",
        "--defense",
        "jpeg:quality=75,bits:depth=3",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(json["threat"]["defense"], "jpeg:quality=75,bits:depth=3");
    assert!(json["model"]["arch"]
        .as_str()
        .unwrap()
        .contains("defended[jpeg:quality=75,bits:depth=3]"));
    // The same run without the chain has no defense field.
    let plain = dir.path().join("p.json");
    let out = gibbon(&[
        "eval",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--n",
        "16",
        "--eps",
        "0.3",
        "--steps",
        "5",
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plain).unwrap()).unwrap();
    assert!(json["threat"].get("defense").is_none());
}

#[test]
fn train_fast_fgsm_writes_the_epoch_curve_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("fast.safetensors");
    let out = gibbon(&[
        "train",
        "--arch",
        "smallcnn",
        "--data",
        &mnist(),
        "--split",
        "test",
        "--limit",
        "400",
        "--holdout",
        "100",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--lr",
        "5e-3",
        "--schedule",
        "cyclic",
        "--defense",
        "fast-fgsm",
        "--adv-eps",
        "0.1",
        "--out",
        weights.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("samples/s") && stderr.contains("passes per batch"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(weights.with_extension("train.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["trainer"], "fast-fgsm");
    assert_eq!(json["config"]["defense"]["defense"], "fast-fgsm");
    assert_eq!(json["cost"]["passes_per_batch"], 2);
    assert_eq!(json["cost"]["passes_per_epoch"], 12);
    assert!(json["epochs"][0]["holdout_robust_accuracy"].is_number());
}

#[test]
fn bpda_breaks_through_bit_depth_reduction_and_warns_when_nothing_to_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (std_model(), mnist());
    let run = |bpda: bool| -> serde_json::Value {
        let out_path = dir.path().join(format!("bpda-{bpda}.json"));
        let out = out_path.to_str().unwrap();
        let mut args = vec![
            "eval",
            "--model",
            &model,
            "--data",
            &data,
            "--n",
            "32",
            "--eps",
            "0.15",
            "--steps",
            "20",
            "--defense",
            "bits:depth=3",
            "--out",
            out,
        ];
        if bpda {
            args.push("--bpda");
        }
        let result = gibbon(&args);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap()
    };
    let (plain, bpda) = (run(false), run(true));
    let robust = |j: &serde_json::Value| j["robust_accuracy"].as_f64().unwrap();
    assert_eq!(plain["clean_accuracy"], bpda["clean_accuracy"], "the same deployed model");
    assert!(robust(&bpda) + 0.3 < robust(&plain), "plain {plain:?} vs bpda {bpda:?}");
    assert!(bpda["model"]["arch"].as_str().unwrap().starts_with("bpda["));
    assert_eq!(bpda["threat"]["defense"], "bits:depth=3");
    // Without a defense, the honest TorchScript model has nothing to swap: a warning, not an
    // error, and the evaluation runs as without --bpda.
    let out = gibbon(&[
        "eval", "--model", &model, "--data", &data, "--n", "4", "--eps", "0.1", "--attack", "fgsm",
        "--bpda",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--bpda: nothing to swap"), "{stderr}");
    assert!(stderr.contains("no non-differentiable or random operation"), "{stderr}");
    assert!(!stderr.contains("swapped"), "{stderr}");
}

fn masked(name: &str) -> String {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../gibbon/tests/fixtures/masked"))
        .join(name)
        .display()
        .to_string()
}

/// `gibbon eval` of `model` on 4 images with FGSM and `extra` flags: (exit status ok, stderr,
/// the result JSON's model arch).
fn eval_masked(model: &str, extra: &[&str]) -> (bool, String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.json");
    let (data, out) = (mnist(), out_path.to_str().unwrap().to_string());
    let mut args =
        vec!["eval", "--model", model, "--data", &data, "--n", "4", "--eps", "0.1", "--out", &out];
    args.extend(["--attack", "fgsm"]);
    args.extend(extra);
    let result = gibbon(&args);
    let stderr = String::from_utf8_lossy(&result.stderr).to_string();
    let arch = std::fs::read(&out_path).ok().and_then(|b| {
        let json: serde_json::Value = serde_json::from_slice(&b).ok()?;
        json["model"]["arch"].as_str().map(str::to_string)
    });
    (result.status.success(), stderr, arch)
}

#[test]
fn bpda_auto_swaps_onnx_and_torchscript_rounding_and_names_what_it_cannot() {
    let onnx = masked("tiny_round.onnx");
    for flags in [&["--bpda"][..], &["--bpda", "auto"]] {
        let (ok, stderr, arch) = eval_masked(&onnx, flags);
        assert!(ok, "{stderr}");
        assert!(stderr.contains("--bpda: swapped Round at "), "{stderr}");
        assert!(stderr.contains("identity (straight-through)"), "{stderr}");
        assert!(!stderr.contains("nothing to swap"), "{stderr}");
        assert!(arch.as_deref().is_some_and(|a| a.starts_with("bpda[")), "{arch:?}");
    }
    let (ok, stderr, arch) = eval_masked(&onnx, &[]);
    assert!(ok && !stderr.contains("swapped"), "{stderr}");
    assert_eq!(arch, None, "the plain model's result is not a BPDA view's");

    for (file, op) in [("tiny_round.pt", "aten::round"), ("tiny_detach.pt", "aten::detach")] {
        let (ok, stderr, arch) = eval_masked(&masked(file), &["--bpda"]);
        assert!(ok, "{stderr}");
        assert!(stderr.contains(&format!("--bpda: swapped {op} at ")), "{file}: {stderr}");
        assert!(!stderr.contains("nothing to swap"), "{file}: {stderr}");
        assert!(arch.as_deref().is_some_and(|a| a.starts_with("bpda[torchscript")), "{arch:?}");
    }
    let (ok, stderr, _) = eval_masked(&masked("tiny_round_inplace.pt"), &["--bpda"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("--bpda: nothing to swap"), "{stderr}");
    assert!(stderr.contains("cannot swap aten::round_ at tiny_round_inplace/code/"), "{stderr}");
    assert!(stderr.contains("gradient-free attacks (square, rays)"), "{stderr}");

    let out =
        gibbon(&["eval", "--model", &onnx, "--data", &mnist(), "--eps", "0.1", "--bpda", "all"]);
    assert_user_error(&out, "'all' is not auto");
}

/// `train --defense ibp` then `certify --ibp`: a short IBP run (5,000 images, 2 epochs, the
/// ramp's clean warm-up first) leaves a model that is verified at ε = 0.05 on a good share of
/// test images (measured 0.495 of 200), while the standard reference model, trained far longer,
/// is verified on none at 0.01: interval bounds are loose unless trained for.
#[test]
fn ibp_training_makes_models_that_interval_bounds_verify() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("ibp.safetensors");
    let data = mnist();
    let w = weights.to_str().unwrap();
    let o = gibbon(&[
        "train",
        "--arch",
        "smallcnn",
        "--data",
        &data,
        "--limit",
        "5000",
        "--holdout",
        "500",
        "--defense",
        "ibp",
        "--adv-eps",
        "0.1",
        "--adv-ramp-epochs",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--threads",
        "1",
        "--out",
        w,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let train: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(weights.with_extension("train.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(train["config"]["defense"]["defense"], "ibp");
    let certify = |model: &str, extra: &[&str]| -> Vec<f64> {
        let out = dir.path().join("c.json");
        let mut args = vec!["certify", "--model", model, "--data", &data, "--n", "200", "--ibp"];
        args.extend_from_slice(extra);
        args.extend(["--radii", "0,0.01,0.05", "--threads", "1", "--out", out.to_str().unwrap()]);
        let o = gibbon(&args);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        json["certified_accuracy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .collect()
    };
    let trained = certify(w, &["--arch", "smallcnn"]);
    assert!(trained[0] >= 0.5, "clean {} : a collapsed (constant) classifier?", trained[0]);
    assert!(trained[2] >= 0.25, "verified at 0.05: {trained:?}");
    let std_weights = shared().join("reference/mnist_smallcnn_std.safetensors");
    let standard = certify(std_weights.to_str().unwrap(), &["--arch", "smallcnn"]);
    assert_eq!(standard[1], 0.0, "the standard model verified at 0.01: {standard:?}");
}
