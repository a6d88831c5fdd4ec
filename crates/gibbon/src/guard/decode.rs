//! Decoding and validating `POST /v1/classify` bodies: JSON with one input (`"input"`) or a
//! batch (`"inputs"`), each a base64 PNG (`{"png": "..."}`) or a float array with its declared
//! shape (`{"shape": [1, 28, 28], "data": [...], "dtype": "float32"}`), pixels in [0, 1].
//!
//! Every failure is a [`DecodeError`] with a message for the client (the server answers 400 or
//! 422); nothing in here panics on any input (see the proptest in the guard tests).
use base64::Engine;
use serde::Deserialize;

/// Why a request body was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the request's form (HTTP 400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Well-formed, but an input does not fit the model (HTTP 422).
    #[error("invalid input {index}: {message}")]
    Invalid { index: usize, message: String },
}

/// One input as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireInput {
    png: Option<String>,
    shape: Option<Vec<i64>>,
    data: Option<Vec<f64>>,
    dtype: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    input: Option<WireInput>,
    inputs: Option<Vec<WireInput>>,
}

/// What a decoded request may hold.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// The model's input shape, e.g. `[1, 28, 28]`.
    pub input_shape: Vec<i64>,
    /// Most inputs in one request.
    pub max_inputs: usize,
}

/// Decoded inputs: `rows` inputs of `input_shape`, row-major float32 pixels in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    pub rows: usize,
    pub pixels: Vec<f32>,
}

/// Decodes and validates a request body.
pub fn decode_request(body: &[u8], limits: &DecodeLimits) -> Result<DecodedBatch, DecodeError> {
    let req: WireRequest =
        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let inputs = match (req.input, req.inputs) {
        (Some(one), None) => vec![one],
        (None, Some(many)) => many,
        _ => return Err(DecodeError::Malformed("give exactly one of `input` and `inputs`".into())),
    };
    if inputs.is_empty() || inputs.len() > limits.max_inputs {
        return Err(DecodeError::Malformed(format!(
            "{} inputs; 1 to {} are accepted per request",
            inputs.len(),
            limits.max_inputs
        )));
    }
    let per_row: usize = limits.input_shape.iter().map(|&d| d.max(0) as usize).product();
    let mut pixels = Vec::with_capacity(per_row * inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let row = decode_input(input, &limits.input_shape, per_row)
            .map_err(|message| DecodeError::Invalid { index, message })?;
        pixels.extend_from_slice(&row);
    }
    Ok(DecodedBatch { rows: pixels.len() / per_row.max(1), pixels })
}

fn decode_input(input: WireInput, shape: &[i64], per_row: usize) -> Result<Vec<f32>, String> {
    match (input.png, input.shape, input.data) {
        (Some(png), None, None) => {
            if input.dtype.is_some() {
                return Err("`dtype` applies to float arrays, not PNG".into());
            }
            decode_png(&png, shape)
        }
        (None, Some(declared), Some(data)) => {
            decode_floats(&declared, &data, input.dtype, shape, per_row)
        }
        _ => Err("give either `png` or both `shape` and `data`".into()),
    }
}

fn decode_floats(
    declared: &[i64],
    data: &[f64],
    dtype: Option<String>,
    shape: &[i64],
    per_row: usize,
) -> Result<Vec<f32>, String> {
    if let Some(d) = dtype.as_deref() {
        if d != "float32" && d != "float64" {
            return Err(format!("dtype {d:?} is not supported (float32 or float64)"));
        }
    }
    if declared != shape {
        return Err(format!("shape {declared:?} does not match the model's input shape {shape:?}"));
    }
    if data.len() != per_row {
        return Err(format!("{} values for shape {shape:?} ({per_row} expected)", data.len()));
    }
    let mut row = Vec::with_capacity(per_row);
    for (i, &v) in data.iter().enumerate() {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(format!("value {v} at position {i} is not a finite pixel in [0, 1]"));
        }
        row.push(v as f32);
    }
    Ok(row)
}

/// Decodes a base64 PNG whose size and channels fit `shape` (`[C, H, W]`, C = 1 grey or 3 RGB).
fn decode_png(b64: &str, shape: &[i64]) -> Result<Vec<f32>, String> {
    let &[c, h, w] = shape else {
        return Err(format!("PNG inputs need a [C, H, W] model input, not {shape:?}"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("png is not base64: {e}"))?;
    let limits = png::Limits { bytes: 8 * (c.max(4) * h * w).max(1) as usize + 65_536 };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let info = reader.info();
    if i64::from(info.width) != w || i64::from(info.height) != h {
        return Err(format!("PNG is {}x{}, the model takes {w}x{h}", info.width, info.height));
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|e| format!("corrupt PNG: {e}"))?;
    let channels = frame.color_type.samples();
    let data = &buf[..frame.buffer_size()];
    let (hw, c) = ((h * w) as usize, c as usize);
    let stride = frame.line_size;
    let mut out = vec![0f32; c * hw];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let px = &data[y * stride + x * channels..][..channels];
            for ch in 0..c {
                let v = match (c, channels) {
                    (1, 1 | 2) => px[0],
                    (1, 3 | 4) => {
                        ((px[0] as u32 * 299 + px[1] as u32 * 587 + px[2] as u32 * 114) / 1000)
                            as u8
                    }
                    (3, 3 | 4) => px[ch],
                    (3, 1 | 2) => px[0],
                    _ => {
                        return Err(format!("PNG with {channels} channels for {c} model channels"))
                    }
                };
                out[ch * hw + y * w as usize + x] = v as f32 / 255.0;
            }
        }
    }
    Ok(out)
}

/// Encodes `[C, H, W]` pixels in [0, 1] as a PNG (grey for C = 1, RGB for C = 3).
pub fn encode_png(pixels: &[f32], shape: &[i64]) -> Option<Vec<u8>> {
    let &[c, h, w] = shape else { return None };
    let (c, hw) = (c as usize, (h * w) as usize);
    if pixels.len() != c * hw || (c != 1 && c != 3) {
        return None;
    }
    let mut raw = Vec::with_capacity(c * hw);
    for i in 0..hw {
        for ch in 0..c {
            raw.push((pixels[ch * hw + i].clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
    enc.set_color(if c == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().ok()?;
    writer.write_image_data(&raw).ok()?;
    writer.finish().ok()?;
    Some(out)
}
