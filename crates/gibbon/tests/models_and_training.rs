//! Built-in architectures build, round-trip through safetensors, normalize inside the model, and
//! train: standard training learns MNIST, and weight gradients stay off during attacks.
use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::model::{Arch, BuiltinModel, Classifier, Normalized};
use gibbon::train::{train, OptimizerKind, Schedule, TrainConfig};
use tch::{Device, Kind};

fn mnist(split: Split, n: usize) -> Dataset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/mnist");
    Dataset::load(&DataSpec::Idx(dir.into()), split, Some(n)).unwrap()
}

#[test]
fn every_architecture_builds_and_round_trips_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, shape) in [
        (Arch::Linear, vec![1, 28, 28]),
        (Arch::Mlp, vec![1, 28, 28]),
        (Arch::SmallCnn, vec![1, 28, 28]),
        (Arch::PreActResNet18, vec![3, 32, 32]),
    ] {
        tch::manual_seed(1);
        let m = BuiltinModel::new(arch, &shape, 10, Device::Cpu).unwrap();
        let mut full = vec![3];
        full.extend(&shape);
        let x = gibbon::random::uniform_tensor(6001, full.as_slice());
        let a = m.logits(&x).unwrap();
        assert_eq!(a.size(), [3, 10], "{arch:?}");
        let path = dir.path().join(format!("{}.safetensors", arch.name()));
        m.save(&path).unwrap();
        let loaded = BuiltinModel::load(arch, &path, &shape, 10, Device::Cpu).unwrap();
        let b = loaded.logits(&x).unwrap();
        assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0, "{arch:?}");
        assert_eq!(loaded.info().sha256.len(), 64);
        // Loaded models never accumulate weight gradients.
        for (_, v) in loaded.var_store().variables() {
            assert!(!v.requires_grad());
        }
    }
    let e = BuiltinModel::new(Arch::SmallCnn, &[3, 32, 32], 10, Device::Cpu).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("input shape"));
}

