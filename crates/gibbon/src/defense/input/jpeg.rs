//! JPEG compression as an input defense (Dziugaite, Ghahramani & Roy 2016, "A study of the
//! effect of JPG compression on adversarial images"; Guo, Rana, Cissé & van der Maaten 2018,
//! "Countering adversarial images using input transformations", quality 75): every image is
//! quantized to 8 bits, encoded as a baseline JPEG at quality Q and decoded again.
//!
//! The codec is the `jpeg-encoder` crate (encoder) and the `jpeg-decoder` crate (decoder, the
//! decoder the `image` crate used for years): both are maintained pure-Rust crates with no C
//! library to build, `jpeg-encoder` takes a libjpeg-style quality 1–100 with the standard
//! (Annex K) quantization tables and its default chroma subsampling, and together they are far
//! smaller than the whole `image` crate. Grayscale `[1, H, W]` and RGB `[3, H, W]` inputs only.
//!
//! The codec runs on the host, off the autograd graph: the input gradient through the wrapper
//! is exactly zero, as for a deployed JPEG front end (declared not differentiable; BPDA
//! surrogate: the identity, as in Athalye, Carlini & Wagner 2018).
use super::{with_zero_gradient, DefenseParams, InputDefense, Surrogate};
use crate::error::{GibbonError, Result};
use tch::{Kind, Tensor};

/// JPEG round trip at quality 1–100.
#[derive(Debug, Clone, PartialEq)]
pub struct JpegCompression {
    quality: u8,
}

impl JpegCompression {
    /// A round trip at `quality` (1–100).
    pub fn new(quality: u8) -> Result<Self> {
        Self::from_params(DefenseParams::parse("jpeg", &format!("quality={quality}"))?)
    }
    pub(super) fn from_params(mut p: DefenseParams) -> Result<Self> {
        let quality = p.integer_in("quality", "jpeg:quality=Q", 1..=100)? as u8;
        p.finish()?;
        Ok(JpegCompression { quality })
    }

    /// Encodes and decodes one image of 8-bit values (`channels` 1 or 3, interleaved).
    pub fn round_trip(
        &self,
        pixels: &[u8],
        width: u16,
        height: u16,
        channels: usize,
    ) -> Result<Vec<u8>> {
        let color = if channels == 1 {
            jpeg_encoder::ColorType::Luma
        } else {
            jpeg_encoder::ColorType::Rgb
        };
        let mut encoded = Vec::new();
        jpeg_encoder::Encoder::new(&mut encoded, self.quality)
            .encode(pixels, width, height, color)
            .map_err(|e| GibbonError::Internal(format!("jpeg encoder: {e}")))?;
        let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(encoded));
        let decoded =
            decoder.decode().map_err(|e| GibbonError::Internal(format!("jpeg decoder: {e}")))?;
        if decoded.len() != pixels.len() {
            return Err(GibbonError::Internal(format!(
                "jpeg decoder returned {} values for {} pixels",
                decoded.len(),
                pixels.len()
            )));
        }
        Ok(decoded)
    }
}

impl InputDefense for JpegCompression {
    fn name(&self) -> &'static str {
        "jpeg"
    }
    fn spec(&self) -> String {
        format!("jpeg:quality={}", self.quality)
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn bpda_surrogate(&self) -> Surrogate {
        Surrogate::Identity
    }
    fn check_input(&self, shape: &[i64]) -> Result<()> {
        let fits = shape.len() == 3
            && (shape[0] == 1 || shape[0] == 3)
            && (1..=i64::from(u16::MAX)).contains(&shape[1])
            && (1..=i64::from(u16::MAX)).contains(&shape[2]);
        if !fits {
            return Err(GibbonError::invalid(
                "defense 'jpeg'",
                format!(
                    "input shape {shape:?} is not an image: JPEG needs [1, H, W] (grayscale) or \
                     [3, H, W] (RGB)"
                ),
            ));
        }
        Ok(())
    }
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        self.check_input(&size[1..])?;
        let (c, h, w) = (size[1] as usize, size[2] as usize, size[3] as usize);
        let host = x.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu);
        // [B, C, H, W] → [B, H, W, C]: the codec takes interleaved pixels.
        let hwc: Vec<f32> = Vec::try_from(host.permute([0, 2, 3, 1]).contiguous().flatten(0, -1))?;
        let mut out = Vec::with_capacity(hwc.len());
        for image in hwc.chunks(c * h * w) {
            let pixels: Vec<u8> =
                image.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
            let decoded = self.round_trip(&pixels, w as u16, h as u16, c)?;
            out.extend(decoded.into_iter().map(|p| f32::from(p) / 255.0));
        }
        let processed = Tensor::from_slice(&out)
            .view([size[0], size[2], size[3], size[1]])
            .permute([0, 3, 1, 2])
            .contiguous()
            .to_device(x.device());
        Ok(with_zero_gradient(x, processed))
    }
}
