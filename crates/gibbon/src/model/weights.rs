//! Reading and writing weights as safetensors with PyTorch `state_dict` names.
use crate::error::{GibbonError, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// Buffers PyTorch saves that gibbon's models do not use.
const IGNORED_SUFFIXES: &[&str] = &["num_batches_tracked"];

/// The length of the one-dimensional tensor `name` in the safetensors `bytes`, if there is one.
pub fn vector_len(bytes: &[u8], name: &str) -> Option<usize> {
    let st = SafeTensors::deserialize(bytes).ok()?;
    match st.tensor(name).ok()?.shape() {
        [n] => Some(*n),
        _ => None,
    }
}

/// Copies every variable of `vs` from the safetensors `bytes`; names and shapes must match.
pub fn load_into(vs: &mut nn::VarStore, bytes: &[u8], origin: &str) -> Result<()> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| GibbonError::model(origin, format!("not a valid safetensors file: {e}")))?;
    let variables = vs.variables();
    let mut expected: Vec<&String> = variables.keys().collect();
    expected.sort();
    for name in st.names() {
        if !variables.contains_key(name.as_str())
            && !IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
        {
            return Err(GibbonError::model(
                origin,
                format!(
                    "unexpected tensor '{name}' (the architecture has: {})",
                    preview(&expected)
                ),
            ));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for name in expected {
            let view = st.tensor(name).map_err(|_| {
                GibbonError::model(origin, format!("missing tensor '{name}' for this architecture"))
            })?;
            let mut var = variables[name].shallow_clone();
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(GibbonError::model(
                    origin,
                    format!(
                        "tensor '{name}' has shape {shape:?}, the architecture needs {:?}",
                        var.size()
                    ),
                ));
            }
            let src = tensor_from_view(&view, origin, name)?;
            var.f_copy_(&src.to_device(var.device()))?;
        }
        Ok(())
    })
}

fn preview(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(6).map(|s| s.as_str()).collect();
    if names.len() > 6 {
        format!("{}, ...", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn tensor_from_view(view: &TensorView<'_>, origin: &str, name: &str) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        other => {
            return Err(GibbonError::model(
                origin,
                format!("tensor '{name}' has unsupported dtype {other:?}"),
            ))
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
    Ok(t.to_kind(Kind::Float))
}

/// Writes every variable of `vs` as float32 safetensors.
pub fn save(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let variables = vs.variables();
    let mut data: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, t) in variables {
        let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
        let values: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1))?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.insert(name, (t.size().iter().map(|&d| d as usize).collect(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| GibbonError::Internal(format!("safetensors view for {name}: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, &None)
        .map_err(|e| GibbonError::Internal(format!("safetensors serialization: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| GibbonError::io(path, e))
}
