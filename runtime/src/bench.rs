//! Measurements for `archc bench`: probes of the machine's memory read bandwidth and FMA
//! throughput (the two roofs a model runs under), wall-clock timing of prefill and decode
//! on a loaded CPU model, and the process's peak resident memory.
//!
//! The probes are short and honest rather than clever: the bandwidth probe sums a buffer
//! many times larger than the last-level cache on every thread, the FMA probe runs
//! independent chains of vector fused multiply-adds (enough of them to hide the latency)
//! with the widest instructions the CPU has. Both report the best of a few repetitions,
//! the usual convention for a roof: what the machine can do, not what it did on average.
//!
//! `RandomWeights` makes a model's parameters in memory at their real shapes (from the
//! Spec's tensor list), so a model can be timed without a checkpoint; `time_cuda` times a
//! model on the GPU the way `time_model` does on the CPU.

use crate::exec::cpu::{CpuModel, KvState, Phase};
use crate::exec::cuda::{CudaError, CudaModel};
use archc_compiler::interp::{WeightDType, WeightSource, WeightView};
use archc_spec::Spec;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Default size of the bandwidth probe's buffer: 16 times a 32 MiB L3.
pub const DEFAULT_PROBE_BYTES: usize = 512 << 20;

/// What the bandwidth probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    /// Bytes read per second over all threads, the best repetition.
    pub bytes_per_s: f64,
    /// The buffer size in bytes.
    pub buffer_bytes: usize,
    pub threads: usize,
}

/// Measures how fast `threads` threads together read a buffer of `bytes` bytes (each
/// thread its own contiguous share), best of `repeats` passes. The buffer is written once
/// first so that every page is resident before the clock starts.
pub fn read_bandwidth(threads: usize, bytes: usize, repeats: usize) -> Result<Bandwidth, String> {
    if threads == 0 || repeats == 0 {
        return Err("the bandwidth probe needs at least one thread and one repetition".into());
    }
    // Whole 64-byte lines per thread, at least one each.
    let words_per_thread = (bytes / 8 / threads).max(8) / 8 * 8;
    let words = words_per_thread * threads;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words).map_err(|_| {
        format!(
            "the bandwidth probe cannot allocate {} MiB",
            (words * 8) >> 20
        )
    })?;
    buf.resize(words, 0);
    std::thread::scope(|s| {
        for (t, chunk) in buf.chunks_mut(words_per_thread).enumerate() {
            s.spawn(move || {
                for (i, w) in chunk.iter_mut().enumerate() {
                    *w = (i as u64) ^ (t as u64);
                }
            });
        }
    });
    // The threads start once and meet at a barrier before every pass, so a pass's time
    // is the reading alone (no thread start-up); the slowest thread's time counts.
    let barrier = std::sync::Barrier::new(threads);
    let times: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(words_per_thread)
            .map(|chunk| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut sink = 0u64;
                    let mut times = Vec::with_capacity(repeats);
                    for _ in 0..repeats {
                        barrier.wait();
                        let start = Instant::now();
                        sink = sink.wrapping_add(sum_words(chunk));
                        times.push(start.elapsed());
                    }
                    std::hint::black_box(sink);
                    times
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let best = (0..repeats)
        .map(|r| {
            times
                .iter()
                .map(|t| t.get(r).copied().unwrap_or(Duration::MAX))
                .max()
                .unwrap_or(Duration::MAX)
        })
        .min()
        .unwrap_or(Duration::MAX);
    Ok(Bandwidth {
        bytes_per_s: (words * 8) as f64 / best.as_secs_f64().max(1e-9),
        buffer_bytes: words * 8,
        threads,
    })
}

/// Sums `words` with the widest vector loads the CPU has: fewer instructions per byte let
/// a core keep more cache-line misses in flight, which is what bounds a read stream (with
/// 16-byte loads the probe read ~10% below what the decode kernels reach).
fn sum_words(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { sum_words_avx512(words) };
        }
    }
    sum_words_plain(words)
}

