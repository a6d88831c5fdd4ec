//! Detectors against known answers: MSP, energy and ODIN on a linear model with hand-computed
//! logits, Mahalanobis on a Gaussian mixture against its closed form, feature squeezing
//! against its definition, calibration's false-positive rate on held-out scores within its
//! bound, and AUROC with ties against a hand count. Every registered detector round-trips
//! through its saved parameters.
mod support;

use gibbon::data::Dataset;
use gibbon::detect::calibrate::{calibrate, min_calibration_size};
use gibbon::detect::metrics::{auroc, auroc_ci95, fpr_at_tpr};
use gibbon::detect::{entry, to_f64s, DetectorOptions, FitInput, DETECTORS};
use gibbon::model::Classifier;
use gibbon::random::RngKey;
use statrs::distribution::{ContinuousCDF, Normal};
use support::linear::with_weights;
use tch::{Kind, Tensor};

/// A linear model over [1, 1, 2] inputs with logits (4·x₀, 2·x₁, 0): at x = (0.5, 0.5) the
/// logits are (2, 1, 0).
fn three_class_model() -> gibbon::model::BuiltinModel {
    let w = Tensor::from_slice(&[4.0f32, 0.0, 0.0, 2.0, 0.0, 0.0]).view([3, 2]);
    with_weights(&[1, 1, 2], &w, &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)))
}

fn half() -> Tensor {
    Tensor::from_slice(&[0.5f32, 0.5]).view([1, 1, 1, 2])
}

fn score_of(name: &str, options: DetectorOptions, model: &dyn Classifier, x: &Tensor) -> f64 {
    let d = (entry(name).unwrap().fit)(&FitInput { model, options: &options, data: None }).unwrap();
    to_f64s(&d.score(model, x).unwrap()).unwrap()[0]
}

/// log Σ_k exp(z_k) for a few logits, by hand.
fn logsumexp(z: &[f64]) -> f64 {
    z.iter().map(|v| v.exp()).sum::<f64>().ln()
}

#[test]
fn msp_energy_and_odin_match_hand_computed_logits() {
    let model = three_class_model();
    let z = [2.0, 1.0, 0.0];
    // MSP: −log max softmax = log(1 + e⁻¹ + e⁻²) = 0.407606.
    let msp = score_of("msp", DetectorOptions::default(), &model, &half());
    assert!((msp - (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln()).abs() < 1e-6, "{msp}");
    assert!((msp - 0.407606).abs() < 1e-5);
    // Energy at T = 1: −logsumexp(z) = −2.407606; at T = 2: −2·logsumexp(z / 2).
    let energy = score_of("energy", DetectorOptions::default(), &model, &half());
    assert!((energy + logsumexp(&z)).abs() < 1e-5, "{energy}");
    let options = DetectorOptions { temperature: Some(2.0), ..Default::default() };
    let energy2 = score_of("energy", options, &model, &half());
    assert!((energy2 + 2.0 * logsumexp(&[1.0, 0.5, 0.0])).abs() < 1e-5, "{energy2}");
    // ODIN (T = 1000, ε = 0.0014): ŷ = 0 and ∇ₓ log S₀ = Wᵀ(e₀ − p)/T has signs (+, −), so
    // x̃ = (0.5 + ε, 0.5 − ε), z̃ = (2 + 4ε, 1 − 2ε, 0) and the score is −max softmax(z̃ / T).
    let eps = 0.0014;
    let zt = [(2.0 + 4.0 * eps) / 1000.0, (1.0 - 2.0 * eps) / 1000.0, 0.0];
    let expected = -(zt[0] - logsumexp(&zt)).exp();
    let odin = score_of("odin", DetectorOptions::default(), &model, &half());
    assert!((odin - expected).abs() < 1e-7, "{odin} vs {expected}");
    // Without the perturbation the score differs (the perturbation raised the top score).
    let plain = -((2.0 / 1000.0) - logsumexp(&[0.002, 0.001, 0.0])).exp();
    let options = DetectorOptions { noise: Some(0.0), ..Default::default() };
    let odin0 = score_of("odin", options, &model, &half());
    assert!((odin0 - plain).abs() < 1e-7 && odin < odin0, "{odin0} vs {plain}, {odin}");
}

#[test]
fn msp_does_not_saturate_on_confident_inputs() {
    // Logits (80, 40, 0) at x = (1, 1) with weights 80 and 40: max softmax is 1.0 in double,
    // but −log max softmax = log(1 + e⁻⁴⁰ + e⁻⁸⁰) ≈ e⁻⁴⁰ = 4.248e-18 is not 0.
    let w = Tensor::from_slice(&[80.0f32, 0.0, 0.0, 40.0, 0.0, 0.0]).view([3, 2]);
    let model = with_weights(&[1, 1, 2], &w, &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)));
    let x = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 1, 1, 2]);
    let s = score_of("msp", DetectorOptions::default(), &model, &x);
    assert!((s / (-40.0f64).exp() - 1.0).abs() < 1e-4, "{s}");
}

