//! Feature layers of a TorchScript model (for feature-space detectors such as Mahalanobis).
//!
//! The C++ shim `csrc/feature_layer.cpp` copies the module's `forward` graph into a second
//! method, `gibbon_features(x)`, that returns the named layer's value instead of the logits: a
//! submodule's output by its path (`fc2`, `features.7`), a value of the inlined graph by its
//! name as printed in `module.code` (`input6`), or `penultimate`, the input of the last linear
//! layer. gibbon loads the result as its own module (built once per layer) and runs that method
//! on tiles, with gradients with respect to the input.
use crate::error::GibbonError;
use std::ffi::{c_char, c_int, CStr, CString};
use tch::{CModule, Device};

extern "C" {
    fn gibbon_feature_layer(
        data: *const c_char,
        len: usize,
        layer: *const c_char,
        out: *mut *mut c_char,
        out_len: *mut usize,
        error: *mut *mut c_char,
    ) -> c_int;
    fn gibbon_features_free(p: *mut c_char);
}

/// The method the shim adds.
pub(super) const METHOD: &str = "gibbon_features";

/// Why a feature module could not be built.
pub(super) enum FeatureError {
    /// No such layer; the text lists the available ones.
    Unknown(String),
    /// Anything else (the message).
    Failed(GibbonError),
}

fn take_text(p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the shim returns NUL-terminated malloc'd strings, freed right after copying.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { gibbon_features_free(p) };
    text
}

/// The module of the TorchScript archive `bytes` with the method [`METHOD`] returning `layer`,
/// loaded on `device` in eval mode with weight gradients off (`origin` names it in errors).
pub(super) fn feature_module(
    bytes: &[u8],
    layer: &str,
    device: Device,
    origin: &str,
) -> std::result::Result<CModule, FeatureError> {
    let failed = |why: String| FeatureError::Failed(GibbonError::model(origin, why));
    let name = CString::new(layer).map_err(|_| {
        FeatureError::Failed(GibbonError::invalid("feature-layer", "layer name contains NUL"))
    })?;
    let (mut out, mut out_len, mut error) = (std::ptr::null_mut(), 0usize, std::ptr::null_mut());
    // SAFETY: the pointers are valid for the call; the shim fills them as documented there.
    let rc = unsafe {
        gibbon_feature_layer(
            bytes.as_ptr() as *const c_char,
            bytes.len(),
            name.as_ptr(),
            &mut out,
            &mut out_len,
            &mut error,
        )
    };
    match rc {
        0 => {}
        1 => return Err(FeatureError::Unknown(take_text(error))),
        _ => {
            let why = take_text(error);
            let line = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error");
            return Err(failed(format!("feature layer '{layer}': {}", line.trim())));
        }
    }
    // SAFETY: on success `out` holds `out_len` malloc'd bytes, copied then freed.
    let rewritten = unsafe { std::slice::from_raw_parts(out as *const u8, out_len) }.to_vec();
    unsafe { gibbon_features_free(out) };
    let mut module = CModule::load_data_on_device(&mut std::io::Cursor::new(&rewritten), device)
        .map_err(|e| failed(format!("feature layer '{layer}': {e}")))?;
    module.set_eval();
    let params = module.named_parameters().map_err(|e| failed(e.to_string()))?;
    for (_, p) in params {
        let _ = p.set_requires_grad(false);
    }
    Ok(module)
}
