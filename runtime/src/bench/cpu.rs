//! `archc bench` on the CPU: the model compiled twice (cold, into an empty temporary code
//! cache, then again from that cache), timed, and set against the machine's bandwidth and
//! compute roofs, which it probes after the model is gone.

use super::probe::{self, Bandwidth, FmaPeak};
use super::timing::{self, check_counts, median, Timings};
use super::{cache_dtype, BenchError, BenchWeights, Build};
use crate::exec::cpu::{CpuModel, Engine, LlvmOptions, Options, Origin, Phase, Precision};
use archc_compiler::interp::WeightSource;
use archc_spec::{stats, DType, Spec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a CPU benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuConfig {
    /// Worker threads of the model and of the probes.
    pub threads: usize,
    /// Tokens in the timed prefill.
    pub prompt: usize,
    /// Decode steps timed.
    pub gen: usize,
    /// Timed repetitions; the medians are reported.
    pub repeat: usize,
    /// Bytes of the bandwidth probe's buffer (far above the last-level cache).
    pub probe_bytes: usize,
    /// The activations' precision; the programs are otherwise what generation runs
    /// ([`Options::generation`]).
    pub precision: Precision,
    /// What compiles the kernels: LLVM (the default), or the Cranelift tier.
    pub engine: Engine,
}

/// Everything one CPU benchmark measured, with the model facts the ratios need.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBench {
    pub family: &'static str,
    pub params: u64,
    pub threads: usize,
    pub prompt: usize,
    pub gen: usize,
    pub repeat: usize,
    pub timings: Timings,
    /// Seconds of the build with an empty code cache.
    pub compile_cold_s: f64,
    /// Seconds of the build again, the kernels now in the cache.
    pub compile_cached_s: f64,
    /// Whether every kernel library of the second build came from the cache.
    pub cached_hit: bool,
    /// Peak resident memory from the cached build to the end of the timing.
    pub peak_rss: Option<u64>,
    /// Peak resident memory of the cold build, where the peak could be reset after it.
    pub peak_rss_cold_compile: Option<u64>,
    /// Bytes of the weights: the checkpoint files, or the random tensors.
    pub weight_bytes: u64,
    /// See [`archc_spec::stats::decode_bytes_per_token`].
    pub decode_bytes_per_token: u64,
    /// Parameter bytes converted to the kernels' element type at bind time.
    pub converted_param_bytes: u64,
    /// The KV cache (and linear-attention state) at `prompt + gen` tokens, in the
    /// element type of the kernels' cache.
    pub kv_bytes: u64,
    /// See [`archc_spec::stats::prefill_flops`].
    pub prefill_flops: f64,
    pub bandwidth: Bandwidth,
    /// The compute peak the prefill is compared with: f32 FMA, or the bf16 dot product
    /// when the prefill runs in bf16.
    pub fma: FmaPeak,
    /// How the prefill's matmuls treated activations: `Bf16` only with bf16 weights.
    pub precision: Precision,
}

impl CpuBench {
    pub fn prefill_s(&self) -> f64 {
        median(&self.timings.prefill_s)
    }

    pub fn decode_s(&self) -> f64 {
        median(&self.timings.decode_s)
    }

    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt as f64 / self.prefill_s().max(1e-12)
    }

    pub fn decode_tok_s(&self) -> f64 {
        self.gen as f64 / self.decode_s().max(1e-12)
    }

    /// Tokens per second if every decode step only streamed its weights at the measured
    /// bandwidth.
    pub fn decode_roof_tok_s(&self) -> f64 {
        self.bandwidth.bytes_per_s / (self.decode_bytes_per_token.max(1) as f64)
    }

    pub fn decode_fraction(&self) -> f64 {
        self.decode_tok_s() / self.decode_roof_tok_s()
    }

    pub fn prefill_flops_per_s(&self) -> f64 {
        self.prefill_flops / self.prefill_s().max(1e-12)
    }

    pub fn prefill_fraction(&self) -> f64 {
        self.prefill_flops_per_s() / self.fma.flops_per_s.max(1.0)
    }

    /// Peak resident memory over the weights plus the KV cache.
    pub fn rss_ratio(&self) -> Option<f64> {
        self.peak_rss
            .map(|p| p as f64 / (self.weight_bytes + self.kv_bytes).max(1) as f64)
    }
}

