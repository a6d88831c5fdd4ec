//! FAB's local linear model (Croce & Hein 2020, "Minimally distorted adversarial examples with a
//! fast adaptive boundary attack", ICML): the input gradients of the logit differences taken by
//! one forward + backward pass, kept per row. A FAB step needs the hyperplane `f + w·(z - p)` at
//! its start point `p`; after a success the start point is the iterate moved back towards the
//! clean input, and gibbon takes its `f` from the logits of a forward-only check of that point
//! and its `w` from the gradients of the pass at the iterate (exact for a model that is linear
//! between the two points), instead of a second forward + backward pass.
use super::fab_projection::dual_norm;
use crate::error::{GibbonError, Result};
use crate::threat::Norm;
use tch::{Kind, Tensor};

/// Which logit differences one pass linearises, per row.
pub(super) enum Hyperplanes {
    /// One pair per row (`[B, 1]` class columns): the class that should win and the one that
    /// should lose.
    Pair { plus: Tensor, minus: Tensor },
    /// Every class against the label (`[B, 1]`); untargeted FAB heads for the nearest.
    All { label: Tensor },
}

/// The gradients of one pass (float64).
pub(super) enum Slopes {
    /// `∇(f_plus - f_minus)`, `[B, D]`.
    Pair { plus: Tensor, minus: Tensor, w: Tensor },
    /// `∇(f_k - f_label)` for every class `k`, `[B, K, D]`, and their dual norms `[B, K]`.
    All { label: Tensor, dg: Tensor, dual: Tensor },
}

impl Slopes {
    /// The backward passes through `logits` (computed from `xg`, which requires grad) for the
    /// hyperplanes `planes`; one for a pair, one per class otherwise.
    pub(super) fn at(
        xg: &Tensor,
        logits: &Tensor,
        planes: Hyperplanes,
        norm: Norm,
    ) -> Result<Self> {
        let grad_of = |scalar: Tensor, keep: bool| -> Result<Tensor> {
            let g = Tensor::f_run_backward(&[scalar], &[xg], keep, false)?;
            let g =
                g.into_iter().next().ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
            Ok(g.flatten(1, -1).to_kind(Kind::Double))
        };
        match planes {
            Hyperplanes::Pair { plus, minus } => {
                let diff = logits.gather(1, &plus, false) - logits.gather(1, &minus, false);
                let w = grad_of(diff.sum(Kind::Float), false)?;
                Ok(Slopes::Pair { plus, minus, w })
            }
            Hyperplanes::All { label } => {
                let classes = logits.size()[1];
                let mut grads = Vec::with_capacity(classes as usize);
                for k in 0..classes {
                    grads.push(grad_of(logits.select(1, k).sum(Kind::Float), k + 1 < classes)?);
                }
                let jac = Tensor::stack(&grads, 1);
                let (b, dims) = (jac.size()[0], jac.size()[2]);
                let own = jac.gather(1, &label.unsqueeze(2).expand([b, 1, dims], false), false);
                let dg = jac - own;
                let dual = dual_norm(norm, &dg, 2) + 1e-12;
                Ok(Slopes::All { label, dg, dual })
            }
        }
    }

    /// The hyperplane of each row at a point with logits `logits`: the value `f` (`[B]`,
    /// positive once the goal is reached) and the normal `w` (`[B, D]`); untargeted FAB picks
    /// the class whose boundary is nearest, `|f_k - f_y| / ‖∇(f_k - f_y)‖_dual`.
    pub(super) fn hyperplane(&self, logits: &Tensor) -> (Tensor, Tensor) {
        let z = logits.detach().to_kind(Kind::Double);
        match self {
            Slopes::Pair { plus, minus, w } => {
                let f = z.gather(1, plus, false) - z.gather(1, minus, false);
                (f.squeeze_dim(1), w.shallow_clone())
            }
            Slopes::All { label, dg, dual } => {
                let (b, dims) = (dg.size()[0], dg.size()[2]);
                let df = &z - z.gather(1, label, false);
                let dist = (df.abs() / dual).scatter_value(1, label, f64::INFINITY);
                let nearest = dist.argmin(1, true);
                let f = df.gather(1, &nearest, false).squeeze_dim(1);
                let w = dg
                    .gather(1, &nearest.unsqueeze(2).expand([b, 1, dims], false), false)
                    .squeeze_dim(1);
                (f, w)
            }
        }
    }
}
