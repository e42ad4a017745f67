//! PTX code generation of the kernel IR through LLVM 19's NVPTX target: each kernel
//! becomes one PTX module (for `sm_80` or `sm_90`, PTX ISA 8.0) with one `.entry`, and a
//! manifest says how to launch it.
//!
//! A GPU kernel takes one global pointer per non-scratch buffer parameter, in order, then
//! `seq` and `past` as `i64` (the CPU convention's `bufs`/`dims` arrays become kernel
//! parameters; `thread`/`threads` come from the grid). `plan` decides how the kernel's
//! parallel loop and vector loops map onto threads and warps, `device` supplies the
//! NVPTX intrinsics and the math routines, and `gpu` is the GPU's `body::Target`: the
//! body is written by the same emitter as the CPU's (`codegen::body`), never by
//! `codegen::llvm`.
//!
//! **Invariant:** the PTX text depends only on the kernel, its index and the `Sm`, so
//! snapshots and caches may key on them.

pub mod device;
mod gpu;
pub mod plan;

pub use plan::{Home, KernelPlan, LaunchShape, Mode, Scratch, Trips};

use super::body::{self, new_context};
use super::CodegenError;
use crate::kernel::tile::expand_tiles;
use crate::kernel::{Access, Kernel};
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;
use std::fmt::Write as _;
use std::sync::Once;

/// The GPU architecture generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sm {
    /// Ampere (A100): `mma.sync`, `cp.async`.
    Sm80,
    /// Hopper (H100, H200) without the `sm_90a`-only instructions.
    Sm90,
}

impl Sm {
    /// By the CLI's spelling: `80` or `90` (`sm_80`, `sm_90` also accepted).
    pub fn by_name(name: &str) -> Result<Sm, CodegenError> {
        match name.trim_start_matches("sm_") {
            "80" => Ok(Sm::Sm80),
            "90" => Ok(Sm::Sm90),
            other => Err(CodegenError::Target {
                message: format!("unknown GPU architecture `{other}`; expected `80` or `90`"),
            }),
        }
    }

    /// `sm_80` or `sm_90`, as LLVM and ptxas spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sm::Sm80 => "sm_80",
            Sm::Sm90 => "sm_90",
        }
    }

    /// The compute capability as a number (80, 90).
    pub fn number(self) -> u32 {
        match self {
            Sm::Sm80 => 80,
            Sm::Sm90 => 90,
        }
    }
}

/// The NVPTX triple every kernel is generated for.
pub const TRIPLE: &str = "nvptx64-nvidia-cuda";
/// The PTX ISA version: 8.0 is CUDA 12.0, so any CUDA 12 driver loads the modules.
pub const PTX_FEATURES: &str = "+ptx80";

/// One parameter of a GPU kernel, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A device pointer to buffer `buf` of the kernel (its index in `Kernel::bufs`).
    Buffer {
        buf: usize,
        name: String,
        elem: &'static str,
        access: &'static str,
    },
    /// `seq` or `past`, as a 64-bit integer.
    Dim(&'static str),
}

/// A kernel compiled to PTX.
#[derive(Debug, Clone, PartialEq)]
pub struct PtxKernel {
    /// Its index in the kernel list (also in its symbol).
    pub index: usize,
    /// The kernel IR name.
    pub name: String,
    /// The `.entry` name in the PTX.
    pub symbol: String,
    pub sm: Sm,
    pub ptx: String,
    pub plan: KernelPlan,
    pub params: Vec<Param>,
}

impl PtxKernel {
    /// The file this kernel is written to by `archc emit --stage ptx`.
    pub fn file_name(&self) -> String {
        format!("{}.ptx", self.symbol)
    }
}

/// The parameters of kernel `k` in launch order.
pub fn params(k: &Kernel) -> Vec<Param> {
    let mut out: Vec<Param> = k
        .bufs
        .iter()
        .enumerate()
        .filter(|(_, b)| !matches!(b.access, Access::Scratch { .. }))
        .map(|(i, b)| Param::Buffer {
            buf: i,
            name: b.name.clone(),
            elem: b.elem.as_str(),
            access: match b.access {
                Access::Read => "read",
                Access::Write => "write",
                Access::ReadWrite => "readwrite",
                Access::Scratch { .. } => "scratch",
            },
        })
        .collect();
    out.push(Param::Dim("seq"));
    out.push(Param::Dim("past"));
    out
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| LlvmTarget::initialize_nvptx(&InitializationConfig::default()));
}

