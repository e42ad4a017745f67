//! Lowering of the recurrent mixers: the linear-attention ones, Gated DeltaNet
//! (Qwen3-Next) and Kimi Delta Attention (Kimi Linear), and LFM2's gated short
//! convolution.
//!
//! A linear-attention layer keeps a fixed-size recurrent state instead of a KV cache:
//! `cache.{i}.conv` (`[conv - 1, channels]`: the last inputs of the short causal
//! convolution) and `cache.{i}.state` (`[k_head_dim, v_heads, v_head_dim]`: the delta
//! rule's state, key channel first so that it can ride along the rule's outputs). Both
//! are graph inputs, start as zeros, and come back under the same names replaced, not
//! grown; a prefill after earlier tokens and every decode step continue from them.

use super::{err, Builder, LowerError};
use crate::ir::{BinaryOp, DType, Dim, Io, NormKind, NormOp, Op, StatePart, UnaryOp, Value};
use archc_spec::{GatedDeltaNet, KimiDelta, ShortConv, Spec};

/// The Gated DeltaNet mixer of layer `layer` on the normed residual `x [seq, hidden]`,
/// as HF's `Qwen3NextGatedDeltaNet`:
/// - `in_qkvz` holds, per key head, its query, its key, then the values and the output
///   gates `z` of the `v_heads / k_heads` value heads it serves; `in_ba` per key head the
///   `beta` logits then the decay inputs `a` of the same value heads;
/// - q, k and v (in that order, each block all heads) pass the causal depthwise
///   convolution and SiLU;
/// - q and k are L2-normalised per head (eps 1e-6), q scaled by `k_head_dim^-0.5`;
/// - `beta = sigmoid(b)`, log decay `g = -exp(A_log) * softplus(a + dt_bias)`;
/// - the delta rule, then per value head an RMS norm (the model's eps, weight as is) times
///   `silu(z)`, and the out-projection.
pub(super) fn gated_deltanet(
    b: &mut Builder,
    spec: &Spec,
    layer: usize,
    gd: &GatedDeltaNet,
    eps: f64,
    x: Value,
) -> Result<Value, LowerError> {
    let seq = b.seq;
    let h = spec.hidden;
    let (hk, hv, dk, dv, conv) = (
        gd.k_heads,
        gd.v_heads,
        gd.k_head_dim,
        gd.v_head_dim,
        gd.conv,
    );
    if hk == 0 || hv == 0 || hv % hk != 0 || dk == 0 || dv == 0 || conv == 0 {
        return Err(err(format!(
            "gated_deltanet needs v_heads ({hv}) a multiple of k_heads ({hk}) and non-zero \
             head dims and conv"
        )));
    }
    let r = hv / hk;
    let (key_dim, value_dim) = (hk * dk, hv * dv);
    let channels = 2 * key_dim + value_dim;
    let group = 2 * dk + 2 * r * dv;

    let qkvz = b.linear(x, "gdn.in_qkvz", 2 * key_dim + 2 * value_dim, h, false)?;
    let qkvz = b.reshape(qkvz, vec![seq, Dim::c(hk), Dim::c(group)])?;
    let part = |b: &mut Builder, start: u64, end: u64, shape: Vec<Dim>| {
        let s = slice(b, qkvz, 2, start, end)?;
        b.reshape(s, shape)
    };
    let q = part(b, 0, dk, vec![seq, Dim::c(key_dim)])?;
    let k = part(b, dk, 2 * dk, vec![seq, Dim::c(key_dim)])?;
    let v = part(b, 2 * dk, 2 * dk + r * dv, vec![seq, Dim::c(value_dim)])?;
    let z = part(b, 2 * dk + r * dv, group, vec![seq, Dim::c(hv), Dim::c(dv)])?;
    let ba = b.linear(x, "gdn.in_ba", 2 * hv, h, false)?;
    let ba = b.reshape(ba, vec![seq, Dim::c(hk), Dim::c(2 * r)])?;
    let beta = slice(b, ba, 2, 0, r)?;
    let beta = b.reshape(beta, vec![seq, Dim::c(hv)])?;
    let a = slice(b, ba, 2, r, 2 * r)?;
    let a = b.reshape(a, vec![seq, Dim::c(hv)])?;

    let qk = b.op(Op::Concat { axis: 1 }, &[q, k])?;
    let mixed = b.op(Op::Concat { axis: 1 }, &[qk, v])?;
    let mixed = causal_conv(b, layer, mixed, channels, conv, "gdn.conv.weight")?;
    let mixed = b.unary(UnaryOp::Silu, mixed)?;
    let q = slice(b, mixed, 1, 0, key_dim)?;
    let k = slice(b, mixed, 1, key_dim, 2 * key_dim)?;
    let v = slice(b, mixed, 1, 2 * key_dim, channels)?;
    let q = b.reshape(q, vec![seq, Dim::c(hk), Dim::c(dk)])?;
    let k = b.reshape(k, vec![seq, Dim::c(hk), Dim::c(dk)])?;
    let v = b.reshape(v, vec![seq, Dim::c(hv), Dim::c(dv)])?;
    // l2norm(x) = x / sqrt(Σx² + eps) = rmsnorm(x, eps / d) / sqrt(d); the query also
    // takes the `d^-0.5` scale, so it is divided by d in all.
    let q = l2_norm(b, q, dk, (dk as f64).recip())?;
    let k = l2_norm(b, k, dk, (dk as f64).powf(-0.5))?;

    let beta = b.unary(UnaryOp::Sigmoid, beta)?;
    let a_log = b.local("gdn.a_log", &[hv]);
    let dt_bias = b.local("gdn.dt_bias", &[hv]);
    let g = b.op(Op::DecayGate, &[a, a_log, dt_bias])?;
    let o = delta_rule(b, layer, [q, k, v, g, beta], dk, hv, dv)?;

    // The gated RMS norm over each value head: its weight is applied as is (no `1 +`).
    let w = b.local("gdn.norm.weight", &[dv]);
    let normed = b.op(
        Op::Norm(NormOp {
            kind: NormKind::Rms,
            eps,
            plus_one: false,
            weight: true,
            bias: false,
        }),
        &[o, w],
    )?;
    let gate = b.unary(UnaryOp::Silu, z)?;
    let o = b.binary(BinaryOp::Mul, normed, gate)?;
    let o = b.reshape(o, vec![seq, Dim::c(value_dim)])?;
    b.linear(o, "gdn.out", h, value_dim, false)
}

