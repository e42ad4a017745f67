//! Lowering of softmax attention: projections, the Qwen3-Next output gate, QK-norms,
//! RoPE, Llama 4 temperature tuning, the KV-cache append and the attention op itself;
//! for MLA the latent cache, with absorbed up-projections in decode (see `mla`).

use super::{err, Builder, LowerError};
use crate::ir::{
    rope::yarn_mscale, AttnOp, BinaryOp, DType, Dim, Io, KvPart, MlaAttn, Mode, NormKind, NormOp,
    Op, RopeOp, UnaryOp, Value,
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
    let h = spec.hidden;
    let (out, width) = match &a.mla {
        Some(m) => (mla(b, spec, layer, a, m, x, positions)?, a.heads * m.v_dim),
        None => (
            standard(b, layer, a, h, x, positions)?,
            a.heads * a.v_head_dim,
        ),
    };
    b.linear(out, "attn.o", h, width, a.bias.o)
}

/// MHA/GQA/MQA attention: projections, the per-head KV cache `cache.{layer}.k` /
/// `cache.{layer}.v` (`[past, kv_heads, dim]`), attention and the output gate. Returns the
/// heads side by side, `[seq, heads * v_head_dim]`.
fn standard(
    b: &mut Builder,
    layer: usize,
    a: &Attention,
    h: u64,
    x: Value,
    positions: Value,
) -> Result<Value, LowerError> {
    let seq = b.seq;
    let (q, k, v, gate) = projections(b, a, h, x, positions)?;
    let q = temperature(b, a, q, positions)?;

    // Append this pass's keys and values to the cache.
    let qk_dim = b.ty(k).shape[2];
    let (k_io, v_io) = (
        Io::kv(layer as u32, KvPart::K),
        Io::kv(layer as u32, KvPart::V),
    );
    let k_cache = b.input(
        k_io.clone(),
        vec![Dim::PAST, Dim::c(a.kv_heads), qk_dim],
        DType::F32,
    );
    let v_cache = b.input(
        v_io.clone(),
        vec![Dim::PAST, Dim::c(a.kv_heads), Dim::c(a.v_head_dim)],
        DType::F32,
    );
    let k_all = b.op(Op::Concat { axis: 0 }, &[k_cache, k])?;
    let v_all = b.op(Op::Concat { axis: 0 }, &[v_cache, v])?;
    b.output(k_io, k_all);
    b.output(v_io, v_all);

    let mut ins = vec![q, k_all, v_all, positions];
    if a.sinks {
        ins.push(b.local("attn.sinks", &[a.heads]));
    }
    let out = b.op(Op::Attention(attn_op(a)), &ins)?;
    let mut out = b.reshape(out, vec![seq, Dim::c(a.heads * a.v_head_dim)])?;
    if let Some(gate) = gate {
        let g = b.unary(UnaryOp::Sigmoid, gate)?;
        out = b.binary(BinaryOp::Mul, out, g)?;
    }
    Ok(out)
}

/// The attention op of a layer without MLA's latent form.
fn attn_op(a: &Attention) -> AttnOp {
    AttnOp {
        scale: scale(a),
        causal: a.causal,
        window: a.window,
        chunk: a.chunk,
        softcap: a.softcap,
        sinks: a.sinks,
        mla: None,
    }
}

