//! TorchScript models (`torch.jit.trace(...).save(...)` or `torch.jit.script`).
use super::frozen::{self, QueryPath};
use super::{Classifier, GraphScan, ModelInfo};
use crate::error::{GibbonError, Result};
use std::path::Path;
use std::sync::OnceLock;
use tch::{CModule, Device, Kind, Tensor};

/// A TorchScript module loaded through libtorch, in eval mode with weight gradients off.
///
/// Query-only forward passes ([`Classifier::query_logits`]) run an inference-optimized copy of
/// the module, built and checked on first use (see [`super::frozen`]); everything else, and
/// every model that cannot be optimized, runs the module as loaded.
pub struct TorchScriptModel {
    module: CModule,
    input_shape: Vec<i64>,
    classes: i64,
    device: Device,
    info: ModelInfo,
    bytes: Vec<u8>,
    query_path: OnceLock<Option<QueryPath>>,
}

impl TorchScriptModel {
    /// Loads `path` and checks that it accepts inputs of `input_shape` (one sample, no batch
    /// dimension) by a probe forward pass, which also determines the class count.
    pub fn load(path: &Path, input_shape: &[i64], device: Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
        let origin = path.display().to_string();
        let mut module = CModule::load_data_on_device(&mut std::io::Cursor::new(&bytes), device)
            .map_err(|e| {
                GibbonError::model(
                    &origin,
                    format!("not a loadable TorchScript file ({})", first_line(&e)),
                )
            })?;
        module.set_eval();
        for (_, p) in
            module.named_parameters().map_err(|e| GibbonError::model(&origin, first_line(&e)))?
        {
            let _ = p.set_requires_grad(false);
        }
        let mut shape = vec![1];
        shape.extend(input_shape);
        let probe = Tensor::zeros(shape.as_slice(), (Kind::Float, device));
        let out = tch::no_grad(|| module.forward_ts(&[probe])).map_err(|e| {
            GibbonError::Mismatch(format!(
                "input shape {input_shape:?} does not fit the model {origin}: {}",
                first_line(&e)
            ))
        })?;
        let size = out.size();
        if size.len() != 2 || size[0] != 1 || size[1] < 2 {
            return Err(GibbonError::model(
                &origin,
                format!(
                    "expected logits of shape [batch, classes] but the model returned {size:?}"
                ),
            ));
        }
        let info = ModelInfo {
            path: origin,
            sha256: super::sha256_hex(&bytes),
            kind: "torchscript".into(),
            arch: None,
        };
        Ok(TorchScriptModel {
            module,
            input_shape: input_shape.to_vec(),
            classes: size[1],
            device,
            info,
            bytes,
            query_path: OnceLock::new(),
        })
    }

    /// True when query-only passes run the inference-optimized copy (building it if needed);
    /// false when they run the module as loaded (see [`Self::query_path`] for when).
    pub fn query_forward_optimized(&self) -> bool {
        self.query_path().is_some()
    }

    /// The checked optimized copy for query-only passes, built on first call; `None` on a
    /// non-CPU device, with `GIBBON_QUERY_FORWARD=plain`, or when the copy fails its checks
    /// (logged once as a warning).
    fn query_path(&self) -> Option<&QueryPath> {
        self.query_path
            .get_or_init(|| {
                if self.device != Device::Cpu || !frozen::enabled() {
                    return None;
                }
                let reference = |x: &Tensor| self.logits(x);
                match QueryPath::build(&self.bytes, &self.input_shape, &reference) {
                    Ok(path) => {
                        tracing::debug!(
                            "{}: query passes run an inference-optimized copy",
                            self.info.path
                        );
                        Some(path)
                    }
                    Err(why) => {
                        tracing::warn!(
                            "{}: query passes use the model as loaded: {why}",
                            self.info.path
                        );
                        None
                    }
                }
            })
            .as_ref()
    }
}

fn first_line(e: &tch::TchError) -> String {
    let text = e.to_string();
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim().to_string()
}

impl Classifier for TorchScriptModel {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.module.forward_ts(&[x]).map_err(|e| {
            GibbonError::Mismatch(format!(
                "model {} rejected the input: {}",
                self.info.path,
                first_line(&e)
            ))
        })
    }
    fn input_shape(&self) -> &[i64] {
        &self.input_shape
    }
    fn num_classes(&self) -> i64 {
        self.classes
    }
    fn device(&self) -> Device {
        self.device
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn query_logits(&self, x: &Tensor) -> Result<Tensor> {
        match self.query_path() {
            // A failure of the optimized copy is not the model's: that batch runs the model as
            // loaded (the same predictions; scores differ at most by float rounding).
            Some(path) => path.logits(x, &|rows: &Tensor| self.logits(rows)).or_else(|e| {
                tracing::warn!(
                    "{}: the optimized copy failed ({e}); the batch runs the model as loaded",
                    self.info.path
                );
                self.logits(x)
            }),
            None => self.logits(x),
        }
    }
    /// The operations of concern in the archive's code reachable from `forward` (see
    /// [`super::torchscript_scan`]). None has a surrogate: gibbon cannot rewrite a TorchScript
    /// graph, so gradient attacks on a flagged model stay masked and the audit falls back to
    /// gradient-free attacks.
    fn graph_scan(&self) -> GraphScan {
        super::torchscript_scan::scan_archive(&self.bytes)
    }
}
