//! CIFAR-10 binary batches.
//!
//! The directory (or its `cifar-10-batches-bin/` subfolder) holds `data_batch_1.bin` to
//! `data_batch_5.bin` (train) and `test_batch.bin` (test). Each record is one label byte followed
//! by 3072 pixel bytes: the red, green and blue planes of a 32x32 image.
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::{dim, read_bytes, LoadedData, Split};
use crate::error::{GibbonError, Result};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + PIXELS;
const CLASSES: usize = 10;
const SUBFOLDER: &str = "cifar-10-batches-bin";
const META_FILE: &str = "batches.meta.txt";

fn batch_files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// The folder holding the batches: `dir` itself, or `dir/cifar-10-batches-bin` if `dir` holds
/// no batch files but that subfolder exists.
fn batch_dir(dir: &Path) -> Result<PathBuf> {
    let metadata = std::fs::metadata(dir).map_err(|e| GibbonError::io(dir, e))?;
    if !metadata.is_dir() {
        return Err(GibbonError::io(
            dir,
            io::Error::new(io::ErrorKind::NotFound, "not a directory (cifar10: needs a directory)"),
        ));
    }
    let has_batches = ["data_batch_1.bin", "test_batch.bin"].iter().any(|f| dir.join(f).is_file());
    let sub = dir.join(SUBFOLDER);
    if !has_batches && sub.is_dir() {
        Ok(sub)
    } else {
        Ok(dir.to_path_buf())
    }
}

/// Reads `batches.meta.txt` if present: ten class names, one per line.
fn read_class_names(folder: &Path) -> Result<Option<Vec<String>>> {
    let path = folder.join(META_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| GibbonError::io(&path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| GibbonError::format(&path, "class names are not valid UTF-8"))?;
    let names: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != CLASSES {
        return Err(GibbonError::format(
            &path,
            format!("expected {CLASSES} class names, one per line, found {}", names.len()),
        ));
    }
    Ok(Some(names))
}

/// Loads one split of CIFAR-10 from `dir`.
pub(crate) fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<LoadedData> {
    let folder = batch_dir(dir)?;

    // First pass: every file exists and holds whole records; count what will be read.
    let mut plan = Vec::new();
    let mut remaining = limit.unwrap_or(usize::MAX);
    for name in batch_files(split) {
        let path = folder.join(&name);
        let metadata = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                let also = if folder == dir {
                    format!(" (also looked in {})", dir.join(SUBFOLDER).display())
                } else {
                    String::new()
                };
                GibbonError::io(&path, io::Error::new(e.kind(), format!("not found{also}")))
            } else {
                GibbonError::io(&path, e)
            }
        })?;
        let size = metadata.len();
        if size % RECORD as u64 != 0 {
            return Err(GibbonError::format(
                &path,
                format!(
                    "size {size} bytes is not a multiple of the {RECORD}-byte CIFAR-10 record \
                     (1 label byte + {PIXELS} pixel bytes)"
                ),
            ));
        }
        let records = usize::try_from(size / RECORD as u64)
            .map_err(|_| GibbonError::format(&path, "file too large"))?;
        let take = records.min(remaining);
        remaining -= take;
        plan.push((path, take));
    }

    let total: usize = plan.iter().map(|(_, n)| n).sum();
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(total * PIXELS).map_err(|_| {
        GibbonError::format(&folder, format!("{total} CIFAR-10 images do not fit in memory"))
    })?;
    let mut labels = Vec::with_capacity(total);
    for (path, take) in &plan {
        if *take == 0 {
            continue;
        }
        let mut file = File::open(path).map_err(|e| GibbonError::io(path, e))?;
        let bytes = read_bytes(&mut file as &mut dyn Read, take * RECORD, path, |e| {
            GibbonError::io(path, e)
        })?;
        if bytes.len() < take * RECORD {
            return Err(GibbonError::format(path, "file shrank while being read"));
        }
        for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0];
            if usize::from(label) >= CLASSES {
                return Err(GibbonError::format(
                    path,
                    format!("record {index} has label {label}; CIFAR-10 labels are 0 to 9"),
                ));
            }
            labels.push(i64::from(label));
            pixels.extend_from_slice(&record[1..]);
        }
    }

    let side = dim(&folder, SIDE)?;
    let images = Tensor::f_from_slice(&pixels)?.f_view([dim(&folder, total)?, 3, side, side])?;
    Ok(LoadedData { images, labels, class_names: read_class_names(&folder)? })
}
