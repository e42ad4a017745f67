//! The engines that compile kernels in this process (the runtime's `jit` feature):
//! LLVM code (from the disk cache or compiled now), Cranelift code, and tiered code that
//! starts on Cranelift and switches to LLVM.

use super::kernels::{call_compiled, check_count, Call, Kernels};
use crate::exec::ExecError;
use archc_compiler::codegen::llvm::{CompiledProgram, Options, Origin, Target};
use archc_compiler::kernel::Program;

/// Kernels compiled to native code for this machine by the LLVM code generator (loaded
/// from its disk cache when an earlier run compiled the same kernels).
#[derive(Debug)]
pub struct Native {
    code: CompiledProgram,
}

impl Native {
    /// Compiles (or loads from the cache) every kernel of `program` for the host.
    pub fn new(program: &Program, options: &Options) -> Result<Native, ExecError> {
        let compile = |message: String| ExecError::Compile {
            stage: "llvm".into(),
            message,
        };
        let code = archc_compiler::driver::native(program, &Target::host(), options)
            .map_err(|e| compile(e.to_string()))?;
        check_count("llvm", code.kernels().len(), program.kernels.len())?;
        Ok(Native { code })
    }
}

impl Kernels for Native {
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError> {
        // SAFETY: forwarded; `Plan::new` checked that no kernel writes read-only memory.
        unsafe { call_compiled(self.code.kernel(kernel), kernel, call) }
    }

    fn origin(&self) -> Option<Origin> {
        Some(self.code.origin())
    }

    fn tier(&self) -> &'static str {
        "llvm"
    }
}

/// Kernels compiled by the Cranelift tier for this machine, in this process.
#[derive(Debug)]
pub struct Clif {
    code: archc_compiler::codegen::clif::ClifProgram,
}

impl Clif {
    pub fn new(program: &Program) -> Result<Clif, ExecError> {
        let code = archc_compiler::driver::clif(program).map_err(|e| ExecError::Compile {
            stage: "cranelift".into(),
            message: e.to_string(),
        })?;
        check_count("cranelift", code.kernels().len(), program.kernels.len())?;
        Ok(Clif { code })
    }
}

impl Kernels for Clif {
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError> {
        // SAFETY: forwarded.
        unsafe { call_compiled(self.code.kernel(kernel), kernel, call) }
    }

    fn tier(&self) -> &'static str {
        "cranelift"
    }
}

/// Tiered kernels: Cranelift code at once, while LLVM compiles the same program on a
/// background thread (at the same priority as the model: at the lowest, measured, it
/// barely delayed the first token less but starved while decode kept the cores busy, so
/// the switch never came); `upgrade`, called by the executor between two calls of the program
/// (never within one), switches to the LLVM code once it is ready. Both compute the same
/// program; their results differ by summation order and fused multiply-adds (well within
/// the parity tolerance). An LLVM build that fails leaves the Cranelift code running and
/// is reported by `llvm_error`.
pub struct Tiered {
    current: Box<dyn Kernels>,
    /// The LLVM build's result, when it has not been taken yet (a `Mutex` only so that
    /// `Tiered` is `Sync`; it is touched by `&mut self` methods alone).
    pending: Option<std::sync::Mutex<std::sync::mpsc::Receiver<Result<Native, ExecError>>>>,
    failed: Option<ExecError>,
}

impl std::fmt::Debug for Tiered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("tier", &self.current.tier())
            .field("pending", &self.pending.is_some())
            .field("failed", &self.failed)
            .finish()
    }
}

impl Tiered {
    /// Compiles `program` with Cranelift and starts its LLVM build (cached as `options`
    /// says) on a thread of its own.
    pub fn new(program: &Program, options: &Options) -> Result<Tiered, ExecError> {
        let fast = Clif::new(program)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (program, options) = (program.clone(), options.clone());
        std::thread::Builder::new()
            .name("archc-llvm-tier".into())
            .spawn(move || {
                // The receiver may be gone (the model was dropped first): nothing to do.
                let _ = tx.send(Native::new(&program, &options));
            })
            .map_err(|e| ExecError::Compile {
                stage: "tiered".into(),
                message: format!("cannot start the LLVM compile thread: {e}"),
            })?;
        Ok(Tiered {
            current: Box::new(fast),
            pending: Some(std::sync::Mutex::new(rx)),
            failed: None,
        })
    }

    /// Why the LLVM build failed, if it did (the Cranelift code keeps running).
    pub fn llvm_error(&self) -> Option<&ExecError> {
        self.failed.as_ref()
    }

    fn take(&mut self, built: Result<Result<Native, ExecError>, ()>) -> bool {
        self.pending = None;
        match built {
            Ok(Ok(native)) => {
                self.current = Box::new(native);
                true
            }
            Ok(Err(e)) => {
                self.failed = Some(e);
                false
            }
            Err(()) => {
                self.failed = Some(ExecError::Compile {
                    stage: "tiered".into(),
                    message: "the LLVM compile thread ended without a result".into(),
                });
                false
            }
        }
    }
}

impl Kernels for Tiered {
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError> {
        // SAFETY: forwarded; the same contract.
        unsafe { self.current.run(kernel, call) }
    }

    fn origin(&self) -> Option<Origin> {
        self.current.origin()
    }

    fn tier(&self) -> &'static str {
        self.current.tier()
    }

    fn upgrade(&mut self) -> bool {
        use std::sync::mpsc::TryRecvError;
        let Some(rx) = self.pending.as_mut().and_then(|m| m.get_mut().ok()) else {
            return false;
        };
        match rx.try_recv() {
            Ok(built) => self.take(Ok(built)),
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => self.take(Err(())),
        }
    }

    fn finish_upgrade(&mut self) -> bool {
        let Some(rx) = self.pending.as_mut().and_then(|m| m.get_mut().ok()) else {
            return false;
        };
        let built = rx.recv().map_err(|_| ());
        self.take(built)
    }
}