/// The Kimi Delta Attention mixer of layer `layer` on the normed residual `x [seq,
/// hidden]`, as HF's `KimiLinearDeltaAttention` (one head width `d` for keys and values):
/// - `q`, `k`, `v` projections, each through its own causal depthwise convolution (one
///   shared state over the three, side by side) and SiLU;
/// - q and k L2-normalised per head (eps 1e-6), q scaled by `head_dim^-0.5`;
/// - the per-channel log decay `g = -exp(A_log[h]) * softplus(f_b(f_a(x)) + dt_bias)`
///   (`[seq, heads, d]`) and `beta = sigmoid(b(x))`;
/// - the delta rule, then per head an RMS norm (the model's eps) times
///   `sigmoid(g_b(g_a(x)))`, and the out-projection.
pub(super) fn kimi_delta(
    b: &mut Builder,
    spec: &Spec,
    layer: usize,
    kd: &KimiDelta,
    eps: f64,
    x: Value,
) -> Result<Value, LowerError> {
    let seq = b.seq;
    let h = spec.hidden;
    let (heads, d, conv) = (kd.heads, kd.head_dim, kd.conv);
    if heads == 0 || d == 0 || conv == 0 {
        return Err(err(format!(
            "kimi_delta needs non-zero heads ({heads}), head_dim ({d}) and conv ({conv})"
        )));
    }
    let width = heads * d;
    let q = b.linear(x, "kda.q", width, h, false)?;
    let k = b.linear(x, "kda.k", width, h, false)?;
    let v = b.linear(x, "kda.v", width, h, false)?;
    let qk = b.op(Op::Concat { axis: 1 }, &[q, k])?;
    let mixed = b.op(Op::Concat { axis: 1 }, &[qk, v])?;
    let io = Io::state(layer as u32, StatePart::Conv);
    let state = b.input(
        io.clone(),
        vec![Dim::c(conv - 1), Dim::c(3 * width)],
        DType::F32,
    );
    let all = b.op(Op::Concat { axis: 0 }, &[state, mixed])?;
    let mut convolved = Vec::with_capacity(3);
    for (i, which) in ["q", "k", "v"].into_iter().enumerate() {
        let i = i as u64;
        let part = slice(b, all, 1, i * width, (i + 1) * width)?;
        let w = b.local(&format!("kda.{which}_conv.weight"), &[width, 1, conv]);
        let y = b.op(Op::DepthwiseConv, &[part, w])?;
        let y = b.unary(UnaryOp::Silu, y)?;
        convolved.push(b.reshape(y, vec![seq, Dim::c(heads), Dim::c(d)])?);
    }
    let next = b.op(Op::TailRows { n: conv - 1 }, &[all])?;
    b.output(io, next);
    let q = l2_norm(b, convolved[0], d, (d as f64).recip())?;
    let k = l2_norm(b, convolved[1], d, (d as f64).powf(-0.5))?;
    let v = convolved[2];

    let fa = b.linear(x, "kda.f_a", d, h, false)?;
    let f = b.linear(fa, "kda.f_b", width, d, false)?;
    let f = b.reshape(f, vec![seq, Dim::c(heads), Dim::c(d)])?;
    let a_log = b.local("kda.a_log", &[1, 1, heads, 1]);
    let a_log = b.reshape(a_log, vec![Dim::c(heads), Dim::c(1)])?;
    let dt_bias = b.local("kda.dt_bias", &[width]);
    let dt_bias = b.reshape(dt_bias, vec![Dim::c(heads), Dim::c(d)])?;
    let g = b.op(Op::DecayGate, &[f, a_log, dt_bias])?;
    let beta = b.linear(x, "kda.b", heads, h, false)?;
    let beta = b.unary(UnaryOp::Sigmoid, beta)?;
    let o = delta_rule(b, layer, [q, k, v, g, beta], d, heads, d)?;

    let w = b.local("kda.o_norm.weight", &[d]);
    let normed = b.op(
        Op::Norm(NormOp {
            kind: NormKind::Rms,
            eps,
            plus_one: false,
            weight: true,
            bias: false,
        }),
        &[o, w],
    )?;
    let ga = b.linear(x, "kda.g_a", d, h, false)?;
    let gate = b.linear(ga, "kda.g_b", width, d, false)?;
    let gate = b.reshape(gate, vec![seq, Dim::c(heads), Dim::c(d)])?;
    let gate = b.unary(UnaryOp::Sigmoid, gate)?;
    let o = b.binary(BinaryOp::Mul, normed, gate)?;
    let o = b.reshape(o, vec![seq, Dim::c(width)])?;
    b.linear(o, "kda.o", h, width, false)
}

