//! Quantised tensors of HF safetensors checkpoints, bound as blocks that the kernels
//! decode in registers (no up-front conversion):
//!
//! - **Block-scaled FP8**, as DeepSeek, Kimi and Qwen's `*-FP8` releases ship it: a
//!   `float8_e4m3fn` weight `[out, in]` and a `<name>_scale_inv` (f32 or bf16) of
//!   `[ceil(out / b0), ceil(in / b1)]`, one scale per `b0 × b1` block (edge blocks
//!   partial), `[b0, b1]` being `quantization_config.weight_block_size`. Each row becomes
//!   archc's `FP8_E4M3` blocks: per 32 elements, the f32 scale of the checkpoint block they
//!   fall in, then the 32 e4m3 bytes as stored.
//! - **MXFP4**, as gpt-oss ships its experts: `<name>_blocks` `[.., out, in / 32, 16]` of
//!   e2m1 nibbles (element `2j` in the low nibble of byte `j`, `2j + 1` in the high one)
//!   and `<name>_scales` `[.., out, in / 32]` of E8M0 exponents, for a parameter whose
//!   plain tensor would be `<name>` stored `[.., in, out]`. Each 32 become GGML's MXFP4
//!   block (the exponent byte, then element `j` in the low nibble of byte `j` and `j + 16`
//!   in its high nibble), the nibbles moved, never decoded.
//!
//! Rows are taken whole: a plain tensor, a stack of per-expert tensors, or rows sliced
//! from a fused tensor. Where an FP8 row is not whole 32-element groups of one checkpoint
//! block, the values are dequantised at bind time instead (correct, and larger). Codes
//! that decode to NaN (e4m3 `0x7f`/`0xff`, E8M0 `0xff`) and scales that are not finite or
//! beyond `2^100` are refused, naming the tensor.

use super::{Bound, Data, Problem};
use crate::quant::GgmlType;
use crate::weights::{Checkpoint, Dtype};
use archc_compiler::floats::{bf16_to_f32, f8e4m3_to_f32};
use archc_spec::tensors::{Source, TensorSpec};

/// Elements per block in both formats.
const BLOCK: usize = 32;

/// The largest FP8 scale read: the kernels take it times 2^8 in f32.
const MAX_SCALE: f32 = 1.2676506e30; // 2^100

/// The stored tensors a parameter reads besides its source's names: FP8 scales, MXFP4
/// blocks and scales.
pub(super) fn companions(source: &Source, ck: &Checkpoint) -> Vec<String> {
    let mut out = Vec::new();
    for n in source.names() {
        match ck.info(&n) {
            Some(i) if i.dtype == Dtype::F8E4M3 => out.push(format!("{n}_scale_inv")),
            None if ck.info(&format!("{n}_blocks")).is_some() => {
                out.push(format!("{n}_blocks"));
                out.push(format!("{n}_scales"));
            }
            _ => {}
        }
    }
    out
}

/// Binds `t` when its source reads FP8 or MXFP4 tensors; `None` when it reads others.
pub(super) fn bind(
    t: &TensorSpec,
    source: &Source,
    ck: &Checkpoint,
) -> Option<Result<Bound, Vec<Problem>>> {
    let names = source.names();
    let first = names.first()?;
    match ck.info(first) {
        Some(i) if i.dtype == Dtype::F8E4M3 => Some(fp8(t, source, ck).map_err(|p| vec![p])),
        None if ck.info(&format!("{first}_blocks")).is_some() => {
            Some(mxfp4(t, source, ck).map_err(|p| vec![p]))
        }
        _ => None,
    }
}

fn problem(stored: &str, message: impl Into<String>) -> Problem {
    Problem::Unreadable {
        stored: stored.to_string(),
        message: message.into(),
    }
}

/// A stored tensor's dtype, shape and bytes, or `Missing`.
fn tensor<'c>(
    ck: &'c Checkpoint,
    t: &TensorSpec,
    name: &str,
) -> Result<(Dtype, &'c [usize], &'c [u8]), Problem> {
    let info = ck.info(name).ok_or_else(|| Problem::Missing {
        stored: name.to_string(),
        param: t.name.clone(),
        shape: t.shape.clone(),
    })?;
    let bytes = ck
        .get_raw(name)
        .map_err(|e| problem(name, e.detail()))?
        .bytes;
    Ok((info.dtype, &info.shape, bytes))
}

/// The canonical rows of a parameter `[.., rows, k]`: row `i` (flattened over the
/// leading axes) is row `rows[i].1` of stored tensor `rows[i].0` (flattened the same way).
struct RowMap {
    k: usize,
    rows: Vec<(usize, usize)>,
}

