//! Datasets: loading image classification data from disk into one CPU tensor.
//!
//! A [`DataSpec`] names where the data lives and in which format (`idx:DIR`, `cifar10:DIR`,
//! `images:DIR`, `npy:IMAGES.npy,LABELS.npy`); [`Dataset::load`] reads one [`Split`] of it. All
//! samples are held in a single CPU tensor `[N, C, H, W]`, either as raw bytes (`Uint8`) or as
//! `Float` values already scaled to `[0, 1]`; [`Dataset::batch`] gathers a float batch in `[0, 1]`
//! on the requested device.
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::error::{GibbonError, Result};

mod cifar;
mod idx;
mod image_dir;
mod npy;

pub use npy::{write_npy_f32, write_npy_i64, write_npy_u8};

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split.
    Train,
    /// The test (evaluation) split.
    Test,
}

impl Split {
    /// The lower-case name of the split: `"train"` or `"test"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = GibbonError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(GibbonError::invalid(
                "split",
                format!("'{other}' is not a split; expected 'train' or 'test'"),
            )),
        }
    }
}

/// Where a dataset lives and in which format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataSpec {
    /// IDX files (MNIST, Fashion-MNIST, KMNIST): `idx:DIR`.
    Idx(PathBuf),
    /// CIFAR-10 binary batches: `cifar10:DIR`.
    Cifar10(PathBuf),
    /// A folder of PNG images, one subfolder per class: `images:DIR`.
    ImageDir(PathBuf),
    /// Two `.npy` files, images and labels: `npy:IMAGES.npy,LABELS.npy`.
    Npy {
        /// The images array, `[N, C, H, W]` or `[N, H, W]`.
        images: PathBuf,
        /// The labels array, `[N]`.
        labels: PathBuf,
    },
}

const SPEC_SCHEMES: &str = "idx:DIR, cifar10:DIR, images:DIR, npy:IMAGES.npy,LABELS.npy";

impl FromStr for DataSpec {
    type Err = GibbonError;

    fn from_str(s: &str) -> Result<Self> {
        let unknown = || {
            GibbonError::invalid(
                "data",
                format!("'{s}' is not a data spec; expected one of {SPEC_SCHEMES}"),
            )
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(unknown)?;
        let require_path = |what: &str, value: &str| -> Result<PathBuf> {
            if value.is_empty() {
                Err(GibbonError::invalid(
                    "data",
                    format!("'{s}' has an empty {what} path; expected one of {SPEC_SCHEMES}"),
                ))
            } else {
                Ok(PathBuf::from(value))
            }
        };
        match scheme {
            "idx" => Ok(DataSpec::Idx(require_path("directory", rest)?)),
            "cifar10" => Ok(DataSpec::Cifar10(require_path("directory", rest)?)),
            "images" => Ok(DataSpec::ImageDir(require_path("directory", rest)?)),
            "npy" => {
                let (images, labels) = rest.split_once(',').ok_or_else(|| {
                    GibbonError::invalid(
                        "data",
                        format!("'{s}' must name two files: npy:IMAGES.npy,LABELS.npy"),
                    )
                })?;
                Ok(DataSpec::Npy {
                    images: require_path("images", images)?,
                    labels: require_path("labels", labels)?,
                })
            }
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DataSpec::Cifar10(dir) => write!(f, "cifar10:{}", dir.display()),
            DataSpec::ImageDir(dir) => write!(f, "images:{}", dir.display()),
            DataSpec::Npy { images, labels } => {
                write!(f, "npy:{},{}", images.display(), labels.display())
            }
        }
    }
}

/// A labelled image dataset held in memory as one CPU tensor `[N, C, H, W]`.
///
/// The tensor is either `Uint8` (raw pixel bytes, scaled by 1/255 when batched) or `Float`
/// (values already in `[0, 1]`).
pub struct Dataset {
    images: Tensor,
    labels: Vec<i64>,
    class_names: Option<Vec<String>>,
    name: String,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.labels.len())
            .field("sample_shape", &self.sample_shape())
            .field("kind", &self.images.kind())
            .field("class_names", &self.class_names)
            .finish()
    }
}

