//! `gibbon tradeoff`: sweep one hardening parameter (TRADES β, the training ε, or the JPEG
//! quality), train or wrap a model at each value, evaluate every point with the same suite at
//! the same ε, and show clean accuracy against robust accuracy (with 95% Clopper-Pearson
//! intervals) and training cost as a table, a JSON file and an SVG plot.
//!
//! Resumable: each point lives in `OUT_DIR/point-VALUE/` (weights, training JSON, the
//! evaluation's per-sample stream and result). A point whose `result.json` exists is read back,
//! trained weights are reused, a killed training goes on from its last epoch checkpoint
//! (`point-VALUE/checkpoints/`), and a killed evaluation resumes from its stream file.
use super::write_json;
use crate::args::TradeoffArgs;
use crate::resolve::{set_threads, usage};
use anyhow::{Context, Result};
use gibbon::data::{DataSpec, Dataset, Split};
use gibbon::defense::input::{Defended, DefenseChain, JpegCompression};
use gibbon::eval::{clopper_pearson, evaluate, EvalSettings, RunInfo, Suite};
use gibbon::model::{Arch, BuiltinModel, Classifier};
use gibbon::threat::{Norm, ThreatModel};
use gibbon::train::{
    train, AdversarialTraining, OptimizerKind, Schedule, TradesTraining, TrainConfig,
    TrainingDefense,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Device;

/// One evaluated point of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TradeoffPoint {
    /// The swept value.
    pub value: f64,
    /// Clean accuracy and its 95% interval.
    pub clean_accuracy: f64,
    pub clean_accuracy_ci95: [f64; 2],
    /// Robust accuracy under the suite and its 95% interval.
    pub robust_accuracy: f64,
    pub robust_accuracy_ci95: [f64; 2],
    /// Samples evaluated.
    pub n: usize,
    /// Training wall time (None for a wrapped model).
    pub train_seconds: Option<f64>,
    /// Evaluation wall time.
    pub eval_seconds: f64,
}

enum Sweep {
    TradesBeta,
    TrainEps,
    JpegQuality,
}

pub fn run(args: TradeoffArgs, quiet: bool) -> Result<()> {
    set_threads(args.threads)?;
    let sweep = match args.sweep.as_str() {
        "trades-beta" => Sweep::TradesBeta,
        "train-eps" => Sweep::TrainEps,
        "jpeg-quality" => Sweep::JpegQuality,
        s => {
            return Err(usage(format!("sweep '{s}' is not trades-beta, train-eps or jpeg-quality")))
        }
    };
    let values = parse_values(&args.values)?;
    let suite: Suite = args.suite.parse()?;
    if matches!(sweep, Sweep::JpegQuality) {
        values.iter().try_for_each(|&q| JpegCompression::new(q as u8).map(|_| ()))?;
        if args.model.is_none() {
            return Err(usage("--sweep jpeg-quality needs --model"));
        }
    }
    let data = Dataset::load(&args.data.parse::<DataSpec>()?, args.split.parse()?, Some(args.n))?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| args.out_dir.display().to_string())?;
    let mut points = Vec::new();
    for &value in &values {
        let dir = args.out_dir.join(format!("point-{value}"));
        let done = dir.join("result.json");
        if let Ok(text) = std::fs::read_to_string(&done) {
            tracing::info!("{} = {value}: done earlier ({})", args.sweep, done.display());
            points.push(serde_json::from_str(&text).context(done.display().to_string())?);
            continue;
        }
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let (model, train_seconds) = point_model(&args, &sweep, value, &dir, &data)?;
        let point = evaluate_point(&args, suite, model.as_ref(), &data, value, &dir, quiet)?;
        let point = TradeoffPoint { train_seconds, ..point };
        write_json(&done, &point)?;
        points.push(point);
    }
    print_table(&args.sweep, &points);
    write_json(
        &args.out_dir.join("tradeoff.json"),
        &serde_json::json!({
            "sweep": args.sweep, "eps": args.eps, "suite": args.suite, "n": args.n, "points": points,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        }),
    )?;
    let svg = args.out_dir.join("tradeoff.svg");
    plot(&svg, &args.sweep, args.eps, &points)?;
    eprintln!("wrote {} and {}", args.out_dir.join("tradeoff.json").display(), svg.display());
    Ok(())
}

fn parse_values(text: &str) -> Result<Vec<f64>> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|_| usage(format!("value '{v}' is not a number"))))
        .collect::<Result<_>>()?;
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return Err(usage("--values needs finite numbers"));
    }
    Ok(values)
}