fn machine(sm: Sm) -> Result<TargetMachine, CodegenError> {
    init();
    let triple = TargetTriple::create(TRIPLE);
    let t = LlvmTarget::from_triple(&triple).map_err(|e| CodegenError::Target {
        message: format!("LLVM has no NVPTX target: {e}"),
    })?;
    t.create_target_machine(
        &triple,
        sm.as_str(),
        PTX_FEATURES,
        OptimizationLevel::Aggressive,
        RelocMode::Default,
        CodeModel::Default,
    )
    .ok_or_else(|| CodegenError::Target {
        message: format!(
            "LLVM could not create an NVPTX target machine for {}",
            sm.as_str()
        ),
    })
}

/// Marks `f` as a kernel entry. No `maxntid`: with it ptxas aims at the most resident
/// blocks per SM and caps registers at 32, which spills in the matmul kernels.
fn annotate<'ctx>(module: &Module<'ctx>, f: inkwell::values::FunctionValue<'ctx>) {
    let ctx = module.get_context();
    let node = ctx.metadata_node(&[
        f.as_global_value().as_pointer_value().into(),
        ctx.metadata_string("kernel").into(),
        ctx.i32_type().const_int(1, false).into(),
    ]);
    // Adding to a named node cannot fail for a well-formed node.
    let _ = module.add_global_metadata("nvvm.annotations", &node);
}

/// The LLVM IR of kernel `index` for the GPU, optimized (`default<O3>`) when `optimized`.
pub fn emit_llvm_ir(
    index: usize,
    k: &Kernel,
    sm: Sm,
    optimized: bool,
) -> Result<String, CodegenError> {
    // The GPU lowers a tile as its plain loops, whose reductions the plan spreads over a
    // warp.
    let expanded = expand_tiles(k);
    let k = &expanded;
    let tm = machine(sm)?;
    let ctx = new_context();
    let plan = plan_of(k)?;
    let module = build(&ctx, index, k, &plan, &tm)?;
    if optimized {
        optimize(&module, &tm)?;
    }
    Ok(module.print_to_string().to_string())
}

fn plan_of(k: &Kernel) -> Result<KernelPlan, CodegenError> {
    plan::plan(k).map_err(|message| CodegenError::Kernel {
        kernel: k.name.clone(),
        message,
    })
}

fn build<'ctx>(
    ctx: &'ctx inkwell::context::Context,
    index: usize,
    k: &Kernel,
    plan: &KernelPlan,
    tm: &TargetMachine,
) -> Result<Module<'ctx>, CodegenError> {
    let module = ctx.create_module(&body::symbol(index, k));
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let f = body::emit_kernel(ctx, &module, index, k, &gpu::Gpu::new(plan))?;
    annotate(&module, f);
    module.verify().map_err(|e| CodegenError::Llvm {
        stage: "verifier",
        message: e.to_string(),
    })?;
    Ok(module)
}

fn optimize(module: &Module<'_>, tm: &TargetMachine) -> Result<(), CodegenError> {
    let opts = PassBuilderOptions::create();
    opts.set_loop_unrolling(true);
    module
        .run_passes("default<O3>", tm, opts)
        .map_err(|e| CodegenError::Llvm {
            stage: "optimizer",
            message: e.to_string(),
        })
}

/// Compiles kernel `index` (its position in the program's kernel list) to PTX.
pub fn emit_kernel(index: usize, k: &Kernel, sm: Sm) -> Result<PtxKernel, CodegenError> {
    let expanded = expand_tiles(k);
    let k = &expanded;
    let tm = machine(sm)?;
    let ctx = new_context();
    let plan = plan_of(k)?;
    let module = build(&ctx, index, k, &plan, &tm)?;
    optimize(&module, &tm)?;
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm {
            stage: "PTX printer",
            message: e.to_string(),
        })?;
    let ptx = String::from_utf8_lossy(buf.as_slice())
        .trim_end_matches('\0')
        .to_string();
    Ok(PtxKernel {
        index,
        name: k.name.clone(),
        symbol: body::symbol(index, k),
        sm,
        ptx,
        plan,
        params: params(k),
    })
}

