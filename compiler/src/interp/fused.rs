//! Interpreter kernels of the fused ops (`ir::fused`): each one composes the plain kernels
//! in the order the unfused chain runs them, so fusion changes no arithmetic — except
//! attention, which uses the online softmax that compiled kernels use.

use super::kernels::{broadcast2, dot, eval, index, matmul, sigmoid, unary, Arg};
use super::weights::Rows;
use super::{InterpError, Tensor};
use crate::ir::{
    BinaryOp, ElementwiseOp, Epilogue, ExpertAct, FlashAttnOp, Instr, LinearOp, MoeOp, NormRopeOp,
    Op, UnaryOp,
};

fn arg(t: &Tensor) -> Arg<'_> {
    Arg {
        shape: t.shape.clone(),
        rows: Rows::F32(&t.data),
    }
}

fn clamped_swiglu(alpha: f64, limit: f64, g: f32, u: f32) -> f32 {
    let (alpha, limit) = (alpha as f32, limit as f32);
    let g = g.min(limit);
    let u = u.clamp(-limit, limit);
    (u + 1.0) * g * sigmoid(alpha * g)
}

pub(super) fn linear(op: &LinearOp, a: &[Arg<'_>], shape: &[usize]) -> Result<Tensor, InterpError> {
    let l = op.layout();
    let x = match op.norm {
        Some(n) => {
            let end = 1 + n.weight as usize + n.bias as usize;
            eval(&Op::Norm(n), &a[..end], &a[0].shape)?
        }
        None => a[0].tensor(),
    };
    let k = *x.shape.last().unwrap_or(&1);
    let m = x.data.len() / k.max(1);
    let mut parts = Vec::with_capacity(op.parts());
    let mut b = l.biases;
    for (i, has) in op.bias.iter().enumerate() {
        let w = &a[l.weights + i];
        let n = w.shape[0];
        let mut y = matmul(&x.data, m, k, w.rows, 0, n);
        if *has {
            let bias = a[b].tensor();
            b += 1;
            for row in y.chunks_mut(n.max(1)) {
                for (v, bb) in row.iter_mut().zip(&bias.data) {
                    *v += bb;
                }
            }
        }
        parts.push((n, y));
    }
    let width = *shape.last().unwrap_or(&1);
    let mut out = Vec::with_capacity(m * width);
    for r in 0..m {
        match op.epilogue {
            Epilogue::None | Epilogue::Act(_) => {
                for (n, y) in &parts {
                    out.extend_from_slice(&y[r * n..(r + 1) * n]);
                }
            }
            Epilogue::Glu { act, gate } => {
                let (n, g) = (parts[gate].0, &parts[gate].1);
                let u = &parts[1 - gate].1;
                out.extend((r * n..(r + 1) * n).map(|i| unary(act, g[i]) * u[i]));
            }
            Epilogue::ClampedGlu { alpha, limit, gate } => {
                let (n, g) = (parts[gate].0, &parts[gate].1);
                let u = &parts[1 - gate].1;
                out.extend((r * n..(r + 1) * n).map(|i| clamped_swiglu(alpha, limit, g[i], u[i])));
            }
        }
    }
    if let Epilogue::Act(u) = op.epilogue {
        for v in &mut out {
            *v = unary(u, *v);
        }
    }
    if let Some(res) = l.residual {
        let res = a[res].tensor();
        for (v, r) in out.iter_mut().zip(&res.data) {
            *v += r;
        }
    }
    Ok(Tensor::new(shape.to_vec(), out))
}

/// Concrete numpy broadcasting (the shapes were checked by the type rules).
fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            if x == 1 {
                y
            } else {
                x
            }
        })
        .collect()
}

