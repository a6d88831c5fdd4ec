//! `gibbon audit`: the checks' findings in the JSON, `--strict` as a CI gate (exit 3 when a
//! check fired), the adaptive re-evaluation with the TorchScript BPDA rewrite, and bad input as
//! one `error:` line with exit code 2. Models: the tiny masked fixtures (random-init MLPs).
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn mnist() -> String {
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"));
    format!("idx:{}", shared.join("data/mnist").display())
}

fn masked(name: &str) -> String {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../gibbon/tests/fixtures/masked"))
        .join(name)
        .display()
        .to_string()
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("GIBBON_LOG", "warn").output().expect("run gibbon")
}

/// `gibbon audit` of `model` on 40 images at L∞ 0.1 with `extra` flags: (exit code, stderr,
/// the JSON).
fn audit(model: &str, extra: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.json");
    let data = mnist();
    let mut args = vec!["audit", "--model", model, "--data", &data, "--n", "40", "--eps", "0.1"];
    let out_s = out.to_str().unwrap().to_string();
    args.extend(["--out", &out_s]);
    args.extend(extra);
    let result = gibbon(&args);
    let stderr = String::from_utf8_lossy(&result.stderr).to_string();
    let json = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (result.status.code(), stderr, json)
}

fn fired(json: &serde_json::Value) -> Vec<String> {
    json["audit"]["fired"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn strict_audit_passes_an_honest_model_and_gates_a_masked_one() {
    let (code, stderr, json) = audit(&masked("tiny_plain.pt"), &["--strict"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(fired(&json).is_empty(), "{json}");
    assert_eq!(json["audit"]["findings"].as_array().unwrap().len(), gibbon::audit::CHECKS.len());
    assert!(stderr.contains("no sign of gradient masking"), "{stderr}");

    let (code, stderr, json) = audit(&masked("tiny_round.pt"), &["--strict"]);
    assert_eq!(code, Some(3), "{stderr}");
    let f = fired(&json);
    assert!(f.contains(&"graph_ops".into()) && f.contains(&"gradients".into()), "{f:?}");
    assert!(stderr.contains("aten::round"), "{stderr}");
    assert!(json["audit"]["remedies"].as_array().unwrap().contains(&"bpda".into()), "{json}");
}

#[test]
fn adaptive_audit_rewrites_torchscript_rounding_and_never_reports_more_robustness() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("audit.html");
    let html_s = html.to_str().unwrap();
    let (code, stderr, json) =
        audit(&masked("tiny_round.pt"), &["--adaptive", "--attacks", "apgd-ce", "--html", html_s]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Gradient-masking audit: graph_ops, gradients"), "{page}");
    assert!(page.contains("Standard suite versus adaptive re-evaluation"));
    assert_eq!(code, Some(0), "{stderr}");
    let a = &json["adaptive"];
    let stages = a["stages"].as_array().unwrap();
    assert_eq!(stages[0]["remedy"], "bpda", "{a}");
    assert!(stages[0]["view"].as_str().unwrap().starts_with("bpda[torchscript"), "{a}");
    let (std, adapt) = (a["standard"]["robust"].as_u64(), a["adaptive"]["robust"].as_u64());
    assert!(adapt <= std, "{a}");
    assert!(stderr.contains("baseline (apgd-ce): robust"), "{stderr}");
}

#[test]
fn bad_audit_input_is_one_error_line_and_exit_2() {
    let (model, data) = (masked("tiny_plain.pt"), mnist());
    for (args, needle) in [
        (vec!["--eps", "-0.1"], "eps"),
        (vec!["--eps", "0.1", "--attacks", "apgd-ce"], "--adaptive"),
        (vec!["--eps", "0.1", "--adaptive", "--attacks", "nope"], "nope"),
        (vec!["--eps", "0.1", "--surrogate", "/work/x.pt"], "--adaptive"),
        (vec!["--eps", "0.1", "--adaptive", "--surrogate", "/nonexistent.pt"], "nonexistent"),
        (vec![], "--eps"),
    ] {
        let mut full = vec!["audit", "--model", &model, "--data", &data, "--n", "8"];
        full.extend(args);
        let out = gibbon(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.lines().filter(|l| l.starts_with("error")).count() == 1, "{stderr}");
        assert!(stderr.contains(needle), "'{needle}' not in {stderr}");
    }
    let eot0 = gibbon(&["eval", "--model", &model, "--data", &data, "--eps", "0.1", "--eot", "0"]);
    assert_eq!(eot0.status.code(), Some(2), "{}", String::from_utf8_lossy(&eot0.stderr));
    let missing = gibbon(&["audit", "--model", "/nonexistent.pt", "--data", &data, "--eps", "0.1"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn eval_with_audit_adds_the_findings_to_its_result_and_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval.json");
    let html = dir.path().join("eval.html");
    let (model, data) = (masked("tiny_round.pt"), mnist());
    let args = ["eval", "--model", &model, "--data", &data, "--n", "40", "--eps", "0.1"];
    let result = gibbon(
        &[
            &args[..],
            &["--attack", "fgsm", "--audit", "--out", out.to_str().unwrap()],
            &["--html", html.to_str().unwrap()],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("gradient masking suspected"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let fired = json["audit"]["fired"].as_array().unwrap();
    assert!(fired.contains(&"gradients".into()), "{json}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Gradient-masking audit") && page.contains("FIRED"), "{page}");
    for f in json["audit"]["findings"].as_array().unwrap() {
        assert!(page.contains(f["check"].as_str().unwrap()), "{} missing", f["check"]);
    }
    assert!(page.contains(&format!("{:.4}", json["robust_accuracy"].as_f64().unwrap())));
    // A curve has a page too: robust accuracy against ε (gibbon report's curve section).
    let curve =
        gibbon(&[&args[..7], &["--eps", "0.1,0.2", "--html", html.to_str().unwrap()]].concat());
    assert!(curve.status.success(), "{}", String::from_utf8_lossy(&curve.stderr));
    assert!(std::fs::read_to_string(&html).unwrap().contains("data-section=\"curve\""));
}
