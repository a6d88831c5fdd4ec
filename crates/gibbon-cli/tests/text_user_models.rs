//! User text models: an ONNX word-CNN exported by PyTorch with its HF `tokenizer.json`
//! (fixtures/text_onnx, made by scripts/make_text_onnx.py), scored by gibbon exactly as PyTorch
//! scores it, attacked with verified results; the same model served over HTTP
//! (`gibbon text serve`) and attacked remotely with the same results; `gibbon train --task text`;
//! texts over the model's length refused.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text_onnx")
}

fn sst2_dev() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/sst2/dev.tsv")
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

fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// gibbon's probabilities of `texts` through `gibbon text score` (one stdin line).
fn score(model: &str, texts: &[String]) -> Vec<Vec<f64>> {
    let mut child = Command::new(BIN)
        .args(["text", "score", "--model", model, "--threads", "1"])
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(texts).unwrap()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn onnx_text_model_scores_equal_pytorch_on_200_dev_sentences() {
    let reference = json_of(&fixture().join("predictions.json"));
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    let torch: Vec<Vec<f64>> = serde_json::from_value(reference["probabilities"].clone()).unwrap();
    assert_eq!(texts.len(), 200);
    let ours = score(fixture().to_str().unwrap(), &texts);
    let mut worst = 0.0f64;
    for (a, b) in ours.iter().zip(&torch) {
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-4, "largest |gibbon - pytorch| = {worst}");
    // The model is not constant: the scores spread over both classes.
    let positive = ours.iter().filter(|p| p[1] > 0.5).count();
    assert!((40..160).contains(&positive), "{positive} of 200 positive");
}

#[test]
fn deepwordbug_on_the_onnx_model_gives_verified_successes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.json");
    let model = fixture().join("model.onnx");
    let o = gibbon(&[
        "text",
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        fixture().join("tokenizer.json").to_str().unwrap(),
        "--data",
        &sst2_dev(),
        "--recipe",
        "deepwordbug",
        "--n",
        "20",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc = json_of(&out);
    assert_eq!(doc["model"]["kind"], "onnx");
    let r = &doc["text_attack"][0];
    let successes = r["summary"]["successes"].as_u64().unwrap();
    assert!(successes >= 3, "{}", r["summary"]);
    // Every claimed success is re-scored here through `text score`: the adversarial text
    // really flips the ONNX model.
    let wins: Vec<&serde_json::Value> =
        r["per_sample"].as_array().unwrap().iter().filter(|s| s["success"] == true).collect();
    let adv: Vec<String> =
        wins.iter().map(|s| s["adversarial"].as_str().unwrap().to_string()).collect();
    let p = score(fixture().to_str().unwrap(), &adv);
    for (s, p) in wins.iter().zip(&p) {
        let label = s["label"].as_u64().unwrap() as usize;
        assert!(p[label] < p[1 - label], "not flipped: {s}");
        assert_ne!(s["adversarial"], s["text"]);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text_serve(output: &str) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["text", "serve", "--model", fixture().to_str().unwrap(), "--output", output])
        .args(["--threads", "1"])
        .env("GIBBON_LOG", "warn")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("serving ").expect("serving URL").to_string();
    (Server(child), url)
}

fn attack_json(model: &str, recipe: &str, out: &Path) -> serde_json::Value {
    let o = gibbon(&[
        "text",
        "attack",
        "--model",
        model,
        "--data",
        &sst2_dev(),
        "--recipe",
        recipe,
        "--n",
        "12",
        "--query-budget",
        "300",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    json_of(out)
}

fn outcomes(doc: &serde_json::Value) -> Vec<(bool, String, u64)> {
    doc["text_attack"][0]["per_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["success"].as_bool().unwrap(),
                s["adversarial"].as_str().unwrap().to_string(),
                s["queries"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn remote_text_model_attack_equals_the_local_attack() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = text_serve("scores");
    let local = attack_json(fixture().to_str().unwrap(), "deepwordbug", &dir.path().join("l.json"));
    let remote = attack_json(&url, "deepwordbug", &dir.path().join("r.json"));
    assert_eq!(remote["model"]["kind"], "remote");
    assert_eq!(outcomes(&local), outcomes(&remote), "same texts, successes and queries");
    assert!(local["text_attack"][0]["summary"]["successes"].as_u64().unwrap() >= 2);
}

#[test]
fn label_only_server_takes_label_recipes_and_refuses_score_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = text_serve("labels");
    let o = gibbon(&[
        "text",
        "attack",
        "--model",
        &url,
        "--data",
        &sst2_dev(),
        "--recipe",
        "deepwordbug",
        "--n",
        "3",
        "--out",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_user_error(&o, "labels only");
    let local =
        attack_json(fixture().to_str().unwrap(), "deepwordbug-label", &dir.path().join("l.json"));
    let remote = attack_json(&url, "deepwordbug-label", &dir.path().join("r.json"));
    assert_eq!(outcomes(&local), outcomes(&remote));
}

#[test]
fn texts_over_the_onnx_models_length_are_refused_naming_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("long.tsv");
    let long = vec!["good"; 70].join(" ");
    std::fs::write(&data, format!("sentence\tlabel\nfine movie\t1\n{long}\t1\n")).unwrap();
    let o = gibbon(&[
        "text",
        "attack",
        "--model",
        fixture().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--recipe",
        "deepwordbug",
        "--out",
        dir.path().join("a.json").to_str().unwrap(),
    ]);
    assert_user_error(&o, "text 1 has 70 tokens, more than the model's maximum length 64");
    let o = gibbon(&["text", "score", "--model", "/nonexistent/model.onnx"]);
    assert_eq!(o.status.code(), Some(2));
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(fixture().join("model.onnx"), bad.join("model.onnx")).unwrap();
    std::fs::write(bad.join("tokenizer.json"), "{not json").unwrap();
    let o = gibbon(&["text", "score", "--model", bad.to_str().unwrap()]);
    assert_user_error(&o, "not a Hugging Face tokenizer.json");
}

#[test]
fn train_task_text_is_text_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.tsv");
    let mut rows = String::from("sentence\tlabel\n");
    for i in 0..40 {
        rows.push_str(&format!("a truly great film number {i}\t1\nan awful dull mess {i}\t0\n"));
    }
    std::fs::write(&data, rows).unwrap();
    let out = dir.path().join("m");
    let o = gibbon(&[
        "train",
        "--task",
        "text",
        "--arch",
        "linear",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "3",
        "--buckets",
        "4096",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = json_of(&out.join("model.json"));
    assert_eq!(meta["arch"]["arch"], "linear");
    assert!(meta["training"]["test_accuracy"].as_f64().unwrap() > 0.9);
}
