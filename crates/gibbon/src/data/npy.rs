//! NumPy `.npy` files: a small reader for image and label arrays, and writers.
//!
//! Reading supports format versions 1.0, 2.0 and 3.0, C order, and the little-endian dtypes
//! `|u1`, `|i1`, `<i2`, `<i4`, `<i8`, `<f4` and `<f8`. Writers produce version 1.0 files whose
//! header is padded so the data starts at a multiple of 64 bytes, as NumPy does.
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use tch::Tensor;

use super::{checked_product, dim, read_bytes, LoadedData};
use crate::error::{GibbonError, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const ALIGNMENT: usize = 64;

/// Element types this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    U8,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        Some(match descr {
            "|u1" | "<u1" | "=u1" => Dtype::U8,
            "|i1" | "<i1" | "=i1" => Dtype::I8,
            "<i2" => Dtype::I16,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 => 2,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value in the header's Python dict literal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A tiny parser for the Python dict literal in a `.npy` header.
struct HeaderParser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> HeaderParser<'a> {
    fn skip_space(&mut self) {
        while self.text.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> std::result::Result<(), String> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(format!(
                "expected '{}' at offset {} of the header, found '{}'",
                byte as char, self.pos, b as char
            )),
            None => Err(format!("expected '{}' but the header ended", byte as char)),
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "expected a quoted string at offset {} of the header",
                    self.pos
                ))
            }
        };
        let start = self.pos + 1;
        let len = self.text[start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| "unterminated string in the header".to_string())?;
        self.pos = start + len + 1;
        String::from_utf8(self.text[start..start + len].to_vec())
            .map_err(|_| "header string is not valid UTF-8".to_string())
    }

    fn integer(&mut self) -> std::result::Result<usize, String> {
        self.skip_space();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        let value = digits.parse::<usize>().map_err(|_| {
            format!("expected a non-negative integer at offset {start} of the header")
        })?;
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1; // Python 2 long suffix.
        }
        Ok(value)
    }

    fn value(&mut self) -> std::result::Result<HeaderValue, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(HeaderValue::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.integer()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err("malformed shape tuple in the header".to_string()),
                    }
                }
                Ok(HeaderValue::Tuple(items))
            }
            Some(b'[') => Err("structured dtypes are not supported".to_string()),
            _ => {
                for (word, value) in [("True", true), ("False", false)] {
                    if self.text[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(HeaderValue::Bool(value));
                    }
                }
                Err(format!("unsupported value at offset {} of the header", self.pos))
            }
        }
    }

    fn parse(text: &'a [u8]) -> std::result::Result<NpyHeader, String> {
        let mut parser = HeaderParser { text, pos: 0 };
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        parser.expect(b'{')?;
        loop {
            if parser.peek() == Some(b'}') {
                parser.pos += 1;
                break;
            }
            let key = parser.string()?;
            parser.expect(b':')?;
            let value = parser.value()?;
            match (key.as_str(), value) {
                ("descr", HeaderValue::Str(s)) => descr = Some(s),
                ("fortran_order", HeaderValue::Bool(b)) => fortran_order = Some(b),
                ("shape", HeaderValue::Tuple(t)) => shape = Some(t),
                (k @ ("descr" | "fortran_order" | "shape"), v) => {
                    return Err(format!("header key '{k}' has an unexpected value {v:?}"))
                }
                _ => {}
            }
            match parser.peek() {
                Some(b',') => parser.pos += 1,
                Some(b'}') => {}
                _ => return Err("malformed header dict".to_string()),
            }
        }
        if parser.peek().is_some() {
            return Err(format!("unexpected text after the header dict at offset {}", parser.pos));
        }
        Ok(NpyHeader {
            descr: descr.ok_or("header has no 'descr'")?,
            fortran_order: fortran_order.ok_or("header has no 'fortran_order'")?,
            shape: shape.ok_or("header has no 'shape'")?,
        })
    }
}

/// The first rows of an array read from a `.npy` file.
struct NpyArray {
    dtype: Dtype,
    /// The dtype as written in the header, for messages.
    descr: String,
    /// The full shape from the header.
    shape: Vec<usize>,
    /// Raw little-endian bytes of the first `rows` rows.
    data: Vec<u8>,
    rows: usize,
}

