//! The command line's flags: clap definitions only. Every flag becomes a typed value here,
//! through its type's `FromStr` (library types, or the flag types of [`values`]); `resolve`
//! turns these into library settings and `cmd` runs the commands.
pub mod detect;
pub mod guard;
pub mod report;
pub mod text;
pub mod values;

use clap::{Args, Parser, Subcommand};
use gibbon::data::{DataSpec, Split};
use gibbon::eval::Suite;
use gibbon::model::{Arch, ModelSpec, Precision, RemoteOutput};
use gibbon::threat::{Knowledge, Norm};
use gibbon::train::Schedule;
pub use report::{RedteamArgs, ReportArgs};
use std::path::PathBuf;
pub use values::{
    parse_flag, AttackPlan, BpdaMode, DeviceChoice, EpsList, ModelList, Normalization,
    OptimizerName, TargetChoice,
};

/// The names of every registered attack, in registry order.
pub fn attack_names() -> Vec<&'static str> {
    gibbon::attack::REGISTRY.iter().map(|r| r.info.name).collect()
}

/// The help of `--attack`, listing every registered attack.
fn attack_help() -> String {
    format!(
        "Attack plan: one name or a comma list run in order, each on the samples the previous \
         ones left unbroken ({}). Default steps: 40 for bim/pgd, 10 for mifgsm/difgsm, 100 for \
         APGD and FAB",
        attack_names().join(", ")
    )
}

/// gibbon: find the faint nudges that fool a classifier, and report honestly how robust it is.
#[derive(Parser, Debug)]
#[command(name = "gibbon", version, about)]
pub struct Cli {
    /// Only print warnings and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Clean and robust accuracy of a model under a threat model, as JSON.
    Eval(EvalArgs),
    /// Like eval, and writes the adversarial examples (.npy) and PNGs of them.
    Attack(AttackArgs),
    /// Train a built-in architecture (standard or PGD adversarial training). `gibbon train
    /// --task text ...` is `gibbon text train ...` (a text classifier; the same flags).
    Train(TrainArgs),
    /// The demo: PGD at eps 0.3 against the shipped standard and adversarially trained SmallCNN.
    Demo(DemoArgs),
    /// Describe an ONNX model: inputs, outputs, operators, parameters, and whether gibbon runs it.
    Inspect(InspectArgs),
    /// Serve a model over HTTP on 127.0.0.1 (see docs/remote-model.md), for --model URL.
    ServeModel(ServeModelArgs),
    /// Transfer attacks: craft on each surrogate (white-box), evaluate on each target (queries
    /// only); prints the matrix of success rates and writes it as JSON.
    Transfer(TransferArgs),
    /// The accuracy/robustness trade-off: sweep TRADES beta, the training eps or the JPEG
    /// quality, evaluate every point with one suite; table, JSON and SVG plot (resumable).
    Tradeoff(TradeoffArgs),
    /// Gradient-masking audit: run every check (see --help) and, with --adaptive, re-evaluate
    /// with the attacks the fired checks call for: "standard suite X vs adaptive Y".
    Audit(AuditArgs),
    /// Randomized smoothing (Cohen et al. 2019): per-sample certified L2 radius (or abstain)
    /// and certified accuracy against radius, as JSON (resumable).
    Certify(CertifyArgs),
    /// Detectors (MSP, energy, ODIN, Mahalanobis, feature squeezing): fit and calibrate,
    /// evaluate on OOD and adversarial data, attack the guarded model adaptively.
    Detect(detect::DetectArgs),
    /// One self-contained HTML page from result JSON files: threat model, accuracy with 95%
    /// intervals, attack by attack, a gallery, curves, the transfer heat map, audit, certify.
    Report(ReportArgs),
    /// Run a threat-model file: the strongest plan its knowledge allows, the audit, pass
    /// criteria; writes JSON and HTML; exit 0 when every criterion holds, 1 when one fails.
    Redteam(RedteamArgs),
    /// The guard service: a classifier behind calibrated screens, a decision policy, a human
    /// review queue and monitoring (`gibbon guard serve`).
    Guard(guard::GuardArgs),
    /// Text classifiers: train (spam filter, sentiment, prompt-injection guard), attack with
    /// recipes (TextAttack's decomposition), and evaluate a guard against obfuscations.
    Text(text::TextArgs),
}

