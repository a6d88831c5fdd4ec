//! The text acceptance numbers on the shared data (slow: about a minute on one core; run with
//! `cargo test --release --workspace --test text_acceptance -- --ignored`): the SMS spam filter
//! reaches test accuracy ≥ 0.97 with both architectures on the stratified 20% split, and
//! deepwordbug turns some of its caught spam into ham, every success verified.
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gibbon");

fn sms() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/sms_spam_collection/SMSSpamCollection"
    ))
}

#[test]
#[ignore = "trains on the full SMS Spam Collection (about a minute)"]
fn spam_filters_reach_097_and_deepwordbug_evades_some() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, epochs) in [("linear", "10"), ("cnn", "6")] {
        let model = dir.path().join(arch);
        let out = Command::new(BIN)
            .args([
                "text",
                "train",
                "--data",
                sms().to_str().unwrap(),
                "--arch",
                arch,
                "--epochs",
                epochs,
                "--threads",
                "1",
            ])
            .arg("--out")
            .arg(&model)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap())
                .unwrap();
        let acc = meta["training"]["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.97, "{arch}: test accuracy {acc}");
        let json = dir.path().join(format!("{arch}.json"));
        let out = Command::new(BIN)
            .args([
                "text",
                "attack",
                "--data",
                sms().to_str().unwrap(),
                "--model-test-split",
                "--only-label",
                "spam",
            ])
            .args(["--n", "60", "--recipe", "deepwordbug"])
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&json)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let rate = doc["text_attack"][0]["summary"]["success_rate"].as_f64().unwrap();
        assert!(rate > 0.3, "{arch}: deepwordbug success {rate}");
    }
}
