//! Graph IR op texts back to `Op`s. Each form is what `op_text` and the `*_text` functions
//! of `fused.rs` print; optional attributes follow the required ones in the printed order:
//!
//! ```text
//! input IO | gather | matmul | expert_matmul | add | mul | last_row | depthwise_conv
//! | decay_gate | delta_rule | UNARY
//! UNARY     := gelu | gelu_tanh | relu | silu | sigmoid | scale{F} | softcap{F}
//! NORM      := (rmsnorm | layernorm){eps=F [, plus_one] [, no_weight] [, bias | no_bias]}
//! reshape[{[DIMS]}]  expand[{[DIMS]}]  slice{axis=N, N..N}  concat{axis=N}  sum{axis=N}
//! tail_rows{n=N}  drop_tail_rows{n=N}  clamped_swiglu{alpha=F, limit=F}
//! ROPE      := rope{dims=N, theta=F [, interleaved] [, SCALING]}
//! SCALING   := linear(factor=F) | llama3(factor=F, low=F, high=F, original=N)
//!            | yarn(factor=F, original=N, beta=F/F, truncate=BOOL [, mscale=F]
//!                   [, mscale_all_dim=F] [, attention_factor=F])
//! attention{ATTN}   ATTN := scale=F [, causal] [, window=N] [, chunk=N] [, softcap=F]
//!                           [, sinks] [, mla(rank=N, nope=N, v=N)]
//! attn_temperature{floor_scale=F, attn_scale=F}
//! SELECT    := router_select{top_k=N, SCORE [, topk_first] [, correction_bias]
//!                            [, groups=N/keep=N]}
//! WEIGHTS   := router_weights{SCORE [, topk_first] [, renormalize] [, scale=F]}
//! linear{parts=N [, norm=NORM] [, bias=I(+I)*] [, act=UNARY | glu=UNARY(gate=N)
//!        | clamped_glu(alpha=F, limit=F, gate=N)] [, residual]}
//! elementwise{$R = INSTR (; $R = INSTR)*} | elementwise{operands=N}
//!     INSTR := UNARY $R | (add | mul) $R, $R | clamped_swiglu{...} $R, $R
//! norm_rope{[NORM, ] ROPE [, append]}
//! flash_attention{ATTN [, gate]}
//! moe{SELECT, WEIGHTS, UNARY | glu=UNARY | clamped_swiglu{...} [, bias] [, weight_input]}
//! ```
//!
//! Norm flags print only where they differ from the kind's default: an RMS norm has a
//! weight and no bias, a layer norm a weight and a bias.

use super::cursor::{Cursor, Result};
use crate::ir::{
    AttnOp, BinaryOp, ElementwiseOp, Epilogue, ExpertAct, FlashAttnOp, Instr, LinearOp, MlaAttn,
    MoeOp, NormKind, NormOp, NormRopeOp, Op, RopeOp, RouterSelectOp, RouterWeightsOp, UnaryOp,
};
use archc_spec::{Pairing, RopeScaling, RouterScore};

