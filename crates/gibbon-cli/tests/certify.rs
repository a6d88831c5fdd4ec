//! `gibbon certify`: certificates as JSON, a resumed run equal to a fresh one, and bad input as
//! one error with exit code 2. Model: the shared standard SmallCNN, a few MNIST images, few draws.
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn shared(path: &str) -> String {
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"));
    shared.join(path).display().to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("GIBBON_LOG", "warn").output().expect("run gibbon")
}

/// `gibbon certify` of the standard SmallCNN on 3 images with σ = 0.5, 1,000 draws (50 for
/// selection), and `extra` flags, which replace those defaults.
fn run(extra: &[&str]) -> Output {
    let model = shared("reference/mnist_smallcnn_std.pt");
    let data = format!("idx:{}", shared("data/mnist"));
    let mut args: Vec<String> = ["certify", "--data", &data, "--n", "3", "--threads", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let defaults = [
        ("--model", model.as_str()),
        ("--sigma", "0.5"),
        ("--draws", "1000"),
        ("--selection-draws", "50"),
    ];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    gibbon(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn certificates_are_bounded_and_a_resumed_run_equals_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cert.json");
    let html = dir.path().join("cert.html");
    let o = run(&["--out", out.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Certified accuracy") && page.contains("data:image/svg+xml;base64,"));
    let fresh: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let samples = fresh["per_sample"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    // With n = 1000 draws the bound on p_A is at most α^(1/n) = 0.9931 < 0.999, so the radius
    // is below σ·Φ⁻¹(0.999) = 0.5 · 3.0902.
    let cap = 0.5 * 3.0902;
    for s in samples {
        let r = s["radius"].as_f64().unwrap();
        assert!((0.0..=cap).contains(&r), "{s}");
        assert_eq!(s["correct"], s["class"] == s["label"], "{s}");
    }
    let curve = fresh["certified_accuracy"].as_array().unwrap();
    assert_eq!(curve[0][0], 0.0);
    // A stream holding the first certificate: the rerun takes it and certifies the rest.
    let partial = dir.path().join("cert.json.partial.jsonl");
    let header =
        serde_json::json!({"config": fresh["config"], "model_sha256": fresh["model"]["sha256"]});
    std::fs::write(&partial, format!("{header}\n{}\n{{\"index\": 1, \"lab", samples[0])).unwrap();
    let o = run(&["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(resumed["resumed"], 1);
    for (a, b) in resumed["per_sample"].as_array().unwrap().iter().zip(samples) {
        assert_eq!(a["radius"], b["radius"]);
        assert_eq!(a["count"], b["count"]);
    }
    assert!(!partial.exists(), "the stream is removed after success");
    // Another configuration does not resume a stream it did not write.
    std::fs::write(&partial, format!("{header}\n")).unwrap();
    let o = run(&["--out", out.to_str().unwrap(), "--seed", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_certify_input_is_one_error_and_exit_2() {
    for (extra, needle) in [
        (vec!["--sigma", "0"], "sigma"),
        (vec!["--sigma", "-1"], "sigma"),
        (vec!["--selection-draws", "5000"], "n0"),
        (vec!["--alpha", "1.5"], "alpha"),
        (vec!["--radii", "0,-1"], "radii"),
        (vec!["--model", "/nonexistent.pt"], "nonexistent"),
    ] {
        let o = run(&extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
