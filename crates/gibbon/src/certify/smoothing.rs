//! Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via
//! Randomized Smoothing", ICML; algorithms PREDICT and CERTIFY of section 3.2).
//!
//! The smoothed classifier `g(x) = argmax_c P(f(x + ε) = c)`, `ε ~ N(0, σ² I)`, is robust
//! around `x` within the L2 radius `σ·Φ⁻¹(p_A)` whenever the top class has probability
//! `p_A > 1/2` (theorem 1, with `p_B = 1 - p_A`). CERTIFY picks the class from
//! [`SMOOTHING_N0`] selection draws, bounds `p_A` from below with a one-sided Clopper-Pearson
//! bound at level `1 - α` over [`SMOOTHING_N`] fresh estimation draws, and abstains when the
//! bound is not above 1/2. PREDICT answers the top class of `n` draws when a two-sided
//! binomial test rejects a tie with the runner-up at level α, and abstains otherwise.
//!
//! Noise is counter-based: draw `k` of sample `i` under seed `s` is the same numbers on every
//! machine and in every batch split ([`RngKey`] keyed by seed, sample, stream and draw), so a
//! certificate can be reproduced and a run resumed. The noisy copies go through the model's
//! query path (forward only, no autograd), in batches of `batch` rows.
use crate::error::{GibbonError, Result};
use crate::eval::clopper_pearson;
use crate::model::Classifier;
use crate::random::RngKey;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};
use tch::{Device, Kind, Tensor};

/// Selection draws (the paper's n0).
pub const SMOOTHING_N0: usize = 100;
/// Estimation draws (the paper's n).
pub const SMOOTHING_N: usize = 100_000;
/// Failure probability of one certificate (the paper's α).
pub const SMOOTHING_ALPHA: f64 = 0.001;

/// Streams of the two draws of CERTIFY and of PREDICT.
const SELECTION: u64 = 0x005e_1ec7;
const ESTIMATION: u64 = 0xe571_3a7e;
const PREDICTION: u64 = 0x094e_d1c7;

/// The parameters of PREDICT and CERTIFY.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SmoothingConfig {
    /// Noise standard deviation σ (input units).
    pub sigma: f64,
    /// Selection draws.
    pub n0: usize,
    /// Estimation draws.
    pub n: usize,
    /// Failure probability α.
    pub alpha: f64,
    /// Noisy copies per forward pass.
    pub batch: usize,
    /// Seed of the noise.
    pub seed: u64,
}

impl SmoothingConfig {
    /// The paper's constants at noise level `sigma`.
    pub fn new(sigma: f64) -> Self {
        SmoothingConfig {
            sigma,
            n0: SMOOTHING_N0,
            n: SMOOTHING_N,
            alpha: SMOOTHING_ALPHA,
            batch: 1000,
            seed: 0,
        }
    }

    /// An error naming the first bad parameter.
    pub fn validate(&self) -> Result<()> {
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(GibbonError::invalid("sigma", format!("{} must be > 0", self.sigma)));
        }
        if self.n0 == 0 || self.n == 0 {
            return Err(GibbonError::invalid("draws", "n0 and n must be at least 1"));
        }
        if self.n0 > self.n {
            return Err(GibbonError::invalid(
                "draws",
                format!(
                    "n0 = {} selection draws is more than n = {} estimation draws",
                    self.n0, self.n
                ),
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(GibbonError::invalid("alpha", format!("{} must be in (0, 1)", self.alpha)));
        }
        if self.batch == 0 {
            return Err(GibbonError::invalid("batch", "must be at least 1"));
        }
        Ok(())
    }
}

/// CERTIFY's answer for one input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Certificate {
    /// The smoothed classifier's class, `None` when it abstains.
    pub class: Option<i64>,
    /// Certified L2 radius (0 when abstaining).
    pub radius: f64,
    /// Lower confidence bound on the top class's probability.
    pub p_lower: f64,
    /// Estimation draws that landed in the selected class.
    pub count: usize,
}

/// The smoothed version of a base classifier.
pub struct Smoothed<'a> {
    model: &'a dyn Classifier,
    config: SmoothingConfig,
}

impl<'a> Smoothed<'a> {
    /// `model` smoothed with `config` (checked).
    pub fn new(model: &'a dyn Classifier, config: SmoothingConfig) -> Result<Self> {
        config.validate()?;
        if model.num_classes() < 2 {
            return Err(GibbonError::invalid("model", "smoothing needs at least two classes"));
        }
        Ok(Smoothed { model, config })
    }

    /// The configuration.
    pub fn config(&self) -> &SmoothingConfig {
        &self.config
    }

    /// The base classifier.
    pub fn model(&self) -> &dyn Classifier {
        self.model
    }

