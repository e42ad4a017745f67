//! Lowering of softmax attention: projections, the Qwen3-Next output gate, QK-norms,
//! RoPE, Llama 4 temperature tuning, MLA's latent projections, the KV-cache append and
//! the attention op itself.

use super::{err, Builder, LowerError};
use crate::ir::{
    rope::yarn_mscale, AttnOp, BinaryOp, DType, Dim, NormKind, NormOp, Op, RopeOp, UnaryOp, Value,
};
use archc_spec::{Attention, Mla, Norm, NormKind as SpecNormKind, QkNorm, RopeScaling, Spec};

/// The attention mixer of layer `layer` applied to the normed residual `x [seq, hidden]`.
pub(super) fn lower(
    b: &mut Builder,
    spec: &Spec,
    layer: usize,
    a: &Attention,
    x: Value,
    positions: Value,
) -> Result<Value, LowerError> {
    if a.heads == 0 || a.kv_heads == 0 || a.heads % a.kv_heads != 0 {
        return Err(err(format!(
            "{} heads cannot share {} kv heads",
            a.heads, a.kv_heads
        )));
    }
    let seq = b.seq;
    let h = spec.hidden;
    let (q, k, v, gate, kv_heads, v_dim) = match &a.mla {
        Some(m) => {
            let (q, k, v) = mla(b, spec, a, m, x, positions)?;
            (q, k, v, None, a.heads, m.v_dim)
        }
        None => {
            let (q, k, v, gate) = projections(b, a, h, x, positions)?;
            (q, k, v, gate, a.kv_heads, a.v_head_dim)
        }
    };
    let q = match (&a.temperature, &a.rope) {
        // Llama 4 tunes the temperature only on its NoPE layers, as HF does.
        (Some(t), None) => {
            let scale = b.op(
                Op::AttnTemperature {
                    floor_scale: t.floor_scale,
                    attn_scale: t.attn_scale,
                },
                &[positions],
            )?;
            b.binary(BinaryOp::Mul, q, scale)?
        }
        _ => q,
    };

    // Append this pass's keys and values to the cache.
    let qk_dim = b.ty(k).shape[2];
    let k_cache = b.input(
        &format!("cache.{layer}.k"),
        vec![Dim::PAST, Dim::c(kv_heads), qk_dim],
        DType::F32,
    );
    let v_cache = b.input(
        &format!("cache.{layer}.v"),
        vec![Dim::PAST, Dim::c(kv_heads), Dim::c(v_dim)],
        DType::F32,
    );
    let k_all = b.op(Op::Concat { axis: 0 }, &[k_cache, k])?;
    let v_all = b.op(Op::Concat { axis: 0 }, &[v_cache, v])?;
    b.output(&format!("cache.{layer}.k"), k_all);
    b.output(&format!("cache.{layer}.v"), v_all);

    let op = AttnOp {
        scale: scale(a),
        causal: a.causal,
        window: a.window,
        chunk: a.chunk,
        softcap: a.softcap,
        sinks: a.sinks,
    };
    let mut ins = vec![q, k_all, v_all, positions];
    if a.sinks {
        ins.push(b.local("attn.sinks", &[a.heads]));
    }
    let out = b.op(Op::Attention(op), &ins)?;
    let mut out = b.reshape(out, vec![seq, Dim::c(a.heads * v_dim)])?;
    if let Some(gate) = gate {
        let g = b.unary(UnaryOp::Sigmoid, gate)?;
        out = b.binary(BinaryOp::Mul, out, g)?;
    }
    b.linear(out, "attn.o", h, a.heads * v_dim, a.bias.o)
}

/// The softmax scale: the override, or `head_dim^-0.5`, times DeepSeek's YaRN
/// `mscale(factor, mscale_all_dim)^2` when that is set.
fn scale(a: &Attention) -> f64 {
    if let Some(s) = a.scale {
        return s;
    }
    let mut s = (a.head_dim as f64).powf(-0.5);
    if let Some(r) = &a.rope {
        if let RopeScaling::Yarn {
            factor,
            mscale_all_dim,
            ..
        } = r.scaling
        {
            if mscale_all_dim != 0.0 {
                let m = yarn_mscale(factor, mscale_all_dim);
                s *= m * m;
            }
        }
    }
    s
}

