//! Median smoothing, one of the feature squeezers of Xu, Evans & Qi 2018 ("Feature squeezing:
//! detecting adversarial examples in deep neural networks"): every value is replaced by the
//! median of the K×K window around it, per channel. The paper's settings: 2×2 for MNIST,
//! 2×2 and 3×3 for CIFAR-10 and ImageNet. It follows `scipy.ndimage.median_filter` (which the
//! paper's code uses): the window covers offsets −⌊K/2⌋ … K−1−⌊K/2⌋ in each direction, borders
//! are reflected (`d c b a | a b c d | d c b a`), and for an even window the upper of the two
//! middle values is taken (rank ⌊K²/2⌋ of the sorted window).
//!
//! Computed on the host (a sort), off the autograd graph: the input gradient through the
//! wrapper is zero, as for a deployed filter (declared not differentiable; BPDA surrogate: the
//! identity).
use super::{with_zero_gradient, DefenseParams, InputDefense, Surrogate};
use crate::error::{GibbonError, Result};
use tch::{Kind, Tensor};

/// Median filter with a K×K window.
#[derive(Debug, Clone, PartialEq)]
pub struct MedianSmoothing {
    size: usize,
}

/// The reflected index of `i` in `0..n` (scipy's `reflect` mode).
fn reflect(mut i: i64, n: i64) -> usize {
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

impl MedianSmoothing {
    /// A K×K median filter (K from 1 to 15).
    pub fn new(size: usize) -> Result<Self> {
        Self::from_params(DefenseParams::parse("median", &format!("size={size}"))?)
    }
    pub(super) fn from_params(mut p: DefenseParams) -> Result<Self> {
        let size = p.integer_in("size", "median:size=K", 1..=15)? as usize;
        p.finish()?;
        Ok(MedianSmoothing { size })
    }

    /// The filtered plane of `h`×`w` values.
    pub fn filter_plane(&self, plane: &[f32], h: usize, w: usize) -> Vec<f32> {
        let k = self.size as i64;
        let lo = -(k / 2);
        let mut window = Vec::with_capacity(self.size * self.size);
        let mut out = Vec::with_capacity(plane.len());
        for r in 0..h as i64 {
            for c in 0..w as i64 {
                window.clear();
                for dr in lo..lo + k {
                    for dc in lo..lo + k {
                        let (rr, cc) = (reflect(r + dr, h as i64), reflect(c + dc, w as i64));
                        window.push(plane[rr * w + cc]);
                    }
                }
                let mid = window.len() / 2;
                let (_, median, _) = window.select_nth_unstable_by(mid, f32::total_cmp);
                out.push(*median);
            }
        }
        out
    }
}

impl InputDefense for MedianSmoothing {
    fn name(&self) -> &'static str {
        "median"
    }
    fn spec(&self) -> String {
        format!("median:size={}", self.size)
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
    fn check_input(&self, shape: &[i64]) -> Result<()> {
        if shape.len() != 3 || shape[1] < 1 || shape[2] < 1 {
            return Err(GibbonError::invalid(
                "defense 'median'",
                format!("input shape {shape:?} is not an image: median smoothing needs [C, H, W]"),
            ));
        }
        Ok(())
    }
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        self.check_input(&size[1..])?;
        let (h, w) = (size[2] as usize, size[3] as usize);
        let host = x.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu).contiguous();
        let values: Vec<f32> = Vec::try_from(host.flatten(0, -1))?;
        let mut out = Vec::with_capacity(values.len());
        for plane in values.chunks(h * w) {
            out.extend(self.filter_plane(plane, h, w));
        }
        let processed = Tensor::from_slice(&out).view(size.as_slice()).to_device(x.device());
        Ok(with_zero_gradient(x, processed))
    }
}
