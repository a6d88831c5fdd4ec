//! The determinism promise (README "Determinism"): on a given machine and thread count, a
//! sample's logits, input gradient, query logits and evaluation record are bit-identical for
//! every batch size; across thread counts the logits may differ in the last bits but the
//! outcomes do not.
//!
//! Kernel choice depends on the CPU, so `the_promise_holds_under_every_kernel_choice` re-runs
//! this file's other tests in child processes under each `ATEN_CPU_CAPABILITY` and
//! `ONEDNN_MAX_CPU_ISA` this CPU supports: an assumption that holds for one machine's kernels
//! only fails here, not on the next machine.
mod support;

use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::{load_model, Arch, Classifier, ModelSpec};
use gibbon::threat::{Norm, ThreatModel};
use support::{mnist, reference_path, serial};
use tch::{Device, Kind, Tensor};

fn models() -> Vec<(&'static str, Box<dyn Classifier>)> {
    let load = |spec: ModelSpec, arch| load_model(&spec, arch, &[1, 28, 28], 10, Device::Cpu);
    vec![
        ("torchscript", load(ModelSpec::TorchScript(reference_path("std", "pt")), None).unwrap()),
        (
            "safetensors",
            load(
                ModelSpec::Safetensors(reference_path("adv", "safetensors")),
                Some(Arch::SmallCnn),
            )
            .unwrap(),
        ),
        ("onnx", load(ModelSpec::Onnx(reference_path("adv", "onnx")), None).unwrap()),
    ]
}

/// 70 rows: MNIST images and noisy copies (values off the 1/255 grid), two tiles and a part.
fn inputs() -> Tensor {
    let x = mnist(35).try_batch(&(0..35).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let noise = gibbon::random::uniform_tensor(5, &[35, 1, 28, 28]) * 0.4 - 0.2;
    Tensor::cat(&[x.shallow_clone(), (&x + noise).clamp(0.0, 1.0)], 0)
}

/// Logits, query logits and the cross-entropy input gradient of `x`, computed in batches of `b`.
fn passes(model: &dyn Classifier, x: &Tensor, labels: &Tensor, b: i64) -> [Tensor; 3] {
    let n = x.size()[0];
    let (mut logits, mut query, mut grads) = (Vec::new(), Vec::new(), Vec::new());
    for s in (0..n).step_by(b as usize) {
        let (xs, ys) = (x.narrow(0, s, b.min(n - s)), labels.narrow(0, s, b.min(n - s)));
        logits.push(model.logits(&xs).unwrap());
        query.push(model.query_logits(&xs).unwrap());
        let loss =
            |l: &Tensor| l.cross_entropy_loss::<Tensor>(&ys, None, tch::Reduction::None, -100, 0.0);
        grads.push(model.loss_and_input_grad(&xs, &loss).unwrap().2);
    }
    [Tensor::cat(&logits, 0), Tensor::cat(&query, 0), Tensor::cat(&grads, 0)]
}

#[test]
fn logits_and_gradients_do_not_depend_on_the_batch_size() {
    let _serial = serial();
    let x = inputs();
    let labels = Tensor::arange(70, (Kind::Int64, Device::Cpu)).remainder(10);
    for (name, model) in models() {
        let mut by_threads = Vec::new();
        for threads in [1, 2] {
            tch::set_num_threads(threads);
            let whole = passes(model.as_ref(), &x, &labels, 70);
            for b in [1, 33] {
                let part = passes(model.as_ref(), &x, &labels, b);
                for (what, (p, w)) in
                    ["logits", "query logits", "gradient"].iter().zip(part.iter().zip(&whole))
                {
                    assert!(
                        p.equal(w),
                        "{name}, {threads} threads: batches of {b} changed the {what}"
                    );
                }
            }
            by_threads.push(whole);
        }
        // Across thread counts: float rounding at most, the same predictions.
        for (what, (one, two)) in
            ["logits", "query logits"].iter().zip(by_threads[0].iter().zip(&by_threads[1]))
        {
            let diff = (one - two).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{name}: {what} at 1 and 2 threads differ by {diff:e}");
            assert!(
                one.argmax(-1, false).equal(&two.argmax(-1, false)),
                "{name}: {what}: a prediction changed with the thread count"
            );
        }
    }
}

/// The outcome fields of a record (everything but the confidences, which carry the last bits).
fn outcomes(records: &[gibbon::eval::SampleRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {:?} {:?} {:?} {}",
                r.index,
                r.clean_pred,
                r.adv_pred,
                r.robust,
                r.broken_by,
                r.step,
                r.restart,
                r.queries
            )
        })
        .collect()
}

#[test]
fn evaluation_records_do_not_depend_on_the_batch_size() {
    let _serial = serial();
    let data = mnist(24);
    let model = load_model(
        &ModelSpec::TorchScript(reference_path("adv", "pt")),
        None,
        &[1, 28, 28],
        10,
        Device::Cpu,
    )
    .unwrap();
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(10);
    let run = |batch_size| {
        let settings = EvalSettings { batch_size, seed: 7, ..Default::default() };
        evaluate(model.as_ref(), &data, &threat, &settings, &RunInfo::default())
            .unwrap()
            .0
            .per_sample
    };
    let mut by_threads = Vec::new();
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let reference = serde_json::to_string(&run(24)).unwrap();
        for b in [1, 7] {
            let records = serde_json::to_string(&run(b)).unwrap();
            assert_eq!(records, reference, "{threads} threads: batch size {b} changed a record");
        }
        by_threads.push(run(24));
    }
    assert_eq!(
        outcomes(&by_threads[0]),
        outcomes(&by_threads[1]),
        "an outcome changed with the thread count"
    );
}

/// The kernel choices this CPU can be made to take: every `ATEN_CPU_CAPABILITY` and every
/// `ONEDNN_MAX_CPU_ISA` up to what `/proc/cpuinfo` reports.
fn kernel_settings() -> Vec<(&'static str, &'static str)> {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    let mut settings = vec![("ATEN_CPU_CAPABILITY", "default")];
    if has("avx2") {
        settings.push(("ATEN_CPU_CAPABILITY", "avx2"));
        settings.push(("ONEDNN_MAX_CPU_ISA", "AVX2"));
    }
    if has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq") {
        settings.push(("ATEN_CPU_CAPABILITY", "avx512"));
        settings.push(("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"));
    }
    if has("amx_tile") {
        settings.push(("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX"));
    }
    settings
}

#[test]
fn the_promise_holds_under_every_kernel_choice() {
    if std::env::var_os("GIBBON_KERNEL_CHILD").is_some() {
        return; // a child process runs the other tests only
    }
    let settings = kernel_settings();
    assert!(settings.len() >= 2, "no alternative kernels found on this CPU");
    for (var, value) in settings {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--test-threads", "1", "--skip", "the_promise_holds_under_every_kernel_choice"])
            .env("GIBBON_KERNEL_CHILD", "1")
            .env(var, value)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{var}={value}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("2 passed"), "{var}={value}: the tests did not run: {text}");
        eprintln!("{var}={value}: passed");
    }
}
