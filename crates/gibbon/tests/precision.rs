//! Reduced-precision search (`--precision`): the choice of `auto`, bf16 search passes that do
//! not depend on the batch size, and a bf16 search that is never weaker than the fp32 one on
//! the adversarially trained reference model, image by image.
//!
//! The bf16 tests need a CPU with native bf16 (avx512_bf16 or amx_bf16); elsewhere they print
//! why they skip. Every other test in the suite searches in fp32 (the default).
//!
//! Slow check (the never-weaker criterion on more images, minutes on 2 cores):
//! `GIBBON_PRECISION_N=200 cargo test --release -p gibbon --test precision -- --ignored`.
mod support;

use gibbon::eval::{evaluate, EvalReport, EvalSettings, RunInfo, Suite};
use gibbon::model::precision::{cpu_low_precision_flags, refining, resolve, SearchModel};
use gibbon::model::{Classifier, Precision};
use gibbon::threat::{Norm, ThreatModel};
use support::{mnist, reference_model};
use tch::{Device, Kind};

fn native_bf16() -> bool {
    let flags = cpu_low_precision_flags();
    let native = flags.iter().any(|f| f.ends_with("bf16"));
    if !native {
        eprintln!("skipped: this CPU has no native bf16 (flags seen: {flags:?})");
    }
    native
}

fn settings(precision: Precision, batch_size: usize) -> EvalSettings {
    let mut s = EvalSettings { batch_size, ..Default::default() };
    s.precision = resolve(precision, "torchscript", Device::Cpu).unwrap();
    s
}

fn run(model: &dyn Classifier, n: usize, threat: &ThreatModel, s: &EvalSettings) -> EvalReport {
    evaluate(model, &mnist(n), threat, s, &RunInfo::default()).unwrap().0
}

#[test]
fn auto_picks_bf16_only_with_native_support_and_a_castable_model() {
    let native = cpu_low_precision_flags().iter().any(|f| f.ends_with("bf16"));
    let auto = resolve(Precision::Auto, "torchscript", Device::Cpu).unwrap();
    let capped = std::env::var("ONEDNN_MAX_CPU_ISA").is_ok_and(|v| v.contains("AVX2"));
    let want = if native && !capped { Precision::Bf16 } else { Precision::Fp32 };
    assert_eq!(auto.search, want, "{auto:?}");
    let remote = resolve(Precision::Auto, "remote", Device::Cpu).unwrap();
    assert_eq!(remote.search, Precision::Fp32);
    assert!(resolve(Precision::Bf16, "remote", Device::Cpu).is_err());
    assert_eq!(resolve(Precision::Fp32, "onnx", Device::Cpu).unwrap().search, Precision::Fp32);
    assert!("fp64".parse::<Precision>().is_err());
}

#[test]
fn the_refinement_is_the_last_tenth_of_the_steps() {
    let fp32: Vec<usize> = (0..=100).filter(|&s| refining(s, 100)).collect();
    assert_eq!(fp32, (90..=100).collect::<Vec<_>>());
    assert!(refining(0, 1), "a one-step attack runs in fp32");
    assert_eq!((0..=40).filter(|&s| refining(s, 40)).count(), 5);
}

