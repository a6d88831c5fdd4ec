//! `gibbon report`, the `--html` flags of attack, transfer and eval (curves), and
//! `gibbon redteam` on the shipped examples and on bad threat files.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn mnist() -> String {
    format!("idx:{}", root().join("data/mnist").display())
}

fn gibbon(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("GIBBON_LOG", "warn")
        .output()
        .expect("run gibbon")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// The HTML of the section `name` (from its tag to its end).
fn section<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    let start = page.find(&format!("data-section=\"{name}\""))?;
    let end = page[start..].find("</section>")? + start;
    Some(&page[start..end])
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_draws_the_same_gallery_from_an_attack_folder_as_attack_html() {
    let dir = tempfile::tempdir().unwrap();
    let (out_dir, html) = (dir.path().join("att"), dir.path().join("att.html"));
    let data = mnist();
    let attack = gibbon(&[
        "attack",
        "--model",
        "builtin:smallcnn-mnist",
        "--data",
        &data,
        "--n",
        "12",
        "--eps",
        "0.3",
        "--steps",
        "5",
        "--png",
        "0",
        "--out-dir",
        path(&out_dir),
        "--html",
        path(&html),
    ]);
    assert!(attack.status.success(), "{}", stderr(&attack));
    let report_html = dir.path().join("report.html");
    let result = out_dir.join("result.json");
    let report = gibbon(&["report", path(&result), "-o", path(&report_html)]);
    assert!(report.status.success(), "{}", stderr(&report));
    let (a, r) =
        (std::fs::read_to_string(&html).unwrap(), std::fs::read_to_string(&report_html).unwrap());
    let json: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let broken =
        json["per_sample"].as_array().unwrap().iter().filter(|s| s["robust"] == false).count();
    assert!(broken > 0);
    for page in [&a, &r] {
        for name in ["threat-model", "accuracy", "per-attack", "gallery", "samples", "json"] {
            assert!(section(page, name).is_some(), "{name} missing");
        }
        let gallery = section(page, "gallery").unwrap();
        assert_eq!(gallery.matches("<article class=\"card").count(), 12);
        assert_eq!(gallery.matches("data:image/png;base64,").count(), 36);
        assert_eq!(gallery.matches("badge bad").count(), broken);
        assert!(page.contains(&format!("{:.4}", json["robust_accuracy"].as_f64().unwrap())));
    }
    // The pictures read back from adversarial.npy are the ones the run kept.
    assert_eq!(section(&a, "gallery"), section(&r, "gallery"));
}

#[test]
fn transfer_and_curve_pages_draw_the_heat_map_and_the_band() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist();
    let models = "builtin:smallcnn-mnist,builtin:smallcnn-mnist-adv";
    let transfer_html = dir.path().join("t.html");
    let transfer = gibbon(&[
        "transfer",
        "--data",
        &data,
        "--n",
        "10",
        "--eps",
        "0.3",
        "--steps",
        "3",
        "--surrogates",
        models,
        "--targets",
        models,
        "--html",
        path(&transfer_html),
    ]);
    assert!(transfer.status.success(), "{}", stderr(&transfer));
    let page = std::fs::read_to_string(&transfer_html).unwrap();
    let heat = section(&page, "transfer").expect("transfer section");
    assert!(heat.contains("<svg") && heat.contains("smallcnn-mnist-adv"));
    let curve_json = dir.path().join("c.json");
    let curve_html = dir.path().join("c.html");
    let curve = gibbon(&[
        "eval",
        "--model",
        "builtin:smallcnn-mnist",
        "--data",
        &data,
        "--n",
        "10",
        "--eps",
        "0.05,0.3",
        "--steps",
        "5",
        "--out",
        path(&curve_json),
        "--html",
        path(&curve_html),
    ]);
    assert!(curve.status.success(), "{}", stderr(&curve));
    let page = std::fs::read_to_string(&curve_html).unwrap();
    let band = section(&page, "curve").expect("curve section");
    assert!(band.contains("<polygon") && band.contains("0.05"));
    // `gibbon report` of several results: one page, every result's sections.
    let both = dir.path().join("both.html");
    let t_json = dir.path().join("t.json");
    let t = gibbon(&[
        "transfer",
        "--data",
        &data,
        "--n",
        "5",
        "--eps",
        "0.3",
        "--steps",
        "2",
        "--surrogates",
        models,
        "--targets",
        models,
        "--out",
        path(&t_json),
    ]);
    assert!(t.status.success(), "{}", stderr(&t));
    let r = gibbon(&["report", path(&curve_json), path(&t_json), "-o", path(&both)]);
    assert!(r.status.success(), "{}", stderr(&r));
    let page = std::fs::read_to_string(&both).unwrap();
    assert!(section(&page, "curve").is_some() && section(&page, "transfer").is_some());
}

#[test]
fn report_of_a_missing_or_broken_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    let missing = dir.path().join("missing.json");
    assert_user_error(&gibbon(&["report", path(&missing), "-o", path(&out)]), &["missing.json"]);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"per_sample\": [").unwrap();
    assert_user_error(
        &gibbon(&["report", path(&bad), "-o", path(&out)]),
        &["bad.json", "not a result JSON"],
    );
    assert!(!out.exists());
}

