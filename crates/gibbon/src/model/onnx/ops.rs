//! ONNX operators as libtorch tensor operations (all through the fallible `f_` variants, so a
//! bad shape in a file is an error, never a panic). Opset differences (attribute vs. input
//! forms) are handled per operator; see [`known_attributes`].
use super::graph::{kind_of, Attr, Node, MAX_ELEMENTS};
use tch::{Kind, Tensor};

/// An operator failed; the caller adds the node, operator and opset.
#[derive(Debug)]
pub struct OpError(pub String);

impl From<tch::TchError> for OpError {
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        OpError(
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("libtorch error")
                .trim()
                .to_string(),
        )
    }
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        OpError(s)
    }
}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        OpError(s.to_string())
    }
}

type R<T> = std::result::Result<T, OpError>;

/// The attributes each supported operator accepts at `opset`, or `None` if the operator is
/// not supported. An attribute outside this list is reported as unsupported.
pub fn known_attributes(op: &str, opset: i64) -> Option<&'static [&'static str]> {
    Some(match op {
        "Add" | "Sub" | "Mul" | "Div" | "Neg" | "Relu" | "Sigmoid" | "Tanh" | "Erf" | "Sqrt"
        | "Exp" | "Log" | "Abs" | "Reciprocal" | "Pow" | "MatMul" | "Max" | "Min" | "Identity"
        | "Shape" | "Clip" | "GlobalAveragePool" | "GlobalMaxPool" | "Expand" | "Where"
        | "Equal" | "Less" | "Greater" | "Round" | "Floor" | "Ceil" | "Sign" => match op {
            "Shape" if opset >= 15 => &["start", "end"],
            _ => &[],
        },
        "Dropout" => &["seed", "ratio"],
        "LeakyRelu" => &["alpha"],
        "Softmax" | "LogSoftmax" | "Flatten" | "Concat" | "Gather" => &["axis"],
        "Gelu" => &["approximate"],
        "Cast" => &["to", "saturate"],
        "Conv" => &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"],
        "ConvTranspose" => &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "output_padding",
            "output_shape",
            "pads",
            "strides",
        ],
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "MaxPool" => &[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ],
        "AveragePool" => {
            if opset >= 19 {
                &[
                    "auto_pad",
                    "ceil_mode",
                    "count_include_pad",
                    "dilations",
                    "kernel_shape",
                    "pads",
                    "strides",
                ]
            } else {
                &["auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"]
            }
        }
        "BatchNormalization" => {
            if opset >= 14 {
                &["epsilon", "momentum", "training_mode"]
            } else {
                &["epsilon", "momentum"]
            }
        }
        "LayerNormalization" => &["axis", "epsilon", "stash_type"],
        "Reshape" => {
            if opset >= 14 {
                &["allowzero"]
            } else {
                &[]
            }
        }
        "Transpose" => &["perm"],
        "Squeeze" | "Unsqueeze" => {
            if opset >= 13 {
                &[]
            } else {
                &["axes"]
            }
        }
        "ReduceSum" => {
            if opset >= 13 {
                &["keepdims", "noop_with_empty_axes"]
            } else {
                &["axes", "keepdims"]
            }
        }
        "ReduceMean" | "ReduceMax" => {
            if opset >= 18 {
                &["keepdims", "noop_with_empty_axes"]
            } else {
                &["axes", "keepdims"]
            }
        }
        "Slice" => &[],
        "Split" => {
            if opset >= 18 {
                &["axis", "num_outputs"]
            } else if opset >= 13 {
                &["axis"]
            } else {
                &["axis", "split"]
            }
        }
        "Constant" => &["value", "value_float", "value_floats", "value_int", "value_ints"],
        "ConstantOfShape" => &["value"],
        "Pad" => &["mode"],
        _ => return None,
    })
}

/// Inputs of one node (`None` for an omitted optional input).
struct Args<'a> {
    node: &'a Node,
    values: &'a [Option<Tensor>],
}

impl Args<'_> {
    fn get(&self, i: usize) -> R<&Tensor> {
        self.values
            .get(i)
            .and_then(|v| v.as_ref())
            .ok_or_else(|| OpError(format!("input {i} is missing")))
    }
    fn opt(&self, i: usize) -> Option<&Tensor> {
        self.values.get(i).and_then(|v| v.as_ref())
    }
    fn attr(&self, name: &str) -> Option<&Attr> {
        self.node.attrs.get(name)
    }
    fn int(&self, name: &str, default: i64) -> R<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(format!("attribute '{name}' must be an integer").into()),
        }
    }
    fn float(&self, name: &str, default: f64) -> R<f64> {
        match self.attr(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v as f64),
            Some(Attr::Int(v)) => Ok(*v as f64),
            Some(_) => Err(format!("attribute '{name}' must be a float").into()),
        }
    }
    fn ints(&self, name: &str) -> R<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(_) => Err(format!("attribute '{name}' must be a list of integers").into()),
        }
    }
    fn string(&self, name: &str, default: &str) -> R<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(_) => Err(format!("attribute '{name}' must be a string").into()),
        }
    }
    /// Axes given as an attribute (before `input_from`) or as input `index` (from `input_from`).
    fn axes(&self, opset: i64, input_from: i64, index: usize) -> R<Option<Vec<i64>>> {
        if opset >= input_from {
            self.opt(index).map(ints_of).transpose()
        } else {
            self.ints("axes")
        }
    }
}