/// The bf16 pass really runs in reduced precision (its logits differ from fp32's in the last
/// bits but not by more than bf16's error), fp32 answers stay exact, and mixed rows get each
/// row's own precision.
#[test]
fn search_passes_run_in_bf16_and_decisions_in_fp32() {
    if !native_bf16() {
        return;
    }
    let _serial = support::serial();
    let model = reference_model("adv");
    let search = SearchModel::new(model.as_ref(), Precision::Bf16);
    let x = mnist(40).try_batch(&(0..40).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let exact = model.logits(&x).unwrap();
    let reduced = tch::no_grad(|| search.logits_padded(&x)).unwrap();
    let diff = (&reduced - &exact).abs().max().double_value(&[]);
    let scale = exact.abs().max().double_value(&[]);
    assert!(diff > 0.0, "bf16 search logits equal fp32's bit for bit: autocast is not on");
    assert!(diff < 0.05 * scale, "bf16 logits off by {diff} (scale {scale})");
    assert!(search.logits(&x).unwrap().equal(&exact), "logits() must stay fp32");
    let rows: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
    let mixed = tch::no_grad(|| search.logits_padded_rows(&x, &rows)).unwrap();
    for (i, &e) in rows.iter().enumerate() {
        let want = if e { &exact } else { &reduced };
        let row = mixed.get(i as i64);
        // fp32 rows are computed on their own tiles: equal up to float rounding.
        let d = (&row - want.get(i as i64)).abs().max().double_value(&[]);
        assert!(d < 1e-4, "row {i} (exact {e}) differs by {d}");
    }
    assert_eq!(mixed.kind(), Kind::Float);
}

/// Same machine, same precision, any batch size: identical per-sample records.
#[test]
fn bf16_search_does_not_depend_on_the_batch_size() {
    if !native_bf16() {
        return;
    }
    let _serial = support::serial();
    let model = reference_model("adv");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(5);
    let records: Vec<Vec<String>> = [7, 40]
        .iter()
        .map(|&b| {
            let r = run(model.as_ref(), 40, &threat, &settings(Precision::Bf16, b));
            assert_eq!(r.precision.as_ref().unwrap().search, Precision::Bf16);
            r.per_sample
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {:?} {:?} {:?}",
                        s.index, s.robust, s.adv_pred, s.norm, s.queries
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(records[0], records[1]);
}

/// bf16 search with fp32 decisions: no claim the verifier rejects, and on the first images of
/// the adversarially trained model the standard suite breaks every image the fp32 search
/// breaks (the per-image check; the criterion is ≤ fp32 + 0.2 points).
fn never_weaker(norm: Norm, eps: f64, n: usize) {
    let model = reference_model("adv");
    let mut reports = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16] {
        let mut threat = ThreatModel::new(norm, eps).unwrap();
        let mut s = settings(precision, 128);
        Suite::Standard.apply(&mut threat, &mut s);
        let r = run(model.as_ref(), n, &threat, &s);
        eprintln!(
            "{norm} eps {eps} {precision:?}: robust {} of {n} in {:.1}s, verifier disagreements {}",
            r.per_sample.iter().filter(|s| s.robust).count(),
            r.seconds,
            r.verifier_disagreements
        );
        reports.push(r);
    }
    let (fp32, bf16) = (&reports[0], &reports[1]);
    assert_eq!(bf16.verifier_disagreements, 0, "a bf16 success the fp32 verifier rejects");
    let missed: Vec<usize> = fp32
        .per_sample
        .iter()
        .zip(&bf16.per_sample)
        .filter(|(a, b)| !a.robust && b.robust)
        .map(|(a, _)| a.index)
        .collect();
    let slack = (n as f64 * 0.002).floor() as usize;
    eprintln!("images fp32 broke that bf16 left robust: {missed:?}");
    assert!(
        bf16.robust_accuracy <= fp32.robust_accuracy + 0.002 + 1e-12 && missed.len() <= slack,
        "bf16 search weaker: robust {} vs fp32 {}, missed {missed:?}",
        bf16.robust_accuracy,
        fp32.robust_accuracy
    );
}

#[test]
#[ignore = "minutes: GIBBON_PRECISION_N images of the standard suite twice per norm"]
fn bf16_search_is_never_weaker_than_fp32_on_the_reference_model() {
    if !native_bf16() {
        return;
    }
    let n = std::env::var("GIBBON_PRECISION_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    never_weaker(Norm::Linf, 0.3, n);
    never_weaker(Norm::L2, 2.0, n);
}

/// The fast check: APGD-CE (50 steps) on the first 32 images; bf16 leaves at most one image more robust
/// than fp32 and makes no claim the verifier rejects.
#[test]
fn bf16_apgd_is_not_weaker_on_the_first_images() {
    if !native_bf16() {
        return;
    }
    let _serial = support::serial();
    let model = reference_model("adv");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(50);
    let robust: Vec<usize> = [Precision::Fp32, Precision::Bf16]
        .iter()
        .map(|&p| {
            let s = EvalSettings { attacks: vec!["apgd-ce".into()], ..settings(p, 32) };
            let r = run(model.as_ref(), 32, &threat, &s);
            assert_eq!(r.verifier_disagreements, 0, "{p:?}: a claim the verifier rejects");
            let k = r.per_sample.iter().filter(|s| s.robust).count();
            eprintln!("apgd-ce {p:?}: robust {k} of 32");
            k
        })
        .collect();
    assert!(robust[1] <= robust[0] + 1, "bf16 robust {} vs fp32 {}", robust[1], robust[0]);
}
