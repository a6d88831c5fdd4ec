//! The gradient-free attack on a guarded model, for detectors whose score has no useful
//! gradient (feature squeezing): the Square attack's random search (Andriushchenko, Croce,
//! Flammarion & Hein 2020) on the combined objective of [`super::adaptive`], without its gate:
//!
//!   max(m(x), −κ) + λ·max((s(x) − τ) / σ + δ, 0)
//!
//! It sees the guarded model through forward passes only (the classifier's logits and the
//! detector's score, no graph). The paper's L∞ constants: start at vertical stripes of ±ε, each
//! proposal sets one random square window (side round(√(p·H·W)), at least 1) to x₀ ± ε with one
//! random sign per channel, kept when the objective decreases; p starts at 0.8 and is halved
//! after 10, 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000 iterations (AutoAttack's fixed
//! schedule). One query per proposal (and one for the start); a sample stops at its first
//! point that is misclassified and not flagged. Positions and signs come from the counter-based
//! generator keyed by (seed, sample, iteration).
//!
//! L2 and L1 use Square's own L2 / L1 moves (the start grid of meta pseudo-gaussian patterns
//! and the proposals that move one window's mass into another, [`crate::attack::MassMoves`]),
//! perturbations aimed at norm ε less float32 rounding room; every query point, in every norm,
//! is projected exactly onto the ball ∩ [0, 1], so the kept point is the queried one.
use super::adaptive::GuardedOutcome;
use super::guarded::GuardedModel;
use super::to_f64s;
use crate::attack::MassMoves;
use crate::error::Result;
use crate::random::RngKey;
use crate::threat::goal::margin;
use crate::threat::{rounding_margin, Norm, ThreatModel};
use tch::{Kind, Tensor};

/// The iterations after which p is halved.
const HALVINGS: [usize; 9] = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];

/// Settings of the gradient-free attack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SquareGuardedConfig {
    /// The norm of the ball (L∞, L2 or L1).
    pub norm: Norm,
    /// Radius in that norm.
    pub eps: f64,
    /// Queries per sample.
    pub queries: usize,
    /// Initial square fraction p.
    pub p_init: f64,
    /// Weight λ of the detector term, margin κ and safety margin δ (see the module docs).
    pub lambda: f64,
    pub kappa: f64,
    pub delta: f64,
    /// Seed of the random search.
    pub seed: u64,
}

