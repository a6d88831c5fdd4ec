//! The command line: the documented eval form works and writes the documented fields; every
//! bad input gives one clear line naming the problem and exit code 2, never a panic.
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// Exit code 2, one `error:` line that mentions `needle`, no panic.
fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
}

fn eval_args<'a>(model: &'a str, data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v =
        vec!["eval", "--model", model, "--data", data, "--n", "20", "--eps", "0.3", "--steps", "5"];
    v.extend_from_slice(extra);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2_lite::GzEncoder::new();
    e.write(bytes)
}

/// A tiny stored-block gzip writer, enough to make valid test files without another crate.
mod flate2_lite {
    pub struct GzEncoder;
    impl GzEncoder {
        pub fn new() -> Self {
            GzEncoder
        }
        pub fn write(&mut self, data: &[u8]) -> Vec<u8> {
            let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
            let chunks: Vec<&[u8]> =
                if data.is_empty() { vec![&[][..]] } else { data.chunks(65535).collect() };
            for (i, c) in chunks.iter().enumerate() {
                out.push(if i + 1 == chunks.len() { 1 } else { 0 });
                let len = c.len() as u16;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(!len).to_le_bytes());
                out.extend_from_slice(c);
            }
            out.extend_from_slice(&crc32(data).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out
        }
    }
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}

fn idx_images(n: u32, h: u32, w: u32, magic: u32, short: bool) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in [n, h, w] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    let len = (n * h * w) as usize - if short { 10 } else { 0 };
    v.extend(std::iter::repeat_n(100u8, len));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = 0x0000_0801u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