/// `[b0, b1]` from the checkpoint's `quantization_config`, checked.
fn fp8_block(ck: &Checkpoint, name: &str) -> Result<[usize; 2], Problem> {
    let q = ck.quantization().ok_or_else(|| {
        problem(
            name,
            "an FP8 tensor, but no quantization_config (in config.json next to the weights) gives its block size",
        )
    })?;
    let method = q.get("quant_method").and_then(|m| m.as_str());
    if method != Some("fp8") {
        return Err(problem(
            name,
            format!(
                "an FP8 tensor, but quantization_config.quant_method is {method:?}, not \"fp8\""
            ),
        ));
    }
    let size = q
        .get("weight_block_size")
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 2)
        .and_then(|a| Some([a[0].as_u64()?, a[1].as_u64()?]))
        .filter(|[a, b]| (1..=1 << 20).contains(a) && (1..=1 << 20).contains(b));
    match size {
        Some([a, b]) => Ok([a as usize, b as usize]),
        None => Err(problem(
            name,
            "quantization_config.weight_block_size must be two block sizes in 1..=1048576",
        )),
    }
}

fn fp8(t: &TensorSpec, source: &Source, ck: &Checkpoint) -> Result<Bound, Problem> {
    let names = source.names();
    let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let shown = names.first().cloned().unwrap_or_default();
    let [b0, b1] = fp8_block(ck, &shown)?;
    let map = fp8_rows(t, source, ck, &want)?;
    let k = map.k;
    // Each stored tensor: its bytes and its scales as f32, row-major `[so, si]`.
    let mut stored = Vec::with_capacity(names.len());
    for n in &names {
        let (dtype, shape, bytes) = tensor(ck, t, n)?;
        if dtype != Dtype::F8E4M3 {
            return Err(problem(n, format!("{dtype}, where expert 0 is F8_E4M3")));
        }
        let (out, inner) = match shape {
            [o, i] => (*o, *i),
            _ => {
                return Err(problem(
                    n,
                    format!("an FP8 tensor of shape {shape:?}; only 2-D FP8 weights are read"),
                ))
            }
        };
        if let Some(at) = bytes.iter().position(|&b| b & 0x7f == 0x7f) {
            return Err(problem(
                n,
                format!("element {at} is an e4m3 NaN (0x{:02x})", bytes[at]),
            ));
        }
        let sname = format!("{n}_scale_inv");
        let (sd, sshape, sbytes) = tensor(ck, t, &sname)?;
        let (so, si) = (out.div_ceil(b0), inner.div_ceil(b1));
        if sshape != [so, si] {
            return Err(Problem::Shape {
                stored: sname,
                param: t.name.clone(),
                expected: format!("[{so}, {si}] (one scale per {b0}x{b1} block of {n} {shape:?})"),
                found: sshape.to_vec(),
            });
        }
        let scales: Vec<f32> = match sd {
            Dtype::F32 => sbytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::Bf16 => sbytes
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => {
                return Err(Problem::Dtype {
                    stored: sname,
                    expected: "F32 or BF16 (FP8 block scales)".into(),
                    found: other,
                })
            }
        };
        if let Some(at) = scales
            .iter()
            .position(|s| !s.is_finite() || s.abs() > MAX_SCALE)
        {
            return Err(problem(
                &sname,
                format!(
                    "scale {at} is {}, not a finite value within 2^100",
                    scales[at]
                ),
            ));
        }
        stored.push((bytes, scales, si));
    }
    // Whole 32-element groups inside one checkpoint block: blocks; otherwise f32 values.
    let as_blocks = k % BLOCK == 0 && b1 % BLOCK == 0;
    let rows = map.rows.len();
    if as_blocks {
        let mut out = Vec::with_capacity(rows * (k / BLOCK) * 36);
        for &(ti, r) in &map.rows {
            let (bytes, scales, si) = &stored[ti];
            let q = &bytes[r * k..(r + 1) * k];
            let srow = &scales[(r / b0) * si..(r / b0 + 1) * si];
            for (c, group) in q.chunks_exact(BLOCK).enumerate() {
                out.extend_from_slice(&srow[c * BLOCK / b1].to_le_bytes());
                out.extend_from_slice(group);
            }
        }
        return Ok(Bound {
            dtype: Dtype::F32,
            shape: want,
            data: Data::Lazy(std::sync::OnceLock::new()),
            raw: Some((GgmlType::F8E4m3, Data::Owned(out))),
        });
    }
    let mut out = Vec::with_capacity(rows * k * 4);
    for &(ti, r) in &map.rows {
        let (bytes, scales, si) = &stored[ti];
        for (c, &q) in bytes[r * k..(r + 1) * k].iter().enumerate() {
            let s = scales[(r / b0) * si + c / b1];
            out.extend_from_slice(&(f8e4m3_to_f32(q) * s).to_le_bytes());
        }
    }
    Ok(Bound {
        dtype: Dtype::F32,
        shape: want,
        data: Data::Owned(out),
        raw: None,
    })
}