/// Compiles every kernel of a list to PTX, in order.
pub fn emit_kernels(kernels: &[Kernel], sm: Sm) -> Result<Vec<PtxKernel>, CodegenError> {
    kernels
        .iter()
        .enumerate()
        .map(|(i, k)| emit_kernel(i, k, sm))
        .collect()
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The manifest of compiled kernels as JSON: for each kernel its name, entry symbol,
/// file, launch shape (mode, threads per block, parallel iterations per block, static
/// and dynamic shared memory, where scratch lives, the grid cap, and the parallel trip
/// count as kernel IR expressions in `seq` and `past`) and parameters. Deterministic: the same kernels give the same bytes.
pub fn manifest(program: &str, kernels: &[PtxKernel]) -> String {
    let mut s = String::new();
    let sm = kernels.first().map_or("", |k| k.sm.as_str());
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  \"program\": {},", json_str(program));
    let _ = writeln!(s, "  \"target\": {},", json_str(TRIPLE));
    let _ = writeln!(s, "  \"sm\": {},", json_str(sm));
    let _ = writeln!(s, "  \"ptx_features\": {},", json_str(PTX_FEATURES));
    let _ = writeln!(s, "  \"kernels\": [");
    for (n, k) in kernels.iter().enumerate() {
        let l = &k.plan.launch;
        let trips = match &l.trips {
            Some(t) => format!(
                "{{\"start\": {}, \"end\": {}, \"step\": {}}}",
                json_str(&expr_text(&t.start)),
                json_str(&expr_text(&t.end)),
                t.step
            ),
            None => "null".into(),
        };
        let _ = writeln!(s, "    {{");
        let _ = writeln!(s, "      \"index\": {},", k.index);
        let _ = writeln!(s, "      \"name\": {},", json_str(&k.name));
        let _ = writeln!(s, "      \"symbol\": {},", json_str(&k.symbol));
        let _ = writeln!(s, "      \"file\": {},", json_str(&k.file_name()));
        let _ = writeln!(s, "      \"mode\": {},", json_str(l.mode.as_str()));
        let _ = writeln!(s, "      \"block\": {},", l.block);
        let _ = writeln!(s, "      \"per_block\": {},", l.per_block);
        let _ = writeln!(s, "      \"shared_bytes\": {},", l.shared_bytes);
        let _ = writeln!(
            s,
            "      \"dynamic_shared_bytes\": {},",
            l.dynamic_shared_bytes
        );
        let _ = writeln!(
            s,
            "      \"scratch\": {{\"home\": \"{}\", \"per_warp\": {}, \"slots\": {}}},",
            k.plan.scratch.home.as_str(),
            k.plan.scratch.per_warp,
            k.plan.scratch.slots
        );
        let max_blocks = l.max_blocks.map_or("null".to_string(), |b| b.to_string());
        let _ = writeln!(s, "      \"max_blocks\": {max_blocks},");
        let _ = writeln!(s, "      \"parallel\": {},", l.parallel);
        let _ = writeln!(s, "      \"trips\": {trips},");
        let _ = writeln!(s, "      \"params\": [");
        for (i, p) in k.params.iter().enumerate() {
            let comma = if i + 1 < k.params.len() { "," } else { "" };
            let text = match p {
                Param::Buffer {
                    buf,
                    name,
                    elem,
                    access,
                } => format!(
                    "{{\"buf\": {buf}, \"name\": {}, \"elem\": \"{elem}\", \"access\": \"{access}\"}}",
                    json_str(name)
                ),
                Param::Dim(d) => format!("{{\"dim\": \"{d}\", \"type\": \"i64\"}}"),
            };
            let _ = writeln!(s, "        {text}{comma}");
        }
        let _ = writeln!(s, "      ]");
        let comma = if n + 1 < kernels.len() { "," } else { "" };
        let _ = writeln!(s, "    }}{comma}");
    }
    let _ = writeln!(s, "  ]");
    let _ = writeln!(s, "}}");
    s
}

/// The kernel IR text of a closed integer expression (constants, `seq`, `past`).
fn expr_text(e: &crate::kernel::Expr) -> String {
    Kernel::new("_").expr(e).to_string()
}