    /// Draws `start..start + rows` of the standard normal noise under `key`, `[rows, dim]`.
    pub(crate) fn noise(&self, key: &RngKey, start: usize, rows: usize, dim: usize) -> Tensor {
        let mut noise: Vec<f32> = Vec::with_capacity(rows * dim);
        for draw in start..start + rows {
            noise.extend(key.step(draw).normal(dim).into_iter().map(|z| z as f32));
        }
        Tensor::from_slice(&noise).reshape([rows as i64, dim as i64])
    }

    /// Class counts of `num` noisy copies of `x` (one input, no batch axis), drawn on
    /// `stream` for the sample `index`.
    pub fn counts(&self, x: &Tensor, index: usize, num: usize, stream: u64) -> Result<Vec<usize>> {
        let shape = x.size();
        let dim = x.numel();
        let classes = self.model.num_classes() as usize;
        let mut counts = vec![0usize; classes];
        let x = x.to_device(Device::Cpu).to_kind(Kind::Float).reshape([1, dim as i64]);
        let key = RngKey::new(self.config.seed, index).stream(stream);
        let mut done = 0;
        while done < num {
            let rows = self.config.batch.min(num - done);
            let noise = self.noise(&key, done, rows, dim);
            let mut full = vec![rows as i64];
            full.extend_from_slice(&shape);
            let noisy = (&x + noise * self.config.sigma).reshape(full.as_slice());
            let pred = self.model.query_predict(&noisy.to_device(self.model.device()))?;
            let pred: Vec<i64> = Vec::try_from(&pred.to_device(Device::Cpu))?;
            for c in pred {
                let c = usize::try_from(c).ok().filter(|&c| c < classes).ok_or_else(|| {
                    GibbonError::Internal(format!("model predicted class {c} of {classes}"))
                })?;
                counts[c] += 1;
            }
            done += rows;
        }
        Ok(counts)
    }

    /// CERTIFY for the input `x` of sample `index`.
    pub fn certify(&self, x: &Tensor, index: usize) -> Result<Certificate> {
        let selection = self.counts(x, index, self.config.n0, SELECTION)?;
        let top = argmax(&selection);
        let estimation = self.counts(x, index, self.config.n, ESTIMATION)?;
        let count = estimation[top];
        // One-sided lower bound at level 1 - α: the two-sided interval at level 1 - 2α.
        let p_lower = clopper_pearson(count, self.config.n, 2.0 * self.config.alpha).0;
        if p_lower <= 0.5 {
            return Ok(Certificate { class: None, radius: 0.0, p_lower, count });
        }
        let radius = self.config.sigma * standard_normal().inverse_cdf(p_lower);
        Ok(Certificate { class: Some(top as i64), radius, p_lower, count })
    }

    /// PREDICT with `n` draws for the input `x` of sample `index`: the top class, or `None`
    /// (abstain) when a binomial test cannot tell it from the runner-up at level α.
    pub fn predict(&self, x: &Tensor, index: usize, n: usize) -> Result<Option<i64>> {
        self.predict_with(x, index, n, PREDICTION)
    }

    /// PREDICT on the noise stream `stream` (fresh draws for each new `stream`).
    pub fn predict_with(
        &self,
        x: &Tensor,
        index: usize,
        n: usize,
        stream: u64,
    ) -> Result<Option<i64>> {
        let counts = self.counts(x, index, n, stream)?;
        let top = argmax(&counts);
        let runner_up = counts.iter().enumerate().filter(|&(c, _)| c != top).map(|(_, &k)| k);
        let (a, b) = (counts[top], runner_up.max().unwrap_or(0));
        Ok((binomial_two_sided(a, a + b) <= self.config.alpha).then_some(top as i64))
    }
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal is valid")
}

/// The first class with the largest count.
fn argmax(counts: &[usize]) -> usize {
    let mut best = 0;
    for (c, &k) in counts.iter().enumerate() {
        if k > counts[best] {
            best = c;
        }
    }
    best
}

/// Two-sided p-value of `k` successes in `n` fair coin flips (`scipy.stats.binomtest`'s for
/// p = 1/2, where the two tails are mirror images).
pub fn binomial_two_sided(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let bin = Binomial::new(0.5, n as u64).expect("p = 1/2 is valid");
    let k = k.max(n - k) as u64;
    // P(X >= k) = 1 - P(X <= k - 1).
    let upper = if k == 0 { 1.0 } else { 1.0 - bin.cdf(k - 1) };
    (2.0 * upper).min(1.0)
}

/// Certified accuracy at each radius (the paper's definition): the fraction of samples whose
/// certificate names the true label with a radius of at least `r`.
pub fn certified_accuracy(certs: &[(Certificate, i64)], radii: &[f64]) -> Vec<(f64, f64)> {
    let n = certs.len().max(1) as f64;
    radii
        .iter()
        .map(|&r| {
            let ok = certs.iter().filter(|(c, y)| c.class == Some(*y) && c.radius >= r).count();
            (r, ok as f64 / n)
        })
        .collect()
}
