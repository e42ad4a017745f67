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
mod kernels;
mod plan;
mod pool;

pub use archc_compiler::codegen::llvm::{Options as LlvmOptions, Origin};
pub use archc_compiler::lower::Logits;
pub use kernels::{Call, Interpreted, Kernels, Native};
pub use pool::Pool;

use aligned::AlignedBuf;
use archc_compiler::kernel::{Elem, Program};
use plan::{Layout, Plan, Role};
use std::collections::BTreeMap;

use crate::weights::{decode_f32, Dtype};
use archc_compiler::interp::{WeightDType, WeightSource};

/// A parameter's bytes as the kernels read them.
#[derive(Debug)]
enum ParamData<'w> {
    /// Borrowed from the bound checkpoint (memory-mapped or bind's own copy): no copy.
    Borrowed(&'w [u8]),
    /// Converted to the kernel's element type (or realigned).
    Owned(AlignedBuf),
}

impl ParamData<'_> {
    fn ptr(&self) -> *mut u8 {
        match self {
            // Kernels only read parameters (`Plan::new` refuses writes), so handing out
            // a mutable pointer to shared bytes never leads to a write.
            ParamData::Borrowed(b) => b.as_ptr().cast_mut(),
            ParamData::Owned(b) => b.as_ptr(),
        }
    }
}

/// The parameters of both programs, each stored once per element type.
#[derive(Debug, Default)]
struct Params<'w> {
    index: BTreeMap<(String, &'static str), usize>,
    data: Vec<(ParamData<'w>, usize)>,
}

/// How many parameters were bound without a copy, and how many bytes were copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamStats {
    pub zero_copy: usize,
    pub converted: usize,
    pub converted_bytes: usize,
}

impl<'w> Params<'w> {
    /// The table index of parameter `name` as `elem` with `numel` elements of `shape`.
    fn bind(
        &mut self,
        weights: &'w dyn WeightSource,
        name: &str,
        elem: Elem,
        shape: &[usize],
    ) -> Result<usize, String> {
        let key = (name.to_string(), elem.as_str());
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        if elem == Elem::U8 {
            // Block-quantised: the kernels decode the stored blocks in place.
            let b = weights.blocks(name).ok_or_else(|| {
                format!("parameter `{name}`: the program reads blocks the checkpoint does not hold")
            })?;
            let numel: usize = shape.iter().product();
            if b.bytes.len() != numel {
                return Err(format!(
                    "parameter `{name}`: {} bytes of {} blocks stored, the program reads {numel}",
                    b.bytes.len(),
                    b.format.name()
                ));
            }
            self.data.push((ParamData::Borrowed(b.bytes), numel));
            self.index.insert(key, self.data.len() - 1);
            return Ok(self.data.len() - 1);
        }
        let view = weights
            .get(name)
            .ok_or_else(|| format!("parameter `{name}` is not bound to a checkpoint tensor"))?;
        if view.shape != shape {
            return Err(format!(
                "parameter `{name}` has shape {:?} in the checkpoint, the program expects {shape:?}",
                view.shape
            ));
        }
        let numel: usize = shape.iter().product();
        let (stored, dtype) = match view.dtype {
            WeightDType::F32 => (Elem::F32, Dtype::F32),
            WeightDType::Bf16 => (Elem::Bf16, Dtype::Bf16),
            WeightDType::F16 => (Elem::F16, Dtype::F16),
        };
        let aligned = (view.bytes.as_ptr() as usize) % elem.bytes() == 0;
        let data = if stored == elem && aligned && view.bytes.len() == numel * elem.bytes() {
            ParamData::Borrowed(view.bytes)
        } else {
            let values = decode_f32(dtype, view.bytes)
                .ok_or_else(|| format!("parameter `{name}`: cannot read dtype {dtype}"))?;
            if values.len() != numel {
                return Err(format!(
                    "parameter `{name}`: {} elements stored, {numel} expected",
                    values.len()
                ));
            }
            ParamData::Owned(encode(&values, elem).ok_or_else(|| {
                format!("parameter `{name}`: cannot convert to {}", elem.as_str())
            })?)
        };
        self.data.push((data, numel * elem.bytes()));
        self.index.insert(key, self.data.len() - 1);
        Ok(self.data.len() - 1)
    }

    fn stats(&self) -> ParamStats {
        let mut s = ParamStats::default();
        for (d, bytes) in &self.data {
            match d {
                ParamData::Borrowed(_) => s.zero_copy += 1,
                ParamData::Owned(_) => {
                    s.converted += 1;
                    s.converted_bytes += bytes;
                }
            }
        }
        s
    }
}