#[derive(Args, Debug)]
pub struct CertifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Noise standard deviation σ (input units) of randomized smoothing.
    #[arg(long, allow_hyphen_values = true, required_unless_present = "ibp")]
    pub sigma: Option<f64>,
    /// Certify with interval bound propagation (Gowal et al. 2018) instead of randomized
    /// smoothing: a deterministic L∞ radius per sample (verified robust within it), for gibbon's
    /// own architectures (linear, mlp, smallcnn: a .safetensors file with --arch, or
    /// builtin:NAME).
    #[arg(long, conflicts_with_all = ["sigma", "attack"])]
    pub ibp: bool,
    /// Interval bound propagation: the largest L∞ radius searched (default: the input box's
    /// width, 1).
    #[arg(long, requires = "ibp", allow_hyphen_values = true)]
    pub max_eps: Option<f64>,
    /// Estimation draws per sample (the paper's n; --n is the number of samples).
    #[arg(long, default_value_t = gibbon::certify::SMOOTHING_N)]
    pub draws: usize,
    /// Selection draws per sample (the paper's n0).
    #[arg(long, default_value_t = gibbon::certify::SMOOTHING_N0)]
    pub selection_draws: usize,
    /// Failure probability α of each certificate.
    #[arg(long, default_value_t = gibbon::certify::SMOOTHING_ALPHA, allow_hyphen_values = true)]
    pub alpha: f64,
    /// Noisy copies per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub noise_batch: usize,
    /// Radii of the certified-accuracy curve (default: 0,0.25,0.5,0.75,1 in L2 for smoothing;
    /// 0,0.01,0.02,0.05,0.1,0.2,0.3 in L∞ with --ibp).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub radii: Option<Vec<f64>>,
    /// Seed of the counter-based noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not resume from, or write, the per-sample stream file (OUT.partial.jsonl).
    #[arg(long)]
    pub no_resume: bool,
    /// Also attack the smoothed classifier with SmoothAdv (Salman et al. 2019: L2 PGD with
    /// expectation over the noise) and report each sample's smallest example beside its radius,
    /// the attacked-accuracy curve and the violations (examples inside a certified radius).
    #[arg(long)]
    pub attack: bool,
    /// SmoothAdv: largest L2 radius searched (bisection on [0, this]).
    #[arg(long, default_value_t = 2.0, allow_hyphen_values = true)]
    pub attack_max_eps: f64,
    /// SmoothAdv: PGD steps per radius.
    #[arg(long, default_value_t = gibbon::certify::SMOOTHADV_STEPS)]
    pub attack_steps: usize,
    /// SmoothAdv: noise draws per gradient step (the paper's m).
    #[arg(long, default_value_t = gibbon::certify::SMOOTHADV_NOISE_SAMPLES)]
    pub attack_noise_samples: usize,
    /// SmoothAdv: bisection steps on the radius.
    #[arg(long, default_value_t = gibbon::certify::smoothadv::SMOOTHADV_SEARCH_STEPS)]
    pub attack_search_steps: usize,
    /// SmoothAdv: PREDICT draws judging each example (fresh noise).
    #[arg(long, default_value_t = gibbon::certify::SMOOTHADV_PREDICT_DRAWS)]
    pub attack_draws: usize,
    /// Write the JSON result here (per-sample records stream to OUT.partial.jsonl meanwhile).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write an HTML page here: the certified-accuracy curve as a table and a plot.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// The help of `gibbon audit`, listing every registered check.
fn audit_help() -> String {
    let checks: Vec<String> =
        gibbon::audit::CHECKS.iter().map(|c| format!("{}: {}", c.name(), c.question())).collect();
    format!(
        "Checks (Carlini et al. 2019; AutoAttack's checks.py), in order:\n  {}",
        checks.join("\n  ")
    )
}

