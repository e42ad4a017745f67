//! The commands of file tests: what each `test` line names, its options, and how it turns
//! the input IR into the output text.
//!
//! An `Err` from a command is a failure of the file (the input does not parse, a pass
//! breaks the graph, ptxas rejects a kernel), never something to bless: only the `verify`
//! command prints errors as its output.

use archc_compiler::codegen::llvm::{emit_llvm_ir, Target};
use archc_compiler::codegen::ptx::{emit_kernel, PtxKernel, Sm};
use archc_compiler::ir::{self, Graph};
use archc_compiler::kernel::lower::{
    program_with, BlockFormat, KernelOptions, Lowering, MatmulSchedule, ParamFormat, Schedule,
};
use archc_compiler::kernel::verify::{verify_kernel, verify_program};
use archc_compiler::kernel::{parse_kernel, parse_program, Kernel};
use archc_compiler::passes::{self, Pass, PIPELINE};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::OnceLock;

/// A command with its options, as the `test` line gives them.
#[derive(Debug)]
pub enum Command {
    /// One pass of the pipeline, by name.
    Pass {
        name: &'static str,
        pass: Pass,
    },
    /// The whole pipeline.
    Passes,
    Kernel(KernelSetup),
    Llvm {
        target: Target,
        optimized: bool,
    },
    Ptx {
        sm: Sm,
    },
    /// Cranelift's CLIF of each kernel, as the fast tier compiles it.
    Clif,
    Verify,
}

/// The options of `kernel`: what `Lowering` it lowers with.
#[derive(Debug, Default)]
pub struct KernelSetup {
    gpu: bool,
    schedule: Option<MatmulSchedule>,
    options: KernelOptions,
    formats: Vec<(String, ParamFormat)>,
}

impl Command {
    /// The command of a `test` line's words (the command name first).
    pub fn parse(words: &[String]) -> Result<Command, String> {
        let (name, options) = words.split_first().ok_or("no command")?;
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let none = |cmd: Command| -> Result<Command, String> {
            match options.first() {
                Some(o) => Err(format!("`{name}` takes no options, found `{o}`")),
                None => Ok(cmd),
            }
        };
        match name.as_str() {
            "pass" => {
                let [pass_name] = options[..] else {
                    return Err(format!(
                        "`pass` takes one pass name, one of: {}",
                        pass_names()
                    ));
                };
                let (name, pass) =
                    PIPELINE
                        .iter()
                        .find(|(n, _)| *n == pass_name)
                        .ok_or_else(|| {
                            format!("unknown pass `{pass_name}`; the passes: {}", pass_names())
                        })?;
                Ok(Command::Pass { name, pass: *pass })
            }
            "passes" => none(Command::Passes),
            "clif" => none(Command::Clif),
            "verify" => none(Command::Verify),
            "kernel" => kernel_setup(&options).map(Command::Kernel),
            "llvm" => {
                let mut target = Target::x86_64();
                let mut optimized = false;
                for o in options {
                    match o {
                        "optimized" => optimized = true,
                        "target=x86_64" => target = Target::x86_64(),
                        "target=znver4" => target = znver4(),
                        "target=aarch64" => target = Target::aarch64(),
                        other => {
                            return Err(format!(
                                "unknown `llvm` option `{other}`; expected target=x86_64|znver4|aarch64 or optimized"
                            ))
                        }
                    }
                }
                Ok(Command::Llvm { target, optimized })
            }
            "ptx" => {
                let mut sm = Sm::Sm90;
                for o in options {
                    let Some(n) = o.strip_prefix("sm=") else {
                        return Err(format!("unknown `ptx` option `{o}`; expected sm=80|90"));
                    };
                    sm = Sm::by_name(n).map_err(|e| e.to_string())?;
                }
                Ok(Command::Ptx { sm })
            }
            other => Err(format!(
                "unknown command `{other}`; expected pass, passes, kernel, llvm, ptx, clif or verify"
            )),
        }
    }