/// Reads `words` as eight streams side by side, one per eighth, with 64-byte loads into
/// eight vector accumulators: a core's hardware prefetchers follow several streams at
/// once, as they do in a matrix-vector kernel that reads several weight rows together.
/// Written in assembly (AVX-512 intrinsics need a newer Rust than the crate's minimum).
/// The result only defeats dead-code elimination: it is the low lane of the sum.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn sum_words_avx512(words: &[u64]) -> u64 {
    const STREAMS: usize = 8;
    let lines = words.len() / 8 / STREAMS;
    if lines == 0 {
        return sum_words_plain(words);
    }
    let stream_bytes = lines * 64;
    let mut offset = 0usize;
    let low: u64;
    // SAFETY: the caller guarantees AVX-512F; stream `j` reads bytes
    // `j * stream_bytes + offset .. + 64` for `offset < stream_bytes`, all inside `words`
    // (`STREAMS * stream_bytes <= 8 * words.len()`); unaligned loads are allowed.
    unsafe {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2", "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7",
            "2:",
            "mov {t}, {base}",
            "vpaddq zmm0, zmm0, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm1, zmm1, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm2, zmm2, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm3, zmm3, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm4, zmm4, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm5, zmm5, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm6, zmm6, [{t} + {o}]", "add {t}, {s}",
            "vpaddq zmm7, zmm7, [{t} + {o}]",
            "add {o}, 64",
            "cmp {o}, {s}",
            "jb 2b",
            "vpaddq zmm0, zmm0, zmm1", "vpaddq zmm2, zmm2, zmm3",
            "vpaddq zmm4, zmm4, zmm5", "vpaddq zmm6, zmm6, zmm7",
            "vpaddq zmm0, zmm0, zmm2", "vpaddq zmm4, zmm4, zmm6",
            "vpaddq zmm0, zmm0, zmm4",
            "vmovq {r}, xmm0",
            "vzeroupper",
            base = in(reg) words.as_ptr(),
            s = in(reg) stream_bytes,
            o = inout(reg) offset,
            t = out(reg) _,
            r = out(reg) low,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            options(nostack, readonly),
        );
    }
    std::hint::black_box(offset);
    low.wrapping_add(sum_words_plain(&words[STREAMS * lines * 8..]))
}

/// Sums `words` with eight independent accumulators, so that the loop is bound by the
/// loads and the compiler can keep it in vector registers.
fn sum_words_plain(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut lines = words.chunks_exact(8);
    for line in &mut lines {
        for (a, w) in acc.iter_mut().zip(line) {
            *a = a.wrapping_add(*w);
        }
    }
    let tail = lines
        .remainder()
        .iter()
        .fold(0u64, |a, &w| a.wrapping_add(w));
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

/// What the FMA probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FmaPeak {
    /// f32 FLOPs per second over all threads (a fused multiply-add counts as 2), best
    /// repetition.
    pub flops_per_s: f64,
    /// The instructions used: `avx512`, `avx2` or `scalar`.
    pub isa: &'static str,
    pub threads: usize,
}

/// Measures the f32 fused multiply-add throughput of `threads` threads running at once,
/// with AVX-512 or AVX2 where the CPU has them (detected at run time) and a plain loop
/// elsewhere. Each repetition runs about `target` long; the best of `repeats` counts.
pub fn fma_throughput(threads: usize, repeats: usize, target: Duration) -> Result<FmaPeak, String> {
    throughput(fma_isa(), threads, repeats, target)
}

/// Measures the bf16 dot-product throughput (`vdpbf16ps` on zmm registers: 32 bf16
/// products summed into 16 f32 lanes, counted as 64 FLOPs) of `threads` threads at once,
/// the peak of prefill matmuls computed in bf16; `None` on a CPU without AVX512-BF16.
pub fn bf16_dot_throughput(
    threads: usize,
    repeats: usize,
    target: Duration,
) -> Result<Option<FmaPeak>, String> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512bf16") {
            return throughput("avx512bf16", threads, repeats, target).map(Some);
        }
    }
    let _ = (threads, repeats, target);
    Ok(None)
}

fn throughput(
    isa: &'static str,
    threads: usize,
    repeats: usize,
    target: Duration,
) -> Result<FmaPeak, String> {
    if threads == 0 || repeats == 0 {
        return Err("the FMA probe needs at least one thread and one repetition".into());
    }
    // Calibrate the iteration count on one thread so that a repetition lasts `target`.
    let mut iters: u64 = 1 << 14;
    loop {
        let start = Instant::now();
        std::hint::black_box(fma_loop(isa, iters));
        let took = start.elapsed();
        if took >= target / 8 || iters >= 1 << 40 {
            let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let mut best = Duration::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(move || std::hint::black_box(fma_loop(isa, iters)));
            }
        });
        best = best.min(start.elapsed());
    }
    let flops = iters as f64 * flops_per_iteration(isa) as f64 * threads as f64;
    Ok(FmaPeak {
        flops_per_s: flops / best.as_secs_f64().max(1e-9),
        isa,
        threads,
    })
}

