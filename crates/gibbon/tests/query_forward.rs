//! The inference-optimized query path of TorchScript models (`model::frozen`): query logits
//! agree with the model's own to float rounding, never change a predicted class (rows near a
//! decision boundary get the model's own logits), and do not depend on the batch size at any
//! thread count.
mod support;

use gibbon::model::frozen::AGREEMENT_TOLERANCE;
use gibbon::model::{Classifier, TorchScriptModel};
use tch::{Device, Kind, Tensor};

fn reference(name: &str) -> TorchScriptModel {
    TorchScriptModel::load(&support::reference_path(name, "pt"), &[1, 28, 28], Device::Cpu).unwrap()
}

fn mnist(n: usize) -> Tensor {
    support::mnist(n).try_batch(&(0..n).collect::<Vec<_>>(), Device::Cpu).unwrap()
}

/// Clean images and noisy copies (values that are not multiples of 1/255).
fn inputs(n: usize) -> Tensor {
    let x = mnist(n);
    let noise = gibbon::random::uniform_tensor(11, &[n as i64, 1, 28, 28]) * 0.6 - 0.3;
    Tensor::cat(&[x.shallow_clone(), (&x + noise).clamp(0.0, 1.0)], 0)
}

#[test]
fn query_logits_agree_with_the_model_and_keep_every_prediction() {
    let _serial = support::serial();
    for name in ["std", "adv"] {
        let model = reference(name);
        assert!(model.query_forward_optimized(), "{name}: the optimized query path is off");
        let x = inputs(200);
        let plain = model.logits(&x).unwrap();
        let query = model.query_logits(&x).unwrap();
        assert_eq!(query.size(), plain.size());
        let scale = plain.abs().max().double_value(&[]).max(1.0);
        let diff = (&query - &plain).abs().max().double_value(&[]);
        assert!(diff <= AGREEMENT_TOLERANCE * scale, "{name}: differs by {diff:e}");
        assert!(
            query.argmax(-1, false).equal(&plain.argmax(-1, false)),
            "{name}: a predicted class changed"
        );
        assert!(model.query_predict(&x).unwrap().equal(&model.predict(&x).unwrap()));
        eprintln!("{name}: max |query - plain| = {diff:.2e} over {} rows", x.size()[0]);
    }
}

/// At a given thread count, a row's query logits are bit-identical whatever batch it is in;
/// across thread counts oneDNN may split work differently, so the logits may differ by float
/// rounding, but never in a predicted class (the promise of README "Determinism").
#[test]
fn query_logits_do_not_depend_on_the_batch_size_at_any_thread_count() {
    let _serial = support::serial();
    let model = reference("std");
    let x = inputs(40); // 80 rows: two full tiles and a partial one
    let n = x.size()[0];
    let mut per_thread_count = Vec::new();
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let whole = model.query_logits(&x).unwrap();
        for b in [1i64, 2, 3, 5, 7, 13, 31, 32, 33, 47, 64, 79] {
            let parts: Vec<Tensor> = (0..n)
                .step_by(b as usize)
                .map(|s| model.query_logits(&x.narrow(0, s, b.min(n - s))).unwrap())
                .collect();
            assert!(
                Tensor::cat(&parts, 0).equal(&whole),
                "{threads} threads: batch size {b} changed the logits"
            );
        }
        per_thread_count.push(whole);
    }
    let (one, two) = (&per_thread_count[0], &per_thread_count[1]);
    let scale = one.abs().max().double_value(&[]).max(1.0);
    let diff = (one - two).abs().max().double_value(&[]);
    assert!(diff <= AGREEMENT_TOLERANCE * scale, "1 vs 2 threads differ by {diff:e}");
    assert!(one.argmax(-1, false).equal(&two.argmax(-1, false)), "a prediction changed");
    eprintln!("1 vs 2 threads: max |difference| = {diff:.2e}");
}

