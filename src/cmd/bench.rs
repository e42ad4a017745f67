//! `archc bench MODEL [--prompt-len N] [--gen N] [--threads N] [--json]`: times a model on
//! the CPU with the LLVM backend and sets the numbers against the machine's own roofs.
//! `--backend cuda` times it on CUDA device 0 instead (see `cuda`), and
//! `--random-weights` draws the weights in memory at the model's real shapes, so MODEL may
//! be a `.arch` file and no checkpoint is needed.
//!
//! It compiles the model twice (cold, into an empty temporary code cache, then again from
//! that cache), runs a warm-up, then times a prefill of `--prompt-len` random tokens and
//! `--gen` decode steps, each from an empty KV cache, `--repeat` times, and reports the
//! medians. Then it probes the machine (memory read bandwidth and f32 FMA throughput on the
//! same threads) and divides: see `DEFINITIONS`. Exit status: 0 on success, 1 when the
//! `--spec` file has errors, 2 for bad arguments, I/O, import, weight, compile or run errors.

use super::model::{gguf_spec, is_gguf, load_weights};
use archc_compiler::interp::{WeightDType, WeightSource};
use archc_compiler::kernel::{BufferKind, Elem};
use archc_runtime::bench::{self as probe, RandomWeights, Timings};
use archc_runtime::bind::BoundWeights;
use archc_runtime::exec::cpu::{self, CpuModel, Engine, LlvmOptions, Origin};
use archc_spec::diagnostics::render;
use archc_spec::stats::{stats, Options as StatsOptions};
use archc_spec::{DType, Spec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How every reported number is defined; printed under `archc bench --help`.
const DEFINITIONS: &str = "\
Definitions:
  prefill tok/s     prompt tokens / median time of one prefill of the prompt from an empty
                    cache (the logits of the last position only, as llama-bench's pp test)
  decode tok/s      generated tokens / median time of that many single-token decode steps
                    from an empty cache (as llama-bench's tg test)
  compile cold      building the model (lowering, kernels, LLVM, linking, binding the
                    weights) with an empty temporary code cache
  compile cached    the same again, the kernels now loaded from that cache
  peak rss          the process's peak resident memory (VmHWM) from the cached compile to
                    the end of the timing; the cold compile's peak is reported apart
  bandwidth         memory read bandwidth: the best of 5 passes of all threads summing a
                    buffer much larger than the last-level cache (--probe-mib)
  fma peak          f32 FLOP/s of all threads running independent vector FMA chains
                    (AVX-512 or AVX2 where the CPU has them), a multiply-add counted as 2
  decode roofline   bandwidth / weight bytes read per token (every weight once; of an
                    embedding table, one row, unless it is also the output head); the
                    fraction is decode tok/s over that rate; KV-cache reads are not counted
  prefill roofline  prefill FLOPs / fma peak; prefill FLOPs = prompt x the mean of the
                    FLOPs of one token at context 1 and at context prompt (as archc stats:
                    2 x every matrix parameter, the output head included, plus attention
                    scores and values), less the output head of every prompt token but the
                    last (not computed); the fraction is the achieved over the peak rate
  kv bytes          the KV cache (and linear-attention state) at prompt + gen tokens, in
                    the element type of the kernels' cache

With --backend cuda (device 0):
  prefill tok/s     as above
  prefill peak      prefill FLOPs (as above) / a stated dense bf16 tensor-core peak
                    (790 TFLOP/s, an H200's)
  bandwidth         device-to-device copy of --probe-mib MiB: bytes read + written per
                    second, best of 5; the nominal HBM figure (4.8 TB/s, an H200's) is
                    also stated
  decode roofline   bandwidth / weight bytes per token (as above), for the measured and
                    the nominal bandwidth
  decode graph      with --cuda-graph, decode timed again (alone) with each step one CUDA
                    graph replay
  load              building the model: lowering, PTX generation, module loading and
                    the upload of the weights
  device memory     the most memory in use on the device (total - free, which includes
                    the CUDA context) after any timed call, and archc's own allocations

Random weights (--random-weights): every tensor of the Spec drawn in memory, uniform,
scaled as 1/fan-in so activations stay finite; deterministic for a --seed.";

#[derive(Debug, clap::Args)]
#[command(after_help = DEFINITIONS)]
pub struct Args {
    /// HF model directory (config.json and safetensors) or a llama.cpp .gguf file; with
    /// --random-weights also a .arch file.
    pub model: PathBuf,
    /// Tokens in the timed prefill.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub prompt_len: usize,
    /// Decode steps timed.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub gen: usize,
    /// Worker threads for the model and the probes (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Timed repetitions of prefill and decode; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// Size of the bandwidth probe's buffer in MiB (keep it far above the L3 cache).
    #[arg(long, value_name = "MIB", default_value_t = probe::DEFAULT_PROBE_BYTES >> 20)]
    pub probe_mib: usize,
    /// Describe the model with this .arch file instead of importing its config.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// What runs the model: `llvm` (native kernels on CPU threads) or `cuda` (PTX kernels
    /// on CUDA device 0; pick it with CUDA_VISIBLE_DEVICES).
    #[arg(long, value_enum, default_value = "llvm")]
    pub backend: BenchBackend,
    /// Use random weights drawn in memory at the model's real shapes instead of a
    /// checkpoint (MODEL may then be a .arch file or a directory with a config.json).
    #[arg(long)]
    pub random_weights: bool,
    /// Element type of the random weights (default bf16).
    #[arg(long, value_enum, value_name = "TYPE")]
    pub dtype: Option<WeightType>,
    /// Seed of the random weights (default 0): the same seed gives the same weights.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// With bf16 weights: `bf16` rounds prefill activations to bf16 before each matmul
    /// (bf16 dot products, as PyTorch bf16 and llama.cpp do), `f32` keeps them exact.
    /// The CUDA backend always computes in f32.
    #[arg(long, value_enum, default_value = "bf16")]
    pub precision: super::logits::PrecisionArg,
    /// With --backend cuda: also time decode with every step replayed as one CUDA graph.
    #[arg(long)]
    pub cuda_graph: bool,
}

/// Where `archc bench` runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Llvm,
    Cuda,
}

/// Element type of random weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    F32,
    F16,
    Bf16,
}

impl WeightType {
    fn dtype(self) -> WeightDType {
        match self {
            WeightType::F32 => WeightDType::F32,
            WeightType::F16 => WeightDType::F16,
            WeightType::Bf16 => WeightDType::Bf16,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::F16 => "f16",
            WeightType::Bf16 => "bf16",
        }
    }
}

/// The weights being timed: a checkpoint, or random tensors made in memory.
enum Weights {
    Bound(BoundWeights),
    Random(RandomWeights),
}

impl Weights {
    fn source(&self) -> &dyn WeightSource {
        match self {
            Weights::Bound(w) => w,
            Weights::Random(w) => w,
        }
    }

    /// Every tensor's name, shape and stored bytes.
    fn tensors(&self) -> Vec<(String, Vec<usize>, u64)> {
        match self {
            // A block-quantised tensor counts as stored (its blocks), not as widened.
            Weights::Bound(w) => w
                .names()
                .filter_map(|n| match w.blocks(n) {
                    Some(b) => Some((n.to_string(), b.shape.to_vec(), b.bytes.len() as u64)),
                    None => w
                        .get(n)
                        .map(|v| (n.to_string(), v.shape.to_vec(), v.bytes.len() as u64)),
                })
                .collect(),
            Weights::Random(w) => w
                .names()
                .filter_map(|n| {
                    w.get(n)
                        .map(|v| (n.to_string(), v.shape.to_vec(), v.bytes.len() as u64))
                })
                .collect(),
        }
    }
}

/// A failure with its exit status; the message is printed after `archc bench: `.
struct Failure {
    code: u8,
    message: String,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

pub fn run(args: Args) -> ExitCode {
    if args.backend == BenchBackend::Cuda {
        return match cuda::run(&args) {
            Ok(report) => {
                if args.json {
                    println!("{}", report.to_json());
                } else {
                    print!("{}", report.render());
                }
                ExitCode::SUCCESS
            }
            Err(f) => {
                eprintln!("archc bench: {}", f.message);
                ExitCode::from(f.code)
            }
        };
    }
    match run_inner(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("archc bench: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Everything one run measured, with the model facts the ratios need.
#[derive(Debug)]
struct Report {
    model: String,
    family: &'static str,
    params: u64,
    threads: usize,
    prompt: usize,
    gen: usize,
    repeat: usize,
    timings: Timings,
    compile_cold_s: f64,
    compile_cached_s: f64,
    cached_hit: bool,
    peak_rss: Option<u64>,
    peak_rss_cold_compile: Option<u64>,
    weight_bytes: u64,
    decode_bytes_per_token: u64,
    converted_param_bytes: u64,
    kv_bytes: u64,
    prefill_flops: f64,
    bandwidth: probe::Bandwidth,
    /// The compute peak the prefill is compared with: f32 FMA, or the bf16 dot product
    /// when the prefill runs in bf16.
    fma: probe::FmaPeak,
    /// `f32` or `bf16`: how the prefill's matmuls treated activations.
    precision: &'static str,
}

impl Report {
    fn prefill_s(&self) -> f64 {
        probe::median(&self.timings.prefill_s)
    }

    fn decode_s(&self) -> f64 {
        probe::median(&self.timings.decode_s)
    }

    fn prefill_tok_s(&self) -> f64 {
        self.prompt as f64 / self.prefill_s().max(1e-12)
    }

    fn decode_tok_s(&self) -> f64 {
        self.gen as f64 / self.decode_s().max(1e-12)
    }

    /// Tokens per second if every decode step only streamed its weights at the measured
    /// bandwidth.
    fn decode_roof_tok_s(&self) -> f64 {
        self.bandwidth.bytes_per_s / (self.decode_bytes_per_token.max(1) as f64)
    }

    fn decode_fraction(&self) -> f64 {
        self.decode_tok_s() / self.decode_roof_tok_s()
    }

    fn prefill_flops_per_s(&self) -> f64 {
        self.prefill_flops / self.prefill_s().max(1e-12)
    }

    fn prefill_fraction(&self) -> f64 {
        self.prefill_flops_per_s() / self.fma.flops_per_s.max(1.0)
    }

    /// Peak resident memory over the weights plus the KV cache (the milestone's measure).
    fn rss_ratio(&self) -> Option<f64> {
        self.peak_rss
            .map(|p| p as f64 / (self.weight_bytes + self.kv_bytes).max(1) as f64)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "family": self.family,
            "params": self.params,
            "threads": self.threads,
            "prompt_len": self.prompt,
            "gen": self.gen,
            "repeat": self.repeat,
            "prefill_tok_s": self.prefill_tok_s(),
            "decode_tok_s": self.decode_tok_s(),
            "prefill_s": self.timings.prefill_s,
            "decode_s": self.timings.decode_s,
            "compile_cold_s": self.compile_cold_s,
            "compile_cached_s": self.compile_cached_s,
            "compile_cached_hit": self.cached_hit,
            "peak_rss_bytes": self.peak_rss,
            "peak_rss_cold_compile_bytes": self.peak_rss_cold_compile,
            "peak_rss_ratio": self.rss_ratio(),
            "weight_bytes": self.weight_bytes,
            "decode_bytes_per_token": self.decode_bytes_per_token,
            "converted_param_bytes": self.converted_param_bytes,
            "kv_bytes": self.kv_bytes,
            "prefill_flops": self.prefill_flops,
            "bandwidth_gbs": self.bandwidth.bytes_per_s / 1e9,
            "bandwidth_probe_bytes": self.bandwidth.buffer_bytes,
            "fma_gflops": self.fma.flops_per_s / 1e9,
            "fma_isa": self.fma.isa,
            "precision": self.precision,
            "decode_roofline_tok_s": self.decode_roof_tok_s(),
            "decode_roofline_fraction": self.decode_fraction(),
            "prefill_gflops": self.prefill_flops_per_s() / 1e9,
            "prefill_roofline_fraction": self.prefill_fraction(),
        })
    }

    fn render(&self) -> String {
        let mut out = format!(
            "archc bench {} ({}, {:.1} M parameters, {} of weights) on {} thread{}\n\
             prompt {} tokens, {} generated, median of {}\n\n",
            self.model,
            self.family,
            self.params as f64 / 1e6,
            bytes(self.weight_bytes),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.prompt,
            self.gen,
            self.repeat,
        );
        out += &format!(
            "  prefill   {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the compute roof ({:.1} of {:.1} GFLOP/s, {}, {} activations)\n",
            self.prefill_tok_s(),
            self.prefill_s(),
            100.0 * self.prefill_fraction(),
            self.prefill_flops_per_s() / 1e9,
            self.fma.flops_per_s / 1e9,
            self.fma.isa,
            self.precision,
        );
        out += &format!(
            "  decode    {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the bandwidth roof ({:.1} tok/s = {:.1} GB/s / {} per token)\n",
            self.decode_tok_s(),
            self.decode_s(),
            100.0 * self.decode_fraction(),
            self.decode_roof_tok_s(),
            self.bandwidth.bytes_per_s / 1e9,
            bytes(self.decode_bytes_per_token),
        );
        out += &format!(
            "  compile   cold {:.2} s, cached {:.3} s{}\n",
            self.compile_cold_s,
            self.compile_cached_s,
            if self.cached_hit {
                ""
            } else {
                " (the second build did not come from the cache)"
            },
        );
        match (self.peak_rss, self.rss_ratio()) {
            (Some(p), Some(r)) => {
                out += &format!(
                    "  memory    peak {} = {:.2} x (weights {} + KV cache {})",
                    bytes(p),
                    r,
                    bytes(self.weight_bytes),
                    bytes(self.kv_bytes),
                );
                if let Some(c) = self.peak_rss_cold_compile {
                    out += &format!("; cold compile peak {}", bytes(c));
                }
                out += "\n";
            }
            _ => out += "  memory    peak resident memory unknown on this system\n",
        }
        if self.converted_param_bytes > 0 {
            out += &format!(
                "            {} of parameters converted to the kernels' element type\n",
                bytes(self.converted_param_bytes)
            );
        }
        out
    }
}

/// `n` bytes in decimal units.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Checks the numeric arguments, then reads the Spec (and checks prompt + gen against its
/// context) and the weights: a checkpoint, or random ones with --random-weights.
fn prepare(args: &Args, threads: usize) -> Result<(Spec, Weights, u64), Failure> {
    for (flag, v) in [
        ("--prompt-len", args.prompt_len),
        ("--gen", args.gen),
        ("--repeat", args.repeat),
        ("--probe-mib", args.probe_mib),
    ] {
        if v == 0 {
            return Err(fail(format!("{flag} must be at least 1")));
        }
    }
    if !args.random_weights && (args.dtype.is_some() || args.seed.is_some()) {
        return Err(fail(
            "--dtype and --seed choose random weights: add --random-weights",
        ));
    }
    let model = &args.model;
    let is_arch = model.extension().is_some_and(|e| e == "arch");
    if is_arch && !args.random_weights {
        return Err(fail(format!(
            "{}: a .arch file has no weights; add --random-weights, or give a model \
             directory or .gguf file",
            model.display()
        )));
    }
    // A .arch file that cannot be read is reported by `load_arch`, naming the reason.
    if !model.is_dir() && !is_gguf(model) && !is_arch {
        return Err(fail(format!(
            "{}: not a model directory{} or .gguf file",
            model.display(),
            if args.random_weights {
                ", .arch file"
            } else {
                ""
            }
        )));
    }
    let spec = match &args.spec {
        Some(path) => load_arch(path)?,
        None if is_arch => load_arch(model)?,
        None if is_gguf(model) => gguf_spec(model).map_err(fail)?,
        None => archc_spec::import::from_path(model).map_err(|e| fail(e.to_string()))?,
    };
    args.prompt_len
        .checked_add(args.gen)
        .filter(|&c| c as u64 <= spec.context)
        .ok_or_else(|| {
            fail(format!(
                "--prompt-len {} + --gen {} exceeds the model's context of {} tokens",
                args.prompt_len, args.gen, spec.context
            ))
        })?;
    if args.random_weights {
        let dtype = args.dtype.unwrap_or(WeightType::Bf16).dtype();
        let w = RandomWeights::for_spec(&spec, dtype, args.seed.unwrap_or(0), threads)
            .map_err(|e| fail(format!("random weights: {e}")))?;
        let bytes = w.bytes();
        return Ok((spec, Weights::Random(w), bytes));
    }
    let weights = load_weights(&spec, model).map_err(fail)?;
    let bytes = weight_file_bytes(&weights, model)?;
    Ok((spec, Weights::Bound(weights), bytes))
}

fn run_inner(args: &Args) -> Result<Report, Failure> {
    let threads = match args.threads {
        Some(0) => return Err(fail("--threads must be at least 1")),
        Some(n) => n,
        None => cpu::default_threads(),
    };
    if args.cuda_graph {
        return Err(fail("--cuda-graph needs --backend cuda"));
    }
    let probe_bytes = args
        .probe_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| fail("--probe-mib is too large"))?;
    let (spec, weights, weight_bytes) = prepare(args, threads)?;
    let model = &args.model;
    let context = args.prompt_len + args.gen;

    // Cold and cached compiles share one fresh cache directory, removed afterwards.
    let cache_dir = fresh_cache_dir()?;
    let mut llvm = LlvmOptions::from_env();
    llvm.cache = Some(cache_dir.clone());
    let measured = measure(&spec, weights.source(), threads, &llvm, args);
    // A failure to remove the temporary cache must not hide the measurement.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let (timings, compile_cold_s, compile_cached_s, cached_hit, peaks, converted) = measured?;

    // The probes run last so that their buffer never counts in the model's peak memory.
    let bandwidth =
        probe::read_bandwidth(threads, probe_bytes, 5).map_err(|e| fail(e.to_string()))?;
    let fma = probe::fma_throughput(threads, 5, Duration::from_millis(100))
        .map_err(|e| fail(e.to_string()))?;
    // A bf16 prefill is bounded by the bf16 dot-product peak, not the f32 FMA one.
    let bf16_prefill = args.precision == super::logits::PrecisionArg::Bf16
        && spec.dtype == archc_spec::DType::Bf16;
    let fma = match bf16_prefill {
        true => probe::bf16_dot_throughput(threads, 5, Duration::from_millis(100))
            .map_err(|e| fail(e.to_string()))?
            .unwrap_or(fma),
        false => fma,
    };

    let kv_dtype = cache_dtype(&spec)?;
    let at = |c: usize| {
        stats(
            &spec,
            StatsOptions {
                context: c as u64,
                kv_dtype,
            },
        )
    };
    let full = at(context);
    let prefill_flops = prefill_flops(&spec, args.prompt_len, &at);
    Ok(Report {
        model: display_name(model),
        family: spec.family.as_str(),
        params: full.params_total,
        threads,
        prompt: args.prompt_len,
        gen: args.gen,
        repeat: args.repeat,
        timings,
        compile_cold_s,
        compile_cached_s,
        cached_hit,
        peak_rss: peaks.1,
        peak_rss_cold_compile: peaks.0,
        weight_bytes,
        decode_bytes_per_token: decode_bytes_per_token(&weights.tensors()),
        converted_param_bytes: converted as u64,
        kv_bytes: full.kv_bytes_total.saturating_add(full.linear_state_bytes),
        prefill_flops,
        bandwidth,
        fma,
        precision: if bf16_prefill { "bf16" } else { "f32" },
    })
}

/// FLOPs of a prefill of `prompt` tokens that computes the logits of the last position
/// only: `prompt` times the mean FLOPs per token at context 1 and at context `prompt`
/// (`at` gives the stats at a context), less the output head of the other positions.
fn prefill_flops(
    spec: &Spec,
    prompt: usize,
    at: &dyn Fn(usize) -> archc_spec::stats::Stats,
) -> f64 {
    let head = 2.0 * spec.vocab as f64 * spec.hidden as f64;
    let per_token = (at(1).flops_per_token as f64 + at(prompt).flops_per_token as f64) / 2.0;
    prompt as f64 * per_token - (prompt as f64 - 1.0) * head
}

/// Timings, cold and cached compile seconds, whether the second compile hit the cache,
/// the peak RSS of the cold compile and of the rest, and the converted parameter bytes.
type Measured = (Timings, f64, f64, bool, (Option<u64>, Option<u64>), usize);

fn measure(
    spec: &Spec,
    weights: &dyn WeightSource,
    threads: usize,
    llvm: &LlvmOptions,
    args: &Args,
) -> Result<Measured, Failure> {
    let build = |what: &str| {
        let start = Instant::now();
        let options = cpu::Options {
            precision: args.precision.precision(),
            ..cpu::Options::generation()
        };
        let model =
            CpuModel::from_spec_options(spec, weights, Engine::Llvm, threads, llvm, &options)
                .map_err(|e| fail(format!("{what} compile: {e}")))?;
        Ok::<_, Failure>((model, start.elapsed().as_secs_f64()))
    };
    let (cold, cold_s) = build("cold")?;
    drop(cold);
    let cold_peak = probe::peak_rss_bytes();
    // Without a reset the later peak includes the cold compile's; then only one is known.
    let reset = probe::reset_peak_rss();
    let (mut model, cached_s) = build("cached")?;
    let cached_hit = model
        .origins()
        .iter()
        .all(|o| matches!(o, Some(Origin::Cache)));
    let vocab = usize::try_from(spec.vocab).map_err(|_| fail("vocabulary too large"))?;
    let timings = probe::time_model(&mut model, vocab, args.prompt_len, args.gen, args.repeat)
        .map_err(fail)?;
    let converted = model.param_stats().converted_bytes;
    let peak = probe::peak_rss_bytes();
    let peaks = if reset {
        (cold_peak, peak)
    } else {
        (None, peak)
    };
    Ok((timings, cold_s, cached_s, cached_hit, peaks, converted))
}

/// A new, empty directory for the code cache of this run.
fn fresh_cache_dir() -> Result<PathBuf, Failure> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("archc-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        fail(format!(
            "cannot create the temporary code cache {}: {e}",
            dir.display()
        ))
    })?;
    Ok(dir)
}

