//! Probes of the CPU's two roofs: memory read bandwidth and FMA (or bf16 dot-product)
//! throughput, on the threads the model runs on.
//!
//! The probes are short and honest rather than clever: the bandwidth probe sums a buffer
//! many times larger than the last-level cache on every thread, the FMA probe runs
//! independent chains of vector fused multiply-adds (enough of them to hide the latency)
//! with the widest instructions the CPU has. Both report the best of a few repetitions,
//! the usual convention for a roof: what the machine can do, not what it did on average.

use super::BenchError;
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
pub fn read_bandwidth(
    threads: usize,
    bytes: usize,
    repeats: usize,
) -> Result<Bandwidth, BenchError> {
    if threads == 0 || repeats == 0 {
        return Err(BenchError::ProbeArguments {
            probe: "bandwidth",
            threads,
            repeats,
        });
    }
    // Whole 64-byte lines per thread, at least one each.
    let words_per_thread = (bytes / 8 / threads).max(8) / 8 * 8;
    let words = words_per_thread * threads;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words)
        .map_err(|_| BenchError::ProbeMemory { bytes: words * 8 })?;
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
pub fn fma_throughput(
    threads: usize,
    repeats: usize,
    target: Duration,
) -> Result<FmaPeak, BenchError> {
    throughput(fma_isa(), threads, repeats, target)
}

/// Measures the bf16 dot-product throughput (`vdpbf16ps` on zmm registers: 32 bf16
/// products summed into 16 f32 lanes, counted as 64 FLOPs) of `threads` threads at once,
/// the peak of prefill matmuls computed in bf16; `None` on a CPU without AVX512-BF16.
pub fn bf16_dot_throughput(
    threads: usize,
    repeats: usize,
    target: Duration,
) -> Result<Option<FmaPeak>, BenchError> {
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
) -> Result<FmaPeak, BenchError> {
    if threads == 0 || repeats == 0 {
        return Err(BenchError::ProbeArguments {
            probe: "FMA",
            threads,
            repeats,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = read_bandwidth(0, 1 << 20, 1).expect_err("no threads");
        assert_eq!(
            e.to_string(),
            "the bandwidth probe needs at least one thread and one repetition (found 0 \
             threads, 1 repetitions)"
        );
        assert!(matches!(
            fma_throughput(1, 0, Duration::from_millis(1)),
            Err(BenchError::ProbeArguments { probe: "FMA", .. })
        ));
    }
}
