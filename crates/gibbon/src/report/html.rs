//! A self-contained HTML report: one file, no external assets, every picture embedded as a
//! base64 PNG data URI and every piece of text HTML-escaped.
//!
//! ```no_run
//! # fn main() -> gibbon::error::Result<()> {
//! use gibbon::report::{HtmlReport, SummaryTable};
//!
//! let mut table = SummaryTable::new(vec!["attack".into(), "robust accuracy".into()]);
//! table.push_row(vec!["FGSM ε=0.3".into(), "12.5%".into()]);
//! let report = HtmlReport::new("MNIST robustness").intro("A small CNN.").add_table("Results", table);
//! report.write("report.html")?;
//! # Ok(())
//! # }
//! ```
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::png_image::{auto_amplification, encode_png, perturbation_image, ImageData};
use crate::error::{GibbonError, Result};

/// Pictures are upscaled (nearest neighbour, integer factor) until their longer side reaches at
/// least this many pixels, so small inputs such as 28×28 digits stay crisp in any viewer.
const UPSCALE_TARGET: usize = 112;

/// One adversarial example, shown as three pictures: the original, the amplified perturbation
/// and the adversarial input, with the model's answers underneath.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleCard {
    /// Index of the example in its dataset.
    pub index: usize,
    /// The true label, as text (a class name or number).
    pub label: String,
    /// The clean input.
    pub original: ImageData,
    /// The adversarial input; must have the original's shape.
    pub adversarial: ImageData,
    /// The model's answer on the clean input.
    pub clean_prediction: String,
    /// The model's confidence in `clean_prediction`, a probability in `[0, 1]`.
    pub clean_confidence: f32,
    /// The model's answer on the adversarial input.
    pub adversarial_prediction: String,
    /// The model's confidence in `adversarial_prediction`, a probability in `[0, 1]`.
    pub adversarial_confidence: f32,
    /// Size of the perturbation as text, e.g. `"L∞ 0.300"`.
    pub norm_text: String,
    /// Whether the attack succeeded (the adversarial prediction differs from the label):
    /// drawn in red when true, green when the model held.
    pub broken: bool,
}

/// A plain table of text cells. Cells that look numeric (`12`, `0.931`, `87.5%`) are
/// right-aligned in a tabular font. Rows shorter than `columns` are padded with empty cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryTable {
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells, normally one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl SummaryTable {
    /// An empty table with the given column headers.
    pub fn new(columns: Vec<String>) -> Self {
        SummaryTable { columns, rows: Vec::new() }
    }

    /// Appends a row of cells.
    pub fn push_row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
}

/// A picture ready for the page: a data URI, or the reason it could not be made.
#[derive(Debug, Clone)]
struct Picture {
    src: std::result::Result<String, String>,
    width: usize,
    height: usize,
}

/// An [`ExampleCard`] with its pictures already encoded.
#[derive(Debug, Clone)]
struct RenderedCard {
    index: usize,
    label: String,
    original: Picture,
    perturbation: Picture,
    adversarial: Picture,
    /// `None` when the perturbation is zero everywhere.
    amplification: Option<f32>,
    clean_prediction: String,
    clean_confidence: f32,
    adversarial_prediction: String,
    adversarial_confidence: f32,
    norm_text: String,
    broken: bool,
}

#[derive(Debug, Clone)]
enum Section {
    Table { heading: String, table: SummaryTable },
    Examples { heading: String, note: String, cards: Vec<RenderedCard> },
    Json { heading: String, json: String },
    Figure { heading: String, note: String, data_uri: String },
}

impl Section {
    fn heading(&self) -> &str {
        match self {
            Section::Table { heading, .. }
            | Section::Examples { heading, .. }
            | Section::Json { heading, .. }
            | Section::Figure { heading, .. } => heading,
        }
    }
}

