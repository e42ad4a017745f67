//! A model on the GPU: its prefill and decode kernel programs loaded on one device over
//! one shared upload of the weights, and the state of a sequence between calls.
//!
//! The KV cache stays on the device. Each cache entry has two device buffers: the one
//! the program reads (`[past, ...]`) and a spare it writes the grown cache into
//! (`[past+seq, ...]`); after a successful call they swap, so nothing of the cache crosses
//! the bus, and the spare grows by doubling, so a decode step does not allocate. A call
//! that fails leaves the cache as it was (the spare is only swapped in at the end).
//! A program lowered with in-place appends (`BufferKind::Append`) instead binds the cache
//! input and its grown form to one buffer, grown by doubling with the old rows kept, and
//! its kernels write only the new rows; then there is no spare and no swap.
//! Each program's temps live in a `Workspace` of the sequence, kept between calls; per
//! token only the token id and its position go up and the logits come back.

use super::{
    elem_bytes, failed, mem_info, probe, CudaError, CudaProgram, DevBuf, DeviceInfo, DeviceParams,
    Workspace,
};
use crate::exec::{driver, Phase};
use crate::weights::{decode_f32, Dtype};
use archc_compiler::driver::{Device, Logits, Options};
use archc_compiler::floats::{f32_to_bf16, f32_to_f16};
use archc_compiler::interp::{WeightDType, WeightSource};
use archc_compiler::ir::Io;
use archc_compiler::kernel::{BufferKind, Elem, Program};
use archc_compiler::Mode;
use cudarc::driver::CudaContext;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One KV cache entry on the device: what the programs read, and where they write the
/// grown copy.
#[derive(Debug, Default)]
struct KvEntry {
    current: DevBuf,
    spare: DevBuf,
}

/// The state of one sequence of a `CudaModel` on the device: the KV cache, and the
/// memory (and CUDA graph) of each program between calls.
#[derive(Debug, Default)]
pub struct CudaKv {
    past: usize,
    /// Each carried value (KV cache, state).
    entries: BTreeMap<Io, KvEntry>,
    prefill: Workspace,
    decode: Workspace,
}

impl CudaKv {
    /// Tokens already in the cache.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Forgets every cached token, keeping the device memory for the next sequence.
    pub fn clear(&mut self) {
        self.past = 0;
    }

    /// Device bytes held by the cache and the programs' temps.
    pub fn device_bytes(&self) -> usize {
        let kv: usize = self
            .entries
            .values()
            .map(|e| e.current.capacity() + e.spare.capacity())
            .sum();
        kv + self.prefill.bytes() + self.decode.bytes()
    }

    /// The decode program's workspace: whether it runs as a graph, and why not.
    pub fn decode_workspace(&self) -> &Workspace {
        &self.decode
    }
}

/// How a `CudaModel` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// Which logits the prefill program computes (`Last`: one row, what generation and
    /// benchmarks need).
    pub logits: Logits,
    /// Run each decode step as one CUDA graph replay (falling back to plain launches if
    /// the driver refuses the graph).
    pub graphs: bool,
}

impl Default for CudaOptions {
    /// Every logit; graphs when the environment sets `ARCHC_CUDA_GRAPH=1`.
    fn default() -> CudaOptions {
        CudaOptions {
            logits: Logits::All,
            graphs: std::env::var("ARCHC_CUDA_GRAPH").is_ok_and(|v| v == "1"),
        }
    }
}

/// Prefill and decode programs of one model, loaded on one device.
#[derive(Debug)]
pub struct CudaModel {
    prefill: CudaProgram,
    decode: CudaProgram,
    vocab: usize,
    options: CudaOptions,
    param_bytes: usize,
}

