//! The report page in a real headless browser (Debian's Chromium; `scripts/test` installs it):
//! a page built by `gibbon report` from an attack folder, a robustness curve and a transfer
//! matrix loads without script or console errors, every picture decodes, every section the
//! results hold is in the DOM, and a screenshot is written to out/report.png.
//!
//! Without Chromium this test fails and says how to get it; `GIBBON_SKIP_BROWSER=1` skips it
//! explicitly (a skipped test is reported on stderr).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn gibbon(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("GIBBON_LOG", "warn")
        .output()
        .expect("run gibbon");
    assert!(out.status.success(), "gibbon {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The browser binary, or `None` when the test is explicitly skipped.
fn chromium() -> Option<String> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match found {
        Some(name) => Some(name.to_string()),
        None if std::env::var("GIBBON_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("browser test SKIPPED (GIBBON_SKIP_BROWSER=1): no chromium on PATH");
            None
        }
        None => panic!(
            "chromium is not installed: run scripts/test (it installs Debian's chromium), or \
             apt-get install -y chromium, or set GIBBON_SKIP_BROWSER=1 to skip this test"
        ),
    }
}

/// Runs headless Chromium on `page` with `extra` flags (a fresh profile each time).
fn headless(browser: &str, page: &Path, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let mut args = vec![
        "120",
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &user_data,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    Command::new("timeout").args(&args).output().expect("run chromium")
}

#[test]
fn the_report_page_loads_cleanly_in_a_headless_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = format!("idx:{}", root().join("data/mnist").display());
    let attack_dir = dir.path().join("attack");
    gibbon(&[
        "attack",
        "--model",
        "builtin:smallcnn-mnist-adv",
        "--data",
        &data,
        "--n",
        "16",
        "--eps",
        "0.3",
        "--steps",
        "10",
        "--png",
        "0",
        "--out-dir",
        path(&attack_dir),
    ]);
    let curve = dir.path().join("curve.json");
    gibbon(&[
        "eval",
        "--model",
        "builtin:smallcnn-mnist",
        "--data",
        &data,
        "--n",
        "8",
        "--eps",
        "0.05,0.1,0.3",
        "--steps",
        "5",
        "--out",
        path(&curve),
    ]);
    let transfer = dir.path().join("transfer.json");
    let models = "builtin:smallcnn-mnist,builtin:smallcnn-mnist-adv";
    gibbon(&[
        "transfer",
        "--data",
        &data,
        "--n",
        "8",
        "--eps",
        "0.3",
        "--steps",
        "3",
        "--surrogates",
        models,
        "--targets",
        models,
        "--out",
        path(&transfer),
    ]);
    let page = dir.path().join("report.html");
    gibbon(&[
        "report",
        path(&attack_dir.join("result.json")),
        path(&curve),
        path(&transfer),
        "-o",
        path(&page),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    let expected = [
        "threat-model",
        "accuracy",
        "gallery",
        "per-attack",
        "curve",
        "min-norm",
        "transfer",
        "samples",
        "json",
    ];
    for name in expected {
        assert!(html.contains(&format!("data-section=\"{name}\"")), "{name} not rendered");
    }
    let dom = headless(&browser, &page, &["--virtual-time-budget=5000", "--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let verdict = dom_text
        .split("data-check=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| {
            panic!(
                "no verdict in the DOM (status {:?}): {}",
                dom.status,
                String::from_utf8_lossy(&dom.stderr)
            )
        });
    let images = html.matches("<img ").count();
    let plots = html.matches("<div class=\"plot\">").count();
    assert!(images >= 3 && plots == 3, "{images} images, {plots} plots");
    assert_eq!(verdict, format!("ok images={images} svgs={plots}"), "the page's self-check");
    for name in expected {
        assert!(dom_text.contains(&format!("data-section=\"{name}\"")), "{name} not in the DOM");
    }
    // The self-check can fail: the same page with one picture corrupted and a script error.
    let broken = dir.path().join("broken.html");
    let corrupted = html
        .replacen("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
        .replacen("</body>", "<script>undefined_function()</script></body>", 1);
    std::fs::write(&broken, corrupted).unwrap();
    let dom = headless(&browser, &broken, &["--virtual-time-budget=5000", "--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let verdict = dom_text.split("data-check=\"").nth(1).and_then(|r| r.split('"').next());
    assert!(
        verdict.is_some_and(|v| v.starts_with("fail ")
            && v.contains("bad-images=1")
            && v.contains("undefined_function")),
        "{verdict:?}"
    );
    let out = root().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let shot = out.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = format!("--screenshot={}", shot.display());
    let run =
        headless(&browser, &page, &[&screenshot, "--window-size=1280,2000", "--hide-scrollbars"]);
    let bytes = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&run.stderr))
    });
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "{} bytes", bytes.len());
}
