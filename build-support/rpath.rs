//! Build script of the gibbon CLI: embeds the libtorch library directory as an rpath so that
//! binaries and test executables find libtorch without LD_LIBRARY_PATH.
include!("libtorch.rs");

fn main() {
    emit_rpath(libtorch().as_ref());
}
