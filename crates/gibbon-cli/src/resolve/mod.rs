//! From typed flags to library values: the threat model, evaluation and training settings,
//! devices, data and models. Checks that span several flags (or need a flag's context) live
//! here too; a failed one is a [`UsageError`] (exit code 2).
use crate::args::{
    DataArgs, ModelArgs, ModelList, Normalization, OptimizerName, RunArgs, ThreatArgs, TrainArgs,
    TransferArgs,
};
use anyhow::{Context, Result};
use gibbon::attack::AttackOptions;
use gibbon::data::Dataset;
use gibbon::eval::{EvalSettings, RunInfo, TransferSettings};
use gibbon::model::{
    load_model_with, Arch, Classifier, EotView, ModelSpec, Normalized, OnnxModel, QueryLog,
    RemoteOptions, TorchScriptModel,
};
use gibbon::threat::{Goal, Norm, ThreatModel};
use gibbon::train::{OptimizerKind, TrainConfig};
mod harden;
pub use harden::{chain_spec, defend, report_bpda, training_defense};
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

/// A [`UsageError`] with `msg`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Sets libtorch's intra-op threads when `--threads` is given (at least 1).
pub fn set_threads(threads: Option<i32>) -> Result<()> {
    if let Some(t) = threads {
        if t < 1 {
            return Err(usage(format!("threads {t} must be at least 1")));
        }
        tch::set_num_threads(t);
    }
    Ok(())
}

/// Whether to draw progress bars: not with `--quiet`, and only on a terminal.
pub fn progress(quiet: bool) -> bool {
    !quiet
}

/// The data of `--data`, `--split` and `--n`.
pub fn load_data(args: &DataArgs) -> Result<Dataset> {
    if args.n == Some(0) {
        return Err(usage("n must be at least 1"));
    }
    Ok(Dataset::load(&args.data, args.split, args.n)?)
}

/// The model of `--model` with its `--arch`, `--normalize`, `--device`, remote options,
/// `--defense` and `--bpda` (the view that swaps everything gibbon can swap; what it swapped
/// is printed, see [`report_bpda`]).
pub fn build_model(args: &ModelArgs, data: &Dataset) -> Result<Box<dyn Classifier>> {
    let remote = RemoteOptions {
        timeout: std::time::Duration::from_millis(args.remote_timeout_ms),
        retries: args.remote_retries,
        rate_limit_per_s: args.remote_rate_limit,
        max_rows_per_request: args.remote_max_rows,
        ..Default::default()
    };
    let device = args.device.0;
    let bpda = args.bpda.is_some();
    let model =
        load_spec(&args.model, args.arch, args.normalize.as_ref(), device, &remote, data, bpda)?;
    let model = defend(model, args.defense.as_deref(), bpda)?;
    if bpda {
        report_bpda(model.as_ref());
    }
    match args.eot {
        Some(draws) => Ok(Box::new(EotView::new(model, draws as usize)?)),
        None => Ok(model),
    }
}

/// Loads the model `spec` (with its architecture, normalization and device) for `data`; with
/// `straight_through`, an ONNX model is its straight-through (BPDA) view.
fn load_spec(
    spec: &ModelSpec,
    arch: Option<Arch>,
    normalize: Option<&Normalization>,
    device: Device,
    remote: &RemoteOptions,
    data: &Dataset,
    straight_through: bool,
) -> Result<Box<dyn Classifier>> {
    let classes = data.num_classes().max(2) as i64;
    let shape = data.sample_shape();
    let model: Box<dyn Classifier> = match spec {
        ModelSpec::Onnx(path) if straight_through && arch.is_none() => {
            Box::new(OnnxModel::load(path, &shape, device)?.with_straight_through())
        }
        ModelSpec::TorchScript(path) if straight_through && arch.is_none() => {
            Box::new(TorchScriptModel::load(path, &shape, device)?.with_straight_through()?)
        }
        _ => load_model_with(spec, arch, &shape, classes, device, remote)?,
    };
    match normalize {
        None => Ok(model),
        Some(n) => Ok(Box::new(Normalized::new(model, &n.mean, &n.std)?)),
    }
}