/// Reads the header of `path` and the raw bytes of its first `max_rows` rows (all if `None`).
fn read_npy(path: &Path, max_rows: Option<usize>) -> Result<NpyArray> {
    let mut file = File::open(path).map_err(|e| GibbonError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| GibbonError::io(path, e))?.len();
    let io_error = |e: io::Error| GibbonError::io(path, e);
    let short = || GibbonError::format(path, "file too short for a .npy header");

    let preamble = read_bytes(&mut file, 8, path, io_error)?;
    if preamble.len() < 8 || &preamble[..6] != MAGIC {
        return Err(GibbonError::format(path, "not a .npy file (missing \\x93NUMPY magic)"));
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let length_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => {
            return Err(GibbonError::format(
                path,
                format!("unsupported .npy format version {major}.{minor}"),
            ))
        }
    };
    let length_field = read_bytes(&mut file, length_bytes, path, io_error)?;
    if length_field.len() < length_bytes {
        return Err(short());
    }
    let header_len = length_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let header_text = read_bytes(&mut file, header_len, path, io_error)?;
    if header_text.len() < header_len {
        return Err(short());
    }
    let header = HeaderParser::parse(&header_text)
        .map_err(|message| GibbonError::format(path, format!("bad .npy header: {message}")))?;

    let dtype = Dtype::parse(&header.descr).ok_or_else(|| {
        GibbonError::format(
            path,
            format!(
                "unsupported dtype '{}'; supported: |u1, |i1, <i2, <i4, <i8, <f4, <f8 \
                 (little-endian)",
                header.descr
            ),
        )
    })?;
    if header.fortran_order && header.shape.len() > 1 {
        return Err(GibbonError::format(
            path,
            "array is stored in Fortran order (fortran_order: True); only C order is supported, \
             save it with numpy.ascontiguousarray",
        ));
    }
    let Some((&count, row_shape)) = header.shape.split_first() else {
        return Err(GibbonError::format(path, "array is a scalar (shape ()); expected an array"));
    };
    let row_bytes = checked_product(path, &[checked_product(path, row_shape)?, dtype.size()])?;
    let data_bytes = checked_product(path, &[row_bytes, count])?;
    let data_start = (6 + 2 + length_bytes + header_len) as u64;
    let available = file_len.saturating_sub(data_start);
    if available != data_bytes as u64 {
        return Err(GibbonError::format(
            path,
            format!(
                "data size mismatch: shape {:?} of {} needs {data_bytes} bytes, the file holds \
                 {available}",
                header.shape, header.descr
            ),
        ));
    }
    let rows = max_rows.map_or(count, |n| n.min(count));
    let data = read_bytes(&mut file, rows * row_bytes, path, io_error)?;
    if data.len() < rows * row_bytes {
        return Err(GibbonError::format(path, "file shrank while being read"));
    }
    Ok(NpyArray { dtype, descr: header.descr, shape: header.shape, data, rows })
}

/// Converts little-endian floats, checking each is finite and within `[0, 1]`.
fn unit_floats<T, const N: usize>(
    path: &Path,
    data: &[u8],
    decode: impl Fn([u8; N]) -> T,
) -> Result<Vec<f32>>
where
    T: Copy + Into<f64> + std::fmt::Display,
{
    data.chunks_exact(N)
        .enumerate()
        .map(|(index, chunk)| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            let value = decode(bytes);
            let wide: f64 = value.into();
            if wide.is_finite() && (0.0..=1.0).contains(&wide) {
                Ok(wide as f32)
            } else {
                Err(GibbonError::format(
                    path,
                    format!(
                        "value {value} at flat index {index} is not a finite number in [0, 1]; \
                         float images must already be scaled to [0, 1]"
                    ),
                ))
            }
        })
        .collect()
}