/// The dtype of the KV cache in the kernel program (the executor's, not the model's).
fn cache_dtype(spec: &Spec) -> Result<DType, Failure> {
    let program = archc_compiler::driver::Driver::for_spec(spec, cpu::Options::default())
        .program(archc_compiler::Mode::Decode)
        .map_err(|e| fail(e.to_string()))?;
    let elem = program
        .buffers
        .iter()
        .find(|b| matches!(&b.kind, BufferKind::Input(io) if io.is_carried()))
        .map(|b| b.elem);
    Ok(match elem {
        Some(Elem::Bf16) => DType::Bf16,
        Some(Elem::F16) => DType::F16,
        // f32 caches, and models without one (their KV bytes are zero anyway).
        _ => DType::F32,
    })
}

/// Bytes a decode step reads from the weights (`(name, shape, bytes)` of every tensor):
/// every parameter once, except embedding tables, of which a token reads one row (the
/// token embedding read whole when it is also the output head, that is when there is no
/// `lm_head.weight`).
fn decode_bytes_per_token(tensors: &[(String, Vec<usize>, u64)]) -> u64 {
    let tied = !tensors.iter().any(|(n, _, _)| n == "lm_head.weight");
    let mut total = 0u64;
    for (name, shape, all) in tensors {
        let lookup = name.starts_with("embed.") && shape.len() == 2;
        let read = if lookup && !(tied && name == "embed.tokens") {
            all / (shape[0].max(1) as u64)
        } else {
            *all
        };
        total = total.saturating_add(read);
    }
    total
}

