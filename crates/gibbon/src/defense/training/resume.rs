//! Checkpoints a killed training run can resume from. After every epoch the loop writes
//! `epoch-N.safetensors` (the weights) and `epoch-N.json` (the configuration that produced them
//! and every epoch's statistics so far). `resume` picks the highest N with both files, refuses a
//! checkpoint written under another configuration, loads the weights and hands back the
//! statistics, so the loop goes on at epoch N + 1 with the same shuffling, random starts,
//! ε ramp and learning-rate schedule (all keyed by the epoch).
//!
//! What is not restored: the optimizer's internal state (Adam's moment estimates, SGD's
//! momentum buffer), which `tch` does not expose. The resumed run starts them from zero, as at
//! the first step of training; the JSON says which epoch the run resumed from.
use super::{EpochStats, TrainConfig};
use crate::error::{GibbonError, Result};
use crate::model::{weights, BuiltinModel};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `epoch-N.json` beside each checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointRecord {
    /// The configuration, without the fields that do not change what is trained
    /// (checkpoint folder, progress bar, resume).
    config: serde_json::Value,
    /// Every epoch's statistics up to this checkpoint.
    epochs: Vec<EpochStats>,
}

/// The configuration fields that identify a run.
fn identity(cfg: &TrainConfig) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(cfg)
        .map_err(|e| GibbonError::Internal(format!("training configuration: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        for volatile in ["checkpoint_dir", "progress", "resume"] {
            map.remove(volatile);
        }
    }
    Ok(value)
}

fn weights_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch}.safetensors"))
}

fn record_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch}.json"))
}

/// Writes the checkpoint of `stats.last()`'s epoch into `dir`: the record last, so that a
/// record always names weights that are complete.
pub(super) fn save(
    model: &BuiltinModel,
    cfg: &TrainConfig,
    dir: &Path,
    stats: &[EpochStats],
) -> Result<()> {
    let epoch = stats.last().map_or(0, |s| s.epoch);
    std::fs::create_dir_all(dir).map_err(|e| GibbonError::io(dir, e))?;
    model.save(&weights_path(dir, epoch))?;
    let record = CheckpointRecord { config: identity(cfg)?, epochs: stats.to_vec() };
    let text = serde_json::to_string_pretty(&record)
        .map_err(|e| GibbonError::Internal(format!("checkpoint record: {e}")))?;
    let path = record_path(dir, epoch);
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(|e| GibbonError::io(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| GibbonError::io(&path, e))
}

/// The highest epoch in `dir` with both a record and weights.
fn latest(dir: &Path) -> Result<Option<usize>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GibbonError::io(dir, e)),
    };
    let mut best = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let epoch = name
            .strip_prefix("epoch-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(epoch) = epoch.filter(|&e| weights_path(dir, e).is_file()) {
            best = best.max(Some(epoch));
        }
    }
    Ok(best)
}

/// Loads the latest checkpoint of `cfg.checkpoint_dir` into `model` and returns the statistics
/// of the epochs it holds (empty when there is no checkpoint yet: the run starts afresh).
pub(super) fn resume(model: &mut BuiltinModel, cfg: &TrainConfig) -> Result<Vec<EpochStats>> {
    let dir = cfg.checkpoint_dir.as_deref().ok_or_else(|| {
        GibbonError::invalid("resume", "needs a checkpoint folder to resume from")
    })?;
    let Some(epoch) = latest(dir)? else {
        tracing::info!("no checkpoint in {} yet: training from the start", dir.display());
        return Ok(Vec::new());
    };
    let path = record_path(dir, epoch);
    let text = std::fs::read_to_string(&path).map_err(|e| GibbonError::io(&path, e))?;
    let record: CheckpointRecord = serde_json::from_str(&text).map_err(|e| {
        GibbonError::invalid(
            "resume",
            format!("{} is not a checkpoint record: {e}", path.display()),
        )
    })?;
    let wanted = identity(cfg)?;
    if record.config != wanted {
        return Err(GibbonError::invalid(
            "resume",
            format!(
                "{} was written by another training configuration ({}); this run's is {}",
                path.display(),
                record.config,
                wanted
            ),
        ));
    }
    if record.epochs.len() != epoch || epoch > cfg.epochs {
        return Err(GibbonError::invalid(
            "resume",
            format!("{} holds {} epochs for epoch {epoch}", path.display(), record.epochs.len()),
        ));
    }
    let weights = weights_path(dir, epoch);
    let bytes = std::fs::read(&weights).map_err(|e| GibbonError::io(&weights, e))?;
    weights::load_into(model.var_store_mut(), &bytes, &weights.display().to_string())?;
    tracing::info!("resuming after epoch {epoch} from {}", weights.display());
    Ok(record.epochs)
}
