//! The inference-optimized query path of a TorchScript model.
//!
//! Score- and decision-based attacks only ever run the model forward, without autograd, and
//! spend nearly all their time doing so. For them a [`TorchScriptModel`](super::TorchScriptModel)
//! builds, on first use, a second copy of the module that libtorch has frozen and converted for
//! CPU inference (`torch.jit.freeze`, then the oneDNN conversion pass of
//! `torch.jit.optimize_for_inference`: weights inlined, convolutions with pre-packed weights
//! chained in oneDNN's blocked layout). On the MNIST SmallCNN this runs the forward pass 1.5 to 2
//! times faster. tch does not expose these passes, so a small C++ shim
//! (`csrc/frozen_module.cpp`) does. (The full `optimize_for_inference` is not used: its
//! pre-transposed linear layers make a row's result depend on its position in the batch.)
//!
//! The optimized copy may round differently from the original module (on the reference models
//! the two agree bit for bit, but freezing folds a batch norm into the convolution before it, for
//! example), so it is never trusted blindly:
//! - [`QueryPath::build`] compares it with the original on probe inputs and refuses it when
//!   the two differ by more than [`AGREEMENT_TOLERANCE`] (relative to the logit scale);
//! - like every forward pass ([`super::forward_tiled`]) it runs on tiles of exactly
//!   [`TILE_ROWS`] rows, and it checks, on the machine in use and once for every libtorch
//!   thread count it runs at, that a row's result does not depend on its position in a tile or
//!   on the other rows (a row alone, a shifted window and a full batch must give the same bits);
//!   at a thread count where that fails, query passes run the original module
//!   ([`QueryPath::holds_at`]);
//! - [`QueryPath::logits`] recomputes, with the original module, every row whose top two
//!   logits are within [`AMBIGUITY_BAND`] of each other. The predicted class of every row is
//!   therefore exactly the original module's, so a query attack's success, the verifier's
//!   verdict and a labels-only answer never depend on which copy answered.
//!
//! Set `GIBBON_QUERY_FORWARD=plain` to run query attacks on the original module instead.
use crate::error::{GibbonError, Result};
use crate::model::{forward_tiled, TILE_ROWS};
use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;
use std::sync::Mutex;
use tch::{Kind, Tensor};

extern "C" {
    fn gibbon_frozen_load(data: *const c_char, len: usize, error: *mut *mut c_char) -> *mut c_void;
    fn gibbon_frozen_forward(
        handle: *mut c_void,
        input: *const c_void,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn gibbon_frozen_free(handle: *mut c_void);
    fn gibbon_frozen_error_free(error: *mut c_char);
}

/// Largest allowed difference between the optimized and the original logits on the probe
/// inputs, relative to `max(1, largest |logit|)`. Float rounding differences are about 1e-6.
pub const AGREEMENT_TOLERANCE: f64 = 1e-5;

/// Rows whose top two logits are within this (relative to `max(1, largest |logit|)`) are
/// recomputed by the original module: 100 times [`AGREEMENT_TOLERANCE`], so the arg-max of
/// every other row is the same under both copies.
pub const AMBIGUITY_BAND: f64 = 1e-3;

/// Probe batch used to check the optimized copy: two tiles of a fixed random batch.
const PROBE_ROWS: i64 = 2 * TILE_ROWS;

fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string, freed right after copying.
    let text = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { gibbon_frozen_error_free(error) };
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim().to_string()
}

/// A frozen, inference-optimized TorchScript module on the CPU (owned C++ handle).
struct FrozenModule {
    handle: NonNull<c_void>,
}

// SAFETY: a frozen TorchScript module has no mutable state; libtorch allows forward passes on
// one module from any thread (tch makes the same promise for `CModule`).
unsafe impl Send for FrozenModule {}
unsafe impl Sync for FrozenModule {}

impl FrozenModule {
    fn load(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: `bytes` outlives the call; the shim copies it.
        let handle = unsafe { gibbon_frozen_load(bytes.as_ptr().cast(), bytes.len(), &mut error) };
        NonNull::new(handle).map(|handle| FrozenModule { handle }).ok_or_else(|| take_error(error))
    }

    fn forward(&self, x: &Tensor) -> std::result::Result<Tensor, String> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: `x.as_ptr()` is a live `torch::Tensor*` for the duration of the call; the shim
        // returns a new heap `torch::Tensor*` whose ownership passes to the returned Tensor.
        let out =
            unsafe { gibbon_frozen_forward(self.handle.as_ptr(), x.as_ptr().cast(), &mut error) };
        if out.is_null() {
            return Err(take_error(error));
        }
        Ok(unsafe { Tensor::from_ptr(out as _) })
    }
}

impl Drop for FrozenModule {
    fn drop(&mut self) {
        // SAFETY: the handle came from gibbon_frozen_load and is freed once.
        unsafe { gibbon_frozen_free(self.handle.as_ptr()) }
    }
}

/// The checked, inference-optimized forward path of one model (see the module docs).
pub(crate) struct QueryPath {
    module: FrozenModule,
    probe: Tensor,
    /// Thread counts at which the tile checks ran, and whether they passed.
    checked: Mutex<Vec<(i32, bool)>>,
}

