//! Augmentation training (`gibbon text train --augment`): the augmented batch holds transformed
//! copies whose labels are kept and whose only changes are word substitutions the recipe
//! allows; the share of copies follows the fraction; choices are reproducible. And the word-CNN
//! scores a text the same alone or batched with longer texts (padding does not leak).
use gibbon::random::RngKey;
use gibbon::text::augment::{AugmentConfig, Augmenter};
use gibbon::text::constraints::is_stopword;
use gibbon::text::tokenize::Segments;
use gibbon::text::{RecipeContext, TextArch, TextClassifier, TextDataset, TextModel};

fn data() -> TextDataset {
    let texts: Vec<String> = (0..200)
        .map(|i| format!("message number {i} offers a wonderful prize to winners today"))
        .collect();
    let labels = (0..200).map(|i| i % 2).collect();
    TextDataset { texts, labels, class_names: vec!["ham".into(), "spam".into()] }
}

fn augmenter(recipes: &[&str], fraction: f64) -> Augmenter {
    let config = AugmentConfig {
        recipes: recipes.iter().map(|r| r.to_string()).collect(),
        fraction,
        word_rate: 0.25,
        seed: 3,
    };
    Augmenter::new(config, &RecipeContext::default()).unwrap()
}

#[test]
fn augmented_batches_hold_transformed_copies_with_their_labels() {
    let d = data();
    let idx: Vec<usize> = (0..200).collect();
    let a = augmenter(&["deepwordbug", "homoglyph", "invisible"], 1.0);
    let (texts, labels) = a.batch(1, &d, &idx);
    assert_eq!(labels, d.labels, "labels are kept");
    let mut non_ascii = 0;
    for (orig, new) in d.texts.iter().zip(&texts) {
        assert_ne!(orig, new, "fraction 1: every text is transformed");
        let (o, n) = (Segments::new(orig), Segments::new(new));
        assert_eq!(o.words.len(), n.words.len(), "{new:?}: words line up");
        for (i, (a, b)) in o.parts.iter().zip(&n.parts).enumerate() {
            assert!(a == b || o.words.contains(&i), "{new:?}: a non-word segment changed");
        }
        non_ascii += usize::from(!new.is_ascii());
    }
    assert!(non_ascii > 20 && non_ascii < 190, "a mix of recipes is used ({non_ascii} non-ASCII)");
    assert_eq!(a.batch(1, &d, &idx), (texts.clone(), labels), "reproducible");
    assert_ne!(a.batch(2, &d, &idx).0, texts, "another epoch draws other copies");
}

#[test]
fn the_augmented_share_follows_the_fraction_and_zero_changes_nothing() {
    let d = data();
    let idx: Vec<usize> = (0..200).collect();
    let (texts, _) = augmenter(&["deepwordbug"], 0.3).batch(1, &d, &idx);
    let changed = texts.iter().zip(&d.texts).filter(|(a, b)| a != b).count();
    for (orig, new) in d.texts.iter().zip(&texts) {
        let (o, n) = (Segments::new(orig), Segments::new(new));
        for k in 0..o.words.len() {
            if o.word(k) != n.word(k) {
                // deepwordbug protects stopwords (the recipe's constraints apply to copies).
                assert!(!is_stopword(o.word(k)), "{new:?}: stopword {:?} changed", o.word(k));
            }
        }
    }
    // Binomial(200, 0.3): mean 60, sd 6.5.
    assert!((35..=85).contains(&changed), "{changed} of 200 transformed at fraction 0.3");
    let (texts, _) = augmenter(&["deepwordbug"], 0.0).batch(1, &d, &idx);
    assert_eq!(texts, d.texts);
    let bad =
        AugmentConfig { recipes: vec!["nope".into()], fraction: 0.5, word_rate: 0.2, seed: 0 };
    assert!(Augmenter::new(bad, &RecipeContext::default()).is_err(), "unknown recipe refused");
    let bad = AugmentConfig {
        recipes: vec!["deepwordbug".into()],
        fraction: 1.5,
        word_rate: 0.2,
        seed: 0,
    };
    assert!(Augmenter::new(bad, &RecipeContext::default()).is_err(), "fraction > 1 refused");
    let one = augmenter(&["deepwordbug"], 1.0).transform("the of and", RngKey::new(0, 0));
    assert_eq!(one, "the of and", "a text of stopwords only is left alone");
}

#[test]
fn cnn_scores_do_not_depend_on_the_batch() {
    let vocab: Vec<String> = ["<pad>", "<unk>", "good", "bad", "film", "plot", "very"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tch::manual_seed(1);
    let model = TextModel::new(
        TextArch::Cnn { vocab, dim: 8, maps: 4, max_len: 64 },
        vec!["0".into(), "1".into()],
    );
    let short = "good film".to_string();
    let long = "very very bad plot and a very bad film with a bad plot indeed".to_string();
    let alone = model.probabilities(std::slice::from_ref(&short)).unwrap();
    let batched = model.probabilities(&[short.clone(), long.clone()]).unwrap();
    let long_alone = model.probabilities(std::slice::from_ref(&long)).unwrap();
    for c in 0..2 {
        assert!((alone[0][c] - batched[0][c]).abs() < 1e-6, "{alone:?} vs {batched:?}");
        assert!((long_alone[0][c] - batched[1][c]).abs() < 1e-6);
    }
}