/// Times `spec` with `weights` on the CPU: the cold and the cached build (in a fresh
/// temporary code cache, removed afterwards), a warm-up and the timed prefills and
/// decodes, the peak resident memory, then the bandwidth and compute probes on the same
/// threads.
pub fn bench_cpu(
    spec: &Spec,
    weights: &BenchWeights,
    config: &CpuConfig,
) -> Result<CpuBench, BenchError> {
    check_counts(config.prompt, config.gen, config.repeat)?;
    let weight_bytes = weights.total_bytes()?;
    // Cold and cached compiles share one fresh cache directory, removed afterwards.
    let cache_dir = fresh_cache_dir()?;
    let mut llvm = LlvmOptions::from_env();
    llvm.cache = Some(cache_dir.clone());
    let measured = measure(spec, weights.source(), &llvm, config);
    // A failure to remove the temporary cache must not hide the measurement.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let measured = measured?;

    // The probes run last so that their buffer never counts in the model's peak memory.
    let threads = config.threads;
    let bandwidth = probe::read_bandwidth(threads, config.probe_bytes, 5)?;
    let fma = probe::fma_throughput(threads, 5, Duration::from_millis(100))?;
    // A bf16 prefill is bounded by the bf16 dot-product peak, not the f32 FMA one.
    let bf16_prefill = config.precision == Precision::Bf16 && spec.dtype == DType::Bf16;
    let fma = match bf16_prefill {
        true => probe::bf16_dot_throughput(threads, 5, Duration::from_millis(100))?.unwrap_or(fma),
        false => fma,
    };

    let context = config.prompt.saturating_add(config.gen) as u64;
    Ok(CpuBench {
        family: spec.family.as_str(),
        params: stats::stats(spec, stats::Options::for_spec(spec)).params_total,
        threads,
        prompt: config.prompt,
        gen: config.gen,
        repeat: config.repeat,
        timings: measured.timings,
        compile_cold_s: measured.cold_s,
        compile_cached_s: measured.cached_s,
        cached_hit: measured.cached_hit,
        peak_rss: measured.peak_rss,
        peak_rss_cold_compile: measured.peak_rss_cold_compile,
        weight_bytes,
        decode_bytes_per_token: weights.decode_bytes_per_token(spec),
        converted_param_bytes: measured.converted_bytes as u64,
        kv_bytes: stats::kv_bytes(spec, context, measured.kv_dtype),
        prefill_flops: stats::prefill_flops(spec, config.prompt as u64),
        bandwidth,
        fma,
        precision: if bf16_prefill {
            Precision::Bf16
        } else {
            Precision::F32
        },
    })
}

/// What the builds and the timing measured.
struct Measured {
    timings: Timings,
    cold_s: f64,
    cached_s: f64,
    cached_hit: bool,
    peak_rss: Option<u64>,
    peak_rss_cold_compile: Option<u64>,
    converted_bytes: usize,
    /// The element type of the decode program's KV cache.
    kv_dtype: DType,
}

fn measure(
    spec: &Spec,
    weights: &dyn WeightSource,
    llvm: &LlvmOptions,
    config: &CpuConfig,
) -> Result<Measured, BenchError> {
    let options = Options {
        precision: config.precision,
        ..Options::generation()
    };
    let build = |which: Build| {
        let start = Instant::now();
        let model = CpuModel::from_spec_options(
            spec,
            weights,
            config.engine,
            config.threads,
            llvm,
            &options,
        )
        .map_err(|source| BenchError::Compile {
            build: which,
            source,
        })?;
        Ok::<_, BenchError>((model, start.elapsed().as_secs_f64()))
    };
    let (cold, cold_s) = build(Build::Cold)?;
    drop(cold);
    let cold_peak = timing::peak_rss_bytes();
    // Without a reset the later peak includes the cold compile's; then only one is known.
    let reset = timing::reset_peak_rss();
    let (mut model, cached_s) = build(Build::Cached)?;
    let cached_hit = model
        .origins()
        .iter()
        .all(|o| matches!(o, Some(Origin::Cache)));
    let vocab =
        usize::try_from(spec.vocab).map_err(|_| BenchError::VocabTooLarge { vocab: spec.vocab })?;
    let timings = timing::time_model(&mut model, vocab, config.prompt, config.gen, config.repeat)?;
    let converted_bytes = model.param_stats().converted_bytes;
    let kv_dtype = cache_dtype(model.program(Phase::Decode));
    let peak = timing::peak_rss_bytes();
    Ok(Measured {
        timings,
        cold_s,
        cached_s,
        cached_hit,
        peak_rss: peak,
        peak_rss_cold_compile: if reset { cold_peak } else { None },
        converted_bytes,
        kv_dtype,
    })
}

/// A new, empty directory for the code cache of this run.
fn fresh_cache_dir() -> Result<PathBuf, BenchError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("archc-bench-{}-{nanos}", std::process::id()));
    create_dir(&dir)?;
    Ok(dir)
}

fn create_dir(dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::CacheDir {
        path: dir.to_path_buf(),
        source,
    })
}