/// One op; the flag says that a `reshape` or `expand` printed no shape, so the node's type
/// gives it.
pub(super) fn op(c: &mut Cursor<'_>) -> Result<(Op, bool)> {
    let start = c.pos;
    let name = c.ident("an op name")?;
    let op = match name {
        "input" => Op::Input { io: super::io(c)? },
        "gather" => Op::Gather,
        "matmul" => Op::MatMul,
        "expert_matmul" => Op::ExpertMatMul,
        "add" => Op::Binary(BinaryOp::Add),
        "mul" => Op::Binary(BinaryOp::Mul),
        "last_row" => Op::LastRow,
        "depthwise_conv" => Op::DepthwiseConv,
        "decay_gate" => Op::DecayGate,
        "delta_rule" => Op::DeltaRule,
        "rmsnorm" | "layernorm" => Op::Norm(norm_body(c, name)?),
        "reshape" | "expand" => {
            if !c.eat("{") {
                let op = if name == "reshape" {
                    Op::Reshape { shape: Vec::new() }
                } else {
                    Op::Expand { shape: Vec::new() }
                };
                return Ok((op, true));
            }
            let shape = super::shape(c)?;
            close(c, name, "[DIMS]")?;
            if name == "reshape" {
                Op::Reshape { shape }
            } else {
                Op::Expand { shape }
            }
        }
        "slice" => {
            open(c)?;
            let axis = usize_attr(c, "axis")?;
            c.lit(",")?;
            let start = c.u64("the start of the slice")?;
            c.lit("..")?;
            let end = c.u64("the end of the slice")?;
            close(c, name, "axis=N, START..END")?;
            Op::Slice { axis, start, end }
        }
        "concat" | "sum" => {
            open(c)?;
            let axis = usize_attr(c, "axis")?;
            close(c, name, "axis=N")?;
            if name == "concat" {
                Op::Concat { axis }
            } else {
                Op::Sum { axis }
            }
        }
        "tail_rows" | "drop_tail_rows" => {
            open(c)?;
            key(c, "n")?;
            let n = c.u64("a row count")?;
            close(c, name, "n=N")?;
            if name == "tail_rows" {
                Op::TailRows { n }
            } else {
                Op::DropTailRows { n }
            }
        }
        "rope" => Op::Rope(rope_body(c)?),
        "attention" => {
            open(c)?;
            let attn = attn_attrs(c)?;
            close(c, name, ATTN_ATTRS)?;
            Op::Attention(attn)
        }
        "attn_temperature" => {
            open(c)?;
            let floor_scale = f64_attr(c, "floor_scale")?;
            c.lit(",")?;
            let attn_scale = f64_attr(c, "attn_scale")?;
            close(c, name, "floor_scale=F, attn_scale=F")?;
            Op::AttnTemperature {
                floor_scale,
                attn_scale,
            }
        }
        "router_select" => Op::RouterSelect(select_body(c)?),
        "router_weights" => Op::RouterWeights(weights_body(c)?),
        "clamped_swiglu" => {
            let (alpha, limit) = clamped_body(c)?;
            Op::ClampedSwiglu { alpha, limit }
        }
        "linear" => Op::Linear(linear_body(c)?),
        "elementwise" => Op::Elementwise(elementwise_body(c)?),
        "norm_rope" => Op::NormRope(norm_rope_body(c)?),
        "flash_attention" => {
            open(c)?;
            let attn = attn_attrs(c)?;
            let gate = flag(c, "gate");
            close(c, name, &format!("{ATTN_ATTRS}, gate"))?;
            Op::FlashAttention(FlashAttnOp { attn, gate })
        }
        "moe" => Op::Moe(moe_body(c)?),
        other => match unary_named(c, other)? {
            Some(u) => Op::Unary(u),
            None => {
                return Err(c.error_at(start, format!("unknown op `{other}`")));
            }
        },
    };
    Ok((op, false))
}

const ATTN_ATTRS: &str =
    "scale=F, causal, window=N, chunk=N, softcap=F, sinks, mla(rank=N, nope=N, v=N)";

/// `{` right after an op name.
fn open(c: &mut Cursor<'_>) -> Result<()> {
    if c.eat("{") {
        Ok(())
    } else {
        Err(c.expected("`{` and the op's attributes"))
    }
}

/// The closing `}` of `name{...}`; what it reports when something else is there lists the
/// attributes the op takes, in their order.
fn close(c: &mut Cursor<'_>, name: &str, attrs: &str) -> Result<()> {
    c.spaces();
    if c.eat("}") {
        return Ok(());
    }
    let found = attribute_found(c);
    Err(c.error(format!(
        "expected `}}` closing `{name}{{`, found {found}; `{name}` takes, in this order: {attrs}"
    )))
}

/// What stands where an attribute list should end: the attribute after a comma
/// (`` `, ntk` ``) rather than the bare comma.
fn attribute_found(c: &mut Cursor<'_>) -> String {
    let start = c.pos;
    if c.eat(",") {
        c.spaces();
        let word = c.take_while(super::is_ident);
        if !word.is_empty() {
            c.pos = start;
            return format!("`, {word}`");
        }
    }
    c.pos = start;
    c.found()
}

/// `key=` (after spaces).
fn key(c: &mut Cursor<'_>, key: &str) -> Result<()> {
    c.spaces();
    if c.eat_word(key) && c.eat("=") {
        Ok(())
    } else {
        Err(c.expected(&format!("`{key}=`")))
    }
}

fn f64_attr(c: &mut Cursor<'_>, name: &str) -> Result<f64> {
    key(c, name)?;
    c.f64(&format!("a number for `{name}`"))
}

fn u64_attr(c: &mut Cursor<'_>, name: &str) -> Result<u64> {
    key(c, name)?;
    c.u64(&format!("a whole number for `{name}`"))
}