/// The widest FMA instructions this CPU runs.
fn fma_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "scalar"
}

/// f32 FLOPs one iteration of `fma_loop` performs.
fn flops_per_iteration(isa: &str) -> u64 {
    match isa {
        // 16 independent zmm accumulators, 16 lanes, multiply and add.
        "avx512" => 16 * 16 * 2,
        // 16 independent zmm accumulators, 16 lanes, two bf16 products and two adds each.
        "avx512bf16" => 16 * 16 * 4,
        // 12 independent ymm accumulators, 8 lanes.
        "avx2" => 12 * 8 * 2,
        // 8 independent scalar multiply-add chains.
        _ => 8 * 2,
    }
}

/// Runs `iters` iterations of the probe loop for `isa`; the result only defeats dead-code
/// elimination.
fn fma_loop(isa: &str, iters: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == "avx512bf16" && std::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: the CPU has AVX512-BF16 (checked just above).
            return unsafe { dot_bf16_avx512(iters) };
        }
        if isa == "avx512" && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { fma_avx512(iters) };
        }
        if isa == "avx2" && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA3 and AVX (checked by `fma_isa` and just above).
            return unsafe { fma_avx2(iters) };
        }
    }
    let _ = isa;
    fma_scalar(iters)
}

/// Sixteen independent chains of the zmm instruction `$insn` (`acc, a, b` operands) per
/// iteration of a counted loop, in assembly so that the compiler neither merges nor
/// reorders the chains; the operands are zero, which keeps every value normal and the
/// timing data-independent. Evaluates to the (spent) counter.
#[cfg(target_arch = "x86_64")]
macro_rules! zmm_chains {
    ($insn:literal, $iters:expr) => {{
        let mut n: u64 = $iters;
        std::arch::asm!(
            "vpxord zmm16, zmm16, zmm16",
            "vpxord zmm17, zmm17, zmm17",
            "vpxord zmm0, zmm0, zmm0",
            "vmovaps zmm1, zmm0", "vmovaps zmm2, zmm0", "vmovaps zmm3, zmm0",
            "vmovaps zmm4, zmm0", "vmovaps zmm5, zmm0", "vmovaps zmm6, zmm0",
            "vmovaps zmm7, zmm0", "vmovaps zmm8, zmm0", "vmovaps zmm9, zmm0",
            "vmovaps zmm10, zmm0", "vmovaps zmm11, zmm0", "vmovaps zmm12, zmm0",
            "vmovaps zmm13, zmm0", "vmovaps zmm14, zmm0", "vmovaps zmm15, zmm0",
            "2:",
            concat!($insn, " zmm0, zmm16, zmm17"),
            concat!($insn, " zmm1, zmm16, zmm17"),
            concat!($insn, " zmm2, zmm16, zmm17"),
            concat!($insn, " zmm3, zmm16, zmm17"),
            concat!($insn, " zmm4, zmm16, zmm17"),
            concat!($insn, " zmm5, zmm16, zmm17"),
            concat!($insn, " zmm6, zmm16, zmm17"),
            concat!($insn, " zmm7, zmm16, zmm17"),
            concat!($insn, " zmm8, zmm16, zmm17"),
            concat!($insn, " zmm9, zmm16, zmm17"),
            concat!($insn, " zmm10, zmm16, zmm17"),
            concat!($insn, " zmm11, zmm16, zmm17"),
            concat!($insn, " zmm12, zmm16, zmm17"),
            concat!($insn, " zmm13, zmm16, zmm17"),
            concat!($insn, " zmm14, zmm16, zmm17"),
            concat!($insn, " zmm15, zmm16, zmm17"),
            "dec {n}",
            "jnz 2b",
            "vzeroupper",
            n = inout(reg) n,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nostack, nomem),
        );
        n
    }};
}

/// Sixteen independent `vfmadd231ps` chains on zmm registers per iteration.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn fma_avx512(iters: u64) -> u64 {
    // SAFETY: the caller guarantees AVX-512F; the block touches only the registers it
    // declares and no memory.
    unsafe { zmm_chains!("vfmadd231ps", iters.max(1)) }
}

