//! `gibbon redteam`'s transfer and detection stages, their criteria, resuming every stage, and
//! the plain progress lines written when stderr is not a terminal.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn gibbon_logging(args: &[&str], log: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("GIBBON_LOG", log)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run gibbon")
}

fn gibbon(args: &[&str]) -> Output {
    gibbon_logging(args, "warn")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Exit code 2, one `error:` line containing every needle, no panic.
fn assert_user_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
    }
}

/// A small threat file with every stage: FGSM at two ε, transfer from the standard SmallCNN,
/// the audit, smoothing, and an energy detector fitted and calibrated on samples 2000..2200.
fn threat_file(criteria: &str) -> String {
    format!(
        "[model]\nspec = \"builtin:smallcnn-mnist-adv\"\n[data]\nspec = \"idx:data/mnist\"\nn = 6\n\
         [attacker]\nknowledge = \"white-box\"\nattacks = [\"fgsm\"]\n\
         [[perturbation]]\nnorm = \"linf\"\neps = [0.1, 0.3]\n\
         [transfer]\nsurrogates = [\"builtin:smallcnn-mnist\"]\nsteps = 5\n\
         [audit]\nn = 6\n\
         [certify]\nsigma = 0.25\ndraws = 100\nselection_draws = 10\nn = 3\n\
         [[detection]]\ndetector = \"energy\"\ncalib_range = \"2000..2200\"\nsteps = 5\nrestarts = 1\n\
         {criteria}"
    )
}

const CRITERIA: &str = "[[pass]]\nmetric = \"transfer_success_rate\"\neps = 0.3\nmax = 1.0\n\
     [[pass]]\nmetric = \"robust_accuracy_under_detection\"\nmin = 0.0\n\
     [[pass]]\nmetric = \"detection_rate\"\nattack = \"non-adaptive\"\nmin = 0.0\n\
     [[pass]]\nmetric = \"clean_flagged\"\nmax = 1.0\n";

/// The JSON without what differs between runs of the same stages (times, commands).
fn stable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for k in [
                    "seconds",
                    "command",
                    "resumed",
                    "draws_per_second",
                    "stages_taken_from_earlier_runs",
                ] {
                    map.remove(k);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(list) => list.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Lines saying a stage was taken from an earlier run.
fn taken(out: &Output) -> usize {
    stderr(out).lines().filter(|l| l.contains("finished by an earlier run: taken")).count()
}

#[test]
fn transfer_and_detection_run_are_judged_and_every_stage_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, threat_file(CRITERIA)).unwrap();
    let out_dir = dir.path().join("out");
    let args = ["redteam", path(&file), "--out-dir", path(&out_dir)];
    // Off a terminal, progress is plain lines at info.
    let first = gibbon_logging(&args, "info");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(stderr(&first).contains("progress fgsm: 6/6 samples (100%)"), "{}", stderr(&first));
    assert!(!stderr(&first).contains('\u{1b}'), "no colour codes off a terminal");
    assert_eq!(taken(&first), 0);
    let json = read_json(&out_dir.join("redteam.json"));
    // Transfer: one matrix per ε, the model the only target; the criterion reads its cell.
    let transfers = json["transfers"].as_array().unwrap();
    assert_eq!(transfers.len(), 2);
    let at_03 = transfers.iter().find(|t| t["threat"]["eps"] == 0.3).unwrap();
    assert_eq!(at_03["targets"][0]["model"]["path"], "builtin:smallcnn-mnist-adv");
    assert_eq!(at_03["surrogates"][0]["model"]["path"], "builtin:smallcnn-mnist");
    let criteria = json["criteria"].as_array().unwrap();
    assert_eq!(criteria[0]["measured"], at_03["matrix"][0][0]["success_rate"]);
    // Detection: fitted here (its file written), measured on the 6 samples, attacked.
    let det = &json["detection"][0];
    assert_eq!(det["detector"], "energy");
    assert_eq!(det["clean"]["end"], 6);
    assert_eq!(det["calibration"]["n"], 200);
    assert_eq!(det["n"], 6);
    let adaptive = &det["adaptive"]["robust_accuracy_under_detection"]["rate"];
    assert_eq!(&criteria[1]["measured"], adaptive);
    assert_eq!(criteria[2]["measured"], det["non_adaptive"]["detection_rate"]["rate"]);
    assert_eq!(criteria[3]["measured"], det["clean_flagged"]["rate"]);
    let detector = read_json(&out_dir.join("detector-energy.json"));
    assert_eq!(detector["calibration_data"]["start"], 2000);
    let page = std::fs::read_to_string(out_dir.join("redteam.html")).unwrap();
    for s in ["transfer", "detection", "audit", "certification", "gallery"] {
        assert!(page.contains(&format!("data-section=\"{s}\"")), "{s} missing");
    }

    // A rerun takes all 7 stages from out_dir/stages: same results, same page sections.
    let again = gibbon(&args);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(taken(&again), 7, "{}", stderr(&again));
    assert_eq!(stable(read_json(&out_dir.join("redteam.json"))), stable(json.clone()));
    let page_again = std::fs::read_to_string(out_dir.join("redteam.html")).unwrap();
    assert_eq!(page_again.matches("data-section=").count(), page.matches("data-section=").count());

    // Killed inside the audit and certification: their streams hold what was finished. The
    // marked finding proves it is taken as written, not recomputed.
    let stages = out_dir.join("stages");
    let fingerprint = read_json(&stages.join("audit.json"))["fingerprint"].clone();
    let header = serde_json::json!({ "fingerprint": fingerprint }).to_string();
    let mut findings: Vec<Value> = json["audit"]["findings"].as_array().unwrap()[..3].to_vec();
    findings[0]["verdict"] = Value::String("MARK".into());
    let lines: Vec<String> = findings.iter().map(Value::to_string).collect();
    std::fs::write(stages.join("audit.partial.jsonl"), format!("{header}\n{}\n", lines.join("\n")))
        .unwrap();
    let certs = json["certification"]["per_sample"].as_array().unwrap()[..2].to_vec();
    let lines: Vec<String> = certs.iter().map(Value::to_string).collect();
    // The last line cut short, as a kill leaves it.
    let cut = format!("{header}\n{}\n{{\"index\": 2, \"cla", lines.join("\n"));
    std::fs::write(stages.join("certify.partial.jsonl"), cut).unwrap();
    std::fs::remove_file(stages.join("audit.json")).unwrap();
    std::fs::remove_file(stages.join("certify.json")).unwrap();
    let resumed = gibbon(&args);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(taken(&resumed), 5, "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("2 of 3 samples certified by an earlier run"));
    let after = read_json(&out_dir.join("redteam.json"));
    assert_eq!(after["audit"]["findings"][0]["verdict"], "MARK", "taken, not recomputed");
    let mut audit = after["audit"].clone();
    audit["findings"][0]["verdict"] = json["audit"]["findings"][0]["verdict"].clone();
    assert_eq!(audit, json["audit"], "the resumed audit equals the uninterrupted one");
    assert_eq!(stable(after["certification"].clone()), stable(json["certification"].clone()));

    // New criteria alone are judged on the stored stages (a changed stage invalidating them
    // is the unit test of cmd/redteam/resume.rs).
    let stricter = CRITERIA.replace("eps = 0.3\nmax = 1.0", "eps = 0.3\nmax = -1.0");
    std::fs::write(&file, threat_file(&stricter)).unwrap();
    let judged = gibbon(&args);
    assert_eq!(judged.status.code(), Some(1), "{}", stderr(&judged));
    assert_eq!(taken(&judged), 7);
}

