//! How the executor runs "kernel i of a program on thread t": the `Kernels` trait, with one
//! implementation per engine (compiled native code, or the kernel IR interpreter).

use archc_compiler::codegen::{KernelFn, Origin};
use archc_compiler::kernel::interp::{run_kernel, KBufData};
use archc_compiler::kernel::{Access, Elem, Kernel, Program};

use crate::exec::ExecError;

/// The arguments of one kernel call on one thread, in the kernel calling convention
/// (`compiler/src/kernel/mod.rs`): buffer pointers (null for scratch parameters), their
/// lengths in bytes (0 for scratch), `[seq, past]`, and this thread's place.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub bufs: &'a [*mut u8],
    pub lens: &'a [usize],
    pub dims: [i64; 2],
    pub thread: usize,
    pub threads: usize,
}

/// The kernels of one program, callable by index.
///
/// Implementations must be callable from several threads at once (one call per thread of
/// a launch) and must not keep the pointers after returning.
pub trait Kernels: Send + Sync {
    /// Runs kernel `kernel` (an index into `Program::kernels`) for `call.thread`.
    ///
    /// # Safety
    /// Every non-null `call.bufs[i]` points to `call.lens[i]` bytes, aligned for the
    /// kernel's element type, holding a buffer of the size the program declares for
    /// `call.dims`. Buffers the kernel writes are accessed by nothing else during the
    /// launch except the other threads of the same launch, which write disjoint parts.
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError>;

    /// Whether the threads of a launch may run at the same time. Native code may; the
    /// kernel IR interpreter builds Rust slices over the buffers, so its threads run one
    /// after the other (the split is the same, only the overlap in time is lost).
    fn concurrent(&self) -> bool {
        true
    }

    /// For compiled kernels, where the machine code came from.
    fn origin(&self) -> Option<Origin> {
        None
    }

    /// The code tier the calls run now: `llvm`, `cranelift` or `kernel-interp`.
    fn tier(&self) -> &'static str;

    /// Between two calls of the program: switches to faster code if it has become ready
    /// (see [`Tiered`]); whether it switched.
    fn upgrade(&mut self) -> bool {
        false
    }

    /// Waits for faster code that is being built and switches to it; whether it switched.
    fn finish_upgrade(&mut self) -> bool {
        false
    }
}

/// Calls compiled kernel `kernel` (`f`, if the code has it) for one thread of a launch.
///
/// # Safety
/// The `Kernels::run` contract, which is the `KernelFn` contract.
pub(super) unsafe fn call_compiled(
    f: Option<KernelFn>,
    kernel: usize,
    call: &Call<'_>,
) -> Result<(), ExecError> {
    let f = f.ok_or_else(|| ExecError::Program(format!("no compiled kernel {kernel}")))?;
    let (thread, threads) = (call.thread as i64, call.threads as i64);
    // SAFETY: the caller's contract.
    unsafe { archc_compiler::codegen::invoke(f, call.bufs, call.dims, thread, threads) };
    Ok(())
}

/// Compiled code must have a function for every kernel of the program.
pub(super) fn check_count(stage: &str, functions: usize, kernels: usize) -> Result<(), ExecError> {
    if functions == kernels {
        return Ok(());
    }
    Err(ExecError::Compile {
        stage: stage.into(),
        message: format!("{functions} functions for {kernels} kernels"),
    })
}

/// Kernels compiled ahead of time and linked into this executable or library
/// (`archc build`): one function per kernel of the program, in kernel order.
#[derive(Debug)]
pub struct Linked {
    fns: Vec<KernelFn>,
}

impl Linked {
    /// The linked functions of a program with `kernels` kernels.
    pub fn new(fns: Vec<KernelFn>, kernels: usize) -> Result<Linked, ExecError> {
        check_count("linked", fns.len(), kernels)?;
        Ok(Linked { fns })
    }
}

impl Kernels for Linked {
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError> {
        // SAFETY: forwarded; `Plan::new` checked that no kernel writes read-only memory.
        unsafe { call_compiled(self.fns.get(kernel).copied(), kernel, call) }
    }

    fn origin(&self) -> Option<Origin> {
        Some(Origin::Linked)
    }

    fn tier(&self) -> &'static str {
        "llvm"
    }
}

/// The kernels run by the kernel IR interpreter: slow, checked (every access is bounds
/// checked against the buffer lengths), for debugging and for testing the executor before
/// native code exists.
#[derive(Debug)]
pub struct Interpreted {
    kernels: Vec<Kernel>,
}

impl Interpreted {
    pub fn new(program: &Program) -> Interpreted {
        Interpreted {
            kernels: program.kernels.clone(),
        }
    }
}