/// Loads images and labels from two `.npy` files.
pub(crate) fn load(
    images_path: &Path,
    labels_path: &Path,
    limit: Option<usize>,
) -> Result<LoadedData> {
    let images = read_npy(images_path, limit)?;
    let shape = match images.shape.as_slice() {
        [_, c, h, w] => [*c, *h, *w],
        [_, h, w] => [1, *h, *w],
        other => {
            return Err(GibbonError::format(
                images_path,
                format!("images must have shape [N, C, H, W] or [N, H, W], found {other:?}"),
            ))
        }
    };
    if shape.contains(&0) {
        return Err(GibbonError::format(
            images_path,
            format!("images have an empty dimension: shape {:?}", images.shape),
        ));
    }
    let labels = read_npy(labels_path, limit)?;
    if labels.shape.len() != 1 {
        return Err(GibbonError::format(
            labels_path,
            format!("labels must be 1-D, found shape {:?}", labels.shape),
        ));
    }
    if labels.shape[0] != images.shape[0] {
        return Err(GibbonError::format(
            labels_path,
            format!(
                "count mismatch: {} labels but {} holds {} images",
                labels.shape[0],
                images_path.display(),
                images.shape[0]
            ),
        ));
    }

    let tensor_shape = [
        dim(images_path, images.rows)?,
        dim(images_path, shape[0])?,
        dim(images_path, shape[1])?,
        dim(images_path, shape[2])?,
    ];
    let tensor = match images.dtype {
        Dtype::U8 => Tensor::f_from_slice(&images.data)?,
        Dtype::F32 => {
            Tensor::f_from_slice(&unit_floats(images_path, &images.data, f32::from_le_bytes)?)?
        }
        Dtype::F64 => {
            Tensor::f_from_slice(&unit_floats(images_path, &images.data, f64::from_le_bytes)?)?
        }
        _ => {
            return Err(GibbonError::format(
                images_path,
                format!(
                    "unsupported image dtype '{}'; images must be |u1, <f4 or <f8",
                    images.descr
                ),
            ))
        }
    }
    .f_view(tensor_shape)?;

    let label_values: Vec<i64> = match labels.dtype {
        Dtype::U8 => labels.data.iter().map(|&b| i64::from(b)).collect(),
        Dtype::I8 => labels.data.iter().map(|&b| i64::from(b as i8)).collect(),
        Dtype::I16 => labels
            .data
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::I32 => labels
            .data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::I64 => labels
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        _ => {
            return Err(GibbonError::format(
                labels_path,
                format!(
                    "unsupported label dtype '{}'; labels must be <i8, <i4, <i2 or |u1",
                    labels.descr
                ),
            ))
        }
    };
    if let Some((index, label)) = label_values.iter().enumerate().find(|(_, &l)| l < 0) {
        return Err(GibbonError::format(
            labels_path,
            format!("label {label} at index {index} is negative"),
        ));
    }
    Ok(LoadedData { images: tensor, labels: label_values, class_names: None })
}

/// Writes a version 1.0 `.npy` file with dtype `descr`, shape `shape` and raw `data`.
fn write_npy(
    path: &Path,
    descr: &str,
    shape: &[usize],
    element_count: usize,
    data: &[u8],
) -> Result<()> {
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(element_count) {
        return Err(GibbonError::invalid(
            "npy shape",
            format!("shape {shape:?} does not hold the {element_count} values given"),
        ));
    }
    let shape_text = match shape {
        [single] => format!("({single},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| {
        GibbonError::invalid("npy shape", format!("shape {shape:?} has too many dimensions"))
    })?;

    let file = File::create(path).map_err(|e| GibbonError::io(path, e))?;
    let mut out = BufWriter::new(file);
    let write = |out: &mut BufWriter<File>| -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&[1, 0])?;
        out.write_all(&header_len.to_le_bytes())?;
        out.write_all(header.as_bytes())?;
        out.write_all(data)?;
        out.flush()
    };
    write(&mut out).map_err(|e| GibbonError::io(path, e))
}

/// Writes `data` (row-major, `shape`) as a little-endian float32 (`<f4`) `.npy` file.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<f4", shape, data.len(), &bytes)
}

/// Writes `data` (row-major, `shape`) as a little-endian int64 (`<i8`) `.npy` file.
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<i8", shape, data.len(), &bytes)
}

/// Writes `data` (row-major, `shape`) as an unsigned byte (`|u1`) `.npy` file.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    write_npy(path, "|u1", shape, data.len(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_style_headers() {
        let header = HeaderParser::parse(
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (10, 1, 28, 28), }      \n",
        );
        assert_eq!(
            header,
            Ok(NpyHeader { descr: "<f4".into(), fortran_order: false, shape: vec![10, 1, 28, 28] })
        );
        let one_d =
            HeaderParser::parse(b"{\"shape\": (5,), \"descr\": \"|u1\", \"fortran_order\": True}");
        assert_eq!(
            one_d,
            Ok(NpyHeader { descr: "|u1".into(), fortran_order: true, shape: vec![5] })
        );
        let scalar =
            HeaderParser::parse(b"{'descr': '<i8', 'fortran_order': False, 'shape': (), }");
        assert_eq!(scalar.map(|h| h.shape), Ok(vec![]));
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            &b""[..],
            b"{'descr': '<f4', 'fortran_order': False}",
            b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
            b"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            b"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,2",
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
        ] {
            assert!(HeaderParser::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn written_headers_are_aligned_and_end_with_newline() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [vec![3usize], vec![2, 3], vec![1, 1, 2, 2], vec![0]] {
            let count: usize = shape.iter().product();
            let path = dir.path().join("a.npy");
            write_npy_f32(&path, &shape, &vec![0.5; count]).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(bytes[9 + header_len], b'\n');
            assert_eq!(bytes.len(), 10 + header_len + 4 * count);
            let parsed = HeaderParser::parse(&bytes[10..10 + header_len]).unwrap();
            assert_eq!(parsed.shape, shape);
            assert_eq!(parsed.descr, "<f4");
        }
    }
}
