//! Check 7 (Carlini et al. 2019, section 5.2, "inspect the loss landscape"; Athalye, Carlini &
//! Wagner 2018, section 3, shattered and stochastic gradients): walk from each correctly
//! classified input along the input gradient's steepest-ascent direction and along random
//! directions of the same norm, and compare what the attacker's loss (the logit margin, scale
//! free, so a saturated softmax does not flatten it) does. Two symptoms:
//! - **uninformative**: a full ε step along the gradient raises the loss no more than the best
//!   of [`RANDOM_DIRECTIONS`] random steps. On a differentiable classifier the first-order
//!   direction beats random directions almost always (in d dimensions a random sign vector is
//!   nearly orthogonal to the gradient); a gradient that is scrambled, random or pointing the
//!   wrong way does not.
//! - **jagged**: on the first quarter of the way (ε/4, [`LINE_POINTS`] points) the loss goes
//!   up and down: its total variation is more than [`MAX_JAGGEDNESS`] times its net change. A
//!   smooth or piecewise-linear network is close to linear that near the input (ratio near 1);
//!   a shattered gradient (a high-frequency or quantizing layer) is not.
//!
//! On a randomized model both the gradient and every loss value are means over
//! [`SUITE_EOT_DRAWS`] passes, so the check measures the landscape, not one draw's noise.
use super::{fraction, AuditSubject, Check, Finding};
use crate::attack::steepest_direction;
use crate::error::Result;
use crate::eval::SUITE_EOT_DRAWS;
use crate::random::RngKey;
use crate::threat::goal::margin;
use serde_json::json;
use tch::{Kind, Tensor};

/// Random directions compared with the gradient's, per sample.
pub const RANDOM_DIRECTIONS: usize = 8;

/// Fires when the gradient step beats every random step on fewer than this fraction of the
/// samples with a nonzero gradient (an honest model: nearly all of them).
pub const MIN_BEATS_RANDOM: f64 = 0.5;

/// Points on the local segment `[0, ε/4]` along the gradient direction.
pub const LINE_POINTS: usize = 8;

/// Share of ε the local segment covers.
pub const LOCAL_SHARE: f64 = 0.25;

/// Fires when the median ratio of the loss's total variation to its net change along the
/// local segment exceeds this.
pub const MAX_JAGGEDNESS: f64 = 3.0;

/// Loss changes below this (relative to the loss's scale) count as flat, not jagged.
const FLAT: f64 = 1e-6;

/// Fires when the gradient direction is uninformative or the landscape along it is jagged.
/// Remedies: BPDA where the graph has swappable ops, and gradient-free attacks.
pub struct LossLandscape;

/// The attacker's loss: `max_{j≠y} z_j - z_y` (higher is better for the attacker).
fn attacker_loss(logits: &Tensor, y: &Tensor) -> Tensor {
    -margin(logits, y, None)
}

struct Probe<'s, 'a> {
    subject: &'s AuditSubject<'a>,
    y: Tensor,
    draws: usize,
}

impl Probe<'_, '_> {
    /// Per-sample loss `[m]`, averaged over `draws` passes.
    fn loss(&self, x: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let mut sum = attacker_loss(&self.subject.model.logits(x)?, &self.y).to_kind(Kind::Double);
        for _ in 1..self.draws {
            sum += attacker_loss(&self.subject.model.logits(x)?, &self.y).to_kind(Kind::Double);
        }
        Ok(sum / self.draws as f64)
    }

    /// The loss's input gradient, averaged over `draws` passes.
    fn gradient(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.y.shallow_clone();
        let loss = move |z: &Tensor| attacker_loss(z, &y);
        let mut sum = self.subject.model.loss_and_input_grad(x, &loss)?.2;
        for _ in 1..self.draws {
            sum += self.subject.model.loss_and_input_grad(x, &loss)?.2;
        }
        Ok(sum / self.draws as f64)
    }

    /// Loss gain `[m]` of the step `x + scale·d`, projected onto the threat model's ball ∩ box.
    fn gain(&self, x: &Tensor, base: &Tensor, d: &Tensor, scale: f64) -> Result<Tensor> {
        let t = self.subject.threat;
        Ok(self.loss(&t.project(x, &(x + d * scale)))? - base)
    }
}

