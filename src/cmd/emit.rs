//! `archc emit FILE --stage graph|fused|kernel|llvm [--mode prefill|decode] [--target
//! x86_64|aarch64] [--optimized] [-o DIR]`: prints a stage of the compilation — the
//! lowered graph, the graph after the fusion pipeline, its kernel IR program, or the LLVM
//! IR of the program's kernels — or writes it to `DIR/<stage>.<ext>` (atomically: a
//! temporary file renamed into place).
//! Exit status: 0 on success, 1 when the file is invalid or cannot be compiled, 2 when a
//! file cannot be read or written or the arguments do not fit together.
//!
//! `--stage ptx [--sm 80|90]` compiles the kernels for an NVIDIA GPU: printed, the
//! manifest (JSON) and each kernel's PTX; with `-o DIR`, one `DIR/<symbol>.ptx` per kernel
//! and `DIR/manifest.json` (kernel names, launch shapes, parameters).

use super::lower::ModeArg;
use archc_compiler::codegen::llvm::{emit_llvm_ir, Target};
use archc_compiler::kernel::Program;
use archc_compiler::passes::optimize_verified;
use archc_compiler::{lower, Graph, Mode};
use archc_spec::diagnostics::{render, render_colored};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// The Graph IR as lowered, before any pass.
    Graph,
    /// The Graph IR after the fusion pipeline.
    Fused,
    /// The kernel IR program of the fused graph.
    Kernel,
    /// The LLVM IR of the program's kernels for `--target`.
    Llvm,
    /// PTX of each kernel for `--sm`, with a manifest.
    Ptx,
}

impl Stage {
    /// The file `-o DIR` writes.
    fn file_name(self) -> &'static str {
        match self {
            Stage::Graph => "graph.txt",
            Stage::Fused => "fused.txt",
            Stage::Kernel => "kernel.txt",
            Stage::Llvm => "llvm.ll",
            Stage::Ptx => "manifest.json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Graph => "graph",
            Stage::Fused => "fused",
            Stage::Kernel => "kernel",
            Stage::Llvm => "llvm",
            Stage::Ptx => "ptx",
        }
    }

    /// Whether `--target` and `--optimized` mean something for this stage.
    fn is_codegen(self) -> bool {
        matches!(self, Stage::Llvm)
    }
}

/// The fixed CPU targets of `--target`: output never depends on the machine archc runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// x86-64 with AVX-512 (`x86-64-v4`).
    #[value(name = "x86_64")]
    X86_64,
    /// aarch64 (`neoverse-v1`).
    #[value(name = "aarch64")]
    Aarch64,
}