/// The size of the weight files on disk: the safetensors shards or the GGUF file.
fn weight_file_bytes(weights: &BoundWeights, model: &Path) -> Result<u64, Failure> {
    let paths = match weights.checkpoint() {
        Some(ck) => ck.paths(),
        None => vec![model.to_path_buf()],
    };
    let mut total = 0u64;
    for p in paths {
        let meta = std::fs::metadata(&p)
            .map_err(|e| fail(format!("cannot read the size of {}: {e}", p.display())))?;
        total = total.saturating_add(meta.len());
    }
    Ok(total)
}

/// The model's name for the report: the directory or file name.
fn display_name(model: &Path) -> String {
    if model.extension().is_some_and(|e| e == "arch") {
        if let Some(stem) = model.file_stem() {
            return stem.to_string_lossy().into_owned();
        }
    }
    model.file_name().map_or_else(
        || model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Parses and validates a `.arch` file, printing its diagnostics on failure (exit 1).
fn load_arch(path: &Path) -> Result<Spec, Failure> {
    let name = path.display().to_string();
    let src =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {name}: {e}")))?;
    archc_spec::validate::check_source(&name, &src).map_err(|diags| {
        eprint!("{}", render(&name, &src, &diags));
        let errors = diags.iter().filter(|d| d.is_error()).count();
        Failure {
            code: 1,
            message: format!(
                "{name}: {errors} error{}",
                if errors == 1 { "" } else { "s" }
            ),
        }
    })
}

/// `archc bench --backend cuda`: the same protocol on CUDA device 0, set against the
/// device's memory bandwidth (measured, and the nominal H200 figure) and a stated bf16
/// tensor-core peak.
mod cuda {
    use super::{bytes, cache_dtype, display_name, fail, prepare, Args, Failure, WeightType};
    use archc_runtime::bench::{self as probe, CudaRun, Timings};
    use archc_runtime::exec::cpu::{self, Logits};
    use archc_runtime::exec::cuda::{self as gpu, CudaModel, CudaOptions, DeviceInfo};
    use archc_spec::stats::{stats, Options as StatsOptions};
    use std::time::Instant;

    /// The H200's HBM3e bandwidth as NVIDIA states it.
    pub const NOMINAL_BANDWIDTH: f64 = 4.8e12;
    /// The H200's dense bf16 tensor-core peak (about 790 TFLOP/s at the boost clock of
    /// the SXM part; the sparse figure is twice that).
    pub const BF16_PEAK: f64 = 790e12;

    /// Everything one CUDA run measured.
    #[derive(Debug)]
    pub struct Report {
        model: String,
        family: &'static str,
        params: u64,
        device: DeviceInfo,
        weights: String,
        prompt: usize,
        gen: usize,
        repeat: usize,
        plain: CudaRun,
        graph: Option<CudaRun>,
        load_s: f64,
        weight_bytes: u64,
        device_param_bytes: u64,
        decode_bytes_per_token: u64,
        kv_bytes: u64,
        prefill_flops: f64,
        bandwidth: f64,
    }

    fn tok_s(n: usize, t: &[f64]) -> f64 {
        n as f64 / probe::median(t).max(1e-12)
    }

    impl Report {
        fn prefill_tok_s(&self) -> f64 {
            tok_s(self.prompt, &self.plain.timings.prefill_s)
        }

        fn decode_tok_s(t: &Timings, gen: usize) -> f64 {
            tok_s(gen, &t.decode_s)
        }

        fn prefill_flops_per_s(&self) -> f64 {
            self.prefill_flops / probe::median(&self.plain.timings.prefill_s).max(1e-12)
        }

        /// Decode tokens per second if a step only streamed its weights at `bandwidth`.
        fn roof(&self, bandwidth: f64) -> f64 {
            bandwidth / self.decode_bytes_per_token.max(1) as f64
        }

        fn peak_device_bytes(&self) -> u64 {
            let g = self.graph.as_ref().map_or(0, |g| g.peak_device_bytes);
            self.plain.peak_device_bytes.max(g) as u64
        }

        pub fn to_json(&self) -> serde_json::Value {
            let decode = Report::decode_tok_s(&self.plain.timings, self.gen);
            let graph = self.graph.as_ref().map(|g| {
                let d = Report::decode_tok_s(&g.timings, self.gen);
                serde_json::json!({
                    "decode_tok_s": d,
                    "decode_s": g.timings.decode_s,
                    "decode_roofline_fraction": d / self.roof(self.bandwidth),
                    "decode_nominal_fraction": d / self.roof(NOMINAL_BANDWIDTH),
                    "replays": g.graph_replays,
                    "fallback": g.graph_error,
                })
            });
            serde_json::json!({
                "backend": "cuda",
                "model": self.model,
                "family": self.family,
                "params": self.params,
                "device": self.device.name,
                "capability": format!("{}.{}", self.device.capability.0, self.device.capability.1),
                "weights": self.weights,
                "prompt_len": self.prompt,
                "gen": self.gen,
                "repeat": self.repeat,
                "prefill_tok_s": self.prefill_tok_s(),
                "decode_tok_s": decode,
                "prefill_s": self.plain.timings.prefill_s,
                "decode_s": self.plain.timings.decode_s,
                "load_s": self.load_s,
                "weight_bytes": self.weight_bytes,
                "device_param_bytes": self.device_param_bytes,
                "decode_bytes_per_token": self.decode_bytes_per_token,
                "kv_bytes": self.kv_bytes,
                "prefill_flops": self.prefill_flops,
                "prefill_tflops": self.prefill_flops_per_s() / 1e12,
                "bf16_peak_tflops": BF16_PEAK / 1e12,
                "prefill_peak_fraction": self.prefill_flops_per_s() / BF16_PEAK,
                "bandwidth_tbs": self.bandwidth / 1e12,
                "nominal_bandwidth_tbs": NOMINAL_BANDWIDTH / 1e12,
                "decode_roofline_tok_s": self.roof(self.bandwidth),
                "decode_roofline_fraction": decode / self.roof(self.bandwidth),
                "decode_nominal_fraction": decode / self.roof(NOMINAL_BANDWIDTH),
                "decode_graph": graph,
                "peak_device_bytes": self.peak_device_bytes(),
                "held_device_bytes": self.plain.held_bytes as u64 + self.device_param_bytes,
            })
        }

        pub fn render(&self) -> String {
            let mut out = format!(
                "archc bench {} ({}, {:.1} M parameters, {} of {} weights) on {} (sm {}.{})\n\
                 prompt {} tokens, {} generated, median of {}\n\n",
                self.model,
                self.family,
                self.params as f64 / 1e6,
                bytes(self.weight_bytes),
                self.weights,
                self.device.name,
                self.device.capability.0,
                self.device.capability.1,
                self.prompt,
                self.gen,
                self.repeat,
            );
            out += &format!(
                "  prefill   {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the bf16 peak ({:.1} of {:.0} TFLOP/s)\n",
                self.prefill_tok_s(),
                probe::median(&self.plain.timings.prefill_s),
                100.0 * self.prefill_flops_per_s() / BF16_PEAK,
                self.prefill_flops_per_s() / 1e12,
                BF16_PEAK / 1e12,
            );
            let mut decode_row = |label: &str, t: &Timings| {
                let d = Report::decode_tok_s(t, self.gen);
                out += &format!(
                    "  {label:<9} {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the HBM roof ({:.1} tok/s = {:.2} TB/s measured / {} per token); {:.1}% of the nominal {:.1} TB/s\n",
                    d,
                    probe::median(&t.decode_s),
                    100.0 * d / self.roof(self.bandwidth),
                    self.roof(self.bandwidth),
                    self.bandwidth / 1e12,
                    bytes(self.decode_bytes_per_token),
                    100.0 * d / self.roof(NOMINAL_BANDWIDTH),
                    NOMINAL_BANDWIDTH / 1e12,
                );
            };
            decode_row("decode", &self.plain.timings);
            if let Some(g) = &self.graph {
                decode_row("graph", &g.timings);
            }
            if let Some(g) = &self.graph {
                match &g.graph_error {
                    Some(e) => {
                        out += &format!("            the graph fell back to plain launches: {e}\n")
                    }
                    None => {
                        out += &format!(
                            "            {} decode steps ran as graph replays\n",
                            g.graph_replays
                        )
                    }
                }
            }
            out += &format!(
                "  load      {:.2} s (lowering, PTX, module loading, {} of weights uploaded)\n",
                self.load_s,
                bytes(self.device_param_bytes),
            );
            out += &format!(
                "  memory    peak {} in use on the device (context included); archc holds {} of weights + {} of KV cache and activations (KV cache at {} tokens: {})\n",
                bytes(self.peak_device_bytes()),
                bytes(self.device_param_bytes),
                bytes(self.plain.held_bytes as u64),
                self.prompt + self.gen,
                bytes(self.kv_bytes),
            );
            out
        }
    }

    pub fn run(args: &Args) -> Result<Report, Failure> {
        // Without a device nothing else is worth doing: say so first, as logits and run do.
        let device = gpu::probe(0)
            .and_then(|d| d.sm().map(|_| d))
            .map_err(|e| fail(format!("--backend cuda: {e}")))?;
        let threads = match args.threads {
            Some(0) => return Err(fail("--threads must be at least 1")),
            Some(n) => n,
            None => cpu::default_threads(),
        };
        let probe_bytes = args
            .probe_mib
            .checked_mul(1 << 20)
            .ok_or_else(|| fail("--probe-mib is too large"))?;
        // Progress on stderr, so that a run cut short by a time limit shows how far it got.
        let step = |what: &str| eprintln!("archc bench: {what}");
        step(&format!("on {}; preparing the weights", device.name));
        let (spec, weights, weight_bytes) = prepare(args, threads)?;
        let vocab = usize::try_from(spec.vocab).map_err(|_| fail("vocabulary too large"))?;
        step("building the programs and uploading the weights");
        let start = Instant::now();
        let mut options = CudaOptions {
            logits: Logits::Last,
            graphs: false,
        };
        let mut model = CudaModel::from_spec_with(&spec, weights.source(), 0, options)
            .map_err(|e| fail(format!("--backend cuda: {e}")))?;
        let load_s = start.elapsed().as_secs_f64();
        let device_param_bytes = model.param_bytes() as u64;
        let decode_bytes_per_token = super::decode_bytes_per_token(&weights.tensors());
        let weights_label = match args.dtype {
            _ if !args.random_weights => "checkpoint".to_string(),
            d => format!(
                "random {} (seed {})",
                d.unwrap_or(WeightType::Bf16).as_str(),
                args.seed.unwrap_or(0)
            ),
        };
        // The host copy of the weights is not needed any more.
        drop(weights);
        step(&format!(
            "loaded in {load_s:.1} s; timing prefill and decode"
        ));
        let plain = probe::time_cuda(&model, vocab, args.prompt_len, args.gen, args.repeat, true)
            .map_err(fail)?;
        let graph = if args.cuda_graph {
            options.graphs = true;
            model.set_options(options);
            step("timing decode as CUDA graphs");
            // Prefill does not run as a graph: time decode alone.
            Some(
                probe::time_cuda(&model, vocab, args.prompt_len, args.gen, args.repeat, false)
                    .map_err(fail)?,
            )
        } else {
            None
        };
        drop(model);
        step("probing the device bandwidth");
        // The probe runs after the model is gone so its buffers never count in the peak.
        let bandwidth = gpu::copy_bandwidth(0, probe_bytes, 5)
            .map_err(|e| fail(format!("--backend cuda: bandwidth probe: {e}")))?;

        let kv_dtype = cache_dtype(&spec)?;
        let at = |c: usize| {
            stats(
                &spec,
                StatsOptions {
                    context: c as u64,
                    kv_dtype,
                },
            )
        };
        let full = at(args.prompt_len + args.gen);
        let prefill_flops = super::prefill_flops(&spec, args.prompt_len, &at);
        Ok(Report {
            model: display_name(&args.model),
            family: spec.family.as_str(),
            params: full.params_total,
            device,
            weights: weights_label,
            prompt: args.prompt_len,
            gen: args.gen,
            repeat: args.repeat,
            plain,
            graph,
            load_s,
            weight_bytes,
            device_param_bytes,
            decode_bytes_per_token,
            kv_bytes: full.kv_bytes_total.saturating_add(full.linear_state_bytes),
            prefill_flops,
            bandwidth,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A report of made-up measurements, as a device would give them.
        fn report() -> Report {
            let run = |prefill: Vec<f64>, decode: Vec<f64>| CudaRun {
                timings: Timings {
                    prefill_s: prefill,
                    decode_s: decode,
                },
                peak_device_bytes: 30_000_000_000,
                held_bytes: 12_000_000_000,
                graph_replays: 0,
                graph_error: None,
            };
            let mut graph = run(vec![], vec![0.9, 1.0, 1.1]);
            graph.graph_replays = 388;
            Report {
                model: "llama-3.1-8b".into(),
                family: "llama",
                params: 8_030_261_248,
                device: DeviceInfo {
                    ordinal: 0,
                    name: "NVIDIA H200".into(),
                    capability: (9, 0),
                },
                weights: "random bf16 (seed 1)".into(),
                prompt: 2048,
                gen: 128,
                repeat: 3,
                plain: run(vec![2.0, 1.0, 3.0], vec![2.0, 1.6, 1.5]),
                graph: Some(graph),
                load_s: 4.25,
                weight_bytes: 16_060_522_496,
                device_param_bytes: 16_060_522_496,
                decode_bytes_per_token: 15_000_000_000,
                kv_bytes: 285_212_672,
                prefill_flops: 33.0e12,
                bandwidth: 4.0e12,
            }
        }

        /// The table and the JSON of a CUDA run: every ratio from the numbers above
        /// (prefill 2048 tokens in a median 2 s: 16.5 TFLOP/s, 2.1% of 790; decode 128
        /// steps in 1.6 s: 80 tok/s against a roof of 4e12 / 15e9 = 266.7 tok/s, 30%).
        #[test]
        fn cuda_report_table_and_json() {
            let r = report();
            let json = r.to_json();
            let text = format!(
                "{}\n{}",
                r.render(),
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bench");
            insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
                insta::assert_snapshot!("cuda_report", text);
            });
            let f = |k: &str| json[k].as_f64().unwrap_or(f64::NAN);
            assert!((f("decode_roofline_fraction") - 0.3).abs() < 1e-9);
            assert!((f("prefill_peak_fraction") - 16.5e12 / 790e12).abs() < 1e-9);
        }
    }
}
