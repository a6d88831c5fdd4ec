//! `gibbon report RESULT.json... -o report.html`: one self-contained page from result files,
//! and the page writer the `--html` flags of eval, attack and transfer share.
use crate::args::ReportArgs;
use anyhow::Result;
use gibbon::report::{report_page, ResultDoc};
use serde_json::Value;
use std::path::Path;

/// Reads every result and writes the page.
pub fn run(args: ReportArgs) -> Result<()> {
    let docs =
        args.results.iter().map(|p| ResultDoc::load(p)).collect::<gibbon::Result<Vec<_>>>()?;
    let title = args.title.clone().unwrap_or_else(|| default_title(&docs));
    write_page(&args.out, &title, &docs)
}

/// "gibbon report: MODEL" for the first result's model (or its file name).
pub fn default_title(docs: &[ResultDoc]) -> String {
    let first = docs.first();
    let model = first.and_then(|d| {
        let j = &d.json;
        let m = j.get("model").or_else(|| j.get("audit").and_then(|a| a.get("model")));
        m.and_then(|m| m.get("path")).and_then(Value::as_str).map(str::to_string)
    });
    format!(
        "gibbon report: {}",
        model.unwrap_or_else(|| first.map_or(String::new(), |d| d.source.clone()))
    )
}

/// Renders `docs` with every section that has data and writes the page to `out`.
pub fn write_page(out: &Path, title: &str, docs: &[ResultDoc]) -> Result<()> {
    let intro = "Every adversarial example counted here was re-verified by gibbon: inside the \
                 threat model's ball and box, finite, and misclassified by a fresh forward pass.";
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| gibbon::GibbonError::io(dir, e))?;
    }
    report_page(title, intro, docs)?.write(out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The page of one evaluation of `model_path` (`result`: what its JSON holds, e.g. the
/// evaluation and its audit), with the gallery's pictures from the examples it kept.
pub fn write_evaluation_page(
    out: &Path,
    model_path: &str,
    result: &impl serde::Serialize,
    data: &gibbon::data::Dataset,
    examples: &gibbon::eval::Examples,
) -> Result<()> {
    let json = serde_json::to_value(result)?;
    let images = gibbon::report::SampleImages::from_examples(&json, data, examples)?;
    let doc = ResultDoc { source: "result".into(), json, images };
    write_page(out, &format!("gibbon eval: {model_path}"), &[doc])
}
