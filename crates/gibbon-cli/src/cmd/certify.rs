//! `gibbon certify`: randomized smoothing's CERTIFY for each sample, the certified accuracy
//! curve, as JSON; with `--attack`, SmoothAdv against the smoothed classifier beside it (each
//! sample's smallest example, the attacked-accuracy curve, and the violations: examples found
//! inside a certified radius). Each sample's certificate is appended to OUT.partial.jsonl as it is made
//! (the first line records the configuration), and a rerun with the same configuration
//! resumes from it.
use super::write_json;
use crate::args::CertifyArgs;
use crate::resolve::{build_model, load_data, progress, set_threads, usage};
use anyhow::{Context, Result};
use gibbon::certify::{
    attacked_accuracy, certified_accuracy, is_violation, Certificate, SmoothAdvConfig,
    SmoothAttack, Smoothed, SmoothingConfig,
};
use gibbon::model::{Classifier, ModelInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// One sample's certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SampleCertificate {
    index: usize,
    label: i64,
    #[serde(flatten)]
    certificate: Certificate,
    correct: bool,
    seconds: f64,
    /// SmoothAdv's smallest example against the smoothed classifier (with `--attack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attack: Option<SmoothAttack>,
    /// The attack's example lies inside the certified radius (expected never).
    #[serde(default)]
    violation: bool,
}

/// The JSON of `gibbon certify`.
#[derive(Serialize)]
struct CertifyReport {
    gibbon_version: &'static str,
    command: String,
    model: ModelInfo,
    data: String,
    split: String,
    config: SmoothingConfig,
    n: usize,
    abstained: usize,
    /// `[radius, certified accuracy]` pairs.
    certified_accuracy: Vec<(f64, f64)>,
    /// SmoothAdv's constants (with `--attack`).
    attack: Option<SmoothAdvConfig>,
    /// `[radius, accuracy under SmoothAdv]` pairs: the empirical upper bound.
    attacked_accuracy: Option<Vec<(f64, f64)>>,
    /// Samples whose attack example lies inside their certified radius (expected 0).
    violations: Option<usize>,
    violation_indices: Vec<usize>,
    /// Noisy forward rows per second of CERTIFY over the samples certified in this run (the
    /// attack's time excluded).
    draws_per_second: Option<f64>,
    /// The base model's own rate on the same batches without noise (`query_predict` of
    /// `--noise-batch` copies of the first sample, timed for at least a second): what
    /// `draws_per_second` is bounded by. Measured when this run certified a sample.
    forward_rows_per_second: Option<f64>,
    resumed: usize,
    per_sample: Vec<SampleCertificate>,
}