impl Dataset {
    /// Loads `split` of the dataset described by `spec`; with `limit`, only the first `limit`
    /// samples (in the format's natural order) are read.
    ///
    /// The split is ignored for `npy` specs. A `limit` of zero is rejected.
    pub fn load(spec: &DataSpec, split: Split, limit: Option<usize>) -> Result<Dataset> {
        if limit == Some(0) {
            return Err(GibbonError::invalid("limit", "must be at least 1"));
        }
        let loaded = match spec {
            DataSpec::Idx(dir) => idx::load(dir, split, limit)?,
            DataSpec::Cifar10(dir) => cifar::load(dir, split, limit)?,
            DataSpec::ImageDir(dir) => image_dir::load(dir, split, limit)?,
            DataSpec::Npy { images, labels } => npy::load(images, labels, limit)?,
        };
        let name = match spec {
            DataSpec::Npy { .. } => spec.to_string(),
            _ => format!("{spec} ({split})"),
        };
        Ok(Dataset {
            images: loaded.images,
            labels: loaded.labels,
            class_names: loaded.class_names,
            name,
        })
    }

    /// Wraps an existing tensor `[N, C, H, W]` and its labels as a dataset named `name`.
    ///
    /// The tensor must be `Uint8`, or a float kind with every value finite and in `[0, 1]`
    /// (float tensors are stored as `Float`); it is moved to the CPU. Labels must be
    /// non-negative and as many as there are images.
    pub fn from_tensor(images: Tensor, labels: Vec<i64>, name: &str) -> Result<Dataset> {
        let shape = images.size();
        if shape.len() != 4 {
            return Err(GibbonError::invalid(
                "images",
                format!("{name}: expected a 4-D tensor [N, C, H, W], got shape {shape:?}"),
            ));
        }
        if shape[1..].iter().any(|&d| d <= 0) {
            return Err(GibbonError::invalid(
                "images",
                format!("{name}: channels, height and width must be positive, got shape {shape:?}"),
            ));
        }
        let count = usize::try_from(shape[0]).unwrap_or(0);
        if count != labels.len() {
            return Err(GibbonError::Mismatch(format!(
                "{name}: {count} images but {} labels",
                labels.len()
            )));
        }
        if let Some((position, label)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
            return Err(GibbonError::invalid(
                "labels",
                format!("{name}: label {label} at index {position} is negative"),
            ));
        }
        let images = images.f_to_device(Device::Cpu)?;
        let images = match images.kind() {
            Kind::Uint8 => images,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => {
                let images = images.f_to_kind(Kind::Float)?;
                if count > 0 {
                    let min = images.f_min()?.f_double_value(&[])?;
                    let max = images.f_max()?.f_double_value(&[])?;
                    if !(min.is_finite() && max.is_finite() && min >= 0.0 && max <= 1.0) {
                        return Err(GibbonError::invalid(
                            "images",
                            format!(
                                "{name}: float images must be finite and within [0, 1], \
                                 found values from {min} to {max}"
                            ),
                        ));
                    }
                }
                images
            }
            other => {
                return Err(GibbonError::invalid(
                    "images",
                    format!(
                        "{name}: unsupported tensor kind {other:?}; expected Uint8 or a float kind"
                    ),
                ))
            }
        };
        Ok(Dataset {
            images: images.f_contiguous()?,
            labels,
            class_names: None,
            name: name.to_string(),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one sample: `[C, H, W]`.
    pub fn sample_shape(&self) -> Vec<i64> {
        self.images.size().get(1..).map(<[i64]>::to_vec).unwrap_or_default()
    }

    /// The label of every sample, in order.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Class names indexed by label, when the format provides them (image folders, CIFAR-10
    /// with `batches.meta.txt`).
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Number of classes: the number of class names if known, else the largest label plus one.
    pub fn num_classes(&self) -> usize {
        match &self.class_names {
            Some(names) => names.len(),
            None => {
                self.labels.iter().max().map_or(0, |&max| usize::try_from(max).map_or(0, |m| m + 1))
            }
        }
    }

    /// A human-readable name: the spec string and split, e.g. `idx:data/mnist (test)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole image tensor `[N, C, H, W]` as stored (`Uint8` or `Float`, on the CPU).
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// Gathers the samples at `indices` as a float32 tensor `[B, C, H, W]` in `[0, 1]` on
    /// `device`; an index out of range gives an `InvalidArgument` error.
    pub fn try_batch(&self, indices: &[usize], device: Device) -> Result<Tensor> {
        let index = self.index_tensor(indices)?;
        let picked = self.images.f_index_select(0, &index)?.f_to_device(device)?;
        let floats = picked.f_to_kind(Kind::Float)?;
        if self.images.kind() == Kind::Uint8 {
            Ok(floats.f_div_scalar(255.0)?)
        } else {
            Ok(floats)
        }
    }

    /// Gathers the samples at `indices` as a float32 tensor `[B, C, H, W]` in `[0, 1]` on
    /// `device` (`Uint8` data is divided by 255).
    ///
    /// # Panics
    /// If an index is `>= self.len()` (a caller bug); use [`Dataset::try_batch`] to get an error.
    pub fn batch(&self, indices: &[usize], device: Device) -> Tensor {
        match self.try_batch(indices, device) {
            Ok(batch) => batch,
            Err(e) => panic!("Dataset::batch: {e}"),
        }
    }

    /// The labels of the samples at `indices` as an int64 tensor `[B]` on `device`; an index
    /// out of range gives an `InvalidArgument` error.
    pub fn try_labels_of(&self, indices: &[usize], device: Device) -> Result<Tensor> {
        let picked = indices
            .iter()
            .map(|&i| self.labels.get(i).copied().ok_or_else(|| self.out_of_range(i)))
            .collect::<Result<Vec<i64>>>()?;
        Ok(Tensor::f_from_slice(&picked)?.f_to_device(device)?)
    }

    /// The labels of the samples at `indices` as an int64 tensor `[B]` on `device`.
    ///
    /// # Panics
    /// If an index is `>= self.len()` (a caller bug); use [`Dataset::try_labels_of`] to get an
    /// error.
    pub fn labels_of(&self, indices: &[usize], device: Device) -> Tensor {
        match self.try_labels_of(indices, device) {
            Ok(labels) => labels,
            Err(e) => panic!("Dataset::labels_of: {e}"),
        }
    }

    fn index_tensor(&self, indices: &[usize]) -> Result<Tensor> {
        let index = indices
            .iter()
            .map(|&i| {
                if i < self.len() {
                    i64::try_from(i).map_err(|_| self.out_of_range(i))
                } else {
                    Err(self.out_of_range(i))
                }
            })
            .collect::<Result<Vec<i64>>>()?;
        Ok(Tensor::f_from_slice(&index)?)
    }

    fn out_of_range(&self, index: usize) -> GibbonError {
        GibbonError::invalid(
            "index",
            format!(
                "{index} is out of range for dataset {} with {} samples",
                self.name,
                self.len()
            ),
        )
    }
}

/// What a format loader produces; [`Dataset::load`] adds the name.
pub(crate) struct LoadedData {
    pub(crate) images: Tensor,
    pub(crate) labels: Vec<i64>,
    pub(crate) class_names: Option<Vec<String>>,
}

/// Reads up to `len` bytes from `reader` into a new vector, allocating it once.
///
/// Returns fewer bytes only at end of input. `describe_error` turns a read error into the
/// error to report (an I/O error for plain files, a format error for corrupt gzip streams).
pub(crate) fn read_bytes(
    reader: &mut dyn Read,
    len: usize,
    path: &Path,
    describe_error: impl Fn(std::io::Error) -> GibbonError,
) -> Result<Vec<u8>> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| {
        GibbonError::format(
            path,
            format!("the header declares {len} bytes of data, more than can be allocated"),
        )
    })?;
    reader.take(len as u64).read_to_end(&mut buffer).map_err(describe_error)?;
    Ok(buffer)
}

/// Multiplies sizes from a file header, reporting overflow as a format error on `path`.
pub(crate) fn checked_product(path: &Path, factors: &[usize]) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f)).ok_or_else(|| {
        GibbonError::format(path, format!("the header's dimensions {factors:?} are too large"))
    })
}

/// Converts a size to the `i64` libtorch uses for shapes.
pub(crate) fn dim(path: &Path, value: usize) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| GibbonError::format(path, format!("dimension {value} is too large")))
}
