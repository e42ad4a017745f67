//! Binds every canonical parameter of a `Spec` to checkpoint tensors: an HF safetensors
//! checkpoint through each tensor's HF binding, or a llama.cpp GGUF file through its GGUF
//! binding, applying the binding's transposes, slices, stacks and value fix-ups.
//!
//! From safetensors, plain tensors stay memory-mapped (zero-copy); transposed, sliced and
//! stacked ones are materialised into owned buffers in their stored dtype; FP8 and MXFP4
//! weights become blocks the kernels decode (`bind/quantized.rs`). From GGUF,
//! plain float tensors without a fix-up stay mapped; the raw blocks of quantised ones
//! (rows un-permuted where llama.cpp permuted them) are kept for compiled kernels, see
//! [`BoundWeights::quantized`], and dequantised to f32 only when something asks for the
//! f32 tensor (the interpreter), so a model run on its blocks never holds an f32 copy;
//! transposed, sliced or fixed-up quantised tensors are dequantised at bind time.
//! Binding checks the whole checkpoint at once and reports every problem together:
//! missing tensors, tensors the model does not use, wrong shapes and wrong dtypes, each
//! naming the tensor and showing what was expected against what was found.

mod mla_split;
mod quantized;

use crate::quant::{self, GgmlType};
use crate::weights::gguf::GgufFile;
use crate::weights::{Checkpoint, Dtype, TensorView};
use archc_spec::tensors::{tensors, GgufFix, Role, Source, TensorSpec};
use archc_spec::{Family, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Where a bound parameter's bytes live.
#[derive(Debug)]
enum Data {
    /// Zero-copy: this checkpoint tensor as it is.
    Mapped(String),
    /// Rearranged bytes (transpose, slice, stack) in the stored dtype, or dequantised f32.
    Owned(Vec<u8>),
    /// The f32 values of the parameter's raw blocks, dequantised on first use.
    Lazy(std::sync::OnceLock<Vec<u8>>),
}

#[derive(Debug)]
struct Bound {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Data,
    /// The GGUF tensor's own blocks in canonical layout, where they can be had.
    raw: Option<(GgmlType, Data)>,
}

/// The file(s) the weights come from.
#[derive(Debug)]
enum Store {
    Safetensors(Checkpoint),
    Gguf(GgufFile),
}

impl Store {
    fn mapped(&self, stored: &str) -> Option<&[u8]> {
        match self {
            Store::Safetensors(ck) => ck.get(stored).ok().map(|v| v.bytes),
            Store::Gguf(file) => file.info(stored).map(|i| file.bytes(i)),
        }
    }
}

/// A parameter's quantised blocks as the GGUF file stores them (see [`BoundWeights::quantized`]).
#[derive(Debug, Clone, Copy)]
pub struct QuantView<'a> {
    pub ty: GgmlType,
    /// Canonical (torch-order) shape; rows of the last extent hold whole blocks.
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// Every parameter of a model, bound to a checkpoint and checked against its Spec.
#[derive(Debug)]
pub struct BoundWeights {
    store: Store,
    params: BTreeMap<String, Bound>,
    notes: Vec<String>,
}

impl BoundWeights {
    /// What binding left unread on purpose (the multi-token-prediction layers), for the
    /// user to see: one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The parameter's tensor under its canonical name (`layers.0.attn.q.weight`).
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let p = self.params.get(name)?;
        let bytes = match &p.data {
            Data::Mapped(stored) => self.store.mapped(stored)?,
            Data::Owned(bytes) => bytes.as_slice(),
            Data::Lazy(once) => {
                let q = self.quantized(name)?;
                // Binding checked that the blocks are whole, so this cannot fail.
                let values = once.get_or_init(|| {
                    quant::dequantize(q.ty, q.bytes).map_or_else(|_| Vec::new(), |v| f32_bytes(&v))
                });
                if values.is_empty() && !q.bytes.is_empty() {
                    return None;
                }
                values.as_slice()
            }
        };
        Some(TensorView {
            dtype: p.dtype,
            shape: &p.shape,
            bytes,
        })
    }

    /// The parameter's blocks, for kernels that read quantised data: a GGUF tensor's in
    /// its GGML type, an HF checkpoint's FP8 or MXFP4 weights as `F8E4m3` or `Mxfp4`
    /// blocks (see `bind/quantized.rs`). `None` for float tensors and for tensors whose
    /// values needed a fix-up (norm weights stored as `1 + w`); rows that llama.cpp
    /// permuted for its RoPE come back in canonical order.
    pub fn quantized(&self, name: &str) -> Option<QuantView<'_>> {
        let p = self.params.get(name)?;
        let (ty, data) = p.raw.as_ref()?;
        let bytes = match data {
            Data::Mapped(stored) => self.store.mapped(stored)?,
            Data::Owned(bytes) => bytes.as_slice(),
            Data::Lazy(_) => return None,
        };
        Some(QuantView {
            ty: *ty,
            shape: &p.shape,
            bytes,
        })
    }

    /// Canonical names of all bound parameters, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Whether a parameter is served straight from the mapped file (no copy).
    pub fn is_zero_copy(&self, name: &str) -> bool {
        matches!(
            self.params.get(name),
            Some(Bound {
                data: Data::Mapped(_),
                ..
            })
        )
    }

    /// The safetensors checkpoint, when the weights come from one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match &self.store {
            Store::Safetensors(ck) => Some(ck),
            Store::Gguf(_) => None,
        }
    }

    /// The GGUF file, when the weights come from one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.store {
            Store::Gguf(f) => Some(f),
            Store::Safetensors(_) => None,
        }
    }
}

