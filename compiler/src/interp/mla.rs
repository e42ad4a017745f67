//! MLA's absorbed attention (`AttnOp::mla`) in the interpreter, written as the algebra it
//! stands for: the query's nope part is multiplied into the latent space by `W_UK`, plain
//! attention runs over the latent rows `[c ; k_rope]` (one shared KV head whose values are
//! `c`), and each head's latent output is projected up by `W_UV`.

use super::kernels::Arg;
use super::weights::Rows;
use super::{error, InterpError, Tensor};
use crate::ir::MlaAttn;

/// An operand view of a tensor.
pub(super) fn arg(t: &Tensor) -> Arg<'_> {
    Arg {
        shape: t.shape.clone(),
        rows: Rows::F32(&t.data),
    }
}

/// The same operand again (its rows are a borrowed view).
pub(super) fn reuse<'a>(a: &Arg<'a>) -> Arg<'a> {
    Arg {
        shape: a.shape.clone(),
        rows: a.rows,
    }
}

/// The absorbed queries `[s, H, rank + rope]` (`[q_nope · W_UK_h ; q_rope]`) and the values
/// `[t, 1, rank]` (the latent `c` of every cached row) of MLA attention with operands
/// `q [s, H, nope + rope]`, `kv [t, 1, rank + rope]`, `w [H * (nope + v), rank]`.
pub(super) fn absorb(
    m: MlaAttn,
    q: &Tensor,
    kv: &Tensor,
    w: &Tensor,
) -> Result<(Tensor, Tensor), InterpError> {
    let (rank, nope, vd) = (m.rank as usize, m.nope as usize, m.v as usize);
    let (&[s, h, qd], &[t, _, kd]) = (q.shape.as_slice(), kv.shape.as_slice()) else {
        return Err(error(format!(
            "mla attention wants q [s, H, d] and kv [t, 1, d], found {:?} and {:?}",
            q.shape, kv.shape
        )));
    };
    let rope = qd.checked_sub(nope);
    if rope.is_none_or(|r| kd != rank + r) || w.data.len() != h * (nope + vd) * rank {
        return Err(error(format!(
            "mla attention operands do not fit: q {:?}, kv {:?}, w {:?}",
            q.shape, kv.shape, w.shape
        )));
    }
    let width = kd;
    let mut qa = vec![0.0f32; s * h * width];
    for i in 0..s {
        for head in 0..h {
            let qrow = &q.data[(i * h + head) * qd..(i * h + head + 1) * qd];
            let out = &mut qa[(i * h + head) * width..(i * h + head + 1) * width];
            // q_lat[c] = Σ_n q_nope[n] · W_UK_h[n, c], accumulated in f64.
            let mut lat = vec![0.0f64; rank];
            for (n, &x) in qrow[..nope].iter().enumerate() {
                let wrow = &w.data[(head * (nope + vd) + n) * rank..][..rank];
                for (l, &wv) in lat.iter_mut().zip(wrow) {
                    *l += x as f64 * wv as f64;
                }
            }
            for (o, l) in out[..rank].iter_mut().zip(&lat) {
                *o = *l as f32;
            }
            out[rank..].copy_from_slice(&qrow[nope..]);
        }
    }
    let mut v = Vec::with_capacity(t * rank);
    for j in 0..t {
        v.extend_from_slice(&kv.data[j * kd..j * kd + rank]);
    }
    Ok((
        Tensor::new(vec![s, h, width], qa),
        Tensor::new(vec![t, 1, rank], v),
    ))
}

/// Every head's latent output `o_lat [s, H * rank]` (any shape of that size) projected up:
/// `o[s, h, i] = Σ_c o_lat[s, h, c] · W_UV_h[i, c]`, as `[s, H, v]`.
pub(super) fn up(m: MlaAttn, o_lat: &Tensor, s: usize, h: usize, w: &Tensor) -> Tensor {
    let (rank, nope, vd) = (m.rank as usize, m.nope as usize, m.v as usize);
    let mut out = vec![0.0f32; s * h * vd];
    for i in 0..s {
        for head in 0..h {
            let lat = &o_lat.data[(i * h + head) * rank..(i * h + head + 1) * rank];
            for k in 0..vd {
                let wrow = &w.data[(head * (nope + vd) + nope + k) * rank..][..rank];
                let acc: f64 = lat
                    .iter()
                    .zip(wrow)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                out[(i * h + head) * vd + k] = acc as f32;
            }
        }
    }
    Tensor::new(vec![s, h, vd], out)
}