fn usize_attr(c: &mut Cursor<'_>, name: &str) -> Result<usize> {
    c.spaces();
    let at = c.pos;
    let n = u64_attr(c, name)?;
    usize::try_from(n).map_err(|_| c.error_at(at, format!("`{name}` is too large")))
}

/// An optional `, word` (the word not followed by an identifier byte).
fn flag(c: &mut Cursor<'_>, word: &str) -> bool {
    let start = c.pos;
    c.spaces();
    if c.eat(",") {
        c.spaces();
        if c.eat_word(word) {
            return true;
        }
    }
    c.pos = start;
    false
}

/// An optional `, key=` or `, key(`: true (with the cursor after it) when present.
fn opt_key(c: &mut Cursor<'_>, key: &str, sep: &str) -> bool {
    let start = c.pos;
    c.spaces();
    if c.eat(",") {
        c.spaces();
        if c.eat_word(key) && c.eat(sep) {
            return true;
        }
    }
    c.pos = start;
    false
}

/// `{F}` of `scale{F}` and `softcap{F}`, or a plain unary name; `None` when `name` is no
/// unary op.
fn unary_named(c: &mut Cursor<'_>, name: &str) -> Result<Option<UnaryOp>> {
    Ok(Some(match name {
        "gelu" => UnaryOp::Gelu,
        "gelu_tanh" => UnaryOp::GeluTanh,
        "relu" => UnaryOp::Relu,
        "silu" => UnaryOp::Silu,
        "sigmoid" => UnaryOp::Sigmoid,
        "scale" | "softcap" => {
            open(c)?;
            let x = c.f64(&format!("the constant of `{name}`"))?;
            close(c, name, "one number")?;
            if name == "scale" {
                UnaryOp::Scale(x)
            } else {
                UnaryOp::Softcap(x)
            }
        }
        _ => return Ok(None),
    }))
}

/// A unary op (an activation, `scale{F}`, `softcap{F}`), after spaces.
fn unary(c: &mut Cursor<'_>) -> Result<UnaryOp> {
    c.spaces();
    let start = c.pos;
    let name =
        c.ident("an activation (gelu, gelu_tanh, relu, silu, sigmoid, scale{F}, softcap{F})")?;
    unary_named(c, name)?.ok_or_else(|| {
        c.error_at(
            start,
            format!("`{name}` is not an activation (gelu, gelu_tanh, relu, silu, sigmoid, scale{{F}}, softcap{{F}})"),
        )
    })
}

/// `{eps=F [, plus_one] [, no_weight] [, bias | no_bias]}` after the norm's name.
fn norm_body(c: &mut Cursor<'_>, name: &str) -> Result<NormOp> {
    let kind = if name == "rmsnorm" {
        NormKind::Rms
    } else {
        NormKind::Layer
    };
    open(c)?;
    let eps = f64_attr(c, "eps")?;
    let plus_one = flag(c, "plus_one");
    let weight = !flag(c, "no_weight");
    let bias = match kind {
        NormKind::Rms => flag(c, "bias"),
        NormKind::Layer => !flag(c, "no_bias"),
    };
    let attrs = match kind {
        NormKind::Rms => "eps=F, plus_one, no_weight, bias",
        NormKind::Layer => "eps=F, plus_one, no_weight, no_bias",
    };
    close(c, name, attrs)?;
    Ok(NormOp {
        kind,
        eps,
        plus_one,
        weight,
        bias,
    })
}

/// A whole norm: `rmsnorm{...}` or `layernorm{...}`, after spaces.
fn norm(c: &mut Cursor<'_>) -> Result<NormOp> {
    c.spaces();
    let start = c.pos;
    match c.ident("`rmsnorm` or `layernorm`")? {
        name @ ("rmsnorm" | "layernorm") => norm_body(c, name),
        other => Err(c.error_at(
            start,
            format!("expected `rmsnorm` or `layernorm`, found `{other}`"),
        )),
    }
}

