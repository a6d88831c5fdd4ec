//! Remote models over HTTP, on loopback only: `ModelServer` and `RemoteModel` together give the
//! in-process model's query scores bit for bit and the same Square attack results; misbehaving servers
//! (down, slow, garbage, wrong shapes, 5xx, labels only) give a clear error or a retry, never a
//! wrong result; white-box attacks fail with the no-gradients error.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::remote::NO_GRADIENTS;
use gibbon::model::{
    load_model, Classifier, LabelModel, ModelServer, ModelSpec, PredictionsOf, RemoteModel,
    RemoteOptions, RemoteOutput,
};
use gibbon::threat::{Norm, ThreatModel};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{mnist, shared};
use tch::{Device, Kind, Tensor};

fn load(spec: ModelSpec) -> Box<dyn Classifier> {
    load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn reference_std() -> Box<dyn Classifier> {
    load(ModelSpec::TorchScript(shared().join("reference/mnist_smallcnn_std.pt")))
}

/// A `ModelServer` on a free loopback port, serving the model `make` builds (on the server's own
/// thread: libtorch modules stay on the thread that loaded them); stopped on drop.
struct Served {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn serve(make: fn() -> Box<dyn Classifier>, output: RemoteOutput) -> Served {
    let server = ModelServer::bind("127.0.0.1:0").unwrap();
    let url = server.predict_url();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        tch::set_num_threads(1);
        let model = make();
        server.serve(model.as_ref(), output, &flag).unwrap();
    });
    Served { url, stop, thread: Some(thread) }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fast_options() -> RemoteOptions {
    RemoteOptions {
        timeout: Duration::from_millis(200),
        retries: 2,
        backoff_initial: Duration::from_millis(20),
        ..RemoteOptions::default()
    }
}

fn error_text<T>(r: gibbon::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "'{n}' not in: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// The real server against the in-process model.

#[test]
fn remote_scores_and_square_results_equal_the_in_process_ones_bit_for_bit() {
    tch::set_num_threads(1);
    let local = reference_std();
    let served = serve(reference_std, RemoteOutput::Scores);
    // 25 rows per request: a batch of 64 travels in 3 requests.
    let options = RemoteOptions { max_rows_per_request: 25, ..RemoteOptions::default() };
    let remote = RemoteModel::load(&served.url, options, &[1, 28, 28]).unwrap();
    assert_eq!(remote.remote_info().num_classes, 10);
    assert_eq!(remote.output(), RemoteOutput::Scores);
    assert_eq!(remote.info().sha256, local.info().sha256, "the server names its model");

    let data = mnist(64);
    let x = data.try_batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let before = remote.requests();
    let remote_logits = remote.logits(&x).unwrap();
    assert_eq!(remote.requests() - before, 3);
    // The server answers with the query path (what an in-process query attack sees).
    let local_logits = local.query_logits(&x).unwrap();
    assert_eq!(remote_logits.kind(), Kind::Float);
    assert!(remote_logits.equal(&local_logits), "logits differ");
    // A perturbed batch too: values that are not multiples of 1/255.
    let noisy =
        (&x + gibbon::random::uniform_tensor(5, &[64, 1, 28, 28]) * 0.1 - 0.05).clamp(0.0, 1.0);
    assert!(remote.logits(&noisy).unwrap().equal(&local.query_logits(&noisy).unwrap()));
    assert!(remote.predict(&x).unwrap().equal(&local.predict(&x).unwrap()));
    assert!(PredictionsOf(&remote).labels(&x).unwrap().equal(&local.predict(&x).unwrap()));

    // Square with the same seed: identical per-sample records and examples.
    let data = mnist(10);
    let mut threat = ThreatModel::new(Norm::Linf, 0.2).unwrap();
    threat.budget.queries = Some(200);
    let settings = |batch_size| EvalSettings {
        attacks: vec!["square".into()],
        batch_size,
        seed: 3,
        keep_examples: true,
        ..Default::default()
    };
    let started = Instant::now();
    let (local_report, local_examples) =
        evaluate(local.as_ref(), &data, &threat, &settings(10), &RunInfo::default()).unwrap();
    let local_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (remote_report, remote_examples) =
        evaluate(&remote, &data, &threat, &settings(10), &RunInfo::default()).unwrap();
    let remote_s = started.elapsed().as_secs_f64();
    assert_eq!(remote_report.per_sample, local_report.per_sample);
    assert_eq!(remote_report.robust_accuracy, local_report.robust_accuracy);
    assert_eq!(remote_examples.len(), local_examples.len());
    for (i, x) in &local_examples {
        assert!(remote_examples[i].equal(x), "example {i} differs");
    }
    let broken = remote_report.per_sample.iter().filter(|s| s.broken_by.is_some()).count();
    // Both kinds of record are compared: samples broken early and samples that used the budget.
    assert!(broken > 0 && broken < 10, "{broken} of 10 broken: the comparison would be weak");
    eprintln!(
        "square eps 0.2, 200 queries, n=10: robust accuracy {} ({broken} broken), queries {:?}; \
         in-process {local_s:.1} s, remote {remote_s:.1} s ({} requests)",
        remote_report.robust_accuracy,
        remote_report.per_sample.iter().map(|s| s.queries).collect::<Vec<_>>(),
        remote.requests()
    );
}

#[test]
fn white_box_attacks_fail_with_the_no_gradients_error() {
    tch::set_num_threads(1);
    fn builtin() -> Box<dyn Classifier> {
        load(ModelSpec::Builtin("smallcnn-mnist".into()))
    }
    let served = serve(builtin, RemoteOutput::Scores);
    let remote = RemoteModel::load(&served.url, RemoteOptions::default(), &[1, 28, 28]).unwrap();
    let data = mnist(4);
    for (attack, norm) in [
        ("pgd", Norm::Linf),
        ("fgsm", Norm::Linf),
        ("apgd-ce", Norm::Linf),
        ("deepfool", Norm::L2),
        ("fab", Norm::Linf),
        ("cw", Norm::L2),
    ] {
        let threat = ThreatModel::new(norm, 0.3).unwrap();
        let settings = EvalSettings { attacks: vec![attack.into()], ..Default::default() };
        let err = error_text(evaluate(&remote, &data, &threat, &settings, &RunInfo::default()));
        assert_contains(&err, &[&served.url, NO_GRADIENTS]);
    }
    // Directly, and through the boxed model that `load_model` returns for a URL.
    let x = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let boxed = load(served.url.parse().unwrap());
    for model in [&remote as &dyn Classifier, boxed.as_ref()] {
        let err = error_text(
            model.loss_and_input_grad(&x, &|z: &Tensor| z.sum_dim_intlist(-1, false, Kind::Float)),
        );
        assert_contains(&err, &[NO_GRADIENTS]);
        let err = error_text(model.forward(&x.set_requires_grad(true)));
        assert_contains(&err, &[NO_GRADIENTS]);
        assert_eq!(model.logits(&x).unwrap().size(), [2, 10]);
    }
}

#[test]
fn the_server_rejects_bad_requests_naming_the_problem() {
    fn builtin() -> Box<dyn Classifier> {
        load(ModelSpec::Builtin("smallcnn-mnist".into()))
    }
    let served = serve(builtin, RemoteOutput::Scores);
    let addr = served.url.trim_start_matches("http://").trim_end_matches("/predict").to_string();
    let (status, body) = raw_request(&addr, "POST", "/predict", r#"{"inputs":[[0.5,0.5]]}"#);
    assert_eq!(status, 400);
    assert_contains(&body, &["row 0 has 2 values, expected 784", "[1, 28, 28]"]);
    let (status, body) = raw_request(&addr, "POST", "/predict", "not json");
    assert_eq!(status, 400);
    assert_contains(&body, &["expected a JSON object", "inputs"]);
    let row = format!("[{}1e39]", "0,".repeat(783));
    let (status, body) = raw_request(&addr, "POST", "/predict", &format!("{{\"inputs\":[{row}]}}"));
    assert_eq!(status, 400);
    assert_contains(&body, &["number out of range"]);
    assert_eq!(raw_request(&addr, "GET", "/predict", "").0, 405);
    assert_eq!(raw_request(&addr, "GET", "/nothing", "").0, 404);
    let (status, body) = raw_request(&addr, "GET", "/info", "");
    assert_eq!(status, 200);
    assert_contains(
        &body,
        &[r#""input_shape":[1,28,28]"#, r#""num_classes":10"#, r#""output":"scores""#],
    );
    // A client can still use the server after all that.
    let remote = RemoteModel::connect(&served.url, RemoteOptions::default()).unwrap();
    assert_eq!(
        remote.logits(&Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu))).unwrap().size(),
        [1, 10]
    );
}

#[test]
fn model_specs_name_remote_models_by_url() {
    let spec: ModelSpec = "http://127.0.0.1:9/v1/predict".parse().unwrap();
    assert_eq!(spec, ModelSpec::Remote("http://127.0.0.1:9/v1/predict".into()));
    assert_eq!(spec.to_string(), "http://127.0.0.1:9/v1/predict");
    assert_eq!(
        gibbon::model::remote::info_url_for("http://h:1/v1/m/predict").unwrap(),
        "http://h:1/v1/m/info"
    );
    for (bad, why) in [
        ("https://127.0.0.1:9/predict", "https is not supported"),
        ("http://127.0.0.1:9", "must name the predict endpoint"),
        ("http://127.0.0.1:9/predict/", "must end with"),
        ("http://127.0.0.1:9/predict?k=1", "query strings"),
    ] {
        let err = error_text(bad.parse::<ModelSpec>());
        assert_contains(&err, &[why]);
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written misbehaving servers.

/// What a fake server does with one request.
enum Reply {
    /// An HTTP answer with this status and body.
    Http(u16, String),
    /// These bytes, then close: not HTTP at all.
    Raw(&'static [u8]),
    /// Sleep, then answer.
    Slow(Duration, u16, String),
}

/// A fake model server on loopback: `/info` answers `info`; `/predict` requests go to
/// `predict(number of inputs, how many predict requests came before)`. Every answer closes the
/// connection. Stops on drop (within 20 ms, or after a slow reply it is sleeping through).
struct Fake {
    url: String,
    predict_hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

const INFO_SCORES: &str = r#"{"input_shape":[1,2,2],"num_classes":3,"output":"scores"}"#;
const INFO_LABELS: &str = r#"{"input_shape":[1,2,2],"num_classes":3,"output":"labels"}"#;

fn fake(info: &'static str, predict: impl Fn(usize, usize) -> Reply + Send + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/predict", listener.local_addr().unwrap());
    let predict_hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (hits, flag) = (predict_hits.clone(), stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            let Some((path, body)) = read_request(&stream) else { continue };
            let reply = if path == "/info" {
                Reply::Http(200, info.to_string())
            } else {
                let rows = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["inputs"].as_array().map(Vec::len))
                    .unwrap_or(0);
                predict(rows, hits.fetch_add(1, Ordering::SeqCst))
            };
            write_reply(stream, reply);
        }
    });
    Fake { url, predict_hits, stop }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &TcpStream) -> Option<(String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, String::from_utf8_lossy(&body).into_owned()))
}

fn write_reply(mut stream: TcpStream, reply: Reply) {
    let (status, body) = match reply {
        Reply::Raw(bytes) => {
            let _ = stream.write_all(bytes);
            return;
        }
        Reply::Http(status, body) => (status, body),
        Reply::Slow(wait, status, body) => {
            std::thread::sleep(wait);
            (status, body)
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// One HTTP request by hand: (status, body).
fn raw_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Rows of scores `[r, r + 0.25, -r]` for row r.
fn good_scores(rows: usize) -> String {
    let rows: Vec<String> = (0..rows).map(|r| format!("[{r},{}.25,-{r}]", r)).collect();
    format!("{{\"scores\":[{}]}}", rows.join(","))
}

fn inputs(rows: i64) -> Tensor {
    Tensor::zeros([rows, 1, 2, 2], (Kind::Float, Device::Cpu))
}

#[test]
fn a_server_that_is_down_is_a_clear_error_after_the_retries() {
    // Nobody listens on a port that was just released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/predict");
    let started = Instant::now();
    let err = error_text(RemoteModel::connect(&url, fast_options()));
    assert_contains(
        &err,
        &["127.0.0.1", "/info", "connection refused", "gave up after 3 attempts"],
    );
    assert!(started.elapsed() >= Duration::from_millis(60), "backoff 20 + 40 ms");

    // A server that answers /info and then goes away.
    let server = fake(INFO_SCORES, |rows, _| Reply::Http(200, good_scores(rows)));
    let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
    drop(server);
    std::thread::sleep(Duration::from_millis(100));
    let err = error_text(remote.logits(&inputs(2)));
    assert_contains(&err, &["/predict", "connection refused", "gave up after 3 attempts"]);
}

#[test]
fn a_slow_server_times_out() {
    let server = fake(INFO_SCORES, |rows, _| {
        Reply::Slow(Duration::from_millis(700), 200, good_scores(rows))
    });
    let options = RemoteOptions { retries: 1, ..fast_options() };
    let remote = RemoteModel::connect(&server.url, options).unwrap();
    let started = Instant::now();
    let err = error_text(remote.logits(&inputs(2)));
    let took = started.elapsed();
    assert_contains(&err, &[&server.url, "timeout of 200 ms", "gave up after 2 attempts"]);
    assert!(took < Duration::from_millis(650), "gave up only after {took:?}");
}

#[test]
fn garbage_answers_are_clear_errors_without_retry() {
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::Http(200, "this is not json".into()), "not valid JSON"),
        (Reply::Http(200, "[1,2,3]".into()), "not a JSON object"),
        (Reply::Http(200, r#"{"labels":[0,1,2,0,1]}"#.into()), "no \"scores\" key"),
        (Reply::Http(200, good_scores(3)), "server returned 3 rows for 5 inputs"),
        (Reply::Http(200, good_scores(6)), "server returned 6 rows for 5 inputs"),
        (
            Reply::Http(200, r#"{"scores":[[1,2],[1,2],[1,2],[1,2],[1,2]]}"#.into()),
            "row 0 has 2 values, expected 3",
        ),
        (
            Reply::Http(200, r#"{"scores":[[1,2,3],[1,null,3],[1,2,3],[1,2,3],[1,2,3]]}"#.into()),
            "row 1, class 1: null is not a finite float32",
        ),
        (
            Reply::Http(200, r#"{"scores":[[1,2,3],[1,2,3],[1,2,1e39],[1,2,3],[1,2,3]]}"#.into()),
            "row 2, class 2",
        ),
        (
            Reply::Http(200, r#"{"scores":[[1,2,3],[1,2,3],[1,2,3],[1,2,3],"x"]}"#.into()),
            "row 4 is not a list",
        ),
        (
            Reply::Http(400, r#"{"error":"row 0 is too short"}"#.into()),
            "server answered 400: row 0 is too short",
        ),
        (
            Reply::Http(404, "<html>gone</html>".into()),
            "server answered 404: \"<html>gone</html>\"",
        ),
        (Reply::Raw(b"garbage garbage\r\n\r\n"), "malformed HTTP response"),
    ];
    for (reply, needle) in cases {
        let reply = std::sync::Mutex::new(Some(reply));
        let server = fake(INFO_SCORES, move |_, _| {
            reply.lock().unwrap().take().unwrap_or(Reply::Http(500, "asked twice".into()))
        });
        let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
        let err = error_text(remote.logits(&inputs(5)));
        assert_contains(&err, &[&server.url, needle]);
        assert_eq!(server.predict_hits.load(Ordering::SeqCst), 1, "retried after: {err}");
    }
    // /info is checked as strictly.
    for (info, needle) in [
        ("{}", "expected {\"input_shape\""),
        (r#"{"input_shape":[],"num_classes":3,"output":"scores"}"#, "non-empty"),
        (r#"{"input_shape":[1,2,2],"num_classes":1,"output":"scores"}"#, "at least 2"),
        (r#"{"input_shape":[1,2,2],"num_classes":3,"output":"probabilities"}"#, "unknown variant"),
    ] {
        let server = fake(info, |rows, _| Reply::Http(200, good_scores(rows)));
        let err = error_text(RemoteModel::connect(&server.url, fast_options()));
        assert_contains(&err, &["/info", needle]);
    }
    // Inputs of the wrong shape never leave the client.
    let server = fake(INFO_SCORES, |rows, _| Reply::Http(200, good_scores(rows)));
    let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
    let err = error_text(remote.logits(&Tensor::zeros([2, 1, 3, 3], (Kind::Float, Device::Cpu))));
    assert_contains(&err, &["takes inputs of shape [B, 1, 2, 2], got [2, 1, 3, 3]"]);
    let err = error_text(remote.logits(&(inputs(2) / 0.0)));
    assert_contains(&err, &["non-finite"]);
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 0);
}

#[test]
fn server_errors_are_retried_with_backoff_and_then_succeed() {
    let server = fake(INFO_SCORES, |rows, hit| {
        if hit < 2 {
            Reply::Http(500 + hit as u16 * 3, r#"{"error":"overloaded"}"#.into())
        } else {
            Reply::Http(200, good_scores(rows))
        }
    });
    let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
    let started = Instant::now();
    let scores = remote.logits(&inputs(2)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60), "backoff 20 + 40 ms");
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 3);
    let want = Tensor::from_slice(&[0f32, 0.25, 0.0, 1.0, 1.25, -1.0]).view([2, 3]);
    assert!(scores.equal(&want), "{scores:?}");

    // More 5xx than retries: an error naming the last answer.
    let server = fake(INFO_SCORES, |_, _| Reply::Http(503, r#"{"error":"overloaded"}"#.into()));
    let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
    let err = error_text(remote.logits(&inputs(2)));
    assert_contains(&err, &["server error 503: overloaded", "gave up after 3 attempts"]);
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 3);
}

#[test]
fn large_batches_are_split_and_the_rate_limit_holds() {
    let server = fake(INFO_SCORES, |rows, _| {
        assert!(rows <= 3, "{rows} rows in one request");
        Reply::Http(200, good_scores(rows))
    });
    let options =
        RemoteOptions { max_rows_per_request: 3, rate_limit_per_s: Some(20.0), ..fast_options() };
    let remote = RemoteModel::connect(&server.url, options).unwrap();
    let started = Instant::now();
    let scores = remote.logits(&inputs(7)).unwrap();
    // info + 3 predict requests at most 20 per second: at least 150 ms.
    assert!(started.elapsed() >= Duration::from_millis(140), "{:?}", started.elapsed());
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 3);
    assert_eq!(remote.requests(), 4);
    // Rows 0-2, 0-2, 0: each request's scores land on its own rows.
    let first: Vec<f32> = Vec::try_from(scores.select(1, 0)).unwrap();
    assert_eq!(first, [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]);
    assert_eq!(remote.logits(&inputs(0)).unwrap().size(), [0, 3], "no request for no rows");
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 3);
}

#[test]
fn a_labels_only_server_answers_labels_and_refuses_scores() {
    let server = fake(INFO_LABELS, |rows, _| {
        let labels: Vec<String> = (0..rows).map(|r| (r % 3).to_string()).collect();
        Reply::Http(200, format!("{{\"labels\":[{}]}}", labels.join(",")))
    });
    let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
    assert_eq!(remote.output(), RemoteOutput::Labels);
    let err = error_text(remote.logits(&inputs(4)));
    assert_contains(&err, &["labels only", "decision-based"]);
    assert_eq!(server.predict_hits.load(Ordering::SeqCst), 0);
    let want = Tensor::from_slice(&[0i64, 1, 2, 0]);
    assert!(remote.predict(&inputs(4)).unwrap().equal(&want));
    assert!(PredictionsOf(&remote).labels(&inputs(4)).unwrap().equal(&want));
    // A score-based attack through the evaluation fails cleanly at the clean pass.
    let data = Dataset::from_tensor(inputs(2), vec![0, 1], "zeros").unwrap();
    let settings = EvalSettings { attacks: vec!["square".into()], ..Default::default() };
    let threat = ThreatModel::new(Norm::Linf, 0.2).unwrap();
    let err = error_text(evaluate(&remote, &data, &threat, &settings, &RunInfo::default()));
    assert_contains(&err, &["labels only"]);

    // Labels are validated too.
    for (body, needle) in [
        (r#"{"labels":[0,3]}"#, "label 3 of row 1 is out of range for 3 classes"),
        (r#"{"labels":[0,1.5]}"#, "label of row 1 is not an integer"),
        (r#"{"labels":[0]}"#, "server returned 1 rows for 2 inputs"),
        (r#"{"scores":[[1,2,3],[1,2,3]]}"#, "no \"labels\" key"),
    ] {
        let server = fake(INFO_LABELS, move |_, _| Reply::Http(200, body.into()));
        let remote = RemoteModel::connect(&server.url, fast_options()).unwrap();
        assert_contains(&error_text(remote.predict(&inputs(2))), &[needle]);
    }
}

#[test]
fn float32_values_cross_json_exactly() {
    // The wire format: serde_json writes a float32 as its shortest decimal and reads it back as
    // a float32 directly. Checked on a million pseudo-random bit patterns of every magnitude.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut values = Vec::with_capacity(1 << 20);
    while values.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let v = f32::from_bits(state as u32);
        if v.is_finite() {
            values.push(v);
        }
    }
    values.extend([0.0, -0.0, f32::MIN_POSITIVE, f32::MAX, f32::MIN, f32::EPSILON, 1.0 / 255.0]);
    values.extend((1..=255).map(|k| k as f32 / 255.0));
    let text = serde_json::to_string(&values).unwrap();
    let back: Vec<f32> = serde_json::from_str(&text).unwrap();
    for (a, b) in values.iter().zip(&back) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back as {b:e}");
    }
}

/// A labels-only server is evaluated by its labels: a decision-based attack (HopSkipJump) gives
/// the same per-sample results remotely and in process, and score-based attacks are refused.
#[test]
fn a_labels_only_server_supports_decision_based_attacks_with_identical_results() {
    tch::set_num_threads(1);
    let local = reference_std();
    let served = serve(reference_std, RemoteOutput::Labels);
    let remote = RemoteModel::load(&served.url, RemoteOptions::default(), &[1, 28, 28]).unwrap();
    assert!(remote.labels_only());
    let data = mnist(4);
    let mut threat = ThreatModel::new(Norm::L2, 3.0).unwrap();
    threat.budget.queries = Some(300);
    let settings = EvalSettings {
        attacks: vec!["hsj".into()],
        batch_size: 4,
        seed: 5,
        keep_examples: true,
        ..Default::default()
    };
    let (local_report, local_examples) =
        evaluate(local.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
    let (remote_report, remote_examples) =
        evaluate(&remote, &data, &threat, &settings, &RunInfo::default()).unwrap();
    // The labels-only model reports confidence 1 for its answers; everything else is equal.
    let strip = |r: &gibbon::eval::EvalReport| {
        r.per_sample
            .iter()
            .map(|s| (s.index, s.robust, s.broken_by.clone(), s.queries, s.norm, s.min_norm))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&remote_report), strip(&local_report));
    for (i, x) in &local_examples {
        assert!(remote_examples[i].equal(x), "example {i} differs");
    }
    assert!(remote_report.total_queries > 0);
    let refused = EvalSettings { attacks: vec!["square".into()], ..Default::default() };
    let err = error_text(evaluate(&remote, &data, &threat, &refused, &RunInfo::default()));
    assert_contains(&err, &["square needs score-only access", "labels only"]);
}
