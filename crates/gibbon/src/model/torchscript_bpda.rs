//! The BPDA view of a TorchScript model (Athalye, Carlini & Wagner 2018): the graph rewritten
//! so that gradients pass where the model hides them, with forward values unchanged.
//!
//! The C++ shim `csrc/bpda_rewrite.cpp` inlines the forward graph, replaces every out-of-place
//! `round`, `floor`, `ceil`, `trunc`, `fix` and `sign` (output y, input x) by
//! `detach(y) + (x - detach(x))` (exactly y in value, the identity's gradient) and every
//! `detach` by its input, and serializes the module again. gibbon loads the result and checks,
//! on probe inputs, that it answers bit for bit as the original; a rewrite that changes any
//! answer is refused. In-place variants (`round_`) are not rewritten and are reported.
use crate::error::{GibbonError, Result};
use std::ffi::{c_char, c_int, CStr};

extern "C" {
    fn gibbon_bpda_rewrite(
        data: *const c_char,
        len: usize,
        out: *mut *mut c_char,
        out_len: *mut usize,
        report: *mut *mut c_char,
        error: *mut *mut c_char,
    ) -> c_int;
    fn gibbon_bpda_free(p: *mut c_char);
}

/// A rewritten TorchScript archive and what changed.
pub struct Rewrite {
    /// The rewritten module, serialized.
    pub bytes: Vec<u8>,
    /// Ops given a straight-through gradient or removed (`aten::round`, `aten::detach`), one
    /// entry per rewritten node.
    pub swapped: Vec<String>,
    /// Ops found but not rewritten, with why (`aten::round_ (in-place)`).
    pub refused: Vec<String>,
}

fn take_text(p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the shim returns NUL-terminated malloc'd strings, freed right after copying.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { gibbon_bpda_free(p) };
    text
}

/// Rewrites the TorchScript archive `bytes` (`origin` names it in errors).
pub fn rewrite(bytes: &[u8], origin: &str) -> Result<Rewrite> {
    let (mut out, mut out_len) = (std::ptr::null_mut(), 0usize);
    let (mut report, mut error) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: the pointers are valid for the call; the shim fills them as documented there.
    let rc = unsafe {
        gibbon_bpda_rewrite(
            bytes.as_ptr() as *const c_char,
            bytes.len(),
            &mut out,
            &mut out_len,
            &mut report,
            &mut error,
        )
    };
    if rc != 0 {
        let why = take_text(error);
        let line = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error");
        return Err(GibbonError::model(
            origin,
            format!("BPDA graph rewrite failed: {}", line.trim()),
        ));
    }
    // SAFETY: on success `out` holds `out_len` malloc'd bytes, copied then freed.
    let rewritten = unsafe { std::slice::from_raw_parts(out as *const u8, out_len) }.to_vec();
    unsafe { gibbon_bpda_free(out) };
    let report = take_text(report);
    let (mut swapped, mut refused) = (Vec::new(), Vec::new());
    for line in report.lines() {
        if let Some(op) = line.strip_prefix("straight-through ").or(line.strip_prefix("identity "))
        {
            swapped.push(op.to_string());
        } else if let Some(op) = line.strip_prefix("not rewritten ") {
            refused.push(op.to_string());
        }
    }
    Ok(Rewrite { bytes: rewritten, swapped, refused })
}