    /// The folder of `compiler/tests/filetests` whose files use this command.
    pub fn category(&self) -> &'static str {
        match self {
            Command::Pass { .. } | Command::Passes => "passes",
            Command::Kernel(_) => "kernel",
            Command::Llvm { .. } => "llvm",
            Command::Ptx { .. } => "ptx",
            Command::Clif => "clif",
            Command::Verify => "verify",
        }
    }

    /// Runs the command on the input IR.
    pub fn run(&self, input: &str) -> Result<String, String> {
        match self {
            Command::Pass { name, pass } => {
                let g = graph_in(input)?;
                let out = pass(&g);
                ir::verify(&out).map_err(|e| format!("after {name} the graph fails: {e}"))?;
                // A pass that finds nothing returns its input; say so instead of
                // printing the input again.
                Ok(if out == g {
                    "unchanged\n".into()
                } else {
                    out.to_string()
                })
            }
            Command::Passes => {
                let g = graph_in(input)?;
                let steps = passes::optimize_verified(&g).map_err(|e| e.to_string())?;
                let (_, last) = steps.last().ok_or("the pipeline returned nothing")?;
                Ok(last.to_string())
            }
            Command::Kernel(setup) => setup.run(&graph_in(input)?),
            Command::Llvm { target, optimized } => {
                let kernels = kernels_in(input)?;
                emit_llvm_ir(&kernels, target, *optimized).map_err(|e| e.to_string())
            }
            Command::Ptx { sm } => ptx(&kernels_in(input)?, *sm),
            Command::Clif => archc_compiler::codegen::clif::emit_clif(&kernels_in(input)?)
                .map_err(|e| e.to_string()),
            Command::Verify => Ok(verify(input)),
        }
    }
}

fn pass_names() -> String {
    PIPELINE
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// AMD Zen 4: x86-64 with AVX512-BF16, the CPU on which bf16 dot products are one
/// instruction.
fn znver4() -> Target {
    Target {
        cpu: "znver4".into(),
        ..Target::x86_64()
    }
}

fn kernel_setup(options: &[&str]) -> Result<KernelSetup, String> {
    let mut s = KernelSetup::default();
    let mut words = options.iter();
    while let Some(&o) = words.next() {
        match o {
            "bf16" => s.options.bf16_activations = true,
            "append" => s.options.append_in_place = true,
            "gpu" => s.gpu = true,
            "schedule=rowtiles" => s.schedule = Some(MatmulSchedule::RowTiles),
            "schedule=blocked" => s.schedule = Some(MatmulSchedule::RowBlocked),
            "schedule=lanes" => s.schedule = Some(MatmulSchedule::Lanes),
            "format" => {
                let spec = words.next().ok_or("`format` takes NAME=FORMAT")?;
                let (name, fmt) = spec
                    .split_once('=')
                    .ok_or_else(|| format!("`format {spec}`: expected NAME=FORMAT"))?;
                let name = name.strip_prefix('@').unwrap_or(name);
                s.formats.push((name.to_string(), param_format(fmt)?));
            }
            other => {
                return Err(format!(
                    "unknown `kernel` option `{other}`; expected bf16, append, gpu, \
                     schedule=rowtiles|blocked|lanes or format NAME=FORMAT"
                ))
            }
        }
    }
    Ok(s)
}

fn param_format(name: &str) -> Result<ParamFormat, String> {
    Ok(match name {
        "f32" => ParamFormat::F32,
        "f16" => ParamFormat::F16,
        "bf16" => ParamFormat::Bf16,
        _ => ParamFormat::Block(
            BlockFormat::ALL
                .into_iter()
                .find(|b| b.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let blocks: Vec<String> = BlockFormat::ALL
                        .iter()
                        .map(|b| b.name().to_lowercase())
                        .collect();
                    format!(
                        "unknown format `{name}`; expected {}, bf16, f16 or f32",
                        blocks.join(", ")
                    )
                })?,
        ),
    })
}

impl KernelSetup {
    fn run(&self, g: &Graph) -> Result<String, String> {
        let base = if self.gpu {
            Schedule::gpu()
        } else {
            Schedule::cpu()
        };
        let schedule = match self.schedule {
            Some(m) => base.with_matmul(m),
            None => base,
        };
        let formats = |name: &str| {
            self.formats
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| *f)
        };
        let lowering = Lowering {
            schedule,
            options: self.options,
            formats: &formats,
        };
        let p = program_with(g, &lowering).map_err(|e| format!("kernel lowering: {e}"))?;
        verify_program(&p).map_err(|e| format!("the program fails the verifier: {e}"))?;
        Ok(p.to_string())
    }
}

/// The input as a graph that verifies.
fn graph_in(input: &str) -> Result<Graph, String> {
    let g = ir::parse(input).map_err(|e| format!("the input graph does not parse: {e}"))?;
    ir::verify(&g).map_err(|e| format!("the input graph fails the verifier: {e}"))?;
    Ok(g)
}

