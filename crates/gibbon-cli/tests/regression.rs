//! Regression fixture: the per-sample results of a fixed set of runs (every registered attack on
//! both reference models, a targeted run, an ε-curve, the standard suite, a transfer matrix),
//! recorded before a restructuring and compared after it. A restructuring must not change a
//! single bit; any difference must be a fix that the commit explains (then re-record).
//!
//! The runs are pinned to one kernel family (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`,
//! `MKL_CBWR=AVX2`, one thread) so that every x86-64 CPU gibbon runs on computes the same bits.
//! If the fixture was recorded on a CPU of another vendor, the comparison falls back to the
//! outcome of each sample (prediction, verdict, attack) with at most 2% of the samples allowed
//! to differ, and says so: gibbon promises nothing bit-exact across machines (README,
//! "Determinism").
//!
//! * `cargo test -p gibbon-cli --test regression` compares the quick set (small budgets).
//! * `cargo test -p gibbon-cli --test regression -- --ignored` compares the full set (every
//!   attack at its defaults; slow; record it first, see the test).
//! * `GIBBON_REGRESSION_RECORD=1` re-records the sets it runs instead of comparing.
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

fn fixture(set: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/regression"))
        .join(format!("{set}.json"))
}

fn model(kind: &str) -> String {
    shared().join(format!("reference/mnist_smallcnn_{kind}.pt")).display().to_string()
}

fn mnist() -> String {
    format!("idx:{}", shared().join("data/mnist").display())
}

/// The CPU vendor, recorded with the fixture.
fn cpu_vendor() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("vendor_id"))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// One run: a name and the arguments after the binary (`--out` is added).
struct Run {
    name: String,
    args: Vec<String>,
}

fn run(name: impl Into<String>, args: &[&str]) -> Run {
    Run { name: name.into(), args: args.iter().map(|s| s.to_string()).collect() }
}

/// Budget flags of the quick set, per attack (small, so the set runs in about a minute).
fn quick_budget(attack: &str) -> Vec<&'static str> {
    match attack {
        "fgsm" => vec![],
        "square" | "simba" | "simba-pixel" | "nes" | "hsj" | "boundary" | "rays" => {
            vec!["--queries", "300"]
        }
        _ => vec!["--steps", "10"],
    }
}

/// The threat models an attack runs under: L∞ ε = 0.3 (C&W, Boundary: L2 ε = 2, their only
/// norm), and for
/// one attack of each family also L2 ε = 2 and, where supported, L1 ε = 10.
fn norms_of(attack: &str) -> Vec<(&'static str, &'static str)> {
    match attack {
        "cw" | "boundary" => vec![("l2", "2")],
        "pgd" | "apgd-ce" => vec![("linf", "0.3"), ("l2", "2"), ("l1", "10")],
        "fab" | "square" | "deepfool" | "hsj" | "simba" => vec![("linf", "0.3"), ("l2", "2")],
        _ => vec![("linf", "0.3")],
    }
}

fn attack_runs(full: bool) -> Vec<Run> {
    let (m_std, m_adv, data) = (model("std"), model("adv"), mnist());
    let mut runs = Vec::new();
    for name in gibbon::attack::REGISTRY.iter().map(|r| r.info.name) {
        for (norm, eps) in norms_of(name) {
            for (kind, m) in [("std", &m_std), ("adv", &m_adv)] {
                let mut a = vec!["eval", "--model", m, "--data", &data, "--n", "64"];
                a.extend(["--norm", norm, "--eps", eps, "--attack", name]);
                if !full {
                    a.extend(quick_budget(name));
                }
                runs.push(run(format!("{name}/{norm}/{kind}"), &a));
            }
        }
    }
    runs
}

fn other_runs(full: bool) -> Vec<Run> {
    let (m_std, m_adv, data) = (model("std"), model("adv"), mnist());
    let steps = if full { "40" } else { "10" };
    let mut runs = vec![
        run(
            "pgd-targeted/std",
            &["eval", "--model", &m_std, "--data", &data, "--n", "64", "--eps", "0.3"]
                .into_iter()
                .chain(["--attack", "pgd", "--targeted", "next", "--steps", steps])
                .collect::<Vec<_>>(),
        ),
        run(
            "curve/adv",
            &["eval", "--model", &m_adv, "--data", &data, "--n", "64", "--eps", "0.1,0.2,0.3"]
                .into_iter()
                .chain(["--attack", "pgd", "--steps", steps])
                .collect::<Vec<_>>(),
        ),
    ];
    if full {
        runs.push(run(
            "suite-standard/adv",
            &["eval", "--model", &m_adv, "--data", &data, "--n", "32", "--eps", "0.3"]
                .into_iter()
                .chain(["--suite", "standard"])
                .collect::<Vec<_>>(),
        ));
    }
    let models = format!("{m_std},{m_adv}");
    runs.push(run(
        "transfer",
        &["transfer", "--surrogates", &models, "--targets", &models, "--data", &data, "--n", "32"]
            .into_iter()
            .chain(["--eps", "0.3", "--attack", "pgd", "--steps", steps, "--per-sample"])
            .collect::<Vec<_>>(),
    ));
    runs
}

