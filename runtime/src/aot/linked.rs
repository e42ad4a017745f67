//! The symbols that join the runtime archive to the object `archc build` emits: the
//! kernel table and build image it defines (`archc_kernels`, `archc_kernel_count`,
//! `archc_image`, `archc_image_len`), the entry point of executables (`archc_main`,
//! called by the `main` archc build writes), and the C API of libraries (declared, with
//! its documentation, in the header `capi::HEADER`).
//!
//! Every function catches panics and reports failures through `archc_last_error`, which
//! is per thread. Sessions hold their own executor state (arena, KV cache, thread pool)
//! and share only the read-only weights, so two threads may run two sessions at once.

use super::model::{AotModel, Programs, WeightsAt};
use crate::exec::cpu::{self, CpuModel, KvState, Phase};
use archc_compiler::codegen::KernelFn;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Arc;

extern "C" {
    static archc_kernels: [KernelFn; 0];
    static archc_kernel_count: i64;
    static archc_image: [u8; 0];
    static archc_image_len: i64;
}

/// The linked kernel table.
fn table() -> &'static [KernelFn] {
    // SAFETY: `archc build` defines `archc_kernels` as `archc_kernel_count` function
    // pointers (`codegen::llvm::aot`), constant for the life of the process.
    unsafe {
        let n = usize::try_from(archc_kernel_count).unwrap_or(0);
        std::slice::from_raw_parts(std::ptr::addr_of!(archc_kernels).cast::<KernelFn>(), n)
    }
}

/// The linked build image.
fn image() -> &'static [u8] {
    // SAFETY: as `table`: `archc_image_len` bytes at `archc_image`.
    unsafe {
        let n = usize::try_from(archc_image_len).unwrap_or(0);
        std::slice::from_raw_parts(std::ptr::addr_of!(archc_image).cast::<u8>(), n)
    }
}

extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
}

/// The entry point of a built executable (its `main` calls this).
#[no_mangle]
pub extern "C" fn archc_main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // A Rust `main` ignores SIGPIPE so that writing to a closed pipe is an error the
    // program reports; this entry is called from C, so it does the same (SIGPIPE is 13
    // and SIG_IGN is 1 on Linux).
    // SAFETY: `signal` with a constant disposition has no other effect.
    unsafe { signal(13, 1) };
    let args: Vec<_> = std::env::args_os().collect();
    match std::panic::catch_unwind(|| super::cli::main(args, image(), table())) {
        Ok(code) => code,
        Err(_) => {
            eprintln!("internal error: the runtime panicked");
            101
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning an error or a panic into `fail` with the message kept for
/// `archc_last_error`.
fn guard<T>(fail: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(m)) => {
            set_error(&m);
            fail
        }
        Err(_) => {
            set_error("internal error: the runtime panicked");
            fail
        }
    }
}

/// The message of the last failed call on this thread ("" if none). Valid until the
/// next call on this thread.
#[no_mangle]
pub extern "C" fn archc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// An open model (opaque to C).
pub struct Model {
    inner: Arc<AotModel>,
}

/// A session: a KV cache and executor state over a model (opaque to C).
pub struct Session {
    // Declared first so that it is dropped before the model it borrows from.
    cpu: CpuModel<'static>,
    cache: KvState,
    logits: Vec<f32>,
    _model: Arc<AotModel>,
}

/// Opens the model over the weights at `weights_path` (a `.gguf` file or HF directory),
/// or, when it is null, the embedded or build-time weights. Null on failure.
///
/// # Safety
/// `weights_path` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn archc_model_open(weights_path: *const c_char) -> *mut Model {
    guard(std::ptr::null_mut(), || {
        let at = if weights_path.is_null() {
            WeightsAt::Default
        } else {
            // SAFETY: per the contract.
            let s = unsafe { CStr::from_ptr(weights_path) };
            let s = s.to_str().map_err(|_| "the weights path is not UTF-8")?;
            WeightsAt::Given(s.into())
        };
        let model = AotModel::open(image(), table(), &at, false)?;
        Ok(Box::into_raw(Box::new(Model {
            inner: Arc::new(model),
        })))
    })
}

/// The vocabulary size: the length of a row of logits. 0 for a null model.
///
/// # Safety
/// `model` is null or from `archc_model_open` and not freed.
#[no_mangle]
pub unsafe extern "C" fn archc_model_vocab(model: *const Model) -> usize {
    // SAFETY: per the contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.inner.spec().vocab as usize)
}

