//! `archc build MODEL [-o OUT] [--lib] [--target T] [--precision P] [--embed-weights]`:
//! compiles a model ahead of time into a standalone executable, or a C library with its
//! header, that runs without LLVM or archc.
//!
//! The driver builds four programs (generation prefill and decode at `--precision`,
//! and the f32 every-position programs of `logits`); their kernels, equal ones once, go
//! into one object with a table of their addresses and the build image
//! (`archc_runtime::aot::image`). The system C compiler links that object with the
//! ahead-of-time runtime archive (`libarchc_runtime.a`, built without the compiler; see
//! README "Native binaries") — no cargo, no network. `--target aarch64` stops at the
//! object and a link-ready archive. Outputs are written to temporary names and renamed
//! into place, so a failed build leaves nothing behind. Exit status: 0 on success, 1
//! when the `.arch` file has errors, 2 for everything else.

use super::link::{self, Linked};
use super::logits::{load_arch, PrecisionArg};
use super::model::{gguf_spec, is_gguf, load_weights};
use crate::failure::{self, Failure};
use archc_compiler::codegen::llvm::Target;
use archc_compiler::driver::{self, Device, Logits, Options};
use archc_compiler::kernel::{BufferKind, Program};
use archc_compiler::Mode;
use archc_runtime::aot::image::{
    x86_needs, BuildImage, ProgramEntry, SpecFrom, TargetDoc, WeightsDoc, WeightsKind,
};
use archc_runtime::bind::BoundWeights;
use archc_runtime::exec;
use archc_spec::Spec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
The executable runs like `archc run` and `archc logits`:
  OUT --prompt TEXT [--raw] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
      [--seed S] [--json]
  OUT --chat
  OUT logits --tokens 1,2,3 --out F.npy [--mode prefill|decode]
Weights are memory-mapped from the path given here, or from `--weights PATH` at run time.

With --lib: libOUT.so and OUT.h (the C API, documented in the header's comments).
With --target aarch64: OUT.o (kernels and build image) and libOUT.a, ready to link with
the runtime archive built for aarch64 Linux; nothing is run here.

The link needs the runtime archive libarchc_runtime.a: $ARCHC_RUNTIME_LIB, else the one
next to the archc executable. Build it with
  cargo rustc --release -p archc-runtime --lib --crate-type staticlib \\
      --no-default-features --features aot";

/// Compile a model ahead of time to a native executable or C library (see `AFTER_HELP`).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A llama.cpp `.gguf` file, an HF model directory, or a `.arch` file with --weights.
    pub model: PathBuf,
    /// The weights of a `.arch` model: a `.gguf` file or an HF model directory.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The output: the executable, or with --lib the name of libOUT.so and OUT.h.
    /// Default: the model's name in the current directory.
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Build a shared library with a C API (libOUT.so and OUT.h) instead of an
    /// executable.
    #[arg(long)]
    pub lib: bool,
    /// The CPU the code is for: `host` (this machine's CPU and features), `x86-64-v3`
    /// (AVX2), `x86-64-v4` (AVX-512), `znver4` (AMD Zen 4 and later: AVX-512 with bf16
    /// and VNNI), or `aarch64` (objects only, see below).
    #[arg(long, value_enum, default_value = "host")]
    pub target: TargetArg,
    /// With bf16 weights: `bf16` rounds generation activations to bf16 before each
    /// matmul, as `archc run` does by default; `f32` keeps them exact.
    #[arg(long, value_enum, default_value = "bf16")]
    pub precision: PrecisionArg,
    /// Append the weights to the executable, making one self-contained file (a GGUF
    /// file; or an HF directory's safetensors with its config and tokenizer files).
    #[arg(long)]
    pub embed_weights: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    Host,
    #[value(name = "x86-64-v3")]
    X86_64V3,
    #[value(name = "x86-64-v4")]
    X86_64V4,
    #[value(name = "znver4")]
    Znver4,
    Aarch64,
}