/// The bytes of parameter `name` with `shape` as `elem` stores them: borrowed when the
/// checkpoint already holds that type, converted otherwise.
fn param_bytes<'w>(
    weights: &'w dyn WeightSource,
    name: &str,
    elem: Elem,
    shape: &[usize],
) -> Result<Cow<'w, [u8]>, CudaError> {
    let bad = |message: String| CudaError::Param {
        name: name.to_string(),
        message,
    };
    if elem == Elem::U8 {
        // Quantised blocks (GGUF), which the kernels decode in place: uploaded as stored.
        let blocks = weights.blocks(name).ok_or_else(|| {
            bad("the program reads quantised blocks, the checkpoint has none".into())
        })?;
        let want: usize = shape.iter().product();
        if blocks.bytes.len() != want {
            return Err(bad(format!(
                "{} bytes of {} blocks stored, the program reads {want}",
                blocks.bytes.len(),
                blocks.format.name()
            )));
        }
        return Ok(Cow::Borrowed(blocks.bytes));
    }
    let view = weights
        .get(name)
        .ok_or_else(|| bad("not bound to a checkpoint tensor".into()))?;
    if view.shape != shape {
        return Err(bad(format!(
            "shape {:?} in the checkpoint, the program expects {shape:?}",
            view.shape
        )));
    }
    let numel: usize = shape.iter().product();
    let (stored, dtype) = match view.dtype {
        WeightDType::F32 => (Elem::F32, Dtype::F32),
        WeightDType::Bf16 => (Elem::Bf16, Dtype::Bf16),
        WeightDType::F16 => (Elem::F16, Dtype::F16),
    };
    if stored == elem && view.bytes.len() == numel * elem.bytes() {
        return Ok(Cow::Borrowed(view.bytes));
    }
    let values =
        decode_f32(dtype, view.bytes).ok_or_else(|| bad(format!("cannot read dtype {dtype}")))?;
    if values.len() != numel {
        return Err(bad(format!(
            "{} elements stored, {numel} expected",
            values.len()
        )));
    }
    let bytes: Vec<u8> = match elem {
        Elem::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Elem::Bf16 => values
            .iter()
            .flat_map(|&v| f32_to_bf16(v).to_le_bytes())
            .collect(),
        Elem::F16 => values
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect(),
        Elem::I32 => {
            return Err(bad(
                "the program reads it as i32, which no checkpoint stores".into(),
            ))
        }
        // Quantised blocks returned above.
        Elem::U8 => return Err(bad("quantised blocks expected".into())),
        Elem::F8 => return Err(bad("f8 weights are not uploaded to the GPU yet".into())),
    };
    Ok(Cow::Owned(bytes))
}

/// Uploads every parameter of `program` not yet in `params`, one tensor at a time so that
/// at most one converted copy is held on the host.
fn upload_params(
    program: &Program,
    weights: &dyn WeightSource,
    stream: &Arc<cudarc::driver::CudaStream>,
    params: &mut DeviceParams,
) -> Result<(), CudaError> {
    for b in &program.buffers {
        if b.kind != BufferKind::Param || params.contains(&b.name, b.elem) {
            continue;
        }
        let name = b.name.strip_prefix('@').unwrap_or(&b.name);
        let mut shape = Vec::with_capacity(b.shape.len());
        for d in &b.shape {
            let n = d
                .as_const()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| CudaError::Failed {
                    message: format!("parameter `{name}` has a symbolic shape"),
                })?;
            shape.push(n);
        }
        let bytes = param_bytes(weights, name, b.elem, &shape)?;
        params.upload(stream, &b.name, b.elem, &bytes)?;
    }
    Ok(())
}

fn le_i32(xs: impl Iterator<Item = i32>) -> Vec<u8> {
    xs.flat_map(i32::to_le_bytes).collect()
}

impl CudaModel {
    /// Builds both kernel programs of `spec` (as the CPU backends do), uploads the weights
    /// once and loads the programs on device `ordinal`, with the default options. The
    /// device is probed first, so a machine without a driver or device says so before any
    /// compilation.
    pub fn from_spec(
        spec: &archc_spec::Spec,
        weights: &dyn WeightSource,
        ordinal: usize,
    ) -> Result<CudaModel, CudaError> {
        CudaModel::from_spec_with(spec, weights, ordinal, CudaOptions::default())
    }