/// Certifies the first `--n` samples and writes the report.
pub fn run(mut args: CertifyArgs, quiet: bool) -> Result<()> {
    if args.ibp {
        return super::certify_ibp::run(args, quiet);
    }
    set_threads(args.model.threads)?;
    let radii = args.radii.take().unwrap_or_else(|| SMOOTHING_RADII.to_vec());
    check_radii(&radii)?;
    let config = SmoothingConfig {
        sigma: args.sigma.ok_or_else(|| usage("--sigma is required (or --ibp)"))?,
        n0: args.selection_draws,
        n: args.draws,
        alpha: args.alpha,
        batch: args.noise_batch,
        seed: args.seed,
    };
    config.validate()?;
    let attack = args.attack.then(|| attack_config(&args)).transpose()?;
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    if attack.is_some() {
        // Refused before any sample is certified, not after the first.
        gibbon::certify::require_scores(model.as_ref())?;
    }
    let smoothed = Smoothed::new(model.as_ref(), config.clone())?;
    let stream = args.out.as_ref().filter(|_| !args.no_resume).map(|o| partial_path(o));
    let mut done = match &stream {
        Some(p) => resume(p, &header(&config, &attack, model.info()))?,
        None => BTreeMap::new(),
    };
    let resumed = done.len();
    let mut sink = match &stream {
        Some(p) => Some(open_stream(p, &header(&config, &attack, model.info()), resumed == 0)?),
        None => None,
    };
    let bar =
        gibbon::progress::Progress::new(progress(quiet), data.len() as u64, "certify", "samples");
    let mut certified_here = 0;
    let mut certify_seconds = 0.0;
    for i in 0..data.len() {
        bar.inc(1);
        if done.contains_key(&i) {
            continue;
        }
        let t0 = Instant::now();
        let x = data.try_batch(&[i], Device::Cpu)?.squeeze_dim(0);
        let label = data.try_labels_of(&[i], Device::Cpu)?.int64_value(&[0]);
        let certificate = smoothed.certify(&x, i)?;
        certify_seconds += t0.elapsed().as_secs_f64();
        let correct = certificate.class == Some(label);
        let attacked = match &attack {
            Some(a) => Some(smoothed.attack_certified(&x, i, &certificate, a)?),
            None => None,
        };
        let record = SampleCertificate {
            index: i,
            label,
            certificate,
            correct,
            seconds: t0.elapsed().as_secs_f64(),
            violation: attacked.as_ref().is_some_and(|a| is_violation(&certificate, a)),
            attack: attacked,
        };
        if let Some(f) = sink.as_mut() {
            writeln!(f, "{}", serde_json::to_string(&record)?)?;
            f.flush()?;
        }
        done.insert(i, record);
        certified_here += 1;
    }
    bar.finish();
    let per_sample: Vec<SampleCertificate> = done.into_values().collect();
    let pairs: Vec<(Certificate, i64)> =
        per_sample.iter().map(|s| (s.certificate, s.label)).collect();
    let attacked: Option<Vec<(SmoothAttack, i64)>> =
        per_sample.iter().map(|s| s.attack.map(|a| (a, s.label))).collect();
    let violation_indices: Vec<usize> =
        per_sample.iter().filter(|s| s.violation).map(|s| s.index).collect();
    let rows = certified_here * (config.n0 + config.n);
    let seconds = certify_seconds;
    let forward_rows_per_second = (certified_here > 0)
        .then(|| forward_rate(model.as_ref(), &data.try_batch(&[0], Device::Cpu)?, config.batch))
        .transpose()?;
    let report = CertifyReport {
        gibbon_version: gibbon::VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: model.info().clone(),
        data: args.data.data.to_string(),
        split: args.data.split.to_string(),
        n: per_sample.len(),
        abstained: per_sample.iter().filter(|s| s.certificate.class.is_none()).count(),
        certified_accuracy: certified_accuracy(&pairs, &radii),
        attacked_accuracy: attacked.as_ref().map(|a| attacked_accuracy(a, &radii)),
        violations: attack.as_ref().map(|_| violation_indices.len()),
        violation_indices,
        attack,
        draws_per_second: (certified_here > 0 && seconds > 0.0).then(|| rows as f64 / seconds),
        forward_rows_per_second,
        resumed,
        config,
        per_sample,
    };
    if !quiet {
        eprintln!("certified accuracy (σ = {}, n = {}):", report.config.sigma, report.config.n);
        for (k, (r, a)) in report.certified_accuracy.iter().enumerate() {
            match &report.attacked_accuracy {
                Some(e) => eprintln!("  radius {r:>6.3}: {a:.4} (under SmoothAdv: {:.4})", e[k].1),
                None => eprintln!("  radius {r:>6.3}: {a:.4}"),
            }
        }
        eprintln!("abstained on {} of {}", report.abstained, report.n);
        if let (Some(d), Some(f)) = (report.draws_per_second, report.forward_rows_per_second) {
            eprintln!("noise draws {d:.0}/s; the model's own forward rate {f:.0} rows/s");
        }
        if let Some(v) = report.violations {
            eprintln!("violations (attack example inside a certified radius): {v}");
        }
    }
    if let Some(path) = &args.html {
        page(&report)?.write(path)?;
    }
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

/// The certified-accuracy curve's default L2 radii for randomized smoothing.
const SMOOTHING_RADII: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// `--radii` must be finite and non-negative.
pub(super) fn check_radii(radii: &[f64]) -> Result<()> {
    match radii.iter().find(|r| !r.is_finite() || **r < 0.0) {
        Some(r) => Err(usage(format!("--radii: {r} is not a finite radius >= 0"))),
        None => Ok(()),
    }
}

/// Rows per second of the model's label-only forward on `batch` copies of `x` (`[1, ...]`),
/// timed over at least one second after one warm-up batch.
fn forward_rate(model: &dyn Classifier, x: &tch::Tensor, batch: usize) -> Result<f64> {
    let rows = x.repeat_interleave_self_int(batch as i64, Some(0), None).to_device(model.device());
    let _ = model.query_predict(&rows)?;
    let t0 = Instant::now();
    let mut done = 0usize;
    while done == 0 || t0.elapsed().as_secs_f64() < 1.0 {
        let _ = model.query_predict(&rows)?;
        done += batch;
    }
    Ok(done as f64 / t0.elapsed().as_secs_f64())
}

/// The stream's first line: what its certificates were made with.
#[derive(Serialize, Deserialize, PartialEq)]
struct StreamHeader {
    config: SmoothingConfig,
    model_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attack: Option<SmoothAdvConfig>,
}

fn header(
    config: &SmoothingConfig,
    attack: &Option<SmoothAdvConfig>,
    model: &ModelInfo,
) -> StreamHeader {
    StreamHeader {
        config: config.clone(),
        model_sha256: model.sha256.clone(),
        attack: attack.clone(),
    }
}

/// SmoothAdv's constants from the flags (checked).
fn attack_config(args: &CertifyArgs) -> Result<SmoothAdvConfig> {
    let attack = SmoothAdvConfig {
        noise_samples: args.attack_noise_samples,
        steps: args.attack_steps,
        search_steps: args.attack_search_steps,
        predict_draws: args.attack_draws,
        ..SmoothAdvConfig::new(args.attack_max_eps)
    };
    attack.validate()?;
    Ok(attack)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial.jsonl");
    out.with_file_name(name)
}

/// The certificates of an earlier run with the same configuration and model.
fn resume(path: &Path, want: &StreamHeader) -> Result<BTreeMap<usize, SampleCertificate>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(BTreeMap::new()) };
    let mut lines = text.lines();
    let Some(first) = lines.next() else { return Ok(BTreeMap::new()) };
    let header: StreamHeader = serde_json::from_str(first)
        .with_context(|| format!("{}: not a certify stream (first line)", path.display()))?;
    if &header != want {
        return Err(usage(format!(
            "{} was written with another model or configuration; delete it or pass --no-resume",
            path.display()
        )));
    }
    let mut done = BTreeMap::new();
    // A line cut short by a kill is dropped (it is certified again).
    for rec in lines.filter_map(|l| serde_json::from_str::<SampleCertificate>(l).ok()) {
        done.insert(rec.index, rec);
    }
    Ok(done)
}