#[test]
fn bad_transfer_and_detection_tables_name_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = threat_file(CRITERIA);
    let line_of = |text: &str, needle: &str| {
        text.lines().position(|l| l.contains(needle)).expect("needle in file") + 1
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace("calib_range = \"2000..2200\"\n", ""),
            "detector = \"energy\"",
            "needs `calib_range`",
        ),
        (
            base.replace("calib_range = \"2000..2200\"", "calib_range = \"2000..2100\""),
            "calib_range",
            "too few for fpr 0.05",
        ),
        (
            base.replace("detector = \"energy\"", "detector = \"enrgy\""),
            "enrgy",
            "detection.detector",
        ),
        (
            base.replace("detector = \"energy\"", "file = \"absent.json\""),
            "absent.json",
            "detection.file",
        ),
        (
            base.replace("surrogates = [", "surrogates = [\"nope.txt\", "),
            "surrogates",
            "transfer.surrogates",
        ),
        (
            base.replace("steps = 5\n[audit]", "attack = \"cw\"\n[audit]"),
            "attack = \"cw\"",
            "does not support",
        ),
        (
            base.replace("[transfer]\nsurrogates = [\"builtin:smallcnn-mnist\"]\nsteps = 5\n", ""),
            "transfer_success_rate",
            "not computed without [transfer]",
        ),
        (
            base.replace("attack = \"non-adaptive\"", "attack = \"sideways\""),
            "sideways",
            "expected adaptive or non-adaptive",
        ),
        (
            base.replace("restarts = 1\n", "restarts = 1\nsurprise = 1\n"),
            "surprise",
            "unknown key `surprise`",
        ),
    ];
    for (k, (text, needle, message)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{k}.toml"));
        std::fs::write(&file, text).unwrap();
        let line = format!("line {}", line_of(text, needle));
        let out = gibbon(&["redteam", path(&file), "--out-dir", path(dir.path())]);
        assert_user_error(&out, &[message, &line]);
    }
}
