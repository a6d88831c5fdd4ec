//! Counter-based randomness: every random number is a pure function of
//! (seed, sample index, restart, step, stream), hashed with SplitMix64.
//!
//! A sample therefore draws the same numbers whatever its batch, its position in the batch or
//! the thread count, which is what makes results independent of `--batch-size`.
use tch::{Device, Kind, Tensor};

/// The coordinates of one random draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RngKey {
    /// The run's seed (`--seed`).
    pub seed: u64,
    /// The sample's index in the dataset.
    pub index: u64,
    /// Restart number.
    pub restart: u64,
    /// Step number inside the restart.
    pub step: u64,
    /// Distinguishes independent uses at the same step (e.g. start point vs. square position).
    pub stream: u64,
}

impl RngKey {
    /// A key for `index` under `seed`, restart 0, step 0, stream 0.
    pub fn new(seed: u64, index: usize) -> Self {
        RngKey { seed, index: index as u64, restart: 0, step: 0, stream: 0 }
    }
    /// The same key at another restart.
    pub fn restart(self, restart: usize) -> Self {
        RngKey { restart: restart as u64, ..self }
    }
    /// The same key at another step.
    pub fn step(self, step: usize) -> Self {
        RngKey { step: step as u64, ..self }
    }
    /// The same key on another stream.
    pub fn stream(self, stream: u64) -> Self {
        RngKey { stream, ..self }
    }
    fn base(&self) -> u64 {
        let mut h = splitmix64(self.seed ^ 0x6a09_e667_f3bc_c908);
        for v in [self.index, self.restart, self.step, self.stream] {
            h = splitmix64(h ^ v);
        }
        h
    }
    /// `n` uniform numbers in [0, 1) (53-bit resolution).
    pub fn uniform(&self, n: usize) -> Vec<f64> {
        let base = self.base();
        (0..n as u64)
            .map(|i| unit(splitmix64(base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))))
            .collect()
    }
    /// `n` standard normal numbers (Box-Muller on pairs of uniforms).
    pub fn normal(&self, n: usize) -> Vec<f64> {
        let u = self.stream(self.stream ^ 0x5bd1_e995).uniform(n + n % 2);
        let mut out = Vec::with_capacity(n + 1);
        for pair in u.chunks(2) {
            let r = (-2.0 * (1.0 - pair[0]).ln()).sqrt();
            let theta = std::f64::consts::TAU * pair[1];
            out.push(r * theta.cos());
            out.push(r * theta.sin());
        }
        out.truncate(n);
        out
    }
    /// A uniform integer in `0..n` (n > 0).
    pub fn below(&self, n: usize) -> usize {
        ((self.uniform(1)[0] * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// The SplitMix64 finaliser (Steele, Lea & Flood 2014).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Stacks one draw per key into a float32 tensor `[keys.len(), ...shape]`.
pub fn stacked(
    keys: &[RngKey],
    shape: &[i64],
    device: Device,
    draw: impl Fn(&RngKey, usize) -> Vec<f64>,
) -> Tensor {
    let per: usize = shape.iter().product::<i64>() as usize;
    let mut values = Vec::with_capacity(per * keys.len());
    for k in keys {
        values.extend(draw(k, per).into_iter().map(|v| v as f32));
    }
    let mut full = vec![keys.len() as i64];
    full.extend(shape);
    Tensor::from_slice(&values).view(full.as_slice()).to_kind(Kind::Float).to_device(device)
}

/// A float32 tensor of uniform numbers in [0, 1) from the counter-based generator under `seed`.
/// Unlike tch's global generator it cannot be disturbed by other threads seeding or drawing
/// concurrently (e.g. tests running in parallel), so the same seed always gives the same tensor.
pub fn uniform_tensor(seed: u64, shape: &[i64]) -> Tensor {
    stacked(&[RngKey::new(seed, 0)], shape, Device::Cpu, |k, n| k.uniform(n)).squeeze_dim(0)
}

/// A float32 tensor of standard normal numbers under `seed` (see [`uniform_tensor`]).
pub fn normal_tensor(seed: u64, shape: &[i64]) -> Tensor {
    stacked(&[RngKey::new(seed, 0)], shape, Device::Cpu, |k, n| k.normal(n)).squeeze_dim(0)
}
