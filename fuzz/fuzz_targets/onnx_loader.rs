//! Feeds arbitrary bytes to the ONNX loader; when a file loads, evaluates it on zero inputs of
//! its declared shapes. Any outcome is fine except a panic or a crash.
#![no_main]
use gibbon::model::onnx::OnnxGraph;
use libfuzzer_sys::fuzz_target;
use tch::Device;

fuzz_target!(|data: &[u8]| {
    if let Ok(graph) = OnnxGraph::from_bytes(data, "fuzz", None, Device::Cpu) {
        if let Ok(inputs) = graph.example_inputs(2) {
            let _ = graph.run(&inputs);
        }
    }
});