/// The values of a (small, integer) tensor.
fn ints_of(t: &Tensor) -> R<Vec<i64>> {
    let flat = t.f_detach()?.f_reshape([-1])?;
    if flat.size().first().copied().unwrap_or(0) > MAX_ELEMENTS {
        return Err("index tensor too large".into());
    }
    Ok(Vec::<i64>::try_from(&flat)?)
}

fn scalar_of(t: &Tensor) -> R<f64> {
    if t.numel() != 1 {
        return Err(format!("expected a single value, got shape {:?}", t.size()).into());
    }
    Ok(t.f_detach()?.f_reshape([-1])?.f_to_kind(Kind::Double)?.f_double_value(&[0])?)
}

fn norm_axis(axis: i64, rank: i64) -> R<i64> {
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}").into());
    }
    Ok(a)
}

fn checked_numel(shape: &[i64]) -> R<i64> {
    let mut n: i64 = 1;
    for &d in shape {
        if d < 0 {
            return Err(format!("negative dimension in shape {shape:?}").into());
        }
        n = n.checked_mul(d).filter(|n| *n <= MAX_ELEMENTS).ok_or_else(|| {
            OpError(format!("shape {shape:?} has more than {MAX_ELEMENTS} elements"))
        })?;
    }
    Ok(n)
}

fn is_int(k: Kind) -> bool {
    matches!(k, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool)
}

fn broadcast_shapes(a: &[i64], b: &[i64]) -> R<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast").into());
        };
    }
    Ok(out)
}

/// Begin/end padding of each spatial axis for Conv/pooling, from `pads` or `auto_pad`.
fn spatial_pads(
    a: &Args,
    in_spatial: &[i64],
    kernel: &[i64],
    strides: &[i64],
    dilations: &[i64],
) -> R<(Vec<i64>, Vec<i64>)> {
    let n = in_spatial.len();
    let auto_pad = a.string("auto_pad", "NOTSET")?;
    match auto_pad.as_str() {
        "NOTSET" => {
            let pads = a.ints("pads")?.unwrap_or_else(|| vec![0; 2 * n]);
            if pads.len() != 2 * n {
                return Err(format!("pads has {} entries, expected {}", pads.len(), 2 * n).into());
            }
            if pads.iter().any(|p| *p < 0) {
                return Err("negative pads are not supported".into());
            }
            Ok((pads[..n].to_vec(), pads[n..].to_vec()))
        }
        "VALID" => Ok((vec![0; n], vec![0; n])),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut begin = vec![0; n];
            let mut end = vec![0; n];
            for i in 0..n {
                let out = in_spatial[i].saturating_add(strides[i] - 1) / strides[i];
                let total = (out - 1)
                    .saturating_mul(strides[i])
                    .saturating_add(effective_kernel(kernel[i], dilations[i]))
                    .saturating_sub(in_spatial[i])
                    .max(0);
                if auto_pad == "SAME_UPPER" {
                    begin[i] = total / 2;
                    end[i] = total - begin[i];
                } else {
                    end[i] = total / 2;
                    begin[i] = total - end[i];
                }
            }
            Ok((begin, end))
        }
        other => Err(format!("auto_pad '{other}' is not supported").into()),
    }
}

/// Extent of a dilated kernel, `(k - 1) d + 1`, saturating.
fn effective_kernel(k: i64, d: i64) -> i64 {
    (k - 1).saturating_mul(d).saturating_add(1)
}

/// Checks that `x` padded by `begin`/`end` on its spatial axes stays within the size limit.
fn check_padded(x: &Tensor, begin: &[i64], end: &[i64]) -> R<()> {
    let size = x.size();
    let mut shape = size[..2].to_vec();
    for (i, d) in size[2..].iter().enumerate() {
        shape.push(d.saturating_add(begin[i]).saturating_add(end[i]));
    }
    checked_numel(&shape).map(|_| ())
}

/// Checks the size of a broadcast result before computing it.
fn check_broadcast(a: &Tensor, b: &Tensor) -> R<()> {
    checked_numel(&broadcast_shapes(&a.size(), &b.size())?).map(|_| ())
}

/// Checks the size of a matrix product before computing it.
fn check_matmul(a: &Tensor, b: &Tensor) -> R<()> {
    let (sa, sb) = (a.size(), b.size());
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let m = if sa.len() >= 2 { sa[sa.len() - 2] } else { 1 };
    let n = if sb.len() >= 2 { sb[sb.len() - 1] } else { 1 };
    let batch_a = &sa[..sa.len().saturating_sub(2)];
    let batch_b = &sb[..sb.len().saturating_sub(2)];
    let mut shape = broadcast_shapes(batch_a, batch_b)?;
    shape.extend([m, n]);
    checked_numel(&shape).map(|_| ())
}

/// Pads for `constant_pad_nd`/`pad`: last axis first, (begin, end) pairs.
fn torch_pad_list(begin: &[i64], end: &[i64]) -> Vec<i64> {
    let mut list = Vec::with_capacity(2 * begin.len());
    for i in (0..begin.len()).rev() {
        list.push(begin[i]);
        list.push(end[i]);
    }
    list
}