/// f32 values in `elem`'s little-endian encoding, in an aligned buffer.
fn encode(values: &[f32], elem: Elem) -> Option<AlignedBuf> {
    let mut buf = AlignedBuf::with_capacity(values.len().checked_mul(elem.bytes())?)?;
    let out = buf.as_mut_slice();
    match elem {
        Elem::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        Elem::Bf16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
        }
        Elem::F16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
            }
        }
        Elem::I32 | Elem::U8 | Elem::F8 => return None,
    }
    Some(buf)
}

/// f32 to bfloat16, rounding to nearest even (NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// f32 to IEEE half, rounding to nearest even, with subnormals, overflow to infinity and NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal or zero: shift the full mantissa (with its implicit bit) into place.
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut out = m >> shift;
        if rest > half || (rest == half && out & 1 == 1) {
            out += 1;
        }
        return sign | out as u16;
    }
    let mut out = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && out & 1 == 1) {
        // A carry into the exponent is the correct rounding (up to infinity).
        out += 1;
    }
    sign | out as u16
}

/// The KV cache of one sequence between calls.
#[derive(Debug, Default)]
pub struct KvState {
    past: usize,
    /// Current contents (`[past, ...]`) and the spare buffer the next call writes into.
    entries: BTreeMap<String, KvEntry>,
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

/// One program with its kernels, plan and per-call working memory.
struct Loaded {
    program: Program,
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
            .field("program", &self.program.name)
            .field("kernels", &self.program.kernels.len())
            .field("launches", &self.program.launches.len())
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

/// Which program a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
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
    ) -> Result<CpuModel<'w>, String> {
        let mut params = Params::default();
        let prefill = load(prefill.0, prefill.1, weights, &mut params)
            .map_err(|e| format!("prefill program: {e}"))?;
        let decode = load(decode.0, decode.1, weights, &mut params)
            .map_err(|e| format!("decode program: {e}"))?;
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

    /// Where the machine code of the prefill and decode programs came from (`None` for
    /// interpreted kernels).
    pub fn origins(&self) -> [Option<Origin>; 2] {
        [self.prefill.kernels.origin(), self.decode.kernels.origin()]
    }

