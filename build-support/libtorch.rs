// Shared by the gibbon build scripts (included with `include!`): where the libtorch that
// torch-sys links against lives, found the way torch-sys finds it: `$LIBTORCH` (or
// `$LIBTORCH_LIB` / `$LIBTORCH_INCLUDE`), or, with `LIBTORCH_USE_PYTORCH=1`, the `torch`
// package of the active Python.
use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The libtorch install: library folder, header folders and the C++ ABI flag.
#[allow(dead_code)]
struct Libtorch {
    lib: PathBuf,
    includes: Vec<PathBuf>,
    cxx11_abi: String,
}

fn python_torch(code: &str) -> Option<String> {
    let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = Command::new(python).args(["-c", code]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn libtorch() -> Option<Libtorch> {
    for var in [
        "LIBTORCH",
        "LIBTORCH_LIB",
        "LIBTORCH_INCLUDE",
        "LIBTORCH_CXX11_ABI",
        "LIBTORCH_USE_PYTORCH",
        "VIRTUAL_ENV",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let (root, lib, abi) = if let Ok(root) = env::var("LIBTORCH") {
        let root = PathBuf::from(root);
        (root.clone(), root.join("lib"), None)
    } else if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let text = python_torch(
            "import torch, os; print(os.path.dirname(torch.__file__)); \
             print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
        )?;
        let mut lines = text.lines();
        let root = PathBuf::from(lines.next()?);
        let abi = lines.next().map(str::to_string);
        (root.clone(), root.join("lib"), abi)
    } else {
        return None;
    };
    let lib = env::var("LIBTORCH_LIB").map(|l| PathBuf::from(l).join("lib")).unwrap_or(lib);
    let include_root = env::var("LIBTORCH_INCLUDE").map(PathBuf::from).unwrap_or(root);
    let includes = vec![
        include_root.join("include"),
        include_root.join("include/torch/csrc/api/include"),
    ];
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").ok().or(abi).unwrap_or_else(|| "1".into());
    Some(Libtorch { lib, includes, cxx11_abi })
}

/// Embeds the libtorch library folder as an rpath, so binaries and test executables find
/// libtorch without LD_LIBRARY_PATH.
fn emit_rpath(torch: Option<&Libtorch>) {
    if let Some(t) = torch {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", t.lib.display());
    }
}