/// `n` samples of two Gaussian classes in 3 dimensions, means (0.4, 0.5, 0.5) and
/// (0.6, 0.5, 0.5), shared diagonal covariance with standard deviations (0.05, 0.02, 0.04).
fn mixture(n: usize, seed: u64) -> (Tensor, Vec<i64>) {
    let sd = [0.05, 0.02, 0.04];
    let mut values = Vec::with_capacity(n * 3);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as i64;
        let noise = RngKey::new(seed, i).normal(3);
        let mean = [0.4 + 0.2 * class as f64, 0.5, 0.5];
        for d in 0..3 {
            values.push((mean[d] + sd[d] * noise[d]).clamp(0.0, 1.0) as f32);
        }
        labels.push(class);
    }
    (Tensor::from_slice(&values).view([n as i64, 1, 1, 3]), labels)
}

#[test]
fn mahalanobis_matches_the_closed_form_on_a_gaussian_mixture() {
    let w = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    let model = with_weights(&[1, 1, 3], &w, &Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)));
    let (images, labels) = mixture(4000, 7);
    let data = Dataset::from_tensor(images.shallow_clone(), labels.clone(), "mixture").unwrap();
    let options = DetectorOptions::default();
    let fit = entry("mahalanobis").unwrap().fit;
    let detector = fit(&FitInput { model: &model, options: &options, data: Some(&data) }).unwrap();
    // The closed form with the sample means and the pooled covariance, computed here.
    let x = images.to_kind(Kind::Double).view([-1, 3]);
    let y = Tensor::from_slice(&labels);
    let means: Vec<Tensor> = (0..2)
        .map(|c| {
            x.index_select(0, &y.eq(c).nonzero().squeeze_dim(1)).mean_dim(
                [0i64].as_slice(),
                false,
                Kind::Double,
            )
        })
        .collect();
    let centered = &x - Tensor::stack(&means, 0).index_select(0, &y);
    let cov = centered.transpose(0, 1).mm(&centered) / 4000.0;
    let precision = cov.inverse();
    let probes =
        Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.4, 0.55, 0.5, 0.65, 0.45, 0.58, 0.1, 0.9, 0.2])
            .view([4, 1, 1, 3]);
    let scores = to_f64s(&detector.score(&model, &probes).unwrap()).unwrap();
    let p = probes.to_kind(Kind::Double).view([4, 3]);
    for (i, s) in scores.iter().enumerate() {
        let d = means.iter().map(|m| {
            let v = (p.get(i as i64) - m).view([1, 3]);
            v.mm(&precision).mm(&v.transpose(0, 1)).double_value(&[0, 0])
        });
        let closed = d.fold(f64::INFINITY, f64::min);
        assert!((s - closed).abs() <= 1e-6 * closed.max(1.0), "probe {i}: {s} vs {closed}");
    }
    // Against the true parameters: (0.4, 0.55, 0.5) is 2.5 standard deviations from class 0
    // along the second axis (d² = 6.25), (0.5, 0.5, 0.5) is 2 from both means (d² = 4).
    assert!((scores[0] - 4.0).abs() < 0.3, "{}", scores[0]);
    assert!((scores[1] - 6.25).abs() < 0.4, "{}", scores[1]);
    // A feature layer the model does not have is a clear user error.
    let bad = DetectorOptions { feature_layer: Some("conv9".into()), ..Default::default() };
    let err = fit(&FitInput { model: &model, options: &bad, data: Some(&data) }).err().unwrap();
    assert!(
        err.is_user_error()
            && err.to_string().contains("conv9")
            && err.to_string().contains("penultimate"),
        "{err}"
    );
}

#[test]
fn feature_squeezing_matches_its_definition() {
    let w =
        Tensor::from_slice(&[3.0f32, -1.0, 2.0, 0.5, -2.0, 1.0, 0.0, 2.0, 1.0, 1.0, -1.0, -3.0])
            .view([3, 4]);
    let model = with_weights(&[1, 2, 2], &w, &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)));
    let x = [0.2f64, 0.7, 0.4, 0.9];
    let options = DetectorOptions { squeezers: Some("bits:depth=1".into()), ..Default::default() };
    let xt = Tensor::from_slice(&x.map(|v| v as f32)).view([1, 1, 2, 2]);
    let s = score_of("squeeze", options, &model, &xt);
    let softmax = |x: [f64; 4]| {
        let wv = Vec::<f64>::try_from(&w.to_kind(Kind::Double).view([-1])).unwrap();
        let z: Vec<f64> = (0..3).map(|k| (0..4).map(|j| wv[k * 4 + j] * x[j]).sum()).collect();
        let lse = logsumexp(&z);
        z.iter().map(|v| (v - lse).exp()).collect::<Vec<f64>>()
    };
    let (p, q) = (softmax(x), softmax([0.0, 1.0, 0.0, 1.0]));
    let l1: f64 = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum();
    assert!((s - l1).abs() < 1e-6, "{s} vs {l1}");
    // A squeezed-invariant input scores 0.
    let fixed = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]).view([1, 1, 2, 2]);
    let options = DetectorOptions { squeezers: Some("bits:depth=1".into()), ..Default::default() };
    assert!(score_of("squeeze", options, &model, &fixed).abs() < 1e-7);
}

