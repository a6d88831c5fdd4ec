//! What a model's computation graph says about its input gradient, read before any attack runs.
//!
//! Athalye, Carlini & Wagner (2018) found most broken defenses by reading their code: a
//! rounding, a JPEG pass, a `detach` or a random draw on the path from input to logits makes the
//! input gradient zero, undefined or random, and a gradient attack then fails for a reason that
//! has nothing to do with robustness. [`GraphScan`] is gibbon's reading: every model kind that
//! can be inspected lists the operations on its forward path whose gradient is useless, and says
//! which of them gibbon can swap for a straight-through surrogate (BPDA). The audit's graph
//! check (`audit::graph_ops`) reports it; the adaptive plan swaps what can be swapped.
use serde::Serialize;

/// Why an operation defeats gradient attacks.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OpEffect {
    /// Piecewise constant (round, floor, sign, JPEG, bit depth, median, argmax): the gradient
    /// is zero almost everywhere, or not defined.
    ZeroGradient,
    /// The input's value is used but its gradient is cut (`detach`, `no_grad`, a stop-gradient).
    Detached,
    /// A random draw (noise, random resizing, dropout at test time): the gradient of one pass is
    /// one sample of a distribution, and a verdict needs repeated votes.
    Random,
}

/// One operation of concern on the input-to-logits path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlaggedOp {
    /// The operation as the graph names it (`aten::round`, ONNX `Round`, defense `jpeg:75`).
    pub op: String,
    /// Why it matters.
    pub effect: OpEffect,
    /// Where it is: a code file and line in a TorchScript archive, an ONNX node name, a
    /// defense's position in the chain.
    pub location: String,
    /// The differentiable surrogate gibbon can use in the backward pass (BPDA), if any, e.g.
    /// `identity (straight-through)`; `None`: gibbon cannot swap it (the audit then falls back
    /// to gradient-free attacks and says so).
    pub surrogate: Option<String>,
    /// True when this model view already uses the surrogate (a `--bpda` view).
    pub swapped: bool,
}

/// The result of reading a model's graph.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphScan {
    /// What was read, e.g. `torchscript code (4 files)`, `onnx graph (12 nodes)`,
    /// `gibbon architecture`, or why nothing could be read (`remote endpoint`).
    pub source: String,
    /// False when the graph could not be inspected at all: the absence of flagged ops then
    /// proves nothing.
    pub inspected: bool,
    /// Operations of concern, in graph order.
    pub ops: Vec<FlaggedOp>,
}

impl GraphScan {
    /// A model whose graph gibbon cannot read (`why`: what it is).
    pub fn opaque(why: impl Into<String>) -> Self {
        GraphScan { source: why.into(), inspected: false, ops: Vec::new() }
    }

    /// A graph that was read completely and has none of the operations of concern.
    pub fn clean(source: impl Into<String>) -> Self {
        GraphScan { source: source.into(), inspected: true, ops: Vec::new() }
    }

    /// Ops gibbon could swap but this view does not.
    pub fn swappable(&self) -> impl Iterator<Item = &FlaggedOp> {
        self.ops.iter().filter(|o| o.surrogate.is_some() && !o.swapped)
    }

    /// Ops gibbon cannot swap (their gradients stay useless in every view).
    pub fn unswappable(&self) -> impl Iterator<Item = &FlaggedOp> {
        self.ops.iter().filter(|o| o.surrogate.is_none() && o.effect != OpEffect::Random)
    }
}