/// Runs an example threat file quickly (10 samples, APGD-CE instead of the suite).
fn redteam_example(name: &str, out_dir: &Path) -> Output {
    let file = format!("examples/{name}");
    gibbon(&["redteam", &file, "--n", "10", "--attacks", "apgd-ce", "--out-dir", path(out_dir)])
}

#[test]
fn redteam_examples_pass_and_fail_as_their_criteria_say() {
    let dir = tempfile::tempdir().unwrap();
    for (name, code) in [("mnist-std.toml", 1), ("mnist-adv.toml", 0)] {
        let out_dir = dir.path().join(name);
        let run = redteam_example(name, &out_dir);
        assert_eq!(run.status.code(), Some(code), "{name}: {}", stderr(&run));
        let json: Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("redteam.json")).unwrap()).unwrap();
        assert_eq!(json["passed"], code == 0, "{json}");
        let evaluations = json["evaluations"].as_array().unwrap();
        assert_eq!(evaluations.len(), 3, "three ε");
        for (c, e) in json["criteria"].as_array().unwrap().iter().zip([0.1, 0.2]) {
            // Each robust-accuracy criterion is judged on the evaluation at its ε.
            let eval = evaluations.iter().find(|v| v["threat"]["eps"] == e).unwrap();
            assert_eq!(c["measured"], eval["robust_accuracy"], "{c}");
            assert_eq!(eval["per_attack"][0]["name"], "apgd-ce");
        }
        assert_eq!(json["audit"].is_object(), name == "mnist-adv.toml");
        let page = std::fs::read_to_string(out_dir.join("redteam.html")).unwrap();
        for s in ["criteria", "curve", "gallery", "accuracy", "threat-model"] {
            assert!(section(&page, s).is_some(), "{name}: {s} missing");
        }
        assert_eq!(section(&page, "audit").is_some(), name == "mnist-adv.toml");
        assert!(!out_dir.join("eval-linf-0.1.partial.jsonl").exists(), "streams removed");
    }
}

#[test]
fn bad_threat_files_name_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root().join("examples/mnist-std.toml")).unwrap();
    let line_of = |text: &str, needle: &str| {
        text.lines().position(|l| l.contains(needle)).expect("needle in file") + 1
    };
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            example.replace("knowledge =", "knowlege ="),
            "knowlege",
            vec!["unknown key `knowlege`", "did you mean `knowledge`?"],
        ),
        (
            example.replace("eps = [0.1, 0.2, 0.3]", "eps = [0.1, -0.2]"),
            "eps = [0.1, -0.2]",
            vec!["ε = -0.2"],
        ),
        (
            example.replace(
                "knowledge = \"white-box\"",
                "knowledge = \"decision-based\"\nattacks = [\"apgd-ce\"]",
            ),
            "attacks =",
            vec!["`apgd-ce` needs"],
        ),
        (
            example.replace("eps = 0.2\n", "eps = 0.25\n"),
            "eps = 0.25",
            vec!["ε = 0.25 is not computed"],
        ),
    ];
    for (k, (text, needle, messages)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{k}.toml"));
        std::fs::write(&file, text).unwrap();
        let line = format!("line {}", line_of(text, needle));
        let mut all = messages.clone();
        all.push(&line);
        all.push(file.file_name().unwrap().to_str().unwrap());
        assert_user_error(&gibbon(&["redteam", path(&file), "--out-dir", path(dir.path())]), &all);
    }
    let no_model = dir.path().join("no_model.toml");
    std::fs::write(&no_model, example.replace("[model]\nspec = \"builtin:smallcnn-mnist\"\n", ""))
        .unwrap();
    assert_user_error(&gibbon(&["redteam", path(&no_model)]), &["missing key `model`", "line"]);
    let missing = dir.path().join("absent.toml");
    assert_user_error(&gibbon(&["redteam", path(&missing)]), &["absent.toml"]);
}

#[test]
fn redteam_certifies_when_configured_and_judges_certified_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[model]\nspec = \"builtin:smallcnn-mnist\"\n[data]\nspec = \"{}\"\nn = 4\n\
         [attacker]\nknowledge = \"white-box\"\nattacks = [\"fgsm\"]\n\
         [[perturbation]]\nnorm = \"linf\"\neps = 0.3\n\
         [certify]\nsigma = 0.25\ndraws = 200\nselection_draws = 20\nalpha = 0.01\nn = 3\nradii = [0.0, 5.0]\n\
         [[pass]]\nmetric = \"certified_accuracy\"\nradius = 5.0\nmin = 0.5\n",
        mnist()
    );
    let file = dir.path().join("certify.toml");
    std::fs::write(&file, text).unwrap();
    let out_dir = dir.path().join("out");
    let run = gibbon(&["redteam", path(&file), "--out-dir", path(&out_dir)]);
    // No radius of 5 can be certified with 200 draws at σ = 0.25 (the bound caps it near 0.6).
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let json: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("redteam.json")).unwrap()).unwrap();
    let table = json["certification"]["certified_accuracy"].as_array().unwrap();
    assert_eq!(table[1][1], 0.0, "{json}");
    assert_eq!(json["criteria"][0]["measured"], 0.0);
    assert_eq!(json["certification"]["per_sample"].as_array().unwrap().len(), 3);
    let page = std::fs::read_to_string(out_dir.join("redteam.html")).unwrap();
    assert!(section(&page, "certification").is_some());
}
