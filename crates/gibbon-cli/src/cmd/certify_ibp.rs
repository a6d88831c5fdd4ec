//! `gibbon certify --ibp`: interval bound propagation (Gowal et al. 2018) on a builtin
//! architecture: each sample's verified L∞ radius (deterministic: no point within it changes the
//! model's answer), and the certified accuracy at the `--radii`, as JSON and an HTML page. A
//! sample whose radius is below ε is unknown at ε, not broken: `gibbon eval` at the same ε gives
//! the upper bound to set beside it.
use super::certify::{check_radii, step_curve};
use super::write_json;
use crate::args::CertifyArgs;
use crate::resolve::{load_data, progress, set_threads, usage};
use anyhow::Result;
use gibbon::certify::{
    interval_certified_accuracy, IntervalCertificate, IntervalNetwork, IBP_BISECTION_STEPS,
    IBP_MARGIN_TOLERANCE,
};
use gibbon::model::{load_builtin_model, Classifier, ModelInfo};
use gibbon::threat::InputBox;
use serde::Serialize;
use std::time::Instant;
use tch::Device;

/// The certified-accuracy curve's default L∞ radii.
const IBP_RADII: [f64; 7] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3];
/// Samples bounded per call (each call bisects all of them at once).
const SAMPLES_PER_CALL: usize = 256;

/// One sample's record.
#[derive(Debug, Serialize)]
struct SampleInterval {
    index: usize,
    label: i64,
    #[serde(flatten)]
    certificate: IntervalCertificate,
    correct: bool,
}

/// The JSON of `gibbon certify --ibp`.
#[derive(Serialize)]
struct IntervalReport {
    gibbon_version: &'static str,
    command: String,
    model: ModelInfo,
    data: String,
    split: String,
    method: &'static str,
    norm: &'static str,
    bounds: InputBox,
    max_eps: f64,
    bisection_steps: usize,
    margin_tolerance: f64,
    n: usize,
    clean_accuracy: f64,
    /// `[radius, certified accuracy]` pairs: the share of samples answered correctly with a
    /// verified L∞ radius of at least `radius`.
    certified_accuracy: Vec<(f64, f64)>,
    /// Median verified radius over the correctly answered samples.
    median_radius: Option<f64>,
    seconds: f64,
    per_sample: Vec<SampleInterval>,
}

