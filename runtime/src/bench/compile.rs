//! The compile tiers side by side: the kernels of a model's two programs (prefill and
//! decode, as generation builds them) compiled from scratch by LLVM (no disk cache) and
//! by Cranelift, alternating which goes first each round, timed by the wall clock.
//! Lowering to the kernel programs is timed once apart: it is the same for both tiers.

use super::timing::median;
use super::BenchError;
use archc_compiler::codegen::llvm::{Options as LlvmOptions, Target};
use archc_compiler::driver::{self, Driver, Options};
use archc_compiler::kernel::Program;
use archc_compiler::Mode;
use archc_spec::Spec;
use std::time::Instant;

/// What one compile benchmark measured, in seconds per round.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileBench {
    /// Kernels in the two programs together.
    pub kernels: usize,
    /// Lowering the spec to both kernel programs (graph, passes, kernel lowering).
    pub lower_s: f64,
    /// Compiling both programs' kernels to machine code, each round.
    pub llvm_s: Vec<f64>,
    pub cranelift_s: Vec<f64>,
}

impl CompileBench {
    pub fn llvm_median(&self) -> f64 {
        median(&self.llvm_s)
    }

    pub fn cranelift_median(&self) -> f64 {
        median(&self.cranelift_s)
    }

    /// Cranelift's median time as a fraction of LLVM's.
    pub fn ratio(&self) -> f64 {
        self.cranelift_median() / self.llvm_median().max(f64::MIN_POSITIVE)
    }
}

/// Compiles the programs of `spec` with both tiers `rounds` times, alternating.
pub fn bench_compile(
    spec: &Spec,
    options: Options,
    rounds: usize,
) -> Result<CompileBench, BenchError> {
    if rounds == 0 {
        return Err(BenchError::EmptyRun {
            prompt: 1,
            gen: 1,
            repeats: rounds,
        });
    }
    let start = Instant::now();
    let driver = Driver::for_spec(spec, options);
    let programs: Vec<Program> = [Mode::Prefill, Mode::Decode]
        .into_iter()
        .map(|m| driver.program(m))
        .collect::<Result<_, _>>()
        .map_err(BenchError::Driver)?;
    let lower_s = start.elapsed().as_secs_f64();
    let target = Target::host();
    let llvm = LlvmOptions::no_cache();
    let time_llvm = || -> Result<f64, BenchError> {
        let start = Instant::now();
        for p in &programs {
            driver::native(p, &target, &llvm).map_err(BenchError::Driver)?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let time_clif = || -> Result<f64, BenchError> {
        let start = Instant::now();
        for p in &programs {
            driver::clif(p).map_err(BenchError::Driver)?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let (mut llvm_s, mut cranelift_s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            llvm_s.push(time_llvm()?);
            cranelift_s.push(time_clif()?);
        } else {
            cranelift_s.push(time_clif()?);
            llvm_s.push(time_llvm()?);
        }
    }
    Ok(CompileBench {
        kernels: programs.iter().map(|p| p.kernels.len()).sum(),
        lower_s,
        llvm_s,
        cranelift_s,
    })
}
