//! Lowering of feed-forwards: plain and gated MLPs (GPT-OSS's clamped SwiGLU included)
//! and mixtures of experts with their router, routed experts and shared experts.

use super::{Builder, LowerError};
use crate::ir::{BinaryOp, Dim, Op, RouterSelectOp, RouterWeightsOp, UnaryOp, Value};
use archc_spec::{Activation, Ffn, Moe, Spec};

/// The feed-forward of a block applied to `x [seq, hidden]`.
pub(super) fn lower(
    b: &mut Builder,
    spec: &Spec,
    ffn: &Ffn,
    x: Value,
) -> Result<Value, LowerError> {
    match ffn {
        Ffn::Mlp(m) => mlp(b, x, "ffn", spec.hidden, m.hidden, m.act, m.gated, m.bias),
        Ffn::Moe(m) => moe(b, spec, m, x),
    }
}

/// `down(act(gate(x)) * up(x))` when gated, else `down(act(up(x)))`.
#[allow(clippy::too_many_arguments)]
fn mlp(
    b: &mut Builder,
    x: Value,
    base: &str,
    h: u64,
    inner: u64,
    act: Activation,
    gated: bool,
    bias: bool,
) -> Result<Value, LowerError> {
    let up = b.linear(x, &format!("{base}.up"), inner, h, bias)?;
    let a = if gated || matches!(act, Activation::ClampedSwiglu { .. }) {
        let gate = b.linear(x, &format!("{base}.gate"), inner, h, bias)?;
        glu(b, act, gate, up)?
    } else {
        b.unary(unary(act), up)?
    };
    b.linear(a, &format!("{base}.down"), h, inner, bias)
}

/// The gated activation `act(gate) * up`, or GPT-OSS's clamped SwiGLU.
fn glu(b: &mut Builder, act: Activation, gate: Value, up: Value) -> Result<Value, LowerError> {
    match act {
        Activation::ClampedSwiglu { alpha, limit } => {
            b.op(Op::ClampedSwiglu { alpha, limit }, &[gate, up])
        }
        _ => {
            let g = b.unary(unary(act), gate)?;
            b.binary(BinaryOp::Mul, g, up)
        }
    }
}

fn unary(act: Activation) -> UnaryOp {
    match act {
        Activation::Gelu => UnaryOp::Gelu,
        Activation::GeluTanh => UnaryOp::GeluTanh,
        Activation::Relu => UnaryOp::Relu,
        // The clamped SwiGLU is always gated, so it never reaches here; SiLU is its base.
        Activation::Silu | Activation::ClampedSwiglu { .. } => UnaryOp::Silu,
    }
}

/// Router, top-k routed experts (as per-slot expert matmuls) and shared experts.
fn moe(b: &mut Builder, spec: &Spec, m: &Moe, x: Value) -> Result<Value, LowerError> {
    let seq = b.seq;
    let (h, e, i, k) = (spec.hidden, m.experts, m.hidden, m.top_k);
    let r = &m.router;
    let logits = b.linear(x, "moe.router", e, h, r.bias)?;
    let mut sel_in = vec![logits];
    if r.correction_bias && !r.topk_first {
        sel_in.push(b.local("moe.router.correction_bias", &[e]));
    }
    let select = RouterSelectOp {
        top_k: k,
        score: r.score,
        topk_first: r.topk_first,
        correction_bias: sel_in.len() == 2,
        groups: r
            .groups
            .filter(|_| !r.topk_first)
            .map(|g| (g.count, g.keep)),
    };
    let sel = b.op(Op::RouterSelect(select), &sel_in)?;
    let weights = RouterWeightsOp {
        score: r.score,
        topk_first: r.topk_first,
        renormalize: r.renormalize,
        scale: r.scale,
    };
    let w = b.op(Op::RouterWeights(weights), &[logits, sel])?;
    let w = b.reshape(w, vec![seq, Dim::c(k), Dim::c(1)])?;

    let xin = if r.weight_input {
        // Llama 4 scales each expert's input by its routing weight instead of its output.
        let x3 = b.reshape(x, vec![seq, Dim::c(1), Dim::c(h)])?;
        b.binary(BinaryOp::Mul, x3, w)?
    } else {
        x
    };
    let expert =
        |b: &mut Builder, x: Value, name: &str, out: u64, inp: u64| -> Result<Value, LowerError> {
            let wt = b.local(&format!("moe.experts.{name}.weight"), &[e, out, inp]);
            let y = b.op(Op::ExpertMatMul, &[x, wt, sel])?;
            if m.bias {
                let table = b.local(&format!("moe.experts.{name}.bias"), &[e, out]);
                let bias = b.op(Op::Gather, &[table, sel])?;
                return b.binary(BinaryOp::Add, y, bias);
            }
            Ok(y)
        };
    let up = expert(b, xin, "up", i, h)?;
    let a = if m.gated || matches!(m.act, Activation::ClampedSwiglu { .. }) {
        let gate = expert(b, xin, "gate", i, h)?;
        glu(b, m.act, gate, up)?
    } else {
        b.unary(unary(m.act), up)?
    };
    let mut down = expert(b, a, "down", h, i)?;
    if !r.weight_input {
        down = b.binary(BinaryOp::Mul, down, w)?;
    }
    let mut out = b.op(Op::Sum { axis: 1 }, &[down])?;

    if let Some(s) = &m.shared {
        let mut y = mlp(
            b,
            x,
            "moe.shared",
            h,
            s.count * s.hidden,
            m.act,
            m.gated,
            false,
        )?;
        if s.gate {
            let g = b.linear(x, "moe.shared_gate", 1, h, false)?;
            let g = b.unary(UnaryOp::Sigmoid, g)?;
            y = b.binary(BinaryOp::Mul, y, g)?;
        }
        out = b.binary(BinaryOp::Add, out, y)?;
    }
    Ok(out)
}
