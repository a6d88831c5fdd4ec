//! `gibbon text serve`: a text model over HTTP on loopback (the text protocol of
//! `gibbon::text::remote`: GET /info, POST /predict {"texts": [...]}).
use super::source::TextSource;
use crate::args::text::TextServeArgs;
use crate::resolve::{set_threads, usage};
use anyhow::Result;
use gibbon::text::TextModelServer;

/// Answers until the process is stopped; the first stdout line names the predict URL.
pub fn run(args: TextServeArgs) -> Result<()> {
    set_threads(args.threads)?;
    let source = TextSource::load(&args.model, args.tokenizer.as_deref())?;
    if matches!(source, TextSource::Remote(_)) {
        return Err(usage("text serve serves a local model (a gibbon folder or an ONNX model)"));
    }
    let server = TextModelServer::bind(("127.0.0.1", args.port))?;
    println!("serving {}", server.predict_url());
    std::io::Write::flush(&mut std::io::stdout())?;
    let never = std::sync::atomic::AtomicBool::new(false);
    server.serve(
        source.classifier(),
        args.output,
        &source.class_names(),
        source.describe(&args.model),
        &never,
    )?;
    Ok(())
}
