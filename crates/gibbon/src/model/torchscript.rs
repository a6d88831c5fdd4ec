//! TorchScript models (`torch.jit.trace(...).save(...)` or `torch.jit.script`).
use super::frozen::{self, QueryPath};
use super::{Classifier, GraphScan, ModelInfo};
use crate::error::{GibbonError, Result};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Ops the BPDA rewrite swapped (empty for the model as loaded).
    swapped: Vec<String>,
    /// The archive `module` was loaded from (the BPDA rewrite's for that view): feature
    /// modules are built from it.
    graph_bytes: Arc<Vec<u8>>,
    /// Feature modules built so far, by layer name.
    feature_modules: Mutex<Vec<(String, Arc<CModule>)>>,
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
            graph_bytes: Arc::new(bytes.clone()),
            bytes,
            query_path: OnceLock::new(),
            swapped: Vec::new(),
            feature_modules: Mutex::new(Vec::new()),
        })
    }

    /// The BPDA view ([`super::torchscript_bpda`]): the same answers bit for bit (checked on
    /// probe inputs), gradients straight through every rounding op and `detach`. A model with
    /// nothing to rewrite comes back unchanged (its [`Self::swapped`] is empty).
    pub fn with_straight_through(self) -> Result<Self> {
        let rewrite = super::torchscript_bpda::rewrite(&self.bytes, &self.info.path)?;
        for op in &rewrite.refused {
            tracing::warn!(
                "{}: BPDA cannot rewrite {op}; its gradient stays masked",
                self.info.path
            );
        }
        if rewrite.swapped.is_empty() {
            return Ok(self);
        }
        let origin = self.info.path.clone();
        let mut module =
            CModule::load_data_on_device(&mut std::io::Cursor::new(&rewrite.bytes), self.device)
                .map_err(|e| {
                    GibbonError::model(&origin, format!("BPDA rewrite: {}", first_line(&e)))
                })?;
        module.set_eval();
        for (_, p) in
            module.named_parameters().map_err(|e| GibbonError::model(&origin, first_line(&e)))?
        {
            let _ = p.set_requires_grad(false);
        }
        let mut probe_shape = vec![2 * super::TILE_ROWS];
        probe_shape.extend(&self.input_shape);
        // A fixed probe in [0, 1]: 97 levels, so rounding ops see values on both sides of every
        // step of a coarse quantizer.
        let count: i64 = probe_shape.iter().product();
        let probe = (Tensor::arange(count, (Kind::Float, self.device)) * 37.0)
            .remainder(97.0)
            .f_div_scalar(96.0)?
            .view(probe_shape.as_slice());
        let want = tch::no_grad(|| self.module.forward_ts(&[&probe]))
            .map_err(|e| GibbonError::model(&origin, first_line(&e)))?;
        let got = tch::no_grad(|| module.forward_ts(&[&probe])).map_err(|e| {
            GibbonError::model(&origin, format!("BPDA rewrite: {}", first_line(&e)))
        })?;
        if !got.equal(&want) {
            let diff = (&got - &want).abs().max().double_value(&[]);
            return Err(GibbonError::model(
                &origin,
                format!(
                    "the BPDA rewrite changes the model's answers (by up to {diff:.3e}); refused"
                ),
            ));
        }
        let mut info = self.info.clone();
        info.arch = Some(format!(
            "bpda[torchscript: {}]({})",
            summarize(&rewrite.swapped),
            info.arch.clone().unwrap_or_default()
        ));
        Ok(TorchScriptModel {
            module,
            info,
            swapped: rewrite.swapped,
            graph_bytes: Arc::new(rewrite.bytes),
            feature_modules: Mutex::new(Vec::new()),
            ..self
        })
    }

    /// The module returning the feature layer `layer` (built on first use, see
    /// [`super::torchscript_features`]).
    fn feature_module(&self, layer: &str) -> Result<Arc<CModule>> {
        use super::torchscript_features::{feature_module, FeatureError};
        let mut built = self.feature_modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = built.iter().find(|(name, _)| name == layer) {
            return Ok(m.clone());
        }
        let module = match feature_module(&self.graph_bytes, layer, self.device, &self.info.path) {
            Ok(m) => Arc::new(m),
            Err(FeatureError::Failed(e)) => return Err(e),
            Err(FeatureError::Unknown(list)) => {
                let names: Vec<&str> = list.split(", ").collect();
                let shown: Vec<&str> = names.iter().take(40).copied().collect();
                return Err(super::unknown_feature_layer(&self.info, layer, &shown));
            }
        };
        built.push((layer.to_string(), module.clone()));
        Ok(module)
    }

    /// Ops the BPDA rewrite swapped, one entry per rewritten node (empty for a plain model).
    pub fn swapped(&self) -> &[String] {
        &self.swapped
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

/// `aten::round ×2, aten::detach ×1`.
fn summarize(ops: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for op in ops {
        match counts.iter_mut().find(|(o, _)| o == op) {
            Some((_, c)) => *c += 1,
            None => counts.push((op.clone(), 1)),
        }
    }
    counts.iter().map(|(o, c)| format!("{o} x{c}")).collect::<Vec<_>>().join(", ")
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
    /// The activations of `layer` (`None`: [`super::PENULTIMATE`], the input of the last linear
    /// layer), flattened to `[B, D]`, on tiles, differentiable with respect to `x`.
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        let layer = layer.unwrap_or(super::PENULTIMATE);
        let module = self.feature_module(layer)?;
        super::forward_tiled(x, super::TILE_ROWS, |t| {
            let f = module.method_ts(super::torchscript_features::METHOD, &[t]).map_err(|e| {
                GibbonError::model(
                    &self.info.path,
                    format!("feature layer '{layer}': {}", first_line(&e)),
                )
            })?;
            Ok(if f.dim() > 2 { f.f_flatten(1, -1)? } else { f })
        })
    }
    /// The operations of concern in the archive's code reachable from `forward` (see
    /// [`super::torchscript_scan`]); the rounding ops and `detach` have a surrogate (the BPDA
    /// rewrite, [`TorchScriptModel::with_straight_through`]), marked swapped in that view.
    fn graph_scan(&self) -> GraphScan {
        let mut scan = super::torchscript_scan::scan_archive(&self.bytes);
        for op in scan.ops.iter_mut() {
            op.swapped = op.surrogate.is_some() && self.swapped.contains(&op.op);
        }
        scan
    }
}
