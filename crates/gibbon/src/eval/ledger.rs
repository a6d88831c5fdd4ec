//! The ledger of an evaluation: every sample's record, final or still pending, the samples
//! still under attack, and the JSON-lines stream that receives each final record as it is
//! settled, so that an interrupted run resumes where it stopped (the stream's header holds a
//! fingerprint of the run; a stream of another run is started over).
use super::{EvalSettings, RunInfo, SampleRecord};
use crate::attack::Attack;
use crate::error::{GibbonError, Result};
use crate::model::ModelInfo;
use crate::threat::ThreatModel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Final and pending records, survivors and the stream (see the module docs).
pub(super) struct Ledger {
    finals: BTreeMap<usize, SampleRecord>,
    pending: HashMap<usize, SampleRecord>,
    survivors: BTreeSet<usize>,
    stream: Option<StreamFile>,
    /// Samples taken from the stream of an earlier run.
    pub resumed: usize,
}

impl Ledger {
    /// The ledger of `n` samples: resumed from `stream` when it was written by the run with
    /// `fingerprint`, else empty (and the stream started).
    pub fn open(stream: Option<&Path>, fingerprint: &str, n: usize) -> Result<Ledger> {
        let mut finals = BTreeMap::new();
        let stream = match stream {
            Some(path) => {
                let (done, writer) = StreamFile::open(path, fingerprint)?;
                finals.extend(done.into_iter().filter(|r| r.index < n).map(|r| (r.index, r)));
                Some(writer)
            }
            None => None,
        };
        let survivors = (0..n).filter(|i| !finals.contains_key(i)).collect();
        let resumed = finals.len();
        Ok(Ledger { finals, pending: HashMap::new(), survivors, stream, resumed })
    }

    /// Samples still under attack, in index order.
    pub fn survivors(&self) -> Vec<usize> {
        self.survivors.iter().copied().collect()
    }

    /// Makes `r` its sample's final record: streamed, and the sample leaves the survivors.
    pub fn settle(&mut self, r: SampleRecord) -> Result<()> {
        if let Some(s) = self.stream.as_mut() {
            s.append(&r)?;
        }
        self.survivors.remove(&r.index);
        self.finals.insert(r.index, r);
        Ok(())
    }

    /// Keeps `r` as its sample's record until a later stage settles it.
    pub fn hold(&mut self, r: SampleRecord) {
        self.pending.insert(r.index, r);
    }

    /// The held record of sample `i`, if any (removed from the ledger).
    pub fn take_held(&mut self, i: usize) -> Option<SampleRecord> {
        self.pending.remove(&i)
    }

    /// Every sample's record by index; survivors of an empty plan get their held record or
    /// `base`. An error if a sample has none.
    pub fn finish(
        mut self,
        n: usize,
        base: impl Fn(usize) -> SampleRecord,
    ) -> Result<Vec<SampleRecord>> {
        for i in std::mem::take(&mut self.survivors) {
            let held = self.pending.remove(&i);
            self.finals.entry(i).or_insert_with(|| held.unwrap_or_else(|| base(i)));
        }
        if self.finals.len() != n {
            return Err(GibbonError::Internal(format!(
                "{} of {n} samples have a verdict",
                self.finals.len()
            )));
        }
        Ok(self.finals.into_values().collect())
    }
}

/// The fingerprint of a run: what must match for its stream to be resumed.
pub(super) fn fingerprint(
    model: &ModelInfo,
    run: &RunInfo,
    n: usize,
    threat: &ThreatModel,
    settings: &EvalSettings,
    attacks: &[Box<dyn Attack>],
) -> Result<String> {
    let mut value = serde_json::json!({
        "gibbon_version": crate::VERSION,
        "model_sha256": model.sha256,
        "model": model.path,
        "data": run.data_spec,
        "split": run.split,
        "n": n,
        "threat": threat,
        "seed": settings.seed,
        "attacks": attacks.iter().map(|a| serde_json::json!({"name": a.name(), "params": a.params()})).collect::<Vec<_>>(),
    });
    if settings.precision.search != crate::model::Precision::Fp32 {
        value["search_precision"] = serde_json::json!(settings.precision.search);
    }
    let text = serde_json::to_string(&value).map_err(|e| GibbonError::Internal(e.to_string()))?;
    Ok(crate::model::sha256_hex(text.as_bytes()))
}

/// The JSON-lines stream: a header line with the run's fingerprint, then one record per line.
struct StreamFile {
    file: std::fs::File,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StreamHeader {
    gibbon_stream: String,
}

impl StreamFile {
    fn open(path: &Path, fingerprint: &str) -> Result<(Vec<SampleRecord>, StreamFile)> {
        let mut done = Vec::new();
        let mut reuse = false;
        if let Ok(f) = std::fs::File::open(path) {
            let mut lines = std::io::BufReader::new(f).lines();
            if let Some(Ok(first)) = lines.next() {
                if serde_json::from_str::<StreamHeader>(&first)
                    .map(|h| h.gibbon_stream == fingerprint)
                    .unwrap_or(false)
                {
                    reuse = true;
                    for line in lines.map_while(|l| l.ok()) {
                        // A torn last line (interrupted write) is dropped and recomputed.
                        if let Ok(r) = serde_json::from_str::<SampleRecord>(&line) {
                            done.push(r);
                        }
                    }
                } else {
                    tracing::warn!("{}: written by a different run; starting over", path.display());
                }
            }
        }
        if reuse {
            // Rewrite cleanly (drops a torn line), then append.
            let mut file = std::fs::File::create(path).map_err(|e| GibbonError::io(path, e))?;
            let mut text =
                serde_json::to_string(&StreamHeader { gibbon_stream: fingerprint.into() })
                    .unwrap_or_default();
            text.push('\n');
            for r in &done {
                text.push_str(&serde_json::to_string(r).unwrap_or_default());
                text.push('\n');
            }
            file.write_all(text.as_bytes()).map_err(|e| GibbonError::io(path, e))?;
            return Ok((done, StreamFile { file, path: path.to_path_buf() }));
        }
        let mut file = std::fs::File::create(path).map_err(|e| GibbonError::io(path, e))?;
        let header = serde_json::to_string(&StreamHeader { gibbon_stream: fingerprint.into() })
            .map_err(|e| GibbonError::Internal(e.to_string()))?;
        writeln!(file, "{header}").map_err(|e| GibbonError::io(path, e))?;
        Ok((done, StreamFile { file, path: path.to_path_buf() }))
    }

    fn append(&mut self, r: &SampleRecord) -> Result<()> {
        let line = serde_json::to_string(r).map_err(|e| GibbonError::Internal(e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|e| GibbonError::io(&self.path, e))
    }
}