/// Kernel, strides and dilations of a windowed operator with `n` spatial axes.
fn window_params(
    a: &Args,
    n: usize,
    kernel_default: Option<Vec<i64>>,
) -> R<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    let kernel = match (a.ints("kernel_shape")?, kernel_default) {
        (Some(k), Some(d)) if k != d => {
            return Err(format!("kernel_shape {k:?} does not match the weight's {d:?}").into())
        }
        (Some(k), _) => k,
        (None, Some(d)) => d,
        (None, None) => return Err("kernel_shape is required".into()),
    };
    let strides = a.ints("strides")?.unwrap_or_else(|| vec![1; n]);
    let dilations = a.ints("dilations")?.unwrap_or_else(|| vec![1; n]);
    if kernel.len() != n || strides.len() != n || dilations.len() != n {
        return Err(format!(
            "kernel_shape/strides/dilations need {n} entries (got {:?}, {strides:?}, {dilations:?})",
            kernel
        )
        .into());
    }
    if kernel.iter().chain(&strides).chain(&dilations).any(|v| *v < 1) {
        return Err("kernel_shape, strides and dilations must be positive".into());
    }
    Ok((kernel, strides, dilations))
}

fn spatial_rank(x: &Tensor) -> R<usize> {
    let r = x.dim();
    if !(3..=5).contains(&r) {
        return Err(format!(
            "expected an input of rank 3 to 5 (N, C, spatial...), got shape {:?}",
            x.size()
        )
        .into());
    }
    Ok(r - 2)
}

fn conv(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    let w = a.get(1)?;
    let b = a.opt(2);
    let n = spatial_rank(x)?;
    if w.dim() != x.dim() {
        return Err(
            format!("weight shape {:?} does not fit input shape {:?}", w.size(), x.size()).into()
        );
    }
    let (kernel, strides, dilations) = window_params(a, n, Some(w.size()[2..].to_vec()))?;
    let groups = a.int("group", 1)?;
    if groups < 1 {
        return Err("group must be positive".into());
    }
    let (begin, end) = spatial_pads(a, &x.size()[2..], &kernel, &strides, &dilations)?;
    check_padded(x, &begin, &end)?;
    let (input, padding) = if begin == end {
        (x.shallow_clone(), begin)
    } else {
        (x.f_constant_pad_nd(torch_pad_list(&begin, &end))?, vec![0; n])
    };
    Ok(input.f_convolution(w, b, strides, padding, dilations, false, vec![0; n], groups)?)
}

fn conv_transpose(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    let w = a.get(1)?;
    let b = a.opt(2);
    let n = spatial_rank(x)?;
    if w.dim() != x.dim() {
        return Err(
            format!("weight shape {:?} does not fit input shape {:?}", w.size(), x.size()).into()
        );
    }
    let (kernel, strides, dilations) = window_params(a, n, Some(w.size()[2..].to_vec()))?;
    let groups = a.int("group", 1)?;
    if groups < 1 {
        return Err("group must be positive".into());
    }
    let out_pad = a.ints("output_padding")?.unwrap_or_else(|| vec![0; n]);
    if out_pad.len() != n || out_pad.iter().any(|p| *p < 0) {
        return Err(format!("output_padding {out_pad:?} needs {n} non-negative entries").into());
    }
    let in_sp = x.size()[2..].to_vec();
    let full: Vec<i64> = (0..n)
        .map(|i| {
            (in_sp[i] - 1)
                .saturating_mul(strides[i])
                .saturating_add(effective_kernel(kernel[i], dilations[i]))
        })
        .collect();
    let mut full_shape = vec![x.size()[0], w.size()[1].saturating_mul(groups)];
    full_shape.extend(full.iter().zip(&out_pad).map(|(f, p)| f.saturating_add(*p)));
    checked_numel(&full_shape)?;
    let auto_pad = a.string("auto_pad", "NOTSET")?;
    let output_shape = a.ints("output_shape")?;
    let (begin, end) = if output_shape.is_some() || auto_pad.starts_with("SAME") {
        let target: Vec<i64> = match &output_shape {
            Some(s) if s.len() >= n => s[s.len() - n..].to_vec(),
            Some(s) => return Err(format!("output_shape {s:?} needs {n} spatial entries").into()),
            None => (0..n).map(|i| in_sp[i] * strides[i]).collect(),
        };
        let mut begin = vec![0; n];
        let mut end = vec![0; n];
        for i in 0..n {
            let total = full[i].saturating_add(out_pad[i]).saturating_sub(target[i]);
            if auto_pad == "SAME_UPPER" {
                begin[i] = total / 2;
                end[i] = total - total / 2;
            } else {
                begin[i] = total - total / 2;
                end[i] = total / 2;
            }
        }
        (begin, end)
    } else if auto_pad == "VALID" {
        (vec![0; n], vec![0; n])
    } else if auto_pad == "NOTSET" {
        let pads = a.ints("pads")?.unwrap_or_else(|| vec![0; 2 * n]);
        if pads.len() != 2 * n {
            return Err(format!("pads has {} entries, expected {}", pads.len(), 2 * n).into());
        }
        (pads[..n].to_vec(), pads[n..].to_vec())
    } else {
        return Err(format!("auto_pad '{auto_pad}' is not supported").into());
    };
    let y = x.f_convolution(
        w,
        None::<&Tensor>,
        strides,
        vec![0; n],
        dilations,
        true,
        vec![0; n],
        groups,
    )?;
    // Crop the padding (negative pad) and append output_padding (zeros before the bias).
    let ends: Vec<i64> = (0..n).map(|i| out_pad[i] - end[i]).collect();
    let begins: Vec<i64> = begin.iter().map(|v| -v).collect();
    let out_sizes: Vec<i64> =
        (0..n).map(|i| full[i].saturating_add(begins[i]).saturating_add(ends[i])).collect();
    if out_sizes.iter().any(|s| *s < 1) {
        return Err(format!("the padding leaves an empty output ({out_sizes:?})").into());
    }
    let y = y.f_constant_pad_nd(torch_pad_list(&begins, &ends))?;
    match b {
        Some(b) => {
            let mut shape = vec![1, -1];
            shape.extend(std::iter::repeat_n(1, n));
            Ok(y.f_add(&b.f_reshape(shape)?)?)
        }
        None => Ok(y),
    }
}