/// The causal depthwise convolution with its state `cache.{layer}.conv` (`[conv - 1,
/// channels]`, the previous inputs): returns `[seq, channels]` and makes the last `conv -
/// 1` input rows the new state.
fn causal_conv(
    b: &mut Builder,
    layer: usize,
    x: Value,
    channels: u64,
    conv: u64,
    weight: &str,
) -> Result<Value, LowerError> {
    let io = Io::state(layer as u32, StatePart::Conv);
    let state = b.input(
        io.clone(),
        vec![Dim::c(conv - 1), Dim::c(channels)],
        DType::F32,
    );
    let all = b.op(Op::Concat { axis: 0 }, &[state, x])?;
    let w = b.local(weight, &[channels, 1, conv]);
    let y = b.op(Op::DepthwiseConv, &[all, w])?;
    let next = b.op(Op::TailRows { n: conv - 1 }, &[all])?;
    b.output(io, next);
    Ok(y)
}

/// LFM2's gated short convolution of layer `layer` on the normed residual `x [seq,
/// hidden]`, as HF's `Lfm2ShortConv`: `in` gives `B`, `C` and `x` (in that order, each
/// `hidden` wide); `B * x` passes the causal depthwise convolution (with its bias, if
/// any); the result times `C` goes through `out`. The convolution's last `conv - 1` input
/// rows are the state `cache.{layer}.conv`.
pub(super) fn short_conv(
    b: &mut Builder,
    spec: &Spec,
    layer: usize,
    c: &ShortConv,
    x: Value,
) -> Result<Value, LowerError> {
    let h = spec.hidden;
    if c.conv == 0 {
        return Err(err("short_conv needs at least one tap"));
    }
    let bcx = b.linear(x, "short_conv.in", 3 * h, h, c.bias)?;
    let gate_b = slice(b, bcx, 1, 0, h)?;
    let gate_c = slice(b, bcx, 1, h, 2 * h)?;
    let input = slice(b, bcx, 1, 2 * h, 3 * h)?;
    let bx = b.op(Op::Binary(BinaryOp::Mul), &[gate_b, input])?;
    let mut y = causal_conv(b, layer, bx, h, c.conv, "short_conv.conv.weight")?;
    if c.bias {
        let bias = b.local("short_conv.conv.bias", &[h]);
        y = b.op(Op::Binary(BinaryOp::Add), &[y, bias])?;
    }
    let y = b.op(Op::Binary(BinaryOp::Mul), &[gate_c, y])?;
    b.linear(y, "short_conv.out", h, h, c.bias)
}

