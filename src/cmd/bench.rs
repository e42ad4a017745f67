//! `archc bench MODEL [--prompt-len N] [--gen N] [--threads N] [--json]`: times a model on
//! the CPU with the LLVM backend and sets the numbers against the machine's own roofs.
//! `--backend cuda` times it on CUDA device 0 instead, and `--random-weights` draws the
//! weights in memory at the model's real shapes, so MODEL may be a `.arch` file and no
//! checkpoint is needed.
//!
//! This file parses the arguments, opens the model and renders the report; what is
//! measured and how lives in `archc_runtime::bench` (see `DEFINITIONS`). Exit status: 0 on
//! success, 1 when the `--spec` file has errors, 2 for bad arguments, I/O, import, weight,
//! compile or run errors.

use super::model::{gguf_spec, is_gguf, load_weights};
use crate::failure::Failure;
use archc_compiler::interp::WeightDType;
use archc_runtime::bench::{
    self, median, BenchWeights, CpuBench, CpuConfig, CudaBench, CudaConfig, CudaRun, RandomWeights,
};
use archc_runtime::exec::cpu;
use archc_spec::diagnostics::render;
use archc_spec::Spec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
  prefill peak      prefill FLOPs (as above) / the device's stated dense bf16
                    tensor-core peak (an H200's and an H100 SXM's: 790 TFLOP/s; other
                    devices are set against the H200's figures)
  bandwidth         device-to-device copy of --probe-mib MiB: bytes read + written per
                    second, best of 5; the device's nominal HBM figure (an H200: 4.8 TB/s)
                    is also stated
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
    #[arg(long, value_name = "MIB", default_value_t = bench::DEFAULT_PROBE_BYTES >> 20)]
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
    /// Time only the compile: both programs' kernels compiled from scratch by LLVM and by
    /// Cranelift, alternating, --repeat rounds (MODEL may be any model file; no weights).
    #[arg(long)]
    pub compile_only: bool,
}

/// Where `archc bench` runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Llvm,
    /// The Cranelift tier (fast to compile; scalar code).
    Cranelift,
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

pub fn run(args: Args) -> ExitCode {
    if args.compile_only {
        return super::bench_compile::run(&args);
    }
    let report = match args.backend {
        BenchBackend::Llvm | BenchBackend::Cranelift => {
            run_cpu(&args).map(|(name, b)| (cpu_json(&name, &b), cpu_table(&name, &b)))
        }
        BenchBackend::Cuda => run_cuda(&args).map(|r| (cuda_json(&r), cuda_table(&r))),
    };
    match report {
        Ok((json, table)) => {
            let text = if args.json {
                format!("{json}\n")
            } else {
                table
            };
            match crate::io::print(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => f.exit("bench"),
            }
        }
        Err(f) => f.exit("bench"),
    }
}

