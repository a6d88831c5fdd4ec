//! Small images in CHW layout and their encoding as 8-bit PNG.
//!
//! Pixel values are `f32` nominally in `[0, 1]`. Encoding clamps every value into that range,
//! maps NaN to 0, and rounds `v · 255` to the nearest integer, so what a report shows is exactly
//! what the model saw, up to 8-bit quantisation.
use std::io::Cursor;
use std::path::Path;

use crate::error::{GibbonError, Result};

/// The most values (`channels · height · width`) an image built here may hold: 64 Mi, i.e.
/// 256 MiB of `f32`. Keeps a bad upscaling factor from exhausting memory.
pub const MAX_IMAGE_VALUES: usize = 64 * 1024 * 1024;

/// An image in CHW layout (channel-major, then rows, then columns) with `f32` values nominally
/// in `[0, 1]`.
///
/// `channels` is 1 (grayscale) or 3 (RGB). The fields are public for convenience; functions
/// that take an `ImageData` check it with [`ImageData::validate`] and return an error rather
/// than panic when the fields disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageData {
    /// Number of channels: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `channels · height · width` values in CHW order.
    pub pixels: Vec<f32>,
}

impl ImageData {
    /// Builds an image, checking that `channels` is 1 or 3, that both sides are at least one
    /// pixel, and that `pixels` holds exactly `channels · height · width` values.
    pub fn new(channels: usize, height: usize, width: usize, pixels: Vec<f32>) -> Result<Self> {
        let image = ImageData { channels, height, width, pixels };
        image.validate()?;
        Ok(image)
    }

    /// Checks the invariants [`ImageData::new`] enforces; useful when the public fields were
    /// set directly.
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(GibbonError::invalid(
                "image channels",
                format!("expected 1 (grayscale) or 3 (RGB), got {}", self.channels),
            ));
        }
        if self.height == 0 || self.width == 0 {
            return Err(GibbonError::invalid(
                "image size",
                format!("{}x{} has no pixels", self.height, self.width),
            ));
        }
        let expected = checked_size(self.channels, self.height, self.width)?;
        if self.pixels.len() != expected {
            return Err(GibbonError::invalid(
                "image pixels",
                format!(
                    "a {}x{}x{} (CxHxW) image needs {} values, got {}",
                    self.channels,
                    self.height,
                    self.width,
                    expected,
                    self.pixels.len()
                ),
            ));
        }
        Ok(())
    }

    /// Enlarges the image by an integer `factor` in both directions, nearest neighbour, so that
    /// every source pixel becomes a crisp `factor × factor` block (a 28×28 digit at factor 4
    /// becomes 112×112). Fails if `factor` is 0 or the result would exceed
    /// [`MAX_IMAGE_VALUES`].
    pub fn upscale(&self, factor: usize) -> Result<ImageData> {
        self.validate()?;
        if factor == 0 {
            return Err(GibbonError::invalid("upscale factor", "must be at least 1"));
        }
        if factor == 1 {
            return Ok(self.clone());
        }
        let too_large = || {
            GibbonError::invalid(
                "upscale factor",
                format!(
                    "{}x{} enlarged {factor} times exceeds {MAX_IMAGE_VALUES} values",
                    self.height, self.width
                ),
            )
        };
        let height = self.height.checked_mul(factor).ok_or_else(too_large)?;
        let width = self.width.checked_mul(factor).ok_or_else(too_large)?;
        let total = checked_size(self.channels, height, width).map_err(|_| too_large())?;
        if total > MAX_IMAGE_VALUES {
            return Err(too_large());
        }
        let mut pixels = Vec::with_capacity(total);
        let plane = self.height * self.width;
        for channel in self.pixels.chunks_exact(plane) {
            for row in channel.chunks_exact(self.width) {
                let mut wide = Vec::with_capacity(width);
                for &value in row {
                    wide.extend(std::iter::repeat_n(value, factor));
                }
                for _ in 0..factor {
                    pixels.extend_from_slice(&wide);
                }
            }
        }
        ImageData::new(self.channels, height, width, pixels)
    }

    /// Whether `other` has the same channel count, height and width.
    pub fn same_shape(&self, other: &ImageData) -> bool {
        self.channels == other.channels && self.height == other.height && self.width == other.width
    }
}

/// `channels · height · width`, or an error on overflow.
fn checked_size(channels: usize, height: usize, width: usize) -> Result<usize> {
    channels.checked_mul(height).and_then(|n| n.checked_mul(width)).ok_or_else(|| {
        GibbonError::invalid(
            "image size",
            format!("{channels}x{height}x{width} (CxHxW) overflows the address space"),
        )
    })
}

