//! `gibbon inspect`: describes an ONNX model.
use crate::args::InspectArgs;
use anyhow::Result;

/// Prints the inputs, outputs, operators and parameters of the model, and whether gibbon runs it.
pub fn run(args: InspectArgs) -> Result<()> {
    let summary = gibbon::model::onnx::inspect(&args.model)?;
    print!("{summary}");
    Ok(())
}
