//! The PyTorch-trained reference models in ../shared/reference: clean accuracy equals the
//! reference, PGD-40 is at least as strong as torchattacks, TorchScript and safetensors agree,
//! and results do not depend on the batch size; the stream file resumes to the same result.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo};
use gibbon::model::{load_model, Arch, Classifier, ModelSpec};
use gibbon::threat::{Norm, ThreatModel};
use support::{mnist, shared};
use tch::Device;

fn model(name: &str, via: &str) -> Box<dyn Classifier> {
    let dir = shared().join("reference");
    let (spec, arch) = match via {
        "torchscript" => {
            (ModelSpec::TorchScript(dir.join(format!("mnist_smallcnn_{name}.pt"))), None)
        }
        _ => (
            ModelSpec::Safetensors(dir.join(format!("mnist_smallcnn_{name}.safetensors"))),
            Some(Arch::SmallCnn),
        ),
    };
    load_model(&spec, arch, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn pgd40(
    model: &dyn Classifier,
    data: &Dataset,
    batch_size: usize,
    alpha: Option<f64>,
) -> EvalReport {
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(40);
    let mut settings = EvalSettings { batch_size, ..Default::default() };
    settings.options.alpha = alpha;
    evaluate(model, data, &threat, &settings, &RunInfo::default()).unwrap().0
}

/// Reference numbers (README table, first 1,000 t10k images): clean accuracy and torchattacks
/// PGD-40 (α = 0.01, random start) robust accuracy.
const REFERENCE: &[(&str, f64, f64)] = &[("std", 0.976, 0.000), ("adv", 0.967, 0.854)];

#[test]
fn pgd40_on_reference_models_is_at_least_as_strong_as_torchattacks() {
    let data = mnist(1000);
    for &(name, clean, robust) in REFERENCE {
        let m = model(name, "torchscript");
        // Same settings as torchattacks (α = 0.01) and gibbon's default step size.
        for alpha in [Some(0.01), None] {
            let r = pgd40(m.as_ref(), &data, 250, alpha);
            assert_eq!(r.clean_accuracy, clean, "{name}: clean accuracy");
            assert!(
                r.robust_accuracy <= robust + 0.005,
                "{name} alpha {alpha:?}: robust accuracy {} above torchattacks {robust} + 0.5 points",
                r.robust_accuracy
            );
            eprintln!(
                "{name} alpha {alpha:?}: clean {} robust {}",
                r.clean_accuracy, r.robust_accuracy
            );
        }
    }
}

#[test]
fn torchscript_and_safetensors_give_identical_per_sample_outcomes() {
    let data = mnist(200);
    for name in ["std", "adv"] {
        let a = pgd40(model(name, "torchscript").as_ref(), &data, 100, Some(0.01));
        let b = pgd40(model(name, "safetensors").as_ref(), &data, 100, Some(0.01));
        for (x, y) in a.per_sample.iter().zip(&b.per_sample) {
            assert_eq!(
                (x.index, x.clean_pred, x.robust, x.adv_pred),
                (y.index, y.clean_pred, y.robust, y.adv_pred),
                "{name}"
            );
        }
    }
}

#[test]
fn per_sample_results_do_not_depend_on_the_batch_size() {
    let data = mnist(60);
    let m = model("adv", "torchscript");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(10);
    threat.budget.restarts = Some(2);
    let run = |batch_size| {
        let settings = EvalSettings { batch_size, ..Default::default() };
        let (r, _) = evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
        serde_json::to_string(&r.per_sample).unwrap()
    };
    let one = run(1);
    assert_eq!(one, run(50), "batch 1 vs 50");
    assert_eq!(one, run(200), "batch 1 vs 200");
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result() {
    let data = mnist(80);
    let m = model("adv", "torchscript");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(10);
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("run.partial.jsonl");
    let settings =
        EvalSettings { batch_size: 32, stream: Some(stream.clone()), ..Default::default() };
    let (full, _) = evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
    assert_eq!(full.resumed, 0);
    // Cut the stream after 30 records and tear the last line, as a killed run would leave it.
    let text = std::fs::read_to_string(&stream).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 81, "header + one line per sample");
    let mut cut = lines[..31].join("\n");
    cut.push('\n');
    cut.push_str(&lines[31][..lines[31].len() / 2]);
    std::fs::write(&stream, cut).unwrap();
    let (resumed, _) =
        evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
    assert_eq!(resumed.resumed, 30);
    for (a, b) in resumed.per_sample.iter().zip(&full.per_sample) {
        assert_eq!(a, b);
    }
    assert_eq!(resumed.per_sample.len(), full.per_sample.len());
    // A different run (other seed) does not reuse the file.
    let other = EvalSettings { seed: 1, ..settings };
    let (fresh, _) = evaluate(m.as_ref(), &data, &threat, &other, &RunInfo::default()).unwrap();
    assert_eq!(fresh.resumed, 0);
}

#[test]
fn every_returned_example_lies_in_the_threat_model() {
    let data = mnist(100);
    let m = model("adv", "torchscript");
    for (norm, eps) in [(Norm::Linf, 0.3), (Norm::L2, 2.0), (Norm::L1, 10.0)] {
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        threat.budget.steps = Some(10);
        let settings = EvalSettings { batch_size: 64, keep_examples: true, ..Default::default() };
        let (r, examples) =
            evaluate(m.as_ref(), &data, &threat, &settings, &RunInfo::default()).unwrap();
        let x = data.batch(&(0..100).collect::<Vec<_>>(), Device::Cpu);
        for s in &r.per_sample {
            if let Some(adv) = examples.get(&s.index) {
                let d = threat
                    .distance(&x.get(s.index as i64).unsqueeze(0), &adv.unsqueeze(0))
                    .double_value(&[0]);
                assert!(d <= eps + 1e-6, "{norm}: {d}");
                assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
            }
        }
        eprintln!("{norm} eps {eps}: robust {}", r.robust_accuracy);
    }
}
