//! The guard's library pieces: policy, review queue (with the concurrent-decision race), the
//! request decoder (property-tested: never panics, always a 4xx-class error), drift on real
//! MNIST / notMNIST scores.
mod support;

use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::detect::MaxSoftmax;
use gibbon::guard::batcher::classify_rows;
use gibbon::guard::decode::{decode_request, encode_png, DecodeError, DecodeLimits};
use gibbon::guard::drift::DriftMonitor;
use gibbon::guard::policy::{Decision, Policy};
use gibbon::guard::queue::{QueueError, ReviewItem, ReviewQueue};
use gibbon::guard::screen::{DetectorScorer, DetectorScreen, Screen, ScreenScorer};
use gibbon::model::{load_model, Classifier, ModelSpec};
use proptest::prelude::*;
use tch::Device;

/// An MSP screen (score −log max softmax) calibrated with detect's rule on 1,000 rows with
/// top probabilities spread over [0.5, 1): scores in (0, log 2].
fn screen() -> DetectorScreen {
    let scores: Vec<f64> = (0..1000).map(|i| -(0.5 + 0.5 * (i as f64 / 1000.0)).ln()).collect();
    DetectorScreen::from_scores("msp", scores, 0.05).unwrap().0
}

/// detect's MSP detector, scoring the guard's passes from their logits.
fn msp_scorer() -> DetectorScorer {
    DetectorScorer(Box::new(MaxSoftmax))
}

#[test]
fn policy_defaults_and_rules_in_order() {
    let s = screen();
    let screens: [&dyn Screen; 1] = [&s];
    let p = Policy::default();
    assert_eq!(p, toml::from_str::<Policy>("").unwrap(), "an empty file is the default policy");
    let t = s.threshold();
    // Below the threshold, confident: accept.
    let v = p.decide(0.99, &[t * 0.5], &screens);
    assert_eq!((v.decision, v.rule.as_str()), (Decision::Accept, "accept"));
    // Just past the threshold (about 5% of clean calibration as high): escalate.
    let v = p.decide(0.9, &[t + 1e-4], &screens);
    assert_eq!((v.decision, v.rule.as_str()), (Decision::Escalate, "escalate:past-threshold:msp"));
    // Beyond every calibration score: refuse, even when the confidence is low too.
    let v = p.decide(0.3, &[1.0], &screens);
    assert_eq!((v.decision, v.rule.as_str()), (Decision::Refuse, "refuse:far-past-threshold:msp"));
    // Below the threshold but unconfident: escalate.
    let v = p.decide(0.55, &[t * 0.5], &screens);
    assert_eq!((v.decision, v.rule.as_str()), (Decision::Escalate, "escalate:low-confidence"));
    // Without escalate_past_threshold, a just-past score is accepted when confident.
    let lax = Policy { escalate_past_threshold: false, ..Policy::default() };
    assert_eq!(lax.decide(0.9, &[t + 1e-4], &screens).decision, Decision::Accept);
}

#[test]
fn policy_files_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        Policy::load(&path)
    };
    let p = write("min_confidence = 0.8\n[drift]\nwindow = 50\nmin_samples = 20\n").unwrap();
    assert_eq!((p.min_confidence, p.drift.window, p.refuse_tail), (0.8, 50, 0.002));
    let e = write("min_confidence = 1.5\n").unwrap_err().to_string();
    assert!(e.contains("policy.toml") && e.contains("min_confidence") && e.contains("1.5"), "{e}");
    let e = write("min_confidense = 0.5\n").unwrap_err().to_string();
    assert!(e.contains("min_confidense"), "{e}");
    assert!(write("[drift]\nwindow = 10\nmin_samples = 20\n").is_err());
}

fn item(id: &str) -> ReviewItem {
    ReviewItem {
        id: id.into(),
        created_at: gibbon::guard::utc_now(),
        shape: vec![1, 2, 2],
        pixels: vec![0.0, 0.25, 0.5, 1.0],
        label: 3,
        confidence: 0.42,
        scores: serde_json::json!({"msp": {"score": 0.58}}),
        rule: "escalate:low-confidence".into(),
        status: "pending".into(),
        reviewer: None,
        reviewed_label: None,
        note: None,
        decided_at: None,
    }
}