impl archc_compiler::interp::WeightSource for BoundWeights {
    fn get(&self, name: &str) -> Option<archc_compiler::interp::WeightView<'_>> {
        use archc_compiler::interp::{WeightDType, WeightView};
        let v = BoundWeights::get(self, name)?;
        let dtype = match v.dtype {
            Dtype::F32 => WeightDType::F32,
            Dtype::F16 => WeightDType::F16,
            Dtype::Bf16 => WeightDType::Bf16,
            // Binding admits only the three dtypes above.
            _ => return None,
        };
        Some(WeightView {
            dtype,
            shape: v.shape,
            bytes: v.bytes,
        })
    }

    fn blocks(&self, name: &str) -> Option<archc_compiler::interp::BlockView<'_>> {
        use archc_compiler::kernel::lower::BlockFormat;
        let q = self.quantized(name)?;
        let format = match q.ty {
            GgmlType::Q4_0 => BlockFormat::Q4_0,
            GgmlType::Q4_1 => BlockFormat::Q4_1,
            GgmlType::Q5_0 => BlockFormat::Q5_0,
            GgmlType::Q5_1 => BlockFormat::Q5_1,
            GgmlType::Q8_0 => BlockFormat::Q8_0,
            GgmlType::Q2K => BlockFormat::Q2K,
            GgmlType::Q3K => BlockFormat::Q3K,
            GgmlType::Q4K => BlockFormat::Q4K,
            GgmlType::Q5K => BlockFormat::Q5K,
            GgmlType::Q6K => BlockFormat::Q6K,
            GgmlType::Iq4Nl => BlockFormat::Iq4Nl,
            GgmlType::Iq4Xs => BlockFormat::Iq4Xs,
            GgmlType::Mxfp4 => BlockFormat::Mxfp4,
            GgmlType::F8E4m3 => BlockFormat::F8E4m3,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => return None,
        };
        Some(archc_compiler::interp::BlockView {
            format,
            shape: q.shape,
            bytes: q.bytes,
        })
    }
}