/// The models of a `--surrogates` or `--targets` list for `data`, errors naming `role` and
/// the spec. `arch` is used for the `.safetensors` specs only; a remote model (an http://
/// spec) uses the default client settings.
pub fn load_model_list(
    specs: &ModelList,
    role: &str,
    arch: Option<Arch>,
    normalize: Option<&Normalization>,
    device: Device,
    data: &Dataset,
) -> Result<Vec<Box<dyn Classifier>>> {
    let remote = RemoteOptions::default();
    let load = |text: &String| -> Result<Box<dyn Classifier>> {
        let spec: ModelSpec = text.parse()?;
        let arch = arch.filter(|_| matches!(spec, ModelSpec::Safetensors(_)));
        load_spec(&spec, arch, normalize, device, &remote, data, false)
    };
    specs.0.iter().map(|s| load(s).with_context(|| format!("{role} {s}"))).collect()
}

/// The values of `--eps` (one, or several for a curve); empty when not given.
pub fn eps_values(args: &ThreatArgs) -> &[f64] {
    args.eps.as_ref().map_or(&[], |e| e.0.as_slice())
}

/// The threat model: the `--threat` file (or `--norm`, default linf, and `--eps`), with the
/// flags overriding its fields.
pub fn build_threat(args: &ThreatArgs) -> Result<ThreatModel> {
    let eps = eps_values(args).first().copied();
    let mut threat = match &args.threat {
        Some(path) => ThreatModel::from_toml_file(path)?,
        None => {
            let norm = args.norm.unwrap_or(Norm::Linf);
            let eps = eps.ok_or_else(|| usage("--eps is required (or give --threat FILE)"))?;
            ThreatModel { eps, ..ThreatModel::new(norm, 0.0)? }
        }
    };
    if let Some(n) = args.norm {
        threat.norm = n;
    }
    if let Some(e) = eps {
        threat.eps = e;
    }
    if let Some(q) = args.queries {
        threat.budget.queries = Some(q);
    }
    if let Some(k) = args.knowledge {
        threat.knowledge = k;
    }
    if let Some(s) = args.steps {
        threat.budget.steps = Some(s);
    }
    if let Some(r) = args.restarts {
        threat.budget.restarts = Some(r);
    }
    if let Some(t) = args.targeted {
        threat.goal = Goal::Targeted(t.0);
    }
    threat.validate()?;
    Ok(threat)
}

