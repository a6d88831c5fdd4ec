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
//! - [`evaluation`]: one evaluation as a page, with its audit when it was audited
//!   ([`evaluation_page`]).
//! - [`audit`]: the gradient-masking audit as sections of a page ([`audit_sections`]).
pub mod audit;
pub mod evaluation;
pub mod examples;
pub mod html;
pub mod png_image;

pub use audit::audit_sections;
pub use evaluation::evaluation_page;
pub use examples::write_examples;
pub use html::{ExampleCard, HtmlReport, SummaryTable};
pub use png_image::{
    auto_amplification, encode_png, perturbation_image, write_png, ImageData, MAX_IMAGE_VALUES,
};
