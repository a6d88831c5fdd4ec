//! Feature layers of an ONNX model (for feature-space detectors such as Mahalanobis): the
//! value of any node, by name, or the penultimate layer, the first input of the last Gemm or
//! MatMul node.
use super::{OnnxGraph, OnnxModel};
use crate::error::{GibbonError, Result};
use crate::model::{unknown_feature_layer, PENULTIMATE, TILE_ROWS};
use tch::{Kind, Tensor};

impl OnnxGraph {
    /// The slot of the feature layer `layer`: a value named so (a node output), or for `None`
    /// and [`PENULTIMATE`] the first input of the last Gemm or MatMul node.
    pub fn feature_slot(&self, layer: Option<&str>) -> Option<usize> {
        let g = &self.graph;
        match layer {
            None | Some(PENULTIMATE) => g
                .nodes
                .iter()
                .rev()
                .find(|n| n.op_type == "Gemm" || n.op_type == "MatMul")
                .and_then(|n| n.inputs.first().copied().flatten()),
            Some(name) => g
                .nodes
                .iter()
                .flat_map(|n| n.outputs.iter().flatten())
                .copied()
                .find(|&s| g.slot_names[s] == name),
        }
    }

    /// The names of the values computed by nodes (candidate feature layers), in order.
    pub fn node_value_names(&self) -> Vec<&str> {
        let g = &self.graph;
        g.nodes
            .iter()
            .flat_map(|n| n.outputs.iter().flatten())
            .map(|&s| g.slot_names[s].as_str())
            .collect()
    }
}

/// The activations `[B, D]` of `layer` (flattened), on tiles, differentiable.
pub(super) fn features(model: &OnnxModel, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
    let slot = model.graph.feature_slot(layer).ok_or_else(|| {
        let names = model.graph.node_value_names();
        let mut listed: Vec<&str> = vec![PENULTIMATE];
        listed.extend(names.iter().rev().take(20).rev());
        unknown_feature_layer(&model.info, layer.unwrap_or(PENULTIMATE), &listed)
    })?;
    crate::model::forward_tiled(x, TILE_ROWS, |t| {
        let (_, captured) = model.graph.run_capturing(std::slice::from_ref(t), Some(slot))?;
        let f = captured.ok_or_else(|| {
            GibbonError::model(&model.info.path, "feature layer was not computed")
        })?;
        Ok(f.f_to_kind(Kind::Float)?.f_flatten(1, -1)?)
    })
}
