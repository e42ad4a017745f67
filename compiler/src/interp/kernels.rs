//! One plain f32 implementation per `Op`, each the textbook formula; the matmuls read
//! weight rows once per call and dot them with every token row, on a few threads.

use super::weights::Rows;
use super::{error, InterpError, Tensor};
use crate::ir::{AttnOp, BinaryOp, NormKind, NormOp, Op, RouterSelectOp, RouterWeightsOp, UnaryOp};
use archc_spec::{Pairing, RouterScore};

/// An operand: its concrete shape and its elements.
pub(crate) struct Arg<'a> {
    pub shape: Vec<usize>,
    pub rows: Rows<'a>,
}

impl Arg<'_> {
    pub(crate) fn tensor(&self) -> Tensor {
        self.rows.to_tensor(&self.shape)
    }
}

/// Evaluate one op; `shape` is the result shape the graph's types promise.
pub(crate) fn eval(op: &Op, a: &[Arg<'_>], shape: &[usize]) -> Result<Tensor, InterpError> {
    Ok(match op {
        Op::Input { .. } => return Err(error("inputs are bound, not evaluated")),
        Op::Gather => gather(&a[0], &a[1].tensor())?,
        Op::MatMul => {
            let k = *a[1].shape.last().unwrap_or(&0);
            let n = a[1].shape[0];
            let x = a[0].tensor();
            let m = x.data.len() / k.max(1);
            let data = matmul(&x.data, m, k, a[1].rows, 0, n);
            Tensor::new(shape.to_vec(), data)
        }
        Op::ExpertMatMul => expert_matmul(&a[0].tensor(), &a[1], &a[2].tensor())?,
        Op::Unary(u) => {
            let mut t = a[0].tensor();
            for x in &mut t.data {
                *x = unary(*u, *x);
            }
            t
        }
        Op::Binary(b) => {
            let f = match b {
                BinaryOp::Add => |x: f32, y: f32| x + y,
                BinaryOp::Mul => |x: f32, y: f32| x * y,
            };
            broadcast2(&a[0].tensor(), &a[1].tensor(), shape, f)
        }
        Op::Norm(n) => norm(n, a),
        Op::Reshape { .. } => Tensor::new(shape.to_vec(), a[0].tensor().data),
        Op::Expand { .. } => {
            let x = a[0].tensor();
            let zero = Tensor::new(vec![], vec![0.0]);
            broadcast2(&x, &zero, shape, |x, _| x)
        }
        Op::Slice { axis, start, end } => {
            let x = a[0].tensor();
            let (outer, len, inner) = split(&x.shape, *axis);
            let (s, e) = (*start as usize, *end as usize);
            let mut data = Vec::with_capacity(outer * (e - s) * inner);
            for o in 0..outer {
                data.extend_from_slice(&x.data[(o * len + s) * inner..(o * len + e) * inner]);
            }
            Tensor::new(shape.to_vec(), data)
        }
        Op::LastRow => {
            let x = a[0].tensor();
            let inner: usize = x.shape.iter().skip(1).product();
            let start = x
                .data
                .len()
                .checked_sub(inner)
                .ok_or_else(|| error("last_row of an empty tensor"))?;
            Tensor::new(shape.to_vec(), x.data[start..].to_vec())
        }
        Op::TailRows { n } => {
            let x = a[0].tensor();
            let inner: usize = x.shape.iter().skip(1).product();
            let start = x
                .data
                .len()
                .checked_sub(*n as usize * inner)
                .ok_or_else(|| error(format!("tail_rows of {n} rows of {:?}", x.shape)))?;
            Tensor::new(shape.to_vec(), x.data[start..].to_vec())
        }
        Op::DropTailRows { n } => {
            let x = a[0].tensor();
            let inner: usize = x.shape.iter().skip(1).product();
            let end = x
                .data
                .len()
                .checked_sub(*n as usize * inner)
                .ok_or_else(|| error(format!("drop_tail_rows of {n} rows of {:?}", x.shape)))?;
            Tensor::new(shape.to_vec(), x.data[..end].to_vec())
        }
        Op::DepthwiseConv => super::linear::depthwise_conv(&a[0].tensor(), &a[1].tensor(), shape)?,
        Op::DecayGate => super::linear::decay_gate(a, shape),
        Op::DeltaRule => super::linear::delta_rule(a, shape)?,
        Op::Concat { axis } => {
            let (x, y) = (a[0].tensor(), a[1].tensor());
            let (outer, lx, inner) = split(&x.shape, *axis);
            let ly = y.shape[*axis];
            let mut data = Vec::with_capacity(x.data.len() + y.data.len());
            for o in 0..outer {
                data.extend_from_slice(&x.data[o * lx * inner..(o + 1) * lx * inner]);
                data.extend_from_slice(&y.data[o * ly * inner..(o + 1) * ly * inner]);
            }
            Tensor::new(shape.to_vec(), data)
        }
        Op::Sum { axis } => {
            let x = a[0].tensor();
            let (outer, len, inner) = split(&x.shape, *axis);
            let mut data = vec![0.0f32; outer * inner];
            for o in 0..outer {
                for l in 0..len {
                    for i in 0..inner {
                        data[o * inner + i] += x.data[(o * len + l) * inner + i];
                    }
                }
            }
            Tensor::new(shape.to_vec(), data)
        }
        Op::Rope(r) => {
            let mut x = a[0].tensor();
            let pos = a[1].tensor();
            let (inv_freq, factor) = crate::ir::rope::inv_freq(r);
            let (s, h, d) = (x.shape[0], x.shape[1], x.shape[2]);
            let half = inv_freq.len();
            for t in 0..s {
                let p = pos.data[t];
                // HF forms the angles in f32 (inv_freq times position), then cos/sin.
                let cs: Vec<(f32, f32)> = inv_freq
                    .iter()
                    .map(|&f| {
                        let ang = (f as f32 * p) as f64;
                        ((ang.cos() * factor) as f32, (ang.sin() * factor) as f32)
                    })
                    .collect();
                for head in 0..h {
                    let row = &mut x.data[(t * h + head) * d..(t * h + head + 1) * d];
                    for (i, &(c, sn)) in cs.iter().enumerate() {
                        let (i1, i2) = match r.pairing {
                            Pairing::Half => (i, i + half),
                            Pairing::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let (x1, x2) = (row[i1], row[i2]);
                        row[i1] = x1 * c - x2 * sn;
                        row[i2] = x2 * c + x1 * sn;
                    }
                }
            }
            x
        }
        Op::Attention(op) => attention(op, a)?,
        Op::AttnTemperature {
            floor_scale,
            attn_scale,
        } => {
            let pos = a[0].tensor();
            let data = pos
                .data
                .iter()
                .map(|&p| {
                    let bucket = ((p as f64 + 1.0) / floor_scale).floor();
                    (1.0 + attn_scale * (bucket + 1.0).ln()) as f32
                })
                .collect();
            Tensor::new(shape.to_vec(), data)
        }
        Op::RouterSelect(r) => router_select(r, a)?,
        Op::RouterWeights(r) => router_weights(r, &a[0].tensor(), &a[1].tensor())?,
        Op::ClampedSwiglu { alpha, limit } => {
            let (g, u) = (a[0].tensor(), a[1].tensor());
            let (alpha, limit) = (*alpha as f32, *limit as f32);
            let data = g
                .data
                .iter()
                .zip(&u.data)
                .map(|(&g, &u)| {
                    let g = g.min(limit);
                    let u = u.clamp(-limit, limit);
                    (u + 1.0) * g * sigmoid(alpha * g)
                })
                .collect();
            Tensor::new(shape.to_vec(), data)
        }
        Op::Linear(l) => super::fused::linear(l, a, shape)?,
        Op::Elementwise(e) => super::fused::elementwise(e, a, shape)?,
        Op::NormRope(n) => super::fused::norm_rope(n, a, shape)?,
        Op::FlashAttention(f) => super::fused::flash_attention(f, a)?,
        Op::Moe(m) => super::fused::moe(m, a, shape)?,
    })
}

/// `(prod(shape[..axis]), shape[axis], prod(shape[axis+1..]))`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The error function, Abramowitz & Stegun 7.1.26 in f64 (|error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

pub(crate) fn unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Gelu => (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32,
        UnaryOp::GeluTanh => {
            let x = x as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
            (0.5 * x * (1.0 + inner.tanh())) as f32
        }
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Scale(c) => x * c as f32,
        UnaryOp::Softcap(c) => (c * (x as f64 / c).tanh()) as f32,
    }
}

/// `f(x, y)` with numpy broadcasting to `shape`.
pub(super) fn broadcast2(
    x: &Tensor,
    y: &Tensor,
    shape: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Tensor {
    let n: usize = shape.iter().product();
    if x.shape == shape && y.shape == shape {
        return Tensor::new(
            shape.to_vec(),
            x.data.iter().zip(&y.data).map(|(&a, &b)| f(a, b)).collect(),
        );
    }
    // Strides of each operand in the result's index space (0 where it broadcasts).
    let strides = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; shape.len()];
        let mut acc = 1;
        for i in (0..s.len()).rev() {
            let j = shape.len() - s.len() + i;
            st[j] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (sx, sy) = (strides(&x.shape), strides(&y.shape));
    let mut idx = vec![0usize; shape.len()];
    let mut data = Vec::with_capacity(n);
    let (mut ox, mut oy) = (0usize, 0usize);
    for _ in 0..n {
        data.push(f(x.data[ox], y.data[oy]));
        // Increment the multi-index, updating the operand offsets incrementally.
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            ox += sx[d];
            oy += sy[d];
            if idx[d] < shape[d] {
                break;
            }
            ox -= sx[d] * shape[d];
            oy -= sy[d] * shape[d];
            idx[d] = 0;
        }
    }
    Tensor::new(shape.to_vec(), data)
}

fn norm(n: &NormOp, a: &[Arg<'_>]) -> Tensor {
    let mut x = a[0].tensor();
    let d = *x.shape.last().unwrap_or(&1);
    let w = n.weight.then(|| a[1].tensor().data);
    let b = n.bias.then(|| a[2].tensor().data);
    for row in x.data.chunks_mut(d.max(1)) {
        let (mean, var) = match n.kind {
            NormKind::Rms => (
                0.0,
                row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64,
            ),
            NormKind::Layer => {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                (
                    mean,
                    row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64,
                )
            }
        };
        let inv = 1.0 / (var + n.eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            let mut y = ((*v as f64 - mean) * inv) as f32;
            if let Some(w) = &w {
                y *= if n.plus_one { 1.0 + w[i] } else { w[i] };
            }
            if let Some(b) = &b {
                y += b[i];
            }
            *v = y;
        }
    }
    x
}

fn gather(table: &Arg<'_>, ids: &Tensor) -> Result<Tensor, InterpError> {
    let rows = table.shape[0];
    let width: usize = table.shape[1..].iter().product();
    let mut data = vec![0.0f32; ids.data.len() * width];
    for (i, &id) in ids.data.iter().enumerate() {
        let r = index(id, rows)?;
        table
            .rows
            .read(r * width, &mut data[i * width..(i + 1) * width]);
    }
    let mut shape = ids.shape.clone();
    shape.extend_from_slice(&table.shape[1..]);
    Ok(Tensor::new(shape, data))
}

pub(super) fn index(v: f32, n: usize) -> Result<usize, InterpError> {
    if v >= 0.0 && v.fract() == 0.0 && (v as usize) < n {
        Ok(v as usize)
    } else {
        Err(error(format!("index {v} out of range 0..{n}")))
    }
}

/// Dot product with eight independent accumulators (lets the compiler vectorise).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// `x [m, k]` times rows `[row0, row0 + n)` of `w` (each `k` long) transposed → `[m, n]`.
/// Every weight row is converted once and dotted with all `m` rows of `x`.
pub(super) fn matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: Rows<'_>,
    row0: usize,
    n: usize,
) -> Vec<f32> {
    let part = |lo: usize, hi: usize| -> Vec<f32> {
        // Result of this share, laid out [row][token].
        let mut out = vec![0.0f32; (hi - lo) * m];
        let mut buf = vec![0.0f32; k];
        for r in lo..hi {
            w.read((row0 + r) * k, &mut buf);
            for t in 0..m {
                out[(r - lo) * m + t] = dot(&x[t * k..(t + 1) * k], &buf);
            }
        }
        out
    };
    let nt = if n * m * k >= 1 << 16 {
        threads().min(n)
    } else {
        1
    };
    let bounds: Vec<usize> = (0..=nt).map(|i| i * n / nt.max(1)).collect();
    let parts: Vec<Vec<f32>> = if nt <= 1 {
        vec![part(0, n)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|b| s.spawn(move || part(b[0], b[1])))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("matmul worker panicked"))
                .collect()
        })
    };
    let mut out = vec![0.0f32; m * n];
    for (p, b) in parts.iter().zip(bounds.windows(2)) {
        for r in b[0]..b[1] {
            for t in 0..m {
                out[t * n + r] = p[(r - b[0]) * m + t];
            }
        }
    }
    out
}

