//! `gibbon guard serve` as a real process on loopback: auth (no token, wrong token, tokens
//! never in the logs), hostile requests (4xx, the server keeps serving), the rate limit, the
//! concurrent-decision race over HTTP, metrics and health (kill -9 durability: guard_durability.rs).
mod guard_support;

use guard_support::*;
use reqwest::StatusCode;
use std::collections::HashSet;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap()
}

/// A client of one guard.
struct Api {
    c: reqwest::Client,
    u: String,
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: String) -> reqwest::Response {
        let mut r = self.c.post(format!("{}{path}", self.u)).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.c.get(format!("{}{path}", self.u));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_hostile_input_metrics_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let classify_tokens = dir.path().join("clients.txt");
    std::fs::write(&classify_tokens, format!("client1:{CLASSIFY_TOKEN}\n")).unwrap();
    let policy = dir.path().join("policy.toml");
    // Every input with a top probability below 1 is escalated: a full review queue.
    std::fs::write(&policy, "min_confidence = 1.0\nrefuse_tail = 0.0\n").unwrap();
    let args = [
        "--classify-tokens",
        classify_tokens.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--rate-limit",
        "0",
        "--max-body-bytes",
        "65536",
    ];
    let guard = start_guard(dir.path(), &args, "trace");
    let api = Api { c: client(), u: guard.url.clone() };
    let escalated = classify_needs_its_token(&api).await;
    hostile_requests_get_4xx(&api).await;
    reviewer_api_and_the_decision_race(&api, &escalated, &dir.path().join("guard.sqlite")).await;
    let session = review_page_needs_a_reviewer(&api, escalated.last().unwrap()).await;
    metrics_and_health(&api, escalated.len()).await;

    // Tokens never reach the logs, even at trace level; the requests did.
    let log = guard.log();
    assert!(log.contains("/v1/review/items"), "the trace log records requests: {log}");
    for secret in [
        REVIEWER_TOKEN,
        CLASSIFY_TOKEN,
        "bob-secret-token-77aa01",
        "client-secret-token-81d0e8",
        "alice-secret",
        &session,
    ] {
        assert!(!log.contains(secret), "token {secret} in the log");
    }
}

/// No token, a wrong token, a reviewer's token: 401; the classify token: 200 with well-formed
/// results. Returns the escalated request ids.
async fn classify_needs_its_token(api: &Api) -> Vec<String> {
    let body = classify_body(&idx_rows("notmnist", 0, 4));
    assert_eq!(api.post("/v1/classify", None, body.clone()).await.status(), 401);
    let wrong = Some("client-secret-token-81d0e8");
    assert_eq!(api.post("/v1/classify", wrong, body.clone()).await.status(), 401);
    assert_eq!(api.post("/v1/classify", Some(REVIEWER_TOKEN), body.clone()).await.status(), 401);
    let r = api.post("/v1/classify", Some(CLASSIFY_TOKEN), body).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for res in results {
        assert!(res["label"].as_i64().unwrap() < 10);
        assert!(res["scores"]["msp"]["threshold"].as_f64().unwrap() > 0.0);
        assert!(["accept", "refuse", "escalate"].contains(&res["decision"].as_str().unwrap()));
        assert!(res["rule"].as_str().unwrap().starts_with(res["decision"].as_str().unwrap()));
    }
    let escalated: Vec<String> = results
        .iter()
        .filter(|r| r["decision"] == "escalate")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert!(escalated.len() >= 2, "notMNIST under min_confidence = 1 escalates: {v}");
    escalated
}

