//! Square's L2 / L1 moves as a reusable piece (see the parent module for the method).
use super::{l2_proposal, l2_start, side_for, Lp, Patterns, Row};
use crate::random::RngKey;
use crate::tensor::Layout;
use crate::threat::Norm;

/// Square's L2 and L1 moves (start point and proposals, as above), for random searches on
/// other objectives: the guarded model's combined objective (`detect::square_guarded`).
pub(crate) struct MassMoves {
    lp: Lp,
    layout: Layout,
    patterns: Patterns,
}

impl MassMoves {
    /// Moves in `norm` (L2 or L1) for inputs of per-sample `shape` `[C, H, W]`.
    pub(crate) fn new(norm: Norm, shape: &[i64]) -> Self {
        MassMoves { lp: Lp::of(norm), layout: Layout::of(shape), patterns: Patterns::default() }
    }

    fn row(x0: &[f32], best: &[f32]) -> Row {
        Row {
            index: 0,
            seed: 0,
            label: 0,
            target: None,
            x0: x0.to_vec(),
            best: best.to_vec(),
            best_loss: f32::INFINITY,
            iteration: 0,
        }
    }

    /// The start point around the clean input `x0` (perturbation of norm `radius`).
    pub(crate) fn start(&mut self, x0: &[f32], radius: f64, key: RngKey) -> Vec<f32> {
        l2_start(&Self::row(x0, x0), radius, self.lp, self.layout, key, &mut self.patterns)
    }

    /// A proposal from the current point `best` with square fraction `p` (`key`: the
    /// iteration's key).
    pub(crate) fn proposal(
        &mut self,
        x0: &[f32],
        best: &[f32],
        radius: f64,
        p: f64,
        key: RngKey,
    ) -> Vec<f32> {
        let side = side_for(p, self.layout, 3);
        let row = Self::row(x0, best);
        l2_proposal(&row, radius, self.lp, self.layout, side, key, &mut self.patterns)
    }
}