/// For every token `t` and slot `j`: `w[idx[t, j]] @ x[t (, j)]`. Tokens are grouped by
/// expert so each expert's rows are converted once.
fn expert_matmul(x: &Tensor, w: &Arg<'_>, idx: &Tensor) -> Result<Tensor, InterpError> {
    let (e, n, k) = (w.shape[0], w.shape[1], w.shape[2]);
    let (s, slots) = (idx.shape[0], idx.shape[1]);
    let per_slot = x.shape.len() == 3;
    let mut out = vec![0.0f32; s * slots * n];
    for expert in 0..e {
        let mut users = Vec::new();
        for (pos, &v) in idx.data.iter().enumerate() {
            if index(v, e)? == expert {
                users.push(pos);
            }
        }
        if users.is_empty() {
            continue;
        }
        let mut xs = Vec::with_capacity(users.len() * k);
        for &pos in &users {
            let row = if per_slot { pos } else { pos / slots };
            xs.extend_from_slice(&x.data[row * k..(row + 1) * k]);
        }
        let y = matmul(&xs, users.len(), k, w.rows, expert * n, n);
        for (u, &pos) in users.iter().enumerate() {
            out[pos * n..(pos + 1) * n].copy_from_slice(&y[u * n..(u + 1) * n]);
        }
    }
    Ok(Tensor::new(vec![s, slots, n], out))
}