impl TargetArg {
    fn target(self) -> Target {
        match self {
            TargetArg::X86_64 => Target::x86_64(),
            TargetArg::Aarch64 => Target::aarch64(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .arch file to compile.
    pub file: PathBuf,
    /// Which stage to print.
    #[arg(long, value_enum)]
    pub stage: Stage,
    /// Which forward pass to build.
    #[arg(long, value_enum, default_value = "prefill")]
    pub mode: ModeArg,
    /// The code generation target (`--stage llvm`), a fixed CPU.
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// Print the code after the `O3` pipeline instead of what archc generates (`--stage llvm`).
    #[arg(long)]
    pub optimized: bool,
    /// The GPU architecture (`--stage ptx`): 80 (Ampere) or 90 (Hopper, the default).
    #[arg(long, value_parser = ["80", "90"])]
    pub sm: Option<String>,
    /// Write the stage into this directory instead of printing: `graph.txt`, `fused.txt`,
    /// `kernel.txt`, `llvm.ll`, or `manifest.json` and one `.ptx` per kernel.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    if !args.stage.is_codegen() && (args.target.is_some() || args.optimized) {
        eprintln!(
            "archc emit: --target and --optimized only apply to --stage llvm, not --stage {}",
            args.stage.name()
        );
        return ExitCode::from(2);
    }
    if args.stage != Stage::Ptx && args.sm.is_some() {
        eprintln!("archc emit: --sm only applies to --stage ptx");
        return ExitCode::from(2);
    }
    let name = args.file.display().to_string();
    let src = match std::fs::read_to_string(&args.file) {
        Ok(src) => src,
        Err(e) => {
            eprintln!("archc emit: cannot read {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let spec = match archc_spec::validate::check_source(&name, &src) {
        Ok(spec) => spec,
        Err(diags) => {
            let text = if std::io::stderr().is_terminal() {
                render_colored(&name, &src, &diags)
            } else {
                render(&name, &src, &diags)
            };
            eprint!("{text}");
            return ExitCode::from(1);
        }
    };
    let mode = match args.mode {
        ModeArg::Prefill => Mode::Prefill,
        ModeArg::Decode => Mode::Decode,
    };
    if args.stage == Stage::Ptx {
        return ptx_stage(&args, &spec, mode, &name);
    }
    let text = match stage_text(&args, &spec, mode) {
        Ok(text) => text,
        Err(message) => {
            eprintln!("archc emit: {name}: {message}");
            return ExitCode::from(1);
        }
    };
    match &args.out {
        None => {
            // A closed pipe (`archc emit f.arch | head`) is not an error worth a panic.
            let _ = write!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Some(dir) => match write_atomic(dir, args.stage.file_name(), &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("archc emit: cannot write into {}: {e}", dir.display());
                ExitCode::from(2)
            }
        },
    }
}

/// The text of the requested stage, each built from the one before it, or why it cannot
/// be built (a compile failure, exit status 1).
fn stage_text(args: &Args, spec: &archc_spec::Spec, mode: Mode) -> Result<String, String> {
    let graph = lower(spec, mode).map_err(|e| e.to_string())?;
    match args.stage {
        Stage::Graph => Ok(graph.to_string()),
        Stage::Fused => Ok(fused(&graph)?.to_string()),
        Stage::Kernel => Ok(kernel_program(&graph)?.to_string()),
        Stage::Llvm => {
            let program = kernel_program(&graph)?;
            let target = args.target.unwrap_or(TargetArg::X86_64).target();
            emit_llvm_ir(&program.kernels, &target, args.optimized)
                .map_err(|e| format!("internal error: {e}"))
        }
        Stage::Ptx => Err("internal error: --stage ptx has its own output".into()),
    }
}

/// `--stage ptx`: compiles every kernel for the GPU, then prints or writes the files.
fn ptx_stage(args: &Args, spec: &archc_spec::Spec, mode: Mode, name: &str) -> ExitCode {
    use archc_compiler::codegen::ptx;
    let sm = match ptx::Sm::by_name(args.sm.as_deref().unwrap_or("90")) {
        Ok(sm) => sm,
        Err(e) => {
            eprintln!("archc emit: {e}");
            return ExitCode::from(2);
        }
    };
    let compiled = lower(spec, mode)
        .map_err(|e| e.to_string())
        .and_then(|g| kernel_program(&g))
        .and_then(|p| {
            ptx::emit_kernels(&p.kernels, sm)
                .map(|k| (p.name.clone(), k))
                .map_err(|e| format!("internal error: {e}"))
        });
    let (program, kernels) = match compiled {
        Ok(c) => c,
        Err(message) => {
            eprintln!("archc emit: {name}: {message}");
            return ExitCode::from(1);
        }
    };
    let manifest = ptx::manifest(&program, &kernels);
    let Some(dir) = &args.out else {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{manifest}");
        for k in &kernels {
            let _ = write!(out, "\n//// {}\n{}", k.file_name(), k.ptx);
        }
        return ExitCode::SUCCESS;
    };
    let written = kernels
        .iter()
        .try_for_each(|k| write_atomic(dir, &k.file_name(), &k.ptx))
        .and_then(|()| write_atomic(dir, Stage::Ptx.file_name(), &manifest));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archc emit: cannot write into {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

/// The graph after the verified pipeline: a pass that breaks the graph is reported, not
/// printed.
fn fused(graph: &Graph) -> Result<Graph, String> {
    let mut stages = optimize_verified(graph).map_err(|e| format!("internal error: {e}"))?;
    Ok(stages.pop().map_or_else(|| graph.clone(), |(_, g)| g))
}

/// The kernel program of the fused graph.
fn kernel_program(graph: &Graph) -> Result<Program, String> {
    archc_compiler::kernel::lower::program(&fused(graph)?).map_err(|e| e.to_string())
}

/// Write `dir/file` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file.
fn write_atomic(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{file}.tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(file)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