/// Which stored rows make the canonical FP8 parameter `want`.
fn fp8_rows(
    t: &TensorSpec,
    source: &Source,
    ck: &Checkpoint,
    want: &[usize],
) -> Result<RowMap, Problem> {
    let names = source.names();
    let shape_of = |n: &str| ck.info(n).map(|i| i.shape.clone()).unwrap_or_default();
    let shape_err = |n: &str, expected: String| Problem::Shape {
        stored: n.to_string(),
        param: t.name.clone(),
        expected,
        found: shape_of(n),
    };
    match (source, want) {
        (Source::Plain { name }, &[rows, k]) => {
            if shape_of(name) != [rows, k] {
                return Err(shape_err(name, format!("{want:?}")));
            }
            Ok(RowMap {
                k,
                rows: (0..rows).map(|r| (0, r)).collect(),
            })
        }
        (Source::Stack { .. }, &[e, rows, k]) if e == names.len() => {
            for n in &names {
                if shape_of(n) != [rows, k] {
                    return Err(shape_err(n, format!("[{rows}, {k}]")));
                }
            }
            Ok(RowMap {
                k,
                rows: (0..e).flat_map(|x| (0..rows).map(move |r| (x, r))).collect(),
            })
        }
        (
            Source::Slice {
                name,
                axis: 0,
                start,
                len,
                stride,
                transpose: false,
            },
            &[rows, k],
        ) => {
            let (start, stride) = (*start as usize, *stride as usize);
            let s = shape_of(name);
            let last = start.saturating_add(rows.saturating_sub(1).saturating_mul(stride));
            if *len as usize != rows || stride == 0 || s.len() != 2 || s[1] != k || last >= s[0] {
                return Err(shape_err(name, format!("rows {start}.. step {stride} giving {want:?}")));
            }
            Ok(RowMap {
                k,
                rows: (0..rows).map(|r| (0, start + r * stride)).collect(),
            })
        }
        _ => Err(problem(
            names.first().map_or("", String::as_str),
            format!(
                "an FP8 tensor bound to {} as {source:?}: FP8 weights are read as whole tensors, expert stacks or row slices",
                t.name
            ),
        )),
    }
}

fn mxfp4(t: &TensorSpec, source: &Source, ck: &Checkpoint) -> Result<Bound, Problem> {
    let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let (name, start, stride) = match source {
        Source::Transposed { name } => (name, 0, 1),
        Source::Slice {
            name,
            axis,
            start,
            stride,
            transpose: true,
            ..
        } if *axis + 1 == want.len() => (name, *start as usize, *stride as usize),
        _ => {
            return Err(problem(
                &source.names().join(", "),
                format!("MXFP4 blocks bound to {} as {source:?}: only transposed tensors and slices of their output axis are read", t.name),
            ))
        }
    };
    let r = want.len();
    let (rows, k) = match want.as_slice() {
        [.., rows, k] if r >= 2 => (*rows, *k),
        _ => {
            return Err(problem(
                name,
                format!("MXFP4 blocks for a parameter of shape {want:?}"),
            ))
        }
    };
    let lead = &want[..r - 2];
    let (bname, sname) = (format!("{name}_blocks"), format!("{name}_scales"));
    let (bd, bshape, blocks) = tensor(ck, t, &bname)?;
    let (sd, sshape, scales) = tensor(ck, t, &sname)?;
    for (n, d) in [(&bname, bd), (&sname, sd)] {
        if d != Dtype::U8 {
            return Err(Problem::Dtype {
                stored: n.clone(),
                expected: "U8 (MXFP4)".into(),
                found: d,
            });
        }
    }
    let nb = k / BLOCK;
    // The stored output axis: at least as long as the slice needs.
    let out = bshape.get(r - 2).copied().unwrap_or(0);
    let last = start.saturating_add(rows.saturating_sub(1).saturating_mul(stride));
    let mut expect_b: Vec<usize> = lead.to_vec();
    expect_b.extend([out, nb, 16]);
    let mut expect_s: Vec<usize> = lead.to_vec();
    expect_s.extend([out, nb]);
    if k % BLOCK != 0 || stride == 0 || last >= out || bshape != expect_b.as_slice() {
        return Err(Problem::Shape {
            stored: bname,
            param: t.name.clone(),
            expected: format!("{lead:?} + [out, {k}/32, 16] with output rows {start}.. step {stride} giving {want:?}"),
            found: bshape.to_vec(),
        });
    }
    if sshape != expect_s.as_slice() {
        return Err(Problem::Shape {
            stored: sname,
            param: t.name.clone(),
            expected: format!("{expect_s:?}"),
            found: sshape.to_vec(),
        });
    }
    if let Some(at) = scales.iter().position(|&e| e == 0xff) {
        return Err(problem(
            &sname,
            format!("scale {at} is the E8M0 NaN (0xff)"),
        ));
    }
    let groups: usize = lead.iter().product();
    let mut dst = Vec::with_capacity(groups * rows * nb * 17);
    for g in 0..groups {
        for row in 0..rows {
            let sr = g * out + start + row * stride;
            for b in 0..nb {
                let src = &blocks[(sr * nb + b) * 16..(sr * nb + b + 1) * 16];
                dst.push(scales[sr * nb + b]);
                let nibble = |e: usize| (src[e / 2] >> (4 * (e % 2))) & 0x0f;
                dst.extend((0..16).map(|j| nibble(j) | (nibble(j + 16) << 4)));
            }
        }
    }
    Ok(Bound {
        dtype: Dtype::F32,
        shape: want,
        data: Data::Lazy(std::sync::OnceLock::new()),
        raw: Some((GgmlType::Mxfp4, Data::Owned(dst))),
    })
}