/// Sixteen independent `vdpbf16ps` chains on zmm registers per iteration.
///
/// # Safety
/// The CPU must support AVX512-BF16.
#[cfg(target_arch = "x86_64")]
unsafe fn dot_bf16_avx512(iters: u64) -> u64 {
    // SAFETY: the caller guarantees AVX512-BF16; the block touches only the registers it
    // declares and no memory.
    unsafe { zmm_chains!("vdpbf16ps", iters.max(1)) }
}

/// Twelve independent `vfmadd231ps` chains on ymm registers per iteration (see
/// `zmm_chains!`).
///
/// # Safety
/// The CPU must support AVX and FMA3.
#[cfg(target_arch = "x86_64")]
unsafe fn fma_avx2(iters: u64) -> u64 {
    let mut n = iters.max(1);
    // SAFETY: the caller guarantees AVX and FMA3; the block touches only the registers it
    // declares and no memory.
    unsafe {
        std::arch::asm!(
            "vxorps ymm12, ymm12, ymm12",
            "vxorps ymm13, ymm13, ymm13",
            "vxorps ymm0, ymm0, ymm0",
            "vmovaps ymm1, ymm0", "vmovaps ymm2, ymm0", "vmovaps ymm3, ymm0",
            "vmovaps ymm4, ymm0", "vmovaps ymm5, ymm0", "vmovaps ymm6, ymm0",
            "vmovaps ymm7, ymm0", "vmovaps ymm8, ymm0", "vmovaps ymm9, ymm0",
            "vmovaps ymm10, ymm0", "vmovaps ymm11, ymm0",
            "2:",
            "vfmadd231ps ymm0, ymm12, ymm13",
            "vfmadd231ps ymm1, ymm12, ymm13",
            "vfmadd231ps ymm2, ymm12, ymm13",
            "vfmadd231ps ymm3, ymm12, ymm13",
            "vfmadd231ps ymm4, ymm12, ymm13",
            "vfmadd231ps ymm5, ymm12, ymm13",
            "vfmadd231ps ymm6, ymm12, ymm13",
            "vfmadd231ps ymm7, ymm12, ymm13",
            "vfmadd231ps ymm8, ymm12, ymm13",
            "vfmadd231ps ymm9, ymm12, ymm13",
            "vfmadd231ps ymm10, ymm12, ymm13",
            "vfmadd231ps ymm11, ymm12, ymm13",
            "dec {n}",
            "jnz 2b",
            "vzeroupper",
            n = inout(reg) n,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _,
            options(nostack, nomem),
        );
    }
    n
}

/// Eight independent multiply-add chains in plain Rust, for CPUs without the vector paths.
fn fma_scalar(iters: u64) -> u64 {
    let mut acc = [1.0f32, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7];
    let a = std::hint::black_box(0.999_999f32);
    let b = std::hint::black_box(1e-7f32);
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    acc.iter().map(|x| x.to_bits() as u64).sum()
}

/// The peak resident set size of this process so far (`VmHWM`), or `None` where
/// `/proc/self/status` does not say (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmHWM:")
}

/// The current resident set size (`VmRSS`), or `None` off Linux.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmRSS:")
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` value 5);
/// false where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The value of a `Name:   1234 kB` line of `/proc/self/status`, in bytes.
fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` pseudo-random token ids below `vocab` from a fixed seed (xorshift64*), so that
/// every run feeds the same tokens.
pub fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed | 1;
    let vocab = vocab.clamp(1, u32::MAX as usize) as u64;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((r >> 32) % vocab) as u32
        })
        .collect()
}

/// Seconds per repetition of each timed phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// One prefill of the whole prompt from an empty cache, per repetition.
    pub prefill_s: Vec<f64>,
    /// All decode steps from an empty cache, per repetition.
    pub decode_s: Vec<f64>,
}