/// Removes what legitimately changes between runs (wall times, the command line) and writes
/// the `shared` folder of paths as `<shared>`, so that any clone compares.
fn strip(value: &mut Value) {
    match value {
        Value::String(text) => {
            let prefix = shared().display().to_string();
            *text = text.replace(&prefix, "<shared>");
        }
        Value::Object(map) => {
            map.retain(|k, _| !matches!(k.as_str(), "seconds" | "command" | "samples_per_second"));
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

fn execute(r: &Run, dir: &Path) -> Value {
    let out = dir.join(format!("{}.json", r.name.replace('/', "_")));
    let status = Command::new(BIN)
        .args(&r.args)
        .arg("--out")
        .arg(&out)
        .env("GIBBON_LOG", "warn")
        .env("OMP_NUM_THREADS", "1")
        .env("ATEN_CPU_CAPABILITY", "avx2")
        .env("ONEDNN_MAX_CPU_ISA", "AVX2")
        .env("MKL_CBWR", "AVX2")
        .output()
        .expect("run gibbon");
    assert!(status.status.success(), "{}: {}", r.name, String::from_utf8_lossy(&status.stderr));
    let mut v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    strip(&mut v);
    v
}

/// The outcome of every sample record found anywhere in `v`, as comparable strings.
fn outcomes(v: &Value, path: &str, out: &mut Vec<String>) {
    const FIELDS: [&str; 5] = ["index", "clean_pred", "adv_pred", "robust", "broken_by"];
    match v {
        Value::Object(map) if map.contains_key("robust") && map.contains_key("index") => {
            let key: Vec<String> = FIELDS.iter().map(|f| format!("{}", map[*f])).collect();
            out.push(format!("{path}: {}", key.join(" ")));
        }
        Value::Object(map) => {
            map.iter().for_each(|(k, x)| outcomes(x, &format!("{path}.{k}"), out))
        }
        Value::Array(items) => items.iter().for_each(|x| outcomes(x, path, out)),
        _ => {}
    }
}

fn compare_or_record(set: &str, runs: Vec<Run>) {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Map::new();
    for r in &runs {
        results.insert(r.name.clone(), execute(r, dir.path()));
    }
    let path = fixture(set);
    if std::env::var_os("GIBBON_REGRESSION_RECORD").is_some() {
        let doc = serde_json::json!({ "cpu_vendor": cpu_vendor(), "runs": results });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        return;
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let same_vendor = doc["cpu_vendor"] == Value::String(cpu_vendor());
    for r in &runs {
        let (want, got) = (&doc["runs"][&r.name], &results[&r.name]);
        assert!(!want.is_null(), "{set}: no recorded run {}", r.name);
        if same_vendor {
            assert!(want == got, "{set}: {} differs from the recorded result", r.name);
            continue;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        outcomes(want, "", &mut a);
        outcomes(got, "", &mut b);
        assert_eq!(a.len(), b.len(), "{set}: {} has another number of records", r.name);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        eprintln!("{set}: {} recorded on another CPU vendor: {differ} outcomes differ", r.name);
        assert!(differ * 50 <= a.len(), "{set}: {}: {differ} of {} differ", r.name, a.len());
    }
}

#[test]
fn restructurings_leave_every_result_unchanged() {
    let mut runs = attack_runs(false);
    runs.extend(other_runs(false));
    compare_or_record("quick", runs);
}

/// Slow (every attack at its default budget): run it with `--ignored`. It needs the full set
/// recorded first (`GIBBON_REGRESSION_RECORD=1`, on the code before a restructuring); without
/// `tests/fixtures/regression/full.json` it fails naming the missing run.
#[test]
#[ignore]
fn restructurings_leave_every_default_result_unchanged() {
    let mut runs = attack_runs(true);
    runs.extend(other_runs(true));
    compare_or_record("full", runs);
}
