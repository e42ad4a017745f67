//! Running a bound model: prefill or token-by-token decode on a backend, producing logits.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::bind::BoundWeights;
use archc_compiler::driver::{Driver, Options};
use archc_compiler::interp::{Interpreter, WeightSource};
use archc_compiler::kernel::analysis::ContractError;
use archc_compiler::kernel::lower::ParamFormat;
use archc_compiler::Mode as GraphMode;
use archc_spec::Spec;
use std::fmt;

/// Which program a call runs: the prefill program (any number of tokens) or the decode
/// program (one token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
}

/// How each parameter of `weights` is stored, as the program reads it: its blocks' format
/// when block-quantised (the kernels decode them in place); otherwise `None`, the spec's
/// dtype, which the spec declares and the parameter is converted to at bind time when the
/// checkpoint stores another float type (so the spec's `dtype` always decides the math).
pub fn formats(weights: &dyn WeightSource) -> impl Fn(&str) -> Option<ParamFormat> + '_ {
    move |name: &str| weights.blocks(name).map(|b| ParamFormat::Block(b.format))
}

/// [`formats`] for a spec whose `dtype` is `f8`: the FP8 weights are blocks, and every
/// other parameter (norms, embeddings, router, head: what FP8 checkpoints keep in bf16 or
/// f32) keeps the float type it is stored in, since f8 without its block scales is not a
/// type anything is stored in.
pub fn f8_formats(weights: &dyn WeightSource) -> impl Fn(&str) -> Option<ParamFormat> + '_ {
    move |name: &str| match weights.blocks(name) {
        Some(b) => Some(ParamFormat::Block(b.format)),
        None => weights.get(name).map(|v| match v.dtype {
            archc_compiler::interp::WeightDType::F32 => ParamFormat::F32,
            archc_compiler::interp::WeightDType::F16 => ParamFormat::F16,
            archc_compiler::interp::WeightDType::Bf16 => ParamFormat::Bf16,
        }),
    }
}

/// The compiler driver for `spec` over `weights` (formats from the weights; see
/// [`formats`] and [`f8_formats`]) with `options`: what every CPU and CUDA model of the
/// runtime compiles through, and what `archc emit` shows.
pub fn driver<'a>(spec: &'a Spec, weights: &'a dyn WeightSource, options: Options) -> Driver<'a> {
    if spec.dtype == archc_spec::DType::F8 {
        return Driver::new(spec, Box::new(f8_formats(weights)), options);
    }
    Driver::new(spec, Box::new(formats(weights)), options)
}

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
    /// Kernel programs compiled by Cranelift (fast to compile, scalar), on the thread pool.
    Cranelift,
    /// Kernel programs run by the kernel IR interpreter on the CPU executor (debugging).
    KernelInterp,
    /// Kernel programs compiled to PTX and run on CUDA device 0 (choose the device with
    /// `CUDA_VISIBLE_DEVICES`).
    Cuda,
}

/// Why running a model failed, by what failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecError {
    /// A stage of the compiler driver failed (it names the stage).
    Driver(archc_compiler::driver::DriverError),
    /// Code generation for an engine failed: which, and why.
    Compile { stage: String, message: String },
    /// The program breaks the executor contract.
    Contract(ContractError),
    /// The program needs something this executor does not provide.
    Program(String),
    /// A parameter cannot be bound to the checkpoint's tensor.
    Param { name: String, message: String },
    /// The call itself is wrong: no tokens, a token outside the vocabulary, a position that
    /// overflows.
    Input(String),
    /// A size overflows or memory cannot be allocated.
    Memory(String),
    /// A kernel failed (the kernel IR interpreter's checks, or a panic).
    Kernel {
        launch: usize,
        kernel: String,
        message: String,
    },
    /// The reference interpreter failed.
    Interp(String),
    /// The worker threads could not be started or a job failed on one.
    Threads(String),
    /// The CUDA backend failed.
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaError),
    /// This build of the runtime leaves out what the call needs (a Cargo feature).
    Unavailable(String),
    /// A step of a longer computation failed: which, then the error.
    At { what: String, error: Box<ExecError> },
}

impl ExecError {
    /// This error as the cause of step `what` (`decode of token 3`).
    pub fn at(self, what: impl Into<String>) -> ExecError {
        ExecError::At {
            what: what.into(),
            error: Box::new(self),
        }
    }

