//! IDX files as used by MNIST, Fashion-MNIST and KMNIST, optionally gzip-compressed.
//!
//! A directory holds `{train,t10k}-images-idx3-ubyte` and `{train,t10k}-labels-idx1-ubyte`,
//! each either plain or with a `.gz` suffix. Compression is detected by the gzip magic bytes.
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use tch::Tensor;

use super::{checked_product, dim, read_bytes, LoadedData, Split};
use crate::error::{GibbonError, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The file name stem for one split and kind, e.g. `t10k-images-idx3-ubyte`.
fn file_stem(split: Split, kind: &str) -> String {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    format!("{prefix}-{kind}")
}

/// An opened IDX file, decompressing transparently.
struct IdxFile {
    path: PathBuf,
    gzip: bool,
    reader: Box<dyn Read>,
}

impl IdxFile {
    /// Opens `DIR/STEM` or `DIR/STEM.gz`, whichever exists (the plain file first).
    fn open(dir: &Path, stem: &str) -> Result<IdxFile> {
        let metadata = std::fs::metadata(dir).map_err(|e| GibbonError::io(dir, e))?;
        if !metadata.is_dir() {
            return Err(GibbonError::io(
                dir,
                io::Error::new(io::ErrorKind::NotFound, "not a directory (idx: needs a directory)"),
            ));
        }
        let plain = dir.join(stem);
        let gzipped = dir.join(format!("{stem}.gz"));
        let path = [&plain, &gzipped].into_iter().find(|p| p.is_file()).ok_or_else(|| {
            GibbonError::io(
                &plain,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("not found (looked for {stem} and {stem}.gz in {})", dir.display()),
                ),
            )
        })?;
        let file = File::open(path).map_err(|e| GibbonError::io(path, e))?;
        let mut buffered = BufReader::with_capacity(1 << 16, file);
        let head = buffered.fill_buf().map_err(|e| GibbonError::io(path, e))?;
        let gzip = head.starts_with(&GZIP_MAGIC);
        let reader: Box<dyn Read> =
            if gzip { Box::new(MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };
        Ok(IdxFile { path: path.clone(), gzip, reader })
    }

    /// Reads up to `len` bytes; fewer only at end of input.
    fn read_up_to(&mut self, len: usize) -> Result<Vec<u8>> {
        let IdxFile { path, gzip, reader } = self;
        read_bytes(reader.as_mut(), len, path, |e| read_error(path, *gzip, e))
    }

    /// Reads the header: the magic number, checked against `expected_magic`, then `dims`
    /// big-endian 32-bit sizes.
    fn read_header(&mut self, expected_magic: u32, dims: usize, what: &str) -> Result<Vec<usize>> {
        let header_len = 4 * (1 + dims);
        let header = self.read_up_to(header_len)?;
        if let Some(magic) = header.get(..4) {
            let magic = u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]);
            if magic != expected_magic {
                return Err(GibbonError::format(
                    &self.path,
                    format!(
                        "wrong magic number {magic:#010x}, expected {expected_magic:#010x} \
                         (IDX {what}: unsigned bytes, {dims} dimension{})",
                        if dims == 1 { "" } else { "s" }
                    ),
                ));
            }
        }
        if header.len() < header_len {
            return Err(GibbonError::format(
                &self.path,
                format!(
                    "file too short: an IDX {what} header needs {header_len} bytes, found {}",
                    header.len()
                ),
            ));
        }
        Ok(header[4..]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect())
    }

    /// Reads exactly `len` data bytes; `describe` says what they are for the error message.
    fn read_data(&mut self, len: usize, describe: &str) -> Result<Vec<u8>> {
        let data = self.read_up_to(len)?;
        if data.len() < len {
            return Err(GibbonError::format(
                &self.path,
                format!(
                    "data shorter than the header says: {describe} need {len} bytes, \
                     only {} follow the header",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Checks that nothing follows the data (which also verifies a gzip stream's checksum).
    fn expect_end(&mut self, describe: &str) -> Result<()> {
        let mut extra = [0u8; 1];
        let n = loop {
            match self.reader.read(&mut extra) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&self.path, self.gzip, e)),
            }
        };
        if n > 0 {
            return Err(GibbonError::format(
                &self.path,
                format!("extra data after the {describe} the header declares"),
            ));
        }
        Ok(())
    }
}

/// Describes a failed read: a corrupt stream for gzip files, an I/O error otherwise.
fn read_error(path: &Path, gzip: bool, e: io::Error) -> GibbonError {
    if gzip {
        GibbonError::format(path, format!("corrupt or truncated gzip data: {e}"))
    } else {
        GibbonError::io(path, e)
    }
}

/// Loads one split of an IDX dataset from `dir`.
pub(crate) fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<LoadedData> {
    let mut images = IdxFile::open(dir, &file_stem(split, "images-idx3-ubyte"))?;
    let mut labels = IdxFile::open(dir, &file_stem(split, "labels-idx1-ubyte"))?;

    let image_dims = images.read_header(IMAGES_MAGIC, 3, "images")?;
    let (image_count, rows, cols) = (image_dims[0], image_dims[1], image_dims[2]);
    let label_count = labels.read_header(LABELS_MAGIC, 1, "labels")?[0];
    if image_count != label_count {
        return Err(GibbonError::format(
            &labels.path,
            format!(
                "count mismatch: {label_count} labels but {} holds {image_count} images",
                images.path.display()
            ),
        ));
    }
    if image_count > 0 && (rows == 0 || cols == 0) {
        return Err(GibbonError::format(
            &images.path,
            format!("images of {rows}x{cols} pixels are empty"),
        ));
    }
    let count = limit.map_or(image_count, |n| n.min(image_count));
    let whole = count == image_count;

    let image_bytes = checked_product(&images.path, &[count, rows, cols])?;
    let described = format!("{count} images of {rows}x{cols} pixels");
    let pixels = images.read_data(image_bytes, &described)?;
    if whole {
        images.expect_end(&described)?;
    }
    let label_bytes = labels.read_data(count, &format!("{count} labels"))?;
    if whole {
        labels.expect_end(&format!("{count} labels"))?;
    }

    let shape = [dim(&images.path, count)?, 1, dim(&images.path, rows)?, dim(&images.path, cols)?];
    // The one copy after decompression: the byte vector into the tensor's storage.
    let tensor = Tensor::f_from_slice(&pixels)?.f_view(shape)?;
    drop(pixels);
    Ok(LoadedData {
        images: tensor,
        labels: label_bytes.iter().map(|&b| i64::from(b)).collect(),
        class_names: None,
    })
}
