//! `GIBBON_QUERY_FORWARD=plain` turns the optimized query path off: query logits are then the
//! model's own, bit for bit. (Its own test binary: the variable is read by every model.)
mod support;

use gibbon::model::{Classifier, TorchScriptModel};
use tch::Device;

#[test]
fn plain_query_forward_gives_the_models_own_logits() {
    std::env::set_var("GIBBON_QUERY_FORWARD", "plain");
    let path = support::reference_path("std", "pt");
    let model = TorchScriptModel::load(&path, &[1, 28, 28], Device::Cpu).unwrap();
    assert!(!model.query_forward_optimized());
    let x = gibbon::random::uniform_tensor(3, &[37, 1, 28, 28]);
    assert!(model.query_logits(&x).unwrap().equal(&model.logits(&x).unwrap()));
}