impl TargetArg {
    fn target(self) -> Target {
        let x86 = |cpu: &str| Target {
            cpu: cpu.into(),
            ..Target::x86_64()
        };
        match self {
            TargetArg::Host => Target::host(),
            TargetArg::X86_64V3 => x86("x86-64-v3"),
            TargetArg::X86_64V4 => x86("x86-64-v4"),
            TargetArg::Znver4 => x86("znver4"),
            TargetArg::Aarch64 => Target::aarch64(),
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    failure::exit(run_inner(&args), "build")
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    let target = args.target.target();
    let cross = !target.runs_here();
    if args.embed_weights && (args.lib || cross) {
        return Err(Failure::new(
            "--embed-weights makes one executable; it does not apply to --lib or --target aarch64",
        ));
    }
    let (spec, weights, doc) = load(args)?;
    let embed = if args.embed_weights {
        embedded_files(&doc)?
    } else {
        Vec::new()
    };
    let generation = Options {
        precision: args.precision.precision(),
        device: Device::Cpu,
        ..Options::generation()
    };
    let every = Options {
        device: Device::Cpu,
        logits: Logits::All,
        ..Options::default()
    };
    let mut programs: Vec<Program> = Vec::with_capacity(4);
    for options in [generation, every] {
        let d = exec::driver(&spec, &weights, options);
        for mode in [Mode::Prefill, Mode::Decode] {
            programs.push(d.program(mode).map_err(|e| {
                Failure::new(format!(
                    "{e} (archc build compiles what `archc run --backend llvm` runs)"
                ))
            })?);
        }
    }
    let refs: Vec<&Program> = programs.iter().collect();
    let (kernels, tables) = driver::shared_kernels(&refs);
    let entry = |i: usize| ProgramEntry {
        doc: programs[i].doc(),
        table: tables[i].clone(),
    };
    let image = BuildImage {
        format: archc_runtime::aot::image::FORMAT.into(),
        version: archc_runtime::aot::image::VERSION,
        archc: env!("CARGO_PKG_VERSION").into(),
        needs: if target.arch() == "x86_64" {
            x86_needs(&target.cpu, &target.features)
        } else {
            Vec::new()
        },
        target: TargetDoc {
            triple: target.triple.clone(),
            cpu: target.cpu.clone(),
            features: target.features.clone(),
        },
        weights: doc,
        formats: formats(&programs, &weights),
        precision: args.precision.precision().as_str().into(),
        generate: [entry(0), entry(1)],
        logits: [entry(2), entry(3)],
        kernels: kernels.len(),
        spec,
    };
    let object = driver::linkable_object(&kernels, &target, &image.to_bytes())
        .map_err(|e| Failure::new(e.to_string()))?;
    let out = output_path(args, &image.spec);
    let linked = if cross {
        link::cross(&out, &object)?
    } else if args.lib {
        link::library(&out, &object)?
    } else {
        link::executable(&out, &object, &embed)?
    };
    report(&linked, kernels.len());
    Ok(())
}

/// The spec, bound weights and weights description of MODEL (and --weights).
fn load(args: &Args) -> Result<(Spec, BoundWeights, WeightsDoc), Failure> {
    let model = &args.model;
    let is_arch = model.extension().is_some_and(|e| e == "arch");
    let (spec, path, spec_from) = match (&args.weights, is_arch) {
        (Some(w), true) => (load_arch(model)?, w.clone(), SpecFrom::Arch),
        (None, true) => {
            return Err(Failure::new(format!(
                "{}: a .arch model needs its weights: --weights FILE.gguf or --weights DIR",
                model.display()
            )))
        }
        (Some(_), false) => return Err(Failure::new(
            "--weights goes with a .arch model; a .gguf file or HF directory is its own weights",
        )),
        (None, false) if is_gguf(model) => (gguf_spec(model)?, model.clone(), SpecFrom::Gguf),
        (None, false) if model.is_dir() => (
            archc_spec::import::from_path(model)?,
            model.clone(),
            SpecFrom::HfConfig,
        ),
        (None, false) => {
            return Err(Failure::new(format!(
                "{}: not a .gguf file, an HF model directory or a .arch file",
                model.display()
            )))
        }
    };
    let weights = load_weights(&spec, &path)?;
    let kind = if is_gguf(&path) {
        WeightsKind::Gguf
    } else {
        WeightsKind::HfDir
    };
    let abs = std::fs::canonicalize(&path)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let doc = WeightsDoc {
        kind,
        path: abs.to_string_lossy().into_owned(),
        spec_from,
    };
    Ok((spec, weights, doc))
}

/// The files `--embed-weights` appends, by the names the runtime looks for: the GGUF
/// file, or an HF directory's safetensors shards with its config and tokenizer files.
fn embedded_files(doc: &WeightsDoc) -> Result<Vec<(String, PathBuf)>, Failure> {
    let path = PathBuf::from(&doc.path);
    if doc.kind == WeightsKind::Gguf {
        return Ok(vec![("model.gguf".into(), path)]);
    }
    let checkpoint = archc_runtime::weights::Checkpoint::open(&path)?;
    let mut files = Vec::new();
    for shard in checkpoint.paths() {
        let name = shard
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((format!("hf/{name}"), shard));
    }
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        let p = path.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => files.push((format!("hf/{name}"), p)),
            Ok(_) => {
                return Err(Failure::new(format!(
                    "{}: not a regular file, so it cannot be embedded",
                    p.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::new(format!("{}: {e}", p.display()))),
        }
    }
    // What is embedded must load as the built executable will load it: an unreadable
    // chat template or tokenizer is an error now, not a surprise later.
    if path.join("tokenizer.json").is_file() {
        archc_runtime::tokenize::Tokenizer::from_hf_dir(&path)
            .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    }
    Ok(files)
}

/// The stored block format of every parameter the programs read as blocks.
fn formats(programs: &[Program], weights: &BoundWeights) -> BTreeMap<String, String> {
    use archc_compiler::interp::WeightSource;
    let mut out = BTreeMap::new();
    for p in programs {
        for b in p.buffers.iter().filter(|b| b.kind == BufferKind::Param) {
            let name = b.name.strip_prefix('@').unwrap_or(&b.name);
            if let Some(v) = weights.blocks(name) {
                out.insert(name.to_string(), v.format.name().to_string());
            }
        }
    }
    out
}

/// `-o`, else the model's name (made safe for a file name) in the current directory.
fn output_path(args: &Args, spec: &Spec) -> PathBuf {
    if let Some(o) = &args.out {
        return o.clone();
    }
    let name: String = spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    PathBuf::from(if name.is_empty() {
        "model".into()
    } else {
        name
    })
}

fn report(linked: &Linked, kernels: usize) {
    for (path, bytes) in &linked.files {
        eprintln!(
            "archc build: wrote {} ({:.1} MB)",
            path.display(),
            *bytes as f64 / 1e6
        );
    }
    eprintln!("archc build: {kernels} kernels");
}