/// A traced TorchScript model with a batch norm after its convolution: freezing folds the two
/// into one convolution, so the optimized copy rounds differently from the model as loaded.
fn batch_norm_model(dir: &std::path::Path) -> TorchScriptModel {
    let g = |seed: u64, shape: &[i64]| gibbon::random::uniform_tensor(seed, shape) * 2.0 - 1.0;
    let conv_w = g(1, &[8, 1, 3, 3]) * 0.5;
    let conv_b = g(2, &[8]) * 0.1;
    let bn_w = g(3, &[8]) * 0.5 + 1.0;
    let bn_b = g(4, &[8]) * 0.2;
    let bn_mean = g(5, &[8]) * 0.3;
    let bn_var = g(6, &[8]) * 0.4 + 0.6;
    let fc_w = g(7, &[10, 8 * 26 * 26]) * 0.02;
    let fc_b = g(8, &[10]) * 0.1;
    let mut forward = |inputs: &[Tensor]| {
        let h = inputs[0].conv2d(&conv_w, Some(&conv_b), [1, 1], [0, 0], [1, 1], 1);
        let h = h.batch_norm(
            Some(&bn_w),
            Some(&bn_b),
            Some(&bn_mean),
            Some(&bn_var),
            false,
            0.1,
            1e-5,
            false,
        );
        vec![h.relu().flatten(1, -1).linear(&fc_w, Some(&fc_b))]
    };
    let example = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let traced =
        tch::CModule::create_by_tracing("BnNet", "forward", &[example], &mut forward).unwrap();
    let path = dir.join("bn_net.pt");
    traced.save(&path).unwrap();
    TorchScriptModel::load(&path, &[1, 28, 28], Device::Cpu).unwrap()
}

#[test]
fn rows_near_a_decision_boundary_get_the_models_own_logits() {
    let _serial = support::serial();
    let dir = tempfile::tempdir().unwrap();
    let model = batch_norm_model(dir.path());
    assert!(model.query_forward_optimized());
    let x = mnist(40);
    // Ordinary rows: the folded copy rounds differently, but within tolerance.
    let plain = model.logits(&x).unwrap();
    let query = model.query_logits(&x).unwrap();
    assert!(!query.equal(&plain), "the folded copy should round differently");
    let diff = (&query - &plain).abs().max().double_value(&[]);
    assert!(diff <= AGREEMENT_TOLERANCE * plain.abs().max().double_value(&[]).max(1.0));
    let pred = Vec::<i64>::try_from(model.predict(&x).unwrap()).unwrap();
    // Bisect between pairs of images predicted differently until the top two logits are
    // within 1e-5 of each other: the optimized copy's rounding could flip those rows.
    let mut boundary = Vec::new();
    for i in 0..20i64 {
        let Some(j) = (0..40).find(|&j| pred[j as usize] != pred[i as usize]) else { continue };
        let (a, b) = (x.get(i), x.get(j));
        let class_a = pred[i as usize];
        let (mut lo, mut hi) = (0.0, 1.0);
        let mut point = a.shallow_clone();
        for _ in 0..60 {
            let t = 0.5 * (lo + hi);
            point = &a * (1.0 - t) + &b * t;
            let logits = model.logits(&point.unsqueeze(0)).unwrap().squeeze_dim(0);
            let (top, _) = logits.topk(2, -1, true, true);
            let gap = (top.get(0) - top.get(1)).double_value(&[]);
            if gap < 1e-5 {
                break;
            }
            if logits.argmax(-1, false).int64_value(&[]) == class_a {
                lo = t;
            } else {
                hi = t;
            }
        }
        boundary.push(point);
    }
    assert!(boundary.len() >= 10, "too few pairs with different predictions");
    let n = boundary.len() as i64;
    let points = Tensor::stack(&boundary, 0).to_kind(Kind::Float);
    let plain = model.logits(&points).unwrap();
    let (top, _) = plain.topk(2, -1, true, true);
    let gaps = top.select(1, 0) - top.select(1, 1);
    assert!(gaps.max().double_value(&[]) < 1e-4, "the bisection did not reach the boundary");
    // Mixed with ordinary rows, so the recomputed rows are spliced into a larger batch.
    let batch = Tensor::cat(&[points.shallow_clone(), x.narrow(0, 20, 20)], 0);
    let query = model.query_logits(&batch).unwrap();
    assert!(query.narrow(0, 0, n).equal(&plain), "boundary rows are not the model's own");
    assert!(query.argmax(-1, false).equal(&model.predict(&batch).unwrap()));
}