/// A self-contained HTML report built section by section.
///
/// Builder methods take and return the report, so calls chain; in a loop, reassign
/// (`report = report.add_table(..)`). Pictures are encoded when examples are added. An
/// example whose images are invalid does not abort the report: [`HtmlReport::render`] shows
/// the problem in place of the picture, and [`HtmlReport::write`] refuses to write the file
/// (see [`HtmlReport::validate`]).
#[derive(Debug, Clone)]
pub struct HtmlReport {
    /// The page title, shown as the main heading and in the browser tab.
    pub title: String,
    /// Introductory text under the title; blank lines separate paragraphs.
    pub intro: String,
    sections: Vec<Section>,
}

impl HtmlReport {
    /// An empty report with the given title.
    pub fn new(title: impl Into<String>) -> Self {
        HtmlReport { title: title.into(), intro: String::new(), sections: Vec::new() }
    }

    /// Sets the introductory text (plain text; blank lines separate paragraphs).
    pub fn intro(mut self, text: impl Into<String>) -> Self {
        self.intro = text.into();
        self
    }

    /// Adds a section holding a table.
    pub fn add_table(mut self, heading: impl Into<String>, table: SummaryTable) -> Self {
        self.sections.push(Section::Table { heading: heading.into(), table });
        self
    }

    /// Adds a section of example cards, with an explanatory `note` (plain text, may be empty)
    /// above them. Each card's perturbation is amplified by [`auto_amplification`].
    pub fn add_examples(
        mut self,
        heading: impl Into<String>,
        note: impl Into<String>,
        cards: Vec<ExampleCard>,
    ) -> Self {
        let cards = cards.into_iter().map(render_card).collect();
        self.sections.push(Section::Examples { heading: heading.into(), note: note.into(), cards });
        self
    }

    /// Adds a section showing an SVG picture (a plot), embedded as a data URI so that its
    /// markup never mixes with the page's, with a `note` (plain text, may be empty) above it.
    pub fn add_figure(
        mut self,
        heading: impl Into<String>,
        note: impl Into<String>,
        svg: &str,
    ) -> Self {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(svg.as_bytes());
        let data_uri = format!("data:image/svg+xml;base64,{data}");
        self.sections.push(Section::Figure {
            heading: heading.into(),
            note: note.into(),
            data_uri,
        });
        self
    }

    /// Adds a collapsible section showing `value` as pretty-printed JSON.
    pub fn add_json(mut self, heading: impl Into<String>, value: &serde_json::Value) -> Self {
        let json = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        self.sections.push(Section::Json { heading: heading.into(), json });
        self
    }

