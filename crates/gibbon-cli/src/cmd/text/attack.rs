//! `gibbon text attack`: runs recipes on a text model; JSON (and HTML) with per-text edits.
use super::source::TextSource;
use super::{load, threshold_at_fpr};
use crate::args::text::TextAttackArgs;
use crate::resolve::{command_line, set_threads, usage};
use anyhow::Result;
use gibbon::text::attack::summarize;
use gibbon::text::normalize::{Normalized, Thresholded};
use gibbon::text::payload::{reverify, with_payload_check, PayloadCheck};
use gibbon::text::recipes::needs_synonyms;
use gibbon::text::transform::Synonyms;
use gibbon::text::{
    attack_texts, recipe_by_name, RecipeContext, TextAttackSettings, TextClassifier, TextDataset,
    TextModel,
};
use std::sync::Arc;

/// Attacks with every recipe and writes the result JSON.
pub fn run(args: TextAttackArgs) -> Result<()> {
    set_threads(args.threads)?;
    let source = TextSource::load(&args.model, args.tokenizer.as_deref())?;
    let model = source.classifier();
    let class_names = source.class_names();
    let (mut data, _) = load(&args.data)?;
    if args.model_test_split {
        let gibbon_model = source.gibbon().ok_or_else(|| {
            usage("--model-test-split needs a gibbon text model (it reads the split in model.json)")
        })?;
        data = model_test_split(gibbon_model, &data)?;
    }
    let only_label =
        args.only_label.as_deref().map(|l| class_index(&class_names, l)).transpose()?;
    let attacked: Vec<usize> = (0..data.len())
        .filter(|&i| only_label.is_none_or(|l| data.labels[i] == l))
        .take(args.n)
        .collect();
    let texts: Vec<&String> = attacked.iter().map(|&i| &data.texts[i]).collect();
    source.check_lengths(&texts, &attacked)?;
    let ctx = RecipeContext {
        synonyms: if args.recipe.iter().any(|r| needs_synonyms(r)) {
            Some(Arc::new(Synonyms::load(&args.synonyms)?))
        } else {
            None
        },
    };
    let recipes =
        args.recipe.iter().map(|r| recipe_by_name(r, &ctx)).collect::<gibbon::Result<Vec<_>>>()?;
    let payload =
        (args.payload_check || args.fpr.is_some() || !args.protect.is_empty()).then(|| {
            PayloadCheck {
                protect: args.protect.iter().map(|w| w.to_lowercase()).collect(),
                synonyms: Some(ctx.synonyms.clone()).flatten(),
            }
        });
    let recipes: Vec<_> = match &payload {
        Some(check) => recipes.into_iter().map(|r| with_payload_check(r, check)).collect(),
        None => recipes,
    };
    if let Some(r) = recipes.iter().find(|r| source.labels_only() && !r.search.label_only()) {
        return Err(usage(format!(
            "the model answers labels only: recipe {} needs scores (use its label-only variant, {}-label)",
            r.name, r.name
        )));
    }
    let base: Box<dyn TextClassifier> =
        if args.normalize { Box::new(Normalized { inner: model }) } else { Box::new(model) };
    let mut threshold = None;
    let target: Box<dyn TextClassifier> = match args.fpr {
        None => base,
        Some(fpr) => {
            if class_names.len() != 2 {
                return Err(usage("--fpr needs a binary model"));
            }
            let benign: Vec<String> = data
                .texts
                .iter()
                .zip(&data.labels)
                .filter(|(_, &l)| l == 0)
                .map(|(t, _)| t.clone())
                .collect();
            let scores: Vec<f32> = base.probabilities(&benign)?.iter().map(|p| p[1]).collect();
            let t = threshold_at_fpr(&scores, fpr)?;
            threshold = Some(t);
            Box::new(Thresholded { inner: base, threshold: t })
        }
    };
    let settings = TextAttackSettings {
        n: args.n,
        only_label,
        query_budget: args.query_budget,
        seed: args.seed,
    };
    let mut results = Vec::new();
    for recipe in &recipes {
        let (mut summary, mut records) =
            attack_texts(target.as_ref(), &data, recipe, ctx.synonyms.as_deref(), &settings)?;
        let payload_lost = payload.as_ref().map(|check| reverify(&mut records, check));
        if payload_lost.is_some() {
            summary = summarize(&records, summary.seconds);
        }
        eprintln!(
            "{}: success {}/{} = {:.4} (95% CI {:.4}-{:.4}), {:.2} words / {:.2} chars changed, {:.1} queries per success, {:.1}s",
            recipe.name, summary.successes, summary.attacked, summary.success_rate, summary.success_rate_ci95[0],
            summary.success_rate_ci95[1], summary.mean_words_changed, summary.mean_char_edits, summary.mean_queries_per_success, summary.seconds
        );
        results.push(serde_json::json!({
            "name": recipe.name, "search": recipe.search.name(), "transformation": recipe.transformation.name(),
            "constraints": recipe.constraints, "notes": recipe.notes, "label_only": recipe.search.label_only(), "payload_lost": payload_lost,
            "summary": summary, "per_sample": records,
        }));
    }
    let doc = serde_json::json!({
        "gibbon_version": gibbon::VERSION, "command": command_line(), "seed": args.seed,
        "model": source.describe(&args.model),
        "data": {"path": args.data.data, "n": data.len(), "model_test_split": args.model_test_split},
        "defense": {"normalize": args.normalize, "fpr": args.fpr, "threshold": threshold}, "payload_check": payload.as_ref().map(|p| serde_json::json!({"protect": p.protect,
            "rule": "each changed word: same normalized text, a WordNet synonym, or one typo (OSA distance 1) in a word of >= 4 characters; protected words unchanged"})),
        "settings": settings, "text_attack": results,
    });
    super::super::write_json(&args.out, &doc)?;
    if let Some(html) = &args.html {
        gibbon::report::write_text_attack_page(html, &doc)?;
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The test texts recorded in model.json by a stratified `gibbon text train` split.
fn model_test_split(model: &TextModel, data: &TextDataset) -> Result<TextDataset> {
    let idx = model.meta.training.pointer("/split/test_indices").and_then(|v| v.as_array()).ok_or_else(|| {
        usage("--model-test-split: the model records no stratified test split (it was trained with --test)")
    })?;
    let idx: Vec<usize> = idx.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect();
    if idx.iter().any(|&i| i >= data.len()) {
        return Err(usage(
            "--model-test-split: the recorded test indices do not fit --data (another file?)",
        ));
    }
    Ok(data.subset(&idx))
}

/// A class given by name or index.
fn class_index(names: &[String], label: &str) -> Result<usize> {
    names
        .iter()
        .position(|n| n == label)
        .or_else(|| label.parse::<usize>().ok().filter(|&i| i < names.len()))
        .ok_or_else(|| {
            usage(format!(
                "--only-label {label:?} is not a class of the model ({})",
                names.join(", ")
            ))
        })
}