/// `{dims=N, theta=F [, interleaved] [, SCALING]}` after `rope`.
fn rope_body(c: &mut Cursor<'_>) -> Result<RopeOp> {
    open(c)?;
    let dims = u64_attr(c, "dims")?;
    c.lit(",")?;
    let theta = f64_attr(c, "theta")?;
    let pairing = if flag(c, "interleaved") {
        Pairing::Interleaved
    } else {
        Pairing::Half
    };
    let scaling = if opt_key(c, "linear", "(") {
        let factor = f64_attr(c, "factor")?;
        close_paren(c, "linear", "factor=F")?;
        RopeScaling::Linear { factor }
    } else if opt_key(c, "llama3", "(") {
        let factor = f64_attr(c, "factor")?;
        c.lit(",")?;
        let low_freq_factor = f64_attr(c, "low")?;
        c.lit(",")?;
        let high_freq_factor = f64_attr(c, "high")?;
        c.lit(",")?;
        let original_context = u64_attr(c, "original")?;
        close_paren(c, "llama3", "factor=F, low=F, high=F, original=N")?;
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }
    } else if opt_key(c, "yarn", "(") {
        yarn_body(c)?
    } else {
        RopeScaling::None
    };
    close(
        c,
        "rope",
        "dims=N, theta=F, interleaved, then linear(...), llama3(...) or yarn(...)",
    )?;
    Ok(RopeOp {
        theta,
        dims,
        pairing,
        scaling,
    })
}

/// The attributes of `yarn(...)` and its closing parenthesis.
fn yarn_body(c: &mut Cursor<'_>) -> Result<RopeScaling> {
    let factor = f64_attr(c, "factor")?;
    c.lit(",")?;
    let original_context = u64_attr(c, "original")?;
    c.lit(",")?;
    let beta_fast = f64_attr(c, "beta")?;
    c.lit("/")?;
    let beta_slow = c.f64("the slow beta after `/`")?;
    c.lit(",")?;
    key(c, "truncate")?;
    c.spaces();
    let truncate = if c.eat_word("true") {
        true
    } else if c.eat_word("false") {
        false
    } else {
        return Err(c.expected("`true` or `false`"));
    };
    let mscale = if opt_key(c, "mscale", "=") {
        c.f64("a number for `mscale`")?
    } else {
        1.0
    };
    let mscale_all_dim = if opt_key(c, "mscale_all_dim", "=") {
        c.f64("a number for `mscale_all_dim`")?
    } else {
        0.0
    };
    let attention_factor = if opt_key(c, "attention_factor", "=") {
        Some(c.f64("a number for `attention_factor`")?)
    } else {
        None
    };
    close_paren(
        c,
        "yarn",
        "factor=F, original=N, beta=F/F, truncate=BOOL, mscale=F, mscale_all_dim=F, attention_factor=F",
    )?;
    Ok(RopeScaling::Yarn {
        factor,
        original_context,
        beta_fast,
        beta_slow,
        mscale,
        mscale_all_dim,
        attention_factor,
        truncate,
    })
}

/// The closing `)` of `name(...)`.
fn close_paren(c: &mut Cursor<'_>, name: &str, attrs: &str) -> Result<()> {
    c.spaces();
    if c.eat(")") {
        return Ok(());
    }
    let found = attribute_found(c);
    Err(c.error(format!(
        "expected `)` closing `{name}(`, found {found}; `{name}` takes, in this order: {attrs}"
    )))
}

/// `scale=F [, causal] [, window=N] [, chunk=N] [, softcap=F] [, sinks] [, mla(...)]`.
fn attn_attrs(c: &mut Cursor<'_>) -> Result<AttnOp> {
    let scale = f64_attr(c, "scale")?;
    let causal = flag(c, "causal");
    let window = if opt_key(c, "window", "=") {
        Some(c.u64("a window size")?)
    } else {
        None
    };
    let chunk = if opt_key(c, "chunk", "=") {
        Some(c.u64("a chunk size")?)
    } else {
        None
    };
    let softcap = if opt_key(c, "softcap", "=") {
        Some(c.f64("a softcap")?)
    } else {
        None
    };
    let sinks = flag(c, "sinks");
    let mla = if opt_key(c, "mla", "(") {
        let rank = u64_attr(c, "rank")?;
        c.lit(",")?;
        let nope = u64_attr(c, "nope")?;
        c.lit(",")?;
        let v = u64_attr(c, "v")?;
        close_paren(c, "mla", "rank=N, nope=N, v=N")?;
        Some(MlaAttn { rank, nope, v })
    } else {
        None
    };
    Ok(AttnOp {
        scale,
        causal,
        window,
        chunk,
        softcap,
        sinks,
        mla,
    })
}

fn score(c: &mut Cursor<'_>) -> Result<RouterScore> {
    c.spaces();
    let start = c.pos;
    match c.ident("a router score (`softmax` or `sigmoid`)")? {
        "softmax" => Ok(RouterScore::Softmax),
        "sigmoid" => Ok(RouterScore::Sigmoid),
        other => Err(c.error_at(
            start,
            format!("expected a router score (`softmax` or `sigmoid`), found `{other}`"),
        )),
    }
}

