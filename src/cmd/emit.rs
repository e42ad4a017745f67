//! `archc emit MODEL --stage graph|fused|kernel|program|llvm|ptx`: prints one stage of the
//! compilation of a model, built by the compiler driver exactly as `archc run` (by
//! default) or `archc logits` (`--logits all --precision f32`) builds what it runs, or
//! writes it to `-o DIR` (atomically: a temporary file renamed into place).
//!
//! MODEL is a `.arch` file, an HF `config.json`, an HF model directory, a `.gguf` file,
//! or the text of a stage (Graph IR or kernel IR, as `emit` prints it), which is parsed
//! and carried on from its own stage: kernel IR text compiles to the same LLVM IR or PTX
//! as the spec it came from. For a model directory or a GGUF file the weights are opened
//! (memory-mapped, as `run` opens them) so that the kernels read each parameter in its
//! stored format: GGUF blocks stay blocks and get their fused dequantise kernels. Exit
//! status: 0 on success, 1 when
//! the model is invalid or cannot be compiled, 2 when a file cannot be read or written or
//! the arguments do not fit together.

use super::lower::ModeArg;
use super::model::{gguf_spec, is_gguf, load_weights};
use crate::failure::Failure;
use archc_compiler::codegen::llvm::Target;
use archc_compiler::codegen::ptx;
use archc_compiler::driver::{Device, Driver, Logits, Options};
use archc_compiler::kernel::Program;
use archc_compiler::Graph;
use archc_compiler::Mode;
use archc_runtime::bind::BoundWeights;
use archc_spec::Spec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// The Graph IR as lowered, before any pass.
    Graph,
    /// The Graph IR after the fusion pipeline.
    Fused,
    /// The kernel IR program: buffers, launches and every kernel's loop nest.
    Kernel,
    /// The program contract as a versioned JSON document: buffers with their roles,
    /// kernels by content hash, the launch order (what every executor reads).
    Program,
    /// The LLVM IR of the program's kernels for `--target`.
    Llvm,
    /// PTX of each kernel for `--sm`, with a manifest of launch shapes.
    Ptx,
    /// Cranelift's CLIF of each kernel: what the fast tier (`--backend cranelift`)
    /// compiles for this machine.
    Clif,
}

impl Stage {
    /// The file `-o DIR` writes.
    fn file_name(self) -> &'static str {
        match self {
            Stage::Graph => "graph.txt",
            Stage::Fused => "fused.txt",
            Stage::Kernel => "kernel.txt",
            Stage::Program => "program.json",
            Stage::Llvm => "llvm.ll",
            Stage::Ptx => "manifest.json",
            Stage::Clif => "kernels.clif",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Graph => "graph",
            Stage::Fused => "fused",
            Stage::Kernel => "kernel",
            Stage::Program => "program",
            Stage::Llvm => "llvm",
            Stage::Ptx => "ptx",
            Stage::Clif => "clif",
        }
    }

    /// Whether the stage depends on how the parameters are stored and on the precision.
    fn has_program(self) -> bool {
        !matches!(self, Stage::Graph | Stage::Fused)
    }
}

/// The CPUs of `--target`: fixed ones, whose output does not depend on the machine, and
/// the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// x86-64 with AVX-512 (`x86-64-v4`): the default.
    #[value(name = "x86_64")]
    X86_64,
    /// AMD Zen 4 (`znver4`: AVX-512 with bf16 dot products, `vdpbf16ps`).
    #[value(name = "znver4")]
    Znver4,
    /// aarch64 (`neoverse-v1`).
    #[value(name = "aarch64")]
    Aarch64,
    /// This machine's CPU and features, as `archc run` compiles for (output depends on
    /// the machine).
    #[value(name = "host")]
    Host,
}

impl TargetArg {
    fn target(self) -> Target {
        match self {
            TargetArg::X86_64 => Target::x86_64(),
            TargetArg::Znver4 => Target {
                cpu: "znver4".into(),
                ..Target::x86_64()
            },
            TargetArg::Aarch64 => Target::aarch64(),
            TargetArg::Host => Target::host(),
        }
    }
}

