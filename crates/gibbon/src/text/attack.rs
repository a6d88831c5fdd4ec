//! Running a recipe over a dataset: the goal (untargeted: move the prediction away from the true
//! label, on texts the model gets right), the query budget, and the text verifier — every
//! returned example is re-segmented, re-checked against the constraints and re-scored by a fresh
//! model call; the verdict is the verifier's, never the search's.
use super::constraints::ConstraintValues;
use super::data::TextDataset;
use super::model::TextClassifier;
use super::recipes::Recipe;
use super::search::{Oracle, Problem};
use super::tokenize::Segments;
use super::train::argmax;
use super::transform::Synonyms;
use crate::error::{GibbonError, Result};
use crate::eval::clopper_pearson;
use crate::random::RngKey;
use serde::{Deserialize, Serialize};

/// Which texts are attacked and with how many queries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextAttackSettings {
    /// Texts considered (the first N of the data, after the label filter).
    pub n: usize,
    /// Only texts with this label (e.g. spam, or injections).
    pub only_label: Option<usize>,
    /// Largest number of model queries per text.
    pub query_budget: usize,
    /// Seed of the random choices.
    pub seed: u64,
}

/// One word edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordEdit {
    /// Index of the word in the text.
    pub word: usize,
    /// Byte offset of the word in the original text.
    pub offset: usize,
    /// The original word.
    pub from: String,
    /// Its replacement.
    pub to: String,
}

/// One attacked text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextSampleRecord {
    /// Index in the data.
    pub index: usize,
    /// True label.
    pub label: usize,
    /// Prediction on the original.
    pub clean_pred: usize,
    /// The original text.
    pub text: String,
    /// The adversarial text (the original when the attack failed or did not run).
    pub adversarial: String,
    /// Prediction on the adversarial text (verifier's fresh call).
    pub adv_pred: usize,
    /// Verified success.
    pub success: bool,
    /// Why the search stopped: success, budget, exhausted, or misclassified (not attacked).
    pub stop: String,
    /// Queries spent.
    pub queries: usize,
    /// Label probability before and after.
    pub p_label: [f32; 2],
    /// The edits.
    pub edits: Vec<WordEdit>,
    /// The constraint values of the returned text.
    pub constraints: ConstraintValues,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextAttackSummary {
    /// Texts considered.
    pub n: usize,
    /// Of them, classified correctly (attacked).
    pub attacked: usize,
    /// Verified successes.
    pub successes: usize,
    /// successes / attacked, with a 95% Clopper-Pearson interval.
    pub success_rate: f64,
    /// Its interval.
    pub success_rate_ci95: [f64; 2],
    /// Clean accuracy on the n texts.
    pub clean_accuracy: f64,
    /// Accuracy under attack on the n texts.
    pub adversarial_accuracy: f64,
    /// Mean words changed per success.
    pub mean_words_changed: f64,
    /// Mean fraction of words changed per success.
    pub mean_word_fraction: f64,
    /// Mean character edits per success.
    pub mean_char_edits: f64,
    /// Mean queries per success.
    pub mean_queries_per_success: f64,
    /// Mean queries per attacked text.
    pub mean_queries: f64,
    /// Wall time.
    pub seconds: f64,
}

/// Attacks the texts of `data` with `recipe`.
pub fn attack_texts(
    model: &dyn TextClassifier,
    data: &TextDataset,
    recipe: &Recipe,
    synonyms: Option<&Synonyms>,
    s: &TextAttackSettings,
) -> Result<(TextAttackSummary, Vec<TextSampleRecord>)> {
    let start = std::time::Instant::now();
    let indices: Vec<usize> = (0..data.len())
        .filter(|&i| s.only_label.is_none_or(|l| data.labels[i] == l))
        .take(s.n)
        .collect();
    if indices.is_empty() {
        return Err(GibbonError::invalid(
            "data",
            "no texts to attack (check --n and --only-label)",
        ));
    }
    let texts: Vec<String> = indices.iter().map(|&i| data.texts[i].clone()).collect();
    let clean = model.probabilities(&texts)?;
    let mut records = Vec::with_capacity(indices.len());
    for (j, &i) in indices.iter().enumerate() {
        records.push(attack_one(model, data, recipe, synonyms, s, i, &clean[j])?);
    }
    Ok((summarize(&records, start.elapsed().as_secs_f64()), records))
}