/// One thing wrong between a Spec's parameters and a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The family has no checkpoint name for this parameter.
    NoBinding { param: String, family: Family },
    /// A stored tensor the binding needs is absent.
    Missing {
        stored: String,
        param: String,
        shape: Vec<u64>,
    },
    /// A stored tensor has the wrong shape for the parameter it feeds.
    Shape {
        stored: String,
        param: String,
        expected: String,
        found: Vec<usize>,
    },
    /// A stored tensor is not of a float dtype the runtime reads, or experts disagree.
    Dtype {
        stored: String,
        expected: String,
        found: Dtype,
    },
    /// A stored tensor that passed the checks above could not be read.
    Unreadable { stored: String, message: String },
    /// Checkpoint tensors that no parameter uses.
    Unexpected { stored: Vec<String> },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoBinding { param, family } => write!(
                f,
                "no checkpoint name: parameter {param} has no {} checkpoint tensor",
                family.as_str()
            ),
            Problem::Missing {
                stored,
                param,
                shape,
            } => write!(
                f,
                "missing tensor '{stored}' (needed for {param}, shape {shape:?})"
            ),
            Problem::Shape {
                stored,
                param,
                expected,
                found,
            } => write!(
                f,
                "wrong shape: tensor '{stored}' (for {param}): expected {expected}, found {found:?}"
            ),
            Problem::Dtype {
                stored,
                expected,
                found,
            } => write!(
                f,
                "wrong dtype: tensor '{stored}': expected {expected}, found {found}"
            ),
            Problem::Unreadable { stored, message } => {
                write!(f, "unreadable tensor '{stored}': {message}")
            }
            Problem::Unexpected { stored } => {
                write!(
                    f,
                    "unexpected tensors: {} checkpoint tensor(s) that the model does not use:",
                    stored.len()
                )?;
                for s in stored {
                    write!(f, "\n    '{s}'")?;
                }
                Ok(())
            }
        }
    }
}

/// Binding failed; every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindError {
    pub model: String,
    pub family: Family,
    pub problems: Vec<Problem>,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint does not match model \"{}\" ({}): {} problem(s)",
            self.model,
            self.family.as_str(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BindError {}

/// Checkpoint tensors HF itself never loads as parameters (non-persistent buffers that
/// older exports still carry), so their presence is not an error.
fn is_ignored_buffer(family: Family, stored: &str) -> bool {
    if stored.ends_with("rotary_emb.inv_freq") {
        return true;
    }
    family == Family::Gpt2
        && (stored.ends_with(".attn.bias") || stored.ends_with(".attn.masked_bias"))
}

/// Binds every parameter of `spec` to `checkpoint`, or reports every mismatch.
pub fn bind(spec: &Spec, checkpoint: Checkpoint) -> Result<BoundWeights, BindError> {
    // A multimodal checkpoint: its language model, with the towers set aside.
    let (checkpoint, towers) = checkpoint.text_model();
    let mut problems = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut params = BTreeMap::new();
    // An f8 spec needs FP8 weights: the first projection read otherwise, if none is FP8.
    let mut fp8 = false;
    let mut not_fp8: Option<(String, Dtype)> = None;
    for t in tensors(spec) {
        let Some(source) = &t.hf else {
            problems.insert(Problem::NoBinding {
                param: t.name.clone(),
                family: spec.family,
            });
            continue;
        };
        used.extend(source.names());
        let companions = quantized::companions(source, &checkpoint);
        fp8 |= companions.iter().any(|c| c.ends_with("_scale_inv"));
        let projection = matches!(
            t.role,
            Role::Attention | Role::Ffn | Role::RoutedExpert | Role::SharedExpert
        ) && t.shape.len() >= 2;
        if projection && companions.is_empty() && not_fp8.is_none() {
            let first = source.names().into_iter().next();
            not_fp8 = first.and_then(|n| Some((n.clone(), checkpoint.info(&n)?.dtype)));
        }
        used.extend(companions);
        let bound = quantized::bind(&t, source, &checkpoint)
            .unwrap_or_else(|| bind_one(&t, source, &checkpoint));
        match bound {
            Ok(b) => {
                params.insert(t.name.clone(), b);
            }
            Err(ps) => problems.extend(ps),
        }
    }
    if spec.dtype == archc_spec::DType::F8 && !fp8 {
        if let Some((stored, found)) = not_fp8 {
            problems.insert(Problem::Dtype {
                stored,
                expected: "F8_E4M3 with block scales (the spec's dtype is f8)".into(),
                found,
            });
        }
    }
    let mtp: BTreeSet<String> = archc_spec::mtp::mtp_tensors(spec)
        .into_iter()
        .map(|t| t.name)
        .collect();
    let (skipped, unexpected): (Vec<String>, Vec<String>) = checkpoint
        .names()
        .filter(|n| !used.contains(*n) && !is_ignored_buffer(spec.family, n))
        .map(str::to_string)
        .partition(|n| mtp.contains(n));
    // Errors name tensors as the file does.
    let unexpected: Vec<String> = unexpected
        .iter()
        .map(|n| checkpoint.stored(n).to_string())
        .collect();
    if !unexpected.is_empty() {
        problems.insert(Problem::Unexpected { stored: unexpected });
    }
    let mut notes = Vec::new();
    if !towers.is_empty() {
        notes.push(format!(
            "left {} vision/audio tensor(s) of this multimodal checkpoint unread ({} ...): archc runs its text model",
            towers.len(),
            towers[0]
        ));
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "left {} multi-token-prediction tensor(s) unread ({} ...): the model's {} MTP layer(s) are not run",
            skipped.len(),
            skipped[0],
            spec.mtp
        ));
    }
    if problems.is_empty() {
        Ok(BoundWeights {
            store: Store::Safetensors(checkpoint),
            params,
            notes,
        })
    } else {
        Err(BindError {
            model: spec.name.clone(),
            family: spec.family,
            problems: problems.into_iter().collect(),
        })
    }
}