/// The kernels of the input (a whole `program`, or one `kernel`), each verified.
fn kernels_in(input: &str) -> Result<Vec<Kernel>, String> {
    let kernels = if first_word(input) == "program" {
        let p =
            parse_program(input).map_err(|e| format!("the input program does not parse: {e}"))?;
        verify_program(&p).map_err(|e| format!("the input program fails the verifier: {e}"))?;
        p.kernels
    } else {
        vec![parse_kernel(input).map_err(|e| format!("the input kernel does not parse: {e}"))?]
    };
    for k in &kernels {
        verify_kernel(k).map_err(|e| format!("the input fails the verifier: {e}"))?;
    }
    Ok(kernels)
}

fn first_word(input: &str) -> &str {
    input.split_whitespace().next().unwrap_or("")
}

/// The input's printed form when it parses: what a file's input must be, so that every
/// input reads as the printers write. `None` where the text does not parse.
pub fn canonical(input: &str) -> Option<String> {
    match first_word(input) {
        "graph" => ir::parse(input).ok().map(|g| g.to_string()),
        "program" => parse_program(input).ok().map(|p| p.to_string()),
        "kernel" => parse_kernel(input).ok().map(|k| k.to_string()),
        _ => None,
    }
}

/// `ok`, or the first error of the verifier (the parser's, when the text does not parse).
fn verify(input: &str) -> String {
    let result = match first_word(input) {
        "graph" => ir::parse(input)
            .map_err(|e| format!("parse error: {e}"))
            .and_then(|g| ir::verify(&g).map_err(|e| format!("error: {e}"))),
        "program" => parse_program(input)
            .map_err(|e| format!("parse error: {e}"))
            .and_then(|p| verify_program(&p).map_err(|e| format!("error: {e}"))),
        _ => parse_kernel(input)
            .map_err(|e| format!("parse error: {e}"))
            .and_then(|k| verify_kernel(&k).map_err(|e| format!("error: {e}"))),
    };
    match result {
        Ok(()) => "ok\n".into(),
        Err(e) => format!("{e}\n"),
    }
}

/// Each kernel's PTX under a line with its file name and launch shape; every kernel is
/// assembled by ptxas when it is installed.
fn ptx(kernels: &[Kernel], sm: Sm) -> Result<String, String> {
    let ptxas = ptxas();
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let mut out = String::new();
    for (i, k) in kernels.iter().enumerate() {
        let p = emit_kernel(i, k, sm).map_err(|e| e.to_string())?;
        if let Some(ptxas) = &ptxas {
            assemble(ptxas, dir.path(), &p)?;
        }
        let l = &p.plan.launch;
        out.push_str(&format!(
            "//// {}: {} mode, block {}, {} per block, {} B shared, {} B dynamic shared, scratch {} ({} B a warp)\n",
            p.file_name(),
            l.mode.as_str(),
            l.block,
            l.per_block,
            l.shared_bytes,
            l.dynamic_shared_bytes,
            p.plan.scratch.home.as_str(),
            p.plan.scratch.per_warp,
        ));
        out.push_str(&p.ptx);
    }
    Ok(out)
}

/// `ptxas` from `ARCHC_PTXAS` or PATH, looked for once per run. Where it is missing the
/// assembly is skipped with a note (the PTX is still compared), except under `CI=true`,
/// where that is a failure.
fn ptxas() -> Option<PathBuf> {
    static PTXAS: OnceLock<Option<PathBuf>> = OnceLock::new();
    PTXAS.get_or_init(find_ptxas).clone()
}

fn find_ptxas() -> Option<PathBuf> {
    let candidate = std::env::var_os("ARCHC_PTXAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    let found = Process::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(candidate);
    }
    let why = "ptxas not found; install it with `export ARCHC_PTXAS=\"$(tools/ptxas.sh)\"`";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("note: assembly skipped: {why}");
    None
}

fn assemble(ptxas: &Path, dir: &Path, k: &PtxKernel) -> Result<(), String> {
    let file = dir.join(k.file_name());
    std::fs::write(&file, &k.ptx).map_err(|e| format!("writing {}: {e}", file.display()))?;
    let out = Process::new(ptxas)
        .arg(format!("-arch={}", k.sm.as_str()))
        .arg("-o")
        .arg(dir.join(format!("{}.cubin", k.symbol)))
        .arg(&file)
        .output()
        .map_err(|e| format!("running ptxas: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ptxas -arch={} rejects {}:\n{}{}",
            k.sm.as_str(),
            k.file_name(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}
