//! Training defenses through the shared loop: tiny TRADES, fast FGSM and noise runs on a few
//! hundred MNIST training images learn (hold-out accuracy far above chance) and report their
//! cost; bad parameters are refused before training.
use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::model::{Arch, BuiltinModel};
use gibbon::train::{
    lr_at, train, FastFgsmTraining, NoiseTraining, OptimizerKind, Schedule, TradesTraining,
    TrainConfig, TrainReport, TrainingDefense,
};
use tch::Device;

fn mnist_train(n: usize) -> Dataset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/mnist");
    Dataset::load(&DataSpec::Idx(dir.into()), Split::Train, Some(n)).unwrap()
}

fn config(defense: TrainingDefense, epochs: usize, schedule: Schedule, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 50,
        optimizer: OptimizerKind::Adam,
        lr,
        schedule,
        weight_decay: 0.0,
        defense,
        seed: 0,
        holdout: 100,
        limit: None,
        checkpoint_dir: None,
        resume: false,
        progress: false,
    }
}

fn run(defense: TrainingDefense, epochs: usize, schedule: Schedule, lr: f64) -> TrainReport {
    let data = mnist_train(500);
    tch::manual_seed(0);
    let mut model = BuiltinModel::new(Arch::SmallCnn, &[1, 28, 28], 10, Device::Cpu).unwrap();
    train(&mut model, &data, &config(defense, epochs, schedule, lr)).unwrap()
}

/// Cost fields are consistent: 400 training samples in batches of 50 is 8 steps per epoch.
fn assert_cost(report: &TrainReport, passes_per_batch: usize, epochs: usize) {
    let c = &report.cost;
    assert_eq!(c.epochs_run, epochs);
    assert_eq!(c.passes_per_batch, passes_per_batch);
    assert_eq!(c.passes_per_epoch, 8 * passes_per_batch);
    assert_eq!(c.samples_per_epoch, 400);
    assert!(c.samples_per_second > 0.0 && c.train_seconds > 0.0);
    assert!(c.wall_seconds >= c.train_seconds);
    let json = serde_json::to_value(report).unwrap();
    for field in ["wall_seconds", "passes_per_epoch", "samples_per_second"] {
        assert!(json["cost"][field].is_number(), "{field} missing: {json}");
    }
}

#[test]
fn a_tiny_trades_run_learns_and_reports_its_cost() {
    let trades = TradesTraining { eps: 0.1, steps: 3, step_size: 0.04, beta: 6.0, ramp_epochs: 0 };
    let report = run(TrainingDefense::Trades(trades), 3, Schedule::Constant, 2e-3);
    assert_eq!(report.trainer, "trades");
    let last = report.epochs.last().unwrap();
    assert!(last.holdout_clean_accuracy > 0.5, "{:?}", report.epochs);
    let robust = last.holdout_robust_accuracy.unwrap();
    assert!((0.0..=last.holdout_clean_accuracy).contains(&robust));
    // Target pass, 3 inner steps, clean and adversarial passes.
    assert_cost(&report, 6, 3);
}

#[test]
fn a_tiny_fast_fgsm_run_learns_with_a_cyclic_rate_and_reports_its_cost() {
    let fast = FastFgsmTraining::new(0.1);
    assert_eq!(fast.alpha, 1.25 * 0.1);
    let report = run(TrainingDefense::FastFgsm(fast), 3, Schedule::Cyclic, 5e-3);
    assert_eq!(report.trainer, "fast-fgsm");
    assert!(report.epochs.len() <= 3);
    let last = report.epochs.last().unwrap();
    assert!(last.holdout_clean_accuracy > 0.5, "{:?}", report.epochs);
    assert!(last.holdout_robust_accuracy.is_some());
    assert_cost(&report, 2, report.epochs.len());
}

#[test]
fn noise_augmentation_learns_and_checks_sigma() {
    let report =
        run(TrainingDefense::Noise(NoiseTraining { sigma: 0.25 }), 2, Schedule::Constant, 2e-3);
    assert!(report.epochs[1].holdout_clean_accuracy > 0.5, "{:?}", report.epochs);
    assert!(report.epochs[1].holdout_robust_accuracy.is_none());
    assert_cost(&report, 1, 2);
    let bad = TrainingDefense::Noise(NoiseTraining { sigma: -1.0 });
    let err = bad.trainer().err().unwrap();
    assert!(err.is_user_error() && err.to_string().contains("sigma"), "{err}");
}

#[test]
fn out_of_range_trainer_parameters_are_refused() {
    let trades = |beta: f64, steps: usize| {
        TrainingDefense::Trades(TradesTraining { beta, steps, ..TradesTraining::mnist(6.0) })
    };
    assert!(trades(-1.0, 40).trainer().err().unwrap().to_string().contains("beta"));
    assert!(trades(6.0, 0).trainer().err().unwrap().to_string().contains("adv-steps"));
    let fast = FastFgsmTraining { guard_drop: 0.0, ..FastFgsmTraining::new(0.3) };
    assert!(TrainingDefense::FastFgsm(fast).trainer().is_err());
    assert!(TrainingDefense::FastFgsm(FastFgsmTraining::new(-0.3)).trainer().is_err());
    let mnist = TradesTraining::mnist(6.0);
    assert_eq!((mnist.eps, mnist.steps, mnist.step_size), (0.3, 40, 0.01));
}

#[test]
fn the_cyclic_rate_rises_to_its_peak_at_two_fifths_and_falls_to_zero() {
    assert_eq!(lr_at(Schedule::Cyclic, 0.2, 0.0), 0.0);
    assert!((lr_at(Schedule::Cyclic, 0.2, 0.2) - 0.1).abs() < 1e-12);
    assert!((lr_at(Schedule::Cyclic, 0.2, 0.4) - 0.2).abs() < 1e-12);
    assert!((lr_at(Schedule::Cyclic, 0.2, 0.7) - 0.1).abs() < 1e-12);
    assert!(lr_at(Schedule::Cyclic, 0.2, 1.0).abs() < 1e-12);
}