fn max_pool(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    if a.node.outputs.get(1).is_some_and(|o| o.is_some()) {
        return Err("the Indices output is not supported".into());
    }
    let n = spatial_rank(x)?;
    let (kernel, strides, dilations) = window_params(a, n, None)?;
    let ceil = a.int("ceil_mode", 0)? != 0;
    let (begin, end) = spatial_pads(a, &x.size()[2..], &kernel, &strides, &dilations)?;
    check_padded(x, &begin, &end)?;
    let torch_ok =
        begin == end && (0..n).all(|i| begin[i] <= effective_kernel(kernel[i], dilations[i]) / 2);
    let (input, padding) = if torch_ok {
        (x.shallow_clone(), begin)
    } else {
        (x.f_pad(torch_pad_list(&begin, &end), "constant", Some(f64::NEG_INFINITY))?, vec![0; n])
    };
    Ok(match n {
        1 => input.f_max_pool1d(kernel, strides, padding, dilations, ceil)?,
        2 => input.f_max_pool2d(kernel, strides, padding, dilations, ceil)?,
        _ => input.f_max_pool3d(kernel, strides, padding, dilations, ceil)?,
    })
}

fn avg_pool_raw(
    x: &Tensor,
    n: usize,
    k: &[i64],
    s: &[i64],
    p: &[i64],
    ceil: bool,
    include: bool,
) -> R<Tensor> {
    Ok(match n {
        1 => x.f_avg_pool1d(k, s, p, ceil, include)?,
        2 => x.f_avg_pool2d(k, s, p, ceil, include, None)?,
        _ => x.f_avg_pool3d(k, s, p, ceil, include, None)?,
    })
}

fn avg_pool(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    let n = spatial_rank(x)?;
    let (kernel, strides, dilations) = window_params(a, n, None)?;
    if dilations.iter().any(|d| *d != 1) {
        return Err("AveragePool with dilations other than 1 is not supported".into());
    }
    let ceil = a.int("ceil_mode", 0)? != 0;
    let include = a.int("count_include_pad", 0)? != 0;
    let (begin, end) = spatial_pads(a, &x.size()[2..], &kernel, &strides, &dilations)?;
    check_padded(x, &begin, &end)?;
    let torch_ok = begin == end && (0..n).all(|i| begin[i] <= kernel[i] / 2);
    if torch_ok {
        return avg_pool_raw(x, n, &kernel, &strides, &begin, ceil, include);
    }
    let zeros = vec![0; n];
    let pad = torch_pad_list(&begin, &end);
    let padded = x.f_constant_pad_nd(pad.as_slice())?;
    let sums = avg_pool_raw(&padded, n, &kernel, &strides, &zeros, ceil, true)?;
    if include {
        return Ok(sums);
    }
    // Average over the real (unpadded) elements of each window only.
    let ones = x.f_ones_like()?.f_detach()?;
    let counts = avg_pool_raw(
        &ones.f_constant_pad_nd(pad.as_slice())?,
        n,
        &kernel,
        &strides,
        &zeros,
        ceil,
        true,
    )?;
    Ok(sums.f_div(&counts)?)
}

fn gemm(a: &Args) -> R<Tensor> {
    let (ta, tb) = (a.int("transA", 0)? != 0, a.int("transB", 0)? != 0);
    let (alpha, beta) = (a.float("alpha", 1.0)?, a.float("beta", 1.0)?);
    let (x, w, c) = (a.get(0)?, a.get(1)?, a.opt(2));
    if x.dim() != 2 || w.dim() != 2 {
        return Err(format!("Gemm needs 2-D inputs, got {:?} and {:?}", x.size(), w.size()).into());
    }
    checked_numel(&[x.size()[usize::from(ta)], w.size()[usize::from(!tb)]])?;
    if !ta && tb && alpha == 1.0 && beta == 1.0 && c.is_none_or(|c| c.dim() == 1) {
        return Ok(x.f_linear(w, c)?);
    }
    let x = if ta { x.f_transpose(0, 1)? } else { x.shallow_clone() };
    let w = if tb { w.f_transpose(0, 1)? } else { w.shallow_clone() };
    let mut y = x.f_matmul(&w)?;
    if alpha != 1.0 {
        y = y.f_mul_scalar(alpha)?;
    }
    if let Some(c) = c {
        y = if beta == 1.0 { y.f_add(c)? } else { y.f_add(&c.f_mul_scalar(beta)?)? };
    }
    Ok(y)
}

