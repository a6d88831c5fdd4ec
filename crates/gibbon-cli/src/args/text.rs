//! `gibbon text` flags: train, attack and guard evaluation of text classifiers.
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TextArgs {
    #[command(subcommand)]
    pub command: TextCommand,
}

#[derive(Subcommand, Debug)]
pub enum TextCommand {
    /// Train a text classifier (linear over hashed word + char n-grams, or Kim's word-CNN).
    Train(TextTrainArgs),
    /// Attack a text classifier with a recipe (deepwordbug, pwws, textfooler-wordnet,
    /// homoglyph, invisible, bad-characters, each also as NAME-label); JSON with per-text edits.
    Attack(TextAttackArgs),
    /// Prompt-injection guard: TPR at a target FPR, evasion by each obfuscation (leetspeak,
    /// token-split, base64, rot13) with and without the Unicode normalization defense.
    Guard(TextGuardArgs),
    /// Score texts for another program: each stdin line a JSON
    /// array of texts, each stdout line the JSON array of their class probabilities.
    Score(TextScoreArgs),
    /// Serve a text model over HTTP (GET /info, POST /predict {"texts": [...]}) on 127.0.0.1;
    /// attack it with `gibbon text attack --model http://127.0.0.1:PORT/predict`.
    Serve(TextServeArgs),
}

#[derive(Args, Debug)]
pub struct TextServeArgs {
    /// The model (gibbon folder or ONNX text model).
    #[arg(long)]
    pub model: PathBuf,
    /// The tokenizer.json of an ONNX --model (default: tokenizer.json next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: a free one; the first stdout line names the URL).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// What /predict answers: scores (class probabilities) or labels only.
    #[arg(long, value_parser = super::parse_flag::<gibbon::model::RemoteOutput>, default_value = "scores")]
    pub output: gibbon::model::RemoteOutput,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct TextScoreArgs {
    /// The model (gibbon folder, ONNX text model, or http://HOST:PORT/predict).
    #[arg(long)]
    pub model: PathBuf,
    /// The tokenizer.json of an ONNX --model (default: tokenizer.json next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Sms,
    Tsv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum ArchArg {
    Linear,
    Cnn,
}

#[derive(Args, Debug)]
pub struct TextDataArgs {
    /// The data file (SMS `ham<TAB>text`, TSV `sentence<TAB>label` with header, JSONL {text,label}).
    #[arg(long)]
    pub data: PathBuf,
    /// Its format (default: from the extension: .tsv, .jsonl, else SMS).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}

#[derive(Args, Debug)]
pub struct TextTrainArgs {
    #[command(flatten)]
    pub data: TextDataArgs,
    /// A separate test file; without it a stratified split of --data is made (--test-fraction)
    /// and its test indices recorded in model.json.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Fraction of each class held out as the test split when there is no --test.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Architecture.
    #[arg(long, value_enum)]
    pub arch: ArchArg,
    /// Epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate (default 0.1 linear, 0.002 cnn).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Hash buckets of the linear model.
    #[arg(long, default_value_t = 1 << 18)]
    pub buckets: u64,
    /// Words read per text by the CNN.
    #[arg(long, default_value_t = 64)]
    pub max_len: usize,
    /// Minimum train count of a CNN vocabulary word.
    #[arg(long, default_value_t = 2)]
    pub min_count: usize,
    /// Fraction of each class of the training texts held out from training (not trained on),
    /// its indices in --data recorded in model.json: `text guard --calibrate` sets the
    /// threshold on it (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub holdout_fraction: f64,
    /// Seed of the split, initialisation and order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Augmentation training: recipes whose transformations rewrite training texts (labels
    /// kept), e.g. deepwordbug,homoglyph,invisible (README, "Text").
    #[arg(long, value_delimiter = ',')]
    pub augment: Vec<String>,
    /// Fraction of each batch's texts replaced by a transformed copy (with --augment).
    #[arg(long, default_value_t = 0.5)]
    pub augment_fraction: f64,
    /// Probability that an editable word of a copy is transformed (with --augment).
    #[arg(long, default_value_t = 0.25)]
    pub augment_word_rate: f64,
    /// The WordNet synonym table (when --augment names pwws or textfooler-wordnet).
    #[arg(long, default_value = "../shared/data/wordnet_synonyms/wordnet_synonyms.tsv.gz")]
    pub synonyms: PathBuf,
    /// Output model folder (model.json + weights.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct TextAttackArgs {
    /// The model: a folder from `gibbon text train`, an ONNX text model (model.onnx, or a folder
    /// holding model.onnx and tokenizer.json), or a text model server's http://HOST:PORT/predict.
    #[arg(long)]
    pub model: PathBuf,
    /// The tokenizer.json of an ONNX --model (default: tokenizer.json next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub data: TextDataArgs,
    /// Attack only the test split recorded in model.json (when --data is the file it was split from).
    #[arg(long)]
    pub model_test_split: bool,
    /// Recipe (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub recipe: Vec<String>,
    /// Texts considered (first N after --only-label).
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Attack only texts of this class (name or index, e.g. spam or 1).
    #[arg(long)]
    pub only_label: Option<String>,
    /// Queries per text.
    #[arg(long, default_value_t = 5000)]
    pub query_budget: usize,
    /// The WordNet synonym table (pwws, textfooler-wordnet).
    #[arg(long, default_value = "../shared/data/wordnet_synonyms/wordnet_synonyms.tsv.gz")]
    pub synonyms: PathBuf,
    /// Put the Unicode normalization defense (NFKC, invisibles stripped, confusables mapped) in
    /// front of the model: the attack sees the defended system (adaptive).
    #[arg(long)]
    pub normalize: bool,
    /// Binary models: decide class 1 at the threshold giving this FPR on the data's class-0
    /// texts (e.g. 0.05 for a guard's operating point) instead of the argmax.
    #[arg(long)]
    pub fpr: Option<f64>,
    /// Guard attacks: count an evasion only when every changed word keeps the payload (same
    /// normalized text, a WordNet synonym, or one typo in a word of >= 4 characters; README,
    /// "Text"). On by default with --fpr.
    #[arg(long)]
    pub payload_check: bool,
    /// Words the attack may not change at all (comma-separated; implies --payload-check).
    #[arg(long, value_delimiter = ',')]
    pub protect: Vec<String>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Result JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an HTML page with the original and adversarial texts.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct TextGuardArgs {
    /// The guard model (gibbon folder, ONNX text model, or http://HOST:PORT/predict).
    #[arg(long)]
    pub model: PathBuf,
    /// The tokenizer.json of an ONNX --model (default: tokenizer.json next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub data: TextDataArgs,
    /// Target false-positive rate of the operating point.
    #[arg(long, default_value_t = 0.05)]
    pub fpr: f64,
    /// The TRAIN file the threshold is calibrated on (held out: the slice `text train
    /// --holdout-fraction` recorded in model.json, or --calibration-fraction of it); --data is
    /// then the test split, where TPR and FPR are measured. Without it the threshold is set on
    /// --data itself (in-sample; flagged in the JSON).
    #[arg(long)]
    pub calibrate: Option<PathBuf>,
    /// For a model that records no held-out slice (ONNX, remote, or trained without
    /// --holdout-fraction): calibrate on this stratified fraction of --calibrate (which the
    /// model may have been trained on: the JSON says so).
    #[arg(long)]
    pub calibration_fraction: Option<f64>,
    /// Result JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}
