//! `gibbon transfer`: the documented form prints the matrix and writes the documented JSON;
//! bad inputs give one clear line and exit code 2.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

fn mnist() -> String {
    format!("idx:{}", shared().join("data/mnist").display())
}

fn reference(name: &str) -> String {
    shared().join(format!("reference/mnist_smallcnn_{name}.pt")).display().to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("GIBBON_LOG", "warn").output().expect("run gibbon")
}

/// Exit code 2, one `error:` line that mentions `needle`, no panic.
fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `transfer --surrogates S --targets T --data mnist --n 30 --eps 0.3` plus `extra`.
fn transfer(surrogates: &str, targets: &str, extra: &[&str]) -> Output {
    let data = mnist();
    let mut args = vec![
        "transfer",
        "--surrogates",
        surrogates,
        "--targets",
        targets,
        "--data",
        &data,
        "--n",
        "30",
        "--eps",
        "0.3",
    ];
    args.extend_from_slice(extra);
    gibbon(&args)
}

#[test]
fn transfer_prints_the_matrix_and_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/transfer.json");
    let both = format!("{},{}", reference("std"), reference("adv"));
    let o = transfer(&both, &both, &["--per-sample", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    // The table: a title, a header naming the targets, one row per surrogate.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].contains("mifgsm") && lines[0].contains("full budget"), "{stdout}");
    assert!(lines[1].starts_with("surrogate \\ target"), "{stdout}");
    assert!(lines[1].contains("mnist_smallcnn_std") && lines[1].contains("mnist_smallcnn_adv"));
    assert!(lines[1].contains("white-box"));
    assert!(
        lines[2].starts_with("mnist_smallcnn_std") && lines[3].starts_with("mnist_smallcnn_adv")
    );
    assert_eq!(lines[2].matches(" n=").count(), 3, "{stdout}");

    let j = json_of(&out);
    assert_eq!(j["n"], 30);
    assert_eq!(j["seed"], 0);
    assert_eq!(j["data"]["n"], 30);
    assert_eq!(j["threat"]["eps"], 0.3);
    assert_eq!(j["threat"]["norm"], "linf");
    assert_eq!(j["attack"]["name"], "mifgsm");
    assert_eq!(j["attack"]["full_budget"], true);
    assert_eq!(j["attack"]["params"]["steps"], 10);
    assert!(j["seconds"].as_f64().unwrap() > 0.0);
    for (key, name) in [("surrogates", "std"), ("targets", "std")] {
        let m = &j[key].as_array().unwrap()[0];
        assert_eq!(m["model"]["path"], reference(name));
        assert_eq!(m["model"]["kind"], "torchscript");
        assert_eq!(m["model"]["sha256"].as_str().unwrap().len(), 64);
        assert!(m["clean_accuracy"].as_f64().unwrap() > 0.9);
        assert_eq!(m["clean_preds"].as_array().unwrap().len(), 30);
    }
    let matrix = j["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 2);
    for (s, row) in matrix.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 2);
        for cell in row {
            let (k, n) = (cell["successes"].as_u64().unwrap(), cell["n"].as_u64().unwrap());
            assert!(n > 0 && k <= n);
            assert_eq!(cell["success_rate"].as_f64().unwrap(), k as f64 / n as f64);
            let (lo, hi) = (cell["ci_low"].as_f64().unwrap(), cell["ci_high"].as_f64().unwrap());
            assert!(lo <= k as f64 / n as f64 && k as f64 / n as f64 <= hi);
        }
        // Each surrogate is also a target: its diagonal cell is its white-box success.
        assert_eq!(row[s], j["surrogates"][s]["white_box"]);
        assert_eq!(j["surrogates"][s]["crafted"], 30);
        assert!(j["surrogates"][s]["queries"].as_u64().unwrap() >= 30 * 11);
    }
    assert!(matrix[0][0]["success_rate"].as_f64().unwrap() >= 0.95, "std -> std");
    assert!(matrix[0][1]["success_rate"].as_f64().unwrap() <= 0.2, "std -> adv");
    let per_sample = j["per_sample"].as_array().unwrap();
    assert_eq!(per_sample.len(), 2);
    for samples in per_sample {
        let samples = samples.as_array().unwrap();
        assert_eq!(samples.len(), 30);
        for (i, r) in samples.iter().enumerate() {
            assert_eq!(r["index"], i);
            assert!(r["norm"].as_f64().unwrap() <= 0.3 + 1e-6);
            assert_eq!(r["target_preds"].as_array().unwrap().len(), 2);
            assert!(r["surrogate_pred"].is_i64() && r["label"].is_i64());
        }
    }
}

#[test]
fn targeted_transfer_with_early_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let o = transfer(
        &format!("{},builtin:smallcnn-mnist", reference("std")),
        &reference("adv"),
        &[
            "--targeted",
            "3",
            "--early-exit",
            "--attack",
            "pgd",
            "--steps",
            "5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("targeted at class 3") && stdout.contains("early exit"), "{stdout}");
    assert!(stdout.contains("builtin:smallcnn-mnist"), "{stdout}");
    let j = json_of(&out);
    assert_eq!(j["attack"]["name"], "pgd");
    assert_eq!(j["attack"]["full_budget"], false);
    assert!(j["attack"]["params"].get("full_budget").is_none());
    assert!(j.get("per_sample").is_none());
    // Denominator: the samples whose label is not 3 (the first 30 test digits hold one 3).
    let labels_not_3 = 29;
    for s in 0..2 {
        assert_eq!(j["matrix"][s][0]["n"], labels_not_3);
        assert_eq!(j["surrogates"][s]["white_box"]["n"], labels_not_3);
    }
}

#[test]
fn bad_transfer_inputs_give_one_clear_line() {
    let std = reference("std");
    assert_user_error(&transfer(&std, &std, &["--attack", "no-such-attack"]), "no-such-attack");
    assert_user_error(&transfer(&std, &std, &["--attack", "pgd,mifgsm"]), "one attack");
    assert_user_error(&transfer(",", &std, &[]), "--surrogates");
    assert_user_error(&transfer(&std, " ", &[]), "--targets");
    let data = mnist();
    let curve = ["transfer", "--surrogates", &std, "--targets", &std, "--data", &data];
    assert_user_error(&gibbon(&[&curve[..], &["--eps", "0.1,0.2"]].concat()), "one --eps");
    assert_user_error(&transfer(&std, &std, &["--suite", "standard"]), "--suite");
    assert_user_error(&transfer("/no/such/model.pt", &std, &[]), "surrogate /no/such/model.pt");
    assert_user_error(&transfer(&std, "model.txt", &[]), "target model.txt");

    // A surrogate whose input shape differs from the data's (8×8 images for a 28×28 model).
    let dir = tempfile::tempdir().unwrap();
    let mut images = 0x0000_0803u32.to_be_bytes().to_vec();
    for d in [2u32, 8, 8] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend(std::iter::repeat_n(100u8, 2 * 8 * 8));
    let mut labels = 0x0000_0801u32.to_be_bytes().to_vec();
    labels.extend_from_slice(&2u32.to_be_bytes());
    labels.extend_from_slice(&[1, 2]);
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels).unwrap();
    let small = format!("idx:{}", dir.path().display());
    let o = gibbon(&[
        "transfer",
        "--surrogates",
        &std,
        "--targets",
        &std,
        "--data",
        &small,
        "--eps",
        "0.3",
    ]);
    assert_user_error(&o, "input shape");
    assert_user_error(&o, "surrogate");
}
