//! The Mahalanobis detector (Lee, Lee, Lee & Shin 2018, "A simple unified framework for
//! detecting out-of-distribution samples and adversarial attacks"): class-conditional
//! Gaussians with one tied covariance on a feature layer of the classifier, fitted on labelled
//! training data: μ_c = mean of the features of class c, Σ = (1/N) Σ_i (f_i − μ_{y_i})(f_i −
//! μ_{y_i})ᵀ, P = Σ⁺ (pseudo-inverse, eigenvalues below 1e-10 of the largest dropped, as
//! scikit-learn's `EmpiricalCovariance` the authors use). Score = min_c (f(x) − μ_c)ᵀ P (f(x) −
//! μ_c), the squared distance to the closest class (the paper's confidence score M(x) with the
//! sign flipped, so higher is more anomalous).
//!
//! Optional input preprocessing (the paper's "noise"): x̃ = x − ε·sign(∇ₓ d_ĉ(x)) with ĉ the
//! closest class, then the score of x̃. The paper tunes ε on validation data from {0, 0.0005,
//! 0.001, 0.0014, 0.002, 0.005, 0.01}; gibbon's default is ε = 0 (no tuning on OOD data), set
//! with `--noise`. One layer (default: the penultimate), not the paper's feature ensemble
//! (which needs OOD validation data to weight the layers).
use super::{positive, to_f64s, Detector, FitInput, SCORE_BATCH};
use crate::error::{GibbonError, Result};
use crate::model::{Classifier, PENULTIMATE};
use tch::{Device, Kind, Tensor};

/// The fitted Mahalanobis detector.
#[derive(Debug)]
pub struct Mahalanobis {
    /// The feature layer (`penultimate` by default).
    pub layer: String,
    /// Class means `[K, D]` (double).
    means: Tensor,
    /// Tied precision `[D, D]` (double).
    precision: Tensor,
    /// Preprocessing step ε (0: none).
    pub noise: f64,
}

impl Mahalanobis {
    /// A detector from class means `[K, D]`, a tied covariance `[D, D]` and the preprocessing ε.
    pub fn from_moments(
        layer: &str,
        means: &Tensor,
        covariance: &Tensor,
        noise: f64,
    ) -> Result<Self> {
        let precision = covariance.to_kind(Kind::Double).f_linalg_pinv(1e-10, true)?;
        Ok(Mahalanobis {
            layer: layer.to_string(),
            means: means.to_kind(Kind::Double),
            precision,
            noise,
        })
    }

    /// Fits class means and the tied covariance on `features` `[N, D]` with `labels`
    /// (classes 0..`classes`); every class needs at least one sample.
    pub fn fit_features(
        layer: &str,
        features: &Tensor,
        labels: &[i64],
        classes: i64,
        noise: f64,
    ) -> Result<Self> {
        let f = features.to_kind(Kind::Double).to_device(Device::Cpu);
        let y = Tensor::from_slice(labels);
        let mut means = Vec::new();
        for c in 0..classes {
            let rows = y.eq(c).nonzero().squeeze_dim(1);
            if rows.size()[0] == 0 {
                return Err(GibbonError::invalid(
                    "fit-data",
                    format!(
                        "class {c} has no sample: Mahalanobis needs every class in the fit data"
                    ),
                ));
            }
            means.push(f.index_select(0, &rows).mean_dim([0i64].as_slice(), false, Kind::Double));
        }
        let means = Tensor::stack(&means, 0);
        let centered = &f - means.index_select(0, &y);
        let covariance = centered.transpose(0, 1).mm(&centered) / (labels.len() as f64);
        Self::from_moments(layer, &means, &covariance, noise)
    }

    /// Squared distances `[B, K]` of features `[B, D]` to every class mean.
    pub fn distances(&self, features: &Tensor) -> Tensor {
        let f = features.to_kind(Kind::Double);
        let d = f.unsqueeze(1) - self.means.to_device(f.device()).unsqueeze(0);
        (d.matmul(&self.precision.to_device(f.device())) * &d).sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Double,
        )
    }

    fn closest_distance(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        let f = model.features(x, Some(&self.layer))?;
        Ok(self.distances(&f).amin([-1i64].as_slice(), false))
    }
}