/// True unless `GIBBON_QUERY_FORWARD=plain`.
pub(crate) fn enabled() -> bool {
    std::env::var("GIBBON_QUERY_FORWARD").map_or(true, |v| v != "plain")
}

impl QueryPath {
    /// Builds and checks the optimized copy of the TorchScript module in `bytes`. `reference`
    /// is the original module's no-grad forward (tiled as usual), `input_shape` one sample's
    /// shape. `Err` says why the optimized copy cannot be used; the caller falls back.
    pub(crate) fn build(
        bytes: &[u8],
        input_shape: &[i64],
        reference: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> std::result::Result<Self, String> {
        let module = FrozenModule::load(bytes)?;
        let mut shape = vec![PROBE_ROWS];
        shape.extend(input_shape);
        let probe = crate::random::uniform_tensor(0x9a1b_b0f5, &shape).to_kind(Kind::Float);
        let path = QueryPath { module, probe, checked: Mutex::new(Vec::new()) };
        let full = path.tiled(&path.probe).map_err(|e| e.to_string())?;
        let plain = reference(&path.probe).map_err(|e| e.to_string())?;
        if full.size() != plain.size() {
            return Err(format!(
                "the optimized copy returned shape {:?}, the model {:?}",
                full.size(),
                plain.size()
            ));
        }
        let scale = plain.abs().max().double_value(&[]).max(1.0);
        let diff = (&full - &plain).abs().max().double_value(&[]);
        if diff.is_nan() || diff > AGREEMENT_TOLERANCE * scale {
            return Err(format!(
                "the optimized copy's logits differ from the model's by {diff:.3e} \
                 (allowed {:.1e})",
                AGREEMENT_TOLERANCE * scale
            ));
        }
        path.tile_checks()?;
        // The checks just ran at the current thread count: record them, not run them again.
        path.checked.lock().unwrap_or_else(|p| p.into_inner()).push((tch::get_num_threads(), true));
        Ok(path)
    }

    /// The optimized copy's logits of `x`, tile by tile.
    fn tiled(&self, x: &Tensor) -> Result<Tensor> {
        let run = |t: &Tensor| {
            self.module.forward(t).map_err(|e| GibbonError::Mismatch(format!("query forward: {e}")))
        };
        forward_tiled(x, TILE_ROWS, run)
    }

    /// At the current thread count: rows computed alone, in a window starting mid-tile, and in
    /// the full probe batch must be bit-identical, so that results do not depend on the batch.
    fn tile_checks(&self) -> std::result::Result<(), String> {
        let tiled = |x: &Tensor| self.tiled(x).map_err(|e| e.to_string());
        let full = tiled(&self.probe)?;
        for row in [0, 5, TILE_ROWS - 1, TILE_ROWS + 8] {
            if !tiled(&self.probe.narrow(0, row, 1))?.equal(&full.narrow(0, row, 1)) {
                return Err(format!(
                    "the optimized copy's result for a row depends on the other rows of its \
                     tile (probe row {row})"
                ));
            }
        }
        let (start, len) = (3, TILE_ROWS + 5);
        if !tiled(&self.probe.narrow(0, start, len))?.equal(&full.narrow(0, start, len)) {
            return Err(format!(
                "the optimized copy's results depend on a row's position in its tile (rows \
                 {start}..{} of the probe)",
                start + len
            ));
        }
        Ok(())
    }

    /// Whether the tile checks hold at libtorch's current thread count (run once per count; a
    /// failure is logged once and sends that count's query passes to the original module).
    pub(crate) fn holds_at(&self, threads: i32) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, ok)) = checked.iter().find(|(t, _)| *t == threads) {
            return ok;
        }
        let ok = match self.tile_checks() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!("at {threads} threads query passes use the model as loaded: {why}");
                false
            }
        };
        checked.push((threads, ok));
        ok
    }

    /// Logits of `x` `[B, ...]` (no autograd): the optimized copy's, except rows whose top two
    /// logits are within [`AMBIGUITY_BAND`], which `reference` recomputes.
    pub(crate) fn logits(
        &self,
        x: &Tensor,
        reference: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let b = x.size()[0];
        if !self.holds_at(tch::get_num_threads()) {
            return reference(x);
        }
        let logits = self.tiled(&x.to_kind(Kind::Float))?;
        if logits.size().len() != 2 || logits.size()[0] != b || logits.size()[1] < 2 {
            return Err(GibbonError::Mismatch(format!(
                "query forward returned shape {:?} for {b} inputs",
                logits.size()
            )));
        }
        let (top, _) = logits.topk(2, -1, true, true);
        let gap = top.select(1, 0) - top.select(1, 1);
        let scale = logits.abs().amax([-1i64].as_slice(), false).clamp_min(1.0);
        let ambiguous = gap.le_tensor(&(scale * AMBIGUITY_BAND)).nonzero().squeeze_dim(1);
        if ambiguous.numel() == 0 {
            return Ok(logits);
        }
        let exact = reference(&x.index_select(0, &ambiguous))?.to_kind(logits.kind());
        Ok(logits.index_copy(0, &ambiguous, &exact))
    }
}