fn rope_op(a: &Attention) -> Option<RopeOp> {
    a.rope.as_ref().map(|r| RopeOp {
        theta: r.theta,
        dims: r.dims,
        pairing: r.pairing,
        scaling: r.scaling.clone(),
    })
}

/// Q, K, V of standard (MHA/GQA/MQA) attention as `[seq, heads, dim]`, after QK-norm
/// and RoPE, plus the output gate `[seq, heads * head_dim]` when the layer has one.
fn projections(
    b: &mut Builder,
    a: &Attention,
    h: u64,
    x: Value,
    positions: Value,
) -> Result<(Value, Value, Value, Option<Value>), LowerError> {
    let seq = b.seq;
    let (heads, kv, hd) = (a.heads, a.kv_heads, a.head_dim);
    let q_rows = heads * hd * if a.gate { 2 } else { 1 };
    let mut q = b.linear(x, "attn.q", q_rows, h, a.bias.q)?;
    let mut k = b.linear(x, "attn.k", kv * hd, h, a.bias.k)?;
    let v = b.linear(x, "attn.v", kv * a.v_head_dim, h, a.bias.v)?;
    let mut gate = None;
    if a.gate {
        // Qwen3-Next: every head's rows hold its query, then its gate.
        let both = b.reshape(q, vec![seq, Dim::c(heads), Dim::c(2 * hd)])?;
        let query = b.op(
            Op::Slice {
                axis: 2,
                start: 0,
                end: hd,
            },
            &[both],
        )?;
        let g = b.op(
            Op::Slice {
                axis: 2,
                start: hd,
                end: 2 * hd,
            },
            &[both],
        )?;
        gate = Some(b.reshape(g, vec![seq, Dim::c(heads * hd)])?);
        q = b.reshape(query, vec![seq, Dim::c(heads * hd)])?;
    }
    if let QkNorm::Full(n) = &a.qk_norm {
        q = b.norm(q, "attn.q_norm", n, heads * hd)?;
        k = b.norm(k, "attn.k_norm", n, kv * hd)?;
    }
    let mut q = b.reshape(q, vec![seq, Dim::c(heads), Dim::c(hd)])?;
    let mut k = b.reshape(k, vec![seq, Dim::c(kv), Dim::c(hd)])?;
    let v = b.reshape(v, vec![seq, Dim::c(kv), Dim::c(a.v_head_dim)])?;
    match &a.qk_norm {
        QkNorm::PerHead(n) => {
            q = b.norm(q, "attn.q_norm", n, hd)?;
            k = b.norm(k, "attn.k_norm", n, hd)?;
        }
        QkNorm::L2 { eps } => {
            // Llama 4's "L2" norm is a weightless RMS norm over each head.
            let op = Op::Norm(NormOp {
                kind: NormKind::Rms,
                eps: *eps,
                plus_one: false,
                weight: false,
                bias: false,
            });
            q = b.op(op.clone(), &[q])?;
            k = b.op(op, &[k])?;
        }
        QkNorm::None | QkNorm::Full(_) => {}
    }
    if let Some(r) = rope_op(a) {
        q = b.op(Op::Rope(r.clone()), &[q, positions])?;
        k = b.op(Op::Rope(r), &[k, positions])?;
    }
    Ok((q, k, v, gate))
}

