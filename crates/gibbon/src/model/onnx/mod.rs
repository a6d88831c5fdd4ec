//! ONNX models, evaluated by a small interpreter on libtorch tensors.
//!
//! The file is decoded with `prost` (types generated from the official `onnx.proto`, see
//! `proto.rs`), its nodes are sorted topologically, and every forward pass runs them one by one
//! as tch tensor operations. Input gradients therefore come from libtorch autograd exactly as
//! for a TorchScript model, and every white-box attack works unchanged. Initializers are tensors
//! that never require grad; nodes whose inputs are all constants are folded once at load time.
//!
//! Supported: default-domain opsets 11 to 21 and the operators of [`ops::known_attributes`],
//! initializers inline or in external data files next to the model, dynamic batch dimensions.
//! Anything else is a [`GibbonError::Model`] naming the operator, node and opset; a file that is
//! not a well-formed ONNX model is a [`GibbonError::Format`]. Nothing here panics on file content.
//!
//! BPDA: the piecewise-constant operators Round, Floor, Ceil and Sign have a zero input
//! gradient. [`OnnxModel::with_straight_through`] is the view whose forward pass is the same,
//! bit for bit, and whose backward pass takes the identity's gradient through them
//! (straight-through); [`OnnxModel`]'s graph scan lists them and the other operators of
//! concern (see [`super::scan`]).
mod features;
mod graph;
mod ops;
mod proto;

use super::scan::{FlaggedOp, GraphScan, OpEffect};
use super::{Classifier, ModelInfo};
use crate::error::{GibbonError, Result};
use graph::{Graph, SUPPORTED_OPSETS};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A decoded, checked ONNX graph that can be evaluated on tensors.
pub struct OnnxGraph {
    graph: Graph,
    /// For each node, the slots read for the last time by it (freed after it runs).
    release: Vec<Vec<usize>>,
    origin: String,
    device: Device,
    /// Run [`STRAIGHT_THROUGH_OPS`] with the identity's gradient.
    straight_through: bool,
}

/// The operators whose gradient the straight-through view replaces by the identity's.
pub const STRAIGHT_THROUGH_OPS: &[&str] = &["Round", "Floor", "Ceil", "Sign"];

/// Operators with a zero or undefined input gradient that gibbon cannot swap.
const ZERO_GRADIENT_OPS: &[&str] = &["ArgMax", "ArgMin", "QuantizeLinear"];

/// Random operators: one pass's gradient is one draw.
const RANDOM_OPS: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
];

/// `value` in the forward pass, the identity's gradient with respect to `x` in the backward
/// pass: `value.detach() + (x - x.detach())`. `x - x` is exactly zero for finite `x`, so the
/// forward pass is the plain graph's. Unchanged when `x` needs no gradient or is not a float
/// tensor of `value`'s shape and type.
fn straight_through(x: &Tensor, value: &Tensor) -> Result<Tensor> {
    if !x.requires_grad()
        || !x.is_floating_point()
        || x.kind() != value.kind()
        || x.size() != value.size()
    {
        return Ok(value.shallow_clone());
    }
    Ok(value.f_detach()?.f_add(&x.f_sub(&x.f_detach()?)?)?)
}

/// What the scan says about one operator type: its effect and surrogate, or `None` when its
/// gradient is fine.
fn op_concern(op: &str) -> Option<(OpEffect, Option<&'static str>)> {
    if STRAIGHT_THROUGH_OPS.contains(&op) {
        Some((OpEffect::ZeroGradient, Some("identity (straight-through)")))
    } else if ZERO_GRADIENT_OPS.contains(&op) {
        Some((OpEffect::ZeroGradient, None))
    } else if RANDOM_OPS.contains(&op) {
        Some((OpEffect::Random, None))
    } else {
        None
    }
}

impl std::fmt::Debug for OnnxGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxGraph").field("origin", &self.origin).finish_non_exhaustive()
    }
}

