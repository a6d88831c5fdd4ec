//! Command definitions and their implementations.
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gibbon::attack::AttackOptions;
use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::eval::{
    evaluate, robustness_curve, EvalReport, EvalSettings, Examples, RunInfo, Suite,
};
use gibbon::model::{
    load_model_with, Arch, BuiltinModel, Classifier, ModelSpec, Normalized, QueryLog,
};
use gibbon::threat::{Goal, Norm, TargetSelection, ThreatModel};
use gibbon::train::{OptimizerKind, Schedule, TrainConfig};
use std::path::{Path, PathBuf};
use tch::Device;

/// A mistake in the command line that clap cannot see (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
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
    /// Train a built-in architecture (standard or PGD adversarial training).
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
    Tradeoff(crate::tradeoff::TradeoffArgs),
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// The model file (.onnx).
    pub model: PathBuf,
}

fn inspect_cmd(args: InspectArgs) -> Result<()> {
    let summary = gibbon::model::onnx::inspect(&args.model)?;
    print!("{summary}");
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a TorchScript file (.pt), an ONNX file (.onnx), a .safetensors file with --arch,
    /// builtin:NAME, or the predict URL of a served model (http://HOST:PORT/predict).
    #[arg(long)]
    pub model: String,
    /// Architecture of a .safetensors model (linear, mlp, smallcnn, preact-resnet18).
    #[arg(long)]
    pub arch: Option<String>,
    /// Per-channel normalization inside the model, "MEAN/STD" with comma lists, e.g. 0.1307/0.3081.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data: idx:DIR, cifar10:DIR, images:DIR or npy:IMAGES.npy,LABELS.npy.
    #[arg(long, default_value = "idx:data/mnist")]
    pub data: String,
    /// Split: test or train.
    #[arg(long, default_value = "test")]
    pub split: String,
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
    #[arg(long)]
    pub norm: Option<String>,
    /// Radius of the allowed perturbation; a comma list (e.g. 0.05,0.1,0.2) gives a robust
    /// accuracy curve over ε (a minimum-norm attack once, then the plan at each ε).
    #[arg(long, allow_hyphen_values = true)]
    pub eps: Option<String>,
    /// Iterations per restart.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Random restarts.
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Query budget per sample for score- and decision-based attacks (defaults: square 5,000;
    /// simba, nes, rays 10,000; hsj, boundary 25,000).
    #[arg(long)]
    pub queries: Option<usize>,
    /// What the attacker sees: white-box (gradients, the default), score-based or
    /// decision-based; attacks that need more are refused.
    #[arg(long)]
    pub knowledge: Option<String>,
    /// Targeted attack: next, most-likely, least-likely or a class number.
    #[arg(long)]
    pub targeted: Option<String>,
    /// Attack plan: one name or a comma list run in order, each on the samples the previous
    /// ones left unbroken (fgsm, bim, pgd, mifgsm, difgsm, apgd-ce, apgd-dlr, apgd-t, fab, fab-t,
    /// square, simba, simba-pixel, nes, deepfool, cw, hsj, boundary, rays). Default steps: 40 for
    /// bim/pgd, 10 for mifgsm/difgsm, 100 for APGD and FAB.
    #[arg(long, default_value = "pgd")]
    pub attack: String,
    /// A parameter-free ensemble instead of --attack: standard (APGD-CE, APGD-T, FAB-T, Square:
    /// AutoAttack's) or rand (APGD-CE, APGD-DLR with EOT over 20 draws, for randomized models).
    #[arg(long)]
    pub suite: Option<String>,
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
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: linear, mlp, smallcnn, preact-resnet18.
    #[arg(long)]
    pub arch: String,
    #[command(flatten)]
    pub data: TrainDataArgs,
    /// Epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Optimizer: adam or sgd.
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
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
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    #[command(flatten)]
    pub hardening: crate::harden::TrainDefenseArgs,
    /// Adversarial training at this eps (pgd unless --defense says otherwise).
    #[arg(long)]
    pub adv_eps: Option<f64>,
    /// Norm of adversarial training.
    #[arg(long, default_value = "linf")]
    pub adv_norm: String,
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
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct TrainDataArgs {
    /// Training data (see eval --data).
    #[arg(long, default_value = "idx:data/mnist")]
    pub data: String,
    /// Split to train on.
    #[arg(long, default_value = "train")]
    pub split: String,
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
    #[arg(long, default_value = "idx:data/mnist")]
    pub data: String,
    /// Threads.
    #[arg(long)]
    pub threads: Option<i32>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(a) => eval_cmd(a, cli.quiet),
        Command::Attack(a) => attack_cmd(a, cli.quiet),
        Command::Train(a) => train_cmd(a, cli.quiet),
        Command::Demo(a) => crate::demo::run(a, cli.quiet),
        Command::Inspect(a) => inspect_cmd(a),
        Command::ServeModel(a) => serve_model_cmd(a),
        Command::Transfer(a) => transfer_cmd(a, cli.quiet),
        Command::Tradeoff(a) => crate::tradeoff::run(a, cli.quiet),
    }
}

pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(usage("device 'cuda': no CUDA device is available to this libtorch"))
            }
        }
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (n as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(n)),
            Some(n) => Err(usage(format!(
                "device 'cuda:{n}': only {} CUDA devices",
                tch::Cuda::device_count()
            ))),
            None => Err(usage(format!("device '{other}' is not one of cpu, cuda, cuda:N"))),
        },
    }
}

