//! The attacks on a guarded model (classifier + calibrated MSP detector, the shared standard
//! SmallCNN) in L2 and L1: the adaptive PGD beats the non-adaptive one, Square's L2 random
//! search on the combined objective breaks guarded inputs, and every returned example is inside
//! the ball and the box and its verdict is what fresh passes say.
mod support;

use gibbon::data::Dataset;
use gibbon::detect::adaptive::{attack_guarded, GuardedAttackConfig, GuardedOutcome};
use gibbon::detect::calibrate::calibrate;
use gibbon::detect::square_guarded::{square_guarded, SquareGuardedConfig};
use gibbon::detect::{entry, score_dataset, Detector, DetectorOptions, FitInput, GuardedModel};
use gibbon::model::{load_model, Arch, Classifier, ModelSpec};
use gibbon::threat::Norm;
use support::{mnist, reference_path};
use tch::{Device, Tensor};

struct Setup {
    model: Box<dyn Classifier>,
    detector: Box<dyn Detector>,
    threshold: f64,
    scale: f64,
}

/// The standard SmallCNN with MSP calibrated to 5% on MNIST test images 2000..2400.
fn setup() -> Setup {
    let spec = ModelSpec::Safetensors(reference_path("std", "safetensors"));
    let model = load_model(&spec, Some(Arch::SmallCnn), &[1, 28, 28], 10, Device::Cpu).unwrap();
    let options = DetectorOptions::default();
    let detector = (entry("msp").unwrap().fit)(&FitInput {
        model: model.as_ref(),
        options: &options,
        data: None,
    })
    .unwrap();
    let all = mnist(2400);
    let rows: Vec<usize> = (2000..2400).collect();
    let calib = Dataset::from_tensor(
        all.try_batch(&rows, Device::Cpu).unwrap(),
        all.labels()[2000..].to_vec(),
        "calib",
    )
    .unwrap();
    let scores =
        score_dataset(detector.as_ref(), model.as_ref(), &calib, Device::Cpu, &mut |_| {}).unwrap();
    let c = calibrate(&scores, 0.05).unwrap();
    Setup { model, detector, threshold: c.threshold, scale: c.score_scale }
}

fn batch(data: &Dataset, n: usize) -> (Tensor, Tensor, Vec<usize>) {
    let idx: Vec<usize> = (0..n).collect();
    (
        data.try_batch(&idx, Device::Cpu).unwrap(),
        data.try_labels_of(&idx, Device::Cpu).unwrap(),
        idx,
    )
}

/// Share of inputs correct or flagged; checks every outcome against the ball and a fresh pass.
fn robust_under_detection(
    g: &GuardedModel,
    outcomes: &[GuardedOutcome],
    norm: Norm,
    eps: f64,
) -> f64 {
    for o in outcomes {
        assert!(o.distance <= eps * (1.0 + 1e-6), "{norm:?} distance {} > {eps}", o.distance);
        assert!(o.success == (o.adv_prediction != o.label && !o.adv_flagged), "{o:?}");
        assert!(o.adv_flagged == (o.adv_score > g.threshold), "{o:?}");
    }
    outcomes.iter().filter(|o| !o.success).count() as f64 / outcomes.len() as f64
}

fn pgd_pair(norm: Norm, eps: f64, n: usize) -> (f64, f64) {
    let s = setup();
    let g = GuardedModel {
        model: s.model.as_ref(),
        detector: s.detector.as_ref(),
        threshold: s.threshold,
    };
    let (x, y, idx) = batch(&mnist(n), n);
    let adaptive = GuardedAttackConfig { steps: 50, ..GuardedAttackConfig::adaptive_in(norm, eps) };
    let naive = GuardedAttackConfig { lambda: 0.0, kappa: 0.0, delta: 0.0, ..adaptive.clone() };
    let a = attack_guarded(&g, s.scale, &x, &y, &idx, &adaptive).unwrap();
    let b = attack_guarded(&g, s.scale, &x, &y, &idx, &naive).unwrap();
    let pair =
        (robust_under_detection(&g, &b, norm, eps), robust_under_detection(&g, &a, norm, eps));
    eprintln!(
        "{norm:?} eps {eps}: robust accuracy under detection {pair:?} (non-adaptive, adaptive)"
    );
    pair
}

#[test]
fn adaptive_l2_pgd_beats_the_non_adaptive_one() {
    let (naive, adaptive) = pgd_pair(Norm::L2, 2.0, 16);
    assert!(naive >= 0.8 && adaptive <= 0.5, "non-adaptive {naive}, adaptive {adaptive}");
}

#[test]
fn adaptive_l1_pgd_beats_the_non_adaptive_one() {
    let (naive, adaptive) = pgd_pair(Norm::L1, 15.0, 16);
    assert!(naive >= 0.8 && adaptive <= naive - 0.3, "non-adaptive {naive}, adaptive {adaptive}");
}

#[test]
fn square_l2_on_the_combined_objective_breaks_guarded_inputs_inside_the_ball() {
    let s = setup();
    let g = GuardedModel {
        model: s.model.as_ref(),
        detector: s.detector.as_ref(),
        threshold: s.threshold,
    };
    let (x, y, idx) = batch(&mnist(8), 8);
    let config = SquareGuardedConfig {
        norm: Norm::L2,
        eps: 3.0,
        queries: 300,
        p_init: 0.8,
        lambda: 1.0,
        kappa: 5.0,
        delta: 0.05,
        seed: 0,
    };
    let out = square_guarded(&g, s.scale, &x, &y, &idx, &[true; 8], &config).unwrap();
    let robust = robust_under_detection(&g, &out, Norm::L2, 3.0);
    eprintln!("Square L2: robust accuracy under detection {robust}");
    assert!(robust <= 0.75, "robust accuracy under detection {robust}");
    // The L2 moves use the whole ball: a failed search ends on its sphere (less rounding room).
    let spread: Vec<f64> = out.iter().map(|o| o.distance).collect();
    assert!(spread.iter().any(|&d| d > 2.9), "{spread:?}");
}

#[test]
fn square_l1_on_the_combined_objective_stays_in_the_ball() {
    let s = setup();
    let g = GuardedModel {
        model: s.model.as_ref(),
        detector: s.detector.as_ref(),
        threshold: s.threshold,
    };
    let (x, y, idx) = batch(&mnist(8), 8);
    let config = SquareGuardedConfig {
        norm: Norm::L1,
        eps: 15.0,
        queries: 300,
        p_init: 0.8,
        lambda: 1.0,
        kappa: 5.0,
        delta: 0.05,
        seed: 0,
    };
    let out = square_guarded(&g, s.scale, &x, &y, &idx, &[true; 8], &config).unwrap();
    let robust = robust_under_detection(&g, &out, Norm::L1, 15.0);
    eprintln!("Square L1: robust accuracy under detection {robust}");
    assert!(robust < 1.0, "the L1 search breaks some guarded inputs");
}