fn softmax(a: &Args, opset: i64, log: bool) -> R<Tensor> {
    let x = a.get(0)?;
    let rank = x.dim() as i64;
    let apply = |t: &Tensor, dim: i64| -> R<Tensor> {
        Ok(if log { t.f_log_softmax(dim, None::<Kind>)? } else { t.f_softmax(dim, None::<Kind>)? })
    };
    if opset >= 13 {
        let axis = norm_axis(a.int("axis", -1)?, rank)?;
        return apply(x, axis);
    }
    // Before opset 13 the input is coerced to 2-D at `axis` (default 1).
    let axis = a.int("axis", 1)?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis < 0 || axis > rank {
        return Err(format!("axis out of range for rank {rank}").into());
    }
    let size = x.size();
    let rows: i64 = size[..axis as usize].iter().product();
    let cols: i64 = size[axis as usize..].iter().product();
    Ok(apply(&x.f_reshape([rows, cols])?, 1)?.f_reshape(size)?)
}

fn reduce(a: &Args, opset: i64, input_from: i64, op: &str) -> R<Tensor> {
    let x = a.get(0)?;
    let rank = x.dim() as i64;
    let keep = a.int("keepdims", 1)? != 0;
    let axes = a.axes(opset, input_from, 1)?.unwrap_or_default();
    let axes: Vec<i64> = if axes.is_empty() {
        if opset >= input_from && a.int("noop_with_empty_axes", 0)? != 0 {
            return Ok(x.shallow_clone());
        }
        (0..rank).collect()
    } else {
        axes.iter().map(|&ax| norm_axis(ax, rank)).collect::<R<_>>()?
    };
    if rank == 0 {
        return Ok(x.shallow_clone());
    }
    Ok(match op {
        "ReduceSum" => x.f_sum_dim_intlist(axes.as_slice(), keep, None::<Kind>)?,
        "ReduceMax" => x.f_amax(axes.as_slice(), keep)?,
        _ => x.f_mean_dim(axes.as_slice(), keep, None::<Kind>)?,
    })
}