fn open_stream(path: &Path, header: &StreamHeader, fresh: bool) -> Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(!fresh)
        .write(true)
        .truncate(fresh)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    let cut_short = !fresh
        && std::fs::read(path).map(|b| b.last().is_some_and(|&c| c != b'\n')).unwrap_or(false);
    if cut_short {
        // A kill mid-line: end that line, so the next record starts on its own.
        writeln!(f)?;
    }
    if fresh {
        writeln!(f, "{}", serde_json::to_string(header)?)?;
    }
    Ok(f)
}

/// The page: settings, the certified (and attacked) accuracy table and their plot.
fn page(report: &CertifyReport) -> Result<gibbon::report::HtmlReport> {
    use gibbon::report::{HtmlReport, SummaryTable};
    let c = &report.config;
    let mut head = vec!["L2 radius".to_string(), "certified accuracy (lower bound)".to_string()];
    if report.attacked_accuracy.is_some() {
        head.push("accuracy under SmoothAdv (upper bound)".into());
    }
    let mut table = SummaryTable::new(head);
    for (k, (r, a)) in report.certified_accuracy.iter().enumerate() {
        let mut row = vec![format!("{r}"), format!("{a:.4}")];
        if let Some(e) = &report.attacked_accuracy {
            row.push(format!("{:.4}", e[k].1));
        }
        table.push_row(row);
    }
    let attack = match (&report.attack, report.violations) {
        (Some(a), Some(v)) => format!(
            " SmoothAdv (Salman et al. 2019) attacked the smoothed classifier: L2 PGD, {} steps, \
             {} noise draws per step, bisection ({} steps) on the radius up to {}; an example \
             counts when PREDICT with {} fresh draws answers another class than the smoothed \
             class at the clean input (abstaining does not count). Violations (an example \
             strictly inside a certified radius; expected 0): {v}{}.",
            a.steps,
            a.noise_samples,
            a.search_steps,
            a.max_eps,
            a.predict_draws,
            if v > 0 { format!(", samples {:?}", report.violation_indices) } else { String::new() }
        ),
        _ => String::new(),
    };
    let intro = format!(
        "Randomized smoothing (Cohen, Rosenfeld & Kolter 2019) of {} with σ = {} on {} samples \
         of {}: {} selection and {} estimation draws per sample, each certificate wrong with \
         probability at most α = {}. Certified accuracy at r: the share of samples whose smoothed \
         class is the label with a certified radius of at least r. Abstained on {}.{attack} \
         Command: {}",
        report.model.path,
        c.sigma,
        report.n,
        report.data,
        c.n0,
        c.n,
        c.alpha,
        report.abstained,
        report.command
    );
    Ok(HtmlReport::new(format!("gibbon certify: {}", report.model.path))
        .intro(intro)
        .add_table("Certified accuracy", table)
        .add_figure("Certified accuracy against radius", "", &curve_svg(report)?))
}