impl Kernels for Interpreted {
    unsafe fn run(&self, kernel: usize, call: &Call<'_>) -> Result<(), ExecError> {
        let k = self
            .kernels
            .get(kernel)
            .ok_or_else(|| ExecError::Program(format!("no kernel {kernel}")))?;
        if call.bufs.len() != k.bufs.len() || call.lens.len() != k.bufs.len() {
            return Err(ExecError::Program(format!(
                "{} buffers for {} parameters",
                call.bufs.len(),
                k.bufs.len()
            )));
        }
        // A written buffer must not overlap any other parameter: two Rust views of the
        // same bytes, one of them mutable, are not allowed. The one exception is a cache
        // grown in place (`BufferKind::Append`): the input is the written buffer's prefix,
        // which the kernel does not read (it writes only the rows after it), so the input
        // gets an empty view and a read of it fails cleanly.
        let range = |i: usize| (call.bufs[i] as usize, call.bufs[i] as usize + call.lens[i]);
        let mut unbound = vec![false; k.bufs.len()];
        for (i, p) in k.bufs.iter().enumerate() {
            if !matches!(p.access, Access::Write | Access::ReadWrite) || call.lens[i] == 0 {
                continue;
            }
            let (a0, a1) = range(i);
            for j in (0..k.bufs.len()).filter(|&j| j != i && call.lens[j] > 0) {
                let (b0, b1) = range(j);
                let prefix = b0 == a0 && b1 <= a1 && k.bufs[j].access == Access::Read;
                if prefix {
                    unbound[j] = true;
                } else if a0 < b1 && b0 < a1 {
                    return Err(ExecError::Program(format!(
                        "parameters `{}` and `{}` share memory, which the kernel interpreter cannot run",
                        p.name, k.bufs[j].name
                    )));
                }
            }
        }
        let mut views = Vec::with_capacity(k.bufs.len());
        for (i, p) in k.bufs.iter().enumerate() {
            // A prefix left unbound (see above) is an empty view: any read is out of range.
            let (ptr, bytes) = (call.bufs[i], if unbound[i] { 0 } else { call.lens[i] });
            let write = matches!(p.access, Access::Write | Access::ReadWrite);
            // SAFETY: per the trait contract `ptr` holds `bytes` bytes aligned for the
            // element type; written buffers overlap no other view (checked above), and the
            // threads of a launch do not run concurrently (`concurrent` is false).
            let view = unsafe {
                match (p.access, p.elem, write) {
                    (Access::Scratch { .. }, _, _) => KBufData::Unbound,
                    (_, Elem::F32, true) => KBufData::F32(slice_mut(ptr, bytes / 4)),
                    (_, Elem::F32, false) => KBufData::F32Ro(slice(ptr, bytes / 4)),
                    (_, Elem::Bf16, true) => KBufData::Bf16(slice_mut(ptr, bytes / 2)),
                    (_, Elem::Bf16, false) => KBufData::Bf16Ro(slice(ptr, bytes / 2)),
                    (_, Elem::F16, true) => KBufData::F16(slice_mut(ptr, bytes / 2)),
                    (_, Elem::F16, false) => KBufData::F16Ro(slice(ptr, bytes / 2)),
                    (_, Elem::I32, true) => KBufData::I32(slice_mut(ptr, bytes / 4)),
                    (_, Elem::I32, false) => KBufData::I32Ro(slice(ptr, bytes / 4)),
                    (_, Elem::U8, true) => KBufData::U8(slice_mut(ptr, bytes)),
                    (_, Elem::U8, false) => KBufData::U8Ro(slice(ptr, bytes)),
                    (_, Elem::F8, true) => KBufData::F8(slice_mut(ptr, bytes)),
                    (_, Elem::F8, false) => KBufData::F8Ro(slice(ptr, bytes)),
                }
            };
            views.push(view);
        }
        run_kernel(
            k,
            &mut views,
            call.dims[0],
            call.dims[1],
            call.thread as i64,
            call.threads as i64,
        )
        .map_err(|e| ExecError::Interp(e.to_string()))
    }

    fn concurrent(&self) -> bool {
        false
    }

    fn tier(&self) -> &'static str {
        "kernel-interp"
    }
}

/// # Safety
/// `ptr` is valid and aligned for `len` elements of `T`, or `len` is 0.
unsafe fn slice<'a, T>(ptr: *mut u8, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), len) }
}

/// # Safety
/// As `slice`, and nothing else accesses the memory while the slice lives.
unsafe fn slice_mut<'a, T>(ptr: *mut u8, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts_mut(ptr.cast::<T>(), len) }
}