#[test]
fn documented_eval_form_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let o = gibbon(&[
        "eval",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--split",
        "test",
        "--n",
        "50",
        "--attack",
        "pgd",
        "--norm",
        "linf",
        "--eps",
        "0.3",
        "--steps",
        "40",
        "--seed",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for field in [
        "clean_accuracy",
        "robust_accuracy",
        "n",
        "threat",
        "per_sample",
        "seconds",
        "robust_accuracy_ci95",
        "model",
        "seed",
        "gibbon_version",
    ] {
        assert!(r.get(field).is_some(), "missing {field}");
    }
    assert_eq!(r["n"], 50);
    assert_eq!(r["robust_accuracy"], 0.0);
    assert_eq!(
        r["model"]["sha256"],
        "0391769b6dc4f6abc931b07a95f1261ad4529e44121404294c50b04e59cf4086"
    );
    assert_eq!(r["per_sample"].as_array().unwrap().len(), 50);
    assert!(
        !dir.path().join("result.json.partial.jsonl").exists(),
        "stream file removed after success"
    );
}

#[test]
fn thread_count_does_not_change_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let adv = shared().join("reference/mnist_smallcnn_adv.pt").display().to_string();
    let mut outs = Vec::new();
    for t in ["1", "2"] {
        let out = dir.path().join(format!("r{t}.json"));
        let o = gibbon(&[
            "eval",
            "--model",
            &adv,
            "--data",
            &mnist(),
            "--n",
            "40",
            "--eps",
            "0.3",
            "--steps",
            "10",
            "--threads",
            t,
            "--batch-size",
            "16",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success());
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        // Outcomes, not confidences: across thread counts oneDNN may round differently.
        let outcome = |s: &serde_json::Value| {
            ["index", "clean_pred", "adv_pred", "robust", "broken_by", "step", "restart", "queries"]
                .map(|k| s[k].to_string())
                .join(" ")
        };
        outs.push(r["per_sample"].as_array().unwrap().iter().map(outcome).collect::<Vec<_>>());
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn attack_writes_npy_and_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let o = gibbon(&[
        "attack",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--n",
        "8",
        "--eps",
        "0.3",
        "--steps",
        "10",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--png",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let npy = std::fs::read(dir.path().join("adversarial.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
    assert!(String::from_utf8_lossy(&npy[..128]).contains("(8, 1, 28, 28)"));
    assert_eq!(std::fs::read_dir(dir.path().join("png")).unwrap().count(), 6);
}

/// Builtin weights know their class count: the first two MNIST test images (labels 7 and 2)
/// must not shrink a 10-class head to 8 classes.
#[test]
fn safetensors_model_keeps_its_classes_on_a_small_slice() {
    let weights =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../gibbon/models/smallcnn_mnist_pgd.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let data = mnist();
    let out_s = out.display().to_string();
    let mut args = eval_args(weights, &data, &["--arch", "smallcnn", "--out", &out_s]);
    args[6] = "2";
    let run = gibbon(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["n"], 2);
}

#[test]
fn missing_model_file() {
    assert_user_error(
        &gibbon(&eval_args("/nonexistent/model.pt", &mnist(), &[])),
        "/nonexistent/model.pt",
    );
}

#[test]
fn missing_data_dir() {
    assert_user_error(
        &gibbon(&eval_args(&std_model(), "idx:/nonexistent/mnist", &[])),
        "/nonexistent/mnist",
    );
}

#[test]
fn file_that_is_not_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "garbage.pt", b"this is not a zip archive");
    assert_user_error(&gibbon(&eval_args(p.to_str().unwrap(), &mnist(), &[])), "garbage.pt");
}

#[test]
fn negative_eps_and_unknown_norm_and_unknown_attack() {
    let m = std_model();
    let d = mnist();
    let mut a = vec!["eval", "--model", &m, "--data", &d, "--n", "5", "--eps", "-0.1"];
    assert_user_error(&gibbon(&a), "eps");
    a[8] = "0.3";
    a.extend_from_slice(&["--norm", "l7"]);
    assert_user_error(&gibbon(&a), "l7");
    let b = eval_args(&m, &d, &["--attack", "teleport"]);
    assert_user_error(&gibbon(&b), "teleport");
    let c = eval_args(&m, "xyz:/tmp", &[]);
    assert_user_error(&gibbon(&c), "xyz:/tmp");
}

#[test]
fn corrupt_gzip_wrong_magic_and_short_idx() {
    let dir = tempfile::tempdir().unwrap();
    let m = std_model();
    // corrupt gzip
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let mut corrupt = gz(&idx_images(2, 28, 28, 0x803, false));
    let mid = corrupt.len() / 2;
    corrupt.truncate(mid);
    write(&bad, "t10k-images-idx3-ubyte.gz", &corrupt);
    write(&bad, "t10k-labels-idx1-ubyte.gz", &gz(&idx_labels(&[1, 2])));
    assert_user_error(
        &gibbon(&eval_args(&m, &format!("idx:{}", bad.display()), &[])),
        "t10k-images-idx3-ubyte.gz",
    );
    // wrong magic
    let magic = dir.path().join("magic");
    std::fs::create_dir(&magic).unwrap();
    write(&magic, "t10k-images-idx3-ubyte", &idx_images(2, 28, 28, 0x1234, false));
    write(&magic, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    assert_user_error(&gibbon(&eval_args(&m, &format!("idx:{}", magic.display()), &[])), "magic");
    // short data
    let short = dir.path().join("short");
    std::fs::create_dir(&short).unwrap();
    write(&short, "t10k-images-idx3-ubyte", &idx_images(2, 28, 28, 0x803, true));
    write(&short, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    assert_user_error(
        &gibbon(&eval_args(&m, &format!("idx:{}", short.display()), &[])),
        "t10k-images-idx3-ubyte",
    );
}

#[test]
fn input_shape_that_does_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("small");
    std::fs::create_dir(&d).unwrap();
    write(&d, "t10k-images-idx3-ubyte", &idx_images(2, 8, 8, 0x803, false));
    write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    let spec = format!("idx:{}", d.display());
    assert_user_error(&gibbon(&eval_args(&std_model(), &spec, &[])), "input shape");
    let st = shared().join("reference/mnist_smallcnn_std.safetensors").display().to_string();
    assert_user_error(&gibbon(&eval_args(&st, &spec, &["--arch", "smallcnn"])), "input shape");
}

#[test]
fn labels_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("labels");
    std::fs::create_dir(&d).unwrap();
    write(&d, "t10k-images-idx3-ubyte", &idx_images(2, 28, 28, 0x803, false));
    write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 12]));
    assert_user_error(
        &gibbon(&eval_args(&std_model(), &format!("idx:{}", d.display()), &[])),
        "label 12",
    );
}

