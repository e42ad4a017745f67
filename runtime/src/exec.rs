//! Running a bound model: prefill or token-by-token decode on a backend, producing logits.

pub mod cpu;
pub mod cuda;

use crate::bind::BoundWeights;
use archc_compiler::interp::Interpreter;
use archc_compiler::{lower, Mode as GraphMode};
use archc_spec::Spec;
use std::fmt;

/// How the tokens are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The whole sequence in one pass.
    Prefill,
    /// One token at a time, each attending to the KV cache of the earlier ones.
    Decode,
}

/// What executes the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The compiler's reference interpreter.
    Interp,
    /// Kernel programs compiled to native code by LLVM, on the CPU thread pool.
    Llvm,
    /// Kernel programs run by the kernel IR interpreter on the CPU executor (debugging).
    KernelInterp,
    /// Kernel programs compiled to PTX and run on CUDA device 0 (choose the device with
    /// `CUDA_VISIBLE_DEVICES`).
    Cuda,
}

/// Execution failed: lowering, a missing parameter, or the interpreter itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    pub message: String,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecError {}

/// Logits of every token, row-major `[tokens.len(), spec.vocab]`.
///
/// Both graphs are lowered even for a pure prefill so that a decode-graph problem shows
/// up the same way in both modes. Decode feeds every token, the first included, through
/// the decode graph with the cache of the ones before it.
pub fn logits(
    spec: &Spec,
    weights: &BoundWeights,
    tokens: &[u32],
    mode: Mode,
    backend: Backend,
) -> Result<Vec<f32>, ExecError> {
    logits_with_threads(spec, weights, tokens, mode, backend, None)
}

/// `logits` on `threads` CPU threads (`None`: every core); the thread count matters only
/// to the kernel backends.
pub fn logits_with_threads(
    spec: &Spec,
    weights: &BoundWeights,
    tokens: &[u32],
    mode: Mode,
    backend: Backend,
    threads: Option<usize>,
) -> Result<Vec<f32>, ExecError> {
    let engine = match backend {
        Backend::Interp => None,
        Backend::Llvm => Some(cpu::Engine::Llvm),
        Backend::KernelInterp => Some(cpu::Engine::KernelInterp),
        Backend::Cuda => {
            return cuda_logits(spec, weights, tokens, mode).map_err(|e| ExecError {
                message: format!("--backend cuda: {e}"),
            })
        }
    };
    if let Some(engine) = engine {
        let threads = threads.unwrap_or_else(cpu::default_threads);
        return kernel_logits(spec, weights, tokens, mode, engine, threads)
            .map_err(|message| ExecError { message });
    }
    let err = |what: &str, e: &dyn fmt::Display| ExecError {
        message: format!("{what}: {e}"),
    };
    let prefill = lower(spec, GraphMode::Prefill).map_err(|e| err("lowering (prefill)", &e))?;
    let decode = lower(spec, GraphMode::Decode).map_err(|e| err("lowering (decode)", &e))?;
    let interp =
        Interpreter::new(&prefill, &decode, weights).map_err(|e| err("interpreter", &e))?;
    let mut cache = interp.new_cache();
    match mode {
        Mode::Prefill => interp
            .prefill(&mut cache, tokens)
            .map_err(|e| err("prefill", &e)),
        Mode::Decode => {
            // Reserve at most 64 MiB up front: the rows arrive one by one anyway, and the
            // product of two untrusted sizes should not decide an allocation.
            let want = tokens.len().saturating_mul(spec.vocab as usize);
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = interp
                    .decode(&mut cache, t)
                    .map_err(|e| err(&format!("decode of token {i}"), &e))?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}

/// `logits` through kernel programs on the CPU executor.
fn kernel_logits(
    spec: &Spec,
    weights: &BoundWeights,
    tokens: &[u32],
    mode: Mode,
    engine: cpu::Engine,
    threads: usize,
) -> Result<Vec<f32>, String> {
    let mut model = cpu::CpuModel::from_spec(spec, weights, engine, threads)?;
    let mut cache = model.new_cache();
    match mode {
        Mode::Prefill => model
            .run(cpu::Phase::Prefill, &mut cache, tokens)
            .map_err(|e| format!("prefill: {e}")),
        Mode::Decode => {
            let want = tokens.len().saturating_mul(spec.vocab as usize);
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = model
                    .run(cpu::Phase::Decode, &mut cache, &[t])
                    .map_err(|e| format!("decode of token {i}: {e}"))?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}

/// `logits` through kernel programs on CUDA device 0. Decode keeps the KV cache between
/// tokens (on the host for now, copied to the device and back at every call).
fn cuda_logits(
    spec: &Spec,
    weights: &BoundWeights,
    tokens: &[u32],
    mode: Mode,
) -> Result<Vec<f32>, cuda::CudaError> {
    let model = cuda::CudaModel::from_spec(spec, weights, 0)?;
    let mut cache = model.new_cache();
    match mode {
        Mode::Prefill => model.run(cpu::Phase::Prefill, &mut cache, tokens),
        Mode::Decode => {
            let want = tokens.len().saturating_mul(spec.vocab as usize);
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = model
                    .run(cpu::Phase::Decode, &mut cache, &[t])
                    .map_err(|e| cuda::CudaError::Failed {
                        message: format!("decode of token {i}: {e}"),
                    })?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}
