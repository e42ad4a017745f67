//! Code generation targets: the host (CPU and features detected, so AVX-512 is used where
//! present and AVX2 otherwise) and fixed CPUs whose output does not depend on the machine
//! (snapshots, cross-compiled objects).

use super::CodegenError;
use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use std::sync::Once;

/// Where generated code runs: an LLVM triple, CPU name and feature string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub triple: String,
    pub cpu: String,
    /// `+feat,-feat,...` as LLVM spells it; empty means the CPU's defaults.
    pub features: String,
}

impl Target {
    /// The machine this process runs on, CPU and features as LLVM detects them.
    pub fn host() -> Target {
        init();
        Target {
            triple: TargetMachine::get_default_triple()
                .as_str()
                .to_string_lossy()
                .into_owned(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    }

    /// x86-64 with AVX-512 (`x86-64-v4`): the fixed CPU of x86 snapshots.
    pub fn x86_64() -> Target {
        Target {
            triple: "x86_64-unknown-linux-gnu".into(),
            cpu: "x86-64-v4".into(),
            features: String::new(),
        }
    }

    /// aarch64 with SVE (`neoverse-v1`): the fixed CPU of aarch64 snapshots and objects.
    pub fn aarch64() -> Target {
        Target {
            triple: "aarch64-unknown-linux-gnu".into(),
            cpu: "neoverse-v1".into(),
            features: String::new(),
        }
    }

    /// A fixed target by architecture name (`x86_64`, `aarch64`), as the CLI spells it.
    pub fn by_name(name: &str) -> Result<Target, CodegenError> {
        match name {
            "x86_64" | "x86-64" => Ok(Target::x86_64()),
            "aarch64" | "arm64" => Ok(Target::aarch64()),
            other => Err(CodegenError::Target {
                message: format!("unknown target `{other}`; expected `x86_64` or `aarch64`"),
            }),
        }
    }

    /// The architecture part of the triple (`x86_64`, `aarch64`).
    pub fn arch(&self) -> &str {
        self.triple.split('-').next().unwrap_or("")
    }

    /// Whether code for this target can run in this process.
    pub fn runs_here(&self) -> bool {
        self.arch() == std::env::consts::ARCH
    }

    /// An LLVM target machine for this target; position-independent code so objects can
    /// be linked into shared libraries.
    pub(super) fn machine(&self) -> Result<TargetMachine, CodegenError> {
        init();
        let triple = TargetTriple::create(&self.triple);
        let t = LlvmTarget::from_triple(&triple).map_err(|e| CodegenError::Target {
            message: format!("LLVM has no target for `{}`: {e}", self.triple),
        })?;
        t.create_target_machine(
            &triple,
            &self.cpu,
            &self.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| CodegenError::Target {
            message: format!(
                "LLVM could not create a target machine for `{}` (cpu `{}`)",
                self.triple, self.cpu
            ),
        })
    }
}

/// Registers the LLVM targets this crate is built with, and the JIT, once per process.
pub(super) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let config = InitializationConfig::default();
        LlvmTarget::initialize_x86(&config);
        LlvmTarget::initialize_aarch64(&config);
        LlvmTarget::initialize_nvptx(&config);
        // SAFETY: a registration call without arguments; it only forces MCJIT to be linked.
        unsafe { inkwell::llvm_sys::execution_engine::LLVMLinkInMCJIT() };
        super::jit::register_libm_symbols();
    });
}