/// The worker threads asked for (every core by default).
fn threads(args: &Args) -> Result<usize, Failure> {
    match args.threads {
        Some(0) => Err(Failure::new("--threads must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(cpu::default_threads()),
    }
}

/// `--probe-mib` in bytes.
fn probe_bytes(args: &Args) -> Result<usize, Failure> {
    args.probe_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| Failure::new("--probe-mib is too large"))
}

fn run_cpu(args: &Args) -> Result<(String, CpuBench), Failure> {
    let threads = threads(args)?;
    if args.cuda_graph {
        return Err(Failure::new("--cuda-graph needs --backend cuda"));
    }
    let probe_bytes = probe_bytes(args)?;
    let (spec, weights) = prepare(args, threads)?;
    let config = CpuConfig {
        threads,
        prompt: args.prompt_len,
        gen: args.gen,
        repeat: args.repeat,
        probe_bytes,
        precision: args.precision.precision(),
        engine: if args.backend == BenchBackend::Cranelift {
            cpu::Engine::Cranelift
        } else {
            cpu::Engine::Llvm
        },
    };
    let measured = bench::bench_cpu(&spec, &weights, &config)?;
    Ok((display_name(&args.model), measured))
}

/// A CUDA run with what the report says about the model and its weights.
struct CudaReport {
    model: String,
    /// `checkpoint`, or `random bf16 (seed 1)`.
    weights: String,
    bench: CudaBench,
}

fn run_cuda(args: &Args) -> Result<CudaReport, Failure> {
    // Without a device nothing else is worth doing: say so first, as logits and run do.
    let device = bench::cuda_device(0)?;
    let threads = threads(args)?;
    let probe_bytes = probe_bytes(args)?;
    // Progress on stderr, so that a run cut short by a time limit shows how far it got.
    let mut step = |what: &str| eprintln!("archc bench: {what}");
    step(&format!("on {}; preparing the weights", device.name));
    let (spec, weights) = prepare(args, threads)?;
    let config = CudaConfig {
        ordinal: 0,
        prompt: args.prompt_len,
        gen: args.gen,
        repeat: args.repeat,
        probe_bytes,
        graphs: args.cuda_graph,
    };
    let bench = bench::bench_cuda(&spec, weights, &config, &mut step)?;
    let weights = match args.dtype {
        _ if !args.random_weights => "checkpoint".to_string(),
        d => format!(
            "random {} (seed {})",
            d.unwrap_or(WeightType::Bf16).as_str(),
            args.seed.unwrap_or(0)
        ),
    };
    Ok(CudaReport {
        model: display_name(&args.model),
        weights,
        bench,
    })
}

/// Checks the numeric arguments, then reads the Spec (and checks prompt + gen against its
/// context) and the weights: a checkpoint, or random ones with --random-weights.
fn prepare(args: &Args, threads: usize) -> Result<(Spec, BenchWeights), Failure> {
    for (flag, v) in [
        ("--prompt-len", args.prompt_len),
        ("--gen", args.gen),
        ("--repeat", args.repeat),
        ("--probe-mib", args.probe_mib),
    ] {
        if v == 0 {
            return Err(Failure::new(format!("{flag} must be at least 1")));
        }
    }
    if !args.random_weights && (args.dtype.is_some() || args.seed.is_some()) {
        return Err(Failure::new(
            "--dtype and --seed choose random weights: add --random-weights",
        ));
    }
    let model = &args.model;
    let is_arch = model.extension().is_some_and(|e| e == "arch");
    if is_arch && !args.random_weights {
        return Err(Failure::new(format!(
            "{}: a .arch file has no weights; add --random-weights, or give a model \
             directory or .gguf file",
            model.display()
        )));
    }
    // A .arch file that cannot be read is reported by `load_arch`, naming the reason.
    if !model.is_dir() && !is_gguf(model) && !is_arch {
        return Err(Failure::new(format!(
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
        None if is_gguf(model) => gguf_spec(model)?,
        None => archc_spec::import::from_path(model)?,
    };
    args.prompt_len
        .checked_add(args.gen)
        .filter(|&c| c as u64 <= spec.context)
        .ok_or_else(|| {
            Failure::new(format!(
                "--prompt-len {} + --gen {} exceeds the model's context of {} tokens",
                args.prompt_len, args.gen, spec.context
            ))
        })?;
    let weights = if args.random_weights {
        let dtype = args.dtype.unwrap_or(WeightType::Bf16).dtype();
        let seed = args.seed.unwrap_or(0);
        BenchWeights::Random(RandomWeights::for_spec(&spec, dtype, seed, threads)?)
    } else {
        BenchWeights::Checkpoint(load_weights(&spec, model)?)
    };
    Ok((spec, weights))
}

/// Parses and validates a `.arch` file, printing its diagnostics on failure (exit 1).
fn load_arch(path: &Path) -> Result<Spec, Failure> {
    let name = path.display().to_string();
    let src = crate::io::read_arch(path)?;
    archc_spec::validate::check_source(&name, &src).map_err(|diags| {
        eprint!("{}", render(&name, &src, &diags));
        let errors = diags.iter().filter(|d| d.is_error()).count();
        Failure::invalid(format!(
            "{name}: {errors} error{}",
            if errors == 1 { "" } else { "s" }
        ))
    })
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

fn cpu_json(model: &str, b: &CpuBench) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "family": b.family,
        "params": b.params,
        "threads": b.threads,
        "prompt_len": b.prompt,
        "gen": b.gen,
        "repeat": b.repeat,
        "prefill_tok_s": b.prefill_tok_s(),
        "decode_tok_s": b.decode_tok_s(),
        "prefill_s": b.timings.prefill_s,
        "decode_s": b.timings.decode_s,
        "compile_cold_s": b.compile_cold_s,
        "compile_cached_s": b.compile_cached_s,
        "compile_cached_hit": b.cached_hit,
        "peak_rss_bytes": b.peak_rss,
        "peak_rss_cold_compile_bytes": b.peak_rss_cold_compile,
        "peak_rss_ratio": b.rss_ratio(),
        "weight_bytes": b.weight_bytes,
        "decode_bytes_per_token": b.decode_bytes_per_token,
        "converted_param_bytes": b.converted_param_bytes,
        "kv_bytes": b.kv_bytes,
        "prefill_flops": b.prefill_flops,
        "bandwidth_gbs": b.bandwidth.bytes_per_s / 1e9,
        "bandwidth_probe_bytes": b.bandwidth.buffer_bytes,
        "fma_gflops": b.fma.flops_per_s / 1e9,
        "fma_isa": b.fma.isa,
        "precision": b.precision.as_str(),
        "decode_roofline_tok_s": b.decode_roof_tok_s(),
        "decode_roofline_fraction": b.decode_fraction(),
        "prefill_gflops": b.prefill_flops_per_s() / 1e9,
        "prefill_roofline_fraction": b.prefill_fraction(),
    })
}

fn cpu_table(model: &str, b: &CpuBench) -> String {
    let mut out = format!(
        "archc bench {} ({}, {:.1} M parameters, {} of weights) on {} thread{}\n\
         prompt {} tokens, {} generated, median of {}\n\n",
        model,
        b.family,
        b.params as f64 / 1e6,
        bytes(b.weight_bytes),
        b.threads,
        if b.threads == 1 { "" } else { "s" },
        b.prompt,
        b.gen,
        b.repeat,
    );
    out += &format!(
        "  prefill   {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the compute roof ({:.1} of {:.1} GFLOP/s, {}, {} activations)\n",
        b.prefill_tok_s(),
        b.prefill_s(),
        100.0 * b.prefill_fraction(),
        b.prefill_flops_per_s() / 1e9,
        b.fma.flops_per_s / 1e9,
        b.fma.isa,
        b.precision.as_str(),
    );
    out += &format!(
        "  decode    {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the bandwidth roof ({:.1} tok/s = {:.1} GB/s / {} per token)\n",
        b.decode_tok_s(),
        b.decode_s(),
        100.0 * b.decode_fraction(),
        b.decode_roof_tok_s(),
        b.bandwidth.bytes_per_s / 1e9,
        bytes(b.decode_bytes_per_token),
    );
    out += &format!(
        "  compile   cold {:.2} s, cached {:.3} s{}\n",
        b.compile_cold_s,
        b.compile_cached_s,
        if b.cached_hit {
            ""
        } else {
            " (the second build did not come from the cache)"
        },
    );
    match (b.peak_rss, b.rss_ratio()) {
        (Some(p), Some(r)) => {
            out += &format!(
                "  memory    peak {} = {:.2} x (weights {} + KV cache {})",
                bytes(p),
                r,
                bytes(b.weight_bytes),
                bytes(b.kv_bytes),
            );
            if let Some(c) = b.peak_rss_cold_compile {
                out += &format!("; cold compile peak {}", bytes(c));
            }
            out += "\n";
        }
        _ => out += "  memory    peak resident memory unknown on this system\n",
    }
    if b.converted_param_bytes > 0 {
        out += &format!(
            "            {} of parameters converted to the kernels' element type\n",
            bytes(b.converted_param_bytes)
        );
    }
    out
}

fn cuda_json(r: &CudaReport) -> serde_json::Value {
    let b = &r.bench;
    let decode = b.decode_tok_s(&b.plain);
    let graph = b.graph.as_ref().map(|g| {
        let d = b.decode_tok_s(g);
        serde_json::json!({
            "decode_tok_s": d,
            "decode_s": g.timings.decode_s,
            "decode_roofline_fraction": d / b.measured_roof(),
            "decode_nominal_fraction": d / b.nominal_roof(),
            "replays": g.graph_replays,
            "fallback": g.graph_error,
        })
    });
    serde_json::json!({
        "backend": "cuda",
        "model": r.model,
        "family": b.family,
        "params": b.params,
        "device": b.device.name,
        "capability": format!("{}.{}", b.device.capability.0, b.device.capability.1),
        "weights": r.weights,
        "prompt_len": b.prompt,
        "gen": b.gen,
        "repeat": b.repeat,
        "prefill_tok_s": b.prefill_tok_s(),
        "decode_tok_s": decode,
        "prefill_s": b.plain.timings.prefill_s,
        "decode_s": b.plain.timings.decode_s,
        "load_s": b.load_s,
        "weight_bytes": b.weight_bytes,
        "device_param_bytes": b.device_param_bytes,
        "decode_bytes_per_token": b.decode_bytes_per_token,
        "kv_bytes": b.kv_bytes,
        "prefill_flops": b.prefill_flops,
        "prefill_tflops": b.prefill_flops_per_s() / 1e12,
        "bf16_peak_tflops": b.reference.bf16_dense_flops_per_s / 1e12,
        "prefill_peak_fraction": b.prefill_peak_fraction(),
        "bandwidth_tbs": b.bandwidth / 1e12,
        "nominal_bandwidth_tbs": b.reference.hbm_bytes_per_s / 1e12,
        "decode_roofline_tok_s": b.measured_roof(),
        "decode_roofline_fraction": decode / b.measured_roof(),
        "decode_nominal_fraction": decode / b.nominal_roof(),
        "decode_graph": graph,
        "peak_device_bytes": b.peak_device_bytes(),
        "held_device_bytes": b.held_device_bytes(),
    })
}

fn cuda_table(r: &CudaReport) -> String {
    let b = &r.bench;
    let mut out = format!(
        "archc bench {} ({}, {:.1} M parameters, {} of {} weights) on {} (sm {}.{})\n\
         prompt {} tokens, {} generated, median of {}\n\n",
        r.model,
        b.family,
        b.params as f64 / 1e6,
        bytes(b.weight_bytes),
        r.weights,
        b.device.name,
        b.device.capability.0,
        b.device.capability.1,
        b.prompt,
        b.gen,
        b.repeat,
    );
    out += &format!(
        "  prefill   {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the bf16 peak ({:.1} of {:.0} TFLOP/s)\n",
        b.prefill_tok_s(),
        b.prefill_s(),
        100.0 * b.prefill_peak_fraction(),
        b.prefill_flops_per_s() / 1e12,
        b.reference.bf16_dense_flops_per_s / 1e12,
    );
    let mut decode_row = |label: &str, run: &CudaRun| {
        let d = b.decode_tok_s(run);
        out += &format!(
            "  {label:<9} {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the HBM roof ({:.1} tok/s = {:.2} TB/s measured / {} per token); {:.1}% of the nominal {:.1} TB/s\n",
            d,
            median(&run.timings.decode_s),
            100.0 * d / b.measured_roof(),
            b.measured_roof(),
            b.bandwidth / 1e12,
            bytes(b.decode_bytes_per_token),
            100.0 * d / b.nominal_roof(),
            b.reference.hbm_bytes_per_s / 1e12,
        );
    };
    decode_row("decode", &b.plain);
    if let Some(g) = &b.graph {
        decode_row("graph", g);
        match &g.graph_error {
            Some(e) => out += &format!("            the graph fell back to plain launches: {e}\n"),
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
        b.load_s,
        bytes(b.device_param_bytes),
    );
    out += &format!(
        "  memory    peak {} in use on the device (context included); archc holds {} of weights + {} of KV cache and activations (KV cache at {} tokens: {})\n",
        bytes(b.peak_device_bytes()),
        bytes(b.device_param_bytes),
        bytes(b.plain.held_bytes as u64),
        b.prompt + b.gen,
        bytes(b.kv_bytes),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use archc_runtime::bench::{gpu_reference, Timings};
    use archc_runtime::exec::cuda::DeviceInfo;

    /// A report of made-up measurements, as a device would give them.
    fn report() -> CudaReport {
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
        let name = "NVIDIA H200";
        CudaReport {
            model: "llama-3.1-8b".into(),
            weights: "random bf16 (seed 1)".into(),
            bench: CudaBench {
                family: "llama",
                params: 8_030_261_248,
                device: DeviceInfo {
                    ordinal: 0,
                    name: name.into(),
                    capability: (9, 0),
                },
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
                reference: *gpu_reference(name).expect("the H200 is in the table"),
            },
        }
    }

    /// The table and the JSON of a CUDA run: every ratio from the numbers above
    /// (prefill 2048 tokens in a median 2 s: 16.5 TFLOP/s, 2.1% of 790; decode 128
    /// steps in 1.6 s: 80 tok/s against a roof of 4e12 / 15e9 = 266.7 tok/s, 30%).
    #[test]
    fn cuda_report_table_and_json() {
        let r = report();
        let json = cuda_json(&r);
        let text = format!(
            "{}\n{}",
            cuda_table(&r),
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
