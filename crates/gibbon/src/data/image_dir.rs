//! Folders of PNG images, one subfolder per class.
//!
//! `DIR/<class>/*.png`, or `DIR/<split>/<class>/*.png` when `DIR/train` or `DIR/test` exists.
//! Classes are the sorted subfolder names, numbered from 0; files are read in name order. Gray,
//! gray+alpha, RGB, RGBA and palette images of any bit depth are decoded to 8 bits per channel
//! and alpha is dropped, so every image has 1 or 3 channels.
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use png::{ColorType, Transformations};
use tch::Tensor;

use super::{checked_product, dim, LoadedData, Split};
use crate::error::{GibbonError, Result};

/// A decoded image: `channels` planes of `height` x `width` bytes each (channel-major).
struct DecodedImage {
    width: usize,
    height: usize,
    channels: usize,
}

/// The folder holding the class subfolders for `split`.
fn split_dir(dir: &Path, split: Split) -> Result<PathBuf> {
    let metadata = std::fs::metadata(dir).map_err(|e| GibbonError::io(dir, e))?;
    if !metadata.is_dir() {
        return Err(GibbonError::io(
            dir,
            io::Error::new(io::ErrorKind::NotFound, "not a directory (images: needs a directory)"),
        ));
    }
    let wanted = dir.join(split.as_str());
    if wanted.is_dir() {
        return Ok(wanted);
    }
    let other = match split {
        Split::Train => Split::Test,
        Split::Test => Split::Train,
    };
    if dir.join(other.as_str()).is_dir() {
        return Err(GibbonError::io(
            &wanted,
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("not found, although {} exists", dir.join(other.as_str()).display()),
            ),
        ));
    }
    Ok(dir.to_path_buf())
}

/// Sorted entries of `dir` that satisfy `keep`, skipping hidden names.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| GibbonError::io(dir, e))? {
        let entry = entry.map_err(|e| GibbonError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            return Err(GibbonError::format(&path, "file name is not valid UTF-8"));
        };
        if !name.starts_with('.') && keep(&path) {
            entries.push((name, path));
        }
    }
    entries.sort();
    Ok(entries)
}

fn is_png(path: &Path) -> bool {
    path.is_file()
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Decodes the PNG at `path`, appending its pixels channel-major to `out`.
fn decode_png(path: &Path, out: &mut Vec<u8>) -> Result<DecodedImage> {
    let file = File::open(path).map_err(|e| GibbonError::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let invalid =
        |e: png::DecodingError| GibbonError::format(path, format!("not a valid PNG: {e}"));
    let mut reader = decoder.read_info().map_err(invalid)?;
    let mut buffer = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).map_err(invalid)?;
    let (source_channels, channels) = match info.color_type {
        ColorType::Grayscale => (1, 1),
        ColorType::GrayscaleAlpha => (2, 1),
        ColorType::Rgb => (3, 3),
        ColorType::Rgba => (4, 3),
        ColorType::Indexed => {
            return Err(GibbonError::format(path, "palette image could not be expanded to RGB"))
        }
    };
    let (width, height) = (info.width as usize, info.height as usize);
    let line = info.line_size;
    if line < width * source_channels || buffer.len() < line * height {
        return Err(GibbonError::format(path, "decoded image is smaller than its header says"));
    }
    out.reserve(channels * width * height);
    for channel in 0..channels {
        for row in buffer.chunks_exact(line).take(height) {
            out.extend(
                row[..width * source_channels].iter().skip(channel).step_by(source_channels),
            );
        }
    }
    Ok(DecodedImage { width, height, channels })
}

/// Loads one split of an image folder dataset from `dir`.
pub(crate) fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<LoadedData> {
    let root = split_dir(dir, split)?;
    let classes = sorted_entries(&root, Path::is_dir)?;
    if classes.is_empty() {
        return Err(GibbonError::format(&root, "no class subfolders (expected DIR/<class>/*.png)"));
    }
    let mut files = Vec::new();
    for (label, (_, class_dir)) in classes.iter().enumerate() {
        for (_, file) in sorted_entries(class_dir, is_png)? {
            files.push((file, label as i64));
        }
    }
    if files.is_empty() {
        return Err(GibbonError::format(&root, "no .png files in any class subfolder"));
    }
    if let Some(n) = limit {
        files.truncate(n);
    }

    let mut pixels = Vec::new();
    let mut first: Option<(DecodedImage, &Path)> = None;
    for (path, _) in &files {
        let image = decode_png(path, &mut pixels)?;
        match &first {
            None => {
                let per_image =
                    checked_product(path, &[image.channels, image.height, image.width])?;
                let total = checked_product(path, &[per_image, files.len()])?;
                pixels.reserve(total.saturating_sub(pixels.len()));
                first = Some((image, path));
            }
            Some((expected, first_path)) => {
                if (image.width, image.height, image.channels)
                    != (expected.width, expected.height, expected.channels)
                {
                    return Err(GibbonError::format(
                        path,
                        format!(
                            "image is {}x{} with {} channel(s), but {} is {}x{} with {} \
                             channel(s); all images must match",
                            image.width,
                            image.height,
                            image.channels,
                            first_path.display(),
                            expected.width,
                            expected.height,
                            expected.channels
                        ),
                    ));
                }
            }
        }
    }
    let Some((shape, _)) = first else {
        return Err(GibbonError::format(&root, "no .png files in any class subfolder"));
    };
    let images = Tensor::f_from_slice(&pixels)?.f_view([
        dim(&root, files.len())?,
        dim(&root, shape.channels)?,
        dim(&root, shape.height)?,
        dim(&root, shape.width)?,
    ])?;
    Ok(LoadedData {
        images,
        labels: files.iter().map(|(_, label)| *label).collect(),
        class_names: Some(classes.into_iter().map(|(name, _)| name).collect()),
    })
}
