//! Human-readable reports of attack results.
//!
//! - [`png_image`]: small CHW images ([`ImageData`]), their 8-bit PNG encoding, and the
//!   visualisation of a perturbation as a grey-centred picture ([`perturbation_image`],
//!   [`auto_amplification`]).
//! - [`html`]: a self-contained HTML page ([`HtmlReport`]) with summary tables, example cards
//!   showing original → perturbation → adversarial side by side, and raw JSON, all in one
//!   file with the pictures embedded as data URIs.
//! - [`examples`]: the adversarial examples of an evaluation as `adversarial.npy`,
//!   `labels.npy` and PNG triptychs ([`write_examples`]).
//! - [`sections`]: the report's sections, one file each, rendered from any result JSON
//!   ([`sections::report_page`]; `gibbon report`); [`plot`] draws their plots with `plotters`.
//! - [`audit`]: the gradient-masking audit, with an adaptive re-evaluation, as sections of
//!   `gibbon audit`'s page ([`audit_sections`]).
pub mod audit;
pub mod examples;
pub mod html;
mod html_assets;
mod html_table;
pub mod plot;
pub mod png_image;
pub mod sections;

pub use audit::audit_sections;
pub use examples::write_examples;
pub use html::{ExampleCard, HtmlReport, Part, SummaryTable, TextDiff};
pub use png_image::{
    auto_amplification, encode_png, perturbation_image, write_png, ImageData, MAX_IMAGE_VALUES,
};
pub use sections::{report_page, ResultDoc, SampleImages, Section, SECTIONS};

/// Writes the HTML page of a `gibbon text attack` result.
pub fn write_text_attack_page(
    path: &std::path::Path,
    json: &serde_json::Value,
) -> crate::Result<()> {
    let doc = ResultDoc::new(
        path.file_name().map_or(String::new(), |n| n.to_string_lossy().into()),
        json.clone(),
    );
    report_page("gibbon text attack", "Text attacks: original and adversarial texts.", &[doc])?
        .write(path)
}
