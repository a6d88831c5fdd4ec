//! Shared by the guard's CLI tests: a running `gibbon guard serve` on loopback, MNIST and
//! notMNIST rows as request bodies, and the review database.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_gibbon");
pub const REVIEWER_TOKEN: &str = "alice-secret-token-5f2a9c";
pub const CLASSIFY_TOKEN: &str = "client-secret-token-81d0e7";

pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

/// A running guard; SIGKILLed on drop (or by [`Guard::kill9`]).
pub struct Guard {
    pub child: Child,
    pub url: String,
    pub stderr: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guard {
    /// `kill -9` (Child::kill sends SIGKILL on Unix) and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Starts `gibbon guard serve` on the shipped SmallCNN, calibrated on the first 1,000 MNIST
/// test images, with its database and token file in `dir`; waits for its URL.
pub fn start_guard(dir: &Path, extra: &[&str], log_level: &str) -> Guard {
    let tokens = dir.join("reviewers.txt");
    std::fs::write(&tokens, format!("alice:{REVIEWER_TOKEN}\nbob:bob-secret-token-77aa01\n"))
        .unwrap();
    let stderr = dir.join(format!(
        "guard-{}.log",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let calib = format!("idx:{}", shared().join("data/mnist").display());
    let mut child = Command::new(BIN)
        .args([
            "guard",
            "serve",
            "--model",
            "builtin:smallcnn-mnist",
            "--calib",
            &calib,
            "--calib-n",
            "1000",
        ])
        .args(["--threads", "1", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.join("guard.sqlite"))
        .arg("--reviewer-tokens")
        .arg(&tokens)
        .args(extra)
        .env("GIBBON_LOG", log_level)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn gibbon guard serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("guard listening on ").unwrap_or_else(|| {
        panic!(
            "no URL line: {line:?}; log: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    Guard { url: url.to_string(), child, stderr }
}

/// `n` images of an IDX file (MNIST layout) starting at `start`, as float rows in [0, 1].
pub fn idx_rows(dataset: &str, start: usize, n: usize) -> Vec<Vec<f64>> {
    let path = shared().join(format!("data/{dataset}/t10k-images-idx3-ubyte.gz"));
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2_reader(&path), &mut raw).unwrap();
    (start..start + n)
        .map(|i| raw[16 + i * 784..16 + (i + 1) * 784].iter().map(|&b| b as f64 / 255.0).collect())
        .collect()
}

fn flate2_reader(path: &Path) -> impl std::io::Read {
    // The test tree has no gzip crate of its own: gunzip through the system tool.
    let out = Command::new("gzip").arg("-dc").arg(path).output().expect("gzip -dc");
    assert!(out.status.success(), "gzip -dc {}", path.display());
    std::io::Cursor::new(out.stdout)
}

/// A classify body with the rows as float arrays.
pub fn classify_body(rows: &[Vec<f64>]) -> String {
    let inputs: Vec<_> =
        rows.iter().map(|r| serde_json::json!({"shape": [1, 28, 28], "data": r})).collect();
    serde_json::json!({ "inputs": inputs }).to_string()
}

/// (id, status, reviewer, reviewed_label) of every item in the database.
pub fn db_rows(db: &Path) -> Vec<(String, String, Option<String>, Option<i64>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, status, reviewer, reviewed_label FROM items").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
    rows.map(Result::unwrap).collect()
}