/// Times `model`: a warm-up (a short prefill and a few decode steps, so that every weight
/// page and every kernel has been touched), then `repeats` times a prefill of `prompt`
/// tokens from an empty cache and `gen` single-token decode steps from an empty cache
/// (the way llama.cpp's `llama-bench` measures `pp` and `tg`). Logits that are not finite
/// fail the run (checked after the clock stops).
pub fn time_model(
    model: &mut CpuModel<'_>,
    vocab: usize,
    prompt: usize,
    gen: usize,
    repeats: usize,
) -> Result<Timings, String> {
    if prompt == 0 || gen == 0 || repeats == 0 {
        return Err(
            "the prompt, the generated length and the repetitions must be at least 1".into(),
        );
    }
    let prompt_tokens = random_tokens(prompt, vocab, 0x5eed_0001);
    let gen_tokens = random_tokens(gen, vocab, 0x5eed_0002);
    let mut cache: KvState = model.new_cache();
    model
        .run(Phase::Prefill, &mut cache, &prompt_tokens[..prompt.min(8)])
        .map_err(|e| format!("warm-up prefill: {e}"))?;
    for &t in gen_tokens.iter().take(4) {
        model
            .run(Phase::Decode, &mut cache, &[t])
            .map_err(|e| format!("warm-up decode: {e}"))?;
    }
    let mut timings = Timings::default();
    for r in 0..repeats {
        cache.clear();
        let start = Instant::now();
        let logits = model
            .run(Phase::Prefill, &mut cache, &prompt_tokens)
            .map_err(|e| format!("prefill (repetition {r}): {e}"))?;
        timings.prefill_s.push(start.elapsed().as_secs_f64());
        check_finite(&logits, "prefill")?;

        cache.clear();
        let start = Instant::now();
        for (i, &t) in gen_tokens.iter().enumerate() {
            let logits = model
                .run(Phase::Decode, &mut cache, &[t])
                .map_err(|e| format!("decode step {i} (repetition {r}): {e}"))?;
            if i + 1 == gen_tokens.len() {
                check_finite(&logits, "decode")?;
            }
        }
        timings.decode_s.push(start.elapsed().as_secs_f64());
    }
    Ok(timings)
}

/// Every parameter tensor of a Spec, drawn at random in memory at its real shape: the
/// weights of a benchmark that needs no checkpoint. Values are uniform and scaled so that
/// activations stay finite through any depth: a projection's weights have variance
/// 1 / fan-in (the input dimension), norm weights lie in [0.8, 1.2], biases in
/// [-0.1, 0.1], embeddings and attention sinks in [-1, 1]. Element `i` of a tensor is a
/// hash of the seed, the tensor's name and `i`, so the weights depend on nothing else
/// (not the thread count, not the other tensors).
#[derive(Debug, Default)]
pub struct RandomWeights {
    tensors: BTreeMap<String, (Vec<usize>, WeightDType, Vec<u8>)>,
}

impl RandomWeights {
    /// Draws every tensor of `spec` as `dtype` (f32, f16 or bf16) on `threads` threads.
    pub fn for_spec(
        spec: &Spec,
        dtype: WeightDType,
        seed: u64,
        threads: usize,
    ) -> Result<RandomWeights, String> {
        let mut out = RandomWeights::default();
        for t in archc_spec::tensors::tensors(spec) {
            let shape = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| format!("tensor `{}` is too large for this machine", t.name))?;
            let numel = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| format!("tensor `{}` is too large for this machine", t.name))?;
            let bytes = numel
                .checked_mul(dtype.bytes())
                .ok_or_else(|| format!("tensor `{}` is too large for this machine", t.name))?;
            let mut data: Vec<u8> = Vec::new();
            data.try_reserve_exact(bytes).map_err(|_| {
                format!(
                    "cannot allocate {:.2} GB for random tensor `{}`",
                    bytes as f64 / 1e9,
                    t.name
                )
            })?;
            data.resize(bytes, 0);
            let scale = weight_scale(&t.name, &shape);
            let key = seed ^ fnv1a(&t.name);
            fill(&mut data, dtype, key, scale, threads.max(1));
            out.tensors.insert(t.name, (shape, dtype, data));
        }
        Ok(out)
    }

    /// Bytes of every tensor together.
    pub fn bytes(&self) -> u64 {
        self.tensors.values().map(|(_, _, b)| b.len() as u64).sum()
    }

    /// Tensor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

impl WeightSource for RandomWeights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        self.tensors
            .get(name)
            .map(|(shape, dtype, bytes)| WeightView {
                dtype: *dtype,
                shape,
                bytes,
            })
    }
}

