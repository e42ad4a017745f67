//! `archc logits MODEL --tokens 1,2,3 --out FILE.npy`: runs an HF model directory on a
//! token sequence and writes the logits, shape `(tokens, vocab)`, as a float32 `.npy`.
//!
//! The architecture comes from the directory's `config.json` unless `--spec` gives a
//! `.arch` file. Exit status: 0 on success, 1 when the `.arch` file has errors, 2 for
//! bad arguments, I/O, import, weight or execution errors. The output file is written
//! atomically, so a failed run never leaves a partial file.

use super::model::{gguf_spec, is_gguf, load_weights};
use crate::failure::{self, Failure};
use archc_runtime::exec::{self, Backend};
use archc_runtime::npy;
use archc_spec::Spec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The whole sequence in one pass.
    Prefill,
    /// One token at a time through the KV cache.
    Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// Native kernels compiled by LLVM, run on a thread pool over every core.
    Llvm,
    /// Native kernels compiled by Cranelift (milliseconds to compile; scalar code).
    Cranelift,
    /// The reference interpreter over the Graph IR.
    Interp,
    /// The kernel IR interpreter on the CPU executor (slow; for debugging kernels).
    KernelInterp,
    /// Kernels compiled to PTX, run on CUDA device 0 (pick it with CUDA_VISIBLE_DEVICES).
    Cuda,
}

/// `--precision` of `archc run` and `archc bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// Activations stay f32 everywhere (what `archc logits` computes).
    F32,
    /// With bf16 weights, activations are rounded to bf16 before each matmul (prefill
    /// and decode) and multiplied in bf16 dot products, as PyTorch bf16 and llama.cpp do.
    Bf16,
}

impl PrecisionArg {
    pub fn precision(self) -> archc_runtime::exec::cpu::Precision {
        match self {
            PrecisionArg::F32 => archc_runtime::exec::cpu::Precision::F32,
            PrecisionArg::Bf16 => archc_runtime::exec::cpu::Precision::Bf16,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory (config.json and model.safetensors or a sharded index), or a
    /// llama.cpp .gguf file (run on its dequantised weights).
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, allow_hyphen_values = true)]
    pub tokens: String,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
    /// Describe the model with this .arch file instead of importing config.json.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// What runs the model: `llvm` compiles kernels (cached on disk, see ARCHC_CACHE_DIR),
    /// `interp` is the reference graph interpreter, `kernel-interp` interprets the kernels,
    /// `cuda` runs PTX kernels on an NVIDIA GPU.
    #[arg(long, value_enum, default_value = "llvm")]
    pub backend: BackendArg,
    /// Worker threads for the kernel backends (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "prefill")]
    pub mode: ModeArg,
}

pub fn run(args: Args) -> ExitCode {
    failure::exit(run_inner(&args), "logits")
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    if !args.model.is_dir() && !is_gguf(&args.model) {
        return Err(Failure::new(format!(
            "{}: not a model directory",
            args.model.display()
        )));
    }
    let spec = match &args.spec {
        Some(path) => load_arch(path)?,
        None if is_gguf(&args.model) => gguf_spec(&args.model)?,
        None => archc_spec::import::from_path(&args.model)?,
    };
    let tokens = archc_runtime::front::parse_tokens(&args.tokens, spec.vocab, spec.context)
        .map_err(|e| Failure::new(e.0))?;
    let weights = load_weights(&spec, &args.model)?;
    let mode = match args.mode {
        ModeArg::Prefill => exec::Mode::Prefill,
        ModeArg::Decode => exec::Mode::Decode,
    };
    let backend = match args.backend {
        BackendArg::Interp => Backend::Interp,
        BackendArg::Llvm => Backend::Llvm,
        BackendArg::Cranelift => Backend::Cranelift,
        BackendArg::KernelInterp => Backend::KernelInterp,
        BackendArg::Cuda => Backend::Cuda,
    };
    if args.threads == Some(0) {
        return Err(Failure::new("--threads must be at least 1"));
    }
    let logits = exec::logits_with_threads(&spec, &weights, &tokens, mode, backend, args.threads)?;
    npy::write(&args.out, &[tokens.len(), spec.vocab as usize], &logits)?;
    Ok(())
}

/// Parses and validates a `.arch` file, printing its diagnostics on failure (exit 1).
pub(super) fn load_arch(path: &Path) -> Result<Spec, Failure> {
    let name = path.display().to_string();
    let src = crate::io::read_arch(path)?;
    archc_spec::validate::check_source(&name, &src).map_err(|diags| {
        super::load::print_diagnostics(&name, &src, &diags);
        let errors = diags.iter().filter(|d| d.is_error()).count();
        Failure::invalid(format!(
            "{name}: {errors} error{}",
            if errors == 1 { "" } else { "s" }
        ))
    })
}
