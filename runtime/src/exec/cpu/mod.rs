//! The CPU executor for kernel programs: binds parameters (zero-copy where the stored type
//! is the kernel's), lays out activations in one aligned arena, keeps the KV cache
//! between calls, and runs the launch sequence on a thread pool.
//!
//! A call runs the prefill program (any `seq`) or the decode program (`seq = 1`) after the
//! `past` tokens already in the cache. Cache inputs `cache.{i}.k/v` are `[past, ...]`. The
//! programs this executor builds (`program_for*`) grow the cache in place
//! (`BufferKind::Append`): the grown cache is the input's own buffer, which keeps spare
//! capacity (an eighth, grown keeping the old rows), and the appending kernels write only
//! the `seq` new rows, so a decode step neither copies the past nor allocates. A program
//! whose grown cache is a plain output (built without `append_in_place`) still runs: it
//! writes into a second buffer that is swapped in after the call.
//!
//! Per token, decode allocates nothing: the arena, the cache and (with `run_into`) the
//! caller's logits vector keep their capacity between calls.

mod aligned;
#[cfg(feature = "jit")]
mod jit;
mod kernels;
mod params;
mod plan;
mod pool;

pub use crate::exec::{driver, formats, Phase};
#[cfg(feature = "jit")]
pub use archc_compiler::codegen::llvm::Options as LlvmOptions;
pub use archc_compiler::codegen::Origin;
pub use archc_compiler::driver::{Device, Logits, Options, Precision};
pub use archc_compiler::floats::{f32_to_bf16, f32_to_f16};
#[cfg(feature = "jit")]
pub use jit::{Clif, Native, Tiered};
pub use kernels::{Call, Interpreted, Kernels, Linked};
pub use params::ParamStats;
pub use pool::Pool;

use crate::exec::ExecError;
use aligned::AlignedBuf;
use archc_compiler::interp::WeightSource;
use archc_compiler::ir::Io;
use archc_compiler::kernel::analysis::{analyze, ProgramInfo};
use archc_compiler::kernel::program::ProgramDoc;
use archc_compiler::kernel::Program;
use params::Params;
use plan::{Layout, Plan, Role};
use std::collections::BTreeMap;

/// The carried values of one sequence between calls: the KV cache and recurrent states.
#[derive(Debug, Default)]
pub struct KvState {
    past: usize,
    /// Current contents (`[past, ...]`) and the spare buffer the next call writes into.
    entries: BTreeMap<Io, KvEntry>,
}

#[derive(Debug, Default)]
struct KvEntry {
    current: AlignedBuf,
    bytes: usize,
    spare: AlignedBuf,
}

impl KvState {
    /// Tokens already in the cache.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Forgets every cached token, keeping the memory for the next sequence.
    pub fn clear(&mut self) {
        self.past = 0;
        for e in self.entries.values_mut() {
            e.bytes = 0;
        }
    }
}

/// One program with its kernels, its analysis, plan and per-call working memory.
struct Loaded {
    doc: ProgramDoc,
    kernels: Box<dyn Kernels>,
    plan: Plan,
    layout: Layout,
    arena: AlignedBuf,
    /// Per buffer: pointer for this call.
    ptrs: Vec<*mut u8>,
    /// Flattened per-launch arguments (rebuilt per call, capacity kept).
    args: Vec<*mut u8>,
    lens: Vec<usize>,
    /// Per kernel: wall time and launches, when `ARCHC_PROFILE` is set.
    profile: Option<Vec<(std::time::Duration, u64)>>,
}

// SAFETY: the raw pointers are scratch space rebuilt at every call, while `&mut self`
// is held; they never outlive a call.
unsafe impl Send for Loaded {}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("program", &self.doc.name)
            .field("kernels", &self.doc.kernels.len())
            .field("launches", &self.doc.launches.len())
            .finish()
    }
}

/// The launch pointers as shared data for the pool (read-only during a launch).
struct Shared<'a> {
    call: Call<'a>,
}
// SAFETY: the pointers are only dereferenced by kernels, under the contract of `Kernels::run`.
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    /// The call for one thread (a method, so closures capture the whole `Sync` struct).
    fn for_thread(&self, thread: usize) -> Call<'a> {
        Call {
            thread,
            ..self.call
        }
    }
}