#[test]
fn queue_stores_items_and_decides_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("guard.sqlite");
    let mut q = ReviewQueue::open(&db).unwrap();
    assert_eq!(q.schema_version().unwrap(), 1);
    q.insert(&item("a")).unwrap();
    q.insert(&item("b")).unwrap();
    assert!(q.insert(&item("a")).is_err(), "ids are unique");
    assert_eq!(q.pending_count().unwrap(), 2);
    let got = q.get("a").unwrap();
    assert_eq!(
        (got.pixels.clone(), got.label, got.status.as_str()),
        (vec![0.0, 0.25, 0.5, 1.0], 3, "pending")
    );
    q.decide("a", "alice", 7, "looks like a 7", "2026-01-01T00:00:00.000Z").unwrap();
    assert!(matches!(q.decide("a", "bob", 1, "", "t"), Err(QueueError::AlreadyDecided(_))));
    assert!(matches!(q.decide("zz", "bob", 1, "", "t"), Err(QueueError::NotFound(_))));
    drop(q);
    // Reopening migrates nothing and keeps everything.
    let q = ReviewQueue::open(&db).unwrap();
    assert_eq!(q.schema_version().unwrap(), 1);
    let a = q.get("a").unwrap();
    assert_eq!(
        (a.status.as_str(), a.reviewer.as_deref(), a.reviewed_label),
        ("decided", Some("alice"), Some(7))
    );
    assert_eq!(q.pending(10).unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["b"]);
    let mode: String = rusqlite_journal_mode(&db);
    assert_eq!(mode, "wal");
}

fn rusqlite_journal_mode(db: &std::path::Path) -> String {
    // WAL mode is persistent in the file: a fresh connection reports it.
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap()
}

#[test]
fn concurrent_decisions_on_one_item_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("guard.sqlite");
    let mut q = ReviewQueue::open(&db).unwrap();
    for round in 0..5 {
        q.insert(&item(&format!("race{round}"))).unwrap();
    }
    for round in 0..5 {
        let id = format!("race{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|k| {
                let (db, id, barrier) = (db.clone(), id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // Each reviewer has its own connection, as separate processes would.
                    let mut mine = ReviewQueue::open(&db).unwrap();
                    barrier.wait();
                    mine.decide(&id, &format!("r{k}"), k, "", "t").map(|()| k)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<i64> = outcomes.iter().filter_map(|o| o.as_ref().ok().copied()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        assert!(outcomes
            .iter()
            .filter(|o| o.is_err())
            .all(|o| matches!(o, Err(QueueError::AlreadyDecided(_)))));
        let stored = q.get(&id).unwrap();
        assert_eq!(stored.reviewed_label, Some(winners[0]));
        assert_eq!(stored.reviewer, Some(format!("r{}", winners[0])));
    }
}

fn limits() -> DecodeLimits {
    DecodeLimits { input_shape: vec![1, 28, 28], max_inputs: 8 }
}

#[test]
fn decoder_accepts_pngs_and_float_arrays_and_names_what_is_wrong() {
    let pixels: Vec<f32> = (0..784).map(|i| (i % 256) as f32 / 255.0).collect();
    let png = encode_png(&pixels, &[1, 28, 28]).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png);
    let body = serde_json::json!({"inputs": [{"png": b64}, {"shape": [1, 28, 28], "data": pixels, "dtype": "float32"}]});
    let batch = decode_request(body.to_string().as_bytes(), &limits()).unwrap();
    assert_eq!(batch.rows, 2);
    assert_eq!(&batch.pixels[..784], &batch.pixels[784..], "PNG and float array decode alike");
    let bad =
        |v: serde_json::Value| decode_request(v.to_string().as_bytes(), &limits()).unwrap_err();
    let e = bad(serde_json::json!({"input": {"shape": [1, 28, 27], "data": [0.0]}}));
    assert!(
        matches!(&e, DecodeError::Invalid { index: 0, message } if message.contains("[1, 28, 27]")),
        "{e}"
    );
    let mut out_of_range = pixels.clone();
    out_of_range[5] = 1.5;
    let e = bad(serde_json::json!({"input": {"shape": [1, 28, 28], "data": out_of_range}}));
    assert!(e.to_string().contains("position 5"), "{e}");
    let e =
        bad(serde_json::json!({"input": {"shape": [1, 28, 28], "data": pixels, "dtype": "int8"}}));
    assert!(e.to_string().contains("int8"), "{e}");
    let e = bad(serde_json::json!({"input": {"png": "not base64!"}}));
    assert!(e.to_string().contains("base64"), "{e}");
    let many: Vec<_> = (0..9).map(|_| serde_json::json!({"png": "x"})).collect();
    assert!(matches!(bad(serde_json::json!({ "inputs": many })), DecodeError::Malformed(_)));
    assert!(matches!(
        decode_request(b"{\"input\": {\"shape\": [1,28,28], \"data\": [1e999]}}", &limits()),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_request(b"{\"input\": {\"shape\": [1,28,28], \"data\": [NaN]}}", &limits()),
        Err(DecodeError::Malformed(_))
    ));
    let small = encode_png(&[0.5; 16], &[1, 4, 4]).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, small);
    assert!(bad(serde_json::json!({"input": {"png": b64}})).to_string().contains("4x4"));
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-2.0f64..2.0).prop_map(serde_json::Value::from),
        "[a-z0-9+/=]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("input"),
            Just("inputs"),
            Just("png"),
            Just("shape"),
            Just("data"),
            Just("dtype"),
            Just("x")
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.prop_map(String::from), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes, &limits());
    }

    #[test]
    fn decoder_never_panics_on_json(v in json_value()) {
        let _ = decode_request(v.to_string().as_bytes(), &limits());
    }

    #[test]
    fn decoder_never_panics_on_corrupt_pngs(flip in 0usize..2000, byte in any::<u8>(), cut in 0usize..2000) {
        let png = encode_png(&[0.3; 784], &[1, 28, 28]).unwrap();
        let mut png = png[..cut.min(png.len())].to_vec();
        if !png.is_empty() { let i = flip % png.len(); png[i] = byte; }
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png);
        let body = serde_json::json!({"input": {"png": b64}}).to_string();
        let _ = decode_request(body.as_bytes(), &limits());
    }
}