fn slice(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    let starts = ints_of(a.get(1)?)?;
    let ends = ints_of(a.get(2)?)?;
    let rank = x.dim() as i64;
    let axes = match a.opt(3) {
        Some(t) => ints_of(t)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match a.opt(4) {
        Some(t) => ints_of(t)?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    let mut y = x.shallow_clone();
    for i in 0..starts.len() {
        let axis = norm_axis(axes[i], rank)?;
        let dim = y.size()[axis as usize];
        let step = steps[i];
        let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        if step > 0 {
            let s = wrap(starts[i]).clamp(0, dim);
            let e = wrap(ends[i]).clamp(0, dim).max(s);
            y = y.f_slice(axis, s, e, step)?;
        } else if step < 0 {
            let s = wrap(starts[i]).clamp(0, (dim - 1).max(0));
            let e = wrap(ends[i]).clamp(-1, dim - 1);
            let mut idx = Vec::new();
            let mut k = s;
            while k > e && dim > 0 {
                idx.push(k);
                k += step;
            }
            y = y.f_index_select(axis, &Tensor::f_from_slice(&idx)?.f_to_device(y.device())?)?;
        } else {
            return Err("slice step 0".into());
        }
    }
    Ok(y)
}

fn split(a: &Args, opset: i64) -> R<Vec<Tensor>> {
    let x = a.get(0)?;
    let rank = x.dim() as i64;
    let axis = norm_axis(a.int("axis", 0)?, rank)?;
    let dim = x.size()[axis as usize];
    let parts = a.node.outputs.len() as i64;
    let sizes = if opset >= 13 { a.opt(1).map(ints_of).transpose()? } else { a.ints("split")? };
    let sizes = match sizes {
        Some(s) => s,
        None => {
            let n = if opset >= 18 { a.int("num_outputs", parts)? } else { parts };
            if n < 1 || n != parts {
                return Err(format!("num_outputs {n} but the node has {parts} outputs").into());
            }
            let chunk = (dim + n - 1) / n;
            (0..n).map(|i| (dim - i * chunk).clamp(0, chunk)).collect()
        }
    };
    if sizes.len() as i64 != parts
        || sizes.iter().any(|s| *s < 0)
        || sizes.iter().sum::<i64>() != dim
    {
        return Err(format!(
            "split sizes {sizes:?} do not divide axis {axis} of {dim} into {parts} parts"
        )
        .into());
    }
    Ok(x.f_split_with_sizes(sizes.as_slice(), axis)?)
}

fn gather(a: &Args) -> R<Tensor> {
    let x = a.get(0)?;
    let idx = a.get(1)?.f_to_kind(Kind::Int64)?;
    let rank = x.dim() as i64;
    if rank == 0 {
        return Err("Gather on a scalar".into());
    }
    let axis = norm_axis(a.int("axis", 0)?, rank)?;
    let size = x.size();
    let dim = size[axis as usize];
    let idx = idx.f_where_self(&idx.f_ge(0)?, &idx.f_add_scalar(dim)?)?;
    let inner: i64 =
        size.iter().enumerate().filter(|(i, _)| *i != axis as usize).map(|(_, d)| *d).product();
    checked_numel(&[idx.numel() as i64, inner])?;
    let picked = x.f_index_select(axis, &idx.f_reshape([-1])?)?;
    let mut shape = size[..axis as usize].to_vec();
    shape.extend(idx.size());
    shape.extend(&size[axis as usize + 1..]);
    Ok(picked.f_reshape(shape)?)
}

fn pad(a: &Args, opset: i64) -> R<Tensor> {
    let x = a.get(0)?;
    let rank = x.dim() as i64;
    let pads = ints_of(a.get(1)?)?;
    let value = a.opt(2).map(scalar_of).transpose()?.unwrap_or(0.0);
    let axes: Vec<i64> = match a.opt(3) {
        Some(t) if opset >= 18 => {
            ints_of(t)?.iter().map(|&ax| norm_axis(ax, rank)).collect::<R<_>>()?
        }
        Some(_) => return Err("the axes input needs opset 18".into()),
        None => (0..rank).collect(),
    };
    let n = axes.len();
    if pads.len() != 2 * n {
        return Err(format!("pads has {} entries, expected {}", pads.len(), 2 * n).into());
    }
    let mut begin = vec![0; rank as usize];
    let mut end = vec![0; rank as usize];
    for (i, &ax) in axes.iter().enumerate() {
        begin[ax as usize] = pads[i];
        end[ax as usize] = pads[n + i];
    }
    let size = x.size();
    let out: Vec<i64> = (0..rank as usize)
        .map(|i| size[i].saturating_add(begin[i]).saturating_add(end[i]))
        .collect();
    checked_numel(&out)?;
    let mut list = torch_pad_list(&begin, &end);
    // Drop the all-zero pairs of leading axes: torch pads only the trailing axes it is given.
    while list.len() >= 2 && list[list.len() - 1] == 0 && list[list.len() - 2] == 0 {
        list.truncate(list.len() - 2);
    }
    let mode = a.string("mode", "constant")?;
    Ok(match mode.as_str() {
        "constant" if value == 0.0 => x.f_constant_pad_nd(list)?,
        "constant" => x.f_pad(list, "constant", Some(value))?,
        "reflect" => x.f_pad(list, "reflect", None::<f64>)?,
        "edge" => x.f_pad(list, "replicate", None::<f64>)?,
        other => return Err(format!("Pad mode '{other}' is not supported").into()),
    })
}

fn constant(a: &Args) -> R<Tensor> {
    let mut found = a.node.attrs.iter().filter(|(k, _)| k.starts_with("value"));
    let (name, value) = found.next().ok_or("Constant without a value attribute")?;
    if found.next().is_some() {
        return Err("Constant has more than one value attribute".into());
    }
    Ok(match (name.as_str(), value) {
        ("value", Attr::Tensor(t)) => t.shallow_clone(),
        ("value_float", Attr::Float(v)) => Tensor::f_from_slice(&[*v])?.f_reshape([] as [i64; 0])?,
        ("value_floats", Attr::Floats(v)) => Tensor::f_from_slice(v)?,
        ("value_int", Attr::Int(v)) => Tensor::f_from_slice(&[*v])?.f_reshape([] as [i64; 0])?,
        ("value_ints", Attr::Ints(v)) => Tensor::f_from_slice(v)?,
        (n, _) => {
            return Err(
                format!("Constant attribute '{n}' has the wrong type or is not supported").into()
            )
        }
    })
}

fn requested_outputs(node: &Node) -> usize {
    node.outputs.iter().rposition(|o| o.is_some()).map_or(0, |p| p + 1)
}

/// Evaluates `node` on `values` (its inputs, in order).
pub fn run(node: &Node, values: &[Option<Tensor>], opset: i64) -> R<Vec<Tensor>> {
    let a = Args { node, values };
    let x = || a.get(0);
    let one = |t: Tensor| Ok(vec![t]);
    let op = node.op_type.as_str();
    if matches!(
        op,
        "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "Pow"
            | "Equal"
            | "Less"
            | "Greater"
            | "Where"
            | "Max"
            | "Min"
    ) {
        for i in 1..values.len() {
            check_broadcast(a.get(0)?, a.get(i)?)?;
        }
    }
    if op != "Dropout" && op != "Split" && requested_outputs(node) > 1 {
        return Err(format!("{op} with more than one output is not supported").into());
    }
    match op {
        "Identity" => one(x()?.shallow_clone()),
        "Dropout" => {
            if let Some(t) = a.opt(2) {
                if scalar_of(t)? != 0.0 {
                    return Err("training_mode = true is not supported (inference only)".into());
                }
            }
            let y = x()?.shallow_clone();
            if requested_outputs(node) > 1 {
                let mask = Tensor::f_ones(y.size(), (Kind::Bool, y.device()))?;
                return Ok(vec![y, mask]);
            }
            one(y)
        }
        "Add" => one(x()?.f_add(a.get(1)?)?),
        "Sub" => one(x()?.f_sub(a.get(1)?)?),
        "Mul" => one(x()?.f_mul(a.get(1)?)?),
        "Div" => {
            let (p, q) = (x()?, a.get(1)?);
            if is_int(p.kind()) && is_int(q.kind()) {
                one(p.f_div_tensor_mode(q, "trunc")?)
            } else {
                one(p.f_div(q)?)
            }
        }
        "Pow" => {
            let base = x()?;
            let y = base.f_pow(a.get(1)?)?;
            one(if y.kind() != base.kind() { y.f_to_kind(base.kind())? } else { y })
        }
        "Equal" => one(x()?.f_eq_tensor(a.get(1)?)?),
        "Less" => one(x()?.f_lt_tensor(a.get(1)?)?),
        "Greater" => one(x()?.f_gt_tensor(a.get(1)?)?),
        "Where" => {
            let cond = x()?.f_to_kind(Kind::Bool)?;
            one(a.get(1)?.f_where_self(&cond, a.get(2)?)?)
        }
        "Neg" => one(x()?.f_neg()?),
        // ONNX rounds halves to even, as libtorch's round does.
        "Round" => one(x()?.f_round()?),
        "Floor" => one(x()?.f_floor()?),
        "Ceil" => one(x()?.f_ceil()?),
        "Sign" => one(x()?.f_sign()?),
        "Relu" => one(x()?.f_relu()?),
        "LeakyRelu" => {
            let t = x()?;
            let alpha = a.float("alpha", 0.01)?;
            one(t.f_where_self(&t.f_gt(0.0)?, &t.f_mul_scalar(alpha)?)?)
        }
        "Sigmoid" => one(x()?.f_sigmoid()?),
        "Tanh" => one(x()?.f_tanh()?),
        "Erf" => one(x()?.f_erf()?),
        "Sqrt" => one(x()?.f_sqrt()?),
        "Exp" => one(x()?.f_exp()?),
        "Log" => one(x()?.f_log()?),
        "Abs" => one(x()?.f_abs()?),
        "Reciprocal" => one(x()?.f_reciprocal()?),
        "Gelu" => {
            let approx = a.string("approximate", "none")?;
            if approx != "none" && approx != "tanh" {
                return Err(format!("approximate '{approx}' is not supported").into());
            }
            one(x()?.f_gelu(&approx)?)
        }
        "Softmax" => one(softmax(&a, opset, false)?),
        "LogSoftmax" => one(softmax(&a, opset, true)?),
        "Clip" => {
            let t = x()?;
            match (a.opt(1), a.opt(2)) {
                (None, None) => one(t.shallow_clone()),
                (lo, hi) => one(t.f_clamp_tensor(lo, hi)?),
            }
        }
        "Max" | "Min" => {
            let mut y = x()?.shallow_clone();
            for i in 1..values.len() {
                let other = a.get(i)?;
                y = if op == "Max" { y.f_maximum(other)? } else { y.f_minimum(other)? };
            }
            one(y)
        }
        "Cast" => {
            let to = a.int("to", 0)?;
            let kind = i32::try_from(to)
                .ok()
                .and_then(kind_of)
                .ok_or_else(|| OpError(format!("cast to element type {to} is not supported")))?;
            one(x()?.f_to_kind(kind)?)
        }
        "Conv" => one(conv(&a)?),
        "ConvTranspose" => one(conv_transpose(&a)?),
        "Gemm" => one(gemm(&a)?),
        "MatMul" => {
            check_matmul(x()?, a.get(1)?)?;
            one(x()?.f_matmul(a.get(1)?)?)
        }
        "MaxPool" => one(max_pool(&a)?),
        "AveragePool" => one(avg_pool(&a)?),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let t = x()?;
            if t.dim() < 3 {
                return Err(format!("expected (N, C, spatial...), got {:?}", t.size()).into());
            }
            let dims: Vec<i64> = (2..t.dim() as i64).collect();
            if op == "GlobalAveragePool" {
                one(t.f_mean_dim(dims.as_slice(), true, None::<Kind>)?)
            } else {
                one(t.f_amax(dims.as_slice(), true)?)
            }
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0)? != 0 {
                return Err("training_mode = 1 is not supported (inference only)".into());
            }
            let t = x()?;
            if t.dim() < 2 {
                return Err(format!("expected (N, C, ...), got {:?}", t.size()).into());
            }
            let eps = a.float("epsilon", 1e-5)?;
            let (s, b, m, v) = (a.get(1)?, a.get(2)?, a.get(3)?, a.get(4)?);
            one(t.f_batch_norm(Some(s), Some(b), Some(m), Some(v), false, 0.0, eps, false)?)
        }
        "LayerNormalization" => {
            let t = x()?;
            let rank = t.dim() as i64;
            let axis = norm_axis(a.int("axis", -1)?, rank)?;
            let eps = a.float("epsilon", 1e-5)?;
            let norm_shape = t.size()[axis as usize..].to_vec();
            let (scale, bias) = (a.get(1)?, a.opt(2));
            if scale.size() == norm_shape && bias.is_none_or(|b| b.size() == norm_shape) {
                return one(t.f_layer_norm(
                    norm_shape.as_slice(),
                    Some(scale),
                    bias,
                    eps,
                    false,
                )?);
            }
            let dims: Vec<i64> = (axis..rank).collect();
            let mean = t.f_mean_dim(dims.as_slice(), true, None::<Kind>)?;
            let centered = t.f_sub(&mean)?;
            let var = centered.f_square()?.f_mean_dim(dims.as_slice(), true, None::<Kind>)?;
            let mut y = centered.f_div(&var.f_add_scalar(eps)?.f_sqrt()?)?.f_mul(scale)?;
            if let Some(b) = bias {
                y = y.f_add(b)?;
            }
            one(y)
        }
        "Flatten" => {
            let t = x()?;
            let rank = t.dim() as i64;
            let axis = a.int("axis", 1)?;
            let axis = if axis < 0 { axis + rank } else { axis };
            if axis < 0 || axis > rank {
                return Err(format!("axis out of range for rank {rank}").into());
            }
            let size = t.size();
            let rows: i64 = size[..axis as usize].iter().product();
            let cols: i64 = size[axis as usize..].iter().product();
            one(t.f_reshape([rows, cols])?)
        }
        "Reshape" => {
            let t = x()?;
            let mut shape = ints_of(a.get(1)?)?;
            let allow_zero = a.int("allowzero", 0)? != 0;
            let size = t.size();
            for (i, d) in shape.iter_mut().enumerate() {
                if *d == 0 && !allow_zero {
                    *d = *size.get(i).ok_or_else(|| {
                        OpError(format!(
                            "shape entry {i} is 0 but the input has rank {}",
                            size.len()
                        ))
                    })?;
                }
            }
            one(t.f_reshape(shape)?)
        }
        "Expand" => {
            let t = x()?;
            let shape = broadcast_shapes(&t.size(), &ints_of(a.get(1)?)?)?;
            checked_numel(&shape)?;
            one(t.f_expand(shape, false)?)
        }
        "Transpose" => {
            let t = x()?;
            let perm = a.ints("perm")?.unwrap_or_else(|| (0..t.dim() as i64).rev().collect());
            one(t.f_permute(perm)?)
        }
        "Squeeze" => {
            let t = x()?;
            let rank = t.dim() as i64;
            match a.axes(opset, 13, 1)? {
                None => one(t.f_squeeze()?),
                Some(axes) => {
                    let axes: Vec<i64> =
                        axes.iter().map(|&ax| norm_axis(ax, rank)).collect::<R<_>>()?;
                    let size = t.size();
                    if let Some(ax) = axes.iter().find(|ax| size[**ax as usize] != 1) {
                        return Err(format!("cannot squeeze axis {ax} of shape {size:?}").into());
                    }
                    one(t.f_squeeze_dims(axes.as_slice())?)
                }
            }
        }
        "Unsqueeze" => {
            let t = x()?;
            let axes = a.axes(opset, 13, 1)?.ok_or("Unsqueeze needs axes")?;
            let out_rank = t.dim() as i64 + axes.len() as i64;
            let mut axes: Vec<i64> =
                axes.iter().map(|&ax| norm_axis(ax, out_rank)).collect::<R<_>>()?;
            axes.sort_unstable();
            if axes.windows(2).any(|w| w[0] == w[1]) {
                return Err("repeated axes".into());
            }
            let mut y = t.shallow_clone();
            for ax in axes {
                y = y.f_unsqueeze(ax)?;
            }
            one(y)
        }
        "Concat" => {
            let ts: Vec<&Tensor> = (0..values.len()).map(|i| a.get(i)).collect::<R<_>>()?;
            let rank = ts.first().map_or(0, |t| t.dim() as i64);
            let axis = match a.attr("axis") {
                None => return Err("Concat needs the axis attribute".into()),
                Some(_) => norm_axis(a.int("axis", 0)?, rank)?,
            };
            one(Tensor::f_cat(&ts, axis)?)
        }
        "Slice" => one(slice(&a)?),
        "Split" => split(&a, opset),
        "Gather" => one(gather(&a)?),
        "Shape" => {
            let size = x()?.size();
            let rank = size.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clampi(a.int("start", 0)?);
            let end = clampi(a.int("end", rank)?).max(start);
            one(Tensor::f_from_slice(&size[start..end])?)
        }
        "Constant" => one(constant(&a)?),
        "ConstantOfShape" => {
            let shape = ints_of(x()?)?;
            checked_numel(&shape)?;
            let value = match a.attr("value") {
                None => Tensor::f_from_slice(&[0f32])?,
                Some(Attr::Tensor(t)) if t.numel() == 1 => t.shallow_clone(),
                Some(_) => return Err("value must be a one-element tensor".into()),
            };
            one(value.f_reshape([] as [i64; 0])?.f_expand(shape, false)?.f_contiguous()?)
        }
        "Pad" => one(pad(&a, opset)?),
        "ReduceSum" => one(reduce(&a, opset, 13, op)?),
        "ReduceMean" | "ReduceMax" => one(reduce(&a, opset, 18, op)?),
        _ => Err(format!("operator {op} is not supported").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn unary(op: &str, x: &[f32]) -> Vec<f32> {
        let node = Node {
            op_type: op.into(),
            domain: String::new(),
            name: String::new(),
            inputs: vec![Some(0)],
            outputs: vec![Some(1)],
            attrs: BTreeMap::new(),
        };
        assert!(known_attributes(op, 17).is_some_and(|a| a.is_empty()), "{op}");
        let out = run(&node, &[Some(Tensor::from_slice(x))], 17).unwrap();
        Vec::<f32>::try_from(&out[0]).unwrap()
    }

    #[test]
    fn rounding_operators_follow_onnx() {
        let x = [0.5, 1.5, 2.5, -0.5, -2.5, 0.4, -1.7, 0.0];
        // Round: halves to even.
        assert_eq!(unary("Round", &x), [0.0, 2.0, 2.0, -0.0, -2.0, 0.0, -2.0, 0.0]);
        assert_eq!(unary("Floor", &x), [0.0, 1.0, 2.0, -1.0, -3.0, 0.0, -2.0, 0.0]);
        assert_eq!(unary("Ceil", &x), [1.0, 2.0, 3.0, -0.0, -2.0, 1.0, -1.0, 0.0]);
        assert_eq!(unary("Sign", &x), [1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 0.0]);
    }
}
