//! Pieces shared by the integration tests (`mod support;` in a test file): where `../shared`
//! is, the MNIST test images and the reference models in it, and linear known-answer models.
#![allow(dead_code)]

pub mod linear;

use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::model::{load_model, Classifier, ModelSpec};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use tch::Device;

/// The `shared` folder beside the clone (reference models and data), or `$GIBBON_SHARED`.
pub fn shared() -> PathBuf {
    std::env::var_os("GIBBON_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

/// The first `n` MNIST test images.
pub fn mnist(n: usize) -> Dataset {
    Dataset::load(&DataSpec::Idx(shared().join("data/mnist")), Split::Test, Some(n)).unwrap()
}

/// The path of a reference model file: `name` is `std` or `adv`, `ext` `pt`, `onnx` or
/// `safetensors`.
pub fn reference_path(name: &str, ext: &str) -> PathBuf {
    shared().join(format!("reference/mnist_smallcnn_{name}.{ext}"))
}

/// The TorchScript reference model `name` (`std` or `adv`).
pub fn reference_model(name: &str) -> Box<dyn Classifier> {
    let spec = ModelSpec::TorchScript(reference_path(name, "pt"));
    load_model(&spec, None, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

/// Held by tests that change libtorch's process-wide thread count, and by tests in the same
/// binary that compare results bit for bit, so that they run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