/// `(offset, scale)`: values are `offset + scale * u` with `u` uniform in [-1, 1).
fn weight_scale(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.ends_with("norm.weight") {
        (1.0, 0.2)
    } else if name.ends_with(".bias") {
        (0.0, 0.1)
    } else if name.ends_with("sinks") || name.starts_with("embed.") {
        (0.0, 1.0)
    } else {
        let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
        (0.0, (3.0 / fan_in).sqrt())
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Uniform in [-1, 1) from the 64-bit hash (splitmix64) of `key` and `i`.
fn uniform(key: u64, i: u64) -> f32 {
    let mut z = key.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 24 random bits give every f32 in the range equal weight.
    (z >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0
}

/// Fills `data` (elements of `dtype`, little-endian) on up to `threads` threads.
fn fill(
    data: &mut [u8],
    dtype: WeightDType,
    key: u64,
    (offset, scale): (f32, f32),
    threads: usize,
) {
    let width = dtype.bytes();
    let numel = data.len() / width;
    // Chunks of whole elements, at least 64 Ki elements each so small tensors stay on one
    // thread.
    let per = numel.div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (c, chunk) in data.chunks_mut(per * width).enumerate() {
            s.spawn(move || {
                let first = (c * per) as u64;
                for (j, out) in chunk.chunks_exact_mut(width).enumerate() {
                    let v = offset + scale * uniform(key, first + j as u64);
                    match dtype {
                        WeightDType::F32 => out.copy_from_slice(&v.to_le_bytes()),
                        WeightDType::Bf16 => {
                            out.copy_from_slice(&crate::exec::cpu::f32_to_bf16(v).to_le_bytes())
                        }
                        WeightDType::F16 => {
                            out.copy_from_slice(&crate::exec::cpu::f32_to_f16(v).to_le_bytes())
                        }
                    }
                }
            });
        }
    });
}

/// Times `model` on its GPU as `time_model` does on the CPU: a warm-up (a short prefill
/// and a few decode steps, which also builds the decode graph when graphs are on), then
/// `repeats` times a prefill of `prompt` tokens and `gen` decode steps, each from an empty
/// cache. Every call ends when its logits are on the host, so wall-clock time is the
/// device's time plus the small per-call transfers. With `prefill` false only decode is
/// timed (`prefill_s` stays empty).
pub fn time_cuda(
    model: &CudaModel,
    vocab: usize,
    prompt: usize,
    gen: usize,
    repeats: usize,
    prefill: bool,
) -> Result<CudaRun, String> {
    if prompt == 0 || gen == 0 || repeats == 0 {
        return Err(
            "the prompt, the generated length and the repetitions must be at least 1".into(),
        );
    }
    let e = |what: String| move |err: CudaError| format!("{what}: {err}");
    let prompt_tokens = random_tokens(prompt, vocab, 0x5eed_0001);
    let gen_tokens = random_tokens(gen, vocab, 0x5eed_0002);
    let mut cache = model.new_cache();
    let mut peak = 0usize;
    let sample = |peak: &mut usize| -> Result<(), String> {
        let (free, total) = model.memory().map_err(e("device memory".into()))?;
        *peak = (*peak).max(total.saturating_sub(free));
        Ok(())
    };
    model
        .run(Phase::Prefill, &mut cache, &prompt_tokens[..prompt.min(8)])
        .map_err(e("warm-up prefill".into()))?;
    for &t in gen_tokens.iter().take(4) {
        model
            .run(Phase::Decode, &mut cache, &[t])
            .map_err(e("warm-up decode".into()))?;
    }
    let mut timings = Timings::default();
    for r in 0..repeats {
        if prefill {
            cache.clear();
            model.synchronize().map_err(e("synchronize".into()))?;
            let start = Instant::now();
            let logits = model
                .run(Phase::Prefill, &mut cache, &prompt_tokens)
                .map_err(e(format!("prefill (repetition {r})")))?;
            timings.prefill_s.push(start.elapsed().as_secs_f64());
            check_finite(&logits, "prefill")?;
            sample(&mut peak)?;
        }

        cache.clear();
        let start = Instant::now();
        let mut last = Vec::new();
        for (i, &t) in gen_tokens.iter().enumerate() {
            last = model
                .run(Phase::Decode, &mut cache, &[t])
                .map_err(e(format!("decode step {i} (repetition {r})")))?;
        }
        timings.decode_s.push(start.elapsed().as_secs_f64());
        check_finite(&last, "decode")?;
        sample(&mut peak)?;
    }
    let ws = cache.decode_workspace();
    Ok(CudaRun {
        timings,
        peak_device_bytes: peak,
        held_bytes: cache.device_bytes(),
        graph_replays: ws.graph_replays(),
        graph_error: ws.graph_error().map(str::to_string),
    })
}

/// What `time_cuda` measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CudaRun {
    pub timings: Timings,
    /// The most device memory in use (total minus free, so the CUDA context and anything
    /// else on the device included) seen after any timed call.
    pub peak_device_bytes: usize,
    /// Device bytes the sequence's KV cache and the programs' activations held at the end.
    pub held_bytes: usize,
    /// Decode calls that ran as a CUDA graph replay (warm-up included).
    pub graph_replays: u64,
    /// Why decode fell back to plain launches, when graphs were on and failed.
    pub graph_error: Option<String>,
}