pub fn set_threads(threads: Option<i32>) -> Result<()> {
    if let Some(t) = threads {
        if t < 1 {
            return Err(usage(format!("threads {t} must be at least 1")));
        }
        tch::set_num_threads(t);
    }
    Ok(())
}

pub fn load_data(args: &DataArgs) -> Result<Dataset> {
    let spec: DataSpec = args.data.parse()?;
    let split: Split = args.split.parse()?;
    if args.n == Some(0) {
        return Err(usage("n must be at least 1"));
    }
    Ok(Dataset::load(&spec, split, args.n)?)
}

pub fn build_model(args: &ModelArgs, data: &Dataset) -> Result<Box<dyn Classifier>> {
    let remote = gibbon::model::RemoteOptions {
        timeout: std::time::Duration::from_millis(args.remote_timeout_ms),
        retries: args.remote_retries,
        rate_limit_per_s: args.remote_rate_limit,
        max_rows_per_request: args.remote_max_rows,
        ..Default::default()
    };
    let model = load_spec(
        &args.model,
        args.arch.as_deref(),
        args.normalize.as_deref(),
        &args.device,
        &remote,
        data,
    )?;
    crate::harden::defend(model, args.defense.as_deref())
}

/// Loads the model `spec` (with `--arch`, `--normalize` and `--device` as given) for `data`.
fn load_spec(
    spec: &str,
    arch: Option<&str>,
    normalize: Option<&str>,
    device: &str,
    remote: &gibbon::model::RemoteOptions,
    data: &Dataset,
) -> Result<Box<dyn Classifier>> {
    let device = parse_device(device)?;
    let spec: ModelSpec = spec.parse()?;
    let arch = arch.map(str::parse::<Arch>).transpose()?;
    let classes = data.num_classes().max(2) as i64;
    let model = load_model_with(&spec, arch, &data.sample_shape(), classes, device, remote)?;
    match normalize {
        None => Ok(model),
        Some(text) => {
            let (mean, std) = text
                .split_once('/')
                .ok_or_else(|| usage(format!("normalize '{text}' must look like MEAN/STD")))?;
            let list = |s: &str| -> Result<Vec<f64>> {
                s.split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<f64>()
                            .map_err(|_| usage(format!("normalize: '{v}' is not a number")))
                    })
                    .collect()
            };
            Ok(Box::new(Normalized::new(model, &list(mean)?, &list(std)?)?))
        }
    }
}

/// The values of `--eps` (one, or a comma list for a curve); empty when not given.
pub fn eps_list(args: &ThreatArgs) -> Result<Vec<f64>> {
    let Some(text) = &args.eps else { return Ok(Vec::new()) };
    text.split(',')
        .map(|v| {
            let v = v.trim();
            let e: f64 = v.parse().map_err(|_| usage(format!("eps '{v}' is not a number")))?;
            if !e.is_finite() || e < 0.0 {
                return Err(anyhow::Error::new(gibbon::GibbonError::invalid(
                    "eps",
                    format!("{e} must be finite and >= 0"),
                )));
            }
            Ok(e)
        })
        .collect()
}

