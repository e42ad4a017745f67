//! The compiler driver: the one place where the stages of compilation are put together,
//! in order, each named (as Triton's `add_stages` and Cranelift's `Context::optimize`):
//!
//! ```text
//! graph    Spec ──lower(mode, logits)──▶ Graph IR                  Driver::graph
//! fused    Graph ──passes::PIPELINE──▶ fused Graph IR              Driver::fused
//! program  fused Graph ──kernel::lower──▶ kernel Program           Driver::program_of
//! llvm     Program ──codegen::llvm──▶ LLVM IR / object / machine   llvm_ir, object, native
//! ptx      Program ──codegen::ptx──▶ PTX and launch shapes          ptx
//! ```
//!
//! A driver starts from a spec (`Driver::new`, `Driver::for_spec`) or from a graph read
//! from its text (`Driver::for_graph`, the stages after `graph`); the code generation
//! stages take a program, from either or from kernel IR text.
//!
//! Every verb that compiles (`emit`, `logits`, `run`, `bench`) calls this driver;
//! none of them puts stages together itself, so what `archc emit` shows is what runs. The
//! program stage resolves its options here: from the target (the CPU and GPU schedules),
//! from the stored formats of the weights (block-quantised parameters stay blocks, float
//! parameters keep their stored type), and from the requested precision.

use crate::codegen::CodegenError;
use crate::ir::{Graph, Mode};
use crate::kernel::lower::{KernelError, KernelOptions, Lowering, ParamFormat, Schedule};
use crate::kernel::Program;
use crate::lower::{LowerError, Options as LowerOptions};
use crate::passes::PassError;
use archc_spec::Spec;
use std::fmt;

pub use crate::lower::Logits;

/// The named stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Graph,
    Fused,
    Program,
    Llvm,
    Ptx,
    /// Cranelift's CLIF: the fast compile tier for the CPU.
    Clif,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Graph,
        Stage::Fused,
        Stage::Program,
        Stage::Llvm,
        Stage::Ptx,
        Stage::Clif,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Graph => "graph",
            Stage::Fused => "fused",
            Stage::Program => "program",
            Stage::Llvm => "llvm",
            Stage::Ptx => "ptx",
            Stage::Clif => "clif",
        }
    }
}

/// How the matmuls over bf16 weights treat their activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Activations stay f32: the kernels compute what the reference interpreter computes,
    /// up to f32 summation order. What `archc logits` and the parity tests use.
    #[default]
    F32,
    /// Activation rows are rounded to bf16 before a matmul with bf16 weights, and bf16
    /// products are accumulated in f32, as PyTorch bf16 and llama.cpp do, so that bf16
    /// dot-product instructions apply. No effect on matmuls whose weights are not bf16.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// What the program is scheduled for: CPU cores or a GPU's grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// Parallel loops spread over cores; vector loops over SIMD lanes. The CPU schedule
    /// may keep per-thread scratch outside the parallel loop (row-blocked matmuls).
    #[default]
    Cpu,
    /// Parallel loops over the grid (a thread or a warp per iteration).
    Gpu,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

/// Everything the pipeline needs besides the spec and the weights' formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Options {
    /// Which positions of a prefill get logits (decode always computes its one row).
    pub logits: Logits,
    pub precision: Precision,
    pub device: Device,
    /// The KV cache grows in place (`BufferKind::Append`). Every executor of archc
    /// honours it; a program without it copies the cache into a new output instead.
    pub append_in_place: bool,
}

impl Default for Options {
    /// What `archc logits` runs: every position's logits, f32 activations, the CPU.
    fn default() -> Options {
        Options {
            logits: Logits::All,
            precision: Precision::F32,
            device: Device::Cpu,
            append_in_place: true,
        }
    }
}

impl Options {
    /// What generation (`archc run`, `archc bench`) runs by default: the last position's
    /// logits only, bf16 activations where the weights are bf16.
    pub fn generation() -> Options {
        Options {
            logits: Logits::Last,
            precision: Precision::Bf16,
            ..Options::default()
        }
    }
}

/// A stage failed. Lowering and kernel errors are the user's (a spec the compiler cannot
/// handle yet); pass and codegen errors are compiler bugs, reported rather than panicking.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverError {
    /// The graph stage of a driver made for a graph (it has no spec to lower).
    NoSpec,
    Lower {
        mode: Mode,
        error: LowerError,
    },
    Pass {
        mode: Mode,
        error: PassError,
    },
    Kernel {
        mode: Mode,
        error: KernelError,
    },
    /// Code generation for the CPU (`Stage::Llvm`, `Stage::Clif`) or a GPU (`Stage::Ptx`).
    Codegen {
        stage: Stage,
        error: CodegenError,
    },
}

