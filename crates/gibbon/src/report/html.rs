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

use super::html_assets::{CSS, SELF_CHECK_SCRIPT};
use super::html_table::render_table_body;
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

/// One piece of a named section ([`HtmlReport::add_section`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// A paragraph of plain text (blank lines separate paragraphs).
    Note(String),
    /// A table.
    Table(SummaryTable),
    /// Example cards (original / perturbation / adversarial).
    Examples(Vec<ExampleCard>),
    /// An SVG document (a plot drawn by `plotters`), inlined into the page.
    Svg(String),
    /// Original and adversarial texts with the changed spans highlighted.
    TextDiffs(Vec<TextDiff>),
    /// Preformatted text (a file, JSON) in a collapsed block with a one-line summary.
    Code {
        /// The line shown while the block is collapsed.
        summary: String,
        /// The text.
        text: String,
    },
}

/// A [`Part`] ready for the page (example pictures encoded).
#[derive(Debug, Clone)]
enum RenderedPart {
    Note(String),
    Table(SummaryTable),
    Examples(Vec<RenderedCard>),
    Svg(String),
    TextDiffs(Vec<TextDiff>),
    Code { summary: String, text: String },
}

/// One text before and after an attack, as spans (text, changed?).
#[derive(Debug, Clone, PartialEq)]
pub struct TextDiff {
    /// The line above the pair (index, predictions, queries).
    pub caption: String,
    /// The original's spans.
    pub original: Vec<(String, bool)>,
    /// The adversarial text's spans.
    pub adversarial: Vec<(String, bool)>,
}

/// `spans` escaped, the changed ones wrapped in `tag`.
fn diff_spans(spans: &[(String, bool)], tag: &str) -> String {
    spans
        .iter()
        .map(
            |(t, changed)| {
                if *changed {
                    format!("<{tag}>{}</{tag}>", escape(t))
                } else {
                    escape(t)
                }
            },
        )
        .collect()
}

#[derive(Debug, Clone)]
enum Section {
    Named { id: String, name: String, heading: String, parts: Vec<RenderedPart> },
    Table { heading: String, table: SummaryTable },
    Examples { heading: String, note: String, cards: Vec<RenderedCard> },
    Json { heading: String, json: String },
    Figure { heading: String, note: String, data_uri: String },
}