    pub fn param_stats(&self) -> ParamStats {
        self.params.stats()
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
    ) -> Result<Vec<f32>, String> {
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
    ) -> Result<(), String> {
        if tokens.is_empty() {
            return Err("a call needs at least one token".into());
        }
        if phase == Phase::Decode && tokens.len() != 1 {
            return Err(format!("decode takes one token, got {}", tokens.len()));
        }
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab)
        {
            return Err(format!(
                "token {i} is id {t}, outside the vocabulary of {}",
                self.vocab
            ));
        }
        let seq = tokens.len();
        let past = cache.past;
        let end = past
            .checked_add(seq)
            .filter(|&e| i32::try_from(e).is_ok())
            .ok_or_else(|| "position overflows 32 bits".to_string())?;
        let loaded = match phase {
            Phase::Prefill => &mut self.prefill,
            Phase::Decode => &mut self.decode,
        };
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
    program: Program,
    kernels: Box<dyn Kernels>,
    weights: &'w dyn WeightSource,
    params: &mut Params<'w>,
) -> Result<Loaded, String> {
    let mut plan = Plan::new(&program, |i| {
        let b = &program.buffers[i];
        let name = b.name.strip_prefix('@').unwrap_or(&b.name);
        let mut shape = Vec::with_capacity(b.shape.len());
        for d in &b.shape {
            let n = d
                .as_const()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("parameter `{name}` has a symbolic shape"))?;
            shape.push(n);
        }
        params.bind(weights, name, b.elem, &shape)
    })?;
    plan.zero_at_first_use();
    let n = program.buffers.len();
    let n_kernels = program.kernels.len();
    Ok(Loaded {
        program,
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
                self.program.kernels[k].name
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
) -> Result<(), String> {
    let seq = tokens.len();
    l.plan.layout(&l.program, seq, past, &mut l.layout)?;
    let need = l.layout.arena_bytes;
    if !l.arena.reserve(need, need / 2) {
        return Err(format!("cannot allocate {need} bytes of activations"));
    }

    // Cache buffers: the current contents must be exactly what the program reads. Entries
    // are created on the first call only, so decode does not allocate names per token.
    for role in &l.plan.roles {
        if let Role::CacheIn(name) | Role::CacheOut(name) | Role::CacheGrow(name) = role {
            if !cache.entries.contains_key(name) {
                cache.entries.insert(name.clone(), KvEntry::default());
            }
        }
    }
    for (i, role) in l.plan.roles.iter().enumerate() {
        match role {
            Role::CacheIn(name) => {
                let e = cache.entries.get_mut(name).ok_or("cache entry vanished")?;
                if e.bytes != l.layout.bytes[i] {
                    return Err(format!(
                        "cache `{name}` holds {} bytes, the program reads {} for past {past}",
                        e.bytes, l.layout.bytes[i]
                    ));
                }
            }
            Role::CacheOut(name) => {
                let e = cache.entries.get_mut(name).ok_or("cache entry vanished")?;
                let want = l.layout.bytes[i];
                if !e.spare.reserve(want, want) {
                    return Err(format!("cannot allocate {want} bytes for cache `{name}`"));
                }
            }
            Role::CacheGrow(name) => {
                // In place: the kernels write the new rows after the old ones, in the
                // same buffer. Growing keeps the old rows and leaves an eighth spare, so
                // a prefill leaves room for the decode steps after it and decode
                // reallocates (and copies) only every ~past/8 tokens.
                let e = cache.entries.get_mut(name).ok_or("cache entry vanished")?;
                let want = l.layout.bytes[i];
                if !e.current.grow(want, want / 8, e.bytes) {
                    return Err(format!("cannot allocate {want} bytes for cache `{name}`"));
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
            Role::CacheIn(n) | Role::CacheGrow(n) => cache
                .entries
                .get(n)
                .map_or(std::ptr::null_mut(), |e| e.current.as_ptr()),
            Role::CacheOut(n) => cache
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
            return Err(format!(
                "input `{}` is {} bytes, expected {} for seq {seq}",
                l.program.buffers[i].name,
                l.layout.bytes[i],
                4 * seq
            ));
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
    for launch in &l.program.launches {
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
    for (li, launch) in l.program.launches.iter().enumerate() {
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
        let fail = |e: String| format!("launch {li} (kernel `{}`): {e}", l.program.kernels[k].name);
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
            Role::CacheOut(n) => {
                if let Some(e) = cache.entries.get_mut(n) {
                    std::mem::swap(&mut e.current, &mut e.spare);
                    e.bytes = l.layout.bytes[i];
                }
            }
            Role::CacheGrow(n) => {
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
    /// The kernel IR interpreter (slow, bounds-checked; for debugging).
    KernelInterp,
}

impl Engine {
    /// The `--backend` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llvm => "llvm",
            Engine::KernelInterp => "kernel-interp",
        }
    }
}

/// The kernel program of `spec` in `mode`: lowered, optimised by the fusion passes and
/// turned into kernels. An op without a kernel generator is an error naming it.
pub fn program(spec: &archc_spec::Spec, mode: archc_compiler::Mode) -> Result<Program, String> {
    let graph = archc_compiler::lower(spec, mode)
        .map_err(|e| format!("lowering ({}): {e}", mode.as_str()))?;
    let fused = archc_compiler::passes::optimize(&graph);
    archc_compiler::kernel::lower::program(&fused)
        .map_err(|e| format!("kernel program ({}): {e}", mode.as_str()))
}

/// `program` with every block-quantised parameter of `weights` (GGUF Q8_0, Q4_0, Q4_1,
/// Q4_K, Q5_K, Q6_K) read as its raw blocks, which the kernels decode in place; float
/// parameters keep the graph's dtype (converted at bind time where they differ).
pub fn program_for(
    spec: &archc_spec::Spec,
    mode: archc_compiler::Mode,
    weights: &dyn WeightSource,
) -> Result<Program, String> {
    program_for_logits(spec, mode, weights, Logits::All)
}

/// How the matmuls of a prefill treat their activations when the weights are bf16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// Activations stay f32: the kernels compute what the reference interpreter computes,
    /// up to f32 summation order. What `archc logits` and the parity tests use.
    #[default]
    F32,
    /// Prefill and decode round each activation row to bf16 before a matmul with bf16
    /// weights and accumulate bf16 products in f32, as PyTorch bf16 and llama.cpp do, so
    /// that bf16 dot-product instructions apply (about twice the f32 rate on CPUs that
    /// have them; in decode, half the instructions per weight byte). Has no effect unless
    /// the spec stores its weights in bf16.
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

/// What a CPU program computes beyond the graph: which positions get logits and how
/// bf16 matmuls treat activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelOptions {
    pub logits: Logits,
    pub precision: Precision,
}

/// `program_for` computing the logits of the positions `logits` says: with
/// `Logits::Last` the prefill program's `logits` output is `[1, vocab]`.
pub fn program_for_logits(
    spec: &archc_spec::Spec,
    mode: archc_compiler::Mode,
    weights: &dyn WeightSource,
    logits: Logits,
) -> Result<Program, String> {
    let options = ModelOptions {
        logits,
        ..ModelOptions::default()
    };
    program_for_options(spec, mode, weights, &options)
}

/// `program_for` with explicit `ModelOptions`.
pub fn program_for_options(
    spec: &archc_spec::Spec,
    mode: archc_compiler::Mode,
    weights: &dyn WeightSource,
    model: &ModelOptions,
) -> Result<Program, String> {
    use archc_compiler::kernel::lower::ParamFormat;
    let options = archc_compiler::lower::Options {
        logits: model.logits,
    };
    let graph = archc_compiler::lower::lower_with(spec, mode, &options)
        .map_err(|e| format!("lowering ({}): {e}", mode.as_str()))?;
    let fused = archc_compiler::passes::optimize(&graph);
    let format = |name: &str| weights.blocks(name).map(|b| ParamFormat::Block(b.format));
    // This executor honours `BufferKind::Append`: the KV cache grows in place.
    let opts = archc_compiler::kernel::lower::KernelOptions {
        append_in_place: true,
        bf16_activations: model.precision == Precision::Bf16
            && spec.dtype == archc_spec::DType::Bf16,
    };
    archc_compiler::kernel::lower::program_with_options(&fused, &format, &opts)
        .map_err(|e| format!("kernel program ({}): {e}", mode.as_str()))
}

/// The kernels of `program` for `engine`; `llvm` says where compiled code is cached.
pub fn kernels(
    program: &Program,
    engine: Engine,
    llvm: &LlvmOptions,
) -> Result<Box<dyn Kernels>, String> {
    match engine {
        Engine::KernelInterp => Ok(Box::new(Interpreted::new(program))),
        Engine::Llvm => Ok(Box::new(Native::new(program, llvm)?)),
    }
}

/// The number of threads to use when none is asked for: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<'w> CpuModel<'w> {
    /// Builds both programs of `spec`, their kernels for `engine`, and binds `weights`.
    /// Errors say which stage failed and, for a model the kernel path cannot run yet,
    /// suggest the graph interpreter.
    /// The LLVM code cache is the one the environment configures (`ARCHC_CACHE_DIR`,
    /// `ARCHC_NO_CACHE`; see `CacheSettings`).
    pub fn from_spec(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
    ) -> Result<CpuModel<'w>, String> {
        Self::from_spec_with(spec, weights, engine, threads, &LlvmOptions::from_env())
    }

    /// `from_spec` with explicit code-cache options.
    pub fn from_spec_with(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
        llvm: &LlvmOptions,
    ) -> Result<CpuModel<'w>, String> {
        Self::from_spec_logits(spec, weights, engine, threads, llvm, Logits::All)
    }

    /// `from_spec_with` whose prefill computes the logits of the positions `logits` says:
    /// `Logits::Last` makes `run(Phase::Prefill, ..)` return one row (`[vocab]`), the last
    /// token's, which is all that generation and benchmarks read; the final norm and the
    /// LM head then run for one token only.
    pub fn from_spec_logits(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
        llvm: &LlvmOptions,
        logits: Logits,
    ) -> Result<CpuModel<'w>, String> {
        let options = ModelOptions {
            logits,
            ..ModelOptions::default()
        };
        Self::from_spec_options(spec, weights, engine, threads, llvm, &options)
    }

    /// `from_spec_with` with explicit `ModelOptions` (which logits, which precision).
    pub fn from_spec_options(
        spec: &archc_spec::Spec,
        weights: &'w dyn WeightSource,
        engine: Engine,
        threads: usize,
        llvm: &LlvmOptions,
        options: &ModelOptions,
    ) -> Result<CpuModel<'w>, String> {
        let hint = |e: String| {
            format!(
                "--backend {}: {e} (try the reference interpreter: --backend interp)",
                engine.as_str()
            )
        };
        let mut built = Vec::new();
        for mode in [archc_compiler::Mode::Prefill, archc_compiler::Mode::Decode] {
            let p = program_for_options(spec, mode, weights, options).map_err(hint)?;
            let k = kernels(&p, engine, llvm).map_err(hint)?;
            built.push((p, k));
        }
        let decode = built.pop().ok_or("no decode program")?;
        let prefill = built.pop().ok_or("no prefill program")?;
        let vocab = usize::try_from(spec.vocab).map_err(|_| "vocabulary too large".to_string())?;
        CpuModel::new(prefill, decode, weights, vocab, threads)
    }
}

/// Runs one kernel call on this thread, turning a panic into an error.
fn run_caught(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err("the kernel panicked".into()),
    }
}

#[cfg(test)]
mod tests;