/// Looks a stored tensor up and checks that it is present and of a readable float dtype.
fn fetch<'c>(
    t: &TensorSpec,
    stored: &str,
    ck: &'c Checkpoint,
) -> Result<(Dtype, &'c [usize]), Problem> {
    let Some(info) = ck.info(stored) else {
        return Err(Problem::Missing {
            stored: stored.to_string(),
            param: t.name.clone(),
            shape: t.shape.clone(),
        });
    };
    if !info.dtype.is_supported() {
        return Err(Problem::Dtype {
            stored: stored.to_string(),
            expected: "F32, F16 or BF16".to_string(),
            found: info.dtype,
        });
    }
    Ok((info.dtype, &info.shape))
}

fn fmt_shape(s: &[usize]) -> String {
    format!("{s:?}")
}

fn bind_one(t: &TensorSpec, source: &Source, ck: &Checkpoint) -> Result<Bound, Vec<Problem>> {
    let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let shape_err = |stored: &str, expected: String, found: &[usize]| {
        vec![Problem::Shape {
            stored: stored.to_string(),
            param: t.name.clone(),
            expected,
            found: found.to_vec(),
        }]
    };
    match source {
        Source::Plain { name } => {
            let (dtype, shape) = fetch(t, name, ck).map_err(|p| vec![p])?;
            if shape != want.as_slice() {
                return Err(shape_err(name, fmt_shape(&want), shape));
            }
            Ok(Bound {
                dtype,
                shape: want,
                data: Data::Mapped(name.clone()),
                raw: None,
            })
        }
        Source::Transposed { name } => {
            let (dtype, shape) = fetch(t, name, ck).map_err(|p| vec![p])?;
            let mut stored_want = want.clone();
            let r = stored_want.len();
            if r < 2 {
                return Err(shape_err(name, "a tensor of rank 2 or more".into(), shape));
            }
            stored_want.swap(r - 2, r - 1);
            if shape != stored_want.as_slice() {
                return Err(shape_err(
                    name,
                    format!("{} (stored transposed)", fmt_shape(&stored_want)),
                    shape,
                ));
            }
            let bytes = read_bytes(ck, name)?;
            Ok(Bound {
                dtype,
                shape: want,
                raw: None,
                data: Data::Owned(transpose_last2(bytes, shape, dtype.size())),
            })
        }
        Source::Slice {
            name,
            axis,
            start,
            len,
            stride,
            transpose,
        } => {
            let (dtype, shape) = fetch(t, name, ck).map_err(|p| vec![p])?;
            let (start, len, stride, axis) =
                (*start as usize, *len as usize, *stride as usize, *axis);
            // The binding's numbers come from the spec; saturate so that even an unchecked
            // spec gets a shape error rather than an overflow.
            let last = start.saturating_add(len.saturating_sub(1).saturating_mul(stride));
            let describe = || {
                format!(
                    "a tensor whose axis {axis} holds entries {start}..{} step {stride}{}, giving {}",
                    last.saturating_add(1),
                    if *transpose { " then transposed" } else { "" },
                    fmt_shape(&want)
                )
            };
            if axis >= shape.len() || len == 0 || stride == 0 {
                return Err(shape_err(name, describe(), shape));
            }
            if last >= shape[axis] {
                return Err(shape_err(name, describe(), shape));
            }
            let mut result = shape.to_vec();
            result[axis] = len;
            if *transpose {
                let r = result.len();
                if r < 2 {
                    return Err(shape_err(name, describe(), shape));
                }
                result.swap(r - 2, r - 1);
            }
            if result != want {
                return Err(shape_err(name, describe(), shape));
            }
            let bytes = read_bytes(ck, name)?;
            let mut out = slice_axis(bytes, shape, axis, start, len, stride, dtype.size());
            if *transpose {
                let mut sliced = shape.to_vec();
                sliced[axis] = len;
                out = transpose_last2(&out, &sliced, dtype.size());
            }
            Ok(Bound {
                dtype,
                shape: want,
                raw: None,
                data: Data::Owned(out),
            })
        }
        Source::Stack { .. } => {
            let names = source.names();
            let inner = want.get(1..).unwrap_or(&[]).to_vec();
            let mut problems = Vec::new();
            let mut dtype = None;
            for n in &names {
                match fetch(t, n, ck) {
                    Err(p) => problems.push(p),
                    Ok((d, shape)) => {
                        if shape != inner.as_slice() {
                            problems.push(shape_err(n, fmt_shape(&inner), shape).remove(0));
                        }
                        match dtype {
                            None => dtype = Some(d),
                            Some(first) if first != d => problems.push(Problem::Dtype {
                                stored: n.clone(),
                                expected: format!("{first} like expert 0"),
                                found: d,
                            }),
                            Some(_) => {}
                        }
                    }
                }
            }
            if want.first() != Some(&names.len()) {
                problems.push(Problem::Shape {
                    stored: names.first().cloned().unwrap_or_default(),
                    param: t.name.clone(),
                    expected: fmt_shape(&want),
                    found: std::iter::once(names.len())
                        .chain(inner.iter().copied())
                        .collect(),
                });
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            let mut out = Vec::new();
            for n in &names {
                out.extend_from_slice(read_bytes(ck, n)?);
            }
            Ok(Bound {
                dtype: dtype.unwrap_or(Dtype::F32),
                shape: want,
                raw: None,
                data: Data::Owned(out),
            })
        }
    }
}

/// The bytes of a tensor that `fetch` already checked.
fn read_bytes<'c>(ck: &'c Checkpoint, name: &str) -> Result<&'c [u8], Vec<Problem>> {
    ck.get(name).map(|v| v.bytes).map_err(|e| {
        vec![Problem::Unreadable {
            stored: name.to_string(),
            message: e.detail(),
        }]
    })
}