/// Maps a nominal `[0, 1]` value to a byte: NaN → 0, clamped, then `round(v · 255)`.
fn to_byte(value: f32) -> u8 {
    if value.is_nan() {
        return 0;
    }
    // After clamping the product lies in [0, 255], so the cast neither saturates nor wraps.
    (value.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Encodes the image as an 8-bit PNG: grayscale for one channel, RGB for three. Values are
/// clamped to `[0, 1]` (NaN becomes 0) and stored as `round(v · 255)`.
pub fn encode_png(img: &ImageData) -> Result<Vec<u8>> {
    img.validate()?;
    let too_wide = || {
        GibbonError::invalid(
            "image size",
            format!("{}x{} is too large for PNG", img.height, img.width),
        )
    };
    let width = u32::try_from(img.width).map_err(|_| too_wide())?;
    let height = u32::try_from(img.height).map_err(|_| too_wide())?;
    let plane = img.height * img.width;
    let (color, data) = if img.channels == 1 {
        (png::ColorType::Grayscale, img.pixels.iter().map(|&v| to_byte(v)).collect::<Vec<u8>>())
    } else {
        // CHW → interleaved HWC.
        let (red, rest) = img.pixels.split_at(plane);
        let (green, blue) = rest.split_at(plane);
        let mut data = Vec::with_capacity(3 * plane);
        for ((&r, &g), &b) in red.iter().zip(green).zip(blue) {
            data.extend_from_slice(&[to_byte(r), to_byte(g), to_byte(b)]);
        }
        (png::ColorType::Rgb, data)
    };
    let encoding_failed =
        |e: png::EncodingError| GibbonError::Internal(format!("PNG encoding: {e}"));
    let mut out = Cursor::new(Vec::new());
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(encoding_failed)?;
        writer.write_image_data(&data).map_err(encoding_failed)?;
        writer.finish().map_err(encoding_failed)?;
    }
    Ok(out.into_inner())
}

/// Encodes the image with [`encode_png`] and writes it to `path`.
pub fn write_png(path: impl AsRef<Path>, img: &ImageData) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_png(img)?;
    std::fs::write(path, bytes).map_err(|e| GibbonError::io(path, e))
}

/// Checks that `original` and `adversarial` are valid images of the same shape.
fn check_pair(original: &ImageData, adversarial: &ImageData) -> Result<()> {
    original.validate()?;
    adversarial.validate()?;
    if !original.same_shape(adversarial) {
        return Err(GibbonError::invalid(
            "adversarial image",
            format!(
                "shape {}x{}x{} differs from the original's {}x{}x{}",
                adversarial.channels,
                adversarial.height,
                adversarial.width,
                original.channels,
                original.height,
                original.width
            ),
        ));
    }
    Ok(())
}

/// Visualises the perturbation `δ = adversarial − original` as `0.5 + amplify · δ`, clamped to
/// `[0, 1]`: mid-grey where a pixel is unchanged, lighter where the attack raised it, darker
/// where it lowered it. A non-finite result (NaN in either input) shows as grey.
///
/// Fails if the images are invalid or differ in shape, or if `amplify` is not a positive
/// finite number.
pub fn perturbation_image(
    original: &ImageData,
    adversarial: &ImageData,
    amplify: f32,
) -> Result<ImageData> {
    check_pair(original, adversarial)?;
    if !(amplify.is_finite() && amplify > 0.0) {
        return Err(GibbonError::invalid(
            "amplification",
            format!("must be a positive finite number, got {amplify}"),
        ));
    }
    let pixels = original
        .pixels
        .iter()
        .zip(&adversarial.pixels)
        .map(|(&o, &a)| {
            let v = 0.5 + amplify * (a - o);
            if v.is_nan() {
                0.5
            } else {
                v.clamp(0.0, 1.0)
            }
        })
        .collect();
    ImageData::new(original.channels, original.height, original.width, pixels)
}

/// The amplification for [`perturbation_image`] that maps the largest `|δ|` to ±0.5, i.e. to
/// pure white or black: `0.5 / max |adversarial − original|`.
///
/// Non-finite differences are ignored. Returns 1.0 when the perturbation is all zero, when
/// the images differ in length, or when the quotient would not be finite.
pub fn auto_amplification(original: &ImageData, adversarial: &ImageData) -> f32 {
    if original.pixels.len() != adversarial.pixels.len() {
        return 1.0;
    }
    let max = original
        .pixels
        .iter()
        .zip(&adversarial.pixels)
        .map(|(&o, &a)| (a - o).abs())
        .filter(|d| d.is_finite())
        .fold(0.0_f32, f32::max);
    if max <= 0.0 {
        return 1.0;
    }
    let amplify = 0.5 / max;
    if amplify.is_finite() {
        amplify
    } else {
        1.0
    }
}
