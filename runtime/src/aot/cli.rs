//! The command line of a built executable: `OUT --prompt TEXT`, `OUT --chat` and
//! `OUT logits --tokens 1,2,3 --out F.npy`, with the options, output and JSON of
//! `archc run` and `archc logits` (the generation options are the same clap definition,
//! `front::GenerateArgs`). Errors print `NAME: message` and exit 2, as archc's do.

use super::model::{AotModel, Programs, WeightsAt};
use crate::exec::{cpu, cpu_logits, Mode};
use crate::front::{parse_tokens, FrontError, GenerateArgs, Job};
use crate::generate::{CpuSession, Generator, Limits};
use crate::npy;
use archc_compiler::codegen::KernelFn;
use std::ffi::OsString;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
This program was compiled by `archc build`: the model's kernels are native code inside
it, and it needs no compiler at run time. It runs like `archc run` (generation, with the
same options and the same --json object) and `archc logits` (the `logits` command).

Weights: --weights PATH, else the weights embedded in this file (--embed-weights), else
the path given to `archc build`. Weights must match what the kernels were compiled for:
the same tensors, shapes and storage formats, and (for GGUF files and HF directories)
metadata that imports to the same model.";

#[derive(Debug, clap::Parser)]
#[command(
    about = "A model compiled ahead of time by archc build",
    after_help = AFTER_HELP,
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
    /// The model's weights: a `.gguf` file or an HF directory, as at build time.
    #[arg(long, global = true)]
    weights: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run a token sequence and write the logits, shape `(tokens, vocab)`, as a float32
    /// `.npy` (what `archc logits` writes).
    Logits {
        /// Comma-separated token ids, e.g. `1,2,3`.
        #[arg(long, allow_hyphen_values = true)]
        tokens: String,
        /// Output .npy file (written atomically).
        #[arg(long)]
        out: PathBuf,
        /// `prefill`: the whole sequence in one pass; `decode`: one token at a time
        /// through the KV cache.
        #[arg(long, value_enum, default_value = "prefill")]
        mode: ModeArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Prefill,
    Decode,
}

/// Runs the command line `args` (the program name first) over the linked `image` and
/// kernel table; the exit status.
pub fn main(args: Vec<OsString>, image: &[u8], fns: &[KernelFn]) -> i32 {
    let name = args
        .first()
        .map(|a| {
            PathBuf::from(a)
                .file_name()
                .map_or("model".into(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "model".into());
    let cli = match <Cli as clap::Parser>::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(&cli, image, fns) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {}", e.0);
            2
        }
    }
}

fn run(cli: &Cli, image: &[u8], fns: &[KernelFn]) -> Result<(), FrontError> {
    if cli.threads == Some(0) {
        return Err(FrontError("--threads must be at least 1".into()));
    }
    let threads = cli.threads.unwrap_or_else(cpu::default_threads);
    let at = match &cli.weights {
        Some(p) => WeightsAt::Given(p.clone()),
        None => WeightsAt::Default,
    };
    match &cli.command {
        Some(Command::Logits { tokens, out, mode }) => {
            let model = AotModel::open(image, fns, &at, false).map_err(FrontError)?;
            let tokens = parse_tokens(tokens, model.spec().vocab, model.spec().context)?;
            let mut cpu = model.cpu_model(Programs::Logits, threads)?;
            let mode = match mode {
                ModeArg::Prefill => Mode::Prefill,
                ModeArg::Decode => Mode::Decode,
            };
            let logits = cpu_logits(&mut cpu, &tokens, mode)?;
            npy::write(out, &[tokens.len(), cpu.vocab()], &logits)?;
            Ok(())
        }
        None => {
            let gen = &cli.generate;
            gen.check()?;
            let started = std::time::Instant::now();
            let seed = gen.seed();
            let mut sampler = gen.sampler(seed)?;
            let model = AotModel::open(image, fns, &at, true).map_err(FrontError)?;
            let tokenizer = model
                .tokenizer()
                .ok_or_else(|| FrontError("the model's tokenizer did not load".into()))?;
            let template = gen.template(tokenizer, model.shown())?;
            let limits = Limits {
                max_tokens: gen.max_tokens,
                stop: tokenizer.eog_ids().clone(),
            };
            let context = usize::try_from(model.spec().context).unwrap_or(usize::MAX);
            let session = CpuSession::from_model(model.cpu_model(Programs::Generate, threads)?);
            let job = Job {
                args: gen,
                started,
                tokenizer,
                template: template.as_ref(),
                limits: &limits,
                seed,
            };
            job.drive(Generator::new(session, context), &mut sampler)
        }
    }
}