fn attack_one(
    model: &dyn TextClassifier,
    data: &TextDataset,
    recipe: &Recipe,
    synonyms: Option<&Synonyms>,
    s: &TextAttackSettings,
    index: usize,
    clean: &[f32],
) -> Result<TextSampleRecord> {
    let (text, label) = (&data.texts[index], data.labels[index]);
    let clean_pred = argmax(clean);
    let original = Segments::new(text);
    let mut record = TextSampleRecord {
        index,
        label,
        clean_pred,
        text: text.clone(),
        adversarial: text.clone(),
        adv_pred: clean_pred,
        success: false,
        stop: "misclassified".into(),
        queries: 0,
        p_label: [clean[label]; 2],
        edits: vec![],
        constraints: ConstraintValues::default(),
    };
    if clean_pred != label {
        return Ok(record);
    }
    let key = RngKey::new(s.seed, index);
    let candidates = (0..original.words.len())
        .map(|k| {
            let w = original.word(k);
            let mut c = recipe.transformation.candidates(w, key.stream(k as u64 + 1));
            c.retain(|c| {
                recipe.constraints.word_edit_allowed(w, c, synonyms)
                    && Segments::new(c).parts.len() == 1
            });
            c
        })
        .collect();
    let problem =
        Problem { original: original.clone(), label, candidates, constraints: &recipe.constraints };
    let mut oracle = Oracle::new(model, recipe.search.label_only(), s.query_budget);
    let outcome = recipe.search.run(&problem, &mut oracle, key)?;
    record.queries = oracle.queries;
    record.stop = outcome.stop.into();
    let mut claimed = original.clone();
    for (&k, w) in &outcome.edits {
        claimed.parts[original.words[k]] = w.clone();
    }
    verify(
        model,
        recipe,
        synonyms,
        &original,
        &claimed,
        &problem.apply(&outcome.edits),
        &mut record,
    )?;
    if outcome.claimed_success && !record.success {
        tracing::warn!("text {index}: the search claimed success the verifier does not confirm");
    }
    record.edits = outcome
        .edits
        .iter()
        .map(|(&k, to)| WordEdit {
            word: k,
            offset: original.parts[..original.words[k]].iter().map(String::len).sum(),
            from: original.word(k).to_string(),
            to: to.clone(),
        })
        .collect();
    Ok(record)
}

/// The text verifier: the adversarial text must be exactly the original's segments with the
/// claimed words replaced, keep every constraint (re-checked from the two segmentations), and
/// is scored by a fresh model call.
pub fn verify(
    model: &dyn TextClassifier,
    recipe: &Recipe,
    synonyms: Option<&Synonyms>,
    original: &Segments,
    claimed: &Segments,
    adversarial: &str,
    record: &mut TextSampleRecord,
) -> Result<()> {
    if claimed.text() != adversarial {
        return Err(GibbonError::Verification(format!(
            "text {}: the adversarial text is not its claimed segments",
            record.index
        )));
    }
    let values = recipe.constraints.check(original, claimed, synonyms);
    if !values.violations.is_empty() {
        return Err(GibbonError::Verification(format!(
            "text {}: {}",
            record.index,
            values.violations.join("; ")
        )));
    }
    let p = model.probabilities(&[adversarial.to_string()])?;
    record.adv_pred = argmax(&p[0]);
    record.p_label[1] = p[0][record.label];
    record.success = record.adv_pred != record.label;
    record.adversarial = adversarial.to_string();
    record.constraints = values;
    Ok(())
}

/// The summary of `records` (e.g. after a re-verification changed some verdicts).
pub fn summarize(records: &[TextSampleRecord], seconds: f64) -> TextAttackSummary {
    let n = records.len();
    let attacked: Vec<&TextSampleRecord> =
        records.iter().filter(|r| r.clean_pred == r.label).collect();
    let wins: Vec<&&TextSampleRecord> = attacked.iter().filter(|r| r.success).collect();
    let mean = |f: &dyn Fn(&TextSampleRecord) -> f64, v: &[&&TextSampleRecord]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|r| f(r)).sum::<f64>() / v.len() as f64
        }
    };
    let (lo, hi) = clopper_pearson(wins.len(), attacked.len(), 0.05);
    let all: Vec<&&TextSampleRecord> = attacked.iter().collect();
    TextAttackSummary {
        n,
        attacked: attacked.len(),
        successes: wins.len(),
        success_rate: if attacked.is_empty() {
            0.0
        } else {
            wins.len() as f64 / attacked.len() as f64
        },
        success_rate_ci95: [lo, hi],
        clean_accuracy: attacked.len() as f64 / n.max(1) as f64,
        adversarial_accuracy: (attacked.len() - wins.len()) as f64 / n.max(1) as f64,
        mean_words_changed: mean(&|r| r.constraints.words_changed as f64, &wins),
        mean_word_fraction: mean(&|r| r.constraints.word_fraction, &wins),
        mean_char_edits: mean(&|r| r.constraints.char_edits as f64, &wins),
        mean_queries_per_success: mean(&|r| r.queries as f64, &wins),
        mean_queries: mean(&|r| r.queries as f64, &all),
        seconds,
    }
}