/// The evaluation settings from the flags; a `--suite` sets its plan and fixed parameters on
/// `model_threat` too.
pub fn eval_settings(
    threat: &ThreatArgs,
    run: &RunArgs,
    n: Option<usize>,
    quiet: bool,
    model_threat: &mut ThreatModel,
) -> Result<EvalSettings> {
    let confidence = threat.confidence.unwrap_or(0.0);
    if !confidence.is_finite() || confidence < 0.0 {
        return Err(usage(format!("--confidence {confidence} must be finite and >= 0")));
    }
    let mut s = EvalSettings {
        n,
        batch_size: run.batch_size,
        seed: run.seed,
        attacks: threat.attack.0.clone(),
        options: AttackOptions {
            confidence,
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
        progress: progress(quiet),
        ..Default::default()
    };
    if let Some(suite) = threat.suite {
        suite.apply(model_threat, &mut s);
    }
    Ok(s)
}

/// `--precision` for `model` (see [`gibbon::model::precision::resolve`]); logs the choice.
pub fn set_precision(run: &RunArgs, model: &dyn Classifier, s: &mut EvalSettings) -> Result<()> {
    let choice =
        gibbon::model::precision::resolve(run.precision, &model.info().kind, model.device())?;
    if choice.requested != gibbon::model::Precision::Fp32 {
        tracing::info!("search precision {:?} ({})", choice.search, choice.reason);
    }
    s.precision = choice;
    Ok(())
}

/// `--eot N`: the model is an [`EotView`] (see [`build_model`]), so APGD's own draws are off
/// (one gradient of the view is already N passes) and verdicts take at least the rand suite's
/// votes.
pub fn apply_eot(model: &ModelArgs, settings: &mut EvalSettings) {
    if model.eot.is_some() {
        settings.options.eot = None;
        settings.verify_passes =
            settings.verify_passes.max(gibbon::eval::SUITE_RAND_VERDICT_PASSES);
    }
}

/// The minimum-norm attack of a curve over ε: `--min-norm-attack`, or fab for linf and l2.
pub fn min_norm_attack(args: &ThreatArgs, norm: Norm) -> Result<String> {
    match (&args.min_norm_attack, norm) {
        (Some(name), _) => Ok(name.clone()),
        (None, Norm::Linf | Norm::L2) => Ok("fab".to_string()),
        (None, Norm::L1) => {
            Err(usage("no built-in minimum-norm attack for l1: give --min-norm-attack NAME"))
        }
    }
}

/// The training data of `train` (`--data`, `--split`, `--limit`).
pub fn load_train_data(args: &TrainArgs) -> Result<Dataset> {
    Ok(Dataset::load(&args.data.data, args.data.split, args.data.limit)?)
}

/// The training configuration of `train`.
pub fn train_config(args: &TrainArgs, quiet: bool) -> Result<TrainConfig> {
    Ok(TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: match args.optimizer {
            OptimizerName::Adam => OptimizerKind::Adam,
            OptimizerName::Sgd => OptimizerKind::Sgd { momentum: args.momentum },
        },
        lr: args.lr,
        schedule: args.schedule,
        weight_decay: args.weight_decay,
        defense: training_defense(args)?,
        seed: args.seed,
        holdout: args.holdout,
        limit: args.data.limit,
        checkpoint_dir: args.checkpoint_dir.clone(),
        resume: args.resume,
        progress: progress(quiet),
    })
}

/// The command line as typed, recorded in the result JSON.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// What the result JSON records about the run: the command line, data spec and split.
pub fn run_info(data: &DataArgs) -> RunInfo {
    RunInfo {
        command: command_line(),
        data_spec: data.data.to_string(),
        split: data.split.to_string(),
    }
}

/// The threat model and settings of `transfer`: one attack, one ε, no suite; an unknown attack
/// is reported before any model is loaded.
pub fn transfer_settings(
    args: &TransferArgs,
    quiet: bool,
) -> Result<(ThreatModel, TransferSettings)> {
    if args.threat.suite.is_some() {
        return Err(usage("transfer runs one attack: use --attack instead of --suite"));
    }
    if args.threat.min_norm_attack.is_some() || eps_values(&args.threat).len() > 1 {
        return Err(usage("transfer takes one --eps (curves over ε are for eval)"));
    }
    let mut threat = build_threat(&args.threat)?;
    threat.defense = chain_spec(args.defense.as_deref())?;
    let run = RunArgs {
        batch_size: args.batch_size,
        seed: args.seed,
        no_resume: true,
        query_log: None,
        precision: gibbon::model::Precision::Fp32,
    };
    let eval = eval_settings(&args.threat, &run, args.data.n, quiet, &mut threat)?;
    let [attack] = eval.attacks.as_slice() else {
        return Err(usage(format!(
            "transfer runs one attack per surrogate, got --attack '{}'",
            args.threat.attack
        )));
    };
    gibbon::attack::build_attack(attack, &threat, &AttackOptions::default())?;
    let settings = TransferSettings {
        attack: attack.clone(),
        options: AttackOptions { full_budget: !args.early_exit, ..eval.options },
        n: args.data.n,
        batch_size: args.batch_size,
        seed: args.seed,
        per_sample: args.per_sample,
        progress: eval.progress,
    };
    Ok((threat, settings))
}