/// Which positions of a prefill get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogitsArg {
    /// The last position only (what `archc run` and `archc bench` compute).
    Last,
    /// Every position (what `archc logits` computes).
    All,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .arch file, an HF config.json, an HF model directory, a .gguf file, or Graph IR
    /// or kernel IR text.
    pub model: PathBuf,
    /// Which stage to print.
    #[arg(long, value_enum)]
    pub stage: Stage,
    /// Which forward pass to build (default prefill; IR text states its own).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Which logits a prefill computes: `last` as `archc run` does, `all` as `archc logits`.
    #[arg(long, value_enum, default_value = "last")]
    pub logits: LogitsArg,
    /// With bf16 weights, `bf16` rounds activations to bf16 before each matmul as `archc
    /// run` does by default; `f32` keeps them exact, as `archc logits` does. The GPU
    /// kernels always compute in f32.
    #[arg(long, value_enum, default_value = "bf16")]
    pub precision: super::logits::PrecisionArg,
    /// The CPU of `--stage llvm` (default x86_64).
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// Print the code after the `O3` pipeline instead of what archc generates (`--stage llvm`).
    #[arg(long)]
    pub optimized: bool,
    /// The GPU architecture: 80 (Ampere) or 90 (Hopper, the default) for `--stage ptx`;
    /// with `--stage kernel` or `program`, shows the program scheduled for the GPU.
    #[arg(long, value_parser = ["80", "90"])]
    pub sm: Option<String>,
    /// Write the stage into this directory instead of printing: `graph.txt`, `fused.txt`,
    /// `kernel.txt`, `program.json`, `llvm.ll`, or `manifest.json` and one `.ptx` per
    /// kernel.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(message)
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::invalid(message)
}

pub fn run(args: Args) -> ExitCode {
    crate::failure::exit(run_inner(&args), "emit")
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    if args.stage != Stage::Llvm && (args.target.is_some() || args.optimized) {
        return Err(usage(format!(
            "--target and --optimized only apply to --stage llvm, not --stage {}",
            args.stage.name()
        )));
    }
    let gpu_stage = matches!(args.stage, Stage::Ptx | Stage::Kernel | Stage::Program);
    if args.sm.is_some() && !gpu_stage {
        return Err(usage(format!(
            "--sm only applies to --stage ptx, kernel or program, not --stage {}",
            args.stage.name()
        )));
    }
    let device = if args.stage == Stage::Ptx || args.sm.is_some() {
        Device::Gpu
    } else {
        Device::Cpu
    };
    let options = Options {
        logits: match args.logits {
            LogitsArg::Last => Logits::Last,
            LogitsArg::All => Logits::All,
        },
        precision: args.precision.precision(),
        device,
        append_in_place: true,
    };
    let name = args.model.display().to_string();
    let failed = |e: archc_compiler::driver::DriverError| invalid(format!("{name}: {e}"));
    let input = open(&args.model, args.stage.has_program())?;
    let (driver, graph) = match &input {
        Input::Spec { spec, weights } => {
            let mode = match args.mode.unwrap_or(ModeArg::Prefill) {
                ModeArg::Prefill => Mode::Prefill,
                ModeArg::Decode => Mode::Decode,
            };
            let driver = match weights {
                Some(w) => archc_runtime::exec::driver(spec, w, options),
                None => Driver::for_spec(spec, options),
            };
            let graph = driver.graph(mode).map_err(failed)?;
            if args.stage == Stage::Graph {
                return output(args, graph.to_string());
            }
            (driver, graph)
        }
        Input::Graph(graph) => {
            check_mode(args, Some(graph.mode))?;
            if args.stage == Stage::Graph {
                return output(args, graph.to_string());
            }
            (Driver::for_graph(options), graph.clone())
        }
        Input::Program(program) => {
            check_mode(args, program_mode(program))?;
            return program_stages(args, program);
        }
    };
    let fused = driver.fused(&graph).map_err(failed)?;
    if args.stage == Stage::Fused {
        return output(args, fused.to_string());
    }
    let program = driver.program_of(&fused).map_err(failed)?;
    program_stages(args, &program)
}

/// The stages from a kernel program on: its text, its document, LLVM IR or PTX.
fn program_stages(args: &Args, program: &Program) -> Result<(), Failure> {
    let name = args.model.display();
    match args.stage {
        Stage::Kernel => output(args, program.to_string()),
        Stage::Program => output(args, program.doc().to_json()),
        Stage::Llvm => {
            let target = args.target.unwrap_or(TargetArg::X86_64).target();
            let text = archc_compiler::driver::llvm_ir(program, &target, args.optimized)
                .map_err(|e| invalid(format!("{name}: internal error: {e}")))?;
            output(args, text)
        }
        Stage::Ptx => ptx_stage(args, program),
        Stage::Clif => {
            let text = archc_compiler::driver::clif_text(program)
                .map_err(|e| invalid(format!("{name}: internal error: {e}")))?;
            output(args, text)
        }
        Stage::Graph | Stage::Fused => Err(usage(format!(
            "{name} is kernel IR: --stage {} comes before the kernel program",
            args.stage.name()
        ))),
    }
}

