//! Parsing the `--model` spec and loading the model it names.
use super::{
    Arch, BuiltinModel, Classifier, OnnxModel, RemoteModel, RemoteOptions, TorchScriptModel,
};
use crate::error::{GibbonError, Result};
use std::path::PathBuf;
use std::str::FromStr;
use tch::Device;

/// Pretrained weights shipped with gibbon, embedded in the binary: (name, architecture, weights
/// as safetensors, input shape). The files live in `crates/gibbon/models/`; the README gives the
/// `gibbon train` commands that produced them.
pub const BUILTIN_MODELS: &[(&str, Arch, &[u8], [i64; 3])] = &[
    (
        "smallcnn-mnist",
        Arch::SmallCnn,
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/smallcnn_mnist_std.safetensors"
        )),
        [1, 28, 28],
    ),
    (
        "smallcnn-mnist-adv",
        Arch::SmallCnn,
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/smallcnn_mnist_pgd.safetensors"
        )),
        [1, 28, 28],
    ),
];

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A TorchScript file (`.pt`, `.ts`, `.torchscript`).
    TorchScript(PathBuf),
    /// A safetensors `state_dict` for a built-in architecture (needs `--arch`).
    Safetensors(PathBuf),
    /// Shipped pretrained weights, `builtin:NAME`.
    Builtin(String),
    /// An ONNX file (`.onnx`), evaluated on libtorch operations.
    Onnx(PathBuf),
    /// A model served over HTTP: its predict URL (`http://HOST:PORT/predict`), see
    /// [`RemoteModel`].
    Remote(String),
}

impl FromStr for ModelSpec {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            super::remote::info_url_for(s)?;
            return Ok(ModelSpec::Remote(s.to_string()));
        }
        if let Some(name) = s.strip_prefix("builtin:") {
            return if BUILTIN_MODELS.iter().any(|(n, ..)| *n == name) {
                Ok(ModelSpec::Builtin(name.to_string()))
            } else {
                Err(GibbonError::invalid(
                    "model",
                    format!(
                        "unknown builtin model '{name}' (available: {})",
                        BUILTIN_MODELS
                            .iter()
                            .map(|(n, ..)| format!("builtin:{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            };
        }
        let path = PathBuf::from(s);
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) {
            Some(e) if e == "pt" || e == "ts" || e == "torchscript" || e == "pth" => Ok(ModelSpec::TorchScript(path)),
            Some(e) if e == "safetensors" => Ok(ModelSpec::Safetensors(path)),
            Some(e) if e == "onnx" => Ok(ModelSpec::Onnx(path)),
            _ => Err(GibbonError::invalid(
                "model",
                format!("'{s}': expected a TorchScript file (.pt), an ONNX file (.onnx), a .safetensors file with --arch, builtin:NAME or an http:// predict URL"),
            )),
        }
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::TorchScript(p) | ModelSpec::Safetensors(p) | ModelSpec::Onnx(p) => {
                write!(f, "{}", p.display())
            }
            ModelSpec::Builtin(n) => write!(f, "builtin:{n}"),
            ModelSpec::Remote(url) => f.write_str(url),
        }
    }
}

/// Loads the model named by `spec` for inputs of `input_shape` (one sample) and `classes` classes
/// (used by built-in architectures; TorchScript and remote models report their own). A remote
/// model is reached with [`RemoteOptions::default`] and lives on the CPU whatever `device` says;
/// [`load_model_with`] takes other options.
pub fn load_model(
    spec: &ModelSpec,
    arch: Option<Arch>,
    input_shape: &[i64],
    classes: i64,
    device: Device,
) -> Result<Box<dyn Classifier>> {
    load_model_with(spec, arch, input_shape, classes, device, &RemoteOptions::default())
}

/// [`load_model`] with the client options `remote` for a remote model.
pub fn load_model_with(
    spec: &ModelSpec,
    arch: Option<Arch>,
    input_shape: &[i64],
    classes: i64,
    device: Device,
    remote: &RemoteOptions,
) -> Result<Box<dyn Classifier>> {
    let has_own_architecture =
        matches!(spec, ModelSpec::Remote(_) | ModelSpec::TorchScript(_) | ModelSpec::Onnx(_));
    if arch.is_some() && has_own_architecture {
        return Err(GibbonError::invalid("arch", "--arch applies to .safetensors models only"));
    }
    match spec {
        ModelSpec::Remote(url) => {
            Ok(Box::new(RemoteModel::load(url, remote.clone(), input_shape)?))
        }
        ModelSpec::TorchScript(path) => {
            Ok(Box::new(TorchScriptModel::load(path, input_shape, device)?))
        }
        ModelSpec::Onnx(path) => Ok(Box::new(OnnxModel::load(path, input_shape, device)?)),
        ModelSpec::Safetensors(_) | ModelSpec::Builtin(_) => {
            Ok(Box::new(load_builtin_model(spec, arch, input_shape, classes, device)?))
        }
    }
}

/// A model of one of gibbon's own architectures: a `.safetensors` file with `arch`, or shipped
/// weights (`builtin:NAME`). Analyses that read the layers themselves (interval bound
/// propagation) need this concrete type; any other `spec` is an error naming it.
pub fn load_builtin_model(
    spec: &ModelSpec,
    arch: Option<Arch>,
    input_shape: &[i64],
    classes: i64,
    device: Device,
) -> Result<BuiltinModel> {
    match spec {
        ModelSpec::Safetensors(path) => {
            let arch = arch.ok_or_else(|| {
                GibbonError::invalid(
                    "arch",
                    format!(
                        "{} is a safetensors file: name its architecture with --arch ({})",
                        path.display(),
                        Arch::NAMES.join(", ")
                    ),
                )
            })?;
            BuiltinModel::load(arch, path, input_shape, classes, device)
        }
        ModelSpec::Builtin(name) => {
            let (_, barch, bytes, shape) =
                BUILTIN_MODELS.iter().find(|(n, ..)| n == name).ok_or_else(|| {
                    GibbonError::invalid("model", format!("unknown builtin model '{name}'"))
                })?;
            if input_shape != shape.as_slice() {
                return Err(GibbonError::Mismatch(format!(
                    "input shape {input_shape:?} does not fit the model builtin:{name}, which needs {shape:?}"
                )));
            }
            let mut model = BuiltinModel::from_safetensors_bytes(
                *barch,
                bytes,
                &spec.to_string(),
                shape,
                10,
                device,
            )?;
            let mut info = model.info().clone();
            info.kind = "builtin".into();
            model.set_info(info);
            Ok(model)
        }
        other => Err(GibbonError::invalid(
            "model",
            format!(
                "{other} is not one of gibbon's architectures: this needs a .safetensors file with \
                 --arch ({}) or builtin:NAME",
                Arch::NAMES.join(", ")
            ),
        )),
    }
}