/// `{top_k=N, SCORE [, topk_first] [, correction_bias] [, groups=N/keep=N]}`.
fn select_body(c: &mut Cursor<'_>) -> Result<RouterSelectOp> {
    open(c)?;
    let top_k = u64_attr(c, "top_k")?;
    c.lit(",")?;
    let score = score(c)?;
    let topk_first = flag(c, "topk_first");
    let correction_bias = flag(c, "correction_bias");
    let groups = if opt_key(c, "groups", "=") {
        let count = c.u64("a group count")?;
        c.lit("/")?;
        let keep = u64_attr(c, "keep")?;
        Some((count, keep))
    } else {
        None
    };
    close(
        c,
        "router_select",
        "top_k=N, softmax|sigmoid, topk_first, correction_bias, groups=N/keep=N",
    )?;
    Ok(RouterSelectOp {
        top_k,
        score,
        topk_first,
        correction_bias,
        groups,
    })
}

/// `{SCORE [, topk_first] [, renormalize] [, scale=F]}`.
fn weights_body(c: &mut Cursor<'_>) -> Result<RouterWeightsOp> {
    open(c)?;
    let score = score(c)?;
    let topk_first = flag(c, "topk_first");
    let renormalize = flag(c, "renormalize");
    let scale = if opt_key(c, "scale", "=") {
        c.f64("a routing scale")?
    } else {
        1.0
    };
    close(
        c,
        "router_weights",
        "softmax|sigmoid, topk_first, renormalize, scale=F",
    )?;
    Ok(RouterWeightsOp {
        score,
        topk_first,
        renormalize,
        scale,
    })
}

/// `{alpha=F, limit=F}` after `clamped_swiglu`.
fn clamped_body(c: &mut Cursor<'_>) -> Result<(f64, f64)> {
    open(c)?;
    let alpha = f64_attr(c, "alpha")?;
    c.lit(",")?;
    let limit = f64_attr(c, "limit")?;
    close(c, "clamped_swiglu", "alpha=F, limit=F")?;
    Ok((alpha, limit))
}

/// `{parts=N [, norm=NORM] [, bias=I+I...] [, EPILOGUE] [, residual]}`.
fn linear_body(c: &mut Cursor<'_>) -> Result<LinearOp> {
    open(c)?;
    c.spaces();
    let at = c.pos;
    let parts = u64_attr(c, "parts")?;
    // Every part has an operand, so no real text has more parts than bytes.
    let parts = usize::try_from(parts)
        .ok()
        .filter(|&n| n <= c.text.len())
        .ok_or_else(|| c.error_at(at, format!("{parts} parts is more than the text can hold")))?;
    let norm = if opt_key(c, "norm", "=") {
        Some(norm(c)?)
    } else {
        None
    };
    let mut bias = vec![false; parts];
    if opt_key(c, "bias", "=") {
        let mut last: Option<usize> = None;
        loop {
            c.spaces();
            let at = c.pos;
            let i = c.u64("the index of a part with a bias")?;
            let i = usize::try_from(i).unwrap_or(usize::MAX);
            if i >= parts || last.is_some_and(|l| i <= l) {
                return Err(c.error_at(
                    at,
                    format!("bias part {i}: expected increasing part indices below {parts}"),
                ));
            }
            bias[i] = true;
            last = Some(i);
            if !c.eat("+") {
                break;
            }
        }
    }
    let epilogue = if opt_key(c, "act", "=") {
        Epilogue::Act(unary(c)?)
    } else if opt_key(c, "glu", "=") {
        let act = unary(c)?;
        c.lit("(")?;
        let gate = usize_attr(c, "gate")?;
        close_paren(c, "glu", "gate=N")?;
        Epilogue::Glu { act, gate }
    } else if opt_key(c, "clamped_glu", "(") {
        let alpha = f64_attr(c, "alpha")?;
        c.lit(",")?;
        let limit = f64_attr(c, "limit")?;
        c.lit(",")?;
        let gate = usize_attr(c, "gate")?;
        close_paren(c, "clamped_glu", "alpha=F, limit=F, gate=N")?;
        Epilogue::ClampedGlu { alpha, limit, gate }
    } else {
        Epilogue::None
    };
    let residual = flag(c, "residual");
    close(
        c,
        "linear",
        "parts=N, norm=NORM, bias=I+I..., act=UNARY | glu=UNARY(gate=N) | clamped_glu(...), residual",
    )?;
    Ok(LinearOp {
        norm,
        bias,
        epilogue,
        residual,
    })
}

