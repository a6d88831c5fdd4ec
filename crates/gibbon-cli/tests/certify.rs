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
    for rate in ["draws_per_second", "forward_rows_per_second"] {
        assert!(fresh[rate].as_f64().is_some_and(|r| r > 0.0), "{rate}: {}", fresh[rate]);
    }
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
        (vec!["--attack", "--attack-max-eps", "0"], "attack-max-eps"),
        (vec!["--attack", "--attack-draws", "0"], "attack-draws"),
        (vec!["--model", "/nonexistent.pt"], "nonexistent"),
    ] {
        let o = run(&extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `--attack`: SmoothAdv's smallest example beside each certificate; the attacked curve is an
/// upper bound of the certified one (no violations), and the page plots both.
#[test]
fn smoothadv_beside_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cert.json");
    let html = dir.path().join("cert.html");
    let o = run(&[
        "--out",
        out.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--attack",
        "--attack-steps",
        "3",
        "--attack-noise-samples",
        "4",
        "--attack-search-steps",
        "3",
        "--attack-draws",
        "200",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["violations"], 0, "{r}");
    assert_eq!(r["attack"]["steps"], 3);
    let certified = r["certified_accuracy"].as_array().unwrap();
    let attacked = r["attacked_accuracy"].as_array().unwrap();
    for (c, a) in certified.iter().zip(attacked) {
        assert_eq!(c[0], a[0]);
        assert!(a[1].as_f64().unwrap() >= c[1].as_f64().unwrap(), "{c} above {a}");
    }
    for s in r["per_sample"].as_array().unwrap() {
        let a = &s["attack"];
        assert!(a["runs"].as_u64().unwrap() >= 1, "{s}");
        if let Some(p) = a["perturbation"].as_f64() {
            assert!(p >= s["radius"].as_f64().unwrap() && p <= 2.0 + 1e-9, "{s}");
            assert_ne!(a["adversarial_class"], a["clean_class"], "{s}");
        }
        assert_eq!(s["violation"], false);
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("under SmoothAdv") && page.contains("Violations"), "page");
    eval_joins_the_certificates(&out, &r);
}

/// `gibbon eval --certificates`: the certify JSON joined by index, the smoothed and base
/// classifiers' numbers apart; certificates made on other data are refused (exit 2).
fn eval_joins_the_certificates(cert: &std::path::Path, certified: &serde_json::Value) {
    let model = shared("reference/mnist_smallcnn_std.pt");
    let data = format!("idx:{}", shared("data/mnist"));
    let html = cert.with_file_name("eval.html");
    let eval = |data: &str| {
        gibbon(&[
            "eval",
            "--model",
            &model,
            "--data",
            data,
            "--n",
            "3",
            "--threads",
            "1",
            "--norm",
            "l2",
            "--eps",
            "1.0",
            "--attack",
            "pgd",
            "--steps",
            "5",
            "--certificates",
            cert.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ])
    };
    let o = eval(&data);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &r["certified"];
    assert_eq!(c["joined"], 3, "{c}");
    assert_eq!(c["same_base_model"], true);
    assert_eq!(c["smoothed_violations"], 0);
    assert!(c["base_inside_certified_radius"].as_u64().is_some(), "{c}");
    for (row, s) in
        c["per_sample"].as_array().unwrap().iter().zip(certified["per_sample"].as_array().unwrap())
    {
        assert_eq!(row["index"], s["index"]);
        assert_eq!(row["certified_radius"], s["radius"]);
        assert_eq!(row["smoothed_attack_l2"], s["attack"]["perturbation"]);
        let base = row["base_min_norm"].as_f64();
        let inside =
            base.is_some_and(|b| b < s["radius"].as_f64().unwrap()) && !s["class"].is_null();
        assert_eq!(row["base_inside_certified_radius"], inside, "{row}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    let section = page.split("data-section=\"certified-beside\"").nth(1).expect("the section");
    let section = section.split("</section>").next().unwrap();
    assert!(section.contains("SmoothAdv examples inside a certified radius"), "section");
    assert!(section.contains("<svg"), "the scatter plot");
    let other = format!("idx:{}/", shared("data/mnist"));
    let o = eval(&other);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("certified on data"), "{stderr}");
}

/// `gibbon certify --ibp` of the adversarially trained SmallCNN's weights on 20 images: a
/// verified L∞ radius per sample, a non-increasing curve that starts at the clean accuracy of
/// the samples with a positive margin, the JSON and the page.
#[test]
fn interval_bounds_certify_a_builtin_model() {
    let dir = tempfile::tempdir().unwrap();
    let (out, html) = (dir.path().join("ibp.json"), dir.path().join("ibp.html"));
    let model = shared("reference/mnist_smallcnn_adv.safetensors");
    let data = format!("idx:{}", shared("data/mnist"));
    let o = gibbon(&[
        "certify",
        "--model",
        &model,
        "--arch",
        "smallcnn",
        "--data",
        &data,
        "--n",
        "20",
        "--ibp",
        "--radii",
        "0,0.00001,0.5",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["method"], "interval-bound-propagation");
    let samples = json["per_sample"].as_array().unwrap();
    assert_eq!(samples.len(), 20);
    for s in samples {
        let r = s["radius"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "{s}");
        assert!(s["margin"].as_f64().unwrap() > 0.0, "{s}");
    }
    let curve: Vec<f64> = json["certified_accuracy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert_eq!(curve[0], json["clean_accuracy"].as_f64().unwrap());
    assert!(curve[1] <= curve[0] && curve[1] > 0.0 && curve[2] == 0.0, "{curve:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<img class=\"figure\"") && page.contains("Interval bound propagation"));
}

#[test]
fn interval_bounds_refuse_what_they_cannot_bound() {
    let data = format!("idx:{}", shared("data/mnist"));
    let ts = shared("reference/mnist_smallcnn_std.pt");
    let st = shared("reference/mnist_smallcnn_adv.safetensors");
    for (args, needle) in [
        (vec!["--model", ts.as_str(), "--ibp"], "not one of gibbon's architectures"),
        (vec!["--model", st.as_str(), "--ibp"], "--arch"),
        (vec!["--model", st.as_str(), "--arch", "smallcnn", "--ibp", "--max-eps", "0"], "max-eps"),
        (vec!["--model", st.as_str(), "--arch", "smallcnn", "--ibp", "--sigma", "0.5"], "--sigma"),
        (
            vec![
                "--model",
                st.as_str(),
                "--arch",
                "smallcnn",
                "--ibp",
                "--defense",
                "bits:depth=3",
            ],
            "--defense",
        ),
        (vec!["--model", st.as_str(), "--arch", "smallcnn", "--max-eps", "0.1"], "--ibp"),
    ] {
        let mut all = vec!["certify", "--data", data.as_str(), "--n", "2", "--threads", "1"];
        all.extend(args.iter().copied());
        let o = gibbon(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