#[test]
fn normalization_lives_inside_the_model() {
    tch::manual_seed(3);
    let inner = BuiltinModel::new(Arch::Linear, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let x = gibbon::random::uniform_tensor(6002, &[4, 1, 28, 28]);
    let expected = inner.logits(&((&x - 0.1307) / 0.3081)).unwrap();
    let m = Normalized::new(inner, &[0.1307], &[0.3081]).unwrap();
    let got = m.logits(&x).unwrap();
    assert!(f64::try_from((expected - got).abs().max()).unwrap() < 1e-5);
    let inner = BuiltinModel::new(Arch::Linear, &[1, 28, 28], 10, Device::Cpu).unwrap();
    assert!(Normalized::new(inner, &[0.5], &[0.0]).is_err());
}

#[test]
fn standard_training_learns_mnist_and_adversarial_training_runs() {
    let data = mnist(Split::Train, 3000);
    tch::manual_seed(0);
    let mut model = BuiltinModel::new(Arch::Mlp, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 64,
        optimizer: OptimizerKind::Adam,
        lr: 1e-3,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        defense: gibbon::train::TrainingDefense::Standard,
        seed: 0,
        holdout: 500,
        limit: None,
        checkpoint_dir: None,
        resume: false,
        progress: false,
    };
    let stats = train(&mut model, &data, &cfg).unwrap().epochs;
    assert_eq!(stats.len(), 2);
    assert!(stats[1].holdout_clean_accuracy > 0.85, "{:?}", stats);
    assert!(stats[1].train_loss < stats[0].train_loss);
    let test = mnist(Split::Test, 500);
    let pred = model.predict(&test.batch(&(0..500).collect::<Vec<_>>(), Device::Cpu)).unwrap();
    let acc = pred
        .eq_tensor(&test.labels_of(&(0..500).collect::<Vec<_>>(), Device::Cpu))
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    assert!(f64::try_from(acc).unwrap() > 0.85);

    // One epoch of PGD training on a small slice: runs, reports robust accuracy on the hold-out.
    let adv_cfg = TrainConfig {
        epochs: 1,
        limit: Some(600),
        holdout: 100,
        defense: gibbon::train::TrainingDefense::Pgd(gibbon::train::AdversarialTraining {
            norm: gibbon::threat::Norm::Linf,
            eps: 0.1,
            steps: 3,
            alpha: 0.04,
            ramp_epochs: 0,
        }),
        ..cfg
    };
    let dir = tempfile::tempdir().unwrap();
    let adv_cfg = TrainConfig { checkpoint_dir: Some(dir.path().to_path_buf()), ..adv_cfg };
    let stats = train(&mut model, &data, &adv_cfg).unwrap().epochs;
    let robust = stats[0].holdout_robust_accuracy.unwrap();
    assert!((0.0..=stats[0].holdout_clean_accuracy).contains(&robust));
    assert!(dir.path().join("epoch-1.safetensors").exists());
}

/// A run killed after its first epoch and resumed with `resume` ends with exactly the weights of
/// the uninterrupted run (SGD without momentum keeps no optimizer state, so nothing is lost);
/// a checkpoint of another configuration is refused.
#[test]
fn a_resumed_training_run_ends_where_the_uninterrupted_one_does() {
    let data = mnist(Split::Train, 700);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 64,
        optimizer: OptimizerKind::Sgd { momentum: 0.0 },
        lr: 0.05,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        defense: gibbon::train::TrainingDefense::Standard,
        seed: 3,
        holdout: 100,
        limit: None,
        checkpoint_dir: Some(dir.path().to_path_buf()),
        resume: false,
        progress: false,
    };
    let fresh = |seed: i64| {
        tch::manual_seed(seed);
        BuiltinModel::new(Arch::Mlp, &[1, 28, 28], 10, Device::Cpu).unwrap()
    };
    let mut whole = fresh(0);
    let full = train(&mut whole, &data, &cfg).unwrap();
    assert_eq!(full.resumed_from_epoch, None);
    // "Kill" the run after epoch 1: drop epoch 2's checkpoint, resume into a differently
    // initialised model (the checkpoint's weights must replace them).
    std::fs::remove_file(dir.path().join("epoch-2.json")).unwrap();
    let mut resumed = fresh(7);
    let report = train(&mut resumed, &data, &TrainConfig { resume: true, ..cfg.clone() }).unwrap();
    assert_eq!(report.resumed_from_epoch, Some(1));
    assert_eq!(report.epochs.len(), 2);
    assert_eq!(report.epochs[0].train_loss, full.epochs[0].train_loss);
    let (a, b) = (whole.var_store().variables(), resumed.var_store().variables());
    for (name, value) in &a {
        assert!(value.equal(&b[name]), "{name} differs after resuming");
    }
    // Another configuration's checkpoint is refused, naming the folder's record.
    let other = TrainConfig { resume: true, lr: 0.01, ..cfg };
    let err = train(&mut fresh(0), &data, &other).unwrap_err().to_string();
    assert!(err.contains("another training configuration"), "{err}");
}

#[test]
fn shipped_builtin_models_are_accurate_and_the_adversarial_one_is_robust() {
    use gibbon::eval::{evaluate, EvalSettings, RunInfo};
    use gibbon::model::{load_model, ModelSpec};
    use gibbon::threat::{Norm, ThreatModel};
    let data = mnist(Split::Test, 200);
    let mut threat = ThreatModel::new(Norm::Linf, 0.3).unwrap();
    threat.budget.steps = Some(40);
    let mut robust = Vec::new();
    for name in ["builtin:smallcnn-mnist", "builtin:smallcnn-mnist-adv"] {
        let spec: ModelSpec = name.parse().unwrap();
        let m = load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap();
        assert_eq!(m.info().kind, "builtin");
        let (r, _) =
            evaluate(m.as_ref(), &data, &threat, &EvalSettings::default(), &RunInfo::default())
                .unwrap();
        assert!(r.clean_accuracy >= 0.97, "{name}: clean {}", r.clean_accuracy);
        robust.push(r.robust_accuracy);
    }
    assert_eq!(robust[0], 0.0, "standard model must fall at eps 0.3");
    assert!(robust[1] >= 0.6, "adversarially trained model: robust {}", robust[1]);
    assert!("builtin:nope".parse::<ModelSpec>().unwrap_err().to_string().contains("nope"));
}
