//! Bit-depth reduction, one of the feature squeezers of Xu, Evans & Qi 2018 ("Feature
//! squeezing: detecting adversarial examples in deep neural networks"): each value in [0, 1]
//! becomes round(x·(2^d − 1)) / (2^d − 1), leaving exactly 2^d levels. The paper's settings:
//! 1 bit for MNIST, 5 bits for CIFAR-10 and 4 bits for ImageNet.
//!
//! Computed with torch `round`, whose gradient is zero: a plain gradient attack sees a zero
//! input gradient through it (declared not differentiable; BPDA surrogate: the identity).
use super::{DefenseParams, InputDefense, Surrogate};
use crate::error::Result;
use tch::Tensor;

/// Bit-depth reduction to `depth` bits per value.
#[derive(Debug, Clone, PartialEq)]
pub struct BitDepth {
    depth: u32,
}

impl BitDepth {
    /// Reduction to `depth` bits (1–8).
    pub fn new(depth: u32) -> Result<Self> {
        let mut p = DefenseParams::parse("bits", &format!("depth={depth}"))?;
        Self::from_params_ref(&mut p)
    }
    pub(super) fn from_params(mut p: DefenseParams) -> Result<Self> {
        let d = Self::from_params_ref(&mut p)?;
        p.finish()?;
        Ok(d)
    }
    fn from_params_ref(p: &mut DefenseParams) -> Result<Self> {
        Ok(BitDepth { depth: p.integer_in("depth", "bits:depth=D", 1..=8)? as u32 })
    }
    /// The number of levels, 2^depth.
    pub fn levels(&self) -> u32 {
        1 << self.depth
    }
}

impl InputDefense for BitDepth {
    fn name(&self) -> &'static str {
        "bits"
    }
    fn spec(&self) -> String {
        format!("bits:depth={}", self.depth)
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn bpda_surrogate(&self) -> Surrogate {
        Surrogate::Identity
    }
    fn check_input(&self, _shape: &[i64]) -> Result<()> {
        Ok(())
    }
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let top = f64::from(self.levels() - 1);
        Ok((x.clamp(0.0, 1.0) * top).round() / top)
    }
}
