//! The HTML page of `gibbon detect eval`: the metrics table, ROC curves and score histograms
//! (SVG from plotters).
use super::eval::EvalReport;
use anyhow::Result;
use gibbon::report::{HtmlReport, SummaryTable};
use plotters::prelude::*;

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn interval(x: [f64; 2]) -> String {
    format!("[{:.4}, {:.4}]", x[0], x[1])
}

pub(super) fn eval_page(report: &EvalReport) -> Result<HtmlReport> {
    let mut table = SummaryTable::new(
        [
            "set",
            "n",
            "AUROC (95% DeLong)",
            "TPR at threshold (95% CP)",
            "FPR at threshold, clean test",
            "FPR at 95% TPR (95% bootstrap)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    for s in &report.sets {
        let m = &s.metrics;
        table.push_row(vec![
            format!("{} {}", s.kind, s.spec),
            s.n.to_string(),
            format!("{:.4} {}", m.auroc, interval(m.auroc_ci95)),
            format!("{:.4} {}", m.tpr_at_threshold.rate, interval(m.tpr_at_threshold.ci95)),
            format!("{:.4} {}", m.fpr_at_threshold.rate, interval(m.fpr_at_threshold.ci95)),
            format!("{:.4} {}", m.fpr_at_95_tpr, interval(m.fpr_at_95_tpr_ci95)),
        ]);
    }
    let c = &report.calibration;
    let intro = format!(
        "Detector {} of model {} ({}). Threshold {:.6}: target false-positive rate {} calibrated on \
         n = {} clean samples ({} {} {}..{}), one-sided 95% upper bound on the true rate {:.4}. \
         Clean test data: {} {} {}..{}. Adversarial sets count only the examples the model \
         misclassifies. Command: {}",
        report.detector, report.model.path, report.model.sha256, c.threshold, c.fpr_target, c.n,
        report.calibration_data.spec, report.calibration_data.split, report.calibration_data.start,
        report.calibration_data.end, c.fpr_upper_bound,
        report.clean.spec, report.clean.split, report.clean.start,
        report.clean.end, report.command
    );
    Ok(HtmlReport::new(format!("gibbon detect eval: {}", report.detector))
        .intro(intro)
        .add_table("Detection metrics", table)
        .add_figure(
            "ROC curves",
            "True-positive rate (anomalous flagged) against false-positive rate (clean flagged).",
            &roc_svg(report)?,
        )
        .add_figure(
            "Score histograms",
            "Share of samples per score bin; the dashed line is the threshold.",
            &histogram_svg(report)?,
        ))
}

/// (FPR, TPR) at every distinct score used as threshold (flagged: score ≥ t).
fn roc_points(clean: &[f64], anomalous: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> =
        clean.iter().map(|&s| (s, false)).chain(anomalous.iter().map(|&s| (s, true))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (n, m) = (clean.len().max(1) as f64, anomalous.len().max(1) as f64);
    let (mut fp, mut tp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    for (i, (s, positive)) in all.iter().enumerate() {
        if *positive {
            tp += 1;
        } else {
            fp += 1;
        }
        if all.get(i + 1).is_none_or(|next| next.0 != *s) {
            points.push((fp as f64 / n, tp as f64 / m));
        }
    }
    points
}

fn fail(e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("detect plot: {e}")
}

fn roc_svg(report: &EvalReport) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("ROC: {}", report.detector), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, s) in report.sets.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(roc_points(&report.clean_scores, &s.scores), color))
                .map_err(|e| fail(&e))?
                .label(format!("{} {} (AUROC {:.3})", s.kind, s.spec, s.metrics.auroc))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(|e| fail(&e))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// Share of `scores` in each of `bins` equal bins over [lo, hi] (values outside go to the ends).
fn histogram(scores: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<(f64, f64)> {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &s in scores {
        let b = (((s - lo) / width).floor().max(0.0) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let n = scores.len().max(1) as f64;
    let mut steps = Vec::with_capacity(2 * bins);
    for (b, &c) in counts.iter().enumerate() {
        let left = lo + b as f64 * width;
        steps.push((left, c as f64 / n));
        steps.push((left + width, c as f64 / n));
    }
    steps
}

fn histogram_svg(report: &EvalReport) -> Result<String> {
    let mut all: Vec<f64> = report.clean_scores.clone();
    for s in &report.sets {
        all.extend(&s.scores);
    }
    all.sort_by(f64::total_cmp);
    // The range of the central 99% of all scores, so that one far outlier does not squash the rest.
    let q = |p: f64| all[((p * (all.len() - 1) as f64).round() as usize).min(all.len() - 1)];
    let (lo, mut hi) = (q(0.0), q(0.995));
    if hi <= lo {
        hi = lo + 1.0;
    }
    let bins = 40;
    let mut series = vec![("clean".to_string(), histogram(&report.clean_scores, lo, hi, bins))];
    for s in &report.sets {
        series.push((format!("{} {}", s.kind, s.spec), histogram(&s.scores, lo, hi, bins)));
    }
    let top =
        series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0, f64::max).max(1e-9) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{} scores", report.detector), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0f64..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("score (higher: more anomalous)")
            .y_desc("share of samples")
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (name, points)) in series.into_iter().enumerate() {
            let color = if i == 0 { BLACK } else { COLORS[(i - 1) % (COLORS.len() - 1)] };
            chart
                .draw_series(LineSeries::new(points, color))
                .map_err(|e| fail(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        let t = report.calibration.threshold.clamp(lo, hi);
        chart
            .draw_series(DashedLineSeries::new(vec![(t, 0.0), (t, top)], 5, 5, BLACK.into()))
            .map_err(|e| fail(&e))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}