pub(super) fn elementwise(
    op: &ElementwiseOp,
    a: &[Arg<'_>],
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    let mut regs: Vec<Tensor> = a.iter().map(Arg::tensor).collect();
    for ins in &op.program {
        let t = match *ins {
            Instr::Unary(u, x) => {
                let mut t = regs[x as usize].clone();
                for v in &mut t.data {
                    *v = unary(u, *v);
                }
                t
            }
            Instr::Binary(b, x, y) => {
                let (x, y) = (&regs[x as usize], &regs[y as usize]);
                let s = broadcast_shape(&x.shape, &y.shape);
                match b {
                    BinaryOp::Add => broadcast2(x, y, &s, |p, q| p + q),
                    BinaryOp::Mul => broadcast2(x, y, &s, |p, q| p * q),
                }
            }
            Instr::ClampedSwiglu {
                alpha,
                limit,
                gate,
                up,
            } => {
                let (g, u) = (&regs[gate as usize], &regs[up as usize]);
                let data = g
                    .data
                    .iter()
                    .zip(&u.data)
                    .map(|(&g, &u)| clamped_swiglu(alpha, limit, g, u))
                    .collect();
                Tensor::new(g.shape.clone(), data)
            }
        };
        regs.push(t);
    }
    let last = regs
        .pop()
        .ok_or_else(|| super::error("an empty elementwise loop"))?;
    // The result always has the promised shape; an operand-only broadcast never shrinks it.
    Ok(Tensor::new(shape.to_vec(), last.data))
}

pub(super) fn norm_rope(
    op: &NormRopeOp,
    a: &[Arg<'_>],
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    let mut x = a[0].tensor();
    let nn = op.norm.map_or(0, |n| n.weight as usize + n.bias as usize);
    if let Some(n) = op.norm {
        let mut args = vec![arg(&x)];
        args.extend(a[2..2 + nn].iter().map(|p| Arg {
            shape: p.shape.clone(),
            rows: p.rows,
        }));
        let s = x.shape.clone();
        x = eval(&Op::Norm(n), &args, &s)?;
    }
    let s = x.shape.clone();
    let pos = a[1].tensor();
    x = eval(&Op::Rope(op.rope.clone()), &[arg(&x), arg(&pos)], &s)?;
    if op.append {
        let cache = a[2 + nn].tensor();
        x = eval(&Op::Concat { axis: 0 }, &[arg(&cache), arg(&x)], shape)?;
    }
    Ok(x)
}

/// Keys per block of the online softmax.
const BLOCK: usize = 16;

/// One query row against all keys, a block at a time: the running maximum `m`, the
/// running denominator `l` and the unnormalised output are rescaled whenever a block
/// raises the maximum, so no row of logits is ever materialised.
pub(super) fn flash_attention(op: &FlashAttnOp, a: &[Arg<'_>]) -> Result<Tensor, InterpError> {
    if let Some(m) = op.attn.mla {
        // Absorbed MLA: the online softmax over the latent rows, W_UV per head, then the gate.
        let (q, kv, w) = (a[0].tensor(), a[1].tensor(), a[2].tensor());
        let (qa, v) = super::mla::absorb(m, &q, &kv, &w)?;
        let mut args = vec![arg(&qa), super::mla::reuse(&a[1]), arg(&v)];
        let n = 4 + op.attn.sinks as usize;
        args.extend(a[3..n].iter().map(super::mla::reuse));
        let plain = FlashAttnOp {
            attn: crate::ir::AttnOp {
                mla: None,
                ..op.attn
            },
            gate: false,
        };
        let o_lat = flash_attention(&plain, &args)?;
        let (s, h) = (q.shape[0], q.shape[1]);
        let mut out = super::mla::up(m, &o_lat, s, h, &w);
        if op.gate {
            let g = a[n].tensor();
            for (o, &x) in out.data.iter_mut().zip(&g.data) {
                *o *= unary(UnaryOp::Sigmoid, x);
            }
        }
        return Ok(Tensor::new(vec![s, h * m.v as usize], out.data));
    }
    let at = &op.attn;
    let (q, k, v, pos) = (a[0].tensor(), a[1].tensor(), a[2].tensor(), a[3].tensor());
    let sinks = at.sinks.then(|| a[4].tensor().data);
    let gate = op.gate.then(|| a[4 + at.sinks as usize].tensor().data);
    let (s, h, d) = (q.shape[0], q.shape[1], q.shape[2]);
    let (t, kvh, dv) = (k.shape[0], k.shape[1], v.shape[2]);
    let group = h / kvh.max(1);
    let mut out = vec![0.0f32; s * h * dv];
    let mut scores = [0.0f32; BLOCK];
    let mut acc = vec![0.0f64; dv];
    for i in 0..s {
        let p = index(pos.data[i], usize::MAX)?;
        for head in 0..h {
            let kv = head / group;
            let qrow = &q.data[(i * h + head) * d..(i * h + head + 1) * d];
            // A sink is one more logit with no value row: it starts the running sums.
            let (mut m, mut l) = match &sinks {
                Some(sv) => (sv[head], 1.0f64),
                None => (f32::NEG_INFINITY, 0.0f64),
            };
            acc.iter_mut().for_each(|x| *x = 0.0);
            for start in (0..t).step_by(BLOCK) {
                let end = (start + BLOCK).min(t);
                let mut block_max = f32::NEG_INFINITY;
                for j in start..end {
                    let visible = (!at.causal || j <= p)
                        && at.window.is_none_or(|w| p < j || p - j < w as usize)
                        && at.chunk.is_none_or(|c| j / c as usize == p / c as usize);
                    let x = if visible {
                        let mut x = dot(qrow, &k.data[(j * kvh + kv) * d..(j * kvh + kv + 1) * d])
                            * at.scale as f32;
                        if let Some(cap) = at.softcap {
                            x = (cap * (x as f64 / cap).tanh()) as f32;
                        }
                        x
                    } else {
                        f32::NEG_INFINITY
                    };
                    scores[j - start] = x;
                    block_max = block_max.max(x);
                }
                if block_max == f32::NEG_INFINITY {
                    continue;
                }
                let new_m = m.max(block_max);
                let correction = if m == f32::NEG_INFINITY {
                    0.0
                } else {
                    ((m - new_m) as f64).exp()
                };
                l *= correction;
                acc.iter_mut().for_each(|x| *x *= correction);
                for j in start..end {
                    let x = scores[j - start];
                    if x == f32::NEG_INFINITY {
                        continue;
                    }
                    let e = ((x - new_m) as f64).exp();
                    l += e;
                    let vrow = &v.data[(j * kvh + kv) * dv..(j * kvh + kv + 1) * dv];
                    for (o, &val) in acc.iter_mut().zip(vrow) {
                        *o += e * val as f64;
                    }
                }
                m = new_m;
            }
            if l == 0.0 {
                continue;
            }
            let orow = &mut out[(i * h + head) * dv..(i * h + head + 1) * dv];
            for (o, &x) in orow.iter_mut().zip(&acc) {
                *o = (x / l) as f32;
            }
        }
    }
    if let Some(g) = gate {
        for (o, &x) in out.iter_mut().zip(&g) {
            *o *= unary(UnaryOp::Sigmoid, x);
        }
    }
    Ok(Tensor::new(vec![s, h * dv], out))
}

pub(super) fn moe(op: &MoeOp, a: &[Arg<'_>], shape: &[usize]) -> Result<Tensor, InterpError> {
    let cb = op.select.correction_bias as usize;
    let x = a[0].tensor();
    let logits = a[1].tensor();
    let (s, hidden) = (shape[0], shape[1]);
    let k = op.select.top_k as usize;
    let sel = eval(&Op::RouterSelect(op.select), &a[1..2 + cb], &[s, k])?;
    let w = eval(
        &Op::RouterWeights(op.weights),
        &[arg(&logits), arg(&sel)],
        &[s, k],
    )?;
    let xin = if op.weight_input {
        let x3 = Tensor::new(vec![s, 1, hidden], x.data.clone());
        let w3 = Tensor::new(vec![s, k, 1], w.data.clone());
        broadcast2(&x3, &w3, &[s, k, hidden], |p, q| p * q)
    } else {
        x
    };
    let base = 2 + cb;
    let m = op.matrices();
    // Each expert projection runs only on the rows routed to it (see `expert_matmul`).
    let project = |input: &Tensor, j: usize| -> Result<Tensor, InterpError> {
        let wt = &a[base + j];
        let n = wt.shape[1];
        let wa = Arg {
            shape: wt.shape.clone(),
            rows: wt.rows,
        };
        let y = eval(&Op::ExpertMatMul, &[arg(input), wa, arg(&sel)], &[s, k, n])?;
        if !op.bias {
            return Ok(y);
        }
        let table = &a[base + m + j];
        let ta = Arg {
            shape: table.shape.clone(),
            rows: table.rows,
        };
        let bias = eval(&Op::Gather, &[ta, arg(&sel)], &[s, k, n])?;
        Ok(broadcast2(&y, &bias, &[s, k, n], |p, q| p + q))
    };
    let up = project(&xin, 0)?;
    let act = match op.act {
        ExpertAct::Plain(u) => {
            let mut t = up;
            for v in &mut t.data {
                *v = unary(u, *v);
            }
            t
        }
        ExpertAct::Glu(u) => {
            let g = project(&xin, 1)?;
            let data = g
                .data
                .iter()
                .zip(&up.data)
                .map(|(&g, &u2)| unary(u, g) * u2)
                .collect();
            Tensor::new(up.shape.clone(), data)
        }
        ExpertAct::Clamped { alpha, limit } => {
            let g = project(&xin, 1)?;
            let data = g
                .data
                .iter()
                .zip(&up.data)
                .map(|(&g, &u2)| clamped_swiglu(alpha, limit, g, u2))
                .collect();
            Tensor::new(up.shape.clone(), data)
        }
    };
    let mut down = project(&act, m - 1)?;
    if !op.weight_input {
        let w3 = Tensor::new(vec![s, k, 1], w.data.clone());
        down = broadcast2(&down, &w3, &[s, k, hidden], |p, q| p * q);
    }
    eval(&Op::Sum { axis: 1 }, &[arg(&down)], shape)
}