    /// The first problem with the report's pictures, if any (an example whose images are
    /// invalid or differ in shape).
    pub fn validate(&self) -> Result<()> {
        for section in &self.sections {
            let Section::Examples { heading, cards, .. } = section else {
                continue;
            };
            for card in cards {
                for (what, picture) in [
                    ("original", &card.original),
                    ("perturbation", &card.perturbation),
                    ("adversarial", &card.adversarial),
                ] {
                    if let Err(message) = &picture.src {
                        return Err(GibbonError::invalid(
                            format!("{what} image of example {} in \"{heading}\"", card.index),
                            message.clone(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The complete HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title));
        out.push_str("<style>\n");
        out.push_str(CSS);
        out.push_str("</style>\n</head>\n<body>\n<main>\n<header class=\"page-head\">\n");
        let _ = writeln!(out, "<h1>{}</h1>", escape(&self.title));
        push_paragraphs(&mut out, &self.intro, "intro");
        if self.sections.len() > 1 {
            out.push_str("<nav class=\"toc\">");
            for (i, section) in self.sections.iter().enumerate() {
                let _ =
                    write!(out, "<a href=\"#section-{}\">{}</a>", i + 1, escape(section.heading()));
            }
            out.push_str("</nav>\n");
        }
        out.push_str("</header>\n");
        for (i, section) in self.sections.iter().enumerate() {
            let id = format!("section-{}", i + 1);
            match section {
                Section::Table { heading, table } => render_table(&mut out, &id, heading, table),
                Section::Examples { heading, note, cards } => {
                    render_examples(&mut out, &id, heading, note, cards)
                }
                Section::Figure { heading, note, data_uri } => {
                    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{}</h2>", escape(heading));
                    push_paragraphs(&mut out, note, "note");
                    let _ = writeln!(
                        out,
                        "<img class=\"figure\" alt=\"{}\" src=\"{data_uri}\">\n</section>",
                        escape(heading)
                    );
                }
                Section::Json { heading, json } => {
                    let _ = write!(
                        out,
                        "<section id=\"{id}\">\n<details class=\"json\">\n<summary>{}</summary>\n\
                         <pre>{}</pre>\n</details>\n</section>\n",
                        escape(heading),
                        escape(json)
                    );
                }
            }
        }
        let _ = write!(
            out,
            "<footer>Generated by gibbon {}</footer>\n</main>\n</body>\n</html>\n",
            escape(env!("CARGO_PKG_VERSION"))
        );
        out
    }

    /// Checks the report with [`HtmlReport::validate`], then writes [`HtmlReport::render`]'s
    /// output to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        self.validate()?;
        let path = path.as_ref();
        std::fs::write(path, self.render()).map_err(|e| GibbonError::io(path, e))
    }
}

/// Escapes text for use in HTML element content and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Appends `text` as paragraphs (split on blank lines) with the given class.
fn push_paragraphs(out: &mut String, text: &str, class: &str) {
    let normalized = text.replace("\r\n", "\n");
    for paragraph in normalized.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "<p class=\"{class}\">{}</p>", escape(paragraph));
    }
}

/// Integer factor that brings the longer side of an image to at least [`UPSCALE_TARGET`].
fn upscale_factor(image: &ImageData) -> usize {
    let longest = image.height.max(image.width).max(1);
    UPSCALE_TARGET.div_ceil(longest).max(1)
}

/// Upscales and encodes an image as a PNG data URI.
fn picture(image: Result<ImageData>) -> Picture {
    let encoded = image.and_then(|image| {
        let big = image.upscale(upscale_factor(&image))?;
        let png = encode_png(&big)?;
        Ok((big.width, big.height, png))
    });
    match encoded {
        Ok((width, height, png)) => Picture {
            src: Ok(format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(png)
            )),
            width,
            height,
        },
        Err(e) => Picture { src: Err(e.to_string()), width: 0, height: 0 },
    }
}

fn render_card(card: ExampleCard) -> RenderedCard {
    let amplify = auto_amplification(&card.original, &card.adversarial);
    let zero = card.original.pixels == card.adversarial.pixels;
    let perturbation = picture(perturbation_image(&card.original, &card.adversarial, amplify));
    RenderedCard {
        index: card.index,
        original: picture(Ok(card.original)),
        adversarial: picture(Ok(card.adversarial)),
        perturbation,
        amplification: (!zero).then_some(amplify),
        label: card.label,
        clean_prediction: card.clean_prediction,
        clean_confidence: card.clean_confidence,
        adversarial_prediction: card.adversarial_prediction,
        adversarial_confidence: card.adversarial_confidence,
        norm_text: card.norm_text,
        broken: card.broken,
    }
}

/// A probability as a percentage with one decimal, or "n/a" when it is not finite.
fn percent(p: f32) -> String {
    if p.is_finite() {
        format!("{:.1}%", p * 100.0)
    } else {
        "n/a".to_string()
    }
}

/// An amplification factor for a caption: one decimal below 10, whole numbers above.
fn amplification_text(amplify: f32) -> String {
    if amplify < 9.95 {
        let text = format!("{amplify:.1}");
        text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
    } else {
        format!("{amplify:.0}")
    }
}

fn looks_numeric(cell: &str) -> bool {
    let cell = cell.trim();
    let cell = cell.strip_suffix('%').unwrap_or(cell).trim_end();
    !cell.is_empty() && cell.parse::<f64>().is_ok()
}

/// Placeholders that may stand in a numeric column without making it text.
fn is_placeholder(cell: &str) -> bool {
    matches!(cell.trim(), "" | "-" | "–" | "—" | "n/a" | "N/A" | "NaN")
}

/// Whether column `i` holds numbers: at least one numeric cell and nothing but numbers and
/// placeholders.
fn numeric_column(table: &SummaryTable, i: usize) -> bool {
    let cells = || table.rows.iter().filter_map(|row| row.get(i));
    cells().any(|c| looks_numeric(c)) && cells().all(|c| looks_numeric(c) || is_placeholder(c))
}

fn render_table(out: &mut String, id: &str, heading: &str, table: &SummaryTable) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{}</h2>", escape(heading));
    if table.columns.is_empty() && table.rows.is_empty() {
        out.push_str("<p class=\"empty\">No data.</p>\n</section>\n");
        return;
    }
    let width = table.rows.iter().map(Vec::len).fold(table.columns.len(), usize::max);
    let numeric: Vec<bool> = (0..width).map(|i| numeric_column(table, i)).collect();
    let class = |i: usize| {
        if numeric.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        }
    };
    out.push_str("<div class=\"table-wrap\"><table>\n");
    if !table.columns.is_empty() {
        out.push_str("<thead><tr>");
        for (i, column) in table.columns.iter().enumerate() {
            let _ = write!(out, "<th{}>{}</th>", class(i), escape(column));
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(i), escape(cell));
        }
        for _ in row.len()..table.columns.len() {
            out.push_str("<td></td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn render_examples(out: &mut String, id: &str, heading: &str, note: &str, cards: &[RenderedCard]) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{}</h2>", escape(heading));
    push_paragraphs(out, note, "note");
    if cards.is_empty() {
        out.push_str("<p class=\"empty\">No examples.</p>\n</section>\n");
        return;
    }
    let broken = cards.iter().filter(|c| c.broken).count();
    let _ = writeln!(
        out,
        "<p class=\"tally\"><span class=\"bad\">{broken} broken</span> · \
         <span class=\"good\">{} held</span> · {} shown. \
         Middle picture: grey = unchanged, lighter = pixel raised, darker = pixel lowered.</p>",
        cards.len() - broken,
        cards.len()
    );
    out.push_str("<div class=\"cards\">\n");
    for card in cards {
        render_card_html(out, card);
    }
    out.push_str("</div>\n</section>\n");
}

