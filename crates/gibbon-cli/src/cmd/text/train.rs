//! `gibbon text train`: trains and saves a text model with its vocabulary and training record.
use super::{format_of, load};
use crate::args::text::{ArchArg, TextTrainArgs};
use crate::resolve::{command_line, set_threads, usage};
use anyhow::Result;
use gibbon::eval::clopper_pearson;
use gibbon::text::augment::{AugmentConfig, Augmenter};
use gibbon::text::model::CNN_WIDTHS;
use gibbon::text::recipes::needs_synonyms;
use gibbon::text::tokenize::Vocab;
use gibbon::text::transform::Synonyms;
use gibbon::text::{
    accuracy, load_text_dataset, stratified_split, train_text_model_augmented, RecipeContext,
    TextArch, TextModel, TextTrainConfig,
};
use std::sync::Arc;

/// Trains, prints the per-epoch accuracy, writes the model folder.
pub fn run(args: TextTrainArgs) -> Result<()> {
    set_threads(args.threads)?;
    let start = std::time::Instant::now();
    let (data, format) = load(&args.data)?;
    let (train, test, split, train_in_data) = match &args.test {
        Some(path) => {
            let test = load_text_dataset(path, format_of(path, args.data.format))?;
            (data.clone(), test, serde_json::json!({"test_file": path}), (0..data.len()).collect())
        }
        None => {
            if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
                return Err(usage(format!(
                    "--test-fraction {} must be in (0, 1)",
                    args.test_fraction
                )));
            }
            let (tr, te) = stratified_split(&data.labels, args.test_fraction, args.seed);
            let record = serde_json::json!({"stratified": true, "seed": args.seed,
                "test_fraction": args.test_fraction, "test_indices": te});
            (data.subset(&tr), data.subset(&te), record, tr)
        }
    };
    let (train, holdout) = holdout_slice(&args, train, &train_in_data)?;
    let classes = data.class_names.len().max(test.class_names.len());
    let class_names: Vec<String> = if classes == data.class_names.len() {
        data.class_names.clone()
    } else {
        test.class_names.clone()
    };
    let arch = match args.arch {
        ArchArg::Linear => TextArch::Linear { buckets: args.buckets.max(1), char_n: vec![2, 3, 4] },
        ArchArg::Cnn => {
            let vocab = Vocab::train(&train.texts, args.min_count, 50_000);
            TextArch::Cnn {
                vocab: vocab.words,
                dim: 64,
                maps: 64,
                max_len: args.max_len.max(*CNN_WIDTHS.last().unwrap() as usize),
            }
        }
    };
    let lr = args.lr.unwrap_or(if args.arch == ArchArg::Linear { 0.1 } else { 0.002 });
    let cfg =
        TextTrainConfig { epochs: args.epochs, batch_size: args.batch_size, lr, seed: args.seed };
    let mut model = TextModel::new(arch, class_names);
    let augmenter = augmenter(&args)?;
    let epochs = train_text_model_augmented(&mut model, &train, &test, &cfg, augmenter.as_ref())?;
    let acc = accuracy(&model, &test)?;
    let correct = (acc * test.len() as f64).round() as usize;
    let (lo, hi) = clopper_pearson(correct, test.len(), 0.05);
    model.meta.training = serde_json::json!({
        "data": args.data.data, "format": format, "split": split, "n_train": train.len(),
        "n_test": test.len(), "holdout": holdout, "config": cfg,
        "augment": augmenter.as_ref().map(|a| &a.config), "epochs": epochs, "test_accuracy": acc,
        "test_accuracy_ci95": [lo, hi], "seconds": start.elapsed().as_secs_f64(), "command": command_line(),
    });
    model.save(&args.out)?;
    eprintln!(
        "test accuracy {acc:.4} (95% CI {lo:.4}-{hi:.4}) on {} texts, {:.1}s; wrote {}",
        test.len(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Removes `--holdout-fraction` of each class of `train` from training; the record gives its
/// indices in `--data`.
fn holdout_slice(
    args: &TextTrainArgs,
    train: gibbon::text::TextDataset,
    in_data: &[usize],
) -> Result<(gibbon::text::TextDataset, serde_json::Value)> {
    let f = args.holdout_fraction;
    if f == 0.0 {
        return Ok((train, serde_json::Value::Null));
    }
    if !(f > 0.0 && f < 1.0) {
        return Err(usage(format!("--holdout-fraction {f} must be in [0, 1)")));
    }
    let (keep, held) = stratified_split(&train.labels, f, args.seed.wrapping_add(1));
    let indices: Vec<usize> = held.iter().map(|&k| in_data[k]).collect();
    let record = serde_json::json!({"fraction": f, "seed": args.seed.wrapping_add(1), "n": held.len(),
        "indices": indices, "note": "not trained on; text guard --calibrate sets the threshold on it"});
    Ok((train.subset(&keep), record))
}

/// The augmenter of `--augment` (None without it).
fn augmenter(args: &TextTrainArgs) -> Result<Option<Augmenter>> {
    if args.augment.is_empty() {
        return Ok(None);
    }
    let ctx = RecipeContext {
        synonyms: if args.augment.iter().any(|r| needs_synonyms(r)) {
            Some(Arc::new(Synonyms::load(&args.synonyms)?))
        } else {
            None
        },
    };
    let config = AugmentConfig {
        recipes: args.augment.clone(),
        fraction: args.augment_fraction,
        word_rate: args.augment_word_rate,
        seed: args.seed,
    };
    Ok(Some(Augmenter::new(config, &ctx)?))
}
