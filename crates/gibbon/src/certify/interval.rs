//! Interval bound propagation (IBP): a deterministic L∞ certificate for gibbon's own
//! architectures.
//!
//! The input set `{x' : ‖x' − x‖∞ ≤ ε} ∩ box` is a box, and a box pushed through an affine layer
//! is contained in the box with centre `W·m + b` and half-width `|W|·r`; ReLU and max-pooling are
//! monotone, so they map the lower and upper corners. Propagated layer by layer this bounds every
//! activation for every point of the ball (the interval domain of Mirman, Gehr & Vechev 2018,
//! "Differentiable Abstract Interpretation for Provably Robust Neural Networks", and of Gowal et
//! al. 2018, "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
//! Models"). As in Gowal et al., the last layer is not bounded on its own: the bound is taken
//! directly on each margin `z_c − z_j = (w_c − w_j)·h + (b_c − b_j)` over the penultimate box,
//! which is tighter. A sample is verified at ε when every margin's lower bound is above
//! [`IBP_MARGIN_TOLERANCE`]: then no point of the ball changes the class, whatever the attack.
//! "Not verified" means unknown, not broken: the bounds are loose on networks not trained for
//! them.
//!
//! The certified radius of a sample is found by bisection ([`IBP_BISECTION_STEPS`] halvings of
//! `[0, max_eps]`); the bound only loosens as ε grows, and the radius reported is a value at
//! which the bound itself was verified. On a linear model IBP is exact: the radius is the minimal
//! L∞ distance to the decision boundary inside the box (`min_j (z_c − z_j) / ‖w_c − w_j‖₁` when
//! the box does not bind, less the tolerance). Certificates run in float64 on the model's
//! weights ([`IntervalNetwork::from_builtin`]); float64's rounding (about 1e-13 of the logits
//! here) is far below the tolerance. [`IntervalNetwork::trainable`] shares the live weights for
//! IBP training.
use crate::error::{GibbonError, Result};
use crate::model::{Arch, BuiltinModel};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Halvings of `[0, max_eps]` in the radius search (resolution `max_eps / 2^30`).
pub const IBP_BISECTION_STEPS: usize = 30;
/// A margin's lower bound must exceed this (logit units) to count as verified: more than the
/// float32 rounding of the deployed model's logits (about 1e-6 of their size), so a verified
/// sample keeps its class in the model as it runs, not only in exact arithmetic.
pub const IBP_MARGIN_TOLERANCE: f64 = 1e-4;
/// Rows bounded per pass.
const IBP_TILE_ROWS: i64 = 128;

/// One layer of the network, as interval arithmetic sees it.
enum Layer {
    /// Convolution (stride 1, no padding: the builtin architectures' only kind).
    Conv {
        w: Tensor,
        abs_w: Tensor,
        b: Tensor,
    },
    /// Fully connected layer.
    Dense {
        w: Tensor,
        abs_w: Tensor,
        b: Tensor,
    },
    Relu,
    MaxPool2,
    Flatten,
}

impl Layer {
    /// The layer applied to the box `[l, u]` (a box containing the image of the box).
    fn bound(&self, l: &Tensor, u: &Tensor) -> (Tensor, Tensor) {
        match self {
            Layer::Conv { w, abs_w, b } | Layer::Dense { w, abs_w, b } => {
                let mid = (l + u) / 2.0;
                let rad = (u - l) / 2.0;
                let (m, r) = match self {
                    Layer::Conv { .. } => (
                        mid.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1),
                        rad.conv2d(abs_w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1),
                    ),
                    _ => (mid.linear(w, Some(b)), rad.linear(abs_w, None::<Tensor>)),
                };
                (&m - &r, &m + &r)
            }
            Layer::Relu => (l.relu(), u.relu()),
            Layer::MaxPool2 => (l.max_pool2d_default(2), u.max_pool2d_default(2)),
            Layer::Flatten => (l.flatten(1, -1), u.flatten(1, -1)),
        }
    }
}

/// A builtin model's layers in float64, ready for interval bounds.
pub struct IntervalNetwork {
    arch: Arch,
    body: Vec<Layer>,
    /// The last layer's weight `[classes, features]` and bias.
    head_w: Tensor,
    head_b: Tensor,
}

impl std::fmt::Debug for IntervalNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalNetwork").field("arch", &self.arch).finish()
    }
}

/// One sample's IBP certificate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct IntervalCertificate {
    /// The class certified (the model's answer on the clean input).
    pub class: i64,
    /// The exact margin of that class at the clean input (float64): `z_c − max_{j≠c} z_j`.
    pub margin: f64,
    /// The largest L∞ ε at which every margin's lower bound was verified positive; `None` when
    /// not even the clean input verifies (a tie, or float64 disagreeing with the model's answer).
    pub radius: Option<f64>,
}

