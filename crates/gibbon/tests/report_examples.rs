//! `gibbon::report::write_examples`: adversarial.npy holds every evaluated sample's returned
//! example (its clean input where nothing was found), labels.npy the true labels, and png/ one
//! triptych per broken sample up to the limit.
mod support;

use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::report::write_examples;
use gibbon::threat::{Norm, ThreatModel};
use support::{mnist, reference_model};
use tch::Device;

#[test]
fn npy_files_hold_the_returned_examples_and_pngs_the_first_broken_samples() {
    let data = mnist(12);
    // The adversarially trained model keeps some digits at ε = 0.3, so both kinds are present.
    let model = reference_model("adv");
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(10);
    let settings = EvalSettings { keep_examples: true, ..Default::default() };
    let info = RunInfo::default();
    let (report, examples) = evaluate(model.as_ref(), &data, &threat, &settings, &info).unwrap();
    let broken: Vec<usize> =
        report.per_sample.iter().filter(|r| r.broken_by.is_some()).map(|r| r.index).collect();
    assert!(!broken.is_empty() && broken.len() < report.n, "need broken and robust samples");

    let dir = tempfile::tempdir().unwrap();
    let written = write_examples(dir.path(), &data, &report, &examples, 2).unwrap();
    assert_eq!(written, broken.len().min(2));
    let mut pngs: Vec<String> = std::fs::read_dir(dir.path().join("png"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pngs.sort();
    let mut expected: Vec<String> = broken[..written]
        .iter()
        .flat_map(|i| {
            ["adversarial", "original", "perturbation"].map(|k| format!("{i:05}_{k}.png"))
        })
        .collect();
    expected.sort();
    assert_eq!(pngs, expected);

    let spec = DataSpec::Npy {
        images: dir.path().join("adversarial.npy"),
        labels: dir.path().join("labels.npy"),
    };
    let written = Dataset::load(&spec, Split::Test, None).unwrap();
    assert_eq!(written.len(), report.n);
    assert_eq!(written.sample_shape(), data.sample_shape());
    for (row, r) in report.per_sample.iter().enumerate() {
        assert_eq!(written.labels()[row], r.label);
        let got = written.try_batch(&[row], Device::Cpu).unwrap().get(0);
        let want = match examples.get(&r.index) {
            Some(adv) => adv.shallow_clone(),
            None => data.try_batch(&[r.index], Device::Cpu).unwrap().get(0),
        };
        assert!(got.equal(&want), "sample {} differs from its returned example", r.index);
    }
}