fn attention(op: &AttnOp, a: &[Arg<'_>]) -> Result<Tensor, InterpError> {
    if let Some(m) = op.mla {
        // Absorbed MLA: plain attention over the latent rows, then W_UV per head.
        let (q, kv, w) = (a[0].tensor(), a[1].tensor(), a[2].tensor());
        let (qa, v) = super::mla::absorb(m, &q, &kv, &w)?;
        let mut args = vec![
            super::mla::arg(&qa),
            super::mla::reuse(&a[1]),
            super::mla::arg(&v),
        ];
        args.extend(a[3..].iter().map(super::mla::reuse));
        let plain = AttnOp { mla: None, ..*op };
        let o_lat = attention(&plain, &args)?;
        return Ok(super::mla::up(m, &o_lat, q.shape[0], q.shape[1], &w));
    }
    let (q, k, v, pos) = (a[0].tensor(), a[1].tensor(), a[2].tensor(), a[3].tensor());
    let sinks = if op.sinks {
        Some(a[4].tensor().data)
    } else {
        None
    };
    let (s, h, d) = (q.shape[0], q.shape[1], q.shape[2]);
    let (t, kvh, dv) = (k.shape[0], k.shape[1], v.shape[2]);
    let group = h / kvh;
    let mut out = vec![0.0f32; s * h * dv];
    let mut logits = vec![0.0f32; t];
    for i in 0..s {
        let p = index(pos.data[i], usize::MAX)?;
        for head in 0..h {
            let kv = head / group;
            let qrow = &q.data[(i * h + head) * d..(i * h + head + 1) * d];
            let mut max = f32::NEG_INFINITY;
            for (j, l) in logits.iter_mut().enumerate() {
                let visible = (!op.causal || j <= p)
                    && op.window.is_none_or(|w| p < j || p - j < w as usize)
                    && op.chunk.is_none_or(|c| j / c as usize == p / c as usize);
                *l = if visible {
                    let mut x = dot(qrow, &k.data[(j * kvh + kv) * d..(j * kvh + kv + 1) * d])
                        * op.scale as f32;
                    if let Some(cap) = op.softcap {
                        x = (cap * (x as f64 / cap).tanh()) as f32;
                    }
                    x
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*l);
            }
            let sink = sinks.as_ref().map(|s| s[head]);
            if let Some(sv) = sink {
                max = max.max(sv);
            }
            if max == f32::NEG_INFINITY {
                continue;
            }
            let mut denom = sink.map_or(0.0, |sv| ((sv - max) as f64).exp());
            for l in logits.iter_mut() {
                let e = ((*l - max) as f64).exp();
                denom += e;
                *l = e as f32;
            }
            let orow = &mut out[(i * h + head) * dv..(i * h + head + 1) * dv];
            for (j, &w) in logits.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let w = (w as f64 / denom) as f32;
                let vrow = &v.data[(j * kvh + kv) * dv..(j * kvh + kv + 1) * dv];
                for (o, &x) in orow.iter_mut().zip(vrow) {
                    *o += w * x;
                }
            }
        }
    }
    Ok(Tensor::new(vec![s, h, dv], out))
}