#[test]
fn drift_fires_on_notmnist_after_mnist_and_not_on_mnist_alone() {
    let model = load_model(
        &"builtin:smallcnn-mnist".parse::<ModelSpec>().unwrap(),
        None,
        &[1, 28, 28],
        10,
        Device::Cpu,
    )
    .unwrap();
    let mnist = Dataset::load(
        &DataSpec::Idx(support::shared().join("data/mnist")),
        Split::Test,
        Some(1600),
    )
    .unwrap();
    let notmnist = Dataset::load(
        &DataSpec::Idx(support::shared().join("data/notmnist")),
        Split::Test,
        Some(300),
    )
    .unwrap();
    let calib_idx: Vec<usize> = (0..1000).collect();
    let calib = Dataset::from_tensor(
        mnist.try_batch(&calib_idx, Device::Cpu).unwrap(),
        mnist.labels()[..1000].to_vec(),
        "calib",
    )
    .unwrap();
    let (screen, _) = DetectorScreen::msp(model.as_ref(), &calib, 0.05).unwrap();
    let confidences = gibbon::guard::calibration_confidences(model.as_ref(), &calib).unwrap();
    let screens: [&dyn ScreenScorer; 1] = [screen.scorer.as_ref()];
    let mut scores = DriftMonitor::new("msp", screen.screen.calibration().to_vec(), 300, 100, 1e-3);
    let mut conf = DriftMonitor::new("confidence", confidences, 300, 100, 1e-3);
    let mut feed = |data: &Dataset, range: std::ops::Range<usize>| {
        let idx: Vec<usize> = range.collect();
        let x = data.try_batch(&idx, Device::Cpu).unwrap();
        let pixels = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        for a in classify_rows(model.as_ref(), &screens, &pixels, idx.len()).unwrap() {
            scores.push(a.scores[0]);
            conf.push(a.confidence);
        }
        (scores.report(), conf.report())
    };
    let (s, c) = feed(&mnist, 1000..1300);
    eprintln!("MNIST window: msp p = {:?}, confidence p = {:?}", s.p_value, c.p_value);
    assert!(!s.drifted && !c.drifted, "MNIST alone must not drift: {s:?} {c:?}");
    assert!(s.p_value.unwrap() > 0.01);
    let (s, c) = feed(&notmnist, 0..300);
    eprintln!("notMNIST window: msp p = {:?}, confidence p = {:?}", s.p_value, c.p_value);
    assert!(s.drifted && c.drifted, "notMNIST must drift: {s:?} {c:?}");
    assert!(s.p_value.unwrap() < 1e-6);
}

