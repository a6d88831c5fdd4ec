//! Build script shared by the gibbon crates: embeds the libtorch library directory as an rpath so
//! that binaries and test executables find libtorch without LD_LIBRARY_PATH.
//!
//! The directory is found the way torch-sys finds it: `$LIBTORCH/lib` (or `$LIBTORCH_LIB`), or,
//! with `LIBTORCH_USE_PYTORCH=1`, the `lib` folder of the `torch` package of the active Python.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Ok(lib) = env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib));
    }
    if let Ok(root) = env::var("LIBTORCH") {
        return Some(PathBuf::from(root).join("lib"));
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
        let out = Command::new(python)
            .args([
                "-c",
                "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !path.is_empty() {
            return Some(PathBuf::from(path));
        }
    }
    None
}

fn main() {
    for var in ["LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(dir) = libtorch_lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