impl IntervalNetwork {
    /// The layers of `model`: linear, MLP and SmallCNN (ReLU networks of convolutions, dense
    /// layers and max-pooling). PreAct ResNet-18 (batch norm, residual sums) is refused.
    pub fn from_builtin(model: &BuiltinModel) -> Result<Self> {
        Self::with_weights(model, |t| t.detach().to_kind(Kind::Double))
    }

    /// The layers of `model` in its own precision, sharing its weights (gradients flow back to
    /// them): interval bounds as a training loss (IBP training, `train::IbpTraining`).
    pub fn trainable(model: &BuiltinModel) -> Result<Self> {
        Self::with_weights(model, Tensor::shallow_clone)
    }

    fn with_weights(model: &BuiltinModel, take: impl Fn(&Tensor) -> Tensor) -> Result<Self> {
        let vars = model.var_store().variables();
        let get = |name: &str| -> Result<Tensor> {
            vars.get(name).map(&take).ok_or_else(|| {
                GibbonError::Internal(format!("interval bounds: the model has no '{name}'"))
            })
        };
        let affine = |name: &str, conv: bool| -> Result<Layer> {
            let w = get(&format!("{name}.weight"))?;
            let b = get(&format!("{name}.bias"))?;
            let abs_w = w.abs();
            Ok(if conv { Layer::Conv { w, abs_w, b } } else { Layer::Dense { w, abs_w, b } })
        };
        let (body, head) = match model.arch() {
            Arch::Linear => (vec![Layer::Flatten], "fc"),
            Arch::Mlp => (
                vec![
                    Layer::Flatten,
                    affine("fc1", false)?,
                    Layer::Relu,
                    affine("fc2", false)?,
                    Layer::Relu,
                ],
                "fc3",
            ),
            Arch::SmallCnn => (small_cnn_layers(&affine)?, "fc3"),
            Arch::PreActResNet18 => {
                return Err(GibbonError::invalid(
                    "arch",
                    "interval bound propagation supports linear, mlp and smallcnn, not \
                     preact-resnet18 (batch norm and residual sums)",
                ))
            }
        };
        Ok(IntervalNetwork {
            arch: model.arch(),
            body,
            head_w: get(&format!("{head}.weight"))?,
            head_b: get(&format!("{head}.bias"))?,
        })
    }

    /// The penultimate box of the inputs `x` (`[N, ...]`) widened by `eps` (`[N]`, one radius
    /// per row) and cut to the box `[lo, hi]`.
    fn penultimate(&self, x: &Tensor, eps: &Tensor, (lo, hi): (f64, f64)) -> (Tensor, Tensor) {
        let x = x.to_kind(self.head_w.kind());
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let e = eps.to_kind(self.head_w.kind()).reshape(shape.as_slice());
        let mut l = (&x - &e).clamp(lo, hi);
        let mut u = (&x + &e).clamp(lo, hi);
        for layer in &self.body {
            (l, u) = layer.bound(&l, &u);
        }
        (l, u)
    }

    /// For each row, the lower bound over the ball of radius `eps[i]` (inside the box) of
    /// `min_{j≠c} z_c − z_j` with `c = classes[i]`: positive means verified.
    pub fn margin_lower_bounds(
        &self,
        x: &Tensor,
        classes: &Tensor,
        eps: &Tensor,
        bounds: (f64, f64),
    ) -> Result<Tensor> {
        let n = x.size()[0];
        if classes.size() != [n] || eps.size() != [n] {
            return Err(GibbonError::Mismatch(format!(
                "interval bounds: {n} inputs, {:?} classes, {:?} radii",
                classes.size(),
                eps.size()
            )));
        }
        Ok(tch::no_grad(|| {
            let tiles: Vec<Tensor> = (0..n)
                .step_by(IBP_TILE_ROWS as usize)
                .map(|s| {
                    let len = IBP_TILE_ROWS.min(n - s);
                    let (l, u) =
                        self.penultimate(&x.narrow(0, s, len), &eps.narrow(0, s, len), bounds);
                    self.margin_bound(&l, &u, &classes.narrow(0, s, len))
                })
                .collect();
            Tensor::cat(&tiles, 0)
        }))
    }

    /// The lower bound of `min_{j≠c} (w_c − w_j)·h + b_c − b_j` over the box `[l, u]` of h.
    fn margin_bound(&self, l: &Tensor, u: &Tensor, classes: &Tensor) -> Tensor {
        let own = classes.one_hot(self.head_w.size()[0]).to_kind(Kind::Bool);
        let lower = self.pair_lower_bounds(l, u, classes);
        lower.masked_fill(&own, f64::INFINITY).min_dim(1, false).0
    }