    /// `from_spec` with explicit options.
    pub fn from_spec_with(
        spec: &archc_spec::Spec,
        weights: &dyn WeightSource,
        ordinal: usize,
        options: CudaOptions,
    ) -> Result<CudaModel, CudaError> {
        let info: DeviceInfo = probe(ordinal)?;
        info.sm()?;
        let hint = |e: archc_compiler::driver::DriverError| CudaError::Failed {
            message: format!("{e} (try the reference interpreter: --backend interp)"),
        };
        let d = driver(
            spec,
            weights,
            Options {
                logits: options.logits,
                device: Device::Gpu,
                ..Options::default()
            },
        );
        let prefill = d.program(Mode::Prefill).map_err(hint)?;
        let decode = d.program(Mode::Decode).map_err(hint)?;
        let vocab = usize::try_from(spec.vocab).map_err(|_| CudaError::Failed {
            message: "vocabulary too large".into(),
        })?;
        let ctx = CudaContext::new(ordinal).map_err(|e| failed("context", e))?;
        let stream = ctx.default_stream();
        let mut params = DeviceParams::default();
        upload_params(&prefill, weights, &stream, &mut params)?;
        upload_params(&decode, weights, &stream, &mut params)?;
        let param_bytes = params.bytes();
        let params = Arc::new(params);
        let prefill =
            CudaProgram::with_params(prefill, info.clone(), &ctx, stream.clone(), params.clone())?;
        let decode = CudaProgram::with_params(decode, info, &ctx, stream, params)?;
        Ok(CudaModel {
            prefill,
            decode,
            vocab,
            options,
            param_bytes,
        })
    }

    pub fn device(&self) -> &DeviceInfo {
        self.prefill.device()
    }

    pub fn options(&self) -> CudaOptions {
        self.options
    }

    /// Switches graphs on or off for the next calls. The logits choice was made when the
    /// programs were built and stays.
    pub fn set_options(&mut self, options: CudaOptions) {
        self.options.graphs = options.graphs;
    }

    /// Bytes of parameters on the device.
    pub fn param_bytes(&self) -> usize {
        self.param_bytes
    }

    /// The device's (free, total) memory in bytes now.
    pub fn memory(&self) -> Result<(usize, usize), CudaError> {
        mem_info(self.prefill.stream())
    }

    /// Waits until every queued operation of the model has finished.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.prefill
            .stream()
            .synchronize()
            .map_err(|e| failed("synchronize", e))
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> CudaKv {
        CudaKv::default()
    }

    /// Runs `tokens` after the cached ones through the chosen program and returns their
    /// logits, `[tokens.len() * vocab]` (one row for a prefill with `Logits::Last`); the
    /// cache grows by `tokens.len()`. On an error the cache is left as it was.
    pub fn run(
        &self,
        phase: Phase,
        cache: &mut CudaKv,
        tokens: &[u32],
    ) -> Result<Vec<f32>, CudaError> {
        let bad = |message: String| CudaError::Failed { message };
        if tokens.is_empty() {
            return Err(bad("a call needs at least one token".into()));
        }
        if phase == Phase::Decode && tokens.len() != 1 {
            return Err(bad(format!("decode takes one token, got {}", tokens.len())));
        }
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab)
        {
            return Err(bad(format!(
                "token {i} is id {t}, outside the vocabulary of {}",
                self.vocab
            )));
        }
        let seq = tokens.len();
        let past = cache.past;
        let end = past
            .checked_add(seq)
            .and_then(|e| i32::try_from(e).ok())
            .ok_or_else(|| bad("position overflows 32 bits".into()))?;
        let (gpu, ws) = match phase {
            Phase::Prefill => (&self.prefill, &mut cache.prefill),
            Phase::Decode => (&self.decode, &mut cache.decode),
        };
        let p: &Program = gpu.program();
        let stream = gpu.stream();