/// Runs the search on the rows of `x0` `[B, C, H, W]` (labels `y`) where `run` is true; the
/// other rows return their clean input. Every outcome is re-verified by fresh passes.
pub fn square_guarded(
    guarded: &GuardedModel,
    score_scale: f64,
    x0: &Tensor,
    y: &Tensor,
    indices: &[usize],
    run: &[bool],
    config: &SquareGuardedConfig,
) -> Result<Vec<GuardedOutcome>> {
    let size = x0.size();
    let (c, h, w) = (size[1] as usize, size[2] as usize, size[3] as usize);
    let per = c * h * w;
    let clean: Vec<f32> =
        Vec::<f32>::try_from(&x0.to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1))?;
    let rows: Vec<usize> = (0..indices.len()).filter(|&r| run[r]).collect();
    let threat = ThreatModel::new(config.norm, config.eps)?;
    let radius = match config.norm {
        Norm::L2 => {
            let room = rounding_margin(Kind::Float, x0, threat.bounds, Norm::L2);
            (config.eps - 2.0 * room).max(0.0)
        }
        _ => config.eps,
    };
    let mut moves = MassMoves::new(config.norm, &size[1..]);
    let clean_of = |r: usize| &clean[r * per..(r + 1) * per];
    let mut current: Vec<Vec<f32>> = Vec::new();
    for &r in &rows {
        let key = RngKey::new(config.seed, indices[r]);
        current.push(match config.norm {
            Norm::Linf => {
                let signs = key.stream(7).uniform(w);
                (0..per)
                    .map(|k| {
                        let sign = if signs[k % w] < 0.5 { -1.0 } else { 1.0 };
                        (clean[r * per + k] + (sign * config.eps) as f32).clamp(0.0, 1.0)
                    })
                    .collect()
            }
            _ => moves.start(clean_of(r), radius, key),
        });
    }
    let mut best = vec![f64::INFINITY; rows.len()];
    let mut done = vec![false; rows.len()];
    let mut p = config.p_init;
    for it in 0..config.queries {
        if HALVINGS.contains(&it) {
            p /= 2.0;
        }
        let open: Vec<usize> = (0..rows.len()).filter(|&k| !done[k]).collect();
        if open.is_empty() {
            break;
        }
        let side = ((p * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w));
        let candidates: Vec<Vec<f32>> = open
            .iter()
            .map(|&k| {
                if it == 0 {
                    return current[k].clone();
                }
                let r = rows[k];
                let key = RngKey::new(config.seed, indices[r]).step(it);
                if config.norm != Norm::Linf {
                    return moves.proposal(clean_of(r), &current[k], radius, p, key);
                }
                let u = key.uniform(2 + c);
                let top = ((u[0] * (h - side + 1) as f64) as usize).min(h - side);
                let left = ((u[1] * (w - side + 1) as f64) as usize).min(w - side);
                let mut cand = current[k].clone();
                for ch in 0..c {
                    let delta = if u[2 + ch] < 0.5 { -config.eps } else { config.eps } as f32;
                    for i in top..top + side {
                        for j in left..left + side {
                            let at = ch * h * w + i * w + j;
                            cand[at] = (clean[r * per + at] + delta).clamp(0.0, 1.0);
                        }
                    }
                }
                cand
            })
            .collect();
        let flat: Vec<f32> = candidates.iter().flatten().copied().collect();
        let ids = Tensor::from_slice(&open.iter().map(|&k| rows[k] as i64).collect::<Vec<_>>())
            .to_device(x0.device());
        let xb = threat.project(
            &x0.index_select(0, &ids),
            &Tensor::from_slice(&flat)
                .view([open.len() as i64, c as i64, h as i64, w as i64])
                .to_device(x0.device()),
        );
        let queried: Vec<f32> = Vec::<f32>::try_from(
            &xb.to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1),
        )?;
        let candidates: Vec<Vec<f32>> = queried.chunks(per).map(<[f32]>::to_vec).collect();
        let (loss, success) =
            objective(guarded, score_scale, &xb, &y.index_select(0, &ids), config)?;
        for (((&k, cand), l), s) in open.iter().zip(candidates).zip(loss).zip(success) {
            if l < best[k] || s {
                best[k] = l;
                current[k] = cand;
            }
            done[k] |= s;
        }
    }
    let mut adv = clean.clone();
    for (k, &r) in rows.iter().enumerate() {
        adv[r * per..(r + 1) * per].copy_from_slice(&current[k]);
    }
    let adv = Tensor::from_slice(&adv).view(size.as_slice()).to_device(x0.device());
    super::adaptive::verify_outcomes(guarded, x0, y, indices, &adv, config.norm, config.eps)
}

/// The combined objective and "misclassified and not flagged" for a batch, without a graph.
fn objective(
    guarded: &GuardedModel,
    score_scale: f64,
    x: &Tensor,
    y: &Tensor,
    config: &SquareGuardedConfig,
) -> Result<(Vec<f64>, Vec<bool>)> {
    let m = margin(&guarded.model.logits(x)?, y, None).to_kind(Kind::Double);
    let s = guarded.detector.score(guarded.model, x)?.to_kind(Kind::Double);
    let hinge = ((&s - guarded.threshold) / score_scale + config.delta).clamp_min(0.0);
    let loss = m.clamp_min(-config.kappa) + hinge * config.lambda;
    let success = m.lt(0.0).logical_and(&s.le(guarded.threshold));
    Ok((to_f64s(&loss)?, Vec::<bool>::try_from(&success.to_device(tch::Device::Cpu))?))
}
