//! The guard under load (ignored by default; run with
//! `scripts/test -p gibbon-cli --test guard_load -- --ignored --nocapture`): 32 concurrent
//! clients on loopback for 60 s, one input per request, one request in five malformed. Prints
//! throughput, p50/p99 latency of valid requests and the batch-size histogram from /metrics;
//! asserts 0 errors on valid requests and a 4xx for every malformed one. Environment:
//! GIBBON_LOAD_SECS (60), GIBBON_LOAD_CLIENTS (32), GIBBON_LOAD_MAX_BATCH (64).
mod guard_support;

use guard_support::*;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Malformed bodies, cycled through.
fn malformed(k: usize) -> String {
    match k % 5 {
        0 => "{not json".into(),
        1 => r#"{"input": {"shape": [1, 28, 28], "data": [0.5, 0.5]}}"#.into(),
        2 => r#"{"input": {"shape": [1, 28, 28], "data": [2.0]}}"#.into(),
        3 => r#"{"input": {"png": "AAAA"}}"#.into(),
        _ => r#"{"inputs": []}"#.into(),
    }
}

#[derive(Default)]
struct Tally {
    valid_latencies: Vec<f64>,
    valid_errors: u64,
    malformed_4xx: u64,
    malformed_other: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "60 s load test; run with --ignored (see the README's Guard section)"]
async fn sustained_mixed_load() {
    let secs = env_or("GIBBON_LOAD_SECS", 60);
    let clients = env_or("GIBBON_LOAD_CLIENTS", 32) as usize;
    let max_batch = env_or("GIBBON_LOAD_MAX_BATCH", 64).to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = start_guard(dir.path(), &["--rate-limit", "0", "--max-batch", &max_batch], "warn");
    let rows = idx_rows("mnist", 2000, 256);
    let bodies: Vec<String> = rows.iter().map(|r| classify_body(std::slice::from_ref(r))).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, bodies) = (guard.url.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let client =
                reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut t = Tally::default();
            let mut k = c;
            // Bounded in time and in count (at most 1M requests per client).
            while Instant::now() < deadline && k < c + 1_000_000 {
                k += 1;
                let bad = k % 5 == 0;
                let body = if bad { malformed(k / 5) } else { bodies[k % bodies.len()].clone() };
                let sent = Instant::now();
                let r = client.post(format!("{url}/v1/classify")).body(body).send().await;
                let status = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let ok = r.bytes().await.is_ok();
                        if ok {
                            s
                        } else {
                            0
                        }
                    }
                    Err(_) => 0,
                };
                match (bad, status) {
                    (false, 200) => t.valid_latencies.push(sent.elapsed().as_secs_f64()),
                    (false, _) => t.valid_errors += 1,
                    (true, 400..=499) => t.malformed_4xx += 1,
                    (true, _) => t.malformed_other += 1,
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        all.valid_latencies.extend(t.valid_latencies);
        all.valid_errors += t.valid_errors;
        all.malformed_4xx += t.malformed_4xx;
        all.malformed_other += t.malformed_other;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let metrics =
        reqwest::get(format!("{}/metrics", guard.url)).await.unwrap().text().await.unwrap();
    all.valid_latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        all.valid_latencies[((all.valid_latencies.len() - 1) as f64 * p).round() as usize] * 1e3
    };
    let valid = all.valid_latencies.len();
    println!("guard load: {clients} clients, {elapsed:.1} s, --max-batch {max_batch}");
    println!(
        "valid: {valid} ok ({:.0}/s), {} errors; malformed: {} got 4xx, {} did not; total {:.0} req/s",
        valid as f64 / elapsed,
        all.valid_errors,
        all.malformed_4xx,
        all.malformed_other,
        (valid as u64 + all.valid_errors + all.malformed_4xx + all.malformed_other) as f64 / elapsed
    );
    println!("valid latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", q(0.5), q(0.99), q(1.0));
    println!("batch sizes (rows per model pass, cumulative):");
    for line in metrics.lines().filter(|l| l.starts_with("gibbon_guard_batch_rows")) {
        println!("  {line}");
    }
    assert_eq!(all.valid_errors, 0, "valid requests must never fail");
    assert_eq!(all.malformed_other, 0, "every malformed request gets a 4xx");
    assert!(valid > 0 && all.malformed_4xx > 0);
}