pub fn build_threat(args: &ThreatArgs) -> Result<ThreatModel> {
    let mut threat = match &args.threat {
        Some(path) => ThreatModel::from_toml_file(path)?,
        None => {
            let norm: Norm = args.norm.as_deref().unwrap_or("linf").parse()?;
            let eps = *eps_list(args)?
                .first()
                .ok_or_else(|| usage("--eps is required (or give --threat FILE)"))?;
            gibbon::threat::ThreatModel { eps, ..ThreatModel::new(norm, 0.0)? }
        }
    };
    if let Some(n) = &args.norm {
        threat.norm = n.parse()?;
    }
    if let Some(&e) = eps_list(args)?.first() {
        threat.eps = e;
    }
    if let Some(q) = args.queries {
        threat.budget.queries = Some(q);
    }
    if let Some(k) = &args.knowledge {
        threat.knowledge = k.parse()?;
    }
    if let Some(s) = args.steps {
        threat.budget.steps = s;
    }
    if let Some(r) = args.restarts {
        threat.budget.restarts = r;
    }
    if let Some(t) = &args.targeted {
        threat.goal = Goal::Targeted(match t.as_str() {
            "next" => TargetSelection::NextClass,
            "most-likely" => TargetSelection::MostLikely,
            "least-likely" => TargetSelection::LeastLikely,
            n => TargetSelection::Fixed(n.parse().map_err(|_| {
                usage(format!(
                    "targeted '{n}' is not next, most-likely, least-likely or a class number"
                ))
            })?),
        });
    }
    threat.validate()?;
    Ok(threat)
}

/// The evaluation settings from the flags; a `--suite` sets its plan and fixed parameters on
/// `model_threat` too.
fn settings(
    threat: &ThreatArgs,
    run: &RunArgs,
    n: Option<usize>,
    quiet: bool,
    model_threat: &mut ThreatModel,
) -> Result<EvalSettings> {
    // A threat file states its budget explicitly, so attacks with their own default use it.
    let steps_from_file = threat
        .threat
        .as_ref()
        .and_then(|p| ThreatModel::from_toml_file(p).ok())
        .map(|t| t.budget.steps);
    let mut s = EvalSettings {
        n,
        batch_size: run.batch_size,
        seed: run.seed,
        attacks: threat
            .attack
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        options: AttackOptions {
            steps: threat.steps.or(steps_from_file),
            alpha: threat.alpha,
            random_start: if threat.random_start {
                Some(true)
            } else if threat.no_random_start {
                Some(false)
            } else {
                None
            },
            minimize: false,
            eot: None,
            query_log: run.query_log.as_ref().map(QueryLog::create).transpose()?,
            full_budget: false,
        },
        keep_examples: false,
        stream: None,
        progress: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Default::default()
    };
    if let Some(name) = &threat.suite {
        let suite: Suite = name.parse()?;
        suite.apply(model_threat, &mut s);
    }
    Ok(s)
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn run_info(data: &DataArgs) -> RunInfo {
    RunInfo { command: command_line(), data_spec: data.data.clone(), split: data.split.clone() }
}

fn print_summary(report: &EvalReport) {
    eprintln!(
        "{}: clean accuracy {:.4}, robust accuracy {:.4} (95% CI {:.4}-{:.4}) under {} eps {} on n={} in {:.1}s",
        report.model.path,
        report.clean_accuracy,
        report.robust_accuracy,
        report.robust_accuracy_ci95[0],
        report.robust_accuracy_ci95[1],
        report.threat.norm,
        report.threat.eps,
        report.n,
        report.seconds
    );
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| gibbon::GibbonError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| gibbon::GibbonError::io(path, e))?;
    Ok(())
}