        // Token ids fit i32: each is below the vocabulary, which the check above bounds.
        let tokens_b = le_i32(tokens.iter().map(|&t| t as i32));
        let positions_b = le_i32(past as i32..end);
        let mut ptrs = vec![0u64; p.buffers.len()];
        let mut logits_at = None;
        // In-place appends first: the cache input and its grown form share one buffer,
        // grown (keeping the old rows) to hold the grown form.
        let mut in_place = vec![false; p.buffers.len()];
        for (i, b) in p.buffers.iter().enumerate() {
            let BufferKind::Append { to } = b.kind else {
                continue;
            };
            let input = p.buffers.get(to).ok_or_else(|| {
                bad(format!(
                    "`{}` appends to buffer {to}, which does not exist",
                    b.name
                ))
            })?;
            let BufferKind::Input(io) = &input.kind else {
                return Err(bad(format!(
                    "`{}` appends to a buffer that is not an input",
                    b.name
                )));
            };
            let keep = elem_bytes(p, to, seq, past)?;
            let bytes = elem_bytes(p, i, seq, past)?;
            let e = cache.entries.entry(io.clone()).or_default();
            let held = if past == 0 { 0 } else { e.current.capacity() };
            if held < keep {
                return Err(bad(format!(
                    "cache `{}` holds {held} bytes on the device, the program reads {keep} \
                     after {past} tokens",
                    input.name
                )));
            }
            let ptr =
                e.current
                    .grow_keeping(stream, bytes, keep, &format!("cache `{}`", b.name))?;
            ptrs[i] = ptr;
            ptrs[to] = ptr;
            in_place[i] = true;
            in_place[to] = true;
        }
        for (i, b) in p.buffers.iter().enumerate() {
            if gpu.root(i) != i || b.kind == BufferKind::Param || in_place[i] {
                continue;
            }
            let bytes = elem_bytes(p, i, seq, past)?;
            let what = format!("`{}`", b.name);
            ptrs[i] = match &b.kind {
                BufferKind::Input(Io::Tokens) => ws.buf(i).write(stream, &tokens_b, &what)?,
                BufferKind::Input(Io::Positions) => ws.buf(i).write(stream, &positions_b, &what)?,
                BufferKind::Input(io) if io.is_carried() => {
                    let e = cache.entries.entry(io.clone()).or_default();
                    let held = if past == 0 {
                        bytes
                    } else {
                        e.current.capacity()
                    };
                    if held < bytes {
                        return Err(bad(format!(
                            "cache {what} holds {held} bytes on the device, the program reads \
                             {bytes} after {past} tokens"
                        )));
                    }
                    e.current.reserve(stream, bytes, false, &what)?
                }
                BufferKind::Input(io) => {
                    return Err(bad(format!("input `{io}` is not one a model run provides")))
                }
                BufferKind::Output(io) if io.is_carried() => {
                    let e = cache.entries.entry(io.clone()).or_default();
                    e.spare.reserve(stream, bytes, true, &what)?
                }
                kind => {
                    if *kind == BufferKind::Output(Io::Logits) {
                        logits_at = Some((i, bytes));
                    }
                    ws.buf(i).reserve(stream, bytes, true, &what)?
                }
            };
        }
        let (logits_i, logits_bytes) =
            logits_at.ok_or_else(|| bad("the program has no `logits` output".into()))?;
        let use_graph = self.options.graphs && phase == Phase::Decode;
        gpu.execute(ws, &mut ptrs, seq, past, use_graph)?;
        let logits = ws.buf(logits_i).read(stream, logits_bytes, "the logits")?;
        let rows = logits.len() / (self.vocab * 4).max(1);
        if logits.len() != rows * self.vocab * 4 || (rows != seq && rows != 1) || rows == 0 {
            return Err(bad(format!(
                "logits have {} bytes, expected rows of {} for {seq} tokens",
                logits.len(),
                self.vocab * 4
            )));
        }
        // The call succeeded: the grown caches become the current ones (an in-place
        // append already grew its buffer).
        for b in &p.buffers {
            if let BufferKind::Output(io) = &b.kind {
                if let Some(e) = cache.entries.get_mut(io) {
                    std::mem::swap(&mut e.current, &mut e.spare);
                }
            }
        }
        cache.past = end as usize;
        Ok(logits
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
