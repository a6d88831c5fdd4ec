//! The saved detector: what `gibbon detect fit` writes and `detect eval` / `detect attack`
//! read (JSON): kind, parameters, the calibrated threshold with its target false-positive rate,
//! n and bound, the model's sha256 (a detector file for another model is refused) and the
//! slices of data it was fitted and calibrated on, with their hashes.
use super::calibrate::Calibration;
use super::{entry, Detector};
use crate::error::{GibbonError, Result};
use crate::model::{sha256_hex, ModelInfo};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Where a slice of data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSlice {
    /// The data spec (`idx:DIR`, ...).
    pub spec: String,
    /// `test` or `train`.
    pub split: String,
    /// First sample (inclusive).
    pub start: usize,
    /// Last sample (exclusive).
    pub end: usize,
    /// sha256 of the slice's images as float32 little-endian values in [0, 1].
    pub sha256: String,
}

/// A fitted, calibrated detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorFile {
    /// gibbon's version when it was written.
    pub gibbon_version: String,
    /// The registry name.
    pub kind: String,
    /// The detector's parameters ([`Detector::params`]).
    pub params: serde_json::Value,
    /// The threshold and its false-positive rate.
    pub calibration: Calibration,
    /// The model the detector belongs to.
    pub model: ModelInfo,
    /// The data the detector was fitted on (Mahalanobis), if any.
    pub fit_data: Option<DataSlice>,
    /// The clean data the threshold was calibrated on.
    pub calibration_data: DataSlice,
}

impl DetectorFile {
    /// Reads a detector file; a missing or malformed file is a user error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GibbonError::io(path, e))?;
        let file: DetectorFile = serde_json::from_str(&text)
            .map_err(|e| GibbonError::format(path, format!("not a gibbon detector file: {e}")))?;
        entry(&file.kind).map_err(|e| GibbonError::format(path, e.to_string()))?;
        Ok(file)
    }

    /// Writes the file as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| GibbonError::Internal(format!("detector file: {e}")))?;
        std::fs::write(path, text).map_err(|e| GibbonError::io(path, e))
    }

    /// An error unless the detector was fitted for `model` (same weights hash).
    pub fn check_model(&self, model: &ModelInfo, path: &Path) -> Result<()> {
        if self.model.sha256 != model.sha256 {
            return Err(GibbonError::Mismatch(format!(
                "{}: this detector was fitted for model {} (sha256 {}), not for {} (sha256 {})",
                path.display(),
                self.model.path,
                short(&self.model.sha256),
                model.path,
                short(&model.sha256)
            )));
        }
        Ok(())
    }

    /// The detector the file describes.
    pub fn detector(&self) -> Result<Box<dyn Detector>> {
        (entry(&self.kind)?.load)(&self.params)
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// sha256 of a batch of images as float32 little-endian values.
pub fn images_sha256(x: &Tensor) -> Result<String> {
    let flat = x.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
    let values = Vec::<f32>::try_from(&flat)?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(sha256_hex(&bytes))
}