/// The delta rule over `[q, k, v, g, beta]` from the state `cache.{layer}.state`
/// (`[dk, heads, dv]`), which it replaces; returns the outputs `[seq, heads, dv]`.
fn delta_rule(
    b: &mut Builder,
    layer: usize,
    ops: [Value; 5],
    dk: u64,
    heads: u64,
    dv: u64,
) -> Result<Value, LowerError> {
    let io = Io::state(layer as u32, StatePart::Recurrent);
    let state = b.input(
        io.clone(),
        vec![Dim::c(dk), Dim::c(heads), Dim::c(dv)],
        DType::F32,
    );
    let mut ins = ops.to_vec();
    ins.push(state);
    let both = b.op(Op::DeltaRule, &ins)?;
    let next = b.op(Op::TailRows { n: dk }, &[both])?;
    b.output(io, next);
    b.op(Op::DropTailRows { n: dk }, &[both])
}

/// HF's `l2norm` over the last axis (eps 1e-6 inside the square root), times `scale`.
fn l2_norm(b: &mut Builder, x: Value, d: u64, scale: f64) -> Result<Value, LowerError> {
    let n = b.op(
        Op::Norm(NormOp {
            kind: NormKind::Rms,
            eps: 1e-6 / d as f64,
            plus_one: false,
            weight: false,
            bias: false,
        }),
        &[x],
    )?;
    b.unary(UnaryOp::Scale(scale), n)
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

#[cfg(test)]
mod tests {
    use crate::interp::{Interpreter, RandomWeights};
    use crate::ir::Op;
    use crate::testing::{self, lower_both, max_abs_diff, prefill_then_decode, PROMPT};
    use archc_spec::{GatedDeltaNet, KimiDelta, Mixer, Spec};

    /// Two Gated DeltaNet layers around a gated softmax-attention layer; 2 key heads
    /// serve 4 value heads, key dim 8 against value dim 6.
    fn hybrid() -> Spec {
        let mut linear = testing::block(testing::attention(), testing::swiglu(24));
        linear.name = "linear".into();
        linear.mixer = Mixer::GatedDeltaNet(GatedDeltaNet {
            k_heads: 2,
            v_heads: 4,
            k_head_dim: 8,
            v_head_dim: 6,
            conv: 4,
        });
        let full = testing::block(testing::qwen3_next_attention(), testing::swiglu(24));
        testing::spec(vec![linear, full], vec![0, 1, 0])
    }

    /// Two Kimi Delta layers around a softmax-attention layer; 4 heads of 6.
    fn kimi() -> Spec {
        let mut linear = testing::block(testing::attention(), testing::swiglu(24));
        linear.name = "kda".into();
        linear.mixer = Mixer::KimiDelta(KimiDelta {
            heads: 4,
            head_dim: 6,
            conv: 3,
        });
        let full = testing::block(testing::attention(), testing::swiglu(24));
        testing::spec(vec![linear, full], vec![0, 1, 0])
    }

    /// The state inputs have the given shapes and come back as outputs; prefill, prefill
    /// then decode, and two prefills agree; a fresh state differs from a carried one.
    fn check_state(spec: &Spec, conv: &str, state: &str) {
        let (pre, dec) = lower_both(spec);
        for g in [&pre, &dec] {
            let shape = |name: &str| {
                let io: crate::ir::Io = name.parse().expect("an input name");
                let (id, _) = g.inputs().find(|(_, n)| **n == io).expect("state input");
                g.node(id).ty.to_string()
            };
            assert_eq!(shape("cache.0.conv"), conv);
            assert_eq!(shape("cache.2.state"), state);
            for name in [
                "cache.0.conv",
                "cache.0.state",
                "cache.1.k",
                "cache.2.state",
            ] {
                let io: crate::ir::Io = name.parse().expect("an output name");
                assert!(g.output(&io).is_some(), "{name} is returned");
            }
            assert!(g.nodes.iter().any(|n| n.op == Op::DeltaRule));
        }
        let w = RandomWeights::for_graphs(&[&pre, &dec], 7);
        let interp = Interpreter::new(&pre, &dec, &w).expect("weights fit");
        let whole = interp
            .prefill(&mut interp.new_cache(), &PROMPT)
            .expect("prefill runs");
        assert!(testing::max_abs(&whole) > 0.1, "the logits are not trivial");
        for split in [1, 5, PROMPT.len()] {
            let stepped = prefill_then_decode(&interp, &PROMPT, split);
            let d = max_abs_diff(&whole, &stepped);
            assert!(d <= 1e-5, "prefill {split} then decode differs by {d}");
        }
        // A prefill after a prefill starts from the state the first one left.
        let mut cache = interp.new_cache();
        let mut two = interp.prefill(&mut cache, &PROMPT[..8]).expect("runs");
        two.extend(interp.prefill(&mut cache, &PROMPT[8..]).expect("runs"));
        assert!(max_abs_diff(&whole, &two) <= 1e-5);
        // And a fresh state is not the same as a carried one.
        let fresh = interp
            .prefill(&mut interp.new_cache(), &PROMPT[8..])
            .expect("runs");
        let vocab = testing::VOCAB as usize;
        assert!(max_abs_diff(&whole[8 * vocab..], &fresh) > 1e-3);
    }

    #[test]
    fn gated_deltanet_state_is_a_fixed_size_cache_that_prefill_and_decode_continue() {
        // Channels 2 * (2 * 8) + 4 * 6 = 56; the state is [k_head_dim, v_heads, v_head_dim].
        check_state(&hybrid(), "[3, 56] f32", "[8, 4, 6] f32");
        // A convolution of one tap keeps no rows, and the rest still works.
        let mut one_tap = hybrid();
        if let Mixer::GatedDeltaNet(g) = &mut one_tap.blocks[0].mixer {
            g.conv = 1;
        }
        check_state(&one_tap, "[0, 56] f32", "[8, 4, 6] f32");
    }

    #[test]
    fn kimi_delta_state_is_a_fixed_size_cache_that_prefill_and_decode_continue() {
        // q, k and v side by side: 3 * 4 * 6 channels, conv 3 keeps 2 rows.
        check_state(&kimi(), "[2, 72] f32", "[6, 4, 6] f32");
    }

    #[test]
    fn value_heads_must_be_a_multiple_of_key_heads() {
        let mut spec = hybrid();
        spec.blocks[0].mixer = Mixer::GatedDeltaNet(GatedDeltaNet {
            k_heads: 3,
            v_heads: 4,
            k_head_dim: 8,
            v_head_dim: 6,
            conv: 4,
        });
        let e = crate::lower(&spec, crate::Mode::Prefill).expect_err("refused");
        assert!(
            e.message.contains("layer 0 (block linear)")
                && e.message.contains("v_heads (4) a multiple of k_heads (3)"),
            "{e}"
        );
    }
}