/// Frees a model. Sessions made from it stay valid (they share it).
///
/// # Safety
/// `model` is null or from `archc_model_open`, freed once.
#[no_mangle]
pub unsafe extern "C" fn archc_model_free(model: *mut Model) {
    if !model.is_null() {
        // SAFETY: per the contract.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// A new session with an empty cache. `all_logits` != 0: prefill returns every
/// position's logits with f32 activations (what `OUT logits` computes); 0: the last
/// position's, with the build's precision (what generation runs). `threads` 0: every
/// core. Null on failure.
///
/// # Safety
/// `model` is null or a live model from `archc_model_open`.
#[no_mangle]
pub unsafe extern "C" fn archc_session_new(
    model: *const Model,
    all_logits: c_int,
    threads: usize,
) -> *mut Session {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let m = unsafe { model.as_ref() }.ok_or("archc_session_new: the model is null")?;
        let arc = Arc::clone(&m.inner);
        let which = if all_logits != 0 {
            Programs::Logits
        } else {
            Programs::Generate
        };
        let threads = if threads == 0 {
            cpu::default_threads()
        } else {
            threads
        };
        let cpu = arc.cpu_model(which, threads).map_err(|e| e.to_string())?;
        // SAFETY: `cpu` borrows the weights inside the `Arc`, which the session keeps
        // alive and drops after `cpu` (field order); the model never moves.
        let cpu: CpuModel<'static> = unsafe { std::mem::transmute(cpu) };
        let cache = cpu.new_cache();
        Ok(Box::into_raw(Box::new(Session {
            cpu,
            cache,
            logits: Vec::new(),
            _model: arc,
        })))
    })
}

/// Runs `n` tokens after the cached ones (the prefill program) and keeps their logits.
/// 0 on success, -1 on failure (see `archc_last_error`).
///
/// # Safety
/// `session` is a live session; `tokens` points to `n` token ids.
#[no_mangle]
pub unsafe extern "C" fn archc_session_prefill(
    session: *mut Session,
    tokens: *const u32,
    n: usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let s = unsafe { session.as_mut() }.ok_or("archc_session_prefill: the session is null")?;
        if tokens.is_null() || n == 0 {
            return Err("archc_session_prefill: no tokens".into());
        }
        // SAFETY: per the contract.
        let t = unsafe { std::slice::from_raw_parts(tokens, n) };
        s.cpu
            .run_into(Phase::Prefill, &mut s.cache, t, &mut s.logits)
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

/// Runs one token after the cached ones (the decode program) and keeps its logits.
/// 0 on success, -1 on failure.
///
/// # Safety
/// `session` is a live session.
#[no_mangle]
pub unsafe extern "C" fn archc_session_decode(session: *mut Session, token: u32) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let s = unsafe { session.as_mut() }.ok_or("archc_session_decode: the session is null")?;
        s.cpu
            .run_into(Phase::Decode, &mut s.cache, &[token], &mut s.logits)
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

/// The logits of the last call, row-major, and their count in `*len`; valid until the
/// next call on the session. Null (and 0) before any call.
///
/// # Safety
/// `session` is a live session; `len` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn archc_session_logits(
    session: *const Session,
    len: *mut usize,
) -> *const f32 {
    // SAFETY: per the contract.
    let (ptr, n) = match unsafe { session.as_ref() } {
        Some(s) if !s.logits.is_empty() => (s.logits.as_ptr(), s.logits.len()),
        _ => (std::ptr::null(), 0),
    };
    if !len.is_null() {
        // SAFETY: per the contract.
        unsafe { *len = n };
    }
    ptr
}

/// The number of tokens in the session's cache.
///
/// # Safety
/// `session` is null or a live session.
#[no_mangle]
pub unsafe extern "C" fn archc_session_position(session: *const Session) -> usize {
    // SAFETY: per the contract.
    unsafe { session.as_ref() }.map_or(0, |s| s.cache.past())
}

/// Forgets every cached token (the memory is kept for the next sequence).
///
/// # Safety
/// `session` is null or a live session.
#[no_mangle]
pub unsafe extern "C" fn archc_session_reset(session: *mut Session) {
    // SAFETY: per the contract.
    if let Some(s) = unsafe { session.as_mut() } {
        s.cache.clear();
        s.logits.clear();
    }
}

/// Frees a session.
///
/// # Safety
/// `session` is null or a live session, freed once.
#[no_mangle]
pub unsafe extern "C" fn archc_session_free(session: *mut Session) {
    if !session.is_null() {
        // SAFETY: per the contract.
        drop(unsafe { Box::from_raw(session) });
    }
}