#[cfg(test)]
mod tests {
    //! Every flag type's `FromStr`: the accepted spellings give the right values, and a bad
    //! value is refused with an error that names the flag and what it accepts, also as clap
    //! prints it.
    use super::*;
    use crate::args::{
        attack_names, AttackPlan, Cli, Command, DeviceChoice, EpsList, TargetChoice,
    };
    use clap::{CommandFactory, Parser};
    use gibbon::threat::TargetSelection;
    use gibbon::train::Schedule;
    use std::str::FromStr;

    /// The message of `T::from_str(bad)`, which must fail.
    fn refusal<T: FromStr<Err = gibbon::GibbonError> + std::fmt::Debug>(bad: &str) -> String {
        T::from_str(bad).expect_err(bad).to_string()
    }

    /// The one-line clap error of `gibbon eval --model m.pt ARGS`, which must fail to parse.
    fn clap_error(args: &[&str]) -> String {
        let argv = [&["gibbon", "eval", "--model", "m.pt"], args].concat();
        let err = Cli::try_parse_from(argv).expect_err("refused");
        assert_eq!(err.exit_code(), 2);
        err.to_string().lines().next().unwrap().to_string()
    }

    fn eval_threat(args: &[&str]) -> ThreatArgs {
        let argv = [&["gibbon", "eval", "--model", "m.pt"], args].concat();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Eval(e) => e.threat,
            other => panic!("not eval: {other:?}"),
        }
    }

    #[test]
    fn eps_list_takes_one_radius_or_a_comma_list() {
        assert_eq!("0.3".parse::<EpsList>().unwrap().0, [0.3]);
        assert_eq!(" 0.05, 0.1,0.2".parse::<EpsList>().unwrap().0, [0.05, 0.1, 0.2]);
        assert_eq!(refusal::<EpsList>("0.1,abc"), "invalid eps: 'abc' is not a number");
        assert!(refusal::<EpsList>("-0.1").contains("eps: -0.1 must be finite and >= 0"));
        assert!(refusal::<EpsList>("inf").starts_with("invalid eps"));
        assert_eq!(
            clap_error(&["--eps", "0.1,-0.2"]),
            "error: invalid value '0.1,-0.2' for '--eps <EPS>': -0.2 must be finite and >= 0"
        );
    }

    #[test]
    fn attack_plan_is_the_comma_list_without_blanks() {
        let plan: AttackPlan = "fgsm, pgd,,square ".parse().unwrap();
        assert_eq!(plan.0, ["fgsm", "pgd", "square"]);
        assert_eq!(plan.to_string(), "fgsm,pgd,square");
        assert_eq!(eval_threat(&["--eps", "0.3"]).attack.0, ["pgd"]);
    }

    #[test]
    fn targeted_takes_a_rule_or_a_class_number() {
        let target = |s: &str| s.parse::<TargetChoice>().unwrap().0;
        assert_eq!(target("next"), TargetSelection::NextClass);
        assert_eq!(target("most-likely"), TargetSelection::MostLikely);
        assert_eq!(target("least-likely"), TargetSelection::LeastLikely);
        assert_eq!(target("3"), TargetSelection::Fixed(3));
        let msg = refusal::<TargetChoice>("sideways");
        assert!(msg.contains("targeted") && msg.contains("next, most-likely, least-likely"));
        assert!(clap_error(&["--eps", "0.3", "--targeted", "3.5"]).contains("'--targeted"));
        let threat = build_threat(&eval_threat(&["--eps", "0.3", "--targeted", "next"])).unwrap();
        assert_eq!(threat.goal, Goal::Targeted(TargetSelection::NextClass));
    }

    #[test]
    fn device_is_cpu_or_an_existing_cuda_device() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap().0, Device::Cpu);
        let msg = refusal::<DeviceChoice>("tpu");
        assert!(msg.contains("device") && msg.contains("cpu, cuda, cuda:N"), "{msg}");
        // No machine has 10,000 CUDA devices.
        assert!(refusal::<DeviceChoice>("cuda:9999").contains("only"));
        assert!(clap_error(&["--eps", "0.3", "--device", "gpu"]).contains("'--device <DEVICE>'"));
    }

    #[test]
    fn normalize_is_mean_slash_std_with_comma_lists() {
        let n: Normalization = "0.1307/0.3081".parse().unwrap();
        assert_eq!((n.mean, n.std), (vec![0.1307], vec![0.3081]));
        let n: Normalization = "0.4,0.5, 0.6/0.2,0.2,0.2".parse().unwrap();
        assert_eq!((n.mean, n.std), (vec![0.4, 0.5, 0.6], vec![0.2; 3]));
        assert!(
            refusal::<Normalization>("0.1").contains("normalize: '0.1' must look like MEAN/STD")
        );
        assert!(refusal::<Normalization>("0.1/x").contains("normalize: 'x' is not a number"));
    }

    #[test]
    fn optimizer_and_schedule_name_their_choices() {
        assert_eq!("adam".parse::<OptimizerName>().unwrap(), OptimizerName::Adam);
        assert_eq!("sgd".parse::<OptimizerName>().unwrap(), OptimizerName::Sgd);
        assert!(
            refusal::<OptimizerName>("rmsprop").contains("optimizer: 'rmsprop' is not adam or sgd")
        );
        for (s, v) in [
            ("constant", Schedule::Constant),
            ("cosine", Schedule::Cosine),
            ("step", Schedule::Step),
        ] {
            assert_eq!(s.parse::<Schedule>().unwrap(), v);
        }
        assert!(refusal::<Schedule>("linear").contains("schedule: 'linear' is not constant"));
        let argv = ["gibbon", "train", "--arch", "mlp", "--out", "m.safetensors"];
        let err = Cli::try_parse_from([&argv[..], &["--optimizer", "lbfgs"]].concat()).unwrap_err();
        assert!(err
            .to_string()
            .contains("for '--optimizer <OPTIMIZER>': 'lbfgs' is not adam or sgd"));
    }

    #[test]
    fn model_lists_need_one_model() {
        let list: ModelList = " a.pt, builtin:smallcnn-mnist ,".parse().unwrap();
        assert_eq!(list.0, ["a.pt", "builtin:smallcnn-mnist"]);
        assert!(refusal::<ModelList>(", ").contains("names no model"));
    }

    #[test]
    fn library_types_are_parsed_by_clap_with_their_own_message() {
        assert_eq!(
            clap_error(&["--eps", "0.3", "--norm", "l7"]),
            "error: invalid value 'l7' for '--norm <NORM>': 'l7' is not one of linf, l2, l1"
        );
        assert!(clap_error(&["--eps", "0.3", "--split", "dev"]).contains("'--split <SPLIT>'"));
        let threat = build_threat(&eval_threat(&["--eps", "0.5", "--norm", "L2"])).unwrap();
        assert_eq!((threat.norm, threat.eps), (Norm::L2, 0.5));
    }

    #[test]
    fn attack_help_lists_every_registered_attack() {
        let names = attack_names();
        assert_eq!(names.len(), gibbon::attack::REGISTRY.len());
        let list = format!("({})", names.join(", "));
        let mut cli = Cli::command();
        let eval = cli.find_subcommand_mut("eval").unwrap();
        let attack = eval.get_arguments().find(|a| a.get_id() == "attack").unwrap();
        assert!(attack.get_help().unwrap().to_string().contains(&list));
        // What `gibbon eval --help` prints, lines unwrapped.
        let help = eval.render_long_help().to_string();
        let words: Vec<&str> = help.split_whitespace().collect();
        assert!(words.join(" ").contains(&list), "{help}");
    }
}
