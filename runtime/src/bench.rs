//! Measurements for `archc bench`: a model timed on the CPU ([`bench_cpu`]: the cold and
//! the cached compile, prefill and decode, peak resident memory, then the machine's
//! bandwidth and FMA roofs) or on a CUDA device ([`bench_cuda`]), with everything the
//! report sets the times against: the roofline quantities of [`archc_spec::stats`], and
//! for GPUs the reference figures of [`GPU_REFERENCES`].
//!
//! - `probe`: the CPU's memory read bandwidth and FMA / bf16 dot-product throughput.
//! - `timing`: wall-clock timing of prefill and decode, peak resident memory.
//! - `random`: random weights at a Spec's real shapes, for timing without a checkpoint.
//! - `cpu`, `cuda`: the two benchmarks end to end.
//! - `compile`: the LLVM and Cranelift tiers compiling the same programs, side by side.
//!
//! Every program a benchmark runs is built by the compiler driver exactly as generation
//! builds it ([`Options::generation`](crate::exec::cpu::Options::generation)).

mod compile;
mod cpu;
mod cuda;
mod probe;
mod random;
mod timing;

pub use compile::{bench_compile, CompileBench};
pub use cpu::{bench_cpu, CpuBench, CpuConfig};
pub use cuda::{bench_cuda, cuda_device, time_cuda, CudaBench, CudaConfig, CudaRun};
pub use probe::{
    bf16_dot_throughput, fma_throughput, read_bandwidth, Bandwidth, FmaPeak, DEFAULT_PROBE_BYTES,
};
pub use random::RandomWeights;
pub use timing::{
    check_finite, median, peak_rss_bytes, random_tokens, reset_peak_rss, rss_bytes, time_model,
    Timings,
};

use crate::bind::BoundWeights;
use crate::exec::cpu::Phase;
use crate::exec::cuda::CudaError;
use crate::exec::ExecError;
use archc_compiler::driver::DriverError;
use archc_compiler::interp::WeightSource;
use archc_compiler::kernel::{BufferKind, Elem};
use archc_spec::{DType, Spec};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Nominal figures of a GPU, the roofs a device benchmark is set against besides the
/// bandwidth it measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuReference {
    /// The device name as the CUDA driver reports it (`cuDeviceGetName`).
    pub name: &'static str,
    /// HBM bandwidth in bytes per second.
    pub hbm_bytes_per_s: f64,
    /// Dense (not 2:4-sparse) bf16 tensor-core FLOPs per second.
    pub bf16_dense_flops_per_s: f64,
}

/// The GPUs whose reference figures are known, by the name the driver reports. The first
/// row is the reference for devices not listed (see [`bench_cuda`]).
pub const GPU_REFERENCES: &[GpuReference] = &[
    // H200 SXM. Bandwidth: 4.8 TB/s, NVIDIA H200 Tensor Core GPU datasheet. Compute:
    // 790 TFLOP/s, the dense bf16 peak the project's GPU targets are stated against
    // (README, GPU). The datasheet gives 1,979 TFLOP/s with 2:4 sparsity, about 989
    // dense; 790 is its 132 SMs at 4,096 dense bf16 FLOPs per clock and 1.46 GHz, a
    // stricter roof than the datasheet's.
    GpuReference {
        name: "NVIDIA H200",
        hbm_bytes_per_s: 4.8e12,
        bf16_dense_flops_per_s: 790e12,
    },
    // H100 SXM5 80 GB. Bandwidth: 3.35 TB/s, NVIDIA H100 Tensor Core GPU datasheet. Its
    // compute is the H200's (the same GH100 die; both datasheets give 1,979 TFLOP/s with
    // sparsity), so it gets the same 790 TFLOP/s, on the same terms as the row above.
    GpuReference {
        name: "NVIDIA H100 80GB HBM3",
        hbm_bytes_per_s: 3.35e12,
        bf16_dense_flops_per_s: 790e12,
    },
];

/// The reference figures of the device the driver calls `name`, if it is in the table.
pub fn gpu_reference(name: &str) -> Option<&'static GpuReference> {
    GPU_REFERENCES.iter().find(|r| r.name == name.trim())
}

/// Which of the two CPU builds failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The first build, into an empty code cache.
    Cold,
    /// The second build, from that cache.
    Cached,
}

impl fmt::Display for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Build::Cold => "cold",
            Build::Cached => "cached",
        })
    }
}

/// The call of a timing protocol that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    WarmUpPrefill,
    WarmUpDecode,
    /// The timed prefill of a repetition (numbered from 0).
    Prefill {
        repetition: usize,
    },
    /// A timed decode step of a repetition.
    Decode {
        step: usize,
        repetition: usize,
    },
    /// Waiting for the device before a timed prefill.
    Synchronize,
    /// Reading the device's free memory after a timed call.
    DeviceMemory,
}

