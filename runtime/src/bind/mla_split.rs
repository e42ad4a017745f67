//! MLA's `kv_b` projection as current llama.cpp conversions store it: split per head into
//! `attn_k_b` (the key part, transposed: `[heads, rank, nope]` in torch order) and
//! `attn_v_b` (the value part, `[heads, v, rank]`), for its absorbed-attention kernels.
//! The canonical `attn.kv_b.weight` is `[heads * (nope + v), rank]` with each head's
//! `nope` key rows followed by its `v` value rows, as HF's `kv_b_proj` is; this module
//! rebuilds it from the two halves, checking every dimension against the spec's shape.

use super::{f32_bytes, Bound, Data, Dtype, Problem, TensorSpec};
use crate::quant;
use crate::weights::gguf::GgufFile;

/// The names of the two halves that stand for `kv_b` (`blk.N.attn_kv_b.weight`).
pub(super) fn halves(kv_b: &str) -> Option<(String, String)> {
    let stem = kv_b.strip_suffix("attn_kv_b.weight")?;
    Some((
        format!("{stem}attn_k_b.weight"),
        format!("{stem}attn_v_b.weight"),
    ))
}

/// Binds `t` (the canonical `kv_b`) from the split halves `k_b` and `v_b` of `file`.
pub(super) fn bind(
    t: &TensorSpec,
    k_b: &str,
    v_b: &str,
    file: &GgufFile,
) -> Result<Bound, Vec<Problem>> {
    let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let info = |name: &str| {
        file.info(name).ok_or_else(|| {
            vec![Problem::Missing {
                stored: name.to_string(),
                param: t.name.clone(),
                shape: t.shape.clone(),
            }]
        })
    };
    let (ki, vi) = (info(k_b)?, info(v_b)?);
    let shape_err = |stored: &str, expected: String, found: &[usize]| {
        vec![Problem::Shape {
            stored: stored.to_string(),
            param: t.name.clone(),
            expected,
            found: found.to_vec(),
        }]
    };
    let [rows, rank] = want[..] else {
        return Err(shape_err(k_b, "a matrix for kv_b".into(), &ki.shape));
    };
    let [heads, k_rank, nope] = ki.shape[..] else {
        return Err(shape_err(
            k_b,
            format!("[heads, {rank}, nope] (kv_b's key half, transposed)"),
            &ki.shape,
        ));
    };
    if k_rank != rank || heads == 0 || nope == 0 || rows % heads != 0 || rows / heads <= nope {
        return Err(shape_err(
            k_b,
            format!("[heads, {rank}, nope] with heads * (nope + v) = {rows}"),
            &ki.shape,
        ));
    }
    let v = rows / heads - nope;
    if vi.shape != [heads, v, rank] {
        return Err(shape_err(
            v_b,
            format!("{:?} (kv_b's value half)", [heads, v, rank]),
            &vi.shape,
        ));
    }
    let unreadable = |name: &str, e: quant::DequantError| {
        vec![Problem::Unreadable {
            stored: name.to_string(),
            message: e.to_string(),
        }]
    };
    let kf = quant::dequantize(ki.ty, file.bytes(ki)).map_err(|e| unreadable(k_b, e))?;
    let vf = quant::dequantize(vi.ty, file.bytes(vi)).map_err(|e| unreadable(v_b, e))?;
    Ok(Bound {
        dtype: Dtype::F32,
        shape: want,
        data: Data::Owned(f32_bytes(&join(&kf, &vf, heads, rank, nope, v))),
        raw: None,
    })
}

/// `[heads * (nope + v), rank]` from `k [heads, rank, nope]` and `v [heads, v, rank]`.
fn join(k: &[f32], v: &[f32], heads: usize, rank: usize, nope: usize, vd: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * (nope + vd) * rank);
    for h in 0..heads {
        let kh = &k[h * rank * nope..(h + 1) * rank * nope];
        for j in 0..nope {
            out.extend((0..rank).map(|r| kh[r * nope + j]));
        }
        out.extend_from_slice(&v[h * vd * rank..(h + 1) * vd * rank]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn join_interleaves_heads_and_transposes_the_key_half() {
        // 2 heads, rank 3, nope 2, v 1. Key half k[h][r][j] = 100h + 10r + j; value half
        // v[h][0][r] = -(100h + r).
        let k: Vec<f32> = (0..2)
            .flat_map(|h| {
                (0..3).flat_map(move |r| (0..2).map(move |j| (100 * h + 10 * r + j) as f32))
            })
            .collect();
        let v: Vec<f32> = (0..2)
            .flat_map(|h| (0..3).map(move |r| -((100 * h + r) as f32)))
            .collect();
        let kv = super::join(&k, &v, 2, 3, 2, 1);
        #[rustfmt::skip]
        let want = [
            0., 10., 20.,      // head 0, key row 0
            1., 11., 21.,      // head 0, key row 1
            -0., -1., -2.,     // head 0, value row
            100., 110., 120.,  // head 1
            101., 111., 121.,
            -100., -101., -102.,
        ];
        assert_eq!(kv, want);
    }
}