/// Bounds the first `--n` samples and writes the report.
pub fn run(args: CertifyArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let m = &args.model;
    if m.normalize.is_some() || m.defense.is_some() || m.eot.is_some() || m.bpda.is_some() {
        return Err(usage(
            "--ibp bounds the bare network: --normalize, --defense, --eot and --bpda do not apply",
        ));
    }
    let radii = args.radii.clone().unwrap_or_else(|| IBP_RADII.to_vec());
    check_radii(&radii)?;
    let bounds = InputBox::default();
    let max_eps = args.max_eps.unwrap_or(bounds.hi - bounds.lo);
    if !(max_eps.is_finite() && max_eps > 0.0) {
        return Err(usage(format!("--max-eps: {max_eps} is not a finite radius > 0")));
    }
    let data = load_data(&args.data)?;
    let classes = data.num_classes().max(2) as i64;
    let model = load_builtin_model(&m.model, m.arch, &data.sample_shape(), classes, m.device.0)?;
    let network = IntervalNetwork::from_builtin(&model)?;
    let t0 = Instant::now();
    let bar = gibbon::progress::Progress::new(progress(quiet), data.len() as u64, "ibp", "samples");
    let mut per_sample = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(SAMPLES_PER_CALL) {
        let idx: Vec<usize> = (start..data.len().min(start + SAMPLES_PER_CALL)).collect();
        let x = data.try_batch(&idx, Device::Cpu)?.to_device(model.device());
        let labels = Vec::<i64>::try_from(&data.try_labels_of(&idx, Device::Cpu)?)?;
        let answers = model.predict(&x)?;
        let certs = network.certify(&x, &answers, (bounds.lo, bounds.hi), max_eps)?;
        bar.inc(idx.len() as u64);
        for ((index, label), certificate) in idx.into_iter().zip(labels).zip(certs) {
            let correct = certificate.class == label;
            per_sample.push(SampleInterval { index, label, certificate, correct });
        }
    }
    bar.finish();
    let report = report(&args, &model, bounds, max_eps, &radii, per_sample, t0);
    if !quiet {
        summary(&report);
    }
    if let Some(path) = &args.html {
        page(&report)?.write(path)?;
    }
    match &args.out {
        Some(out) => write_json(out, &report)?,
        None => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

fn report(
    args: &CertifyArgs,
    model: &dyn Classifier,
    bounds: InputBox,
    max_eps: f64,
    radii: &[f64],
    per_sample: Vec<SampleInterval>,
    t0: Instant,
) -> IntervalReport {
    let records: Vec<(IntervalCertificate, i64)> =
        per_sample.iter().map(|s| (s.certificate, s.label)).collect();
    let mut correct: Vec<f64> =
        per_sample.iter().filter(|s| s.correct).filter_map(|s| s.certificate.radius).collect();
    correct.sort_by(f64::total_cmp);
    IntervalReport {
        gibbon_version: gibbon::VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: model.info().clone(),
        data: args.data.data.to_string(),
        split: args.data.split.to_string(),
        method: "interval-bound-propagation",
        norm: "linf",
        bounds,
        max_eps,
        bisection_steps: IBP_BISECTION_STEPS,
        margin_tolerance: IBP_MARGIN_TOLERANCE,
        n: per_sample.len(),
        clean_accuracy: per_sample.iter().filter(|s| s.correct).count() as f64
            / per_sample.len().max(1) as f64,
        certified_accuracy: interval_certified_accuracy(&records, radii),
        median_radius: correct.get(correct.len() / 2).copied(),
        seconds: t0.elapsed().as_secs_f64(),
        per_sample,
    }
}

fn summary(report: &IntervalReport) {
    eprintln!(
        "IBP certified accuracy (L∞, {} samples, clean {:.4}):",
        report.n, report.clean_accuracy
    );
    for (r, a) in &report.certified_accuracy {
        eprintln!("  radius {r:>6.3}: {a:.4}");
    }
    if let Some(m) = report.median_radius {
        eprintln!("median verified radius of the correct samples: {m:.5}");
    }
}

/// The page: the method, the certified-accuracy table and its step curve.
fn page(report: &IntervalReport) -> Result<gibbon::report::HtmlReport> {
    use gibbon::report::{HtmlReport, SummaryTable};
    let mut table = SummaryTable::new(vec![
        "L∞ radius".to_string(),
        "certified accuracy (verified, lower bound)".to_string(),
    ]);
    for (r, a) in &report.certified_accuracy {
        table.push_row(vec![format!("{r}"), format!("{a:.4}")]);
    }
    let mut radii: Vec<f64> = report
        .per_sample
        .iter()
        .filter(|s| s.correct)
        .filter_map(|s| s.certificate.radius)
        .collect();
    radii.sort_by(f64::total_cmp);
    let points = step_curve(&radii, report.n.max(1) as f64, report.max_eps);
    let svg = gibbon::report::plot::step_curve(&points, "L∞ radius", "certified accuracy")?;
    let intro = format!(
        "Interval bound propagation (Gowal et al. 2018; the box domain of Mirman, Gehr & Vechev \
         2018) of {} on {} samples of {}, in float64: each sample's radius is the largest L∞ ε \
         (bisection, {} steps on [0, {}], inputs kept in [{}, {}]) at which every margin of the \
         model's answer has a lower bound above {:e}, so no input within it changes the answer. \
         Below its radius a sample is verified; above it, unknown (not broken). Clean accuracy \
         {:.4}. Command: {}",
        report.model.path,
        report.n,
        report.data,
        report.bisection_steps,
        report.max_eps,
        report.bounds.lo,
        report.bounds.hi,
        report.margin_tolerance,
        report.clean_accuracy,
        report.command
    );
    Ok(HtmlReport::new(format!("gibbon certify --ibp: {}", report.model.path))
        .intro(intro)
        .add_table("Certified accuracy", table)
        .add_figure("Certified accuracy against the L∞ radius", "", &svg))
}
