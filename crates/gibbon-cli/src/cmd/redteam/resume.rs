//! What makes `gibbon redteam` resumable: every finished stage is saved as
//! OUT_DIR/stages/NAME.json, and stages that finish piece by piece (the audit's checks,
//! certification's samples) stream each piece to OUT_DIR/stages/NAME.partial.jsonl as it is
//! made. Both carry a fingerprint of the run (gibbon's version, the threat file as parsed
//! without its `[[pass]]` criteria, --n and --attacks): a rerun with the same output folder
//! takes what carries its fingerprint and recomputes the rest; a changed threat file changes
//! the fingerprint, so nothing of the old run is reused (new criteria alone are judged on the
//! stored results). (The evaluations' own sample streams, OUT_DIR/eval-NORM-EPS.partial.jsonl,
//! carry the evaluation's fingerprint the same way.)
use anyhow::{Context, Result};
use gibbon::redteam::RedteamPlan;
use gibbon::report::{ResultDoc, SampleImages};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The stage files of one output folder under one fingerprint.
pub struct Store {
    dir: PathBuf,
    fingerprint: String,
}

/// A finished stage as saved.
#[derive(Serialize, Deserialize)]
struct StageFile {
    fingerprint: String,
    stage: String,
    source: String,
    json: Value,
    images: Option<SampleImages>,
}

/// A stage's stream: the pieces an earlier run made, and the file new ones are appended to.
pub struct Stream {
    /// Pieces of the earlier run (a line cut short by a kill is left out).
    pub earlier: Vec<Value>,
    file: std::fs::File,
}

impl Stream {
    /// Appends one piece and flushes it, so a kill loses at most the piece being made.
    pub fn append(&mut self, piece: &Value) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(piece)?)?;
        self.file.flush()?;
        Ok(())
    }
}

impl Store {
    /// The store of `out_dir` for `plan` run on `n` samples; `fresh` forgets every earlier stage.
    pub fn open(
        out_dir: &Path,
        plan: &RedteamPlan,
        n: Option<usize>,
        fresh: bool,
    ) -> Result<Store> {
        let dir = out_dir.join("stages");
        if fresh && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let what = json!({
            "gibbon_version": gibbon::VERSION,
            "threat": plan.computed_text(),
            "n": n,
            "attacks": plan.attacks,
        });
        let fingerprint = gibbon::model::sha256_hex(what.to_string().as_bytes());
        Ok(Store { dir, fingerprint })
    }

    fn path(&self, stage: &str, ext: &str) -> PathBuf {
        let safe: String = stage
            .chars()
            .map(|c| if c.is_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        self.dir.join(format!("{safe}.{ext}"))
    }

    /// The stage's result when an earlier run with this fingerprint finished it.
    pub fn done(&self, stage: &str) -> Option<ResultDoc> {
        let text = std::fs::read_to_string(self.path(stage, "json")).ok()?;
        let file: StageFile = serde_json::from_str(&text).ok()?;
        (file.fingerprint == self.fingerprint && file.stage == stage).then_some(ResultDoc {
            source: file.source,
            json: file.json,
            images: file.images,
        })
    }

    /// Saves a finished stage (written to a temporary file, then renamed: a kill leaves the
    /// old file or the new one, never half of one) and removes its stream.
    pub fn save(&self, stage: &str, doc: &ResultDoc) -> Result<()> {
        let file = StageFile {
            fingerprint: self.fingerprint.clone(),
            stage: stage.to_string(),
            source: doc.source.clone(),
            json: doc.json.clone(),
            images: doc.images.clone(),
        };
        let path = self.path(stage, "json");
        let tmp = self.path(stage, "json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&file)?)
            .with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("{}", path.display()))?;
        let _ = std::fs::remove_file(self.path(stage, "partial.jsonl"));
        Ok(())
    }

    /// The stage's stream: the earlier pieces when its first line carries this fingerprint,
    /// else a new stream (the old one is overwritten).
    pub fn stream(&self, stage: &str) -> Result<Stream> {
        let path = self.path(stage, "partial.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.lines();
        let header = lines.next().and_then(|l| serde_json::from_str::<Value>(l).ok());
        let ours =
            header.as_ref().and_then(|h| h["fingerprint"].as_str()) == Some(&self.fingerprint);
        let open = |append: bool| {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&path)
                .with_context(|| format!("{}", path.display()))
        };
        if !ours {
            let mut file = open(false)?;
            writeln!(file, "{}", json!({ "fingerprint": self.fingerprint, "stage": stage }))?;
            return Ok(Stream { earlier: Vec::new(), file });
        }
        let earlier: Vec<Value> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
        let mut file = open(true)?;
        if !text.ends_with('\n') {
            // A kill mid-line: end that line, so the next piece starts on its own.
            writeln!(file)?;
        }
        Ok(Stream { earlier, file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> RedteamPlan {
        RedteamPlan::parse("t.toml", text, "t").unwrap()
    }

    const FILE: &str =
        "[model]\nspec = \"builtin:smallcnn-mnist\"\n[data]\nspec = \"idx:data/mnist\"\n\
        [attacker]\nknowledge = \"white-box\"\nattacks = [\"fgsm\"]\n\
        [[perturbation]]\nnorm = \"linf\"\neps = 0.3\n\
        [[pass]]\nmetric = \"clean_accuracy\"\nmin = 0.5\n";

    #[test]
    fn a_changed_threat_file_or_n_invalidates_stages_and_streams_but_new_criteria_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let doc = ResultDoc::new("eval", json!({ "robust_accuracy": 0.5 }));
        let store = Store::open(dir.path(), &plan(FILE), Some(4), false).unwrap();
        store.save("eval-linf-0.3", &doc).unwrap();
        let mut stream = store.stream("audit").unwrap();
        stream.append(&json!({ "check": "graph_ops" })).unwrap();
        let same = Store::open(dir.path(), &plan(FILE), Some(4), false).unwrap();
        assert_eq!(same.done("eval-linf-0.3").unwrap().json, doc.json);
        assert_eq!(same.stream("audit").unwrap().earlier, vec![json!({ "check": "graph_ops" })]);
        let commented = format!("# a comment\n{}", FILE.replace("min = 0.5", "min = 0.9"));
        let criteria = Store::open(dir.path(), &plan(&commented), Some(4), false).unwrap();
        assert!(criteria.done("eval-linf-0.3").is_some(), "criteria and comments only");
        for other in [
            Store::open(dir.path(), &plan(&FILE.replace("eps = 0.3", "eps = 0.2")), Some(4), false),
            Store::open(dir.path(), &plan(FILE), Some(5), false),
        ] {
            let other = other.unwrap();
            assert!(other.done("eval-linf-0.3").is_none());
            assert!(other.stream("audit").unwrap().earlier.is_empty());
        }
        // The stream was started over under the other fingerprint; --fresh forgets stages.
        assert!(Store::open(dir.path(), &plan(FILE), Some(4), false)
            .unwrap()
            .stream("audit")
            .unwrap()
            .earlier
            .is_empty());
        let fresh = Store::open(dir.path(), &plan(FILE), Some(4), true).unwrap();
        assert!(fresh.done("eval-linf-0.3").is_none());
    }
}
