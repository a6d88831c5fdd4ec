//! Tests of the report's sections (`gibbon::report::sections`): each section renders exactly
//! when its data is in the result JSON, the gallery shows the worst cases first and is capped,
//! a 10,000-sample result makes a page of a few hundred kilobytes, and bad result files are
//! clear errors.
use gibbon::report::sections::{gallery_indices, GALLERY_CARDS, SAMPLE_ROWS};
use gibbon::report::{report_page, ResultDoc, SampleImages, SECTIONS};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One per-sample record: `broken` samples have `broken_by`, robust ones do not.
fn record(index: usize, broken: bool, confidence: f64) -> Value {
    json!({
        "index": index, "label": index % 10, "clean_pred": index % 10, "clean_confidence": 0.99,
        "adv_pred": if broken { (index + 1) % 10 } else { index % 10 },
        "adv_confidence": confidence, "robust": !broken,
        "broken_by": if broken { json!("apgd-ce") } else { Value::Null },
        "step": if broken { json!(3) } else { Value::Null }, "restart": Value::Null,
        "norm": 0.3, "queries": 40,
    })
}

fn model() -> Value {
    json!({ "path": "builtin:smallcnn-mnist", "sha256": "ab12", "kind": "builtin", "arch": "smallcnn" })
}

fn threat() -> Value {
    json!({ "norm": "linf", "eps": 0.3, "knowledge": "white-box", "goal": { "kind": "untargeted" },
            "budget": { "steps": 40, "restarts": 1 } })
}

/// An evaluation of `n` samples, every third one broken.
fn eval_json(n: usize) -> Value {
    let per_sample: Vec<Value> =
        (0..n).map(|i| record(i, i % 3 == 0, 0.5 + (i % 7) as f64 / 20.0)).collect();
    let broken = per_sample.iter().filter(|r| r["robust"] == json!(false)).count();
    json!({
        "gibbon_version": "0.1.0", "command": "gibbon eval", "seed": 0, "device": "cpu",
        "model": model(), "data": { "spec": "idx:data/mnist", "split": "test", "n": n },
        "threat": threat(), "n": n, "clean_accuracy": 1.0,
        "robust_accuracy": 1.0 - broken as f64 / n as f64, "robust_accuracy_ci95": [0.6, 0.7],
        "verifier_disagreements": 0,
        "per_attack": [{ "name": "apgd-ce", "params": {}, "broken": broken, "attacked": n,
                         "seconds": 1.5, "queries": 4000, "verifier_disagreements": 0 }],
        "total_queries": 4000, "per_sample": per_sample, "resumed": 0, "seconds": 2.0,
    })
}

/// An L2 eval joined with certificates (`gibbon eval --certificates`): two certified samples
/// with SmoothAdv and base-classifier distances, one abstention.
fn eval_with_certificates_json() -> Value {
    let mut doc = eval_json(3);
    doc["certified"] = json!({
        "sigma": 0.25, "draws": 10000, "alpha": 0.001, "joined": 3,
        "same_base_model": true, "smoothed_violations": 0,
        "base_inside_certified_radius": 1, "base_norm": "l2",
        "per_sample": [
            { "index": 0, "smoothed_class": 7, "certified_radius": 0.6,
              "smoothed_attack_l2": 0.9, "base_min_norm": 0.4 },
            { "index": 1, "smoothed_class": 2, "certified_radius": 0.3,
              "smoothed_attack_l2": 0.5, "base_min_norm": 0.7 },
            { "index": 2, "smoothed_class": null, "certified_radius": 0.0 }
        ]
    });
    doc
}

/// Pictures for the gallery's samples: a 28×28 gradient and a shifted copy.
fn images(json: &Value) -> SampleImages {
    let mut images = SampleImages { shape: [1, 28, 28], ..Default::default() };
    for (index, _) in gallery_indices(json) {
        let original: Vec<f32> = (0..784).map(|p| ((p + index) % 784) as f32 / 784.0).collect();
        let adversarial = original.iter().map(|v| (v + 0.1).min(1.0)).collect();
        images.pairs.insert(index, (original, adversarial));
    }
    images
}

fn curve_json() -> Value {
    json!({
        "model": model(), "threat": threat(), "n": 50, "clean_accuracy": 0.98,
        "curve": [
            { "eps": 0.1, "robust_accuracy": 0.9, "robust_accuracy_ci95": [0.78, 0.97], "broken_by_min_norm": 4, "broken_by_plan": 0, "seconds": 1.0 },
            { "eps": 0.3, "robust_accuracy": 0.5, "robust_accuracy_ci95": [0.36, 0.64], "broken_by_min_norm": 20, "broken_by_plan": 4, "seconds": 1.0 }
        ],
        "min_norms": [0.12, 0.2, null, 0.35, 0.05],
    })
}