fn score(kind: RouterScore, xs: &[f32]) -> Vec<f32> {
    match kind {
        RouterScore::Sigmoid => xs.iter().map(|&x| sigmoid(x)).collect(),
        RouterScore::Softmax => {
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = xs.iter().map(|&x| ((x - max) as f64).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|&v| (v / sum) as f32).collect()
        }
    }
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_k(xs: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[b].total_cmp(&xs[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn router_select(r: &RouterSelectOp, a: &[Arg<'_>]) -> Result<Tensor, InterpError> {
    let logits = a[0].tensor();
    let bias = r.correction_bias.then(|| a[1].tensor().data);
    let (s, e) = (logits.shape[0], logits.shape[1]);
    let k = r.top_k as usize;
    let mut data = Vec::with_capacity(s * k);
    for row in logits.data.chunks(e) {
        let chosen = if r.topk_first {
            top_k(row, k)
        } else {
            let mut choice = score(r.score, row);
            if let Some(b) = &bias {
                for (c, b) in choice.iter_mut().zip(b) {
                    *c += b;
                }
            }
            if let Some((count, keep)) = r.groups {
                let size = e / count as usize;
                let group_scores: Vec<f32> = choice
                    .chunks(size)
                    .map(|g| top_k(g, 2).iter().map(|&i| g[i]).sum())
                    .collect();
                let kept = top_k(&group_scores, keep as usize);
                for (i, c) in choice.iter_mut().enumerate() {
                    if !kept.contains(&(i / size)) {
                        *c = f32::NEG_INFINITY;
                    }
                }
            }
            top_k(&choice, k)
        };
        data.extend(chosen.iter().map(|&i| i as f32));
    }
    Ok(Tensor::new(vec![s, k], data))
}

fn router_weights(
    r: &RouterWeightsOp,
    logits: &Tensor,
    idx: &Tensor,
) -> Result<Tensor, InterpError> {
    let e = logits.shape[1];
    let k = idx.shape[1];
    let mut data = Vec::with_capacity(idx.data.len());
    for (row, sel) in logits.data.chunks(e).zip(idx.data.chunks(k)) {
        let sel = sel
            .iter()
            .map(|&v| index(v, e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut w = if r.topk_first {
            let picked: Vec<f32> = sel.iter().map(|&i| row[i]).collect();
            score(r.score, &picked)
        } else {
            let all = score(r.score, row);
            sel.iter().map(|&i| all[i]).collect()
        };
        if r.renormalize {
            let sum: f32 = w.iter().sum::<f32>() + 1e-20;
            for x in &mut w {
                *x /= sum;
            }
        }
        data.extend(w.iter().map(|&x| x * r.scale as f32));
    }
    Ok(Tensor::new(idx.shape.clone(), data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::RopeOp;
    use archc_spec::RopeScaling;

    fn arg(t: &Tensor) -> Arg<'_> {
        Arg {
            shape: t.shape.clone(),
            rows: Rows::F32(&t.data),
        }
    }

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec())
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn activations_match_their_formulas() {
        // Reference values of torch's gelu (exact and tanh) at 1.0 and -0.5.
        close(
            &[unary(UnaryOp::Gelu, 1.0), unary(UnaryOp::Gelu, -0.5)],
            &[0.841_344_7, -0.154_268_5],
            1e-6,
        );
        close(
            &[
                unary(UnaryOp::GeluTanh, 1.0),
                unary(UnaryOp::GeluTanh, -0.5),
            ],
            &[0.841_192, -0.154_286],
            1e-6,
        );
        close(
            &[unary(UnaryOp::Silu, 2.0)],
            &[2.0 / (1.0 + (-2.0f32).exp())],
            1e-7,
        );
        close(
            &[unary(UnaryOp::Softcap(3.0), 6.0)],
            &[3.0 * 2.0f32.tanh()],
            1e-6,
        );
        close(
            &[unary(UnaryOp::Relu, -1.0), unary(UnaryOp::Scale(0.5), 3.0)],
            &[0.0, 1.5],
            0.0,
        );
    }

    #[test]
    fn matmul_is_x_times_w_transposed() {
        // Big enough to take the threaded path.
        let (m, k, n) = (5, 64, 300);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let got = matmul(&x, m, k, Rows::F32(&w), 0, n);
        let mut want = vec![0.0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                want[r * n + c] = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
            }
        }
        close(&got, &want, 1e-3);
    }

    #[test]
    fn binary_ops_broadcast_like_numpy() {
        let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = t(&[2, 1], &[10.0, 20.0]);
        let got = eval(&Op::Binary(BinaryOp::Add), &[arg(&a), arg(&b)], &[2, 3]).expect("adds");
        close(&got.data, &[11.0, 12.0, 13.0, 24.0, 25.0, 26.0], 0.0);
        let c = t(&[3], &[1.0, 0.0, -1.0]);
        let got = eval(&Op::Binary(BinaryOp::Mul), &[arg(&a), arg(&c)], &[2, 3]).expect("muls");
        close(&got.data, &[1.0, 0.0, -3.0, 4.0, 0.0, -6.0], 0.0);
    }

    #[test]
    fn norms_match_their_formulas() {
        let x = t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[4], &[1.0, 0.5, 2.0, 0.0]);
        let rms = NormOp {
            kind: NormKind::Rms,
            eps: 0.0,
            plus_one: false,
            weight: true,
            bias: false,
        };
        let got = eval(&Op::Norm(rms), &[arg(&x), arg(&w)], &[1, 4]).expect("rms");
        let r = (30.0f32 / 4.0).sqrt();
        close(&got.data, &[1.0 / r, 1.0 / r, 6.0 / r, 0.0], 1e-6);
        let plus = NormOp {
            plus_one: true,
            ..rms
        };
        let got = eval(&Op::Norm(plus), &[arg(&x), arg(&w)], &[1, 4]).expect("rms (1 + w)");
        close(&got.data, &[2.0 / r, 3.0 / r, 9.0 / r, 4.0 / r], 1e-6);
        let b = t(&[4], &[0.0, 1.0, 0.0, 1.0]);
        let ln = NormOp {
            kind: NormKind::Layer,
            eps: 0.0,
            plus_one: false,
            weight: true,
            bias: true,
        };
        let got = eval(&Op::Norm(ln), &[arg(&x), arg(&w), arg(&b)], &[1, 4]).expect("layernorm");
        let sd = 1.25f32.sqrt();
        close(
            &got.data,
            &[-1.5 / sd, -0.25 / sd + 1.0, 1.0 / sd, 1.0],
            1e-6,
        );
    }

    #[test]
    fn rope_rotates_the_right_pairs() {
        let x: Vec<f32> = (0..6).map(|i| i as f32 + 1.0).collect();
        let x = t(&[1, 1, 6], &x);
        let pos = t(&[1], &[3.0]);
        for pairing in [Pairing::Half, Pairing::Interleaved] {
            let r = RopeOp {
                theta: 100.0,
                dims: 4,
                pairing,
                scaling: RopeScaling::None,
            };
            let got = eval(&Op::Rope(r), &[arg(&x), arg(&pos)], &[1, 1, 6]).expect("rope");
            let pairs = match pairing {
                Pairing::Half => [(0, 2), (1, 3)],
                Pairing::Interleaved => [(0, 1), (2, 3)],
            };
            let mut want = x.data.clone();
            for (i, (a, b)) in pairs.into_iter().enumerate() {
                let ang = 3.0 * 100f64.powf(-((2 * i) as f64) / 4.0);
                let (c, s) = (ang.cos() as f32, ang.sin() as f32);
                want[a] = x.data[a] * c - x.data[b] * s;
                want[b] = x.data[b] * c + x.data[a] * s;
            }
            close(&got.data, &want, 1e-5);
        }
    }

    #[test]
    fn attention_with_sinks_window_and_gqa_matches_the_naive_sum() {
        // One query at position 2, three keys, two query heads sharing one KV head.
        let q = t(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let k = t(&[3, 1, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let v = t(&[3, 1, 1], &[1.0, 2.0, 4.0]);
        let pos = t(&[1], &[2.0]);
        let sinks = t(&[2], &[0.5, -1.0]);
        let op = AttnOp {
            scale: 0.5,
            causal: true,
            window: Some(2),
            chunk: None,
            softcap: None,
            sinks: true,
            mla: None,
        };
        let got =
            attention(&op, &[arg(&q), arg(&k), arg(&v), arg(&pos), arg(&sinks)]).expect("attends");
        // The window hides key 0; head h sees keys 1 and 2 plus its sink.
        let head = |qv: [f32; 2], sink: f32| {
            let s1 = 0.5 * (qv[0] * 0.0 + qv[1] * 1.0);
            let s2 = 0.5 * (qv[0] + qv[1]);
            let d = s1.exp() + s2.exp() + sink.exp();
            (s1.exp() * 2.0 + s2.exp() * 4.0) / d
        };
        close(
            &got.data,
            &[head([1.0, 0.0], 0.5), head([0.0, 1.0], -1.0)],
            1e-6,
        );
    }

    #[test]
    fn chunked_attention_sees_only_its_chunk() {
        let q = t(&[1, 1, 1], &[1.0]);
        let k = t(&[6, 1, 1], &[1.0; 6]);
        let v = t(&[6, 1, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let pos = t(&[1], &[5.0]);
        let op = AttnOp {
            scale: 1.0,
            causal: true,
            window: None,
            chunk: Some(4),
            softcap: None,
            sinks: false,
            mla: None,
        };
        let got = attention(&op, &[arg(&q), arg(&k), arg(&v), arg(&pos)]).expect("attends");
        // Position 5 is in chunk [4, 8): equal logits over keys 4 and 5.
        close(&got.data, &[5.5], 1e-6);
    }

    #[test]
    fn group_limited_routing_picks_from_the_best_groups() {
        // Four groups of two; sigmoid is monotonic so logits order the scores.
        let logits = t(&[1, 8], &[5.0, -5.0, 1.0, 1.0, 4.0, -4.0, 0.0, 0.5]);
        let r = RouterSelectOp {
            top_k: 2,
            score: RouterScore::Sigmoid,
            topk_first: false,
            correction_bias: false,
            groups: Some((4, 2)),
        };
        // Group sums: g0 ≈ 0.99+0.007, g1 ≈ 1.46, g2 ≈ 0.98+0.02, g3 ≈ 0.5+0.62: keep g1, g3.
        let sel = router_select(&r, &[arg(&logits)]).expect("selects");
        close(&sel.data, &[2.0, 3.0], 0.0);
        let w = RouterWeightsOp {
            score: RouterScore::Sigmoid,
            topk_first: false,
            renormalize: true,
            scale: 2.0,
        };
        let got = router_weights(&w, &logits, &sel).expect("weights");
        close(&got.data, &[1.0, 1.0], 1e-6);
        let first = RouterWeightsOp {
            score: RouterScore::Softmax,
            topk_first: true,
            renormalize: false,
            scale: 1.0,
        };
        let top = t(&[1, 2], &[0.0, 4.0]);
        let got = router_weights(&first, &logits, &top).expect("weights");
        let (a, b) = (5.0f32.exp(), 4.0f32.exp());
        close(&got.data, &[a / (a + b), b / (a + b)], 1e-6);
    }

    #[test]
    fn expert_matmul_uses_each_slots_expert() {
        // Two experts of one row each: expert e multiplies by (e + 1).
        let w = t(&[2, 1, 2], &[1.0, 1.0, 2.0, 2.0]);
        let x = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let idx = t(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let got = expert_matmul(&x, &arg(&w), &idx).expect("runs");
        close(&got.data, &[6.0, 3.0, 7.0, 14.0], 0.0);
    }

    #[test]
    fn clamped_swiglu_clamps_both_halves() {
        let g = t(&[2], &[10.0, -1.0]);
        let u = t(&[2], &[-10.0, 0.5]);
        let op = Op::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        };
        let got = eval(&op, &[arg(&g), arg(&u)], &[2]).expect("runs");
        let want = [
            (-7.0 + 1.0) * 7.0 * sigmoid(1.702 * 7.0),
            -(0.5 + 1.0) * sigmoid(-1.702),
        ];
        close(&got.data, &want, 1e-5);
    }

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(crate::interp::f16_to_f32(0x3c00), 1.0);
        assert_eq!(crate::interp::f16_to_f32(0xc000), -2.0);
        assert_eq!(crate::interp::f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(crate::interp::f16_to_f32(0x7bff), 65504.0);
    }
}
