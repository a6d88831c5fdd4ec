//! `gibbon text guard`: a prompt-injection guard at a target FPR: its TPR, and how many of the
//! injections it catches each obfuscation slips past (only counted when the payload survives),
//! without and with the Unicode normalization defense.
use super::source::TextSource;
use super::{format_of, load, threshold_at_fpr};
use crate::args::text::TextGuardArgs;
use crate::resolve::{command_line, set_threads, usage};
use anyhow::Result;
use gibbon::eval::clopper_pearson;
use gibbon::text::normalize::Normalized;
use gibbon::text::transform::obfuscate::{obfuscate, payload_survives, OBFUSCATIONS};
use gibbon::text::{load_text_dataset, stratified_split, TextClassifier, TextDataset};
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
    let (calibration, calibration_record) = calibration_benign(&args, &source, &data)?;
    let plain = evaluate(model, &data.texts, &data.labels, &calibration, args.fpr)?;
    let normalized = Normalized { inner: model };
    let defended = evaluate(&normalized, &data.texts, &data.labels, &calibration, args.fpr)?;
    for (name, v) in [("undefended", &plain), ("normalized", &defended)] {
        eprintln!(
            "{name}: TPR {:.4} (95% CI {:.4}-{:.4}) at measured FPR {:.4} (95% CI {:.4}-{:.4}), threshold {:.6} from {}",
            v["tpr"].as_f64().unwrap_or(0.0),
            v["tpr_ci95"][0].as_f64().unwrap_or(0.0),
            v["tpr_ci95"][1].as_f64().unwrap_or(0.0),
            v["fpr"].as_f64().unwrap_or(0.0),
            v["fpr_ci95"][0].as_f64().unwrap_or(0.0),
            v["fpr_ci95"][1].as_f64().unwrap_or(0.0),
            v["threshold"].as_f64().unwrap_or(0.0),
            calibration_record["source"].as_str().unwrap_or("")
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
        "data": args.data.data, "target_fpr": args.fpr, "calibration": calibration_record, "undefended": plain, "normalized": defended});
    super::super::write_json(&args.out, &doc)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The threshold set on the calibration texts' class-0 scores at `fpr`; on the data: the TPR and
/// the measured FPR with their intervals, and the evasion rate of each obfuscation on the
/// caught injections.
fn evaluate(
    model: &dyn TextClassifier,
    texts: &[String],
    labels: &[usize],
    calibration: &[String],
    fpr: f64,
) -> Result<Value> {
    let calibration_scores: Vec<f32> =
        model.probabilities(calibration)?.iter().map(|p| p[1]).collect();
    let t = threshold_at_fpr(&calibration_scores, fpr)?;
    let scores: Vec<f32> = model.probabilities(texts)?.iter().map(|p| p[1]).collect();
    let benign: Vec<f32> =
        scores.iter().zip(labels).filter(|(_, &l)| l == 0).map(|(s, _)| *s).collect();
    let false_pos = benign.iter().filter(|&&s| s >= t).count();
    let (flo, fhi) = clopper_pearson(false_pos, benign.len(), 0.05);
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
        json!({"threshold": t, "fpr": false_pos as f64 / benign.len().max(1) as f64, "fpr_ci95": [flo, fhi],
        "false_positives": false_pos, "negatives": benign.len(), "positives": positives, "true_positives": caught.len(),
        "tpr": caught.len() as f64 / positives.max(1) as f64, "tpr_ci95": [lo, hi], "obfuscations": rows}),
    )
}

/// The class-0 texts the threshold is set on, and what the JSON says about them: the model's
/// held-out slice of the `--calibrate` train file, a `--calibration-fraction` slice of it, or
/// (without `--calibrate`) `--data` itself, in-sample.
fn calibration_benign(
    args: &TextGuardArgs,
    source: &TextSource,
    data: &TextDataset,
) -> Result<(Vec<String>, Value)> {
    let Some(path) = &args.calibrate else {
        tracing::warn!(
            "text guard: no --calibrate: the threshold is set on --data itself (in-sample)"
        );
        let benign = class0(data, &(0..data.len()).collect::<Vec<_>>());
        let record =
            json!({"source": "in-sample (--data)", "held_out": false, "negatives": benign.len()});
        return Ok((benign, record));
    };
    let train = load_text_dataset(path, format_of(path, args.data.format))?;
    let recorded = source
        .gibbon()
        .and_then(|m| m.meta.training.pointer("/holdout/indices"))
        .and_then(|v| v.as_array())
        .map(|v| v.iter().filter_map(|i| i.as_u64()).map(|i| i as usize).collect::<Vec<_>>());
    let (indices, source_text, held_out) = match (recorded, args.calibration_fraction) {
        (Some(idx), None) => {
            if idx.iter().any(|&i| i >= train.len()) {
                return Err(usage(format!(
                    "--calibrate {}: the model's held-out indices do not fit this file (not its training data?)",
                    path.display()
                )));
            }
            (idx, "the model's held-out slice of the train file (not trained on)", true)
        }
        (_, Some(f)) => {
            if !(f > 0.0 && f < 1.0) {
                return Err(usage(format!("--calibration-fraction {f} must be in (0, 1)")));
            }
            let (_, slice) = stratified_split(&train.labels, f, 0);
            (slice, "a stratified slice of the train file (the model may have been trained on it)", false)
        }
        (None, None) => {
            return Err(usage(
                "--calibrate: the model records no held-out slice (train it with --holdout-fraction), or give --calibration-fraction",
            ))
        }
    };
    let benign = class0(&train, &indices);
    if benign.is_empty() {
        return Err(usage("--calibrate: the calibration slice holds no class-0 texts"));
    }
    let record = json!({"source": source_text, "file": path, "held_out": held_out,
        "texts": indices.len(), "negatives": benign.len()});
    Ok((benign, record))
}

fn class0(data: &TextDataset, indices: &[usize]) -> Vec<String> {
    indices.iter().filter(|&&i| data.labels[i] == 0).map(|&i| data.texts[i].clone()).collect()
}