    /// `[N, classes]`: entry j is the lower bound of `(w_c − w_j)·h + b_c − b_j` over the box
    /// `[l, u]` (0 at j = c).
    fn pair_lower_bounds(&self, l: &Tensor, u: &Tensor, classes: &Tensor) -> Tensor {
        let wc = self.head_w.index_select(0, classes);
        let wd = wc.unsqueeze(1) - self.head_w.unsqueeze(0);
        let bd = self.head_b.index_select(0, classes).unsqueeze(1) - self.head_b.unsqueeze(0);
        let mid = ((l + u) / 2.0).unsqueeze(2);
        let rad = ((u - l) / 2.0).unsqueeze(2);
        wd.bmm(&mid).squeeze_dim(2) - wd.abs().bmm(&rad).squeeze_dim(2) + bd
    }

    /// Gowal et al.'s worst-case logits of the batch `x` with labels `y` over the L∞ ball of
    /// radius `eps` in the box: entry j is minus the lower bound of `z_y − z_j` (0 at j = y), so
    /// cross-entropy on them bounds the loss at every point of the ball. One pass, with a graph
    /// to the weights of a [`IntervalNetwork::trainable`] network.
    pub fn worst_case_logits(
        &self,
        x: &Tensor,
        y: &Tensor,
        eps: f64,
        bounds: (f64, f64),
    ) -> Tensor {
        let radii = Tensor::full([x.size()[0]], eps, (self.head_w.kind(), x.device()));
        let (l, u) = self.penultimate(x, &radii, bounds);
        -self.pair_lower_bounds(&l, &u, y)
    }

    /// Each row's certificate for its class `classes[i]` (normally the model's answer): the
    /// exact clean margin, and the largest ε in `[0, max_eps]` the bisection verified.
    pub fn certify(
        &self,
        x: &Tensor,
        classes: &Tensor,
        bounds: (f64, f64),
        max_eps: f64,
    ) -> Result<Vec<IntervalCertificate>> {
        if !(max_eps.is_finite() && max_eps > 0.0) {
            return Err(GibbonError::invalid("max_eps", format!("{max_eps}: need a finite ε > 0")));
        }
        if x.isnan().any().int64_value(&[]) != 0 {
            return Err(GibbonError::invalid("input", "interval bounds: the input has NaN"));
        }
        let n = x.size()[0];
        let opts = (Kind::Double, x.device());
        let verified = |eps: &Tensor| -> Result<Tensor> {
            Ok(self.margin_lower_bounds(x, classes, eps, bounds)?.gt(IBP_MARGIN_TOLERANCE))
        };
        let margins = self.margin_lower_bounds(x, classes, &Tensor::zeros([n], opts), bounds)?;
        let mut lo = Tensor::zeros([n], opts);
        let mut hi = Tensor::full([n], max_eps, opts);
        lo = lo.where_self(&verified(&hi)?.logical_not(), &hi);
        for _ in 0..IBP_BISECTION_STEPS {
            let mid = (&lo + &hi) / 2.0;
            let ok = verified(&mid)?;
            lo = mid.where_self(&ok, &lo);
            hi = hi.where_self(&ok, &mid);
        }
        let margins = Vec::<f64>::try_from(&margins)?;
        let radii = Vec::<f64>::try_from(&lo)?;
        let classes = Vec::<i64>::try_from(classes)?;
        Ok((0..n as usize)
            .map(|i| IntervalCertificate {
                class: classes[i],
                margin: margins[i],
                radius: (margins[i] > IBP_MARGIN_TOLERANCE).then_some(radii[i]),
            })
            .collect())
    }
}

/// SmallCNN's body: conv32-conv32-pool-conv64-conv64-pool-fc200-fc200 with ReLUs.
fn small_cnn_layers(affine: &dyn Fn(&str, bool) -> Result<Layer>) -> Result<Vec<Layer>> {
    Ok(vec![
        affine("conv1", true)?,
        Layer::Relu,
        affine("conv2", true)?,
        Layer::Relu,
        Layer::MaxPool2,
        affine("conv3", true)?,
        Layer::Relu,
        affine("conv4", true)?,
        Layer::Relu,
        Layer::MaxPool2,
        Layer::Flatten,
        affine("fc1", false)?,
        Layer::Relu,
        affine("fc2", false)?,
        Layer::Relu,
    ])
}

/// Certified accuracy at each radius: the share of `records` (certificate, label) whose class is
/// the label with a verified radius of at least r.
pub fn interval_certified_accuracy(
    records: &[(IntervalCertificate, i64)],
    radii: &[f64],
) -> Vec<(f64, f64)> {
    let n = records.len().max(1) as f64;
    radii
        .iter()
        .map(|&r| {
            let ok = records
                .iter()
                .filter(|(c, y)| c.class == *y && c.radius.is_some_and(|cr| cr >= r))
                .count();
            (r, ok as f64 / n)
        })
        .collect()
}