fn unsupported_reasons(graph: &Graph) -> Vec<String> {
    let mut reasons = Vec::new();
    let opset = graph.opset;
    if !SUPPORTED_OPSETS.contains(&opset) {
        reasons.push(format!(
            "opset {opset} is not supported (supported: {} to {})",
            SUPPORTED_OPSETS.start(),
            SUPPORTED_OPSETS.end()
        ));
    }
    for n in &graph.nodes {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            reasons.push(format!(
                "unsupported operator {}::{} (node '{}', opset {opset})",
                n.domain, n.op_type, n.name
            ));
            continue;
        }
        match ops::known_attributes(&n.op_type, opset) {
            None => reasons.push(format!(
                "unsupported operator {} (node '{}', opset {opset})",
                n.op_type, n.name
            )),
            Some(known) => {
                for attr in n.attrs.keys() {
                    if !known.contains(&attr.as_str()) {
                        reasons.push(format!(
                            "unsupported attribute '{attr}' of operator {} (node '{}', opset {opset})",
                            n.op_type, n.name
                        ));
                    }
                }
            }
        }
    }
    reasons
}

/// For each node, the non-constant, non-output slots it is the last reader of.
fn last_uses(graph: &Graph) -> Vec<Vec<usize>> {
    let mut keep = vec![false; graph.slots];
    for (s, _) in &graph.constants {
        keep[*s] = true;
    }
    for (_, s) in &graph.outputs {
        keep[*s] = true;
    }
    let mut last: Vec<Option<usize>> = vec![None; graph.slots];
    for (i, n) in graph.nodes.iter().enumerate() {
        for s in n.inputs.iter().flatten() {
            last[*s] = Some(i);
        }
    }
    let mut release = vec![Vec::new(); graph.nodes.len()];
    for (s, l) in last.iter().enumerate() {
        if let (Some(i), false) = (l, keep[s]) {
            release[*i].push(s);
        }
    }
    release
}