fn transfer_json() -> Value {
    let cell = |r: f64| json!({ "success_rate": r, "successes": (r * 100.0) as usize, "n": 100, "ci_low": r - 0.05, "ci_high": r + 0.05 });
    json!({
        "threat": threat(), "attack": { "name": "mifgsm", "params": {}, "full_budget": true },
        "surrogates": [{ "model": { "path": "a/std.pt" }, "white_box": cell(0.99) },
                       { "model": { "path": "a/adv.pt" }, "white_box": cell(0.11) }],
        "targets": [{ "model": { "path": "a/std.pt" } }, { "model": { "path": "a/adv.pt" } }],
        "matrix": [[cell(0.99), cell(0.08)], [cell(0.22), json!({ "success_rate": null, "successes": 0, "n": 0, "ci_low": 0.0, "ci_high": 1.0 })]],
    })
}

fn audit_json() -> Value {
    json!({
        "audit": { "model": model(), "threat": threat(), "n": 20, "correct": 20,
                   "findings": [{ "check": "gradients", "question": "usable?", "fired": true, "verdict": "zero gradients", "evidence": {}, "remedies": ["bpda"] }],
                   "fired": ["gradients"], "remedies": ["bpda"] },
        "adaptive": { "n": 20, "standard": { "robust_accuracy": 0.9, "ci95": [0.7, 0.99], "robust": 18 },
                      "adaptive": { "robust_accuracy": 0.1, "ci95": [0.01, 0.3], "robust": 2 },
                      "stages": [{ "remedy": "bpda", "because": ["gradients"], "view": "bpda", "attacks": ["apgd-ce"], "newly_broken": 16, "seconds": 3.0 }],
                      "skipped": ["transfer: no --surrogate"] },
    })
}

fn certify_json() -> Value {
    json!({
        "model": model(), "data": "idx:data/mnist (test)", "config": { "sigma": 0.25 }, "n": 3, "abstained": 1,
        "certified_accuracy": [[0.0, 0.67], [0.5, 0.33]],
        "per_sample": [{ "index": 0, "radius": 0.6, "correct": true }, { "index": 1, "radius": 0.2, "correct": true },
                       { "index": 2, "radius": 0.0, "correct": false }],
    })
}

/// `gibbon certify --ibp`: L∞ radii, one sample not verified even at 0 (`radius: null`).
fn certify_ibp_json() -> Value {
    json!({
        "model": model(), "data": "idx:data/mnist (test)", "method": "interval-bound-propagation",
        "norm": "linf", "n": 3, "certified_accuracy": [[0.0, 0.67], [0.1, 0.33]],
        "per_sample": [{ "index": 0, "radius": 0.12, "correct": true }, { "index": 1, "radius": 0.05, "correct": true },
                       { "index": 2, "radius": null, "correct": true }],
    })
}

fn detect_eval_json() -> Value {
    let rate = |k: usize, n: usize| json!({ "k": k, "n": n, "rate": k as f64 / n as f64, "ci95": [0.0, 1.0] });
    json!({
        "model": model(), "detector": "energy",
        "calibration": { "threshold": -7.5, "fpr_target": 0.05, "n": 3000, "fpr_upper_bound": 0.0567 },
        "sets": [{ "kind": "ood", "spec": "idx:notmnist", "n": 2000, "n_total": 2000,
                   "metrics": { "auroc": 0.945, "auroc_ci95": [0.938, 0.952], "tpr_at_threshold": rate(1434, 2000),
                                "fpr_at_threshold": rate(100, 2000), "fpr_at_95_tpr": 0.24, "fpr_at_95_tpr_ci95": [0.2, 0.28] } }],
    })
}

/// A `gibbon text attack` result: one recipe, one successful sample with an invisible edit.
fn text_attack_json() -> Value {
    json!({ "text_attack": [{
        "name": "deepwordbug", "search": "greedy",
        "summary": { "attacked": 2, "success_rate": 0.5, "success_rate_ci95": [0.0126, 0.9874],
            "mean_words_changed": 1.0, "mean_char_edits": 1.0, "mean_queries_per_success": 12.0,
            "seconds": 0.1 },
        "per_sample": [
            { "index": 0, "label": 1, "clean_pred": 1, "adv_pred": 0, "queries": 12,
              "success": true, "text": "win a free prize now",
              "edits": [{ "offset": 6, "from": "free", "to": "fr\u{200b}ee" }] },
            { "index": 1, "label": 1, "clean_pred": 1, "adv_pred": 1, "queries": 30,
              "success": false, "text": "call me later", "edits": [] }
        ]
    }]})
}

