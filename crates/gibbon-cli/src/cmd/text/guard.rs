//! `gibbon text guard`: a prompt-injection guard at a target FPR: its TPR, and how many of the
//! injections it catches each obfuscation slips past (only counted when the payload survives),
//! without and with the Unicode normalization defense.
use super::source::TextSource;
use super::{load, threshold_at_fpr};
use crate::args::text::TextGuardArgs;
use crate::resolve::{command_line, set_threads, usage};
use anyhow::Result;
use gibbon::eval::clopper_pearson;
use gibbon::text::normalize::Normalized;
use gibbon::text::transform::obfuscate::{obfuscate, payload_survives, OBFUSCATIONS};
use gibbon::text::TextClassifier;
use serde_json::{json, Value};

/// Measures and writes the JSON.
pub fn run(args: TextGuardArgs) -> Result<()> {
    set_threads(args.threads)?;
    let source = TextSource::load(&args.model, args.tokenizer.as_deref())?;
    let model = source.classifier();
    if source.class_names().len() != 2 {
        return Err(usage("text guard needs a binary model (class 1 = injection)"));
    }
    let (data, _) = load(&args.data)?;
    let all: Vec<&String> = data.texts.iter().collect();
    source.check_lengths(&all, &(0..all.len()).collect::<Vec<_>>())?;
    let plain = evaluate(&model, &data.texts, &data.labels, args.fpr)?;
    let defended = evaluate(&Normalized { inner: model }, &data.texts, &data.labels, args.fpr)?;
    for (name, v) in [("undefended", &plain), ("normalized", &defended)] {
        eprintln!(
            "{name}: TPR {:.4} (95% CI {:.4}-{:.4}) at FPR {:.4}",
            v["tpr"].as_f64().unwrap_or(0.0),
            v["tpr_ci95"][0].as_f64().unwrap_or(0.0),
            v["tpr_ci95"][1].as_f64().unwrap_or(0.0),
            v["fpr"].as_f64().unwrap_or(0.0)
        );
        for o in v["obfuscations"].as_array().into_iter().flatten() {
            eprintln!(
                "  {:<12} evasion {}/{} = {:.4} (95% CI {:.4}-{:.4}), payload lost in {}",
                o["name"].as_str().unwrap_or(""),
                o["evaded"],
                o["caught"],
                o["evasion_rate"].as_f64().unwrap_or(0.0),
                o["evasion_ci95"][0].as_f64().unwrap_or(0.0),
                o["evasion_ci95"][1].as_f64().unwrap_or(0.0),
                o["payload_lost"]
            );
        }
    }
    let doc = json!({"gibbon_version": gibbon::VERSION, "command": command_line(), "model": source.describe(&args.model),
        "data": args.data.data, "target_fpr": args.fpr, "undefended": plain, "normalized": defended});
    super::super::write_json(&args.out, &doc)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// TPR at the FPR threshold, and the evasion rate of each obfuscation on the caught injections.
fn evaluate(
    model: &dyn TextClassifier,
    texts: &[String],
    labels: &[usize],
    fpr: f64,
) -> Result<Value> {
    let scores: Vec<f32> = model.probabilities(texts)?.iter().map(|p| p[1]).collect();
    let benign: Vec<f32> =
        scores.iter().zip(labels).filter(|(_, &l)| l == 0).map(|(s, _)| *s).collect();
    let t = threshold_at_fpr(&benign, fpr)?;
    let false_pos = benign.iter().filter(|&&s| s >= t).count();
    let caught: Vec<&String> = texts
        .iter()
        .zip(labels)
        .zip(&scores)
        .filter(|((_, &l), &s)| l == 1 && s >= t)
        .map(|((x, _), _)| x)
        .collect();
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let (lo, hi) = clopper_pearson(caught.len(), positives, 0.05);
    let mut rows = Vec::new();
    for name in OBFUSCATIONS {
        let obf: Vec<String> =
            caught.iter().map(|x| obfuscate(name, x).expect("registered obfuscation")).collect();
        let lost = caught.iter().zip(&obf).filter(|(x, o)| !payload_survives(name, x, o)).count();
        let evaded = model
            .probabilities(&obf)?
            .iter()
            .zip(caught.iter().zip(&obf))
            .filter(|(p, (x, o))| p[1] < t && payload_survives(name, x, o))
            .count();
        let (elo, ehi) = clopper_pearson(evaded, caught.len(), 0.05);
        rows.push(
            json!({"name": name, "caught": caught.len(), "evaded": evaded, "payload_lost": lost,
            "evasion_rate": evaded as f64 / caught.len().max(1) as f64, "evasion_ci95": [elo, ehi],
            "example": obf.first()}),
        );
    }
    Ok(
        json!({"threshold": t, "fpr": false_pos as f64 / benign.len().max(1) as f64, "positives": positives,
        "tpr": caught.len() as f64 / positives.max(1) as f64, "tpr_ci95": [lo, hi], "obfuscations": rows}),
    )
}
