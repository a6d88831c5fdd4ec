//! L1 on saturated images, against a known answer. For a linear binary classifier
//! f(x) = v·x + c on inputs in the box [0, 1], the smallest L1 perturbation that reaches the
//! boundary moves the coordinates in order of decreasing |v_j|, each as far as the box lets it
//! in the direction that shrinks |f| (a fractional knapsack, so greedy is exact). On binary
//! images (every pixel 0 or 1, as most MNIST pixels are) half of the largest-gradient coordinates
//! cannot move at all, which is where a fixed top-k sparse step stalls ("Mind the box", Croce &
//! Hein 2021). L1-APGD must break every sample at ε 1% above its minimal distance (and, as a
//! check of the answer, none 1% below).
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::threat::{Norm, ThreatModel};
use support::linear;
use tch::{Kind, Tensor};

const SIDE: i64 = 28;
const N: usize = 12;

/// The minimal L1 distance of `x` (flat, in [0, 1]) to the boundary of v·x + c, within the box.
fn box_l1_distance(v: &[f64], x: &[f64], f: f64) -> f64 {
    // Moving coordinate j by t in the direction that shrinks |f| changes f by |v_j| t.
    let shrink_up = f < 0.0; // f must grow: raise where v_j > 0, lower where v_j < 0
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()));
    let (mut need, mut distance) = (f.abs(), 0.0);
    for j in order {
        let up = (v[j] > 0.0) == shrink_up;
        let room = if up { 1.0 - x[j] } else { x[j] };
        let gain = v[j].abs() * room;
        if gain >= need {
            return distance + need / v[j].abs();
        }
        need -= gain;
        distance += room;
    }
    f64::INFINITY
}

#[test]
fn l1_apgd_reaches_the_box_aware_minimal_distance_on_binary_images() {
    let dim = (SIDE * SIDE) as usize;
    let v = gibbon::random::uniform_tensor(5101, &[dim as i64]) * 2.0 - 1.0;
    let x = gibbon::random::uniform_tensor(5102, &[N as i64, 1, SIDE, SIDE])
        .gt(0.8)
        .to_kind(Kind::Float);
    let raw: Vec<f64> = Vec::try_from(
        (x.flatten(1, -1).to_kind(Kind::Double) * v.to_kind(Kind::Double).unsqueeze(0))
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double),
    )
    .unwrap();
    let mut sorted = raw.clone();
    sorted.sort_by(f64::total_cmp);
    let c = -sorted[N / 2] - 0.5;
    let w = Tensor::stack(&[v.zeros_like(), v.shallow_clone()], 0);
    let b = Tensor::from_slice(&[0.0f32, c as f32]);
    let model = linear::with_weights(&[1, SIDE, SIDE], &w, &b);
    let v_host: Vec<f64> = Vec::try_from(v.to_kind(Kind::Double)).unwrap();
    let mut broken_above = 0;
    for (i, &value) in raw.iter().enumerate() {
        let xi = x.get(i as i64).unsqueeze(0);
        let fx = value + c;
        let label = (fx > 0.0) as i64;
        let x_host: Vec<f64> = Vec::try_from(xi.flatten(0, -1).to_kind(Kind::Double)).unwrap();
        let d = box_l1_distance(&v_host, &x_host, fx);
        assert!(d.is_finite() && d > 0.05, "sample {i}: distance {d}");
        let data = Dataset::from_tensor(xi.copy(), vec![label], "binary").unwrap();
        let run = |eps: f64| {
            let threat = ThreatModel::new(Norm::L1, eps).unwrap();
            let settings = EvalSettings { attacks: vec!["apgd-ce".into()], ..Default::default() };
            let (r, _) = evaluate(&model, &data, &threat, &settings, &RunInfo::default()).unwrap();
            assert_eq!(r.clean_accuracy, 1.0);
            r.robust_accuracy
        };
        assert_eq!(run(0.99 * d), 1.0, "sample {i}: broken below the minimal distance {d}");
        let above = run(1.01 * d);
        eprintln!("sample {i}: minimal box-aware L1 distance {d:.3}: robust at 1.01 d = {above}");
        broken_above += (above == 0.0) as usize;
    }
    assert_eq!(
        broken_above, N,
        "L1-APGD broke {broken_above} of {N} at 1.01 x the minimal distance"
    );
}