fn render_picture(out: &mut String, picture: &Picture, alt: &str) {
    match &picture.src {
        Ok(src) => {
            let _ = write!(
                out,
                "<img src=\"{src}\" width=\"{}\" height=\"{}\" alt=\"{}\">",
                picture.width,
                picture.height,
                escape(alt)
            );
        }
        Err(message) => {
            let _ = write!(out, "<div class=\"missing\">{}</div>", escape(message));
        }
    }
}

fn render_card_html(out: &mut String, card: &RenderedCard) {
    let (status_class, status_text) =
        if card.broken { ("bad", "broken") } else { ("good", "held") };
    let _ = write!(
        out,
        "<article class=\"card {status_class}\">\n<header><span class=\"idx\">example #{}</span>\
         <span class=\"badge {status_class}\">{status_text}</span></header>\n\
         <div class=\"triptych\">\n<figure>",
        card.index
    );
    render_picture(out, &card.original, &format!("original, label {}", card.label));
    let _ = write!(
        out,
        "<figcaption><span class=\"role\">original · label <b>{}</b></span>\
         <span class=\"answer\"><span class=\"who\">model</span> {} <span class=\"conf\">{}</span></span></figcaption>\
         </figure>\n<div class=\"op\">+</div>\n<figure>",
        escape(&card.label),
        escape(&card.clean_prediction),
        percent(card.clean_confidence)
    );
    render_picture(out, &card.perturbation, "perturbation, amplified");
    let amplification = match card.amplification {
        Some(a) => format!("×{} amplified", amplification_text(a)),
        None => "no change".to_string(),
    };
    let _ = write!(
        out,
        "<figcaption><span class=\"role\">{}</span>\
         <span class=\"answer norm\">{}</span></figcaption></figure>\n\
         <div class=\"op\">=</div>\n<figure>",
        escape(&amplification),
        escape(&card.norm_text)
    );
    render_picture(out, &card.adversarial, "adversarial");
    let _ = write!(
        out,
        "<figcaption><span class=\"role\">adversarial</span>\
         <span class=\"answer {status_class}\"><span class=\"who\">model</span> {} <span class=\"conf\">{}</span></span>\
         </figcaption></figure>\n</div>\n</article>\n",
        escape(&card.adversarial_prediction),
        percent(card.adversarial_confidence)
    );
}