impl DriverError {
    /// The stage that failed.
    pub fn stage(&self) -> Stage {
        match self {
            DriverError::NoSpec | DriverError::Lower { .. } => Stage::Graph,
            DriverError::Pass { .. } => Stage::Fused,
            DriverError::Kernel { .. } => Stage::Program,
            DriverError::Codegen { stage, .. } => *stage,
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::NoSpec => f.write_str("no spec to lower: the input is a graph already"),
            DriverError::Lower { mode, error } => {
                write!(f, "lowering ({}): {error}", mode.as_str())
            }
            DriverError::Pass { mode, error } => {
                write!(
                    f,
                    "internal error in the passes ({}): {error}",
                    mode.as_str()
                )
            }
            DriverError::Kernel { mode, error } => {
                write!(f, "kernel program ({}): {error}", mode.as_str())
            }
            DriverError::Codegen { stage, error } => {
                write!(f, "code generation ({}): {error}", stage.as_str())
            }
        }
    }
}

impl std::error::Error for DriverError {}

/// A code generation error of `stage`.
#[cfg(feature = "codegen")]
fn codegen(stage: Stage) -> impl Fn(CodegenError) -> DriverError {
    move |error| DriverError::Codegen { stage, error }
}

/// How each parameter is stored, by canonical name; `None` means the graph's dtype.
pub type Formats<'a> = Box<dyn Fn(&str) -> Option<ParamFormat> + 'a>;

/// The pipeline for one spec (or a graph read from its text), one set of weight formats
/// and one set of options.
pub struct Driver<'a> {
    /// `None` when the pipeline starts from a graph (IR text), past the graph stage.
    spec: Option<&'a Spec>,
    formats: Formats<'a>,
    options: Options,
}

impl fmt::Debug for Driver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("model", &self.spec.map(|s| s.name.as_str()))
            .field("options", &self.options)
            .finish()
    }
}

impl<'a> Driver<'a> {
    /// A driver over `spec` whose parameters have the formats `formats` gives.
    pub fn new(spec: &'a Spec, formats: Formats<'a>, options: Options) -> Driver<'a> {
        Driver {
            spec: Some(spec),
            formats,
            options,
        }
    }

    /// A driver over a spec without weights: every parameter in the spec's dtype.
    pub fn for_spec(spec: &'a Spec, options: Options) -> Driver<'a> {
        Driver::new(spec, Box::new(|_| None), options)
    }

    /// A driver for a graph that is already built (Graph IR text): the stages after
    /// `graph`, every parameter in the graph's dtype.
    pub fn for_graph(options: Options) -> Driver<'a> {
        Driver {
            spec: None,
            formats: Box::new(|_| None),
            options,
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The spec, unless the driver starts from a graph.
    pub fn spec(&self) -> Option<&Spec> {
        self.spec
    }

    /// Stage `graph`: the spec lowered for `mode`.
    pub fn graph(&self, mode: Mode) -> Result<Graph, DriverError> {
        let options = LowerOptions {
            logits: self.options.logits,
        };
        let spec = self.spec.ok_or(DriverError::NoSpec)?;
        crate::lower::lower_with(spec, mode, &options)
            .map_err(|error| DriverError::Lower { mode, error })
    }

    /// Stage `fused`: the graph after the fusion pipeline, verified after every pass (a
    /// compiler bug becomes an error, not a wrong answer; cheap next to the rest).
    pub fn fused(&self, graph: &Graph) -> Result<Graph, DriverError> {
        let mut stages =
            crate::passes::optimize_verified(graph).map_err(|error| DriverError::Pass {
                mode: graph.mode,
                error,
            })?;
        Ok(stages.pop().map_or_else(|| graph.clone(), |(_, g)| g))
    }

    /// The kernel lowering this driver resolves for the program stage: the device's
    /// schedule, the options its precision and cache choices ask for, and the weights'
    /// formats.
    pub fn kernel_options(&self) -> Lowering<'_> {
        let schedule = match self.options.device {
            Device::Cpu => Schedule::cpu(),
            Device::Gpu => Schedule::gpu(),
        };
        // Rounding activations to bf16 pays only for bf16 dot products, which the CPU
        // has; the matmuls decide per node whether their weights are bf16.
        let bf16 = self.options.precision == Precision::Bf16 && self.options.device == Device::Cpu;
        Lowering {
            schedule,
            options: KernelOptions {
                bf16_activations: bf16,
                append_in_place: self.options.append_in_place,
            },
            formats: &*self.formats,
        }
    }

    /// Stage `program`: the kernel program of a fused graph.
    pub fn program_of(&self, fused: &Graph) -> Result<Program, DriverError> {
        crate::kernel::lower::program_with(fused, &self.kernel_options()).map_err(|error| {
            DriverError::Kernel {
                mode: fused.mode,
                error,
            }
        })
    }

    /// Stages `graph`, `fused` and `program` for `mode`.
    pub fn program(&self, mode: Mode) -> Result<Program, DriverError> {
        let graph = self.graph(mode)?;
        let fused = self.fused(&graph)?;
        self.program_of(&fused)
    }

    /// The prefill and decode programs, in that order.
    pub fn programs(&self) -> Result<[Program; 2], DriverError> {
        Ok([self.program(Mode::Prefill)?, self.program(Mode::Decode)?])
    }
}