fn eval_cmd(args: EvalArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let mut threat = build_threat(&args.threat)?;
    threat.defense = crate::harden::chain_spec(args.model.defense.as_deref())?;
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let mut s = settings(&args.threat, &args.run, args.data.n, quiet, &mut threat)?;
    let eps = eps_list(&args.threat)?;
    if eps.len() > 1 {
        return curve_cmd(&args, model.as_ref(), &data, &threat, &eps, &s);
    }
    let stream = args.out.as_ref().filter(|_| !args.run.no_resume).map(|o| partial_path(o));
    s.stream = stream.clone();
    let (report, _) = evaluate(model.as_ref(), &data, &threat, &s, &run_info(&args.data))?;
    print_summary(&report);
    match &args.out {
        Some(out) => {
            write_json(out, &report)?;
            if let Some(p) = stream {
                let _ = std::fs::remove_file(p);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// `eval` with several ε: a robustness curve (JSON: gibbon::eval::CurveReport).
fn curve_cmd(
    args: &EvalArgs,
    model: &dyn Classifier,
    data: &Dataset,
    threat: &ThreatModel,
    eps: &[f64],
    settings: &EvalSettings,
) -> Result<()> {
    let min_norm = match (&args.threat.min_norm_attack, threat.norm) {
        (Some(name), _) => name.clone(),
        (None, Norm::Linf | Norm::L2) => "fab".to_string(),
        (None, Norm::L1) => {
            return Err(usage(
                "no built-in minimum-norm attack for l1: give --min-norm-attack NAME",
            ))
        }
    };
    let report =
        robustness_curve(model, data, threat, eps, &min_norm, settings, &run_info(&args.data))?;
    eprintln!(
        "{}: clean accuracy {:.4}; {} median minimal {} norm {}",
        report.model.path,
        report.clean_accuracy,
        min_norm,
        threat.norm,
        report.median_min_norm.map_or("n/a (most unbroken)".into(), |m| format!("{m:.4}"))
    );
    eprintln!("{:>10} {:>9} {:>17} {:>9} {:>8}", "eps", "robust", "95% CI", "min-norm", "plan");
    for p in &report.curve {
        eprintln!(
            "{:>10} {:>9.4} {:>8.4}-{:<8.4} {:>9} {:>8}",
            p.eps,
            p.robust_accuracy,
            p.robust_accuracy_ci95[0],
            p.robust_accuracy_ci95[1],
            p.broken_by_min_norm,
            p.broken_by_plan
        );
    }
    match &args.out {
        Some(out) => write_json(out, &report)?,
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial.jsonl");
    out.with_file_name(name)
}

fn attack_cmd(args: AttackArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let mut threat = build_threat(&args.threat)?;
    if eps_list(&args.threat)?.len() > 1 {
        return Err(usage("attack takes one --eps; for a curve over several use eval"));
    }
    threat.defense = crate::harden::chain_spec(args.model.defense.as_deref())?;
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let mut s = settings(&args.threat, &args.run, args.data.n, quiet, &mut threat)?;
    s.keep_examples = true;
    let (report, examples) = evaluate(model.as_ref(), &data, &threat, &s, &run_info(&args.data))?;
    print_summary(&report);
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| gibbon::GibbonError::io(&args.out_dir, e))?;
    write_examples(&args.out_dir, &data, &report, &examples, args.png)?;
    write_json(&args.out_dir.join("result.json"), &report)?;
    eprintln!("wrote {}", args.out_dir.display());
    Ok(())
}

/// adversarial.npy holds, for every evaluated sample, the returned example (the clean input
/// where no attack ran); labels.npy the true labels; png/ a few triptychs.
fn write_examples(
    dir: &Path,
    data: &Dataset,
    report: &EvalReport,
    examples: &Examples,
    png: usize,
) -> Result<()> {
    use gibbon::report::{auto_amplification, perturbation_image, write_png, ImageData};
    let shape = data.sample_shape();
    let per: usize = shape.iter().product::<i64>() as usize;
    let mut all = Vec::with_capacity(per * report.n);
    let mut labels = Vec::with_capacity(report.n);
    let png_dir = dir.join("png");
    if png > 0 {
        std::fs::create_dir_all(&png_dir).map_err(|e| gibbon::GibbonError::io(&png_dir, e))?;
    }
    let mut written = 0;
    for r in &report.per_sample {
        let clean = data.try_batch(&[r.index], Device::Cpu)?.get(0);
        let adv = examples
            .get(&r.index)
            .map(|t| t.shallow_clone())
            .unwrap_or_else(|| clean.shallow_clone());
        let clean_v: Vec<f32> = Vec::try_from(clean.flatten(0, -1))?;
        let adv_v: Vec<f32> = Vec::try_from(adv.flatten(0, -1))?;
        all.extend_from_slice(&adv_v);
        labels.push(r.label);
        if written < png && r.broken_by.is_some() && shape.len() == 3 {
            let (c, h, w) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
            let orig = ImageData::new(c, h, w, clean_v)?;
            let advi = ImageData::new(c, h, w, adv_v)?;
            let amp = auto_amplification(&orig, &advi);
            let pert = perturbation_image(&orig, &advi, amp)?;
            write_png(png_dir.join(format!("{:05}_original.png", r.index)), &orig)?;
            write_png(png_dir.join(format!("{:05}_perturbation.png", r.index)), &pert)?;
            write_png(png_dir.join(format!("{:05}_adversarial.png", r.index)), &advi)?;
            written += 1;
        }
    }
    let mut full = vec![report.n];
    full.extend(shape.iter().map(|&d| d as usize));
    gibbon::data::write_npy_f32(&dir.join("adversarial.npy"), &full, &all)?;
    gibbon::data::write_npy_i64(&dir.join("labels.npy"), &[report.n], &labels)?;
    Ok(())
}

fn train_cmd(args: TrainArgs, quiet: bool) -> Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let arch: Arch = args.arch.parse()?;
    let spec: DataSpec = args.data.data.parse()?;
    let split: Split = args.data.split.parse()?;
    let data = Dataset::load(&spec, split, args.data.limit)?;
    let optimizer = match args.optimizer.as_str() {
        "adam" => OptimizerKind::Adam,
        "sgd" => OptimizerKind::Sgd { momentum: args.momentum },
        o => return Err(usage(format!("optimizer '{o}' is not adam or sgd"))),
    };
    let schedule = match args.schedule.as_str() {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::Cosine,
        "step" => Schedule::Step,
        "cyclic" => Schedule::Cyclic,
        s => return Err(usage(format!("schedule '{s}' is not constant, cosine, step or cyclic"))),
    };
    let defense = crate::harden::training_defense(&args)?;
    tch::manual_seed(args.seed as i64);
    let mut model =
        BuiltinModel::new(arch, &data.sample_shape(), data.num_classes().max(2) as i64, device)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer,
        lr: args.lr,
        schedule,
        weight_decay: args.weight_decay,
        defense,
        seed: args.seed,
        holdout: args.holdout,
        limit: args.data.limit,
        checkpoint_dir: args.checkpoint_dir.clone(),
        progress: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = gibbon::train::train(&mut model, &data, &cfg)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| gibbon::GibbonError::io(dir, e))?;
    }
    model.save(&args.out)?;
    write_json(
        &args.out.with_extension("train.json"),
        &serde_json::json!({"config": cfg, "trainer": report.trainer, "epochs": report.epochs,
            "cost": report.cost, "early_stop": report.early_stop, "command": command_line()}),
    )?;
    crate::harden::print_training_cost(&report);
    eprintln!("wrote {}", args.out.display());
    Ok(())
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
    #[arg(long, default_value = "scores")]
    pub output: String,
}

/// `serve-model`: answers /info and /predict on loopback until the process is stopped.
fn serve_model_cmd(args: ServeModelArgs) -> Result<()> {
    set_threads(args.model.threads)?;
    let output: gibbon::model::RemoteOutput = args.output.parse()?;
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let server = gibbon::model::ModelServer::bind(("127.0.0.1", args.port))?;
    println!("serving {}", server.predict_url());
    std::io::Write::flush(&mut std::io::stdout())?;
    tracing::info!(
        "serving {} ({} {:?}, {} classes, answers {output}); stop with Ctrl-C",
        model.info().path,
        model.info().kind,
        model.input_shape(),
        model.num_classes()
    );
    let never = std::sync::atomic::AtomicBool::new(false);
    server.serve(model.as_ref(), output, &never)?;
    Ok(())
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
    #[arg(long)]
    pub surrogates: String,
    /// Target models, a comma list of model specs: each classifies every surrogate's examples
    /// (forward passes only, as a black box).
    #[arg(long)]
    pub targets: String,
    /// Architecture of the .safetensors models among them (linear, mlp, smallcnn,
    /// preact-resnet18); other specs ignore it.
    #[arg(long)]
    pub arch: Option<String>,
    /// Per-channel normalization inside every model, "MEAN/STD" with comma lists.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Input defenses in front of every target (the deployed systems; surrogates stay
    /// undefended), e.g. jpeg:quality=75 (see eval --defense).
    #[arg(long)]
    pub defense: Option<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
}

/// The model specs of a comma list; an error naming `flag` when there are none.
fn model_list(text: &str, flag: &str) -> Result<Vec<String>> {
    let specs: Vec<String> =
        text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if specs.is_empty() {
        return Err(usage(format!("--{flag} names no model: give a comma list of model specs")));
    }
    Ok(specs)
}

fn transfer_cmd(args: TransferArgs, quiet: bool) -> Result<()> {
    use gibbon::eval::{transfer_matrix, TransferSettings};
    set_threads(args.threads)?;
    if args.threat.suite.is_some() {
        return Err(usage("transfer runs one attack: use --attack instead of --suite"));
    }
    if args.threat.min_norm_attack.is_some() || eps_list(&args.threat)?.len() > 1 {
        return Err(usage("transfer takes one --eps (curves over ε are for eval)"));
    }
    let mut threat = build_threat(&args.threat)?;
    threat.defense = crate::harden::chain_spec(args.defense.as_deref())?;
    let run =
        RunArgs { batch_size: args.batch_size, seed: args.seed, no_resume: true, query_log: None };
    let eval = settings(&args.threat, &run, args.data.n, quiet, &mut threat)?;
    let [attack] = eval.attacks.as_slice() else {
        return Err(usage(format!(
            "transfer runs one attack per surrogate, got --attack '{}'",
            args.threat.attack
        )));
    };
    // An unknown attack is reported before any model is loaded.
    gibbon::attack::build_attack(attack, &threat, &AttackOptions::default())?;
    let surrogate_specs = model_list(&args.surrogates, "surrogates")?;
    let target_specs = model_list(&args.targets, "targets")?;
    let data = load_data(&args.data)?;
    let load = |spec: &String, role: &str| -> Result<Box<dyn Classifier>> {
        // --arch names the architecture of the .safetensors models among the specs.
        let safetensors = matches!(spec.parse::<ModelSpec>(), Ok(ModelSpec::Safetensors(_)));
        let arch = args.arch.as_deref().filter(|_| safetensors);
        // A remote target (an http:// spec) uses the default client settings.
        let remote = gibbon::model::RemoteOptions::default();
        load_spec(spec, arch, args.normalize.as_deref(), &args.device, &remote, &data)
            .with_context(|| format!("{role} {spec}"))
    };
    let surrogates =
        surrogate_specs.iter().map(|s| load(s, "surrogate")).collect::<Result<Vec<_>>>()?;
    let targets = target_specs
        .iter()
        .map(|s| crate::harden::defend(load(s, "target")?, args.defense.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let transfer = TransferSettings {
        attack: attack.clone(),
        options: AttackOptions { full_budget: !args.early_exit, ..eval.options },
        n: args.data.n,
        batch_size: args.batch_size,
        seed: args.seed,
        per_sample: args.per_sample,
        progress: eval.progress,
    };
    tracing::info!(
        "transfer: {} surrogate(s) x {} target(s), {attack} under {} eps {}",
        surrogates.len(),
        targets.len(),
        threat.norm,
        threat.eps
    );
    let surrogate_refs: Vec<&dyn Classifier> = surrogates.iter().map(|m| m.as_ref()).collect();
    let target_refs: Vec<&dyn Classifier> = targets.iter().map(|m| m.as_ref()).collect();
    let report = transfer_matrix(
        &surrogate_refs,
        &target_refs,
        &data,
        &threat,
        &transfer,
        &run_info(&args.data),
    )?;
    print!("{}", report.table());
    if let Some(out) = &args.out {
        write_json(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