impl Detector for Mahalanobis {
    fn kind(&self) -> &'static str {
        "mahalanobis"
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn score_graph(&self, model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        let shifted = if self.noise > 0.0 {
            let step = tch::with_grad(|| -> Result<Tensor> {
                let xg = x.detach().set_requires_grad(true);
                let d = self.closest_distance(model, &xg)?;
                let g = Tensor::f_run_backward(&[d.sum(Kind::Double)], &[&xg], false, false)?;
                let g = g
                    .into_iter()
                    .next()
                    .ok_or_else(|| GibbonError::Internal("no gradient".into()))?;
                Ok(g.sign() * (-self.noise))
            })?;
            x + step
        } else {
            x.shallow_clone()
        };
        self.closest_distance(model, &shifted)
    }
    fn params(&self) -> serde_json::Value {
        let rows = |t: &Tensor| -> Vec<Vec<f64>> {
            (0..t.size()[0]).map(|i| to_f64s(&t.get(i)).unwrap_or_default()).collect()
        };
        serde_json::json!({
            "layer": self.layer,
            "noise": self.noise,
            "means": rows(&self.means),
            "precision": rows(&self.precision),
        })
    }
}

pub(super) fn fit(input: &FitInput) -> Result<Box<dyn Detector>> {
    let data = input.data.ok_or_else(|| {
        GibbonError::invalid(
            "fit-data",
            "mahalanobis is fitted on labelled training data: give --fit-data",
        )
    })?;
    let layer = input.options.feature_layer.clone().unwrap_or_else(|| PENULTIMATE.to_string());
    let noise = positive("noise", input.options.noise, 0.0, true)?;
    let model = input.model;
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut features = Vec::new();
    for chunk in indices.chunks(SCORE_BATCH) {
        let x = data.try_batch(chunk, model.device())?;
        features.push(tch::no_grad(|| model.features(&x, Some(&layer)))?.to_device(Device::Cpu));
    }
    let features = Tensor::cat(&features, 0);
    if features.dim() != 2 {
        return Err(GibbonError::invalid(
            "feature-layer",
            format!("layer '{layer}' gives {:?}, not [B, D]", features.size()),
        ));
    }
    Ok(Box::new(Mahalanobis::fit_features(
        &layer,
        &features,
        data.labels(),
        model.num_classes(),
        noise,
    )?))
}

fn matrix(params: &serde_json::Value, key: &str) -> Result<Tensor> {
    let bad = || {
        GibbonError::invalid(
            "detector file",
            format!("mahalanobis parameter '{key}' is not a matrix of numbers"),
        )
    };
    let rows = params.get(key).and_then(|v| v.as_array()).ok_or_else(bad)?;
    let mut flat = Vec::new();
    let width = rows.first().and_then(|r| r.as_array()).map(Vec::len).ok_or_else(bad)?;
    for r in rows {
        let r = r.as_array().filter(|r| r.len() == width).ok_or_else(bad)?;
        for v in r {
            flat.push(v.as_f64().filter(|v| v.is_finite()).ok_or_else(bad)?);
        }
    }
    Ok(Tensor::from_slice(&flat).view([rows.len() as i64, width as i64]))
}

pub(super) fn load(params: &serde_json::Value) -> Result<Box<dyn Detector>> {
    let layer = params.get("layer").and_then(|v| v.as_str()).unwrap_or(PENULTIMATE).to_string();
    let noise = positive("noise", Some(super::param_f64(params, "noise")?), 0.0, true)?;
    let means = matrix(params, "means")?;
    let precision = matrix(params, "precision")?;
    let d = means.size()[1];
    if precision.size() != [d, d] {
        return Err(GibbonError::invalid(
            "detector file",
            format!("mahalanobis precision is {:?}, means have {d} features", precision.size()),
        ));
    }
    Ok(Box::new(Mahalanobis { layer, means, precision, noise }))
}