#[test]
fn safetensors_without_arch_or_with_wrong_arch() {
    let st = shared().join("reference/mnist_smallcnn_std.safetensors").display().to_string();
    assert_user_error(&gibbon(&eval_args(&st, &mnist(), &[])), "--arch");
    assert_user_error(&gibbon(&eval_args(&st, &mnist(), &["--arch", "mlp"])), "unexpected tensor");
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn onnx_models_load_and_inspect_reports_their_operators() {
    let onnx = shared().join("reference/mnist_smallcnn_std.onnx").display().to_string();
    let out = gibbon(&["inspect", &onnx]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for needle in ["Conv", "Gemm", "MaxPool", "logits"] {
        assert!(text.contains(needle), "'{needle}' not in: {text}");
    }
    // Same per-sample outcome through ONNX as through TorchScript.
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for (name, model) in [("onnx", onnx.clone()), ("pt", std_model())] {
        let out_json = dir.path().join(format!("{name}.json"));
        let o = out_json.display().to_string();
        let r = gibbon(&eval_args(&model, &mnist(), &["--out", &o, "--no-resume"]));
        assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
        let v = json_of(&out_json);
        assert_eq!(v["model"]["kind"], name.replace("pt", "torchscript"));
        outcomes.push(
            v["per_sample"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["robust"].clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outcomes[0], outcomes[1]);
    // Bad input: not an ONNX file.
    let junk = write(dir.path(), "junk.onnx", b"this is not a protobuf");
    let r = gibbon(&eval_args(junk.to_str().unwrap(), &mnist(), &[]));
    assert_user_error(&r, "junk.onnx");
}

#[test]
fn the_standard_suite_reports_each_attack() {
    let dir = tempfile::tempdir().unwrap();
    let out_json = dir.path().join("suite.json");
    let o = out_json.display().to_string();
    let r = gibbon(&[
        "eval",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--n",
        "10",
        "--suite",
        "standard",
        "--norm",
        "linf",
        "--eps",
        "0.3",
        "--out",
        &o,
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let v = json_of(&out_json);
    let names: Vec<&str> =
        v["per_attack"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["apgd-ce", "apgd-t", "fab-t", "square"]);
    assert_eq!(v["robust_accuracy"], 0.0);
    assert_eq!(v["threat"]["budget"]["queries"], 5000);
    let r = gibbon(&eval_args(&std_model(), &mnist(), &["--suite", "strongest"]));
    assert_user_error(&r, "suite");
}

#[test]
fn several_eps_give_a_robustness_curve() {
    let dir = tempfile::tempdir().unwrap();
    let out_json = dir.path().join("curve.json");
    let o = out_json.display().to_string();
    let r = gibbon(&[
        "eval",
        "--model",
        &std_model(),
        "--data",
        &mnist(),
        "--n",
        "12",
        "--norm",
        "l2",
        "--eps",
        "0.5,1.0,6.0",
        "--attack",
        "apgd-ce",
        "--steps",
        "10",
        "--min-norm-attack",
        "deepfool",
        "--out",
        &o,
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let v = json_of(&out_json);
    let curve = v["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3);
    let robust: Vec<f64> = curve.iter().map(|p| p["robust_accuracy"].as_f64().unwrap()).collect();
    assert!(robust[0] >= robust[1] && robust[1] >= robust[2], "{robust:?}");
    // At ε = 6 (L2) nothing of the standard model survives.
    assert_eq!(robust[2], 0.0);
    assert_eq!(v["min_norms"].as_array().unwrap().len(), 12);
    for bad in ["0.1,abc", "0.1,-0.2"] {
        let r = gibbon(&["eval", "--model", &std_model(), "--data", &mnist(), "--eps", bad]);
        assert_user_error(&r, "eps");
    }
}
