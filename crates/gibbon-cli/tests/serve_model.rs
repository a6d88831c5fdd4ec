//! `gibbon serve-model` and `gibbon eval --model URL` together, on loopback: the remote model
//! gives the same per-sample results as the model file; white-box attacks and unreachable
//! servers give one clear error line.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

/// Exit code 2, one `error:` line that mentions every needle, no panic.
fn assert_user_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    for needle in needles {
        assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
    }
}

/// A running `gibbon serve-model`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_model(extra: &[&str]) -> Server {
    let model = std_model();
    let data = mnist();
    let mut child = Command::new(BIN)
        .args(["serve-model", "--model", &model, "--data", &data, "--port", "0", "--threads", "1"])
        .args(extra)
        .env("GIBBON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gibbon serve-model");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("serving ").map(str::to_string);
    let server = Server { child, url: url.clone().unwrap_or_default() };
    assert!(
        url.as_deref()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with("/predict")),
        "first line: {line:?}"
    );
    server
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn square_eval(model: &str, out: &Path) -> serde_json::Value {
    let data = mnist();
    let out_s = out.display().to_string();
    let args = [
        "eval",
        "--model",
        model,
        "--data",
        &data,
        "--n",
        "5",
        "--eps",
        "0.2",
        "--attack",
        "square",
        "--queries",
        "100",
        "--seed",
        "7",
        "--threads",
        "1",
        "--out",
        &out_s,
    ];
    let run = gibbon(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    json_of(out)
}

#[test]
fn eval_through_serve_model_equals_eval_on_the_model_file() {
    let server = serve_model(&[]);
    let dir = tempfile::tempdir().unwrap();
    let remote = square_eval(&server.url, &dir.path().join("remote.json"));
    let local = square_eval(&std_model(), &dir.path().join("local.json"));
    assert_eq!(remote["model"]["path"], server.url.as_str());
    assert_eq!(remote["model"]["kind"], "remote");
    assert_eq!(remote["model"]["sha256"], local["model"]["sha256"], "the server names its model");
    for field in ["clean_accuracy", "robust_accuracy", "n"] {
        assert_eq!(remote[field], local[field], "{field}");
    }
    assert_eq!(remote["per_sample"], local["per_sample"]);
    let queries: u64 = remote["per_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["queries"].as_u64().unwrap())
        .sum();
    assert!(queries > 5, "Square spent {queries} queries: the comparison would be weak");

    // A white-box attack on the remote model: one clear line, exit code 2.
    let data = mnist();
    let pgd = gibbon(&[
        "eval",
        "--model",
        &server.url,
        "--data",
        &data,
        "--n",
        "3",
        "--eps",
        "0.3",
        "--attack",
        "pgd",
    ]);
    assert_user_error(&pgd, &[&server.url, "no gradients", "square"]);
}

#[test]
fn a_labels_server_and_an_unreachable_one_give_one_clear_line() {
    let server = serve_model(&["--output", "labels"]);
    let data = mnist();
    let eval = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--data",
            &data,
            "--n",
            "3",
            "--eps",
            "0.3",
            "--attack",
            "square",
            "--queries",
            "10",
        ];
        args.extend_from_slice(extra);
        gibbon(&args)
    };
    // Square needs scores: refused before any query, naming why.
    assert_user_error(&eval(&server.url, &[]), &["square needs score-only access", "labels only"]);
    // CERTIFY needs only labels; SmoothAdv needs scores and gradients: refused before any query.
    let certify = |extra: &[&str]| {
        let mut args = vec!["certify", "--model", &server.url, "--data", &data, "--n", "1"];
        args.extend_from_slice(&["--sigma", "0.25", "--draws", "200", "--selection-draws", "20"]);
        args.extend_from_slice(extra);
        gibbon(&args)
    };
    let o = certify(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["per_sample"].as_array().map(Vec::len), Some(1), "{r}");
    assert_user_error(&certify(&["--attack"]), &["SmoothAdv", "labels only"]);
    // Nobody listens on a port that was just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}/predict");
    let out = eval(&down, &["--remote-retries", "1", "--remote-timeout-ms", "500"]);
    assert_user_error(&out, &["/info", "connection refused", "gave up after 2 attempts"]);
    let out = eval(&server.url, &["--remote-rate-limit", "0"]);
    assert_user_error(&out, &["remote-rate-limit"]);
    let out =
        gibbon(&["serve-model", "--model", &std_model(), "--data", &data, "--output", "probs"]);
    assert_user_error(&out, &["output", "probs"]);
}