impl OnnxGraph {
    /// Reads and checks the model at `path` (external data is looked up next to it).
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), path.parent(), device)
    }

    /// Decodes and checks a model from memory; `origin` names it in messages, `base_dir` is
    /// where external data files are (none: external data is an error).
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        base_dir: Option<&Path>,
        device: Device,
    ) -> Result<Self> {
        let graph = graph::decode(bytes, base_dir).map_err(|e| GibbonError::format(origin, e.0))?;
        if let Some(first) = unsupported_reasons(&graph).into_iter().next() {
            return Err(GibbonError::model(origin, first));
        }
        let mut g = OnnxGraph {
            graph,
            release: Vec::new(),
            origin: origin.to_string(),
            device,
            straight_through: false,
        };
        g.fold_constants()?;
        g.release = last_uses(&g.graph);
        for (_, t) in g.graph.constants.iter_mut() {
            *t = t.f_to_device(device)?.f_detach()?;
        }
        Ok(g)
    }

    fn node_error(&self, node: &graph::Node, e: ops::OpError) -> GibbonError {
        GibbonError::model(
            &self.origin,
            format!("node '{}' ({}, opset {}): {}", node.name, node.op_type, self.graph.opset, e.0),
        )
    }

    /// Evaluates, once, every node whose inputs are all constants.
    fn fold_constants(&mut self) -> Result<()> {
        let mut constant: Vec<Option<Tensor>> = (0..self.graph.slots).map(|_| None).collect();
        for (s, t) in &self.graph.constants {
            constant[*s] = Some(t.shallow_clone());
        }
        let mut kept = Vec::new();
        let nodes = std::mem::take(&mut self.graph.nodes);
        for node in nodes {
            let all_constant = node.inputs.iter().flatten().all(|s| constant[*s].is_some());
            if !all_constant {
                kept.push(node);
                continue;
            }
            let ins: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|s| s.and_then(|s| constant[s].as_ref().map(|t| t.shallow_clone())))
                .collect();
            let outs = tch::no_grad(|| ops::run(&node, &ins, self.graph.opset))
                .map_err(|e| self.node_error(&node, e))?;
            for (slot, t) in node.outputs.iter().zip(outs) {
                if let Some(s) = slot {
                    self.graph.constants.push((*s, t.shallow_clone()));
                    constant[*s] = Some(t);
                }
            }
        }
        self.graph.nodes = kept;
        Ok(())
    }

    /// Names and declared shapes of the graph inputs (initializers excluded).
    pub fn inputs(&self) -> Vec<(String, String)> {
        self.graph.inputs.iter().map(|(v, _)| (v.name.clone(), v.shape_text())).collect()
    }

    /// The declared dimensions of graph input `i` (`Err` holds a symbolic dimension's name),
    /// if it declares a shape.
    pub fn input_dims(&self, i: usize) -> Option<Vec<std::result::Result<i64, String>>> {
        self.graph.inputs.get(i).and_then(|(v, _)| v.dims.clone())
    }

    /// Names and declared shapes of the graph outputs.
    pub fn outputs(&self) -> Vec<(String, String)> {
        self.graph.outputs.iter().map(|(v, _)| (v.name.clone(), v.shape_text())).collect()
    }

    /// Zero tensors of the declared input shapes and types (symbolic or unknown dimensions
    /// become `dynamic`), e.g. to probe a graph; an input without a declared shape is an error.
    pub fn example_inputs(&self, dynamic: i64) -> Result<Vec<Tensor>> {
        self.graph
            .inputs
            .iter()
            .map(|(info, _)| {
                let dims = info.dims.as_ref().ok_or_else(|| {
                    GibbonError::model(
                        &self.origin,
                        format!("input '{}' has no declared shape", info.name),
                    )
                })?;
                let shape: Vec<i64> = dims.iter().map(|d| d.clone().unwrap_or(dynamic)).collect();
                if shape.iter().any(|d| *d < 0)
                    || shape
                        .iter()
                        .try_fold(1i64, |n, d| n.checked_mul(*d))
                        .is_none_or(|n| n > 1 << 24)
                {
                    return Err(GibbonError::model(
                        &self.origin,
                        format!("input '{}' has an unusable shape {shape:?}", info.name),
                    ));
                }
                Ok(Tensor::f_zeros(
                    shape.as_slice(),
                    (info.elem_type.unwrap_or(Kind::Float), self.device),
                )?)
            })
            .collect()
    }

    /// The operators of concern among the nodes that run on every pass (constant-folded ones
    /// are off the input path), in evaluation order; `swapped` when this graph runs them
    /// straight-through.
    pub fn graph_scan(&self) -> GraphScan {
        let ops = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let (effect, surrogate) = op_concern(&n.op_type)?;
                let location = if n.name.is_empty() {
                    format!("node #{i} ({})", n.op_type)
                } else {
                    n.name.clone()
                };
                Some(FlaggedOp {
                    op: n.op_type.clone(),
                    effect,
                    location,
                    surrogate: surrogate.map(str::to_string),
                    swapped: self.straight_through && surrogate.is_some(),
                })
            })
            .collect();
        GraphScan {
            source: format!("onnx graph ({} nodes)", self.graph.nodes.len()),
            inspected: true,
            ops,
        }
    }

    /// The default-domain opset the file imports.
    pub fn opset(&self) -> i64 {
        self.graph.opset
    }

    /// Evaluates the graph on `inputs` (one tensor per graph input, in order) and returns the
    /// graph outputs. Differentiable with respect to the inputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_capturing(inputs, None).map(|(outputs, _)| outputs)
    }

    /// [`OnnxGraph::run`], also returning the value of slot `capture` (differentiable).
    pub fn run_capturing(
        &self,
        inputs: &[Tensor],
        capture: Option<usize>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(GibbonError::Mismatch(format!(
                "model {} has {} inputs, got {}",
                self.origin,
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: Vec<Option<Tensor>> = (0..self.graph.slots).map(|_| None).collect();
        for (s, t) in &self.graph.constants {
            values[*s] = Some(t.shallow_clone());
        }
        for ((info, s), x) in self.graph.inputs.iter().zip(inputs) {
            let x = if x.device() != self.device {
                x.f_to_device(self.device)?
            } else {
                x.shallow_clone()
            };
            let x = match info.elem_type {
                Some(k) if k != x.kind() => x.f_to_kind(k)?,
                _ => x,
            };
            values[*s] = Some(x);
        }
        let mut captured = None;
        for (node, release) in self.graph.nodes.iter().zip(&self.release) {
            let ins: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|s| s.and_then(|s| values[s].as_ref().map(|t| t.shallow_clone())))
                .collect();
            let mut outs =
                ops::run(node, &ins, self.graph.opset).map_err(|e| self.node_error(node, e))?;
            if self.straight_through && STRAIGHT_THROUGH_OPS.contains(&node.op_type.as_str()) {
                if let (Some(Some(x)), Some(y)) = (ins.first(), outs.first_mut()) {
                    *y = straight_through(x, y)?;
                }
            }
            for (slot, t) in node.outputs.iter().zip(outs) {
                if let Some(s) = slot {
                    if Some(*s) == capture {
                        captured = Some(t.shallow_clone());
                    }
                    values[*s] = Some(t);
                }
            }
            for s in release {
                values[*s] = None;
            }
        }
        let outputs = self
            .graph
            .outputs
            .iter()
            .map(|(info, s)| {
                values[*s].take().ok_or_else(|| {
                    GibbonError::model(
                        &self.origin,
                        format!("output '{}' was not computed", info.name),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((outputs, captured))
    }
}

/// An ONNX classifier: one input `[batch, ...input_shape]`, logits `[batch, classes]` as the
/// first output.
pub struct OnnxModel {
    graph: OnnxGraph,
    input_shape: Vec<i64>,
    classes: i64,
    device: Device,
    info: ModelInfo,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("info", &self.info).finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads `path` and checks, by a probe forward pass, that it maps inputs of `input_shape`
    /// (one sample) to logits; the probe also determines the class count.
    pub fn load(path: &Path, input_shape: &[i64], device: Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), path.parent(), input_shape, device)
    }

    /// As [`OnnxModel::load`], from memory.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        base_dir: Option<&Path>,
        input_shape: &[i64],
        device: Device,
    ) -> Result<Self> {
        let graph = OnnxGraph::from_bytes(bytes, origin, base_dir, device)?;
        if graph.graph.inputs.len() != 1 {
            return Err(GibbonError::model(
                origin,
                format!(
                    "a classifier needs exactly one graph input, this model has {}",
                    graph.graph.inputs.len()
                ),
            ));
        }
        let declared = &graph.graph.inputs[0].0;
        if let Some(k) = declared.elem_type {
            if !matches!(k, Kind::Float | Kind::Double | Kind::Half) {
                return Err(GibbonError::model(
                    origin,
                    format!(
                        "input '{}' has element type {}, a classifier needs floats",
                        declared.name, declared.elem_type_name
                    ),
                ));
            }
        }
        if let Some(dims) = &declared.dims {
            let fits = dims.len() == input_shape.len() + 1
                && dims[1..]
                    .iter()
                    .zip(input_shape)
                    .all(|(d, s)| d.as_ref().map_or(true, |d| d == s));
            if !fits {
                return Err(GibbonError::Mismatch(format!(
                    "input shape {input_shape:?} does not fit the model {origin}, whose input '{}' is {}",
                    declared.name,
                    declared.shape_text()
                )));
            }
        }
        let mut shape = vec![2];
        shape.extend(input_shape);
        let probe = Tensor::f_zeros(shape.as_slice(), (Kind::Float, device))?;
        let out = tch::no_grad(|| graph.run(&[probe]))?;
        let size = out.first().map(|t| t.size()).unwrap_or_default();
        if size.len() != 2 || size[0] != 2 || size[1] < 2 {
            return Err(GibbonError::model(
                origin,
                format!(
                    "expected logits of shape [batch, classes] but a batch of 2 gave {size:?} (is the batch dimension dynamic?)"
                ),
            ));
        }
        let info = ModelInfo {
            path: origin.to_string(),
            sha256: super::sha256_hex(bytes),
            kind: "onnx".into(),
            arch: None,
        };
        Ok(OnnxModel { graph, input_shape: input_shape.to_vec(), classes: size[1], device, info })
    }

    /// The interpreted graph.
    pub fn graph(&self) -> &OnnxGraph {
        &self.graph
    }

    /// The straight-through (BPDA) view of the same model, for adaptive attacks: every answer
    /// is the plain model's, bit for bit, but the input gradient passes through Round, Floor,
    /// Ceil and Sign as through the identity (`value.detach() + (x - x.detach())`). Its info
    /// says `bpda[...]`, so its results and streams are not mistaken for the plain model's;
    /// its graph scan marks those operators as swapped.
    pub fn with_straight_through(mut self) -> Self {
        if !self.graph.straight_through {
            self.graph.straight_through = true;
            let inner = self.info.arch.clone().unwrap_or_else(|| "onnx".to_string());
            self.info.arch = Some(format!(
                "bpda[{inner}: straight-through {}]",
                STRAIGHT_THROUGH_OPS.join(", ")
            ));
        }
        self
    }

    /// True for the straight-through view ([`OnnxModel::with_straight_through`]).
    pub fn straight_through(&self) -> bool {
        self.graph.straight_through
    }
}

impl Classifier for OnnxModel {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.graph.run(std::slice::from_ref(x))?;
        let logits = out
            .into_iter()
            .next()
            .ok_or_else(|| GibbonError::model(&self.info.path, "the graph returned no output"))?;
        Ok(if logits.kind() == Kind::Float { logits } else { logits.f_to_kind(Kind::Float)? })
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
    fn graph_scan(&self) -> GraphScan {
        self.graph.graph_scan()
    }
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        features::features(self, x, layer)
    }
}

/// What `gibbon inspect` prints about an ONNX file.
#[derive(Debug, Clone)]
pub struct OnnxSummary {
    pub path: String,
    pub sha256: String,
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
    /// (name, element type, shape) of each graph input (initializers excluded).
    pub inputs: Vec<(String, String, String)>,
    /// (name, element type, shape) of each graph output.
    pub outputs: Vec<(String, String, String)>,
    /// Operator counts, by operator type.
    pub operators: BTreeMap<String, usize>,
    /// Number of initializer elements.
    pub parameters: i64,
    /// Why the model cannot be run (empty if every operator and attribute is supported).
    pub unsupported: Vec<String>,
}

/// Reads the ONNX file at `path` and summarizes it without running it.
pub fn inspect(path: &Path) -> Result<OnnxSummary> {
    let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
    let g = graph::decode(&bytes, path.parent()).map_err(|e| GibbonError::format(path, e.0))?;
    let mut operators = BTreeMap::new();
    for n in &g.nodes {
        let name = if n.domain.is_empty() {
            n.op_type.clone()
        } else {
            format!("{}::{}", n.domain, n.op_type)
        };
        *operators.entry(name).or_insert(0) += 1;
    }
    let describe =
        |v: &graph::ValueInfo| (v.name.clone(), v.elem_type_name.clone(), v.shape_text());
    Ok(OnnxSummary {
        path: path.display().to_string(),
        sha256: super::sha256_hex(&bytes),
        ir_version: g.ir_version,
        opset: g.opset,
        producer: g.producer.clone(),
        inputs: g.inputs.iter().map(|(v, _)| describe(v)).collect(),
        outputs: g.outputs.iter().map(|(v, _)| describe(v)).collect(),
        operators,
        parameters: g.parameters,
        unsupported: unsupported_reasons(&g),
    })
}

impl std::fmt::Display for OnnxSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model:      {}", self.path)?;
        writeln!(f, "sha256:     {}", self.sha256)?;
        writeln!(f, "format:     ONNX (IR version {}, opset {})", self.ir_version, self.opset)?;
        if !self.producer.is_empty() {
            writeln!(f, "producer:   {}", self.producer)?;
        }
        for (name, ty, shape) in &self.inputs {
            writeln!(f, "input:      {name} {ty} {shape}")?;
        }
        for (name, ty, shape) in &self.outputs {
            writeln!(f, "output:     {name} {ty} {shape}")?;
        }
        writeln!(f, "parameters: {}", self.parameters)?;
        let total: usize = self.operators.values().sum();
        writeln!(f, "operators:  {total} nodes")?;
        for (op, n) in &self.operators {
            writeln!(f, "  {op:<24} {n}")?;
        }
        if self.unsupported.is_empty() {
            writeln!(f, "supported:  yes (every operator and attribute)")
        } else {
            writeln!(f, "supported:  no")?;
            for r in &self.unsupported {
                writeln!(f, "  {r}")?;
            }
            Ok(())
        }
    }
}
