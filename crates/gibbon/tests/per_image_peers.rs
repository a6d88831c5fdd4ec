//! Never weaker than the peers, image by image. On the first 200 MNIST test images of the
//! adversarially trained reference model, every image that some peer attack broke inside the
//! threat model must be broken by gibbon's standard suite too: at most one miss in 200, and the
//! misses are named with the peers that broke them.
//!
//! Peer masks: `../shared/reference/reference.json` (torchattacks, ART, Foolbox; L∞ ε = 0.3 and
//! L2 ε = 2) and `tests/fixtures/peer_masks.json` (recorded by `scripts/record_peer_masks.py`:
//! torchattacks APGD and AutoAttack at L2 ε = 2, ART's APGD at L1 ε = 10).
//!
//! The suite runs only on the images some peer broke. A sample's verdict does not depend on the
//! other samples of its batch (`tests/determinism.rs`), so this is the per-image verdict of a
//! 200-image run (with other random starts, which are keyed by position) at a fraction of its
//! cost. The 1,000-image runs are the slow check in `tests/curves_and_suites.rs`.
mod support;

use gibbon::data::Dataset;
use gibbon::eval::{evaluate, EvalSettings, RunInfo, Suite};
use gibbon::model::precision::{cpu_low_precision_flags, resolve};
use gibbon::model::Precision;
use gibbon::threat::{Norm, ThreatModel};
use serde_json::Value;
use std::collections::BTreeMap;
use support::{mnist, reference_model, shared};

const IMAGES: usize = 200;

/// The norm a peer row attacked in: its `params.norm`, else the attack's name.
fn row_norm(row: &Value) -> Option<Norm> {
    let tag = match &row["params"]["norm"] {
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => row["attack"].as_str()?.to_ascii_lowercase(),
    };
    if tag.contains("inf") || tag == "fgsm" {
        Some(Norm::Linf)
    } else if tag.contains("l2") || tag == "2" {
        Some(Norm::L2)
    } else if tag.contains("l1") || tag == "1" {
        Some(Norm::L1)
    } else {
        None
    }
}

/// Image index → the peers (tool and attack) that broke it, over the first `IMAGES` images, from
/// every row on the adversarially trained model at exactly (`norm`, `eps`).
fn broken_by_peers(norm: Norm, eps: f64) -> BTreeMap<usize, Vec<String>> {
    let files = [
        shared().join("reference/reference.json"),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peer_masks.json"),
    ];
    let mut broken: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut rows = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        for row in doc["results"].as_array().unwrap() {
            let at_eps = row["params"]["eps"].as_f64().is_some_and(|e| (e - eps).abs() < 1e-9);
            if row["model"] != "adv" || !at_eps || row_norm(row) != Some(norm) {
                continue;
            }
            let Some(mask) = row["robust_mask"].as_str() else { continue };
            rows += 1;
            let peer = format!("{} {}", row["tool"].as_str().unwrap(), row["attack"]);
            for (i, c) in mask.chars().take(IMAGES).enumerate() {
                if c == '0' {
                    broken.entry(i).or_default().push(peer.clone());
                }
            }
        }
    }
    assert!(rows > 0, "no peer rows for {norm} eps {eps}");
    broken
}

/// Runs the standard suite (search passes in `precision`) on the images the peers broke;
/// returns the ones it left robust.
fn misses(norm: Norm, eps: f64, precision: Precision) -> (Vec<(usize, Vec<String>)>, usize) {
    let peers = broken_by_peers(norm, eps);
    let data = mnist(IMAGES);
    let idx: Vec<usize> = peers.keys().copied().collect();
    let x = data.try_batch(&idx, tch::Device::Cpu).unwrap();
    let labels: Vec<i64> = idx.iter().map(|&i| data.labels()[i]).collect();
    let subset = Dataset::from_tensor(x, labels, "peer-broken").unwrap();
    let model = reference_model("adv");
    let mut threat = ThreatModel::new(norm, eps).unwrap();
    let mut settings = EvalSettings { batch_size: 128, ..Default::default() };
    settings.precision = resolve(precision, "torchscript", tch::Device::Cpu).unwrap();
    Suite::Standard.apply(&mut threat, &mut settings);
    let (r, _) =
        evaluate(model.as_ref(), &subset, &threat, &settings, &RunInfo::default()).unwrap();
    let stages: Vec<String> =
        r.per_attack.iter().map(|a| format!("{} {}/{}", a.name, a.broken, a.attacked)).collect();
    eprintln!(
        "{norm} eps {eps} {precision:?}: {} peer-broken images; suite stages {stages:?}",
        idx.len()
    );
    let missed = r
        .per_sample
        .iter()
        .filter(|s| s.robust)
        .map(|s| (idx[s.index], peers[&idx[s.index]].clone()))
        .collect();
    (missed, idx.len())
}

fn assert_at_most_one_miss(norm: Norm, eps: f64, precision: Precision) {
    let (missed, broken) = misses(norm, eps, precision);
    eprintln!("{norm} eps {eps}: the suite missed {} of {broken}: {missed:?}", missed.len());
    assert!(
        missed.len() <= 1,
        "{norm} eps {eps}: the standard suite left {} of the {broken} images the peers broke \
         robust (image, peers): {missed:?}",
        missed.len()
    );
}

#[test]
fn the_linf_suite_breaks_every_image_a_peer_broke() {
    assert_at_most_one_miss(Norm::Linf, 0.3, Precision::Fp32);
}

#[test]
fn the_l2_suite_breaks_every_image_a_peer_broke() {
    assert_at_most_one_miss(Norm::L2, 2.0, Precision::Fp32);
}

#[test]
fn the_l1_suite_breaks_every_image_a_peer_broke() {
    assert_at_most_one_miss(Norm::L1, 10.0, Precision::Fp32);
}

/// The same check with the search passes in bf16 (`--precision bf16`), where the CPU has
/// native bf16.
fn with_bf16_search(norm: Norm, eps: f64) {
    let flags = cpu_low_precision_flags();
    if !flags.iter().any(|f| f.ends_with("bf16")) {
        eprintln!("skipped: this CPU has no native bf16 (flags seen: {flags:?})");
        return;
    }
    assert_at_most_one_miss(norm, eps, Precision::Bf16);
}

#[test]
fn the_linf_suite_with_bf16_search_breaks_every_image_a_peer_broke() {
    with_bf16_search(Norm::Linf, 0.3);
}

/// Fails today (measured on this branch, AVX512-BF16 + AMX Xeon): the bf16 search leaves 2 of
/// the 144 peer-broken images robust (137 and 180, broken by torchattacks' L2 AutoAttack),
/// one more than allowed; hence fp32 stays the default search precision.
#[test]
#[ignore = "fails today (2 misses at L2 eps 2 with bf16 search); ~20 min on a loaded 2-core machine"]
fn the_l2_suite_with_bf16_search_breaks_every_image_a_peer_broke() {
    with_bf16_search(Norm::L2, 2.0);
}