fn detect_attack_json() -> Value {
    let rate = |k: usize, n: usize| json!({ "k": k, "n": n, "rate": k as f64 / n as f64, "ci95": [0.0, 1.0] });
    let side = |robust: usize| {
        json!({ "robust_accuracy_under_detection": rate(robust, 500),
        "detection_rate": rate(robust, 500), "robust_accuracy_classifier": rate(0, 500), "seconds": 10.0 })
    };
    json!({
        "model": model(), "detector": "msp", "eps": 0.3,
        "calibration": { "threshold": 0.2, "fpr_target": 0.05, "n": 3000, "fpr_upper_bound": 0.0567 },
        "non_adaptive": side(494), "adaptive": side(2),
    })
}

fn redteam_json() -> Value {
    json!({ "passed": false, "threat_file": "t.toml", "threat_text": "[model]\nspec = \"x\"\n",
            "criteria": [{ "criterion": "robust_accuracy >= 0.8 at linf ε = 0.3", "measured": 0.5, "ci95": [0.4, 0.6], "passed": false }] })
}

/// The names of the sections that render for `doc`.
fn rendered(doc: &ResultDoc) -> BTreeSet<&'static str> {
    SECTIONS
        .iter()
        .filter(|s| s.render(doc).expect("renders").is_some())
        .map(|s| s.name())
        .collect()
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

#[test]
fn each_section_renders_exactly_when_its_data_is_present() {
    let mut eval = ResultDoc::new("eval.json", eval_json(30));
    let base = ["threat-model", "accuracy", "per-attack", "samples", "json"];
    assert_eq!(rendered(&eval), set(&base), "no pictures, no gallery");
    eval.images = Some(images(&eval.json));
    let mut with_gallery = set(&base);
    with_gallery.insert("gallery");
    assert_eq!(rendered(&eval), with_gallery);
    let curve = ResultDoc::new("curve.json", curve_json());
    assert_eq!(rendered(&curve), set(&["threat-model", "curve", "min-norm", "json"]));
    let transfer = ResultDoc::new("transfer.json", transfer_json());
    assert_eq!(rendered(&transfer), set(&["threat-model", "transfer", "json"]));
    let audit = ResultDoc::new("audit.json", audit_json());
    assert_eq!(rendered(&audit), set(&["threat-model", "audit", "json"]));
    let certify = ResultDoc::new("certify.json", certify_json());
    assert_eq!(rendered(&certify), set(&["threat-model", "certification", "json"]));
    let ibp = ResultDoc::new("ibp.json", certify_ibp_json());
    assert_eq!(rendered(&ibp), set(&["threat-model", "certification", "json"]));
    let page = report_page("t", "", std::slice::from_ref(&ibp)).unwrap().render();
    assert!(page.contains("L∞ radius") && page.contains("(interval bound propagation)"));
    assert!(
        !page.contains("L2 radius") && !page.contains("σ ="),
        "smoothing's words on an IBP page"
    );
    let page = report_page("t", "", std::slice::from_ref(&certify)).unwrap().render();
    assert!(page.contains("L2 radius") && page.contains("(randomized smoothing)"));
    let redteam = ResultDoc::new("redteam.json", redteam_json());
    assert_eq!(rendered(&redteam), set(&["criteria", "json"]));
    let detect = ResultDoc::new("detect.json", detect_eval_json());
    assert_eq!(rendered(&detect), set(&["threat-model", "detection", "json"]));
    let guarded = ResultDoc::new("guarded.json", detect_attack_json());
    assert_eq!(rendered(&guarded), set(&["threat-model", "detection", "json"]));
    let page = report_page("t", "", &[detect.clone(), guarded.clone()]).unwrap().render();
    for needle in ["0.9450 (0.9380-0.9520)", "idx:notmnist", "0.0567", "adaptive", "2 / 500"] {
        assert!(page.contains(needle), "{needle} missing from the detection section");
    }
    let text = ResultDoc::new("text.json", text_attack_json());
    assert_eq!(rendered(&text), set(&["text-attacks", "json"]));
    let page = report_page("t", "", std::slice::from_ref(&text)).unwrap().render();
    for needle in ["deepwordbug", "0.5000 (0.0126-0.9874)", "<mark>", "U+200B", "free"] {
        assert!(page.contains(needle), "{needle} missing from the text-attacks section");
    }
    let certified = ResultDoc::new("certified.json", eval_with_certificates_json());
    let mut with_certificates = set(&base);
    with_certificates.insert("certified-beside");
    assert_eq!(rendered(&certified), with_certificates);
    let page = report_page("t", "", std::slice::from_ref(&certified)).unwrap().render();
    for needle in ["Certificates beside the attacks", "0.25 / 10000 / 0.001", "expected 0", "<svg"]
    {
        assert!(page.contains(needle), "{needle} missing from the certified-beside section");
    }
    assert_eq!(rendered(&ResultDoc::new("empty.json", json!({}))), set(&["json"]));
    // Every registered section is exercised by one of these results.
    let all: BTreeSet<_> = SECTIONS.iter().map(|s| s.name()).collect();
    let mut seen = BTreeSet::new();
    for doc in [&eval, &curve, &transfer, &audit, &certify, &redteam, &detect, &text, &certified] {
        seen.extend(rendered(doc));
    }
    assert_eq!(seen, all);
}

