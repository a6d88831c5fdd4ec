//! `gibbon attack`: like eval, and writes the adversarial examples (.npy) and PNGs of them.
use super::{print_summary, write_json};
use crate::args::AttackArgs;
use crate::resolve::{
    build_model, build_threat, eps_values, eval_settings, load_data, run_info, set_threads, usage,
};
use anyhow::Result;
use gibbon::eval::evaluate;
use gibbon::report::write_examples;

/// Evaluates at one ε and writes adversarial.npy, labels.npy, png/ and result.json into
/// `--out-dir`.
pub fn run(args: AttackArgs, quiet: bool) -> Result<()> {
    set_threads(args.model.threads)?;
    let mut threat = build_threat(&args.threat)?;
    threat.defense = crate::resolve::chain_spec(args.model.defense.as_deref())?;
    if eps_values(&args.threat).len() > 1 {
        return Err(usage("attack takes one --eps; for a curve over several use eval"));
    }
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let mut s = eval_settings(&args.threat, &args.run, args.data.n, quiet, &mut threat)?;
    crate::resolve::apply_eot(&args.model, &mut s);
    crate::resolve::set_precision(&args.run, model.as_ref(), &mut s)?;
    s.keep_examples = true;
    let (report, examples) = evaluate(model.as_ref(), &data, &threat, &s, &run_info(&args.data))?;
    print_summary(&report);
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| gibbon::GibbonError::io(&args.out_dir, e))?;
    write_examples(&args.out_dir, &data, &report, &examples, args.png)?;
    write_json(&args.out_dir.join("result.json"), &report)?;
    if let Some(path) = &args.html {
        super::report::write_evaluation_page(path, &report.model.path, &report, &data, &examples)?;
    }
    eprintln!("wrote {}", args.out_dir.display());
    Ok(())
}
