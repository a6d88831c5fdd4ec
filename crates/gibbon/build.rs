//! Build script of the gibbon library: the libtorch rpath (see `build-support/libtorch.rs`) and
//! the small C++ shim `csrc/frozen_module.cpp`, which gives query-only forward passes an
//! inference-optimized copy of a TorchScript model (`torch::jit::freeze` +
//! `optimize_for_inference`, which tch does not expose), and `csrc/bpda_rewrite.cpp`, the BPDA
//! rewrite of a TorchScript graph (straight-through gradients for rounding ops, no `detach`),
//! `csrc/feature_layer.cpp`, a TorchScript method returning a named feature layer, and
//! `csrc/autocast.cpp`, CPU/CUDA autocast with a chosen dtype for `--precision`.
include!("../../build-support/libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/frozen_module.cpp");
    println!("cargo:rerun-if-changed=csrc/bpda_rewrite.cpp");
    println!("cargo:rerun-if-changed=csrc/feature_layer.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    let torch = libtorch();
    emit_rpath(torch.as_ref());
    let Some(torch) = torch else {
        panic!(
            "gibbon build: cannot find libtorch; set LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with \
             PyTorch installed (scripts/env.sh does this)"
        );
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(&torch.includes)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", torch.cxx11_abi))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/frozen_module.cpp")
        .file("csrc/bpda_rewrite.cpp")
        .file("csrc/feature_layer.cpp")
        .file("csrc/autocast.cpp")
        .compile("gibbon_frozen_module");
}