/// Llama 4 tunes the query temperature only on its NoPE layers, as HF does.
fn temperature(
    b: &mut Builder,
    a: &Attention,
    q: Value,
    positions: Value,
) -> Result<Value, LowerError> {
    match (&a.temperature, &a.rope) {
        (Some(t), None) => {
            let scale = b.op(
                Op::AttnTemperature {
                    floor_scale: t.floor_scale,
                    attn_scale: t.attn_scale,
                },
                &[positions],
            )?;
            b.binary(BinaryOp::Mul, q, scale)
        }
        _ => Ok(q),
    }
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

/// Multi-head latent attention. Queries come (optionally through the low-rank `q_a`/`q_b`)
/// as `[seq, heads, nope + rope]`; every new token adds ONE row to the layer's cache
/// `cache.{layer}.kv` (`[past, kv_rank + rope]`): its normed latent `c` (`kv_a_norm`) and
/// its single shared RoPE key, side by side — what MLA is designed to cache, the size
/// `archc stats` reports. Returns the heads side by side, `[seq, heads * v_dim]`.
///
/// - **Decode** attends over the latent rows directly with the absorbed up-projections
///   (`AttnOp::mla`): `W_UK` is multiplied into the query and `W_UV` into the output, so no
///   per-head key or value is ever formed for the cache; per token and head that costs
///   `(nope + v) * kv_rank` multiply-adds for the projections plus `past * (2 * kv_rank +
///   rope)` for the attention, and reads `past * (kv_rank + rope)` cached numbers in all.
/// - **Prefill** expands keys and values from the latent rows (`kv_b`) for all `past + seq`
///   tokens and runs plain attention: for a prompt of `n` tokens the expansion costs `n`
///   matmul rows while absorption would widen every one of the `n²/2` query-key dot
///   products from `nope + rope` to `kv_rank + rope` (and every value sum from `v` to
///   `kv_rank`), so expanding is cheaper for long prompts. Both modes write the same
///   latent cache, so prefill then decode continues the same sequence.
///
/// HF DeepSeek V3's `rope_interleave` permutes the RoPE dims before a half rotation;
/// that equals an interleaved rotation followed by the same permutation of q and k,
/// which leaves every q·k unchanged, so `pairing = interleaved` lowers to plain
/// interleaved RoPE.
fn mla(
    b: &mut Builder,
    spec: &Spec,
    layer: usize,
    a: &Attention,
    m: &Mla,
    x: Value,
    positions: Value,
) -> Result<Value, LowerError> {
    let seq = b.seq;
    let h = spec.hidden;
    let heads = a.heads;
    let (rank, nope, rope, vd) = (m.kv_rank, m.nope_dim, m.rope_dim, m.v_dim);
    let qk = nope + rope;
    if rope == 0 || nope == 0 || rank == 0 || vd == 0 {
        return Err(err(
            "MLA needs non-zero kv_rank, nope_dim, rope_dim and v_dim",
        ));
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
    let q_nope = slice(b, q, 2, 0, nope)?;
    let q_rot = slice(b, q, 2, nope, qk)?;

    // The new latent rows: `kv_a` gives [c ; k_rope] per token.
    let ckv = b.linear(x, "attn.kv_a", rank + rope, h, a.bias.k || a.bias.v)?;
    let c = slice(b, ckv, 1, 0, rank)?;
    let k_rot = slice(b, ckv, 1, rank, rank + rope)?;
    let k_rot = b.reshape(k_rot, vec![seq, Dim::c(1), Dim::c(rope)])?;
    let c = b.norm(c, "attn.kv_a_norm", &latent, rank)?;
    let (q_rot, k_rot) = match rope_op(a) {
        Some(r) => {
            let r = RopeOp {
                dims: r.dims.min(rope),
                ..r
            };
            (
                b.op(Op::Rope(r.clone()), &[q_rot, positions])?,
                b.op(Op::Rope(r), &[k_rot, positions])?,
            )
        }
        None => (q_rot, k_rot),
    };
    let q = b.op(Op::Concat { axis: 2 }, &[q_nope, q_rot])?;
    let q = temperature(b, a, q, positions)?;
    let k_rot = b.reshape(k_rot, vec![seq, Dim::c(rope)])?;
    let row = b.op(Op::Concat { axis: 1 }, &[c, k_rot])?;
    let io = Io::kv(layer as u32, KvPart::Latent);
    let cache = b.input(io.clone(), vec![Dim::PAST, Dim::c(rank + rope)], DType::F32);
    let all = b.op(Op::Concat { axis: 0 }, &[cache, row])?;
    b.output(io, all);
    let t = b.ty(all).shape[0];

    let kv_b = b.local("attn.kv_b.weight", &[heads * (nope + vd), rank]);
    let sinks = a.sinks.then(|| b.local("attn.sinks", &[heads]));
    let mut op = attn_op(a);
    let mut ins = match b.g.mode {
        Mode::Decode => {
            op.mla = Some(MlaAttn { rank, nope, v: vd });
            let kv = b.reshape(all, vec![t, Dim::c(1), Dim::c(rank + rope)])?;
            vec![q, kv, kv_b, positions]
        }
        Mode::Prefill => {
            let c_all = slice(b, all, 1, 0, rank)?;
            let kr = slice(b, all, 1, rank, rank + rope)?;
            let kr = b.reshape(kr, vec![t, Dim::c(1), Dim::c(rope)])?;
            let kr = b.op(
                Op::Expand {
                    shape: vec![t, Dim::c(heads), Dim::c(rope)],
                },
                &[kr],
            )?;
            let kv = b.op(Op::MatMul, &[c_all, kv_b])?;
            let kv = b.reshape(kv, vec![t, Dim::c(heads), Dim::c(nope + vd)])?;
            let k_nope = slice(b, kv, 2, 0, nope)?;
            let v = slice(b, kv, 2, nope, nope + vd)?;
            let k = b.op(Op::Concat { axis: 2 }, &[k_nope, kr])?;
            vec![q, k, v, positions]
        }
    };
    ins.extend(sinks);
    let out = b.op(Op::Attention(op), &ins)?;
    b.reshape(out, vec![seq, Dim::c(heads * vd)])
}

/// `[start, end)` of `x` along `axis`.
fn slice(
    b: &mut Builder,
    x: Value,
    axis: usize,
    start: u64,
    end: u64,
) -> Result<Value, LowerError> {
    b.op(Op::Slice { axis, start, end }, &[x])
}