/// Each hostile request gets its 4xx with a message, and the server keeps serving.
async fn hostile_requests_get_4xx(api: &Api) {
    let hostile: Vec<(String, u16)> = vec![
        ("{not json".into(), 400),
        ("{\"input\": 5}".into(), 400),
        ("{\"inputs\": []}".into(), 400),
        (r#"{"input": {"shape": [1, 28, 28], "data": [0.5]}}"#.into(), 422),
        (r#"{"input": {"shape": [3, 28, 28], "data": [0.5]}}"#.into(), 422),
        (r#"{"input": {"png": "iVBORw0KGgo="}}"#.into(), 422),
        // Over --max-body-bytes (small enough for the socket buffers: the server answers before
        // reading the body and closes the connection).
        ("x".repeat(70_000), 413),
    ];
    for (bad, want) in hostile {
        let r = api.post("/v1/classify", Some(CLASSIFY_TOKEN), bad.clone()).await;
        assert_eq!(r.status().as_u16(), want, "{}", &bad[..bad.len().min(80)]);
        let text = r.text().await.unwrap();
        assert!(text.starts_with("{\"error\":"), "{text}");
    }
    let body = classify_body(&idx_rows("notmnist", 4, 1));
    assert_eq!(api.post("/v1/classify", Some(CLASSIFY_TOKEN), body).await.status(), 200);
}

/// Reviewer API: 401 without or with a wrong token; the list, one item with its image;
/// concurrent decisions on one item: one 200, the others 409; the winner in SQLite.
async fn reviewer_api_and_the_decision_race(api: &Api, escalated: &[String], db: &std::path::Path) {
    assert_eq!(api.get("/v1/review/items", None).await.status(), 401);
    assert_eq!(api.get("/v1/review/items", Some("alice-secret-token-5f2a9d")).await.status(), 401);
    assert_eq!(api.get("/v1/review/items", Some(CLASSIFY_TOKEN)).await.status(), 401);
    let list: serde_json::Value =
        api.get("/v1/review/items", Some(REVIEWER_TOKEN)).await.json().await.unwrap();
    let pending: HashSet<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(escalated.iter().all(|id| pending.contains(id.as_str())));
    let id = &escalated[0];
    let item: serde_json::Value = api
        .get(&format!("/v1/review/items/{id}"), Some(REVIEWER_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["status"], "pending");
    assert!(item["image_png"].as_str().unwrap().len() > 100);
    let png = api.get(&format!("/v1/review/items/{id}/image.png"), Some(REVIEWER_TOKEN)).await;
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(&png.bytes().await.unwrap()[1..4], b"PNG");
    assert_eq!(api.get("/v1/review/items/nope", Some(REVIEWER_TOKEN)).await.status(), 404);

    let decide = |token: &'static str, label: i64| {
        let (c, url) = (api.c.clone(), format!("{}/v1/review/items/{id}/decision", api.u));
        async move {
            let body = format!("{{\"label\": {label}, \"note\": \"n\"}}");
            c.post(url).bearer_auth(token).body(body).send().await.unwrap().status()
        }
    };
    assert_eq!(decide("wrong-token-wrong-token", 1).await, 401);
    let statuses = futures_join(vec![
        tokio::spawn(decide(REVIEWER_TOKEN, 1)),
        tokio::spawn(decide("bob-secret-token-77aa01", 2)),
        tokio::spawn(decide(REVIEWER_TOKEN, 3)),
        tokio::spawn(decide("bob-secret-token-77aa01", 4)),
    ])
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 3, "{statuses:?}");
    let path = format!("/v1/review/items/{}/decision", escalated.last().unwrap());
    let bad_label = api.post(&path, Some(REVIEWER_TOKEN), "{\"label\": 10}".into()).await;
    assert_eq!(bad_label.status(), 422);
    let rows = db_rows(db);
    let row = rows.iter().find(|r| &r.0 == id).unwrap();
    assert_eq!(row.1, "decided");
    assert!(matches!(row.2.as_deref(), Some("alice") | Some("bob")));
}

/// The reviewer page: 401 (with the sign-in form) without a reviewer; 200 with a reviewer's
/// bearer token or session. Sign-in: a wrong token 401, the right one a 303 with an HttpOnly,
/// SameSite=Strict session cookie that opens the page and the API; a cookie-authenticated
/// decision needs the CSRF header (403 without); signing out ends the session. Returns the
/// (closed) session's cookie value, which must not reach the log.
async fn review_page_needs_a_reviewer(api: &Api, pending_id: &str) -> String {
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = |cookie: Option<String>, token: Option<&'static str>| {
        let mut r = c.get(format!("{}/review", api.u));
        if let Some(v) = cookie {
            r = r.header("cookie", v);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = page(None, None).await;
    assert_eq!(status, 401);
    assert!(body.contains("name=\"token\"") && !body.contains("id=\"items\""), "{body}");
    assert_eq!(page(None, Some("alice-secret-token-5f2a9d")).await.0, 401);
    assert_eq!(page(None, Some(CLASSIFY_TOKEN)).await.0, 401);
    let forged = format!("gibbon_review_session={}", "ab".repeat(32));
    assert_eq!(page(Some(forged.clone()), None).await.0, 401);
    assert_eq!(api.get("/v1/review/items", None).await.status(), 401);
    let (status, body) = page(None, Some(REVIEWER_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"items\""), "{body}");

    let login = |token: &str| {
        c.post(format!("{}/review/login", api.u))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let refused = login("alice-secret-token-5f2a9d").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused.text().await.unwrap().contains("Token refused"));
    let signed_in = login(REVIEWER_TOKEN).await.unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/review");
    let set_cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let value = cookie.strip_prefix("gibbon_review_session=").unwrap().to_string();
    assert_eq!(value.len(), 64);
    assert!(!set_cookie.contains(REVIEWER_TOKEN));
    assert_eq!(page(Some(cookie.clone()), None).await.0, 200);
    let items = c.get(format!("{}/v1/review/items", api.u)).header("cookie", &cookie);
    assert_eq!(items.send().await.unwrap().status(), 200);

    let decide = |csrf: bool| {
        let mut r = c
            .post(format!("{}/v1/review/items/{pending_id}/decision", api.u))
            .header("cookie", &cookie)
            .body("{\"label\": 5, \"note\": \"by session\"}");
        if csrf {
            r = r.header("x-gibbon-review", "1");
        }
        r.send()
    };
    assert_eq!(decide(false).await.unwrap().status(), 403, "no CSRF header");
    let decided = decide(true).await.unwrap();
    assert_eq!(decided.status(), 200);
    let v: serde_json::Value = decided.json().await.unwrap();
    assert_eq!((v["reviewer"].as_str(), v["label"].as_i64()), (Some("alice"), Some(5)));

    let out = c.post(format!("{}/review/logout", api.u)).header("cookie", &cookie);
    let out = out.send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(page(Some(cookie.clone()), None).await.0, 401, "signed out");
    value
}

/// Every metric family is exposed; health carries both drift signals and the queue length.
async fn metrics_and_health(api: &Api, escalated: usize) {
    let metrics = api.get("/metrics", None).await.text().await.unwrap();
    for needle in [
        "gibbon_guard_requests_total{route=\"/v1/classify\",status=\"401\"} 3",
        "gibbon_guard_requests_total{route=\"/v1/classify\",status=\"413\"} 1",
        "gibbon_guard_decisions_total{decision=\"escalate\"}",
        "gibbon_guard_request_seconds_bucket{le=\"+Inf\"}",
        "gibbon_guard_batch_rows_count 2",
        "gibbon_guard_review_pending",
        "gibbon_guard_flag_rate{window=",
        "gibbon_guard_drift_p_value{signal=\"msp\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    let health: serde_json::Value = api.get("/v1/health", None).await.json().await.unwrap();
    assert_eq!(health["drift"].as_array().unwrap().len(), 2);
    // Two of the escalated items were decided (the race, the session's decision).
    assert!(health["review_pending"].as_u64().unwrap() >= escalated as u64 - 2);
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<StatusCode>>) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let guard = start_guard(dir.path(), &["--rate-limit", "0.5", "--rate-burst", "3"], "warn");
    let c = client();
    let body = classify_body(&idx_rows("mnist", 0, 1));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            c.post(format!("{}/v1/classify", guard.url))
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(
        c.get(format!("{}/v1/health", guard.url)).send().await.unwrap().status(),
        200,
        "health is not limited"
    );
}

#[test]
fn bad_detector_files_and_missing_tokens_are_user_errors() {
    let calib = format!("idx:{}", shared().join("data/mnist").display());
    let serve = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["guard", "serve", "--model", "builtin:smallcnn-mnist", "--calib", &calib])
            .args(["--calib-n", "200", "--db", "/tmp/unused.sqlite"])
            .args(extra)
            .env_remove("GIBBON_GUARD_REVIEWER_TOKENS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
        err
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("reviewers.txt");
    std::fs::write(&tokens, format!("alice:{REVIEWER_TOKEN}\n")).unwrap();
    let tokens = tokens.to_str().unwrap();
    let err = serve(&["--reviewer-tokens", tokens, "--detector", "missing-d.json"]);
    assert!(err.contains("missing-d.json"), "{err}");
    // A detector fitted for the adversarially trained model, in front of the standard one.
    let other = dir.path().join("other.json");
    fit_energy("builtin:smallcnn-mnist-adv", &other);
    let err = serve(&["--reviewer-tokens", tokens, "--detector", other.to_str().unwrap()]);
    assert!(err.contains("other.json") && err.contains("fitted for model"), "{err}");
    let err = serve(&[]);
    assert!(err.contains("--reviewer-tokens"), "{err}");
}

/// `gibbon detect fit` of the energy detector (Liu et al. 2020) for `model`, calibrated on
/// MNIST test images 2000..2400.
fn fit_energy(model: &str, out: &std::path::Path) {
    let calib = format!("idx:{}", shared().join("data/mnist").display());
    let o = std::process::Command::new(BIN)
        .args(["detect", "fit", "--model", model, "--detector", "energy", "--calib", &calib])
        .args(["--calib-range", "2000..2400", "--threads", "1", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A detector file from `gibbon detect fit` screens the service: its scores, threshold and
/// rule name are the detector's, and it flags notMNIST letters far more often than MNIST digits
/// the calibration never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detect_file_screens_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let detector = dir.path().join("energy.json");
    fit_energy("builtin:smallcnn-mnist", &detector);
    let fitted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&detector).unwrap()).unwrap();
    let threshold = fitted["calibration"]["threshold"].as_f64().unwrap();
    let guard = start_guard(
        dir.path(),
        &["--detector", detector.to_str().unwrap(), "--rate-limit", "0"],
        "info",
    );
    let c = client();
    let flagged = |dataset: &'static str, start: usize| {
        let (c, url) = (c.clone(), guard.url.clone());
        async move {
            let mut results = Vec::new();
            for chunk in idx_rows(dataset, start, 100).chunks(50) {
                let r = c.post(format!("{url}/v1/classify")).body(classify_body(chunk)).send();
                let v: serde_json::Value = r.await.unwrap().json().await.unwrap();
                results.extend(v["results"].as_array().unwrap_or_else(|| panic!("{v}")).clone());
            }
            assert_eq!(results.len(), 100);
            let mut flagged = 0;
            for res in &results {
                let s = &res["scores"]["energy"];
                assert_eq!(s["threshold"].as_f64().unwrap(), threshold, "{res}");
                assert!(res["scores"].get("msp").is_none(), "{res}");
                let past = s["score"].as_f64().unwrap() > threshold;
                let rule = res["rule"].as_str().unwrap();
                assert_eq!(past, rule.ends_with(":energy"), "{res}");
                flagged += past as usize;
            }
            flagged
        }
    };
    let (digits, letters) = (flagged("mnist", 1000).await, flagged("notmnist", 0).await);
    eprintln!("energy screen flags {digits}/100 MNIST digits and {letters}/100 notMNIST letters");
    assert!(digits <= 15, "{digits} of 100 clean digits flagged at a 5% target");
    assert!(letters >= 40 && letters >= digits + 30, "{letters} letters vs {digits} digits");
}

/// Drift through the service: MNIST keeps `/v1/health` at ok; notMNIST after it raises the
/// drift signal in health and metrics, and the crossing is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_drift_on_notmnist_after_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[drift]\nwindow = 200\nmin_samples = 100\np_alert = 0.001\n").unwrap();
    let guard = start_guard(
        dir.path(),
        &["--policy", policy.to_str().unwrap(), "--rate-limit", "0"],
        "info",
    );
    let c = client();
    let feed = |dataset: &'static str, start: usize| {
        let (c, url) = (c.clone(), guard.url.clone());
        async move {
            for chunk in idx_rows(dataset, start, 200).chunks(50) {
                let r = c
                    .post(format!("{url}/v1/classify"))
                    .body(classify_body(chunk))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            c.get(format!("{url}/v1/health"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let h = feed("mnist", 1000).await;
    eprintln!("after MNIST: {h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(
        h["drift"].as_array().unwrap().iter().all(|d| d["p_value"].as_f64().unwrap() > 0.001),
        "{h}"
    );
    let h = feed("notmnist", 0).await;
    eprintln!("after notMNIST: {h}");
    assert_eq!(h["status"], "drift", "{h}");
    assert!(h["drift"].as_array().unwrap().iter().all(|d| d["drifted"] == true), "{h}");
    let metrics =
        c.get(format!("{}/metrics", guard.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gibbon_guard_drift_alert{signal=\"msp\"} 1"), "{metrics}");
    assert!(guard.log().contains("drift: msp"), "the crossing is logged: {}", guard.log());
}

/// A request that waits longer than --timeout-ms for the model gets 503, and the service keeps
/// answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--timeout-ms", "1", "--max-inputs", "128", "--max-body-bytes", "4000000"];
    let guard = start_guard(dir.path(), &args, "warn");
    let c = client();
    // 128 inputs: four 32-row tiles, more than a millisecond of model time.
    let body = classify_body(&idx_rows("mnist", 0, 128));
    let r = c.post(format!("{}/v1/classify", guard.url)).body(body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("timed out"));
    // Still serving: health answers (it may itself exceed 1 ms on a busy machine: retry).
    let mut ok = false;
    for _ in 0..100 {
        let h = c.get(format!("{}/v1/health", guard.url)).send().await.unwrap();
        if h.status() == 200 {
            ok = true;
            break;
        }
        assert_eq!(h.status(), 503);
    }
    assert!(ok, "health never answered within 1 ms in 100 tries");
}
