//! `archc emit FILE --stage graph|fused|kernel [--mode prefill|decode] [-o DIR]`: prints a
//! stage of the compilation — the lowered graph, the graph after the fusion pipeline, or
//! its kernel IR program — or writes it to `DIR/<stage>.txt` (atomically: a temporary
//! file renamed into place).
//! Exit status: 0 on success, 1 when the file is invalid or cannot be compiled, 2 when a
//! file cannot be read or written.

use super::lower::ModeArg;
use archc_compiler::passes::optimize_verified;
use archc_compiler::{lower, Mode};
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
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Graph => "graph",
            Stage::Fused => "fused",
            Stage::Kernel => "kernel",
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
    /// Write `<stage>.txt` into this directory instead of printing.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
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
    let graph = match lower(&spec, mode) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("archc emit: {name}: {e}");
            return ExitCode::from(1);
        }
    };
    // The verified pipeline: a pass that breaks the graph is reported, not printed.
    let stages = match optimize_verified(&graph) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("archc emit: {name}: internal error: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match args.stage {
        Stage::Graph => graph.to_string(),
        Stage::Fused => stages
            .last()
            .map(|(_, g)| g.to_string())
            .unwrap_or_default(),
        Stage::Kernel => {
            let fused = stages.last().map_or(&graph, |(_, g)| g);
            match archc_compiler::kernel::lower::program(fused) {
                Ok(p) => p.to_string(),
                Err(e) => {
                    eprintln!("archc emit: {name}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    match &args.out {
        None => {
            // A closed pipe (`archc emit f.arch | head`) is not an error worth a panic.
            let _ = write!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Some(dir) => match write_atomic(dir, &format!("{}.txt", args.stage.name()), &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("archc emit: cannot write into {}: {e}", dir.display());
                ExitCode::from(2)
            }
        },
    }
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