/// Multi-head latent attention with full matrices: queries (optionally through the
/// low-rank `q_a`/`q_b`), the compressed KV latent expanded by `kv_b`, and the single
/// shared RoPE key broadcast to every head. Returns `[seq, heads, nope+rope]` queries and
/// keys and `[seq, heads, v_dim]` values.
///
/// HF DeepSeek V3's `rope_interleave` permutes the RoPE dims before a half rotation;
/// that equals an interleaved rotation followed by the same permutation of q and k,
/// which leaves every q·k unchanged, so `pairing = interleaved` lowers to plain
/// interleaved RoPE.
fn mla(
    b: &mut Builder,
    spec: &Spec,
    a: &Attention,
    m: &Mla,
    x: Value,
    positions: Value,
) -> Result<(Value, Value, Value), LowerError> {
    let seq = b.seq;
    let h = spec.hidden;
    let heads = a.heads;
    let qk = m.nope_dim + m.rope_dim;
    if m.rope_dim == 0 || m.nope_dim == 0 {
        return Err(err("MLA needs non-zero nope_dim and rope_dim"));
    }
    // HF builds the latent norms with the RMSNorm default eps, not the model's.
    let latent = Norm {
        kind: SpecNormKind::RmsNorm,
        eps: 1e-6,
        bias: false,
        plus_one: false,
    };
    let q = match m.q_rank {
        Some(r) => {
            let qa = b.linear(x, "attn.q_a", r, h, a.bias.q)?;
            let qa = b.norm(qa, "attn.q_a_norm", &latent, r)?;
            b.linear(qa, "attn.q_b", heads * qk, r, false)?
        }
        None => b.linear(x, "attn.q", heads * qk, h, a.bias.q)?,
    };
    let q = b.reshape(q, vec![seq, Dim::c(heads), Dim::c(qk)])?;
    let q_nope = b.op(
        Op::Slice {
            axis: 2,
            start: 0,
            end: m.nope_dim,
        },
        &[q],
    )?;
    let q_rot = b.op(
        Op::Slice {
            axis: 2,
            start: m.nope_dim,
            end: qk,
        },
        &[q],
    )?;

    let ckv = b.linear(
        x,
        "attn.kv_a",
        m.kv_rank + m.rope_dim,
        h,
        a.bias.k || a.bias.v,
    )?;
    let latent_kv = b.op(
        Op::Slice {
            axis: 1,
            start: 0,
            end: m.kv_rank,
        },
        &[ckv],
    )?;
    let k_rot = b.op(
        Op::Slice {
            axis: 1,
            start: m.kv_rank,
            end: m.kv_rank + m.rope_dim,
        },
        &[ckv],
    )?;
    let k_rot = b.reshape(k_rot, vec![seq, Dim::c(1), Dim::c(m.rope_dim)])?;
    let latent_kv = b.norm(latent_kv, "attn.kv_a_norm", &latent, m.kv_rank)?;
    let kv = b.linear(
        latent_kv,
        "attn.kv_b",
        heads * (m.nope_dim + m.v_dim),
        m.kv_rank,
        false,
    )?;
    let kv = b.reshape(kv, vec![seq, Dim::c(heads), Dim::c(m.nope_dim + m.v_dim)])?;
    let k_nope = b.op(
        Op::Slice {
            axis: 2,
            start: 0,
            end: m.nope_dim,
        },
        &[kv],
    )?;
    let v = b.op(
        Op::Slice {
            axis: 2,
            start: m.nope_dim,
            end: m.nope_dim + m.v_dim,
        },
        &[kv],
    )?;

    let (q_rot, k_rot) = match rope_op(a) {
        Some(r) => {
            let r = RopeOp {
                dims: r.dims.min(m.rope_dim),
                ..r
            };
            (
                b.op(Op::Rope(r.clone()), &[q_rot, positions])?,
                b.op(Op::Rope(r), &[k_rot, positions])?,
            )
        }
        None => (q_rot, k_rot),
    };
    let k_rot = b.op(
        Op::Expand {
            shape: vec![seq, Dim::c(heads), Dim::c(m.rope_dim)],
        },
        &[k_rot],
    )?;
    let q = b.op(Op::Concat { axis: 2 }, &[q_nope, q_rot])?;
    let k = b.op(Op::Concat { axis: 2 }, &[k_nope, k_rot])?;
    Ok((q, k, v))
}