/// The model's own throughput, the reference for the guard's load test (ignored: a timing,
/// not a property; run with `--ignored --nocapture`): rows per second of the guard's pass
/// (`classify_rows`, which pads every pass to a 32-row tile) at 1 and 32 rows, and of an
/// unpadded 1-row forward.
#[test]
#[ignore = "timing for the README; run with --ignored --nocapture"]
fn model_throughput_reference() {
    let model = load_model(
        &"builtin:smallcnn-mnist".parse::<ModelSpec>().unwrap(),
        None,
        &[1, 28, 28],
        10,
        Device::Cpu,
    )
    .unwrap();
    let mnist = support::mnist(32);
    let x = mnist.try_batch(&(0..32).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let pixels = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    let s = msp_scorer();
    let screens: [&dyn ScreenScorer; 1] = [&s];
    for rows in [1usize, 32] {
        let start = std::time::Instant::now();
        let passes = 300;
        for _ in 0..passes {
            classify_rows(model.as_ref(), &screens, &pixels[..rows * 784], rows).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "guard pass, {rows} rows: {:.2} ms/pass, {:.0} rows/s",
            secs / passes as f64 * 1e3,
            (rows * passes) as f64 / secs
        );
    }
    let one = x.narrow(0, 0, 1);
    let start = std::time::Instant::now();
    for _ in 0..300 {
        let _ = tch::no_grad(|| model.forward(&one)).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "unpadded 1-row forward: {:.2} ms/pass, {:.0} rows/s",
        secs / 300.0 * 1e3,
        300.0 / secs
    );
}

/// An input's answer does not depend on the requests that share its model pass: the guard's
/// passes run on fixed-size tiles, so one row alone and the same row among 31 others agree.
#[test]
fn answers_do_not_depend_on_the_batch() {
    let spec = "builtin:smallcnn-mnist".parse::<ModelSpec>().unwrap();
    let model = load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let mnist = support::mnist(32);
    let x = mnist.try_batch(&(0..32).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let pixels = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    let s = msp_scorer();
    let screens: [&dyn ScreenScorer; 1] = [&s];
    let batched = classify_rows(model.as_ref(), &screens, &pixels, 32).unwrap();
    for i in [0usize, 13, 31] {
        let alone = classify_rows(model.as_ref(), &screens, &pixels[i * 784..(i + 1) * 784], 1)
            .unwrap()
            .remove(0);
        assert_eq!(alone.label, batched[i].label);
        assert!((alone.confidence - batched[i].confidence).abs() < 1e-6, "row {i}");
        assert!((alone.scores[0] - batched[i].scores[0]).abs() < 1e-6, "row {i}");
    }
    assert!(batched.iter().zip(mnist.labels()).filter(|(a, &y)| a.label == y).count() >= 30);
}

/// The guard scores a pass from its logits (no second model pass) exactly as `gibbon detect`
/// scores the inputs when it calibrates: the served scores and the threshold are on one scale.
#[test]
fn served_scores_are_detects_scores() {
    let spec = "builtin:smallcnn-mnist".parse::<ModelSpec>().unwrap();
    let model = load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let mnist = support::mnist(40);
    let x = mnist.try_batch(&(0..40).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let pixels = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    let energy = gibbon::detect::Energy { temperature: 1.0 };
    let detectors: [Box<dyn gibbon::detect::Detector>; 2] =
        [Box::new(MaxSoftmax), Box::new(energy)];
    for detector in detectors {
        let direct = gibbon::detect::to_f64s(&detector.score(model.as_ref(), &x).unwrap()).unwrap();
        let scorer = DetectorScorer(detector);
        let screens: [&dyn ScreenScorer; 1] = [&scorer];
        let served = classify_rows(model.as_ref(), &screens, &pixels, 40).unwrap();
        for (a, d) in served.iter().zip(&direct) {
            assert!((a.scores[0] - d).abs() <= 1e-9 * d.abs().max(1.0), "{} vs {d}", a.scores[0]);
        }
    }
}