/// `--mode` must agree with the mode IR text states, when it is given.
fn check_mode(args: &Args, mode: Option<Mode>) -> Result<(), Failure> {
    let asked = args.mode.map(|m| match m {
        ModeArg::Prefill => Mode::Prefill,
        ModeArg::Decode => Mode::Decode,
    });
    match (asked, mode) {
        (Some(a), Some(m)) if a != m => Err(usage(format!(
            "{} is the {} pass; --mode {} does not apply",
            args.model.display(),
            m.as_str(),
            a.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The mode a program's name states (`NAME.prefill`, `NAME.decode`), if it does.
fn program_mode(p: &Program) -> Option<Mode> {
    match p.name.rsplit_once('.') {
        Some((_, "prefill")) => Some(Mode::Prefill),
        Some((_, "decode")) => Some(Mode::Decode),
        _ => None,
    }
}

/// What `emit` reads: a spec (with its weights when the stage needs their formats and the
/// model has any), or IR text.
enum Input {
    Spec {
        spec: Box<Spec>,
        weights: Option<BoundWeights>,
    },
    Graph(Graph),
    Program(Program),
}

/// Opens MODEL: an HF model directory or a `.gguf` file (its weights bound when
/// `weights`: the program's stages read their stored formats), an HF `config.json`,
/// Graph IR or kernel IR text (a file that starts with `graph "`, `program ` or
/// `kernel `), or a `.arch` file (diagnostics printed, exit 1 when invalid).
fn open(path: &Path, weights: bool) -> Result<Input, Failure> {
    let shown = path.display().to_string();
    if path.is_dir() || is_gguf(path) {
        let spec = if is_gguf(path) {
            gguf_spec(path)?
        } else {
            archc_spec::import::from_path(path)?
        };
        let weights = if weights {
            Some(load_weights(&spec, path)?)
        } else {
            None
        };
        return Ok(Input::Spec {
            spec: Box::new(spec),
            weights,
        });
    }
    if path.extension().is_some_and(|e| e == "json") {
        let spec = archc_spec::import::from_path(path).map_err(|e| usage(e.to_string()))?;
        return Ok(Input::Spec {
            spec: Box::new(spec),
            weights: None,
        });
    }
    let src = crate::io::read_arch(path)?;
    let head = src.trim_start();
    let ir = |e: archc_compiler::ir::ParseError| invalid(format!("{shown}:{e}"));
    if head.starts_with("graph \"") {
        return archc_compiler::ir::parse(&src)
            .map(Input::Graph)
            .map_err(ir);
    }
    if head.starts_with("program ") {
        return archc_compiler::kernel::parse_program(&src)
            .map(Input::Program)
            .map_err(ir);
    }
    if head.starts_with("kernel ") {
        // One kernel: a program of it alone, for the code generation stages.
        let k = archc_compiler::kernel::parse_kernel(&src).map_err(ir)?;
        return Ok(Input::Program(Program {
            name: k.name.clone(),
            buffers: Vec::new(),
            kernels: vec![k],
            launches: Vec::new(),
        }));
    }
    let spec = archc_spec::validate::check_source(&shown, &src).map_err(|diags| {
        super::load::print_diagnostics(&shown, &src, &diags);
        invalid("")
    })?;
    Ok(Input::Spec {
        spec: Box::new(spec),
        weights: None,
    })
}

/// Prints `text`, or writes it to `-o DIR`.
fn output(args: &Args, text: String) -> Result<(), Failure> {
    match &args.out {
        // A closed pipe (`archc emit f.arch | head`) is exit 2 with a message.
        None => crate::io::print(&text),
        Some(dir) => write_atomic(dir, args.stage.file_name(), &text)
            .map_err(|e| usage(format!("cannot write into {}: {e}", dir.display()))),
    }
}

/// `--stage ptx`: compiles every kernel for the GPU, then prints or writes the files.
fn ptx_stage(args: &Args, program: &Program) -> Result<(), Failure> {
    let sm =
        ptx::Sm::by_name(args.sm.as_deref().unwrap_or("90")).map_err(|e| usage(e.to_string()))?;
    let kernels = archc_compiler::driver::ptx(program, sm)
        .map_err(|e| invalid(format!("{}: internal error: {e}", args.model.display())))?;
    let manifest = ptx::manifest(&program.name, &kernels);
    let Some(dir) = &args.out else {
        let mut text = manifest;
        for k in &kernels {
            text.push_str(&format!("\n//// {}\n{}", k.file_name(), k.ptx));
        }
        return crate::io::print(&text);
    };
    kernels
        .iter()
        .try_for_each(|k| write_atomic(dir, &k.file_name(), &k.ptx))
        .and_then(|()| write_atomic(dir, Stage::Ptx.file_name(), &manifest))
        .map_err(|e| usage(format!("cannot write into {}: {e}", dir.display())))
}

/// Write `dir/file` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file.
fn write_atomic(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    archc_runtime::outfile::write_atomic(&dir.join(file), text.as_bytes())
}