#[test]
fn calibration_holds_its_false_positive_rate_within_its_bound() {
    let normal = Normal::new(0.0, 1.0).unwrap();
    let (n, alpha) = (1000, 0.05);
    let mut above_bound = 0;
    let mut true_rates = Vec::new();
    let trials = 400;
    for t in 0..trials {
        let scores = RngKey::new(t, 0).normal(n);
        let c = calibrate(&scores, alpha).unwrap();
        assert_eq!(c.n, n);
        assert!(
            c.calibration_fpr <= alpha && c.fpr_upper_bound > alpha && c.fpr_upper_bound < 0.07,
            "{c:?}"
        );
        // The true FPR of the threshold for N(0, 1) scores: 1 − Φ(τ).
        let rate = 1.0 - normal.cdf(c.threshold);
        true_rates.push(rate);
        if rate > c.fpr_upper_bound {
            above_bound += 1;
        }
    }
    // The bound fails with probability 5%: 20 of 400 expected; 8..=35 covers 99.8% of Bin(400, .05).
    assert!((8..=35).contains(&above_bound), "{above_bound} of {trials} above the 95% bound");
    let mean = true_rates.iter().sum::<f64>() / trials as f64;
    // E[true FPR] = (n + 1 − k)/(n + 1) = 50/1001; its standard error over 400 trials is
    // sd(Beta(50, 951))/20 = 0.00034.
    assert!((mean - 50.0 / 1001.0).abs() < 0.0015, "mean true FPR {mean}");
    // Held-out scores: 100,000 fresh N(0, 1) draws against one calibrated threshold.
    let c = calibrate(&RngKey::new(999, 0).normal(n), alpha).unwrap();
    let held_out = RngKey::new(1000, 0).normal(100_000);
    let fpr = held_out.iter().filter(|&&s| s > c.threshold).count() as f64 / 1e5;
    assert!(fpr <= c.fpr_upper_bound && fpr > 0.03, "held-out FPR {fpr}, {c:?}");
    // Too small a calibration set is refused with a user error naming the minimum.
    assert_eq!(min_calibration_size(alpha), 200);
    let err = calibrate(&held_out[..199], alpha).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("200"), "{err}");
    assert!(calibrate(&held_out[..200], alpha).is_ok());
}

#[test]
fn auroc_counts_ties_as_half_and_fpr_at_tpr_matches_a_hand_count() {
    let clean = [0.1, 0.4, 0.35, 0.8];
    let anomalous = [0.9, 0.4, 0.6];
    // Pairs won: 0.9 beats 4, 0.4 beats 2 and ties 1 (2.5), 0.6 beats 3: 9.5 of 12.
    assert!((auroc(&clean, &anomalous) - 9.5 / 12.0).abs() < 1e-12);
    let ci = auroc_ci95(&clean, &anomalous);
    assert!(ci[0] <= 9.5 / 12.0 && 9.5 / 12.0 <= ci[1], "{ci:?}");
    // 95% TPR keeps all 3 anomalous scores: threshold 0.4, clean ≥ 0.4: 2 of 4.
    assert_eq!(fpr_at_tpr(&clean, &anomalous, 0.95), 0.5);
    assert_eq!(auroc(&[1.0, 1.0], &[1.0]), 0.5);
    assert_eq!(auroc(&[0.0, 0.1], &[0.2, 0.3]), 1.0);
}

#[test]
fn every_registered_detector_round_trips_through_its_parameters() {
    let w = gibbon::random::normal_tensor(3, &[4, 16]);
    let model = with_weights(&[1, 4, 4], &w, &Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)));
    let images = gibbon::random::uniform_tensor(5, &[64, 1, 4, 4]);
    let labels: Vec<i64> = (0..64).map(|i| i % 4).collect();
    let data = Dataset::from_tensor(images.shallow_clone(), labels, "uniform").unwrap();
    let x = images.narrow(0, 0, 8);
    for e in DETECTORS {
        let options = DetectorOptions::default();
        let d = (e.fit)(&FitInput { model: &model, options: &options, data: Some(&data) }).unwrap();
        assert_eq!(d.kind(), e.name);
        assert_eq!(d.differentiable(), e.differentiable, "{}", e.name);
        let loaded = (e.load)(&d.params()).unwrap();
        let (a, b) = (d.score(&model, &x).unwrap(), loaded.score(&model, &x).unwrap());
        assert_eq!(a.size(), [8]);
        let (a, b) = (to_f64s(&a).unwrap(), to_f64s(&b).unwrap());
        for (u, v) in a.iter().zip(&b) {
            assert!(
                u.is_finite() && (u - v).abs() <= 1e-9 * u.abs().max(1.0),
                "{}: {u} vs {v}",
                e.name
            );
        }
        // The graph view has an input gradient (the straight-through one for squeeze).
        let xg = x.detach().set_requires_grad(true);
        let s = d.score_graph(&model, &xg).unwrap();
        let g = Tensor::run_backward(&[s.sum(Kind::Double)], &[&xg], false, false);
        assert!(g[0].abs().sum(Kind::Double).double_value(&[]) > 0.0, "{}: zero gradient", e.name);
    }
}