    /// A parameter error.
    pub fn param(name: &str, message: impl Into<String>) -> ExecError {
        ExecError::Param {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Driver(e) => write!(f, "{e}"),
            ExecError::Compile { stage, message } => write!(f, "{stage}: {message}"),
            ExecError::Contract(e) => write!(f, "program contract: {e}"),
            ExecError::Program(m) | ExecError::Input(m) | ExecError::Memory(m) => f.write_str(m),
            ExecError::Param { name, message } => write!(f, "parameter `{name}`: {message}"),
            ExecError::Kernel {
                launch,
                kernel,
                message,
            } => write!(f, "launch {launch} (kernel `{kernel}`): {message}"),
            ExecError::Interp(m) => write!(f, "interpreter: {m}"),
            ExecError::Threads(m) => write!(f, "worker threads: {m}"),
            #[cfg(feature = "cuda")]
            ExecError::Cuda(e) => write!(f, "{e}"),
            ExecError::Unavailable(what) => write!(f, "{what} is not part of this build"),
            ExecError::At { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<archc_compiler::driver::DriverError> for ExecError {
    fn from(e: archc_compiler::driver::DriverError) -> ExecError {
        ExecError::Driver(e)
    }
}

impl From<ContractError> for ExecError {
    fn from(e: ContractError) -> ExecError {
        ExecError::Contract(e)
    }
}

#[cfg(feature = "cuda")]
impl From<cuda::CudaError> for ExecError {
    fn from(e: cuda::CudaError) -> ExecError {
        ExecError::Cuda(e)
    }
}

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
    if tokens.len() as u64 > spec.context {
        return Err(ExecError::Input(format!(
            "{} tokens, more than the model's context of {}",
            tokens.len(),
            spec.context
        )));
    }
    let engine = match backend {
        Backend::Interp => None,
        Backend::Llvm => Some(cpu::Engine::Llvm),
        Backend::Cranelift => Some(cpu::Engine::Cranelift),
        Backend::KernelInterp => Some(cpu::Engine::KernelInterp),
        #[cfg(feature = "cuda")]
        Backend::Cuda => {
            return cuda_logits(spec, weights, tokens, mode)
                .map_err(|e| ExecError::Cuda(e).at("--backend cuda"))
        }
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => return Err(ExecError::Unavailable("--backend cuda".into())),
    };
    if let Some(engine) = engine {
        let threads = threads.unwrap_or_else(cpu::default_threads);
        #[cfg(feature = "jit")]
        return cpu_logits(
            &mut cpu::CpuModel::from_spec(spec, weights, engine, threads)?,
            tokens,
            mode,
        );
        #[cfg(not(feature = "jit"))]
        {
            let _ = threads;
            return Err(ExecError::Unavailable(format!(
                "--backend {}",
                engine.as_str()
            )));
        }
    }
    let interp_err = |what: &str, e: &dyn fmt::Display| ExecError::Interp(format!("{what}: {e}"));
    // The interpreter runs the graph stage itself, every position's logits.
    let driver = Driver::for_spec(spec, Options::default());
    let graph = |mode| driver.graph(mode).map_err(ExecError::from);
    let (prefill, decode) = (graph(GraphMode::Prefill)?, graph(GraphMode::Decode)?);
    let interp =
        Interpreter::new(&prefill, &decode, weights).map_err(|e| interp_err("weights", &e))?;
    let mut cache = interp.new_cache();
    match mode {
        Mode::Prefill => interp
            .prefill(&mut cache, tokens)
            .map_err(|e| interp_err("prefill", &e)),
        Mode::Decode => {
            // Reserve at most 64 MiB up front: the rows arrive one by one anyway, and the
            // product of two untrusted sizes should not decide an allocation.
            let want = tokens.len().saturating_mul(spec.vocab as usize);
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = interp
                    .decode(&mut cache, t)
                    .map_err(|e| interp_err(&format!("decode of token {i}"), &e))?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}

/// `logits` through a loaded kernel-program model on the CPU executor, from an empty
/// cache: the prefill program once, or the decode program token by token. What
/// `archc logits` and the `logits` command of a built executable run.
pub fn cpu_logits(
    model: &mut cpu::CpuModel<'_>,
    tokens: &[u32],
    mode: Mode,
) -> Result<Vec<f32>, ExecError> {
    let mut cache = model.new_cache();
    match mode {
        Mode::Prefill => model
            .run(cpu::Phase::Prefill, &mut cache, tokens)
            .map_err(|e| e.at("prefill")),
        Mode::Decode => {
            let want = tokens.len().saturating_mul(model.vocab());
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = model
                    .run(cpu::Phase::Decode, &mut cache, &[t])
                    .map_err(|e| e.at(format!("decode of token {i}")))?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}

#[cfg(feature = "cuda")]
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
