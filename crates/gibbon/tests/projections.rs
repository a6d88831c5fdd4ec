//! Projections onto ball ∩ box land in the set and are the nearest such point.
use gibbon::threat::{
    project_l1_ball_box, project_l2_ball_box, project_linf_ball_box, InputBox, Norm,
};
use proptest::prelude::*;
use tch::{Kind, Tensor};

fn t(v: &[f64]) -> Tensor {
    Tensor::from_slice(v).to_kind(Kind::Double).view([1, v.len() as i64])
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    Vec::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

fn in_set(z: &[f64], x: &[f64], eps: f64, bx: InputBox, norm: Norm) -> bool {
    let d: Vec<f64> = z.iter().zip(x).map(|(a, b)| a - b).collect();
    let n = match norm {
        Norm::Linf => d.iter().fold(0.0f64, |m, v| m.max(v.abs())),
        Norm::L2 => d.iter().map(|v| v * v).sum::<f64>().sqrt(),
        Norm::L1 => d.iter().map(|v| v.abs()).sum(),
    };
    n <= eps + 1e-9 && z.iter().all(|&v| v >= bx.lo - 1e-12 && v <= bx.hi + 1e-12)
}

/// Brute force: the best of many feasible points (grid over the box in 2-D).
fn grid_best(x: &[f64], p: &[f64], eps: f64, bx: InputBox, norm: Norm) -> f64 {
    let steps = 400;
    let mut best = f64::INFINITY;
    for i in 0..=steps {
        for j in 0..=steps {
            let z = [
                bx.lo + (bx.hi - bx.lo) * i as f64 / steps as f64,
                bx.lo + (bx.hi - bx.lo) * j as f64 / steps as f64,
            ];
            if in_set(&z, x, eps, bx, norm) {
                best = best.min(dist2(&z, p));
            }
        }
    }
    best
}

/// KKT check for the L2 projection: z = clip(x + t·d) with the largest feasible t ≤ 1.
fn l2_reference(x: &[f64], p: &[f64], eps: f64, bx: InputBox) -> Vec<f64> {
    let at = |t: f64| {
        x.iter().zip(p).map(|(a, b)| (a + t * (b - a)).clamp(bx.lo, bx.hi)).collect::<Vec<_>>()
    };
    let norm = |z: &[f64]| dist2(z, x).sqrt();
    if norm(&at(1.0)) <= eps {
        return at(1.0);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if norm(&at(mid)) <= eps {
            lo = mid
        } else {
            hi = mid
        }
    }
    at(lo)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn linf_is_clamp_and_nearest(x in prop::collection::vec(0.0f64..1.0, 1..12), seed in 0u64..1000, eps in 0.0f64..0.6) {
        let p: Vec<f64> = x.iter().enumerate().map(|(i, v)| v + ((seed as f64 + i as f64 * 7.3).sin() * 1.5)).collect();
        let z = vec_of(&project_linf_ball_box(&t(&x), &t(&p), eps, InputBox::default()));
        prop_assert!(in_set(&z, &x, eps, InputBox::default(), Norm::Linf));
        for i in 0..x.len() {
            let expect = p[i].clamp((x[i] - eps).max(0.0), (x[i] + eps).min(1.0));
            prop_assert!((z[i] - expect).abs() < 1e-12);
        }
    }

    #[test]
    fn l2_lands_in_set_and_matches_kkt(x in prop::collection::vec(0.0f64..1.0, 1..12), seed in 0u64..1000, eps in 0.0f64..2.0) {
        let p: Vec<f64> = x.iter().enumerate().map(|(i, v)| v + ((seed as f64 * 0.37 + i as f64 * 3.1).cos() * 2.0)).collect();
        let z = vec_of(&project_l2_ball_box(&t(&x), &t(&p), eps, InputBox::default()));
        prop_assert!(in_set(&z, &x, eps, InputBox::default(), Norm::L2));
        let r = l2_reference(&x, &p, eps, InputBox::default());
        prop_assert!(dist2(&z, &r).sqrt() < 1e-6, "z {:?} ref {:?}", z, r);
    }

    #[test]
    fn l2_and_l1_are_nearest_by_brute_force_in_2d(x0 in 0.0f64..1.0, x1 in 0.0f64..1.0, p0 in -1.0f64..2.0, p1 in -1.0f64..2.0, eps in 0.05f64..1.0) {
        let bx = InputBox::default();
        let (x, p) = ([x0, x1], [p0, p1]);
        for norm in [Norm::L2, Norm::L1] {
            let z = match norm {
                Norm::L2 => vec_of(&project_l2_ball_box(&t(&x), &t(&p), eps, bx)),
                _ => vec_of(&project_l1_ball_box(&t(&x), &t(&p), eps, bx)),
            };
            prop_assert!(in_set(&z, &x, eps, bx, norm));
            let best = grid_best(&x, &p, eps, bx, norm);
            // Nearest up to the grid's resolution (cell 1/400).
            prop_assert!(dist2(&z, &p).sqrt() <= best.sqrt() + 4e-3, "{norm}: ours {} grid {}", dist2(&z, &p).sqrt(), best.sqrt());
        }
    }

    #[test]
    fn l1_lands_in_set_and_keeps_inside_points(x in prop::collection::vec(0.0f64..1.0, 1..30), seed in 0u64..1000, eps in 0.0f64..3.0) {
        let p: Vec<f64> = x.iter().enumerate().map(|(i, v)| v + ((seed as f64 * 0.11 + i as f64 * 1.7).sin())).collect();
        let z = vec_of(&project_l1_ball_box(&t(&x), &t(&p), eps, InputBox::default()));
        prop_assert!(in_set(&z, &x, eps, InputBox::default(), Norm::L1));
        // A point already inside the set is returned unchanged.
        let inside = vec_of(&project_l1_ball_box(&t(&x), &t(&z), eps, InputBox::default()));
        prop_assert!(dist2(&inside, &z).sqrt() < 1e-7);
    }
}

#[test]
fn float32_projection_passes_the_verifier_tolerance() {
    // 784-dimensional float32 inputs: the stored example must stay within eps + 1e-6.
    let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
    let p = &x + Tensor::randn([8, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
    for (norm, eps) in [(Norm::L2, 1.5), (Norm::L1, 10.0), (Norm::Linf, 0.3)] {
        let z = match norm {
            Norm::L2 => project_l2_ball_box(&x, &p, eps, InputBox::default()),
            Norm::L1 => project_l1_ball_box(&x, &p, eps, InputBox::default()),
            Norm::Linf => project_linf_ball_box(&x, &p, eps, InputBox::default()),
        };
        assert_eq!(z.kind(), Kind::Float);
        let n: Vec<f64> =
            Vec::try_from(norm.per_sample(&(z.to_kind(Kind::Double) - x.to_kind(Kind::Double))))
                .unwrap();
        for v in n {
            assert!(v <= eps + 1e-6, "{norm}: {v} > {eps}");
            assert!(v >= eps * 0.999, "{norm}: {v} should reach the boundary {eps}");
        }
    }
}