impl Section {
    fn heading(&self) -> &str {
        match self {
            Section::Named { heading, .. }
            | Section::Table { heading, .. }
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
    /// Whether the page carries [`SELF_CHECK_SCRIPT`].
    self_check: bool,
}

impl HtmlReport {
    /// An empty report with the given title.
    pub fn new(title: impl Into<String>) -> Self {
        HtmlReport {
            title: title.into(),
            intro: String::new(),
            sections: Vec::new(),
            self_check: false,
        }
    }

    /// Sets the introductory text (plain text; blank lines separate paragraphs).
    pub fn intro(mut self, text: impl Into<String>) -> Self {
        self.intro = text.into();
        self
    }

    /// Makes the page check itself when a browser loads it: a small inline script records
    /// script errors, `console.error` calls and pictures that fail to decode, and writes its
    /// verdict into the `data-check` attribute of `<body>` (`ok images=N svgs=M`, or
    /// `fail ...`), which a headless browser's DOM dump shows.
    pub fn self_check(mut self) -> Self {
        self.self_check = true;
        self
    }

    /// Adds a section made of parts, as `<section id="NAME" data-section="NAME">` (the id gets
    /// a `-2`, `-3` ... suffix when the name is already taken). Example pictures are encoded
    /// here; SVG parts are inlined as they are.
    pub fn add_section(mut self, name: &str, heading: impl Into<String>, parts: Vec<Part>) -> Self {
        let taken = |id: &str| {
            self.sections
                .iter()
                .any(|s| matches!(s, Section::Named { id: other, .. } if other == id))
        };
        let mut id = name.to_string();
        let mut k = 1;
        while taken(&id) {
            k += 1;
            id = format!("{name}-{k}");
        }
        let parts = parts
            .into_iter()
            .map(|p| match p {
                Part::Note(text) => RenderedPart::Note(text),
                Part::Table(table) => RenderedPart::Table(table),
                Part::Examples(cards) => {
                    RenderedPart::Examples(cards.into_iter().map(render_card).collect())
                }
                Part::Svg(svg) => RenderedPart::Svg(svg),
                Part::TextDiffs(d) => RenderedPart::TextDiffs(d),
                Part::Code { summary, text } => RenderedPart::Code { summary, text },
            })
            .collect();
        self.sections.push(Section::Named {
            id,
            name: name.to_string(),
            heading: heading.into(),
            parts,
        });
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
            let (heading, cards): (&str, Vec<&RenderedCard>) = match section {
                Section::Examples { heading, cards, .. } => (heading, cards.iter().collect()),
                Section::Named { heading, parts, .. } => (
                    heading,
                    parts
                        .iter()
                        .flat_map(|p| match p {
                            RenderedPart::Examples(cards) => cards.iter().collect(),
                            _ => Vec::new(),
                        })
                        .collect(),
                ),
                _ => continue,
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
        out.push_str("</style>\n");
        if self.self_check {
            let _ = writeln!(out, "<script>{SELF_CHECK_SCRIPT}</script>");
        }
        out.push_str("</head>\n<body>\n<main>\n<header class=\"page-head\">\n");
        let _ = writeln!(out, "<h1>{}</h1>", escape(&self.title));
        push_paragraphs(&mut out, &self.intro, "intro");
        if self.sections.len() > 1 {
            out.push_str("<nav class=\"toc\">");
            for (i, section) in self.sections.iter().enumerate() {
                let id = match section {
                    Section::Named { id, .. } => id.clone(),
                    _ => format!("section-{}", i + 1),
                };
                let _ = write!(out, "<a href=\"#{id}\">{}</a>", escape(section.heading()));
            }
            out.push_str("</nav>\n");
        }
        out.push_str("</header>\n");
        for (i, section) in self.sections.iter().enumerate() {
            let id = format!("section-{}", i + 1);
            match section {
                Section::Named { id, name, heading, parts } => {
                    render_named(&mut out, id, name, heading, parts)
                }
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
pub(super) fn escape(text: &str) -> String {
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

/// A section of parts ([`HtmlReport::add_section`]).
fn render_named(out: &mut String, id: &str, name: &str, heading: &str, parts: &[RenderedPart]) {
    let _ = writeln!(
        out,
        "<section id=\"{}\" data-section=\"{}\">\n<h2>{}</h2>",
        escape(id),
        escape(name),
        escape(heading)
    );
    for part in parts {
        match part {
            RenderedPart::Note(text) => push_paragraphs(out, text, "note"),
            RenderedPart::Table(table) => render_table_body(out, table),
            RenderedPart::Examples(cards) => render_cards(out, cards),
            RenderedPart::Svg(svg) => {
                // plotters escapes the text it draws; the document is inlined from its root.
                let start = svg.find("<svg").unwrap_or(0);
                let _ = writeln!(out, "<div class=\"plot\">{}</div>", &svg[start..]);
            }
            RenderedPart::TextDiffs(diffs) => {
                for d in diffs {
                    let _ = writeln!(
                        out,
                        "<div class=\"textdiff\"><p class=\"note\">{}</p><p>original: {}</p><p>adversarial: {}</p></div>",
                        escape(&d.caption),
                        diff_spans(&d.original, "del"),
                        diff_spans(&d.adversarial, "mark")
                    );
                }
            }
            RenderedPart::Code { summary, text } => {
                let _ = write!(
                    out,
                    "<details class=\"json\">\n<summary>{}</summary>\n<pre>{}</pre>\n</details>\n",
                    escape(summary),
                    escape(text)
                );
            }
        }
    }
    out.push_str("</section>\n");
}

fn render_table(out: &mut String, id: &str, heading: &str, table: &SummaryTable) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{}</h2>", escape(heading));
    render_table_body(out, table);
    out.push_str("</section>\n");
}

fn render_examples(out: &mut String, id: &str, heading: &str, note: &str, cards: &[RenderedCard]) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{}</h2>", escape(heading));
    push_paragraphs(out, note, "note");
    render_cards(out, cards);
    out.push_str("</section>\n");
}

fn render_cards(out: &mut String, cards: &[RenderedCard]) {
    if cards.is_empty() {
        out.push_str("<p class=\"empty\">No examples.</p>\n");
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
    out.push_str("</div>\n");
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