impl Step {
    /// A CPU executor error in this step.
    pub fn failed(self, source: ExecError) -> BenchError {
        BenchError::Run { step: self, source }
    }

    /// A device error in this step.
    pub fn failed_on_device(self, source: CudaError) -> BenchError {
        BenchError::DeviceRun { step: self, source }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::WarmUpPrefill => f.write_str("warm-up prefill"),
            Step::WarmUpDecode => f.write_str("warm-up decode"),
            Step::Prefill { repetition } => write!(f, "prefill (repetition {repetition})"),
            Step::Decode { step, repetition } => {
                write!(f, "decode step {step} (repetition {repetition})")
            }
            Step::Synchronize => f.write_str("synchronize"),
            Step::DeviceMemory => f.write_str("device memory"),
        }
    }
}

/// Why a benchmark could not measure.
#[derive(Debug)]
pub enum BenchError {
    /// Nothing to time: a count that must be at least 1 is 0.
    EmptyRun {
        prompt: usize,
        gen: usize,
        repeats: usize,
    },
    /// A probe was asked to run on no threads or no repetitions.
    ProbeArguments {
        probe: &'static str,
        threads: usize,
        repeats: usize,
    },
    /// The bandwidth probe's buffer cannot be allocated.
    ProbeMemory { bytes: usize },
    /// A random tensor's size does not fit this machine's address space.
    TensorTooLarge { tensor: String },
    /// A random tensor cannot be allocated.
    TensorMemory { tensor: String, bytes: usize },
    /// The vocabulary does not fit this machine's indices.
    VocabTooLarge { vocab: u64 },
    /// The temporary code cache cannot be created.
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The size of a weight file cannot be read.
    WeightFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The compiler driver failed on the model.
    Driver(DriverError),
    /// A CPU build of the model failed.
    Compile { build: Build, source: ExecError },
    /// A call of the timing protocol failed on the CPU.
    Run { step: Step, source: ExecError },
    /// There is no usable device, or the model cannot be loaded on it.
    Device(CudaError),
    /// A call of the timing protocol failed on the device.
    DeviceRun { step: Step, source: CudaError },
    /// The device's bandwidth probe failed.
    DeviceBandwidth(CudaError),
    /// A timed call computed a NaN or an infinity: its time would mean nothing.
    NonFinite {
        phase: Phase,
        index: usize,
        value: f32,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::EmptyRun {
                prompt,
                gen,
                repeats,
            } => write!(
                f,
                "the prompt, the generated length and the repetitions must be at least 1 \
                 (found {prompt}, {gen} and {repeats})"
            ),
            BenchError::ProbeArguments {
                probe,
                threads,
                repeats,
            } => write!(
                f,
                "the {probe} probe needs at least one thread and one repetition (found \
                 {threads} threads, {repeats} repetitions)"
            ),
            BenchError::ProbeMemory { bytes } => {
                write!(f, "the bandwidth probe cannot allocate {} MiB", bytes >> 20)
            }
            BenchError::TensorTooLarge { tensor } => write!(
                f,
                "random weights: tensor `{tensor}` is too large for this machine"
            ),
            BenchError::TensorMemory { tensor, bytes } => write!(
                f,
                "random weights: cannot allocate {:.2} GB for random tensor `{tensor}`",
                *bytes as f64 / 1e9
            ),
            BenchError::VocabTooLarge { vocab } => write!(
                f,
                "vocabulary too large: {vocab} tokens do not fit this machine's indices"
            ),
            BenchError::CacheDir { path, source } => write!(
                f,
                "cannot create the temporary code cache {}: {source}",
                path.display()
            ),
            BenchError::WeightFile { path, source } => {
                write!(f, "cannot read the size of {}: {source}", path.display())
            }
            BenchError::Driver(e) => write!(f, "{e}"),
            BenchError::Compile { build, source } => write!(f, "{build} compile: {source}"),
            BenchError::Run { step, source } => write!(f, "{step}: {source}"),
            BenchError::Device(e) => write!(f, "--backend cuda: {e}"),
            BenchError::DeviceRun { step, source } => write!(f, "{step}: {source}"),
            BenchError::DeviceBandwidth(e) => write!(f, "--backend cuda: bandwidth probe: {e}"),
            BenchError::NonFinite {
                phase,
                index,
                value,
            } => {
                let phase = match phase {
                    Phase::Prefill => "prefill",
                    Phase::Decode => "decode",
                };
                write!(
                    f,
                    "{phase}: logit {index} is {value} (the run is broken; its timing would \
                     mean nothing)"
                )
            }
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::CacheDir { source, .. } | BenchError::WeightFile { source, .. } => {
                Some(source)
            }
            BenchError::Driver(e) => Some(e),
            BenchError::Compile { source, .. } | BenchError::Run { source, .. } => Some(source),
            BenchError::Device(e) | BenchError::DeviceBandwidth(e) => Some(e),
            BenchError::DeviceRun { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The weights a benchmark times: a checkpoint bound to the Spec, or random tensors made
/// in memory at its shapes.
#[derive(Debug)]
pub enum BenchWeights {
    Checkpoint(BoundWeights),
    Random(RandomWeights),
}

impl BenchWeights {
    pub fn source(&self) -> &dyn WeightSource {
        match self {
            BenchWeights::Checkpoint(w) => w,
            BenchWeights::Random(w) => w,
        }
    }

    /// The bytes every tensor is stored in, by canonical name: a block-quantised tensor
    /// counts as its blocks, not as widened.
    pub fn stored_bytes(&self) -> BTreeMap<String, u64> {
        match self {
            BenchWeights::Checkpoint(w) => w
                .names()
                .filter_map(|n| match w.blocks(n) {
                    Some(b) => Some((n.to_string(), b.bytes.len() as u64)),
                    None => w.get(n).map(|v| (n.to_string(), v.bytes.len() as u64)),
                })
                .collect(),
            BenchWeights::Random(w) => w
                .names()
                .filter_map(|n| w.get(n).map(|v| (n.to_string(), v.bytes.len() as u64)))
                .collect(),
        }
    }

    /// Bytes one decode step reads from these weights (see
    /// [`archc_spec::stats::decode_bytes_per_token`]).
    pub fn decode_bytes_per_token(&self, spec: &Spec) -> u64 {
        let stored = self.stored_bytes();
        archc_spec::stats::decode_bytes_per_token(spec, &|t| {
            stored.get(&t.name).copied().unwrap_or(0)
        })
    }

    /// The size of the weights: the checkpoint's files on disk (safetensors shards or the
    /// GGUF file), or the random tensors in memory.
    pub fn total_bytes(&self) -> Result<u64, BenchError> {
        let paths = match self {
            BenchWeights::Random(w) => return Ok(w.bytes()),
            BenchWeights::Checkpoint(w) => match (w.checkpoint(), w.gguf()) {
                (Some(ck), _) => ck.paths(),
                (None, Some(file)) => vec![file.path().to_path_buf()],
                (None, None) => Vec::new(),
            },
        };
        let mut total = 0u64;
        for path in paths {
            let meta = std::fs::metadata(&path)
                .map_err(|source| BenchError::WeightFile { path, source })?;
            total = total.saturating_add(meta.len());
        }
        Ok(total)
    }
}

/// The element type of a program's KV cache, as a dtype for the KV statistics: the
/// executor's, not the model's. A model without a cache (its KV bytes are zero anyway)
/// counts as f32.
fn cache_dtype(program: &archc_compiler::kernel::program::ProgramDoc) -> DType {
    let elem = program
        .buffers
        .iter()
        .find(|b| matches!(&b.kind, BufferKind::Input(io) if io.is_carried()))
        .map(|b| b.elem);
    match elem {
        Some(Elem::Bf16) => DType::Bf16,
        Some(Elem::F16) => DType::F16,
        _ => DType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_by_the_drivers_name() {
        let h200 = gpu_reference("NVIDIA H200").expect("the H200 is in the table");
        assert_eq!(
            (h200.hbm_bytes_per_s, h200.bf16_dense_flops_per_s),
            (4.8e12, 790e12)
        );
        assert_eq!(
            gpu_reference("NVIDIA H100 80GB HBM3").map(|r| r.hbm_bytes_per_s),
            Some(3.35e12)
        );
        assert!(gpu_reference("NVIDIA H200 NVL").is_none());
        assert!(gpu_reference("Some Other GPU").is_none());
        // The fallback reference is the first row.
        assert_eq!(GPU_REFERENCES[0].name, "NVIDIA H200");
    }

    #[test]
    fn errors_name_the_step_and_the_cause() {
        let e = Step::Decode {
            step: 3,
            repetition: 1,
        }
        .failed(ExecError::Input("token 9 is outside the vocabulary".into()));
        assert_eq!(
            e.to_string(),
            "decode step 3 (repetition 1): token 9 is outside the vocabulary"
        );
        let e = BenchError::Compile {
            build: Build::Cached,
            source: ExecError::Program("no decode program".into()),
        };
        assert_eq!(e.to_string(), "cached compile: no decode program");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            BenchError::Device(CudaError::NoDriver).to_string(),
            format!("--backend cuda: {}", CudaError::NoDriver)
        );
    }
}
