//! `archc bench MODEL [--prompt-len N] [--gen N] [--threads N] [--json]`: times a model on
//! the CPU with the LLVM backend and sets the numbers against the machine's own roofs.
//!
//! It compiles the model twice (cold, into an empty temporary code cache, then again from
//! that cache), runs a warm-up, then times a prefill of `--prompt-len` random tokens and
//! `--gen` decode steps, each from an empty KV cache, `--repeat` times, and reports the
//! medians. Then it probes the machine (memory read bandwidth and f32 FMA throughput on the
//! same threads) and divides: see `DEFINITIONS`. Exit status: 0 on success, 1 when the
//! `--spec` file has errors, 2 for bad arguments, I/O, import, weight, compile or run errors.

use super::import::is_gguf;
use archc_compiler::kernel::{BufferKind, Elem};
use archc_runtime::bench::{self as probe, Timings};
use archc_runtime::bind::{bind, bind_gguf, BoundWeights};
use archc_runtime::exec::cpu::{self, CpuModel, Engine, LlvmOptions, Origin};
use archc_runtime::weights::gguf::GgufFile;
use archc_runtime::weights::Checkpoint;
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
                    cache (logits of every prompt token are computed)
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
                    scores and values); the fraction is the achieved over the peak rate
  kv bytes          the KV cache (and linear-attention state) at prompt + gen tokens, in
                    the element type of the kernels' cache";

#[derive(Debug, clap::Args)]
#[command(after_help = DEFINITIONS)]
pub struct Args {
    /// HF model directory (config.json and safetensors) or a llama.cpp .gguf file.
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
    fma: probe::FmaPeak,
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
            "  prefill   {:>9.1} tok/s  {:>8.3} s   {:>5.1}% of the FMA roof ({:.1} of {:.1} GFLOP/s, {})\n",
            self.prefill_tok_s(),
            self.prefill_s(),
            100.0 * self.prefill_fraction(),
            self.prefill_flops_per_s() / 1e9,
            self.fma.flops_per_s / 1e9,
            self.fma.isa,
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

fn run_inner(args: &Args) -> Result<Report, Failure> {
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
    let threads = match args.threads {
        Some(0) => return Err(fail("--threads must be at least 1")),
        Some(n) => n,
        None => cpu::default_threads(),
    };
    let probe_bytes = args
        .probe_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| fail("--probe-mib is too large"))?;
    let model = &args.model;
    if !model.is_dir() && !is_gguf(model) {
        return Err(fail(format!(
            "{}: not a model directory or .gguf file",
            model.display()
        )));
    }
    let spec = match &args.spec {
        Some(path) => load_arch(path)?,
        None if is_gguf(model) => gguf_spec(model)?,
        None => archc_spec::import::from_path(model).map_err(|e| fail(e.to_string()))?,
    };
    let context = args
        .prompt_len
        .checked_add(args.gen)
        .filter(|&c| c as u64 <= spec.context)
        .ok_or_else(|| {
            fail(format!(
                "--prompt-len {} + --gen {} exceeds the model's context of {} tokens",
                args.prompt_len, args.gen, spec.context
            ))
        })?;
    let weights = load_weights(&spec, model)?;
    let weight_bytes = weight_file_bytes(&weights, model)?;

    // Cold and cached compiles share one fresh cache directory, removed afterwards.
    let cache_dir = fresh_cache_dir()?;
    let mut llvm = LlvmOptions::from_env();
    llvm.cache = Some(cache_dir.clone());
    let measured = measure(&spec, &weights, threads, &llvm, args);
    // A failure to remove the temporary cache must not hide the measurement.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let (timings, compile_cold_s, compile_cached_s, cached_hit, peaks, converted) = measured?;

    // The probes run last so that their buffer never counts in the model's peak memory.
    let bandwidth =
        probe::read_bandwidth(threads, probe_bytes, 5).map_err(|e| fail(e.to_string()))?;
    let fma = probe::fma_throughput(threads, 5, Duration::from_millis(100))
        .map_err(|e| fail(e.to_string()))?;

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
    let prefill_flops = args.prompt_len as f64
        * (at(1).flops_per_token as f64 + at(args.prompt_len).flops_per_token as f64)
        / 2.0;
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
        decode_bytes_per_token: decode_bytes_per_token(&weights),
        converted_param_bytes: converted as u64,
        kv_bytes: full.kv_bytes_total.saturating_add(full.linear_state_bytes),
        prefill_flops,
        bandwidth,
        fma,
    })
}

/// Timings, cold and cached compile seconds, whether the second compile hit the cache,
/// the peak RSS of the cold compile and of the rest, and the converted parameter bytes.
type Measured = (Timings, f64, f64, bool, (Option<u64>, Option<u64>), usize);

fn measure(
    spec: &Spec,
    weights: &BoundWeights,
    threads: usize,
    llvm: &LlvmOptions,
    args: &Args,
) -> Result<Measured, Failure> {
    let build = |what: &str| {
        let start = Instant::now();
        let model = CpuModel::from_spec_with(spec, weights, Engine::Llvm, threads, llvm)
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
    let program = cpu::program(spec, archc_compiler::Mode::Decode).map_err(fail)?;
    let elem = program
        .buffers
        .iter()
        .find(|b| b.kind == BufferKind::Input && b.name.starts_with("cache."))
        .map(|b| b.elem);
    Ok(match elem {
        Some(Elem::Bf16) => DType::Bf16,
        Some(Elem::F16) => DType::F16,
        // f32 caches, and models without one (their KV bytes are zero anyway).
        _ => DType::F32,
    })
}

/// Bytes a decode step reads from the weights: every parameter once, except embedding
/// tables, of which a token reads one row (the token embedding read whole when it is
/// also the output head, that is when there is no `lm_head.weight`).
fn decode_bytes_per_token(weights: &BoundWeights) -> u64 {
    let tied = weights.get("lm_head.weight").is_none();
    let mut total = 0u64;
    for name in weights.names() {
        let Some(view) = weights.get(name) else {
            continue;
        };
        let all = view.bytes.len() as u64;
        let lookup = name.starts_with("embed.") && view.shape.len() == 2;
        let read = if lookup && !(tied && name == "embed.tokens") {
            all / (view.shape[0].max(1) as u64)
        } else {
            all
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
    model.file_name().map_or_else(
        || model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Binds the weights of an HF model directory or a `.gguf` file.
fn load_weights(spec: &Spec, model: &Path) -> Result<BoundWeights, Failure> {
    let shown = model.display();
    if is_gguf(model) {
        let file = GgufFile::open(model).map_err(|e| fail(e.to_string()))?;
        return bind_gguf(spec, file).map_err(|e| fail(format!("{shown}: {e}")));
    }
    let checkpoint = Checkpoint::open(model).map_err(|e| fail(e.to_string()))?;
    bind(spec, checkpoint).map_err(|e| fail(format!("{shown}: {e}")))
}

/// The Spec of a `.gguf` file, imported from its metadata and tensor names.
fn gguf_spec(model: &Path) -> Result<Spec, Failure> {
    let file = GgufFile::open(model).map_err(|e| fail(e.to_string()))?;
    let shown = model.display().to_string();
    archc_spec::import::gguf::from_gguf_metadata(file.metadata(), &file.names(), &shown)
        .map_err(|e| fail(e.to_string()))
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