/// Random steepest-ascent directions, one per sample, from the sample's own key.
fn random_direction(subject: &AuditSubject, indices: &[usize], like: &Tensor, k: usize) -> Tensor {
    let per = like.numel() / indices.len().max(1);
    let mut v: Vec<f32> = Vec::with_capacity(like.numel());
    for &i in indices {
        let key = RngKey::new(subject.seed, i).stream(0x1a4d_0000 + k as u64);
        v.extend(key.normal(per).into_iter().map(|z| z as f32));
    }
    let r = Tensor::from_slice(&v).view(like.size().as_slice()).to_device(like.device());
    steepest_direction(subject.threat.norm, &r)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

impl Check for LossLandscape {
    fn name(&self) -> &'static str {
        "landscape"
    }
    fn question(&self) -> &'static str {
        "does the loss rise along the gradient more than along random directions, and smoothly?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let clean = subject.clean()?;
        let draws = if subject.randomized()? { SUITE_EOT_DRAWS } else { 1 };
        let probe = Probe { subject, y: clean.y.shallow_clone(), draws };
        let eps = subject.threat.eps;
        let x = &clean.x;
        let grad = probe.gradient(x)?;
        let flat_grad = grad.flatten(1, -1).to_kind(Kind::Double);
        let usable: Vec<bool> = Vec::try_from(
            &flat_grad
                .isfinite()
                .all_dim(1, false)
                .logical_and(&flat_grad.abs().amax(1, false).gt(0.0)),
        )?;
        let d = steepest_direction(subject.threat.norm, &grad.nan_to_num(0.0, 0.0, 0.0));
        let base = probe.loss(x)?;
        let along: Vec<f64> = Vec::try_from(&probe.gain(x, &base, &d, eps)?)?;
        let mut best_random = vec![f64::NEG_INFINITY; along.len()];
        for k in 0..RANDOM_DIRECTIONS {
            let r = random_direction(subject, &clean.indices, x, k);
            let g: Vec<f64> = Vec::try_from(&probe.gain(x, &base, &r, eps)?)?;
            for (b, v) in best_random.iter_mut().zip(g) {
                *b = b.max(v);
            }
        }
        // The local segment: total variation against net change.
        let mut previous = base.shallow_clone();
        let mut variation = base.zeros_like();
        for p in 1..=LINE_POINTS {
            let scale = eps * LOCAL_SHARE * p as f64 / LINE_POINTS as f64;
            let v = probe.loss(&subject.threat.project(x, &(x + &d * scale)))?;
            variation += (&v - &previous).abs();
            previous = v;
        }
        let net: Vec<f64> = Vec::try_from(&(&previous - &base).abs())?;
        let variation: Vec<f64> = Vec::try_from(&variation)?;
        let scale: Vec<f64> = Vec::try_from(&base.abs().clamp_min(1.0))?;
        let live: Vec<usize> = (0..along.len()).filter(|&i| usable[i]).collect();
        let beats = live.iter().filter(|&&i| along[i] > best_random[i]).count();
        let ratios: Vec<f64> = live
            .iter()
            .filter(|&&i| variation[i] > FLAT * scale[i])
            .map(|&i| variation[i] / net[i].max(FLAT * scale[i]))
            .collect();
        let f_beats = fraction(beats, live.len());
        let jaggedness = median(ratios);
        let uninformative = !live.is_empty() && f_beats < MIN_BEATS_RANDOM;
        let jagged = jaggedness.is_some_and(|j| j > MAX_JAGGEDNESS);
        let fired = uninformative || jagged;
        let verdict = self.verdict(beats, live.len(), jaggedness, uninformative, jagged);
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired,
            verdict,
            evidence: json!({
                "samples": along.len(),
                "samples_with_gradient": live.len(),
                "gradient_beats_random": f_beats,
                "min_gradient_beats_random": MIN_BEATS_RANDOM,
                "random_directions": RANDOM_DIRECTIONS,
                "median_gain_along_gradient": median(live.iter().map(|&i| along[i]).collect()),
                "median_best_random_gain": median(live.iter().map(|&i| best_random[i]).collect()),
                "median_jaggedness": jaggedness,
                "max_jaggedness": MAX_JAGGEDNESS,
                "passes_per_value": draws,
            }),
            remedies: if fired { subject.unusable_gradient_remedies() } else { Vec::new() },
        })
    }
}

impl LossLandscape {
    fn verdict(
        &self,
        beats: usize,
        live: usize,
        jaggedness: Option<f64>,
        uninformative: bool,
        jagged: bool,
    ) -> String {
        if live == 0 {
            return "no sample has a nonzero finite gradient to follow (see the gradients check)"
                .to_string();
        }
        let jag = jaggedness.map_or("flat".to_string(), |j| format!("{j:.2}"));
        let mut verdict = format!(
            "an ε step along the gradient beat {RANDOM_DIRECTIONS} random steps on {beats} of \
             {live} samples; loss variation / net change near the input: {jag}"
        );
        if uninformative {
            verdict.push_str(": the gradient does not point uphill");
        }
        if jagged {
            verdict.push_str(": the landscape is jagged (shattered gradients)");
        }
        verdict
    }
}
