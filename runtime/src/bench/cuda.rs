//! `archc bench --backend cuda`: a model timed on a CUDA device the way the CPU benchmark
//! times it, then set against the device's measured copy bandwidth and the reference
//! figures of [`GPU_REFERENCES`](super::GPU_REFERENCES) (nominal HBM bandwidth, dense
//! bf16 tensor-core peak).

use super::timing::{check_counts, check_finite, median, random_tokens, Timings};
use super::{gpu_reference, BenchError, BenchWeights, GpuReference, Step, GPU_REFERENCES};
use crate::exec::cpu::{driver, Device, Logits, Options, Phase};
use crate::exec::cuda::{self as gpu, CudaModel, CudaOptions, DeviceInfo};
use archc_compiler::Mode;
use archc_spec::stats;
use archc_spec::Spec;
use std::time::Instant;

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
) -> Result<CudaRun, BenchError> {
    check_counts(prompt, gen, repeats)?;
    let prompt_tokens = random_tokens(prompt, vocab, 0x5eed_0001);
    let gen_tokens = random_tokens(gen, vocab, 0x5eed_0002);
    let mut cache = model.new_cache();
    let mut peak = 0usize;
    let sample = |peak: &mut usize| -> Result<(), BenchError> {
        let (free, total) = model
            .memory()
            .map_err(|e| Step::DeviceMemory.failed_on_device(e))?;
        *peak = (*peak).max(total.saturating_sub(free));
        Ok(())
    };
    model
        .run(Phase::Prefill, &mut cache, &prompt_tokens[..prompt.min(8)])
        .map_err(|e| Step::WarmUpPrefill.failed_on_device(e))?;
    for &t in gen_tokens.iter().take(4) {
        model
            .run(Phase::Decode, &mut cache, &[t])
            .map_err(|e| Step::WarmUpDecode.failed_on_device(e))?;
    }
    let mut timings = Timings::default();
    for r in 0..repeats {
        if prefill {
            cache.clear();
            model
                .synchronize()
                .map_err(|e| Step::Synchronize.failed_on_device(e))?;
            let start = Instant::now();
            let logits = model
                .run(Phase::Prefill, &mut cache, &prompt_tokens)
                .map_err(|e| Step::Prefill { repetition: r }.failed_on_device(e))?;
            timings.prefill_s.push(start.elapsed().as_secs_f64());
            check_finite(&logits, Phase::Prefill)?;
            sample(&mut peak)?;
        }

        cache.clear();
        let start = Instant::now();
        let mut last = Vec::new();
        for (i, &t) in gen_tokens.iter().enumerate() {
            last = model.run(Phase::Decode, &mut cache, &[t]).map_err(|e| {
                Step::Decode {
                    step: i,
                    repetition: r,
                }
                .failed_on_device(e)
            })?;
        }
        timings.decode_s.push(start.elapsed().as_secs_f64());
        check_finite(&last, Phase::Decode)?;
        sample(&mut peak)?;
    }
    let ws = cache.decode_workspace();
    Ok(CudaRun {
        timings,
        peak_device_bytes: peak,
        held_bytes: cache.device_bytes(),
        graph_replays: ws.graph_replays(),
        graph_error: ws.graph_error().map(ToString::to_string),
    })
}

/// What a CUDA benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaConfig {
    /// Device ordinal (0: the first device `CUDA_VISIBLE_DEVICES` leaves).
    pub ordinal: usize,
    /// Tokens in the timed prefill.
    pub prompt: usize,
    /// Decode steps timed.
    pub gen: usize,
    /// Timed repetitions; the medians are reported.
    pub repeat: usize,
    /// Bytes of the device-to-device copy that measures the bandwidth.
    pub probe_bytes: usize,
    /// Also time decode with every step replayed as one CUDA graph.
    pub graphs: bool,
}

/// Everything one CUDA benchmark measured, with the model facts the ratios need.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaBench {
    pub family: &'static str,
    pub params: u64,
    pub device: DeviceInfo,
    pub prompt: usize,
    pub gen: usize,
    pub repeat: usize,
    /// Prefill and decode with plain launches.
    pub plain: CudaRun,
    /// Decode with graph replays, when asked for.
    pub graph: Option<CudaRun>,
    /// Seconds to build the programs, load them and upload the weights.
    pub load_s: f64,
    /// Bytes of the weights on the host: the checkpoint files, or the random tensors.
    pub weight_bytes: u64,
    /// Bytes of parameters on the device.
    pub device_param_bytes: u64,
    /// See [`archc_spec::stats::decode_bytes_per_token`].
    pub decode_bytes_per_token: u64,
    /// The KV cache (and linear-attention state) at `prompt + gen` tokens.
    pub kv_bytes: u64,
    /// See [`archc_spec::stats::prefill_flops`].
    pub prefill_flops: f64,
    /// Measured device-to-device copy bandwidth, bytes read and written per second.
    pub bandwidth: f64,
    /// The figures the device is set against.
    pub reference: GpuReference,
}

fn tok_s(n: usize, t: &[f64]) -> f64 {
    n as f64 / median(t).max(1e-12)
}

impl CudaBench {
    pub fn prefill_s(&self) -> f64 {
        median(&self.plain.timings.prefill_s)
    }

    pub fn prefill_tok_s(&self) -> f64 {
        tok_s(self.prompt, &self.plain.timings.prefill_s)
    }

