//! The adversarial examples of an evaluation as files: `adversarial.npy` (every evaluated
//! sample's returned example, or its clean input where no attack ran), `labels.npy` (the true
//! labels) and, in `png/`, original / perturbation / adversarial triptychs of a few broken
//! samples.
use super::png_image::{auto_amplification, perturbation_image, write_png, ImageData};
use crate::data::{write_npy_f32, write_npy_i64, Dataset};
use crate::error::{GibbonError, Result};
use crate::eval::{EvalReport, Examples, SampleRecord};
use std::path::Path;
use tch::Device;

/// Writes `adversarial.npy` (`[n, sample shape...]`, float32, in the order of
/// `report.per_sample`) and `labels.npy` (`[n]`, int64) into `dir`, and PNG triptychs
/// (`NNNNN_original.png`, `NNNNN_perturbation.png`, `NNNNN_adversarial.png`) of the first `png`
/// broken samples into `dir/png` when the samples are images (`[C, H, W]`). `dir` must exist;
/// `dir/png` is created when `png > 0`. Returns the number of triptychs written.
pub fn write_examples(
    dir: &Path,
    data: &Dataset,
    report: &EvalReport,
    examples: &Examples,
    png: usize,
) -> Result<usize> {
    let shape = data.sample_shape();
    let per: usize = shape.iter().product::<i64>() as usize;
    let mut all = Vec::with_capacity(per * report.n);
    let mut labels = Vec::with_capacity(report.n);
    let png_dir = dir.join("png");
    if png > 0 {
        std::fs::create_dir_all(&png_dir).map_err(|e| GibbonError::io(&png_dir, e))?;
    }
    let mut written = 0;
    for r in &report.per_sample {
        let clean = data.try_batch(&[r.index], Device::Cpu)?.get(0);
        let adv = examples
            .get(&r.index)
            .map(|t| t.shallow_clone())
            .unwrap_or_else(|| clean.shallow_clone());
        let clean_v: Vec<f32> = Vec::try_from(clean.flatten(0, -1))?;
        let adv_v: Vec<f32> = Vec::try_from(adv.flatten(0, -1))?;
        all.extend_from_slice(&adv_v);
        labels.push(r.label);
        if written < png && r.broken_by.is_some() && shape.len() == 3 {
            write_triptych(&png_dir, r, &shape, clean_v, adv_v)?;
            written += 1;
        }
    }
    let mut full = vec![report.n];
    full.extend(shape.iter().map(|&d| d as usize));
    write_npy_f32(&dir.join("adversarial.npy"), &full, &all)?;
    write_npy_i64(&dir.join("labels.npy"), &[report.n], &labels)?;
    Ok(written)
}

/// The three PNGs of sample `record`: its clean input, the perturbation (amplified, grey =
/// unchanged) and the adversarial example, each `shape` = `[C, H, W]`.
fn write_triptych(
    png_dir: &Path,
    record: &SampleRecord,
    shape: &[i64],
    clean: Vec<f32>,
    adversarial: Vec<f32>,
) -> Result<()> {
    let (c, h, w) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
    let orig = ImageData::new(c, h, w, clean)?;
    let advi = ImageData::new(c, h, w, adversarial)?;
    let amp = auto_amplification(&orig, &advi);
    let pert = perturbation_image(&orig, &advi, amp)?;
    let i = record.index;
    write_png(png_dir.join(format!("{i:05}_original.png")), &orig)?;
    write_png(png_dir.join(format!("{i:05}_perturbation.png")), &pert)?;
    write_png(png_dir.join(format!("{i:05}_adversarial.png")), &advi)?;
    Ok(())
}