#[cfg(feature = "codegen")]
/// Stage `llvm`: the LLVM IR of a program's kernels for a CPU, as generated or (with
/// `optimized`) after the `O3` pipeline that runs before machine code.
pub fn llvm_ir(
    program: &Program,
    target: &crate::codegen::llvm::Target,
    optimized: bool,
) -> Result<String, DriverError> {
    crate::codegen::llvm::emit_llvm_ir(&program.kernels, target, optimized)
        .map_err(codegen(Stage::Llvm))
}

#[cfg(feature = "codegen")]
/// Stage `llvm`, to machine code: a relocatable object of the program's kernels for a
/// CPU (what ahead-of-time builds link).
pub fn object(
    program: &Program,
    target: &crate::codegen::llvm::Target,
) -> Result<Vec<u8>, DriverError> {
    crate::codegen::llvm::emit_object(&program.kernels, target).map_err(codegen(Stage::Llvm))
}

/// The kernels of several programs as one list for an ahead-of-time build, equal
/// kernels once: the list, and for every program the index in it of each of its
/// kernels.
pub fn shared_kernels(programs: &[&Program]) -> (Vec<crate::kernel::Kernel>, Vec<Vec<usize>>) {
    let mut all: Vec<crate::kernel::Kernel> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut maps = Vec::with_capacity(programs.len());
    for p in programs {
        let mut map = Vec::with_capacity(p.kernels.len());
        for k in &p.kernels {
            let text = k.to_string();
            let i = *seen.entry(text).or_insert_with(|| {
                all.push(k.clone());
                all.len() - 1
            });
            map.push(i);
        }
        maps.push(map);
    }
    (all, maps)
}

#[cfg(feature = "codegen")]
/// Stage `llvm`, to machine code for an ahead-of-time build: one object holding
/// `kernels` (see [`shared_kernels`]), the table of their addresses and the build
/// `image`, which links with the runtime archive into an executable or a C library.
pub fn linkable_object(
    kernels: &[crate::kernel::Kernel],
    target: &crate::codegen::llvm::Target,
    image: &[u8],
) -> Result<Vec<u8>, DriverError> {
    crate::codegen::llvm::emit_linkable_object(kernels, target, image).map_err(codegen(Stage::Llvm))
}

#[cfg(feature = "codegen")]
/// Stage `llvm`, to machine code loaded in this process (the JIT, or a library from the
/// disk cache that `options` names): what the CPU executor runs.
pub fn native(
    program: &Program,
    target: &crate::codegen::llvm::Target,
    options: &crate::codegen::llvm::Options,
) -> Result<crate::codegen::llvm::CompiledProgram, DriverError> {
    crate::codegen::llvm::compile_kernels_with(&program.kernels, target, options)
        .map_err(codegen(Stage::Llvm))
}

#[cfg(feature = "codegen")]
/// Stage `clif`: the CLIF of every kernel, as the Cranelift tier compiles it.
pub fn clif_text(program: &Program) -> Result<String, DriverError> {
    crate::codegen::clif::emit_clif(&program.kernels).map_err(codegen(Stage::Clif))
}

#[cfg(feature = "codegen")]
/// Stage `clif`, to machine code in this process: the fast tier the CPU executor runs.
pub fn clif(program: &Program) -> Result<crate::codegen::clif::ClifProgram, DriverError> {
    crate::codegen::clif::compile(&program.kernels).map_err(codegen(Stage::Clif))
}

#[cfg(feature = "codegen")]
/// Stage `ptx`: every kernel of a program as PTX for `sm`, with its launch shape.
pub fn ptx(
    program: &Program,
    sm: crate::codegen::ptx::Sm,
) -> Result<Vec<crate::codegen::ptx::PtxKernel>, DriverError> {
    crate::codegen::ptx::emit_kernels(&program.kernels, sm).map_err(codegen(Stage::Ptx))
}