#[derive(Args, Debug)]
#[command(after_help = audit_help())]
pub struct AuditArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Threat model TOML file (norm, eps, box); --norm and --eps override it.
    #[arg(long)]
    pub threat: Option<PathBuf>,
    /// Norm: linf, l2 or l1.
    #[arg(long, value_parser = parse_flag::<Norm>)]
    pub norm: Option<Norm>,
    /// Radius of the threat model audited.
    #[arg(long, allow_hyphen_values = true)]
    pub eps: Option<f64>,
    /// Also run the adaptive re-evaluation the fired checks call for (the standard suite, then
    /// BPDA / rescaled logits / EOT / gradient-free stages on its survivors).
    #[arg(long)]
    pub adaptive: bool,
    /// The adaptive re-evaluation's attacks instead of the standard (and rand) suite, e.g.
    /// apgd-ce,square: cheaper, and weaker.
    #[arg(long, value_delimiter = ',', requires = "adaptive")]
    pub attacks: Option<Vec<String>>,
    /// A differentiable model of the same task (e.g. the network without its defense) for the
    /// adaptive plan's transfer stage: examples crafted on it are judged on --model. Loaded
    /// like --model (the same --arch and --normalize apply; no defense, BPDA or EOT).
    #[arg(long, value_parser = parse_flag::<ModelSpec>, requires = "adaptive")]
    pub surrogate: Option<ModelSpec>,
    /// Exit with code 3 when a check fires (a CI gate).
    #[arg(long)]
    pub strict: bool,
    /// Also write the audit as an HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Write the JSON result here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// The model file (.onnx).
    pub model: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a TorchScript file (.pt), an ONNX file (.onnx), a .safetensors file with --arch,
    /// builtin:NAME, or the predict URL of a served model (http://HOST:PORT/predict).
    #[arg(long, value_parser = parse_flag::<ModelSpec>)]
    pub model: ModelSpec,
    /// Architecture of a .safetensors model (linear, mlp, smallcnn, preact-resnet18).
    #[arg(long, value_parser = parse_flag::<Arch>)]
    pub arch: Option<Arch>,
    /// Per-channel normalization inside the model, "MEAN/STD" with comma lists, e.g. 0.1307/0.3081.
    #[arg(long, value_parser = parse_flag::<Normalization>)]
    pub normalize: Option<Normalization>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, value_parser = parse_flag::<DeviceChoice>, default_value = "cpu")]
    pub device: DeviceChoice,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Remote model: limit for one HTTP request, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub remote_timeout_ms: u64,
    /// Remote model: retries (with exponential backoff from 100 ms) after a connection failure,
    /// a timeout or a 5xx answer.
    #[arg(long, default_value_t = 3)]
    pub remote_retries: u32,
    /// Remote model: at most this many requests per second.
    #[arg(long)]
    pub remote_rate_limit: Option<f64>,
    /// Remote model: inputs per request (larger batches are split).
    #[arg(long, default_value_t = 256)]
    pub remote_max_rows: usize,
    /// Input defenses in front of the model, applied left to right: jpeg:quality=Q,
    /// bits:depth=D, median:size=K, noise:sigma=S, e.g. jpeg:quality=75,bits:depth=3.
    #[arg(long)]
    pub defense: Option<String>,
    /// Adaptive attack (BPDA, Athalye et al. 2018), `--bpda` or `--bpda auto`: gradients pass
    /// straight through everything gibbon can swap, each non-differentiable --defense (its
    /// surrogate: the identity for jpeg, bits and median) and an ONNX model's Round, Floor,
    /// Ceil and Sign; every answer and verdict stays the deployed model's. What was swapped
    /// (and what could not be, e.g. TorchScript rounding) is printed.
    #[arg(
        long,
        value_parser = parse_flag::<BpdaMode>,
        num_args = 0..=1,
        default_missing_value = "auto",
        value_name = "auto"
    )]
    pub bpda: Option<BpdaMode>,
    /// Expectation over Transformation (Athalye et al. 2018) for every gradient attack: the
    /// gradient of the mean logits of N passes of a randomized model; verdicts take at least 5
    /// votes, as in the rand suite (which APGD's own 20 draws are replaced by).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub eot: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data: idx:DIR, cifar10:DIR, images:DIR or npy:IMAGES.npy,LABELS.npy.
    #[arg(long, value_parser = parse_flag::<DataSpec>, default_value = "idx:data/mnist")]
    pub data: DataSpec,
    /// Split: test or train.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "test")]
    pub split: Split,
    /// Use the first N samples.
    #[arg(long)]
    pub n: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct ThreatArgs {
    /// Threat model TOML file; the flags below override its fields.
    #[arg(long)]
    pub threat: Option<PathBuf>,
    /// Norm: linf, l2 or l1.
    #[arg(long, value_parser = parse_flag::<Norm>)]
    pub norm: Option<Norm>,
    /// Radius of the allowed perturbation; a comma list (e.g. 0.05,0.1,0.2) gives a robust
    /// accuracy curve over ε (a minimum-norm attack once, then the plan at each ε).
    #[arg(long, value_parser = parse_flag::<EpsList>, allow_hyphen_values = true)]
    pub eps: Option<EpsList>,
    /// Iterations per restart.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Random restarts (PGD's default: 2, clean start then random; others: 1).
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Logit margin κ an example must reach before an attack stops early (C&W's κ; default 0:
    /// the first misclassified point). Makes returned examples survive small numeric
    /// differences of the forward pass (pgd family, apgd, square, cw).
    #[arg(long, allow_hyphen_values = true)]
    pub confidence: Option<f64>,
    /// Query budget per sample for score- and decision-based attacks (defaults: square 5,000;
    /// simba, nes, rays 10,000; hsj, boundary 25,000).
    #[arg(long)]
    pub queries: Option<usize>,
    /// What the attacker sees: white-box (gradients, the default), score-based or
    /// decision-based; attacks that need more are refused.
    #[arg(long, value_parser = parse_flag::<Knowledge>)]
    pub knowledge: Option<Knowledge>,
    /// Targeted attack: next, most-likely, least-likely or a class number.
    #[arg(long, value_parser = parse_flag::<TargetChoice>)]
    pub targeted: Option<TargetChoice>,
    // The help lists the registered attacks: see `attack_help`.
    #[arg(long, default_value = "pgd", help = attack_help())]
    pub attack: AttackPlan,
    /// A parameter-free ensemble instead of --attack: standard (APGD-CE, APGD-T, FAB-T, Square:
    /// AutoAttack's) or rand (APGD-CE, APGD-DLR with EOT over 20 draws, for randomized models).
    #[arg(long, value_parser = parse_flag::<Suite>)]
    pub suite: Option<Suite>,
    /// Minimum-norm attack for a curve over ε (default: fab; for l1 name one); used only with
    /// several --eps values.
    #[arg(long)]
    pub min_norm_attack: Option<String>,
    /// Step size (attack default when omitted).
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// Start every restart at a random point of the ball (Madry et al.; torchattacks' PGD).
    /// By default PGD's first restart starts at the clean input and later ones at random points.
    #[arg(long, conflicts_with = "no_random_start")]
    pub random_start: bool,
    /// Start every restart at the clean input.
    #[arg(long)]
    pub no_random_start: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Samples per forward/backward pass (results do not depend on it).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the counter-based random generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not resume from, or write, the per-sample stream file (OUT.partial.jsonl).
    #[arg(long)]
    pub no_resume: bool,
    /// Record every batch of queries of score- and decision-based attacks in this JSON-lines
    /// file (attack, rows, dataset indices, running total).
    #[arg(long)]
    pub query_log: Option<PathBuf>,
    /// Precision of the attacks' search passes: fp32, bf16, fp16, or auto (bf16 where the
    /// CPU has native bf16 (AVX512-BF16/AMX) or on CUDA, else fp32). The clean pass, the
    /// verifier, success checks and the last 10% of each gradient attack's steps stay fp32.
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    pub precision: Precision,
}

fn parse_precision(text: &str) -> Result<Precision, String> {
    text.parse().map_err(|e: gibbon::GibbonError| e.to_string())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub threat: ThreatArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Write the JSON result here (per-sample records stream to OUT.partial.jsonl meanwhile).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run the gradient-masking audit (`gibbon audit`'s checks, on the first
    /// min(n, 200) samples) and add it to the result as `audit`; warns when a check fired.
    #[arg(long)]
    pub audit: bool,
    /// A `gibbon certify` JSON made on the same --data: each sample's certified radius (of the
    /// smoothed classifier) is shown beside the smallest perturbation the attacks found (of the
    /// base classifier), as `certified` in the JSON (single --eps only).
    #[arg(long, value_name = "CERT_JSON")]
    pub certificates: Option<PathBuf>,
    /// Also write the evaluation as an HTML page here (see `gibbon report`: headline numbers,
    /// attack by attack, a gallery, the curve with several --eps, the audit with --audit).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AttackArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub threat: ThreatArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Folder for adversarial.npy, labels.npy, result.json and png/.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Write PNGs (original, perturbation, adversarial) for at most this many samples.
    #[arg(long, default_value_t = 32)]
    pub png: usize,
    /// Also write the result as an HTML page here (see `gibbon report`).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: linear, mlp, smallcnn, preact-resnet18.
    #[arg(long, value_parser = parse_flag::<Arch>)]
    pub arch: Arch,
    #[command(flatten)]
    pub data: TrainDataArgs,
    /// Epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Optimizer: adam or sgd.
    #[arg(long, value_parser = parse_flag::<OptimizerName>, default_value = "adam")]
    pub optimizer: OptimizerName,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Schedule: constant, cosine, step or cyclic (0 up to --lr at 2/5 of the run, then down to 0).
    #[arg(long, value_parser = parse_flag::<Schedule>, default_value = "constant")]
    pub schedule: Schedule,
    #[command(flatten)]
    pub hardening: TrainDefenseArgs,
    /// Adversarial training at this eps (pgd unless --defense says otherwise).
    #[arg(long)]
    pub adv_eps: Option<f64>,
    /// Norm of adversarial training.
    #[arg(long, value_parser = parse_flag::<Norm>, default_value = "linf")]
    pub adv_norm: Norm,
    /// PGD steps per batch.
    #[arg(long, default_value_t = 10)]
    pub adv_steps: usize,
    /// PGD step size (default 2.5 eps / steps).
    #[arg(long)]
    pub adv_alpha: Option<f64>,
    /// Epochs over which eps ramps up from 0.
    #[arg(long, default_value_t = 0)]
    pub adv_ramp_epochs: usize,
    /// Samples at the end of the split held out for per-epoch accuracy.
    #[arg(long, default_value_t = 1000)]
    pub holdout: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the trained weights (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Write a checkpoint after every epoch into this folder.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Go on from the latest checkpoint in --checkpoint-dir written by the same configuration
    /// (starts afresh when there is none; the optimizer's moments restart from zero).
    #[arg(long, requires = "checkpoint_dir")]
    pub resume: bool,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Device.
    #[arg(long, value_parser = parse_flag::<DeviceChoice>, default_value = "cpu")]
    pub device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct TrainDataArgs {
    /// Training data (see eval --data).
    #[arg(long, value_parser = parse_flag::<DataSpec>, default_value = "idx:data/mnist")]
    pub data: DataSpec,
    /// Split to train on.
    #[arg(long, value_parser = parse_flag::<Split>, default_value = "train")]
    pub split: Split,
    /// Use the first N samples of the split (hold-out included).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Images to evaluate (first N of the shipped MNIST test set).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Folder for the HTML page and JSON results.
    #[arg(long, default_value = "out/demo")]
    pub out_dir: PathBuf,
    /// Data (the shipped MNIST test set by default).
    #[arg(long, value_parser = parse_flag::<DataSpec>, default_value = "idx:data/mnist")]
    pub data: DataSpec,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct ServeModelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data whose sample shape and class count the served model takes (nothing else is used).
    #[command(flatten)]
    pub data: DataArgs,
    /// Port on 127.0.0.1; 0 picks a free one. The first line on stdout names the predict URL.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// What /predict answers: scores (logits) or labels (the predicted class only).
    #[arg(long, value_parser = parse_flag::<RemoteOutput>, default_value = "scores")]
    pub output: RemoteOutput,
}

#[derive(Args, Debug)]
#[command(mut_arg("attack", |a| a
    .default_value(gibbon::eval::DEFAULT_TRANSFER_ATTACK)
    .help("Attack run on each surrogate: any one registered attack (mifgsm or difgsm recommended)")))]
#[command(mut_arg("eps", |a| a.help("Radius of the allowed perturbation (one value)")))]
#[command(mut_arg("suite", |a| a.hide(true)), mut_arg("min_norm_attack", |a| a.hide(true)))]
pub struct TransferArgs {
    /// Surrogate models, a comma list of model specs (.pt, .onnx, .safetensors with --arch,
    /// builtin:NAME): the examples are crafted on each of them, white-box.
    #[arg(long, value_parser = parse_flag::<ModelList>)]
    pub surrogates: ModelList,
    /// Target models, a comma list of model specs: each classifies every surrogate's examples
    /// (forward passes only, as a black box).
    #[arg(long, value_parser = parse_flag::<ModelList>)]
    pub targets: ModelList,
    /// Architecture of the .safetensors models among them (linear, mlp, smallcnn,
    /// preact-resnet18); other specs ignore it.
    #[arg(long, value_parser = parse_flag::<Arch>)]
    pub arch: Option<Arch>,
    /// Per-channel normalization inside every model, "MEAN/STD" with comma lists.
    #[arg(long, value_parser = parse_flag::<Normalization>)]
    pub normalize: Option<Normalization>,
    /// Input defenses in front of every target (the deployed systems; surrogates stay
    /// undefended), e.g. jpeg:quality=75 (see eval --defense).
    #[arg(long)]
    pub defense: Option<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, value_parser = parse_flag::<DeviceChoice>, default_value = "cpu")]
    pub device: DeviceChoice,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub threat: ThreatArgs,
    /// Samples per forward/backward pass (results do not depend on it).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the counter-based random generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop each sample at its first success on the surrogate (gibbon's white-box behaviour)
    /// instead of running the attack's whole budget; such examples transfer worse.
    #[arg(long)]
    pub early_exit: bool,
    /// Include per-sample outcomes (and every model's clean predictions) in the JSON.
    #[arg(long)]
    pub per_sample: bool,
    /// Write the JSON result here (schema: docs/result-schema.md, "Transfer matrix").
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the matrix as an HTML page here (a heat map; see `gibbon report`).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `gibbon train` flags that choose and tune the training defense.
#[derive(Args, Debug, Clone)]
pub struct TrainDefenseArgs {
    /// Training defense: standard, pgd (Madry et al. 2018), trades (Zhang et al. 2019),
    /// fast-fgsm (Wong et al. 2020, with the catastrophic-overfitting guard), noise
    /// (Gaussian augmentation, --sigma) or ibp (interval bound propagation, Gowal et al. 2018:
    /// verifiable robustness, certified by `gibbon certify --ibp`). Default: pgd when --adv-eps
    /// is given, else standard. pgd, trades, fast-fgsm and ibp use --adv-eps and
    /// --adv-ramp-epochs (ibp: 3 by default); pgd, trades and fast-fgsm --adv-steps and
    /// --adv-alpha (TRADES's MNIST constants: --adv-eps 0.3 --adv-steps 40 --adv-alpha 0.01;
    /// fast-fgsm's step defaults to 1.25 eps; pair it with --schedule cyclic).
    #[arg(long)]
    pub defense: Option<String>,
    /// TRADES: weight of the KL term (the paper's MNIST and CIFAR-10 value: 6).
    #[arg(long, default_value_t = 6.0, allow_hyphen_values = true)]
    pub beta: f64,
    /// noise: standard deviation of the Gaussian augmentation.
    #[arg(long, allow_hyphen_values = true)]
    pub sigma: Option<f64>,
    /// fast-fgsm: hold-out APGD-CE robust accuracy this far below the best epoch counts as
    /// catastrophic overfitting (roll back to the last good epoch and stop); so does a
    /// significant fall below half of the best (3 standard errors on the hold-out slice).
    #[arg(long, default_value_t = gibbon::train::DEFAULT_GUARD_DROP)]
    pub guard_drop: f64,
}

