//! The report's plots, drawn as SVG documents by `plotters` (no hand-written SVG): a line with
//! an interval band, a histogram, a heat map and a step curve. Each returns the SVG text,
//! which [`super::html::Part::Svg`] inlines into the page.
use crate::error::{GibbonError, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

const SIZE: (u32, u32) = (720, 420);
const BAND: RGBColor = RGBColor(48, 86, 211);

fn plot_error(e: impl std::fmt::Display) -> GibbonError {
    GibbonError::invalid("plot", e.to_string())
}

/// A closed range `lo..hi` that is never empty, padded by 5% on each side.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
    let pad = (hi - lo) * 0.05;
    (lo - pad)..(hi + pad)
}

/// A chart on `root` with both axes described: the frame every plot here shares.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn framed<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(root)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x, y)
        .map_err(plot_error)?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_error)?;
    Ok(chart)
}

/// The legend of every labelled series, in the chart's corner.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_error)
}

/// One point of a curve with its interval: `(x, y, y_low, y_high)`.
pub type BandPoint = (f64, f64, f64, f64);

/// `y` against `x` as a line with markers over the shaded band `[y_low, y_high]` (e.g. robust
/// accuracy against ε with its 95% interval); the y axis spans `[0, 1]`.
pub fn line_with_band(points: &[BandPoint], x_desc: &str, y_desc: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let mut chart = framed(&root, padded(lo, hi), 0f64..1.02f64, x_desc, y_desc)?;
        let mut band: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.3)).collect();
        band.extend(points.iter().rev().map(|p| (p.0, p.2)));
        chart
            .draw_series(std::iter::once(Polygon::new(band, BAND.mix(0.18).filled())))
            .map_err(plot_error)?
            .label("95% interval")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], BAND.mix(0.18).filled())
            });
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), BAND.stroke_width(2)))
            .map_err(plot_error)?
            .label(y_desc)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BAND.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new((p.0, p.1), 4, BAND.filled())))
            .map_err(plot_error)?;
        legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A histogram of `values` (finite ones) in `bins` equal bins; `marker` draws a vertical line
/// (e.g. at ε) when given.
pub fn histogram(values: &[f64], bins: usize, x_desc: &str, marker: Option<f64>) -> Result<String> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let mut hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if let Some(m) = marker {
        hi = hi.max(m);
    }
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        hi = lo + 1.0;
    }
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in &finite {
        let k = (((v - lo) / width) as usize).min(bins - 1);
        counts[k] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = framed(&root, lo..hi, 0f64..top, x_desc, "samples")?;
        chart
            .draw_series(counts.iter().enumerate().map(|(k, &c)| {
                let x0 = lo + k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BAND.mix(0.6).filled())
            }))
            .map_err(plot_error)?;
        if let Some(m) = marker {
            chart
                .draw_series(LineSeries::new([(m, 0.0), (m, top)], RED.stroke_width(2)))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A heat map: one cell per (row, column), coloured by its value in `[0, 1]` (white to dark
/// red) and labelled with it; `None` cells are grey and labelled "n/a".
pub fn heat_map(rows: &[String], columns: &[String], cells: &[Vec<Option<f64>>]) -> Result<String> {
    let (nr, nc) = (rows.len().max(1), columns.len().max(1));
    let cell = 110u32;
    let size = (200 + cell * nc as u32, 90 + 70 * nr as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(180)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(plot_error)?;
        let row_label = |y: &f64| {
            let k = nr - 1 - (y.floor() as usize).min(nr - 1);
            rows.get(k).cloned().unwrap_or_default()
        };
        let column_label = |x: &f64| columns.get(x.floor() as usize).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc * 2 + 1)
            .y_labels(nr * 2 + 1)
            .x_label_formatter(&|x| if x.fract() == 0.5 { column_label(x) } else { String::new() })
            .y_label_formatter(&|y| if y.fract() == 0.5 { row_label(y) } else { String::new() })
            .x_desc("target (queried)")
            .y_desc("surrogate (crafted on)")
            .draw()
            .map_err(plot_error)?;
        for (r, row) in cells.iter().enumerate() {
            let y0 = (nr - 1 - r) as f64;
            for (c, value) in row.iter().enumerate() {
                let x0 = c as f64;
                let fill = match value {
                    Some(v) => {
                        let v = v.clamp(0.0, 1.0);
                        RGBColor(
                            255,
                            (255.0 * (1.0 - 0.8 * v)) as u8,
                            (255.0 * (1.0 - 0.85 * v)) as u8,
                        )
                    }
                    None => RGBColor(220, 220, 220),
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(plot_error)?;
                let text = value.map_or("n/a".to_string(), |v| format!("{v:.3}"));
                let ink = if value.unwrap_or(0.0) > 0.6 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (x0 + 0.35, y0 + 0.55),
                        ("sans-serif", 16).into_font().color(&ink),
                    )))
                    .map_err(plot_error)?;
            }
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The corners of the step curve "share of `n` samples whose value is at least r" for the
/// values `sorted` (ascending), e.g. certified radii: `(0, k/n)`, then a drop at each value.
pub fn share_at_least(sorted: &[f64], n: f64) -> Vec<(f64, f64)> {
    let k = sorted.len();
    let mut points = vec![(0.0, k as f64 / n)];
    for (i, r) in sorted.iter().enumerate() {
        points.push((*r, (k - i) as f64 / n));
        points.push((*r, (k - i - 1) as f64 / n));
    }
    points
}

/// A decreasing step curve through `points` (`(x, y)` with `y` in `[0, 1]`), e.g. certified
/// accuracy against the radius.
pub fn step_curve(points: &[(f64, f64)], x_desc: &str, y_desc: &str) -> Result<String> {
    let top = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = framed(&root, 0f64..top * 1.05, 0f64..1.02f64, x_desc, y_desc)?;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), BAND.stroke_width(2)))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A named set of `(x, y)` points for [`scatter_with_diagonal`].
pub type PointSeries<'a> = (&'a str, Vec<(f64, f64)>);

/// Points against the diagonal `y = x` (e.g. the smallest adversarial perturbation found against
/// a certified radius: a point below the diagonal contradicts its certificate), one colour per
/// series, both axes from 0.
pub fn scatter_with_diagonal(series: &[PointSeries], x_desc: &str, y_desc: &str) -> Result<String> {
    const COLOURS: [RGBColor; 3] = [BAND, RGBColor(214, 96, 32), RGBColor(40, 150, 80)];
    let all = series.iter().flat_map(|s| s.1.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let top = all.fold(0.0f64, |m, p| m.max(p.0).max(p.1)).max(1e-9) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = framed(&root, 0f64..top, 0f64..top, x_desc, y_desc)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (top, top)], BLACK.mix(0.4).stroke_width(1)))
            .map_err(plot_error)?
            .label("y = x")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
        for (k, (name, points)) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let finite = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite());
            chart
                .draw_series(finite.map(|p| Circle::new(*p, 3, colour.mix(0.7).filled())))
                .map_err(plot_error)?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
        }
        legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}