/// A register `$N`, after spaces.
fn register(c: &mut Cursor<'_>) -> Result<u32> {
    c.lit("$")?;
    c.u32("a register number after `$`")
}

/// `{$R = INSTR; ...}` or `{operands=N}` after `elementwise`.
fn elementwise_body(c: &mut Cursor<'_>) -> Result<ElementwiseOp> {
    open(c)?;
    c.spaces();
    if c.eat_word("operands") {
        c.lit("=")?;
        let operands = c.u32("an operand count")?;
        close(c, "elementwise", "operands=N (with no instructions)")?;
        return Ok(ElementwiseOp {
            operands,
            program: Vec::new(),
        });
    }
    let mut operands = 0;
    let mut program = Vec::new();
    loop {
        c.spaces();
        let at = c.pos;
        let dest = register(c)?;
        if program.is_empty() {
            operands = dest;
        } else if u64::from(dest) != u64::from(operands) + program.len() as u64 {
            return Err(c.error_at(
                at,
                format!(
                    "instruction {} writes ${dest}; instructions write registers in order, so expected ${}",
                    program.len(),
                    u64::from(operands) + program.len() as u64
                ),
            ));
        }
        c.lit("=")?;
        c.spaces();
        let start = c.pos;
        let name = c.ident("an instruction")?;
        let ins = match name {
            "add" | "mul" => {
                let op = if name == "add" {
                    BinaryOp::Add
                } else {
                    BinaryOp::Mul
                };
                let a = register(c)?;
                c.lit(",")?;
                Instr::Binary(op, a, register(c)?)
            }
            "clamped_swiglu" => {
                let (alpha, limit) = clamped_body(c)?;
                let gate = register(c)?;
                c.lit(",")?;
                let up = register(c)?;
                Instr::ClampedSwiglu {
                    alpha,
                    limit,
                    gate,
                    up,
                }
            }
            other => match unary_named(c, other)? {
                Some(u) => Instr::Unary(u, register(c)?),
                None => {
                    return Err(c.error_at(
                        start,
                        format!("`{other}` is not an elementwise instruction"),
                    ))
                }
            },
        };
        program.push(ins);
        c.spaces();
        if !c.eat(";") {
            break;
        }
    }
    close(c, "elementwise", "`$R = INSTR` separated by `;`")?;
    Ok(ElementwiseOp { operands, program })
}

/// `{[NORM, ] ROPE [, append]}` after `norm_rope`.
fn norm_rope_body(c: &mut Cursor<'_>) -> Result<NormRopeOp> {
    open(c)?;
    c.spaces();
    let start = c.pos;
    let first = c.ident("`rmsnorm`, `layernorm` or `rope`")?;
    let norm = match first {
        "rmsnorm" | "layernorm" => {
            let n = norm_body(c, first)?;
            c.lit(",")?;
            c.word("rope")?;
            Some(n)
        }
        "rope" => None,
        other => {
            return Err(c.error_at(
                start,
                format!("expected `rmsnorm`, `layernorm` or `rope`, found `{other}`"),
            ))
        }
    };
    let rope = rope_body(c)?;
    let append = flag(c, "append");
    close(c, "norm_rope", "NORM, ROPE, append")?;
    Ok(NormRopeOp { norm, rope, append })
}

/// `{SELECT, WEIGHTS, ACT [, bias] [, weight_input]}` after `moe`.
fn moe_body(c: &mut Cursor<'_>) -> Result<MoeOp> {
    open(c)?;
    c.word("router_select")?;
    let select = select_body(c)?;
    c.lit(",")?;
    c.word("router_weights")?;
    let weights = weights_body(c)?;
    c.lit(",")?;
    c.spaces();
    let act = if c.eat_word("clamped_swiglu") {
        let (alpha, limit) = clamped_body(c)?;
        ExpertAct::Clamped { alpha, limit }
    } else if c.eat_word("glu") {
        c.lit("=")?;
        ExpertAct::Glu(unary(c)?)
    } else {
        ExpertAct::Plain(unary(c)?)
    };
    let bias = flag(c, "bias");
    let weight_input = flag(c, "weight_input");
    close(
        c,
        "moe",
        "router_select{...}, router_weights{...}, ACT, bias, weight_input",
    )?;
    Ok(MoeOp {
        select,
        weights,
        act,
        bias,
        weight_input,
    })
}