/// An error when the logits hold a NaN or an infinity: numbers from a broken run are
/// not worth timing.
pub fn check_finite(logits: &[f32], what: &str) -> Result<(), String> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!(
            "{what}: logit {i} is {} (the run is broken; its timing would mean nothing)",
            logits[i]
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_values_cover_the_range_and_depend_only_on_key_and_index() {
        let xs: Vec<f32> = (0..10_000).map(|i| uniform(7, i)).collect();
        assert!(xs.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(xs.iter().any(|&x| x > 0.9) && xs.iter().any(|&x| x < -0.9));
        assert_eq!(uniform(7, 123), xs[123]);
        assert_ne!(uniform(8, 123), xs[123]);
    }

    #[test]
    fn fill_does_not_depend_on_the_thread_count() {
        let mut a = vec![0u8; 300_000 * 2];
        let mut b = a.clone();
        fill(&mut a, WeightDType::Bf16, 5, (0.0, 1.0), 1);
        fill(&mut b, WeightDType::Bf16, 5, (0.0, 1.0), 3);
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn scales_follow_the_tensor_kind() {
        assert_eq!(weight_scale("final_norm.weight", &[64]), (1.0, 0.2));
        assert_eq!(weight_scale("layers.0.attn.q.bias", &[64]), (0.0, 0.1));
        assert_eq!(weight_scale("embed.tokens", &[10, 64]), (0.0, 1.0));
        assert_eq!(
            weight_scale("layers.0.ffn.down.weight", &[64, 300]),
            (0.0, 0.1)
        );
    }

    #[test]
    fn non_finite_logits_are_refused() {
        assert!(check_finite(&[1.0, -2.0], "x").is_ok());
        let e = check_finite(&[1.0, f32::NAN], "decode").expect_err("NaN");
        assert!(e.starts_with("decode: logit 1 is NaN"), "{e}");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn status_fields_parse_in_bytes() {
        let status = "Name:\tarchc\nVmHWM:\t  2048 kB\nVmRSS:\t    12 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(12 * 1024));
        assert_eq!(parse_kib_field(status, "VmPeak:"), None);
        assert_eq!(parse_kib_field("VmHWM: lots kB", "VmHWM:"), None);
    }

    #[test]
    fn random_tokens_are_fixed_and_in_range() {
        let a = random_tokens(1000, 7, 42);
        assert_eq!(a, random_tokens(1000, 7, 42));
        assert!(a.iter().all(|&t| t < 7));
        // Every id of a small vocabulary shows up: the generator is not stuck.
        for id in 0..7 {
            assert!(a.contains(&id), "id {id} never drawn");
        }
        assert_ne!(random_tokens(16, 1000, 1), random_tokens(16, 1000, 2));
    }

    #[test]
    fn probes_measure_something() {
        let bw = read_bandwidth(2, 8 << 20, 2).expect("bandwidth probe");
        assert!(bw.bytes_per_s > 0.0 && bw.bytes_per_s.is_finite());
        assert_eq!(bw.buffer_bytes, 8 << 20);
        let fma = fma_throughput(2, 2, Duration::from_millis(5)).expect("fma probe");
        assert!(fma.flops_per_s > 0.0 && fma.flops_per_s.is_finite());
        if let Some(dot) = bf16_dot_throughput(2, 2, Duration::from_millis(5)).expect("dot probe") {
            assert!(dot.flops_per_s > 0.0 && dot.flops_per_s.is_finite());
            assert_eq!(dot.isa, "avx512bf16");
        }
        // The vector loops compute nothing observable, so check the scalar one's result.
        assert!(fma_scalar(10) > 0);
    }

    #[test]
    fn probes_refuse_zero_threads() {
        assert!(read_bandwidth(0, 1 << 20, 1).is_err());
        assert!(fma_throughput(1, 0, Duration::from_millis(1)).is_err());
    }
}