/// A model loaded for the CPU: prefill and decode programs, parameters and a thread pool.
#[derive(Debug)]
pub struct CpuModel<'w> {
    params: Params<'w>,
    prefill: Loaded,
    decode: Loaded,
    pool: Pool,
    vocab: usize,
}

impl<'w> CpuModel<'w> {
    /// Loads two programs over the same weights. `kernels` gives each program's kernels
    /// (compiled or interpreted).
    pub fn new(
        prefill: (Program, Box<dyn Kernels>),
        decode: (Program, Box<dyn Kernels>),
        weights: &'w dyn WeightSource,
        vocab: usize,
        threads: usize,
    ) -> Result<CpuModel<'w>, ExecError> {
        CpuModel::from_docs(
            (prefill.0.doc(), prefill.1),
            (decode.0.doc(), decode.1),
            weights,
            vocab,
            threads,
        )
    }

    /// Loads two programs given as documents (what `archc build` ships: the programs
    /// without kernel bodies) with their kernels, over the same weights. Every parameter
    /// is checked against the weights (shape and stored type), naming the tensor.
    pub fn from_docs(
        prefill: (ProgramDoc, Box<dyn Kernels>),
        decode: (ProgramDoc, Box<dyn Kernels>),
        weights: &'w dyn WeightSource,
        vocab: usize,
        threads: usize,
    ) -> Result<CpuModel<'w>, ExecError> {
        let mut params = Params::default();
        let prefill = load(prefill.0, prefill.1, weights, &mut params)
            .map_err(|e| e.at("prefill program"))?;
        let decode =
            load(decode.0, decode.1, weights, &mut params).map_err(|e| e.at("decode program"))?;
        Ok(CpuModel {
            params,
            prefill,
            decode,
            pool: Pool::new(threads)?,
            vocab,
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The vocabulary: the width of a row of logits.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Where the machine code of the prefill and decode programs came from (`None` for
    /// interpreted kernels).
    pub fn origins(&self) -> [Option<Origin>; 2] {
        [self.prefill.kernels.origin(), self.decode.kernels.origin()]
    }

    /// The code tier each program runs now (`llvm`, `cranelift`, `kernel-interp`).
    pub fn tiers(&self) -> [&'static str; 2] {
        [self.prefill.kernels.tier(), self.decode.kernels.tier()]
    }

    /// Waits for tiered kernels' LLVM builds and switches both programs to them; whether
    /// either switched.
    pub fn finish_upgrade(&mut self) -> bool {
        let a = self.prefill.kernels.finish_upgrade();
        let b = self.decode.kernels.finish_upgrade();
        a || b
    }

    pub fn param_stats(&self) -> ParamStats {
        self.params.stats()
    }

    /// The program a phase runs, as its document.
    pub fn program(&self, phase: Phase) -> &ProgramDoc {
        match phase {
            Phase::Prefill => &self.prefill.doc,
            Phase::Decode => &self.decode.doc,
        }
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvState {
        KvState::default()
    }

    /// Runs `tokens` after the cached ones through the chosen program and returns their
    /// logits, `[tokens.len() * vocab]` (`[vocab]` for a prefill of a model built with
    /// `Logits::Last`); the cache grows by `tokens.len()`.
    pub fn run(
        &mut self,
        phase: Phase,
        cache: &mut KvState,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ExecError> {
        let mut logits = Vec::new();
        self.run_into(phase, cache, tokens, &mut logits)?;
        Ok(logits)
    }

    /// `run` writing the logits into `logits` (cleared first), which keeps its capacity:
    /// a caller that passes the same vector every step allocates nothing per token.
    pub fn run_into(
        &mut self,
        phase: Phase,
        cache: &mut KvState,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), ExecError> {
        if tokens.is_empty() {
            return Err(ExecError::Input("a call needs at least one token".into()));
        }
        if phase == Phase::Decode && tokens.len() != 1 {
            return Err(ExecError::Input(format!(
                "decode takes one token, got {}",
                tokens.len()
            )));
        }
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab)
        {
            return Err(ExecError::Input(format!(
                "token {i} is id {t}, outside the vocabulary of {}",
                self.vocab
            )));
        }
        let seq = tokens.len();
        let past = cache.past;
        let end = past
            .checked_add(seq)
            .filter(|&e| i32::try_from(e).is_ok())
            .ok_or_else(|| ExecError::Input("position overflows 32 bits".into()))?;
        let loaded = match phase {
            Phase::Prefill => &mut self.prefill,
            Phase::Decode => &mut self.decode,
        };
        // Between calls, never within one: every launch of a call runs one tier's code.
        loaded.kernels.upgrade();
        execute(
            loaded,
            &self.params,
            &self.pool,
            cache,
            tokens,
            past,
            logits,
        )?;
        cache.past = end;
        Ok(())
    }
}

fn load<'w>(
    doc: ProgramDoc,
    kernels: Box<dyn Kernels>,
    weights: &'w dyn WeightSource,
    params: &mut Params<'w>,
) -> Result<Loaded, ExecError> {
    let info: ProgramInfo = analyze(&doc)?;
    let mut plan = Plan::new(&doc, &info, |i| {
        let b = &doc.buffers[i];
        let name = b.name.strip_prefix('@').unwrap_or(&b.name);
        let mut shape = Vec::with_capacity(b.shape.len());
        for d in &b.shape {
            let n = d
                .as_const()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ExecError::param(name, "a symbolic shape"))?;
            shape.push(n);
        }
        params.bind(weights, name, b.elem, &shape)
    })?;
    plan.zero_at_first_use();
    let n = doc.buffers.len();
    let n_kernels = doc.kernels.len();
    Ok(Loaded {
        doc,
        kernels,
        plan,
        layout: Layout::default(),
        arena: AlignedBuf::new(),
        ptrs: vec![std::ptr::null_mut(); n],
        args: Vec::new(),
        lens: Vec::new(),
        profile: profiling().then(|| vec![Default::default(); n_kernels]),
    })
}

/// Whether `ARCHC_PROFILE` asks for per-kernel timings (set and not `0`).
fn profiling() -> bool {
    std::env::var("ARCHC_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Loaded {
    /// Per-kernel time shares, most expensive first, one kernel per line.
    fn profile_report(&self, phase: &str) -> Option<String> {
        let prof = self.profile.as_ref()?;
        let total: f64 = prof.iter().map(|(d, _)| d.as_secs_f64()).sum();
        if total == 0.0 {
            return None;
        }
        let mut rows: Vec<usize> = (0..prof.len()).filter(|&k| prof[k].1 > 0).collect();
        rows.sort_by(|&a, &b| prof[b].0.cmp(&prof[a].0));
        let mut out = format!("{phase}: {:.3}s in kernels\n", total);
        for k in rows {
            let (d, n) = prof[k];
            out.push_str(&format!(
                "  {:5.1}%  {:9.3} ms  {:6} launches  {:9.1} us/launch  {}\n",
                100.0 * d.as_secs_f64() / total,
                1e3 * d.as_secs_f64(),
                n,
                1e6 * d.as_secs_f64() / n as f64,
                self.doc.kernels[k].name
            ));
        }
        Some(out)
    }
}

impl Drop for CpuModel<'_> {
    fn drop(&mut self) {
        for (phase, l) in [("prefill", &self.prefill), ("decode", &self.decode)] {
            if let Some(r) = l.profile_report(phase) {
                eprint!("{r}");
            }
        }
    }
}

fn execute(
    l: &mut Loaded,
    params: &Params<'_>,
    pool: &Pool,
    cache: &mut KvState,
    tokens: &[u32],
    past: usize,
    logits: &mut Vec<f32>,
) -> Result<(), ExecError> {
    let seq = tokens.len();
    l.plan.layout(&l.doc.buffers, seq, past, &mut l.layout)?;
    let need = l.layout.arena_bytes;
    if !l.arena.reserve(need, need / 2) {
        return Err(ExecError::Memory(format!(
            "cannot allocate {need} bytes of activations"
        )));
    }

    // Cache buffers: the current contents must be exactly what the program reads. Entries
    // are created on the first call only, so decode does not allocate names per token.
    for role in &l.plan.roles {
        if let Role::CarriedIn(io) | Role::CarriedOut(io) | Role::CarriedGrow(io) = role {
            if !cache.entries.contains_key(io) {
                cache.entries.insert(io.clone(), KvEntry::default());
            }
        }
    }
    let vanished = || ExecError::Program("a cache entry vanished".into());
    for (i, role) in l.plan.roles.iter().enumerate() {
        match role {
            Role::CarriedIn(io) => {
                let e = cache.entries.get_mut(io).ok_or_else(vanished)?;
                let want = l.layout.bytes[i];
                // A recurrent state has its fixed size from the first call on: it starts
                // as zeros (a fresh sequence, or after `clear`).
                if matches!(io, Io::State { .. }) && e.bytes == 0 && want > 0 {
                    if !e.current.reserve(want, 0) {
                        return Err(ExecError::Memory(format!(
                            "cannot allocate {want} bytes for state `{io}`"
                        )));
                    }
                    e.current.as_mut_slice()[..want].fill(0);
                    e.bytes = want;
                }
                if e.bytes != l.layout.bytes[i] {
                    return Err(ExecError::Program(format!(
                        "cache `{io}` holds {} bytes, the program reads {} for past {past}",
                        e.bytes, l.layout.bytes[i]
                    )));
                }
            }
            Role::CarriedOut(io) => {
                let e = cache.entries.get_mut(io).ok_or_else(vanished)?;
                let want = l.layout.bytes[i];
                if !e.spare.reserve(want, want) {
                    return Err(ExecError::Memory(format!(
                        "cannot allocate {want} bytes for cache `{io}`"
                    )));
                }
            }
            Role::CarriedGrow(io) => {
                // In place: the kernels write the new rows after the old ones, in the
                // same buffer. Growing keeps the old rows and leaves an eighth spare, so
                // a prefill leaves room for the decode steps after it and decode
                // reallocates (and copies) only every ~past/8 tokens.
                let e = cache.entries.get_mut(io).ok_or_else(vanished)?;
                let want = l.layout.bytes[i];
                if !e.current.grow(want, want / 8, e.bytes) {
                    return Err(ExecError::Memory(format!(
                        "cannot allocate {want} bytes for cache `{io}`"
                    )));
                }
            }
            _ => {}
        }
    }

    // Pointers of every buffer for this call.
    let base = l.arena.as_ptr();
    for (i, role) in l.plan.roles.iter().enumerate() {
        let p = match role {
            Role::Param(p) => params.data[*p].0.ptr(),
            // SAFETY: `layout` placed every arena buffer inside `arena_bytes`, which the
            // arena now holds.
            Role::Arena | Role::Tokens | Role::Positions | Role::Logits => unsafe {
                base.add(l.layout.offset[i])
            },
            Role::CarriedIn(n) | Role::CarriedGrow(n) => cache
                .entries
                .get(n)
                .map_or(std::ptr::null_mut(), |e| e.current.as_ptr()),
            Role::CarriedOut(n) => cache
                .entries
                .get(n)
                .map_or(std::ptr::null_mut(), |e| e.spare.as_ptr()),
            Role::Alias(_) => std::ptr::null_mut(),
        };
        l.ptrs[i] = p;
    }
    for (i, role) in l.plan.roles.iter().enumerate() {
        if let Role::Alias(r) = role {
            l.ptrs[i] = l.ptrs[*r];
        }
    }

    // Inputs and deterministic zeroes.
    for (i, role) in l.plan.roles.iter().enumerate() {
        if matches!(role, Role::Tokens | Role::Positions) && l.layout.bytes[i] != 4 * seq {
            return Err(ExecError::Program(format!(
                "input `{}` is {} bytes, expected {} for seq {seq}",
                l.doc.buffers[i].name,
                l.layout.bytes[i],
                4 * seq
            )));
        }
    }
    let arena = l.arena.as_mut_slice();
    for (i, role) in l.plan.roles.iter().enumerate() {
        let at = l.layout.offset[i];
        match role {
            Role::Tokens => {
                for (k, &t) in tokens.iter().enumerate() {
                    let v = t as i32;
                    arena[at + 4 * k..at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            Role::Positions => {
                for k in 0..seq {
                    let v = (past + k) as i32;
                    arena[at + 4 * k..at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {}
        }
    }
    // Buffers read before written are zeroed just before their first launch (the plan
    // switched them with `zero_at_first_use` at load), so their bytes can serve other
    // temps until then; `zero_first` is empty but kept correct for a plan that did not.
    for &b in &l.plan.zero_first {
        let at = l.layout.offset[b];
        arena[at..at + l.layout.bytes[b]].fill(0);
    }

    // Launch arguments, flattened.
    l.args.clear();
    l.lens.clear();
    for launch in &l.doc.launches {
        for slot in &launch.bufs {
            match slot {
                Some(b) => {
                    l.args.push(l.ptrs[*b]);
                    l.lens.push(l.layout.bytes[*b]);
                }
                None => {
                    l.args.push(std::ptr::null_mut());
                    l.lens.push(0);
                }
            }
        }
    }

    let dims = [seq as i64, past as i64];
    let mut at = 0;
    for (li, launch) in l.doc.launches.iter().enumerate() {
        let n = launch.bufs.len();
        let bufs = &l.args[at..at + n];
        let lens = &l.lens[at..at + n];
        at += n;
        for &b in l.plan.zero_before(li) {
            let at = l.layout.offset[b];
            l.arena.as_mut_slice()[at..at + l.layout.bytes[b]].fill(0);
        }
        let kernels = &*l.kernels;
        let k = launch.kernel;
        let fail = |e: ExecError| ExecError::Kernel {
            launch: li,
            kernel: l.doc.kernels[k].name.clone(),
            message: e.to_string(),
        };
        let started = l.profile.is_some().then(std::time::Instant::now);
        if l.plan.parallel[k] && pool.threads() > 1 && !kernels.concurrent() {
            for t in 0..pool.threads() {
                let call = Call {
                    bufs,
                    lens,
                    dims,
                    thread: t,
                    threads: pool.threads(),
                };
                // SAFETY: every pointer was set above for this call's layout.
                run_caught(|| unsafe { kernels.run(k, &call) }).map_err(&fail)?;
            }
        } else if l.plan.parallel[k] && pool.threads() > 1 {
            let shared = Shared {
                call: Call {
                    bufs,
                    lens,
                    dims,
                    thread: 0,
                    threads: pool.threads(),
                },
            };
            let error = std::sync::Mutex::new(None);
            pool.run(&|t| {
                let call = shared.for_thread(t);
                // SAFETY: every pointer was set above for this call's layout.
                if let Err(e) = unsafe { kernels.run(k, &call) } {
                    let mut slot = error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.get_or_insert(e);
                }
            })
            .map_err(&fail)?;
            if let Some(e) = error
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                return Err(fail(e));
            }
        } else {
            // A kernel without a parallel loop would do the same work on every thread.
            let call = Call {
                bufs,
                lens,
                dims,
                thread: 0,
                threads: 1,
            };
            // SAFETY: as above.
            run_caught(|| unsafe { kernels.run(k, &call) }).map_err(&fail)?;
        }
        if let (Some(t0), Some(prof)) = (started, l.profile.as_mut()) {
            prof[k].0 += t0.elapsed();
            prof[k].1 += 1;
        }
    }

    // Results: logits out, grown caches in.
    logits.clear();
    for (i, role) in l.plan.roles.iter().enumerate() {
        match role {
            Role::Logits => {
                let at = l.layout.offset[i];
                let n = l.layout.bytes[i] / 4;
                let bytes = &l.arena.as_slice()[at..at + 4 * n];
                // Grows only when the caller's vector is too small (the first call).
                logits.resize(n, 0.0);
                // SAFETY: `logits` holds exactly `4 * n` bytes, any bit pattern is an f32,
                // and the arena slot and the caller's vector do not overlap. The arena
                // holds native-endian f32 written by the kernels.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        logits.as_mut_ptr().cast::<u8>(),
                        4 * n,
                    );
                }
            }
            Role::CarriedOut(n) => {
                if let Some(e) = cache.entries.get_mut(n) {
                    std::mem::swap(&mut e.current, &mut e.spare);
                    e.bytes = l.layout.bytes[i];
                }
            }
            Role::CarriedGrow(n) => {
                if let Some(e) = cache.entries.get_mut(n) {
                    e.bytes = l.layout.bytes[i];
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What runs the kernels of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Native code from the LLVM code generator.
    Llvm,
    /// Native code from Cranelift: compiled in milliseconds, scalar, computing what the
    /// kernel IR interpreter computes.
    Cranelift,
    /// Cranelift code first, switched to LLVM code between calls once a background
    /// compile finishes (`Tiered`).
    Tiered,

    /// The kernel IR interpreter (slow, bounds-checked; for debugging).
    KernelInterp,
}

impl Engine {
    /// The `--backend` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llvm => "llvm",
            Engine::Cranelift => "cranelift",
            Engine::Tiered => "tiered",
            Engine::KernelInterp => "kernel-interp",
        }
    }
}

#[cfg(feature = "jit")]
/// A stage of the driver failed: the error, with a hint for models the compiled backends
/// cannot run yet.
fn compile_error(engine: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Compile {
        stage: format!("--backend {engine}"),
        message: format!("{e} (try the reference interpreter: --backend interp)"),
    }
}

/// The kernels of `program` for `engine`; `llvm` says where compiled code is cached.
#[cfg(feature = "jit")]
pub fn kernels(
    program: &Program,
    engine: Engine,
    llvm: &LlvmOptions,
) -> Result<Box<dyn Kernels>, ExecError> {
    match engine {
        Engine::KernelInterp => Ok(Box::new(Interpreted::new(program))),
        Engine::Llvm => Ok(Box::new(Native::new(program, llvm)?)),
        Engine::Cranelift => Ok(Box::new(Clif::new(program)?)),
        Engine::Tiered => Ok(Box::new(Tiered::new(program, llvm)?)),
    }
}

/// The number of threads to use when none is asked for: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(feature = "jit")]
impl<'w> CpuModel<'w> {
    /// Builds both programs of `spec` with the default options (every position's logits,
    /// f32 activations), their kernels for `engine`, and binds `weights`. The LLVM code
    /// cache is the one the environment configures (`ARCHC_CACHE_DIR`, `ARCHC_NO_CACHE`;
    /// see `CacheSettings`).
    pub fn from_spec(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
    ) -> Result<CpuModel<'w>, ExecError> {
        let llvm = LlvmOptions::from_env();
        Self::from_spec_options(spec, weights, engine, threads, &llvm, &Options::default())
    }

    /// Builds both programs of `spec` through the driver with `options` (which logits,
    /// which precision), their kernels for `engine` (`llvm`: the code cache), and binds
    /// `weights`. Errors say which stage failed and, for a model the kernel path cannot
    /// run yet, suggest the graph interpreter.
    pub fn from_spec_options(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
        llvm: &LlvmOptions,
        options: &Options,
    ) -> Result<CpuModel<'w>, ExecError> {
        let options = Options {
            device: Device::Cpu,
            ..*options
        };
        let d = driver(spec, weights, options);
        let mut built = Vec::new();
        for mode in [archc_compiler::Mode::Prefill, archc_compiler::Mode::Decode] {
            let p = d
                .program(mode)
                .map_err(|e| compile_error(engine.as_str(), e))?;
            let k = kernels(&p, engine, llvm)?;
            built.push((p, k));
        }
        let decode = built
            .pop()
            .ok_or(ExecError::Program("no decode program".into()))?;
        let prefill = built
            .pop()
            .ok_or(ExecError::Program("no prefill program".into()))?;
        let vocab = usize::try_from(spec.vocab)
            .map_err(|_| ExecError::Program("vocabulary too large".into()))?;
        CpuModel::new(prefill, decode, weights, vocab, threads)
    }
}

/// Runs one kernel call on this thread, turning a panic into an error.
fn run_caught(f: impl FnOnce() -> Result<(), ExecError>) -> Result<(), ExecError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(ExecError::Program("the kernel panicked".into())),
    }
}

#[cfg(test)]
mod tests;