const CSS: &str = r#":root {
  --bg: #f5f6f8; --panel: #ffffff; --text: #1d2330; --muted: #5f6b7a; --line: #e2e5ea;
  --bad: #c62828; --bad-bg: #fdecea; --good: #2e7d32; --good-bg: #e8f5e9; --accent: #3056d3;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 28px; margin: 0 0 8px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
p { margin: 6px 0 10px; max-width: 78ch; }
.intro { color: var(--muted); font-size: 16px; }
.note, .tally { color: var(--muted); }
.tally { max-width: none; }
.tally .bad { color: var(--bad); font-weight: 600; }
.tally .good { color: var(--good); font-weight: 600; }
.empty { color: var(--muted); font-style: italic; }
.toc { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-top: 14px; font-size: 14px; }
.toc a { color: var(--accent); text-decoration: none; }
.toc a:hover { text-decoration: underline; }
.table-wrap { display: inline-block; max-width: 100%; overflow-x: auto; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 8px 18px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #eef0f4; font-weight: 600; color: #384252; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:last-child td { border-bottom: none; }
th.num { text-align: right; }
td.num { text-align: right; font-family: var(--mono); font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px; }
@media (max-width: 520px) { .cards { grid-template-columns: 1fr; } }
.card {
  background: var(--panel); border: 1px solid var(--line); border-top: 4px solid var(--muted);
  border-radius: 8px; padding: 12px 16px 14px; box-shadow: 0 1px 2px rgba(20, 30, 50, 0.06);
}
.card.bad { border-top-color: var(--bad); }
.card.good { border-top-color: var(--good); }
.card header { display: flex; align-items: center; gap: 12px; margin-bottom: 10px; font-size: 14px; }
.card .idx { font-family: var(--mono); color: var(--muted); }
figcaption .role b { font-family: var(--mono); color: var(--text); }
.badge {
  margin-left: auto; padding: 1px 10px; border-radius: 999px; font-size: 12px; font-weight: 600;
  text-transform: uppercase; letter-spacing: 0.04em;
}
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.good { color: var(--good); background: var(--good-bg); }
.triptych { display: grid; grid-template-columns: minmax(0, 1fr) auto minmax(0, 1fr) auto minmax(0, 1fr); align-items: start; gap: 8px; }
.op { align-self: center; margin-top: -44px; font-size: 22px; color: var(--muted); font-weight: 300; }
figure { margin: 0; text-align: center; min-width: 0; }
figure img {
  display: block; width: 100%; height: auto; border-radius: 4px; border: 1px solid var(--line);
  image-rendering: pixelated; background: #000;
}
figcaption { display: flex; flex-direction: column; margin-top: 6px; font-size: 13px; line-height: 1.35; }
figcaption .role { color: var(--muted); font-size: 12px; }
figcaption .answer { font-family: var(--mono); font-weight: 600; font-size: 14px; overflow-wrap: anywhere; }
figcaption .answer.norm { font-weight: 500; }
figcaption .answer.bad { color: var(--bad); }
figcaption .answer.good { color: var(--good); }
figcaption .who { font: 400 12px system-ui, sans-serif; color: var(--muted); margin-right: 2px; }
figcaption .conf { font-weight: 400; color: var(--muted); }
figcaption .answer.bad .conf, figcaption .answer.good .conf { color: inherit; opacity: 0.8; }
.missing {
  display: flex; align-items: center; justify-content: center; aspect-ratio: 1; padding: 6px;
  border: 1px dashed var(--bad); border-radius: 4px; color: var(--bad); font-size: 11px; overflow-wrap: anywhere;
}
details.json { margin-top: 28px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; }
details.json summary { cursor: pointer; padding: 10px 14px; font-weight: 600; }
details.json pre {
  margin: 0; padding: 12px 14px; border-top: 1px solid var(--line); max-height: 480px; overflow: auto;
  font: 12.5px/1.45 var(--mono); background: #fafbfc;
}
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"#;
