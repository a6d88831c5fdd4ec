//! `gibbon serve-model`: a model over HTTP on loopback (see docs/remote-model.md).
use crate::args::ServeModelArgs;
use crate::resolve::{build_model, load_data, set_threads};
use anyhow::Result;

/// Answers /info and /predict on 127.0.0.1 until the process is stopped; the first line on
/// stdout names the predict URL.
pub fn run(args: ServeModelArgs) -> Result<()> {
    set_threads(args.model.threads)?;
    let output = args.output;
    let data = load_data(&args.data)?;
    let model = build_model(&args.model, &data)?;
    let server = gibbon::model::ModelServer::bind(("127.0.0.1", args.port))?;
    println!("serving {}", server.predict_url());
    std::io::Write::flush(&mut std::io::stdout())?;
    tracing::info!(
        "serving {} ({} {:?}, {} classes, answers {output}); stop with Ctrl-C",
        model.info().path,
        model.info().kind,
        model.input_shape(),
        model.num_classes()
    );
    let never = std::sync::atomic::AtomicBool::new(false);
    server.serve(model.as_ref(), output, &never)?;
    Ok(())
}