/// A step curve: the share of `n` samples whose value is at least r (`radii` sorted).
pub(super) fn step_curve(radii: &[f64], n: f64, top: f64) -> Vec<(f64, f64)> {
    let mut points = gibbon::report::plot::share_at_least(radii, n);
    points.push((top, 0.0));
    points
}

/// Certified accuracy (blue) and accuracy under SmoothAdv (red) against the L2 radius, over
/// every sample's radius (step curves).
fn curve_svg(report: &CertifyReport) -> Result<String> {
    use plotters::prelude::*;
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let certified = sorted(
        report.per_sample.iter().filter(|s| s.correct).map(|s| s.certificate.radius).collect(),
    );
    let max_eps = report.attack.as_ref().map_or(0.0, |a| a.max_eps);
    let attacked: Option<Vec<f64>> = report.attack.as_ref().map(|_| {
        sorted(
            report
                .per_sample
                .iter()
                .filter_map(|s| s.attack.filter(|a| a.clean_class == Some(s.label)))
                .map(|a| a.perturbation.unwrap_or(max_eps))
                .collect(),
        )
    });
    let n = report.n.max(1) as f64;
    let top = certified.last().copied().unwrap_or(0.0).max(1.0).max(max_eps) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("certify plot: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("σ = {}", report.config.sigma), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..top, 0f64..1f64)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("L2 radius")
            .y_desc("accuracy")
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(step_curve(&certified, n, top), &BLUE))
            .map_err(|e| fail(&e))?
            .label("certified (lower bound)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if let Some(attacked) = attacked {
            chart
                .draw_series(LineSeries::new(step_curve(&attacked, n, top), &RED))
                .map_err(|e| fail(&e))?
                .label("under SmoothAdv (upper bound)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}
