//! The reviewer page in a real headless Chromium (Debian's chromium and chromium-driver,
//! driven by the Selenium script in tests/browser/): open the page, decide an item, check the
//! row in SQLite. `scripts/test` installs what it needs (scripts/install-chromium, selenium in
//! the venv); without Chromium the test fails, unless GIBBON_SKIP_BROWSER=1.
mod guard_support;

use guard_support::*;
use std::process::Command;

fn python() -> String {
    let venv = std::env::var("VIRTUAL_ENV").unwrap_or_else(|_| {
        format!("{}/.cache/gibbon/venv", std::env::var("HOME").unwrap_or_default())
    });
    format!("{venv}/bin/python")
}

#[test]
fn reviewer_page_decides_an_item_in_headless_chromium() {
    if std::env::var("GIBBON_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("GIBBON_SKIP_BROWSER=1: skipping the browser test");
        return;
    }
    let missing: Vec<&str> = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    assert!(missing.is_empty(), "{missing:?} missing: run scripts/test (it calls scripts/install-chromium), or set GIBBON_SKIP_BROWSER=1");
    let selenium = Command::new(python()).args(["-c", "import selenium"]).status();
    assert!(
        selenium.is_ok_and(|s| s.success()),
        "selenium is not in {}: run scripts/test",
        python()
    );

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "min_confidence = 1.0\nrefuse_tail = 0.0\n").unwrap();
    let guard = start_guard(dir.path(), &["--policy", policy.to_str().unwrap()], "warn");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        let body = classify_body(&idx_rows("notmnist", 0, 3));
        let r = reqwest::Client::new()
            .post(format!("{}/v1/classify", guard.url))
            .body(body)
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap()
    });
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("classify answer");
    let id = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["decision"] == "escalate")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .expect("an escalated input");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/review_page.py");
    let run = Command::new(python())
        .args([script, &guard.url, REVIEWER_TOKEN, &id, "7", "looks like a seven"])
        .output()
        .expect("run the selenium script");
    assert!(
        run.status.success(),
        "browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let conn = rusqlite::Connection::open(dir.path().join("guard.sqlite")).unwrap();
    let (status, reviewer, label, note): (String, String, i64, String) = conn
        .query_row(
            "SELECT status, reviewer, reviewed_label, note FROM items WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), reviewer.as_str(), label, note.as_str()),
        ("decided", "alice", 7, "looks like a seven")
    );
}
