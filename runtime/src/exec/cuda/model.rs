//! A model on the GPU: its prefill and decode kernel programs loaded on one device over
//! one shared upload of the weights, and the KV cache of a sequence between calls.
//!
//! The cache lives on the host for now: each call uploads the `[past, ...]` entries the
//! program reads and downloads the grown `[past+seq, ...]` ones it writes. That costs two
//! copies of the whole cache per token in decode, which is fine for correctness and small
//! models; keeping it on the device needs `CudaProgram::run` to take and return device
//! buffers, a change local to this module and its parent.

use super::{failed, probe, CudaError, CudaProgram, DeviceInfo, DeviceParams};
use crate::exec::cpu::{f32_to_bf16, f32_to_f16, program, Phase};
use crate::weights::{decode_f32, Dtype};
use archc_compiler::interp::{WeightDType, WeightSource};
use archc_compiler::kernel::{BufferKind, Elem, Program};
use archc_compiler::Mode;
use cudarc::driver::CudaContext;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The KV cache of one sequence between calls of a `CudaModel` (host copies).
#[derive(Debug, Default)]
pub struct CudaKv {
    past: usize,
    /// Contents of each cache entry by its program name (`cache.0.k`), `[past, ...]`.
    entries: BTreeMap<String, Vec<u8>>,
}

impl CudaKv {
    /// Tokens already in the cache.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Forgets every cached token.
    pub fn clear(&mut self) {
        self.past = 0;
        self.entries.clear();
    }
}

/// Prefill and decode programs of one model, loaded on one device.
#[derive(Debug)]
pub struct CudaModel {
    prefill: CudaProgram,
    decode: CudaProgram,
    vocab: usize,
}

/// The bytes of parameter `name` with `shape` as `elem` stores them: borrowed when the
/// checkpoint already holds that type, converted otherwise.
fn param_bytes<'w>(
    weights: &'w dyn WeightSource,
    name: &str,
    elem: Elem,
    shape: &[usize],
) -> Result<Cow<'w, [u8]>, String> {
    let view = weights
        .get(name)
        .ok_or_else(|| format!("parameter `{name}` is not bound to a checkpoint tensor"))?;
    if view.shape != shape {
        return Err(format!(
            "parameter `{name}` has shape {:?} in the checkpoint, the program expects {shape:?}",
            view.shape
        ));
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
    let values = decode_f32(dtype, view.bytes)
        .ok_or_else(|| format!("parameter `{name}`: cannot read dtype {dtype}"))?;
    if values.len() != numel {
        return Err(format!(
            "parameter `{name}`: {} elements stored, {numel} expected",
            values.len()
        ));
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
            return Err(format!(
                "parameter `{name}`: the program reads it as i32, which no checkpoint stores"
            ))
        }
        Elem::U8 => {
            return Err(format!(
                "parameter `{name}`: quantised blocks are not uploaded to the GPU yet"
            ))
        }
        Elem::F8 => {
            return Err(format!(
                "parameter `{name}`: f8 weights are not uploaded to the GPU yet"
            ))
        }
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
        let bytes = param_bytes(weights, name, b.elem, &shape)
            .map_err(|message| CudaError::Failed { message })?;
        params.upload(stream, &b.name, b.elem, &bytes)?;
    }
    Ok(())
}

fn le_i32(xs: impl Iterator<Item = i32>) -> Vec<u8> {
    xs.flat_map(i32::to_le_bytes).collect()
}

impl CudaModel {
    /// Builds both kernel programs of `spec` (as the CPU backends do), uploads the weights
    /// once and loads the programs on device `ordinal`. The device is probed first, so a
    /// machine without a driver or device says so before any compilation.
    pub fn from_spec(
        spec: &archc_spec::Spec,
        weights: &dyn WeightSource,
        ordinal: usize,
    ) -> Result<CudaModel, CudaError> {
        let info: DeviceInfo = probe(ordinal)?;
        info.sm()?;
        let hint = |e: String| CudaError::Failed {
            message: format!("{e} (try the reference interpreter: --backend interp)"),
        };
        let prefill = program(spec, Mode::Prefill).map_err(hint)?;
        let decode = program(spec, Mode::Decode).map_err(hint)?;
        let vocab = usize::try_from(spec.vocab).map_err(|_| CudaError::Failed {
            message: "vocabulary too large".into(),
        })?;
        let ctx = CudaContext::new(ordinal).map_err(|e| failed("context", e))?;
        let stream = ctx.default_stream();
        let mut params = DeviceParams::default();
        upload_params(&prefill, weights, &stream, &mut params)?;
        upload_params(&decode, weights, &stream, &mut params)?;
        let params = Arc::new(params);
        let prefill =
            CudaProgram::with_params(prefill, info.clone(), &ctx, stream.clone(), params.clone())?;
        let decode = CudaProgram::with_params(decode, info, &ctx, stream, params)?;
        Ok(CudaModel {
            prefill,
            decode,
            vocab,
        })
    }

    pub fn device(&self) -> &DeviceInfo {
        self.prefill.device()
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> CudaKv {
        CudaKv::default()
    }

    /// Runs `tokens` after the cached ones through the chosen program and returns their
    /// logits, `[tokens.len() * vocab]`; the cache grows by `tokens.len()`. On an error
    /// the cache is left as it was.
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
        let gpu = match phase {
            Phase::Prefill => &self.prefill,
            Phase::Decode => &self.decode,
        };

        // Token ids fit i32: each is below the vocabulary, which the check above bounds.
        let tokens_b = le_i32(tokens.iter().map(|&t| t as i32));
        let positions_b = le_i32(past as i32..end);
        let empty: &[u8] = &[];
        let mut inputs: BTreeMap<String, &[u8]> = BTreeMap::new();
        for b in &gpu.program().buffers {
            if b.kind != BufferKind::Input {
                continue;
            }
            let data = match b.name.as_str() {
                "tokens" => &tokens_b[..],
                "positions" => &positions_b[..],
                n if n.starts_with("cache.") => match cache.entries.get(n) {
                    Some(v) => &v[..],
                    None if past == 0 => empty,
                    None => return Err(bad(format!("cache `{n}` is missing after {past} tokens"))),
                },
                n => return Err(bad(format!("unknown program input `{n}`"))),
            };
            inputs.insert(b.name.clone(), data);
        }
        let mut out = gpu.run(&inputs, seq, past)?;
        let logits = out
            .remove("logits")
            .ok_or_else(|| bad("the program has no `logits` output".into()))?;
        if logits.len() != seq * self.vocab * 4 {
            return Err(bad(format!(
                "logits have {} bytes, expected {} for {seq} tokens",
                logits.len(),
                seq * self.vocab * 4
            )));
        }
        for (name, bytes) in out {
            if name.starts_with("cache.") {
                cache.entries.insert(name, bytes);
            }
        }
        cache.past = end as usize;
        Ok(logits
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
