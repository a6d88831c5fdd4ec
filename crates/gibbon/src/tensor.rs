//! Tensor plumbing shared by attacks, threat models and defenses: per-sample views and row-wise
//! maps over a batch `[B, ...]`, batch and sample tensors built from host vectors, and the
//! channel × height × width [`Layout`] of one sample for attacks that work on host vectors.
use tch::Tensor;

/// `[B, 1, 1, ...]` for a batch `x` of shape `[B, ...]`: the shape that broadcasts one value per
/// sample over the sample's dimensions.
pub fn per_sample_view(x: &Tensor) -> Vec<i64> {
    let mut shape = vec![x.size()[0]];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    shape
}

/// Applies an elementwise function to a batch `[B, ...]` so that every row's result is
/// bit-identical whatever the batch size. libtorch evaluates elementwise transcendental functions
/// (tanh, exp, ...) over the flattened tensor in SIMD blocks with a scalar tail, so a row whose
/// length is not a multiple of the block width would be computed partly by one code path or the
/// other depending on how many rows precede it. Rows are padded with zeros to a multiple of
/// [`ROW_ALIGNMENT`] values, mapped, and cut back.
pub fn rowwise_elementwise(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let shape = x.size();
    let b = shape.first().copied().unwrap_or(1);
    let flat = x.reshape([b, -1]);
    let d = flat.size()[1];
    let padded = (d + ROW_ALIGNMENT - 1) / ROW_ALIGNMENT * ROW_ALIGNMENT;
    if padded == d {
        return f(x);
    }
    let wide = flat.constant_pad_nd([0, padded - d]);
    f(&wide).narrow(1, 0, d).reshape(shape.as_slice())
}

/// Row length (in values) that [`rowwise_elementwise`] pads to: a multiple of every SIMD block
/// libtorch's CPU kernels use.
pub const ROW_ALIGNMENT: i64 = 64;

/// `n` flattened samples of shape `shape` from `values`, as one batch tensor on `device`.
pub(crate) fn batch_tensor(values: &[f32], n: usize, shape: &[i64], device: tch::Device) -> Tensor {
    let mut full = vec![n as i64];
    full.extend(shape);
    sample_tensor(values, &full, device)
}

/// One flattened sample from `values` as a tensor of shape `shape` on `device`.
pub(crate) fn sample_tensor(values: &[f32], shape: &[i64], device: tch::Device) -> Tensor {
    Tensor::from_slice(values).view(shape).to_device(device)
}

/// A sample seen as `c` channels of `h × w` (leading dimensions are channels; 1-D inputs are a
/// single row), for query attacks that work on host vectors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Layout {
    /// The layout of one sample of `shape`.
    pub fn of(shape: &[i64]) -> Layout {
        let dims: Vec<usize> = shape.iter().map(|&v| v.max(1) as usize).collect();
        match dims.len() {
            0 => Layout { c: 1, h: 1, w: 1 },
            1 => Layout { c: 1, h: 1, w: dims[0] },
            n => Layout { c: dims[..n - 2].iter().product(), h: dims[n - 2], w: dims[n - 1] },
        }
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Flat index of channel `c`, row `i`, column `j`.
    pub fn at(&self, c: usize, i: usize, j: usize) -> usize {
        (c * self.h + i) * self.w + j
    }
}