#[derive(Args, Debug)]
pub struct TradeoffArgs {
    /// The parameter swept: trades-beta, train-eps (PGD-AT at each ε) or jpeg-quality (the
    /// --model behind JPEG at each quality).
    #[arg(long)]
    pub sweep: String,
    /// The values, a comma list (e.g. 0.5,1,3,6 for trades-beta; 90,75,50,25 for jpeg-quality).
    #[arg(long)]
    pub values: String,
    /// jpeg-quality: the model to wrap (any model spec; see eval --model).
    #[arg(long)]
    pub model: Option<String>,
    /// Evaluation data (the first --n samples of --split).
    #[arg(long, default_value = "idx:data/mnist")]
    pub data: String,
    /// Evaluation split.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Samples evaluated at every point.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// L-infinity radius of the evaluation (and of training for trades-beta).
    #[arg(long, default_value_t = 0.3)]
    pub eps: f64,
    /// Evaluation suite: standard or rand.
    #[arg(long, default_value = "standard")]
    pub suite: String,
    /// Training data for trades-beta and train-eps.
    #[arg(long, default_value = "idx:data/mnist")]
    pub train_data: String,
    /// Use the first N training samples (hold-out included).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Training samples held out for per-epoch accuracy.
    #[arg(long, default_value_t = 500)]
    pub holdout: usize,
    /// Architecture trained at each point.
    #[arg(long, default_value = "smallcnn")]
    pub arch: String,
    /// Epochs per point.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Inner steps of PGD / TRADES.
    #[arg(long, default_value_t = 10)]
    pub adv_steps: usize,
    /// Epochs of the ε ramp.
    #[arg(long, default_value_t = 0)]
    pub adv_ramp_epochs: usize,
    /// Samples per pass.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of training and evaluation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// libtorch threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Folder for the points, tradeoff.json and tradeoff.svg.
    #[arg(long)]
    pub out_dir: PathBuf,
}