/// Swaps the last two axes of a C-order tensor of `esize`-byte elements.
fn transpose_last2(bytes: &[u8], shape: &[usize], esize: usize) -> Vec<u8> {
    let r = shape.len();
    let (rows, cols) = (shape[r - 2], shape[r - 1]);
    let mat = rows * cols * esize;
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes
        .chunks_exact(mat.max(1))
        .zip(out.chunks_exact_mut(mat.max(1)))
    {
        for i in 0..rows {
            for j in 0..cols {
                let s = (i * cols + j) * esize;
                let d = (j * rows + i) * esize;
                dst[d..d + esize].copy_from_slice(&src[s..s + esize]);
            }
        }
    }
    out
}

/// Takes `len` entries along `axis`, the first at `start`, each next `stride` further.
fn slice_axis(
    bytes: &[u8],
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
    stride: usize,
    esize: usize,
) -> Vec<u8> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product::<usize>() * esize;
    let dim = shape[axis];
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        for j in 0..len {
            let row = o * dim + start + j * stride;
            out.extend_from_slice(&bytes[row * inner..(row + 1) * inner]);
        }
    }
    out
}

/// Binds every parameter of `spec` to the tensors of a GGUF file through each tensor's
/// GGUF binding, or reports every mismatch. Plain float tensors without a fix-up stay
/// mapped; everything else is dequantised to f32, rearranged and fixed up.
pub fn bind_gguf(spec: &Spec, file: GgufFile) -> Result<BoundWeights, BindError> {
    let mut problems = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut params = BTreeMap::new();
    for t in tensors(spec) {
        let Some(binding) = &t.gguf else {
            problems.insert(Problem::NoBinding {
                param: t.name.clone(),
                family: spec.family,
            });
            continue;
        };
        // MLA's kv_b split in two by current llama.cpp conversions.
        if let Source::Plain { name } = &binding.source {
            let split = mla_split::halves(name).filter(|(k, v)| {
                file.info(name).is_none() && file.info(k).is_some() && file.info(v).is_some()
            });
            if let (Some((k_b, v_b)), GgufFix::None) = (split, binding.fix) {
                match mla_split::bind(&t, &k_b, &v_b, &file) {
                    Ok(b) => {
                        params.insert(t.name.clone(), b);
                    }
                    Err(ps) => problems.extend(ps),
                }
                used.extend([k_b, v_b]);
                continue;
            }
        }
        used.extend(binding.source.names());
        match bind_gguf_one(&t, &binding.source, binding.fix, &file) {
            Ok(b) => {
                params.insert(t.name.clone(), b);
            }
            Err(ps) => problems.extend(ps),
        }
    }
    let unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !used.contains(n))
        .collect();
    if !unexpected.is_empty() {
        problems.insert(Problem::Unexpected { stored: unexpected });
    }
    if problems.is_empty() {
        Ok(BoundWeights {
            store: Store::Gguf(file),
            params,
            notes: Vec::new(),
        })
    } else {
        Err(BindError {
            model: spec.name.clone(),
            family: spec.family,
            problems: problems.into_iter().collect(),
        })
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bind_gguf_one(
    t: &TensorSpec,
    source: &Source,
    fix: GgufFix,
    file: &GgufFile,
) -> Result<Bound, Vec<Problem>> {
    let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let name = match source {
        Source::Plain { name } | Source::Transposed { name } | Source::Slice { name, .. } => name,
        Source::Stack { template, .. } => {
            return Err(vec![Problem::Unreadable {
                stored: template.clone(),
                message: "per-expert GGUF tensors are not supported".into(),
            }])
        }
    };
    let Some(info) = file.info(name) else {
        return Err(vec![Problem::Missing {
            stored: name.clone(),
            param: t.name.clone(),
            shape: t.shape.clone(),
        }]);
    };
    let shape_err = |expected: String| {
        vec![Problem::Shape {
            stored: name.clone(),
            param: t.name.clone(),
            expected,
            found: info.shape.clone(),
        }]
    };
    // The stored shape that, after the source's rearrangement, gives the canonical one.
    // llama.cpp drops unit axes (LFM2's `[hidden, 1, taps]` convolution is `[hidden,
    // taps]`); without them the bytes are in the same order, so that is the same tensor.
    let squeezed = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    let stored_ok = match source {
        Source::Plain { .. } => info.shape == want || squeezed(&info.shape) == squeezed(&want),
        Source::Transposed { .. } => {
            let mut s = want.clone();
            let r = s.len();
            r >= 2 && {
                s.swap(r - 2, r - 1);
                info.shape == s
            }
        }
        Source::Slice {
            axis,
            start,
            len,
            stride,
            transpose,
            ..
        } => {
            let (axis, start, len, stride) =
                (*axis, *start as usize, *len as usize, *stride as usize);
            let last = start.saturating_add(len.saturating_sub(1).saturating_mul(stride));
            let mut result = info.shape.clone();
            let fits = axis < result.len() && len > 0 && stride > 0 && last < result[axis];
            if fits {
                result[axis] = len;
                if *transpose && result.len() >= 2 {
                    let r = result.len();
                    result.swap(r - 2, r - 1);
                }
            }
            fits && result == want
        }
        Source::Stack { .. } => false,
    };
    if !stored_ok {
        let how = match source {
            Source::Plain { .. } => String::new(),
            Source::Transposed { .. } => " after swapping the last two axes".into(),
            _ => " after slicing".into(),
        };
        return Err(shape_err(format!("{want:?}{how}")));
    }
    if let GgufFix::RopePermute { heads } = fix {
        let rows = want.first().copied().unwrap_or(0);
        let heads = heads as usize;
        if heads == 0 || rows % heads != 0 || (rows / heads) % 2 != 0 {
            return Err(shape_err(format!(
                "{want:?} with rows in {heads} heads of an even size (for the RoPE un-permute)"
            )));
        }
    }
    let unreadable = |message: String| {
        vec![Problem::Unreadable {
            stored: name.clone(),
            message,
        }]
    };
    let bytes = file.bytes(info);
    let plain = matches!(source, Source::Plain { .. });
    // Float tensors used as stored are served from the map.
    let float = match info.ty {
        GgmlType::F32 => Some(Dtype::F32),
        GgmlType::F16 => Some(Dtype::F16),
        GgmlType::Bf16 => Some(Dtype::Bf16),
        _ => None,
    };
    let raw = match (plain, fix) {
        (true, GgufFix::None) => Some((info.ty, Data::Mapped(name.clone()))),
        (true, GgufFix::RopePermute { heads }) => {
            let row_bytes = bytes.len() / want.first().copied().unwrap_or(1).max(1);
            Some((
                info.ty,
                Data::Owned(unpermute_rows(bytes, heads as usize, row_bytes)),
            ))
        }
        _ => None,
    };
    if let (true, GgufFix::None, Some(dtype)) = (plain, fix, float) {
        return Ok(Bound {
            dtype,
            shape: want,
            data: Data::Mapped(name.clone()),
            raw,
        });
    }
    if raw.is_some() {
        // The f32 tensor is the raw blocks dequantised: made when first asked for.
        let block = info.ty.layout().block_bytes;
        if bytes.len() % block != 0 {
            let e = quant::DequantError {
                ty: info.ty,
                bytes: bytes.len(),
            };
            return Err(unreadable(e.to_string()));
        }
        return Ok(Bound {
            dtype: Dtype::F32,
            shape: want,
            data: Data::Lazy(std::sync::OnceLock::new()),
            raw,
        });
    }
    let values = quant::dequantize(info.ty, bytes).map_err(|e| unreadable(e.to_string()))?;
    let mut out = f32_bytes(&values);
    match source {
        Source::Transposed { .. } => out = transpose_last2(&out, &info.shape, 4),
        Source::Slice {
            axis,
            start,
            len,
            stride,
            transpose,
            ..
        } => {
            let (axis, start, len, stride) =
                (*axis, *start as usize, *len as usize, *stride as usize);
            out = slice_axis(&out, &info.shape, axis, start, len, stride, 4);
            if *transpose {
                let mut sliced = info.shape.clone();
                sliced[axis] = len;
                out = transpose_last2(&out, &sliced, 4);
            }
        }
        _ => {}
    }
    match fix {
        GgufFix::None => {}
        GgufFix::RopePermute { heads } => {
            let rows = want.first().copied().unwrap_or(1).max(1);
            out = unpermute_rows(&out, heads as usize, out.len() / rows);
        }
        GgufFix::PlusOne => map_f32(&mut out, |w| w - 1.0),
        GgufFix::NegExp => map_f32(&mut out, |a| (-a).ln()),
    }
    Ok(Bound {
        dtype: Dtype::F32,
        shape: want,
        data: Data::Owned(out),
        raw,
    })
}

/// Applies `f` to every f32 of a little-endian buffer.
fn map_f32(bytes: &mut [u8], f: impl Fn(f32) -> f32) {
    for c in bytes.chunks_exact_mut(4) {
        let v = f(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        c.copy_from_slice(&v.to_le_bytes());
    }
}

/// Undoes llama.cpp's `permute(w, heads)` on the rows of a projection (or bias): the
/// converter moved HF row `h*d + s*d/2 + j` (half `s` of head `h`) to `h*d + 2*j + s`,
/// so that rotation pairs sit side by side. Rows are `row_bytes` long, which works the
/// same on f32 values and on quantised blocks (a row is whole blocks).
fn unpermute_rows(bytes: &[u8], heads: usize, row_bytes: usize) -> Vec<u8> {
    let rows = bytes.len() / row_bytes.max(1);
    let d = rows / heads.max(1);
    let half = d / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let canon = h * d + s * half + j;
                let stored = h * d + 2 * j + s;
                out[canon * row_bytes..(canon + 1) * row_bytes]
                    .copy_from_slice(&bytes[stored * row_bytes..(stored + 1) * row_bytes]);
            }
        }
    }
    out
}
