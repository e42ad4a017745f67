//! Decode and prefill speed of a Qwen3-0.6B-shaped model with random bf16 weights on the
//! CPU executor: a benchmark, not a test (nothing here asserts a time).
//!
//! ```text
//! cargo run --release -p archc-runtime --example bench_cpu -- \
//!     [--spec examples/qwen3-0.6b.arch] [--layers N] [--prefill 512] [--decode 32] \
//!     [--rounds 3] [--threads 2]
//! ```
//!
//! Each round runs one prefill of `--prefill` tokens on an empty cache, then `--decode`
//! single-token steps after it, and prints tokens per second of both. Set `ARCHC_PROFILE=1`
//! to have the executor print per-kernel time shares when the model is dropped.

use archc_compiler::interp::WeightDType;
use archc_runtime::bench::RandomWeights;
use archc_runtime::exec::cpu::{default_threads, CpuModel, Engine, Phase};
use std::fmt;
use std::time::Instant;

struct Args {
    spec: String,
    layers: Option<u64>,
    prefill: usize,
    decode: usize,
    rounds: usize,
    threads: usize,
}

/// A command line this example does not understand.
#[derive(Debug)]
enum ArgError {
    /// A flag without its value.
    MissingValue(String),
    /// A value that is not a count.
    NotACount {
        flag: String,
        value: String,
    },
    UnknownFlag(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            ArgError::NotACount { flag, value } => write!(f, "{flag}: `{value}` is not a count"),
            ArgError::UnknownFlag(flag) => write!(f, "unknown flag `{flag}`"),
        }
    }
}

impl std::error::Error for ArgError {}

fn parse_args() -> Result<Args, ArgError> {
    let mut a = Args {
        spec: "examples/qwen3-0.6b.arch".into(),
        layers: None,
        prefill: 512,
        decode: 32,
        rounds: 3,
        threads: default_threads(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| ArgError::MissingValue(flag.clone()))
        };
        let num = |value: String| {
            value.parse::<usize>().map_err(|_| ArgError::NotACount {
                flag: flag.clone(),
                value,
            })
        };
        match flag.as_str() {
            "--spec" => a.spec = value()?,
            "--layers" => a.layers = Some(num(value()?)? as u64),
            "--prefill" => a.prefill = num(value()?)?,
            "--decode" => a.decode = num(value()?)?,
            "--rounds" => a.rounds = num(value()?)?,
            "--threads" => a.threads = num(value()?)?.max(1),
            other => return Err(ArgError::UnknownFlag(other.to_string())),
        }
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_cpu: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let src = std::fs::read_to_string(&args.spec)
        .map_err(|e| format!("cannot read {}: {e}", args.spec))?;
    let mut spec = archc_spec::validate::check_source(&args.spec, &src)
        .map_err(|d| format!("{}: {} diagnostics", args.spec, d.len()))?;
    spec.dtype = archc_spec::DType::Bf16;
    if let Some(n) = args.layers {
        spec.layers = n;
        spec.schedule.resize(n as usize, 0);
    }
    let t0 = Instant::now();
    let weights = RandomWeights::for_spec(&spec, WeightDType::Bf16, 7, args.threads)?;
    eprintln!("weights: {:.1}s", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let mut model = CpuModel::from_spec(&spec, &weights, Engine::Llvm, args.threads)?;
    eprintln!(
        "model: {:.1}s ({} threads, {} layers)",
        t0.elapsed().as_secs_f64(),
        model.threads(),
        spec.layers
    );
    let vocab = spec.vocab as u32;
    let prompt: Vec<u32> = (0..args.prefill.max(1) as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    for round in 0..args.rounds {
        let mut cache = model.new_cache();
        let t = Instant::now();
        let logits = model.run(Phase::Prefill, &mut cache, &prompt)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let mut next = argmax(&logits[logits.len() - vocab as usize..]);
        let t = Instant::now();
        for _ in 0..args.decode {
            let logits = model.run(Phase::Decode, &mut cache, &[next])?;
            next = argmax(&logits);
        }
        let decode_s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: prefill-{} {:.1} tok/s ({:.3}s)  decode {:.2} tok/s ({} steps, {:.1} ms/tok)",
            prompt.len(),
            prompt.len() as f64 / prefill_s,
            prefill_s,
            args.decode as f64 / decode_s.max(1e-9),
            args.decode,
            1e3 * decode_s / args.decode.max(1) as f64
        );
    }
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