    /// Decode tokens per second of a run (plain or graph).
    pub fn decode_tok_s(&self, run: &CudaRun) -> f64 {
        tok_s(self.gen, &run.timings.decode_s)
    }

    pub fn prefill_flops_per_s(&self) -> f64 {
        self.prefill_flops / self.prefill_s().max(1e-12)
    }

    /// The prefill's FLOP rate over the reference dense bf16 peak.
    pub fn prefill_peak_fraction(&self) -> f64 {
        self.prefill_flops_per_s() / self.reference.bf16_dense_flops_per_s
    }

    /// Decode tokens per second if a step only streamed its weights at `bandwidth`.
    pub fn roof(&self, bandwidth: f64) -> f64 {
        bandwidth / self.decode_bytes_per_token.max(1) as f64
    }

    /// The roof at the measured bandwidth.
    pub fn measured_roof(&self) -> f64 {
        self.roof(self.bandwidth)
    }

    /// The roof at the reference's nominal bandwidth.
    pub fn nominal_roof(&self) -> f64 {
        self.roof(self.reference.hbm_bytes_per_s)
    }

    /// The most device memory in use over both runs.
    pub fn peak_device_bytes(&self) -> u64 {
        let g = self.graph.as_ref().map_or(0, |g| g.peak_device_bytes);
        self.plain.peak_device_bytes.max(g) as u64
    }

    /// What archc itself holds on the device: weights, KV cache and activations.
    pub fn held_device_bytes(&self) -> u64 {
        self.plain.held_bytes as u64 + self.device_param_bytes
    }
}

/// The device `ordinal`, if there is a driver and the device is one the code generator
/// supports; checked before anything slow so that a machine without one says so first.
pub fn cuda_device(ordinal: usize) -> Result<DeviceInfo, BenchError> {
    gpu::probe(ordinal)
        .and_then(|d| d.sm().map(|_| d))
        .map_err(BenchError::Device)
}

/// Times `spec` with `weights` on the device of `config`: builds both programs (the
/// prefill computing the last position's logits only) and uploads the weights, frees
/// the host copy, times prefill and decode with plain launches and, with
/// `config.graphs`, decode again as CUDA graph replays, then measures the copy bandwidth
/// once the model is gone (so that its buffers never count in the peak). `progress`
/// hears each stage as it starts.
pub fn bench_cuda(
    spec: &Spec,
    weights: BenchWeights,
    config: &CudaConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<CudaBench, BenchError> {
    check_counts(config.prompt, config.gen, config.repeat)?;
    let vocab =
        usize::try_from(spec.vocab).map_err(|_| BenchError::VocabTooLarge { vocab: spec.vocab })?;
    let weight_bytes = weights.total_bytes()?;
    let decode_bytes_per_token = weights.decode_bytes_per_token(spec);

    progress("building the programs and uploading the weights");
    let start = Instant::now();
    let mut options = CudaOptions {
        logits: Logits::Last,
        graphs: false,
    };
    let mut model = CudaModel::from_spec_with(spec, weights.source(), config.ordinal, options)
        .map_err(BenchError::Device)?;
    let load_s = start.elapsed().as_secs_f64();
    let device = model.device().clone();
    let device_param_bytes = model.param_bytes() as u64;
    // The cache's element type as the device programs store it: the model keeps its
    // programs to itself, so the driver builds the decode program once more (it just
    // succeeded for the model, and costs little beside the load, which is timed apart).
    let program_options = Options {
        logits: Logits::Last,
        device: Device::Gpu,
        ..Options::default()
    };
    let decode = driver(spec, weights.source(), program_options)
        .program(Mode::Decode)
        .map_err(BenchError::Driver)?;
    let kv_dtype = super::cache_dtype(&decode.doc());
    drop(decode);
    // The host copy of the weights is not needed any more.
    drop(weights);
    let reference = match gpu_reference(&device.name) {
        Some(r) => *r,
        None => {
            let r = GPU_REFERENCES[0];
            progress(&format!(
                "{} is not in the table of reference figures; setting it against the {}'s",
                device.name, r.name
            ));
            r
        }
    };
    progress(&format!(
        "loaded in {load_s:.1} s; timing prefill and decode"
    ));
    let (prompt, gen, repeat) = (config.prompt, config.gen, config.repeat);
    let plain = time_cuda(&model, vocab, prompt, gen, repeat, true)?;
    let graph = if config.graphs {
        options.graphs = true;
        model.set_options(options);
        progress("timing decode as CUDA graphs");
        // Prefill does not run as a graph: time decode alone.
        Some(time_cuda(&model, vocab, prompt, gen, repeat, false)?)
    } else {
        None
    };
    drop(model);
    progress("probing the device bandwidth");
    let bandwidth = gpu::copy_bandwidth(config.ordinal, config.probe_bytes, 5)
        .map_err(BenchError::DeviceBandwidth)?;

    let context = prompt.saturating_add(gen) as u64;
    Ok(CudaBench {
        family: spec.family.as_str(),
        params: stats::stats(spec, stats::Options::for_spec(spec)).params_total,
        device,
        prompt,
        gen,
        repeat,
        plain,
        graph,
        load_s,
        weight_bytes,
        device_param_bytes,
        decode_bytes_per_token,
        kv_bytes: stats::kv_bytes(spec, context, kv_dtype),
        prefill_flops: stats::prefill_flops(spec, prompt as u64),
        bandwidth,
        reference,
    })
}
