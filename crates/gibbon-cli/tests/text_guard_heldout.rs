//! The prompt-injection guard measured honestly: the threshold set on a slice of the TRAIN split
//! the model was not trained on (`text train --holdout-fraction`, `text guard --calibrate`),
//! TPR and the measured FPR on the test split with intervals; word-level attacks on the guard
//! count an evasion only when the payload survives; a CNN refuses texts over its max_len.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn deepset(split: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!(
            "../../../shared/data/prompt_injections_deepset/deepset-prompt-injections-{split}.jsonl"
        ))
        .display()
        .to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("GIBBON_LOG", "warn")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run gibbon")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn train_guard(dir: &Path, holdout: &str) -> PathBuf {
    let out = dir.join(format!("guard{holdout}"));
    ok(gibbon(&[
        "text",
        "train",
        "--data",
        &deepset("train"),
        "--test",
        &deepset("test"),
        "--arch",
        "linear",
        "--epochs",
        "10",
        "--holdout-fraction",
        holdout,
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    out
}

#[test]
fn guard_threshold_is_set_on_the_held_out_train_slice_and_reported_on_test() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_guard(dir.path(), "0.3");
    let meta = json_of(&model.join("model.json"));
    let held: Vec<u64> = meta["training"]["holdout"]["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!((150..180).contains(&held.len()), "30% of 546: {}", held.len());
    assert_eq!(meta["training"]["n_train"].as_u64().unwrap() as usize, 546 - held.len());
    let out = dir.path().join("g.json");
    ok(gibbon(&[
        "text",
        "guard",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &deepset("test"),
        "--calibrate",
        &deepset("train"),
        "--fpr",
        "0.05",
        "--out",
        out.to_str().unwrap(),
    ]));
    let doc = json_of(&out);
    assert_eq!(doc["calibration"]["held_out"], true);
    assert_eq!(doc["calibration"]["texts"].as_u64().unwrap() as usize, held.len());
    let u = &doc["undefended"];
    let (tp, pos) = (u["true_positives"].as_u64().unwrap(), u["positives"].as_u64().unwrap());
    let (fp, neg) = (u["false_positives"].as_u64().unwrap(), u["negatives"].as_u64().unwrap());
    assert_eq!(pos + neg, 116);
    assert!((u["tpr"].as_f64().unwrap() - tp as f64 / pos as f64).abs() < 1e-12);
    assert!((u["fpr"].as_f64().unwrap() - fp as f64 / neg as f64).abs() < 1e-12);
    for key in ["tpr", "fpr"] {
        let ci = u[format!("{key}_ci95")].as_array().unwrap();
        let v = u[key].as_f64().unwrap();
        assert!(ci[0].as_f64().unwrap() <= v && v <= ci[1].as_f64().unwrap(), "{key}: {u}");
    }
    // In-sample calibration (no --calibrate) is flagged as such.
    ok(gibbon(&[
        "text",
        "guard",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &deepset("test"),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(json_of(&out)["calibration"]["held_out"], false);
}

#[test]
fn guard_calibration_bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_guard(dir.path(), "0");
    let out = dir.path().join("g.json");
    let base = [
        "text",
        "guard",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &deepset("test"),
        "--calibrate",
        &deepset("train"),
        "--out",
        out.to_str().unwrap(),
    ];
    assert_user_error(&gibbon(&base), "records no held-out slice");
    let mut more = base.to_vec();
    more.extend(["--calibration-fraction", "1.5"]);
    assert_user_error(&gibbon(&more), "--calibration-fraction 1.5");
    let o = gibbon(&[
        "text",
        "train",
        "--data",
        &deepset("train"),
        "--arch",
        "linear",
        "--holdout-fraction",
        "1.5",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_user_error(&o, "--holdout-fraction 1.5");
}

#[test]
fn word_attacks_on_the_guard_only_count_evasions_that_keep_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_guard(dir.path(), "0.3");
    let out = dir.path().join("a.json");
    ok(gibbon(&[
        "text",
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &deepset("test"),
        "--only-label",
        "1",
        "--fpr",
        "0.05",
        "--recipe",
        "deepwordbug",
        "--protect",
        "ignore,forget",
        "--n",
        "40",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    let doc = json_of(&out);
    assert_eq!(doc["payload_check"]["protect"][0], "ignore");
    let r = &doc["text_attack"][0];
    assert!(r["payload_lost"].is_u64());
    let mut checked = 0;
    for s in r["per_sample"].as_array().unwrap() {
        for e in s["edits"].as_array().unwrap() {
            let (from, to) = (e["from"].as_str().unwrap(), e["to"].as_str().unwrap());
            assert!(!["ignore", "forget"].contains(&from.to_lowercase().as_str()), "{e}");
            if s["success"] == true {
                // One typo in a word of >= 4 characters (deepwordbug's edits).
                assert!(from.chars().count() >= 4, "{e}");
                let (a, b): (Vec<char>, Vec<char>) = (from.chars().collect(), to.chars().collect());
                assert!(a.len().abs_diff(b.len()) <= 1, "{e}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no successful edit to check: {}", r["summary"]);
}

#[test]
fn cnn_refuses_texts_over_its_max_len_naming_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.tsv");
    let mut rows = String::from("sentence\tlabel\n");
    for i in 0..30 {
        rows.push_str(&format!("a truly great film {i}\t1\nan awful dull mess {i}\t0\n"));
    }
    std::fs::write(&data, &rows).unwrap();
    let model = dir.path().join("cnn");
    ok(gibbon(&[
        "text",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "cnn",
        "--epochs",
        "1",
        "--max-len",
        "8",
        "--min-count",
        "1",
        "--threads",
        "1",
        "--out",
        model.to_str().unwrap(),
    ]));
    rows.push_str("one two three four five six seven eight nine\t1\n");
    std::fs::write(&data, &rows).unwrap();
    let o = gibbon(&[
        "text",
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--recipe",
        "deepwordbug",
        "--n",
        "100",
        "--out",
        dir.path().join("a.json").to_str().unwrap(),
    ]);
    assert_user_error(&o, "text 60 has 9 words, more than the model's maximum length 8");
}
