//! `gibbon text`: train, attack and guard end to end on small fixtures, and every bad input
//! (empty texts, invalid UTF-8, unknown recipe, negative budget, bad FPR) gives exit code 2 with
//! one line naming the problem, never a panic.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("GIBBON_LOG", "warn")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run gibbon")
}

fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

/// An SMS-format fixture: 42 spam and 42 ham messages that differ in one word (so an edit of
/// that word can flip the filter).
fn sms_fixture(dir: &Path) -> PathBuf {
    let spam = [
        "free: see you at lunch then",
        "prize: ok lar on my way home",
        "cash: call me when you get home",
    ];
    let ham = ["see you at lunch then", "ok lar on my way home", "call me when you get home"];
    let mut text = String::new();
    for r in 0..14 {
        for (k, s) in spam.iter().enumerate() {
            text.push_str(&format!("spam\t{s} {}\n", ["pls", "now", "txt", "today"][(r + k) % 4]));
        }
        for (k, h) in ham.iter().enumerate() {
            text.push_str(&format!("ham\t{h} {}\n", ["ok", "pls", "x", "today"][(r + k) % 4]));
        }
    }
    let p = dir.join("sms.txt");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn train_attack_and_report_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = sms_fixture(dir.path());
    let model = dir.path().join("model");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let out = gibbon(&[
        "text",
        "train",
        "--data",
        d,
        "--arch",
        "linear",
        "--epochs",
        "6",
        "--buckets",
        "4096",
        "--out",
        m,
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        meta["training"]["split"]["test_indices"].as_array().unwrap().len(),
        16,
        "round(0.2 · 42) of each class, stratified"
    );
    assert!(meta["training"]["test_accuracy"].as_f64().unwrap() >= 0.9);
    let json = dir.path().join("attack.json");
    let html = dir.path().join("attack.html");
    let out = gibbon(&[
        "text",
        "attack",
        "--model",
        m,
        "--data",
        d,
        "--only-label",
        "spam",
        "--n",
        "10",
        "--recipe",
        "deepwordbug,homoglyph-label",
        "--out",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = doc["text_attack"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["label_only"], true);
    let dwb = &runs[0];
    let samples = dwb["per_sample"].as_array().unwrap();
    assert_eq!(samples.len(), 10);
    for s in samples.iter().filter(|s| s["success"] == true) {
        assert_ne!(s["adv_pred"], s["label"]);
        assert!(s["constraints"]["char_edits"].as_u64().unwrap() <= 30);
        assert!(!s["edits"].as_array().unwrap().is_empty());
        assert!(s["queries"].as_u64().unwrap() > 0);
    }
    assert!(
        dwb["summary"]["successes"].as_u64().unwrap() > 0,
        "deepwordbug breaks some of the toy filter's spam"
    );
    let mut child = Command::new(BIN)
        .args(["text", "score", "--model", m])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[\"free: see you at lunch then\", \"see you at lunch then\"]\n")
        .unwrap();
    let scored = child.wait_with_output().unwrap();
    let probs: Vec<Vec<f32>> = serde_json::from_slice(&scored.stdout).unwrap();
    assert!(
        probs[0][1] > 0.5 && probs[1][0] > 0.5,
        "text score answers the model's probabilities: {probs:?}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Text attacks") && page.contains("<mark>"),
        "highlighted edits in the page"
    );
}

#[test]
fn bad_text_inputs_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = sms_fixture(dir.path());
    let d = data.to_str().unwrap();
    let bad_utf8 = dir.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"ham\tok\nspam\tfree \xff\xfe prize\n").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"ham\tok\nspam\t  \n").unwrap();
    let m = dir.path().join("m");
    let m = m.to_str().unwrap();
    let train = |data: &str| {
        gibbon(&[
            "text",
            "train",
            "--data",
            data,
            "--arch",
            "linear",
            "--epochs",
            "1",
            "--buckets",
            "64",
            "--out",
            m,
        ])
    };
    assert_user_error(&train(bad_utf8.to_str().unwrap()), "line 2: invalid UTF-8");
    assert_user_error(&train(empty.to_str().unwrap()), "line 2: empty text");
    assert_user_error(&train("/nonexistent/sms.txt"), "/nonexistent/sms.txt");
    assert!(train(d).status.success());
    let attack = |extra: &[&str]| {
        let mut a = vec!["text", "attack", "--model", m, "--data", d, "--n", "3", "--out"];
        let out = dir.path().join("a.json");
        a.push(Box::leak(out.to_str().unwrap().to_string().into_boxed_str()));
        a.extend_from_slice(extra);
        gibbon(&a)
    };
    assert_user_error(&attack(&["--recipe", "textbugger"]), "unknown recipe \"textbugger\"");
    assert_user_error(&attack(&["--recipe", "deepwordbug", "--query-budget=-5"]), "--query-budget");
    assert_user_error(
        &attack(&["--recipe", "deepwordbug", "--only-label", "eggs"]),
        "--only-label",
    );
    assert_user_error(&attack(&["--recipe", "deepwordbug", "--fpr", "1.5"]), "--fpr");
    assert_user_error(
        &attack(&["--recipe", "pwws", "--synonyms", "/nonexistent/wn.tsv.gz"]),
        "/nonexistent/wn.tsv.gz",
    );
    assert_user_error(
        &gibbon(&[
            "text",
            "attack",
            "--model",
            "/nonexistent/model",
            "--data",
            d,
            "--recipe",
            "pwws",
            "--out",
            "x.json",
        ]),
        "model.json",
    );
}