/// The model at one point: trained (weights reused when present) or wrapped.
fn point_model(
    args: &TradeoffArgs,
    sweep: &Sweep,
    value: f64,
    dir: &Path,
    data: &Dataset,
) -> Result<(Box<dyn Classifier>, Option<f64>)> {
    let defense = match sweep {
        Sweep::JpegQuality => {
            let spec = args.model.as_deref().unwrap_or_default();
            let remote = gibbon::model::RemoteOptions::default();
            let shape = data.sample_shape();
            let classes = data.num_classes().max(2) as i64;
            let model = gibbon::model::load_model_with(
                &spec.parse()?,
                None,
                &shape,
                classes,
                Device::Cpu,
                &remote,
            )?;
            let chain: DefenseChain = format!("jpeg:quality={value}").parse()?;
            return Ok((Box::new(Defended::new(model, chain)?), None));
        }
        Sweep::TradesBeta => TrainingDefense::Trades(TradesTraining {
            eps: args.eps,
            steps: args.adv_steps,
            step_size: 2.5 * args.eps / args.adv_steps.max(1) as f64,
            beta: value,
            ramp_epochs: args.adv_ramp_epochs,
        }),
        Sweep::TrainEps => TrainingDefense::Pgd(AdversarialTraining {
            norm: Norm::Linf,
            eps: value,
            steps: args.adv_steps,
            alpha: 2.5 * value / args.adv_steps.max(1) as f64,
            ramp_epochs: args.adv_ramp_epochs,
        }),
    };
    let weights = dir.join("model.safetensors");
    let arch: Arch = args.arch.parse()?;
    let spec: DataSpec = args.train_data.parse()?;
    let train_data = Dataset::load(&spec, Split::Train, args.limit)?;
    let (shape, classes) = (train_data.sample_shape(), train_data.num_classes().max(2) as i64);
    if weights.exists() {
        tracing::info!("reusing {}", weights.display());
        let model = BuiltinModel::load(arch, &weights, &shape, classes, Device::Cpu)?;
        let cost: Option<f64> = std::fs::read_to_string(weights.with_extension("train.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["cost"]["wall_seconds"].as_f64());
        return Ok((Box::new(model), cost));
    }
    tch::manual_seed(args.seed as i64);
    let mut model = BuiltinModel::new(arch, &shape, classes, Device::Cpu)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: OptimizerKind::Adam,
        lr: args.lr,
        schedule: Schedule::Constant,
        weight_decay: 0.0,
        defense,
        seed: args.seed,
        holdout: args.holdout,
        limit: args.limit,
        checkpoint_dir: Some(dir.join("checkpoints")),
        resume: true,
        progress: false,
    };
    let report = train(&mut model, &train_data, &cfg)?;
    model.save(&weights)?;
    write_json(
        &weights.with_extension("train.json"),
        &serde_json::json!({
            "config": cfg, "trainer": report.trainer, "epochs": report.epochs, "cost": report.cost,
        }),
    )?;
    Ok((Box::new(model), Some(report.cost.wall_seconds)))
}

fn evaluate_point(
    args: &TradeoffArgs,
    suite: Suite,
    model: &dyn Classifier,
    data: &Dataset,
    value: f64,
    dir: &Path,
    quiet: bool,
) -> Result<TradeoffPoint> {
    let mut threat = ThreatModel::new(Norm::Linf, args.eps)?;
    if matches!(args.sweep.as_str(), "jpeg-quality") {
        threat.defense = Some(format!("jpeg:quality={value}"));
    }
    let mut s = EvalSettings {
        n: Some(args.n),
        batch_size: args.batch_size,
        seed: args.seed,
        stream: Some(dir.join("eval.partial.jsonl")),
        progress: !quiet,
        ..Default::default()
    };
    suite.apply(&mut threat, &mut s);
    let run = RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        data_spec: args.data.clone(),
        split: args.split.clone(),
    };
    let (report, _) = evaluate(model, data, &threat, &s, &run)?;
    write_json(&dir.join("eval.json"), &report)?;
    let clean = (report.clean_accuracy * report.n as f64).round() as usize;
    let (lo, hi) = clopper_pearson(clean, report.n, 0.05);
    Ok(TradeoffPoint {
        value,
        clean_accuracy: report.clean_accuracy,
        clean_accuracy_ci95: [lo, hi],
        robust_accuracy: report.robust_accuracy,
        robust_accuracy_ci95: report.robust_accuracy_ci95,
        n: report.n,
        train_seconds: None,
        eval_seconds: report.seconds,
    })
}

fn print_table(sweep: &str, points: &[TradeoffPoint]) {
    eprintln!(
        "{:>14} {:>8} {:>17} {:>8} {:>17} {:>10} {:>9}",
        sweep, "clean", "95% CI", "robust", "95% CI", "train s", "eval s"
    );
    for p in points {
        eprintln!(
            "{:>14} {:>8.4} {:>8.4}-{:<8.4} {:>8.4} {:>8.4}-{:<8.4} {:>10} {:>9.1}",
            p.value,
            p.clean_accuracy,
            p.clean_accuracy_ci95[0],
            p.clean_accuracy_ci95[1],
            p.robust_accuracy,
            p.robust_accuracy_ci95[0],
            p.robust_accuracy_ci95[1],
            p.train_seconds.map_or("-".into(), |s| format!("{s:.1}")),
            p.eval_seconds
        );
    }
}

/// Clean accuracy (x) against robust accuracy (y), each point with its two 95% intervals and
/// labelled with its value.
fn plot(path: &Path, sweep: &str, eps: f64, points: &[TradeoffPoint]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 540)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{sweep}: clean vs robust accuracy (L∞ ε = {eps})"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("clean accuracy")
        .y_desc("robust accuracy")
        .draw()
        .map_err(|e| draw(&e))?;
    let line = points.iter().map(|p| (p.clean_accuracy, p.robust_accuracy));
    chart.draw_series(LineSeries::new(line, &BLUE)).map_err(|e| draw(&e))?;
    for p in points {
        let (x, y) = (p.clean_accuracy, p.robust_accuracy);
        let bars = [
            vec![(x, p.robust_accuracy_ci95[0]), (x, p.robust_accuracy_ci95[1])],
            vec![(p.clean_accuracy_ci95[0], y), (p.clean_accuracy_ci95[1], y)],
        ];
        for bar in bars {
            chart.draw_series(LineSeries::new(bar, &BLACK)).map_err(|e| draw(&e))?;
        }
        chart.draw_series([Circle::new((x, y), 4, BLUE.filled())]).map_err(|e| draw(&e))?;
        let label = Text::new(format!("{}", p.value), (x, y), ("sans-serif", 14));
        chart.draw_series([label]).map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