#[test]
fn the_page_holds_every_rendered_section_with_its_plots_inline() {
    let mut eval = ResultDoc::new("eval.json", eval_json(30));
    eval.images = Some(images(&eval.json));
    let docs = [
        eval,
        ResultDoc::new("curve.json", curve_json()),
        ResultDoc::new("t.json", transfer_json()),
    ];
    let html = report_page("t", "", &docs).unwrap().render();
    for name in
        ["gallery", "curve", "min-norm", "transfer", "accuracy", "per-attack", "threat-model"]
    {
        assert!(html.contains(&format!("data-section=\"{name}\"")), "{name} missing");
    }
    // Three plots, drawn by plotters and inlined, and no external resources.
    assert_eq!(html.matches("<div class=\"plot\"><svg").count(), 3);
    assert!(!html.contains("src=\"http") && !html.contains("<link"));
    // The curve's band is a polygon; the heat map labels its cells, n/a included.
    assert!(html.contains("<polygon"));
    assert!(html.contains(">0.990<") && html.contains(">n/a<"));
    // Ids are unique: the second threat-model section is threat-model-2.
    assert!(html.contains("id=\"threat-model-2\"") && html.contains("id=\"threat-model-3\""));
    assert!(html.contains("data-check") || html.contains("setAttribute('data-check'"));
}

#[test]
fn the_gallery_shows_the_worst_cases_first_and_at_most_its_cap() {
    let json = eval_json(200);
    let chosen = gallery_indices(&json);
    assert_eq!(chosen.len(), GALLERY_CARDS);
    let records = json["per_sample"].as_array().unwrap();
    let conf = |i: usize| records[i]["adv_confidence"].as_f64().unwrap();
    // 67 samples are broken: all 24 cards are broken ones, by descending confidence.
    for w in chosen.windows(2) {
        assert!(conf(w[0].1) >= conf(w[1].1));
    }
    assert!(chosen.iter().all(|&(i, row)| i == row && records[row]["robust"] == json!(false)));
    // With few broken samples, the held ones follow, least sure first.
    let few = json!({ "per_sample": [record(0, false, 0.9), record(1, true, 0.6), record(2, false, 0.7)] });
    assert_eq!(gallery_indices(&few), vec![(1, 1), (2, 2), (0, 0)]);
}

#[test]
fn a_ten_thousand_sample_result_makes_a_page_of_a_few_hundred_kilobytes() {
    let json = eval_json(10_000);
    let full = serde_json::to_string(&json).unwrap().len();
    let mut doc = ResultDoc::new("big.json", json);
    doc.images = Some(images(&doc.json));
    let html = report_page("big", "", &[doc]).unwrap().render();
    assert!(full > 1_500_000, "the JSON itself is large ({full} bytes)");
    assert!(html.len() < 1_000_000, "page is {} bytes", html.len());
    assert_eq!(html.matches("<article class=\"card").count(), GALLERY_CARDS);
    let rows =
        html.split("data-section=\"samples\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert_eq!(rows.matches("<tr>").count(), SAMPLE_ROWS + 1, "header and {SAMPLE_ROWS} rows");
    assert!(html.contains(&format!("{SAMPLE_ROWS} of 10000 records shown")));
    assert!(html.contains("... 9980 more in the file"));
}

#[test]
fn result_files_that_cannot_be_read_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ResultDoc::load(&dir.path().join("nope.json")).unwrap_err();
    assert!(missing.is_user_error() && missing.to_string().contains("nope.json"), "{missing}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let e = ResultDoc::load(&bad).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("bad.json"), "{e}");
    std::fs::write(&bad, "[1, 2]").unwrap();
    assert!(ResultDoc::load(&bad).unwrap_err().to_string().contains("expected an object"));
    std::fs::write(&bad, eval_json(5).to_string()).unwrap();
    let doc = ResultDoc::load(&bad).unwrap();
    assert!(doc.images.is_none(), "no adversarial.npy beside it: no pictures");
}
