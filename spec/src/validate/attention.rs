//! The attention section of a block: heads and their dims, MLA, windows, sinks, gates,
//! QK-norm, RoPE and its scaling, temperature tuning; every default and consistency check.

use super::eval::{type_error, word_of, Diags, Sect};
use super::model::{kind_of, section, unknown_tag, value_span, ATTENTION_KEYS, NORMS};
use super::tree::{NodeValue, Table};
use crate::ast::{Span, ValueKind};
use crate::diagnostics::Diagnostic;
use crate::spec::*;

pub(super) fn attention(
    a: &Sect,
    hidden: Option<u64>,
    model_norm: Norm,
    d: &mut Diags,
) -> Option<Attention> {
    a.check_keys(ATTENTION_KEYS, d);
    let heads = a.req_size("heads", d);
    let mla = section(a, "mla", d).and_then(|s| {
        s.check_keys(&["q_rank", "kv_rank", "nope_dim", "rope_dim", "v_dim"], d);
        let q_rank = s.opt_size("q_rank", d);
        let kv_rank = s.req_size("kv_rank", d);
        let nope_dim = s.req_size("nope_dim", d);
        let rope_dim = s.req_size("rope_dim", d);
        let v_dim = s.req_size("v_dim", d);
        Some(Mla {
            q_rank,
            kv_rank: kv_rank?,
            nope_dim: nope_dim?,
            rope_dim: rope_dim?,
            v_dim: v_dim?,
        })
    });
    let mla_given = a
        .get("mla")
        .is_some_and(|n| matches!(n.value, NodeValue::Table(_)));
    let (kv_heads, head_dim, v_head_dim) = if mla_given {
        let mla = mla?;
        let head_dim = mla.nope_dim + mla.rope_dim;
        if let Some(hd) = a.get("head_dim").and_then(|_| a.size("head_dim", d)) {
            if hd != head_dim {
                d.push(
                    Diagnostic::error(
                        value_span(a, "head_dim"),
                        format!(
                            "with `mla`, head_dim is nope_dim + rope_dim = {head_dim}, not {hd}"
                        ),
                    )
                    .label("inconsistent with `mla`")
                    .hint("remove `head_dim`"),
                );
            }
        }
        if let (Some(kv), Some(h)) = (a.get("kv_heads").and_then(|_| a.size("kv_heads", d)), heads)
        {
            if kv != h {
                d.push(
                    Diagnostic::error(
                        value_span(a, "kv_heads"),
                        format!("with `mla`, kv_heads equals heads ({h}), not {kv}"),
                    )
                    .label("inconsistent with `mla`")
                    .hint("remove `kv_heads`"),
                );
            }
        }
        (heads, Some(head_dim), Some(mla.v_dim))
    } else {
        let kv_heads = if a.get("kv_heads").is_some() {
            a.size("kv_heads", d)
        } else {
            heads
        };
        let head_dim = if a.get("head_dim").is_some() {
            a.size("head_dim", d)
        } else {
            match (hidden, heads) {
                (Some(h), Some(n)) if h % n == 0 => Some(h / n),
                (Some(h), Some(n)) => {
                    d.push(
                        Diagnostic::error(value_span(a, "heads"), format!("head_dim defaults to hidden / heads, but {h} / {n} is not an integer"))
                            .label("does not divide hidden")
                            .hint("give `head_dim` explicitly"),
                    );
                    None
                }
                _ => None,
            }
        };
        if let (Some(h), Some(kv)) = (heads, kv_heads) {
            if h % kv != 0 {
                d.push(
                    Diagnostic::error(
                        value_span(a, "kv_heads"),
                        format!("heads ({h}) is not divisible by kv_heads ({kv})"),
                    )
                    .label("must divide heads")
                    .hint("each KV head serves the same number of query heads"),
                );
            }
        }
        (kv_heads, head_dim, head_dim)
    };
    let bias = attn_bias(a, d);
    let qk_norm = qk_norm(a, model_norm, d);
    let causal = a.bool_or("causal", true, d);
    let window = a.opt_size("window", d);
    let chunk = a.opt_size("chunk", d);
    let sinks = a.bool_or("sinks", false, d);
    let softcap = a.opt_positive("softcap", d);
    let scale = a.opt_f64("scale", d);
    let gate = a.bool_or("gate", false, d);
    let temperature = section(a, "temperature", d).and_then(|t| {
        t.check_keys(&["floor_scale", "attn_scale"], d);
        let floor = if t.get("floor_scale").is_some() {
            Some(t.positive_or("floor_scale", 1.0, d))
        } else {
            t.missing("floor_scale", d);
            None
        };
        let attn = if t.get("attn_scale").is_some() {
            t.f64("attn_scale", d)
        } else {
            t.missing("attn_scale", d);
            None
        };
        Some(Temperature {
            floor_scale: floor?,
            attn_scale: attn?,
        })
    });
    let rope = match a.get("rope") {
        None => Some(Table::new(a.table.span)),
        Some(_) => section(a, "rope", d).map(|s| s.table.clone()),
    };
    let rope = match rope {
        None => None,
        Some(t) => {
            let s = a.child(&t, "`rope`");
            let defaulted = a.get("rope").is_none();
            let mla_rope = if mla_given {
                mla.map(|m| m.rope_dim)
            } else {
                None
            };
            let scale_at = a.get("scale").map(|_| value_span(a, "scale"));
            Some(rope_of(
                &s, head_dim, mla_rope, mla_given, defaulted, scale_at, d,
            )?)
        }
    };
    if let (Some(_), Some(_), Some(node)) = (&temperature, &rope, a.get("temperature")) {
        temperature_with_rope(a, node.key_span, d);
    }
    if mla_given {
        ignored_by_mla(a, gate, qk_norm, bias, d);
    }
    Some(Attention {
        heads: heads?,
        kv_heads: kv_heads?,
        head_dim: head_dim?,
        v_head_dim: v_head_dim?,
        mla,
        bias,
        qk_norm,
        causal,
        window,
        chunk,
        sinks,
        softcap,
        scale,
        gate,
        temperature,
        rope,
    })
}

/// MLA lowers its own projections: it has no output gate and no QK-norm, and its keys and
/// values share one projection (`kv_a`) and so one bias. Each of these would be accepted
/// and do nothing, so it is refused.
fn ignored_by_mla(a: &Sect, gate: bool, qk_norm: QkNorm, bias: AttnBias, d: &mut Diags) {
    let mla_at = a.get("mla").map_or(a.table.span, |n| n.key_span);
    let mut refuse = |key: &str, message: &str, hint: &str| {
        d.push(
            Diagnostic::error(value_span(a, key), message.to_string())
                .label("would be ignored with `mla`")
                .secondary(mla_at, "`mla` given here")
                .hint(hint.to_string()),
        );
    };
    if gate {
        refuse(
            "gate",
            "`gate` does not apply to `mla` attention",
            "remove `gate`",
        );
    }
    if qk_norm != QkNorm::None {
        refuse(
            "qk_norm",
            "`qk_norm` does not apply to `mla` attention",
            "remove `qk_norm`; MLA normalises its latents itself",
        );
    }
    if bias.k != bias.v {
        refuse(
            "bias",
            "with `mla`, keys and values share one projection (`kv_a`), so `k` and `v` have a bias together or not at all",
            "list both `k` and `v`, or neither",
        );
    }
}

/// Temperature tuning scales the queries of NoPE layers only (as Llama 4 does); on a
/// layer with RoPE it would be accepted and do nothing, so it is refused.
fn temperature_with_rope(a: &Sect, at: crate::ast::Span, d: &mut Diags) {
    let mut diag = Diagnostic::error(
        at,
        "`temperature` applies only to NoPE layers, and this attention has RoPE",
    )
    .label("would be ignored")
    .hint("write `rope = none` to make this a NoPE layer, or remove `temperature`");
    diag = match a.get("rope") {
        Some(rope) => diag.secondary(rope.key_span, "RoPE given here"),
        None => diag.note("attention has RoPE unless it says `rope = none`"),
    };
    d.push(diag);
}

fn attn_bias(a: &Sect, d: &mut Diags) -> AttnBias {
    let Some(v) = a.leaf("bias", "`true`, `false` or a list of `q`, `k`, `v`, `o`", d) else {
        return AttnBias::default();
    };
    match &v.kind {
        ValueKind::Bool(b) => AttnBias {
            q: *b,
            k: *b,
            v: *b,
            o: *b,
        },
        ValueKind::List(items) => {
            let mut bias = AttnBias::default();
            for item in items {
                if let Some((w, span)) = word_of(item, "bias", &["q", "k", "v", "o"], d) {
                    let slot = match w.as_str() {
                        "q" => &mut bias.q,
                        "k" => &mut bias.k,
                        "v" => &mut bias.v,
                        _ => &mut bias.o,
                    };
                    if *slot {
                        d.push(
                            Diagnostic::error(span, format!("`{w}` is listed twice"))
                                .label("listed again"),
                        );
                    }
                    *slot = true;
                }
            }
            bias
        }
        _ => {
            d.push(type_error(
                v,
                "`true`, `false` or a list of `q`, `k`, `v`, `o`",
            ));
            AttnBias::default()
        }
    }
}

fn qk_norm(a: &Sect, model_norm: Norm, d: &mut Diags) -> QkNorm {
    const KINDS: &[&str] = &["none", "per_head", "full", "l2"];
    let Some(node) = a.get("qk_norm") else {
        return QkNorm::None;
    };
    let (kind, body) = match &node.value {
        NodeValue::Leaf(v) => match word_of(v, "qk_norm", KINDS, d) {
            Some((w, _)) => (w, None),
            None => return QkNorm::None,
        },
        NodeValue::Tagged { tag, body, .. } if KINDS[1..].contains(&tag.name.as_str()) => {
            (tag.name.clone(), Some(body))
        }
        NodeValue::Tagged { tag, .. } => {
            d.push(unknown_tag(tag, "qk_norm", KINDS));
            return QkNorm::None;
        }
        NodeValue::Table(t) => {
            d.push(
                Diagnostic::error(t.span, "`qk_norm` needs a kind")
                    .label("no kind given")
                    .hint("write `qk_norm = per_head { ... }`"),
            );
            return QkNorm::None;
        }
    };
    if kind == "l2" {
        let eps = match body {
            Some(t) => {
                let s = a.child(t, "`l2`");
                s.check_keys(&["eps"], d);
                s.positive_or("eps", model_norm.eps, d)
            }
            None => model_norm.eps,
        };
        return QkNorm::L2 { eps };
    }
    let norm = match body {
        Some(t) => {
            let s = a.child(t, &format!("`{kind}`"));
            s.check_keys(&["kind", "eps", "plus_one", "bias"], d);
            let k = s
                .word("kind", NORMS, d)
                .map_or(model_norm.kind, |(w, _)| kind_of(&w));
            let base = if k == model_norm.kind {
                model_norm
            } else {
                Norm {
                    kind: k,
                    eps: model_norm.eps,
                    bias: k == NormKind::LayerNorm,
                    plus_one: false,
                }
            };
            // An RMS norm has no bias and a layer norm no `1 + w` weight: either field of
            // the other kind would be accepted and ignored.
            let other = match k {
                NormKind::RmsNorm => ("bias", "an RMS norm has no bias"),
                NormKind::LayerNorm => ("plus_one", "a layer norm's weight is not `1 + w`"),
            };
            if s.get(other.0).is_some() {
                d.push(
                    Diagnostic::error(
                        value_span(&s, other.0),
                        format!(
                            "`{}` does not apply to a `{}` QK-norm: {}",
                            other.0,
                            super::model::norm_word(k),
                            other.1
                        ),
                    )
                    .label("would be ignored")
                    .hint(format!("remove `{}`, or set `kind`", other.0)),
                );
            }
            Norm {
                kind: k,
                eps: s.positive_or("eps", base.eps, d),
                bias: s.bool_or("bias", base.bias, d),
                plus_one: s.bool_or("plus_one", base.plus_one, d),
            }
        }
        None => model_norm,
    };
    match kind.as_str() {
        "per_head" => QkNorm::PerHead(norm),
        "full" => QkNorm::Full(norm),
        _ => QkNorm::None,
    }
}

/// The `rope` section; `scale_at` is where the attention gives `scale`, if it does.
fn rope_of(
    s: &Sect,
    head_dim: Option<u64>,
    mla_rope: Option<u64>,
    mla: bool,
    defaulted: bool,
    scale_at: Option<Span>,
    d: &mut Diags,
) -> Option<Rope> {
    s.check_keys(&["theta", "dims", "fraction", "pairing", "scaling"], d);
    let theta = s.positive_or("theta", 10_000.0, d);
    let has_dims = s.get("dims").is_some();
    let has_fraction = s.get("fraction").is_some();
    let dims_span = if has_dims {
        value_span(s, "dims")
    } else if has_fraction {
        value_span(s, "fraction")
    } else {
        s.table.span
    };
    let dims = if mla {
        if has_dims || has_fraction {
            d.push(
                Diagnostic::error(dims_span, "with `mla`, the rotary dims are `mla.rope_dim`")
                    .label("not allowed with `mla`")
                    .hint("remove it and set `rope_dim` in `mla`"),
            );
        }
        mla_rope
    } else if has_dims && has_fraction {
        d.push(
            Diagnostic::error(
                value_span(s, "fraction"),
                "give either `dims` or `fraction`, not both",
            )
            .label("second way to give the rotary dims")
            .secondary(value_span(s, "dims"), "`dims` given here"),
        );
        None
    } else if has_dims {
        s.size("dims", d)
    } else if has_fraction {
        let f = s.f64("fraction", d)?;
        if !(f > 0.0 && f <= 1.0) {
            d.push(
                Diagnostic::error(
                    dims_span,
                    format!("`fraction` must be in (0, 1], found {f}"),
                )
                .label("out of range"),
            );
            return None;
        }
        let hd = head_dim?;
        let x = f * hd as f64;
        if (x - x.round()).abs() > 1e-9 {
            d.push(
                Diagnostic::error(
                    dims_span,
                    format!("fraction {f} of head_dim {hd} is {x}, not a whole number of dims"),
                )
                .label("not a whole number of dims")
                .hint("give `dims` instead"),
            );
            return None;
        }
        Some(x.round() as u64)
    } else {
        head_dim
    };
    if let (Some(dims), Some(hd)) = (dims, head_dim) {
        let span = if defaulted { s.table.span } else { dims_span };
        if dims % 2 == 1 {
            d.push(
                Diagnostic::error(span, format!("rotary dims must be even, found {dims}"))
                    .label("odd")
                    .hint("rotary dimensions come in pairs"),
            );
        } else if dims > hd {
            d.push(
                Diagnostic::error(span, format!("rotary dims ({dims}) exceed head_dim ({hd})"))
                    .label("more than head_dim"),
            );
        }
    }
    let pairing = match s.word("pairing", &["half", "interleaved"], d) {
        Some((w, _)) if w == "interleaved" => Pairing::Interleaved,
        _ => Pairing::Half,
    };
    let scaling = scaling(s, scale_at, d)?;
    Some(Rope {
        theta,
        dims: dims?,
        pairing,
        scaling,
    })
}

fn scaling(s: &Sect, scale_at: Option<Span>, d: &mut Diags) -> Option<RopeScaling> {
    const KINDS: &[&str] = &["none", "linear", "llama3", "yarn"];
    let Some(node) = s.get("scaling") else {
        return Some(RopeScaling::None);
    };
    let empty;
    let (kind, body) = match &node.value {
        NodeValue::Leaf(v) => {
            let (w, _) = word_of(v, "scaling", KINDS, d)?;
            empty = Table::new(v.span);
            (w, &empty)
        }
        NodeValue::Tagged { tag, body, .. } if KINDS[1..].contains(&tag.name.as_str()) => {
            (tag.name.clone(), body)
        }
        NodeValue::Tagged { tag, .. } => {
            d.push(unknown_tag(tag, "scaling", KINDS));
            return None;
        }
        NodeValue::Table(t) => {
            d.push(
                Diagnostic::error(t.span, "`scaling` needs a kind")
                    .label("no kind given")
                    .hint("write `scaling = yarn { ... }` (or `linear`, `llama3`)"),
            );
            return None;
        }
    };
    let b = s.child(body, &format!("`{kind}`"));
    // Every required number of a scaling is a factor or frequency ratio: positive.
    let req_f64 = |key: &str, d: &mut Diags| -> Option<f64> {
        if b.get(key).is_none() {
            b.missing(key, d);
            return None;
        }
        let x = b.f64(key, d)?;
        if x <= 0.0 {
            d.push(
                Diagnostic::error(
                    value_span(&b, key),
                    format!("`{key}` must be positive, found {x}"),
                )
                .label("not positive"),
            );
            return None;
        }
        Some(x)
    };
    Some(match kind.as_str() {
        "none" => RopeScaling::None,
        "linear" => {
            b.check_keys(&["factor"], d);
            RopeScaling::Linear {
                factor: req_f64("factor", d)?,
            }
        }
        "llama3" => {
            b.check_keys(
                &[
                    "factor",
                    "low_freq_factor",
                    "high_freq_factor",
                    "original_context",
                ],
                d,
            );
            let factor = req_f64("factor", d);
            let low = req_f64("low_freq_factor", d);
            let high = req_f64("high_freq_factor", d);
            let orig = b.req_size("original_context", d);
            RopeScaling::Llama3 {
                factor: factor?,
                low_freq_factor: low?,
                high_freq_factor: high?,
                original_context: orig?,
            }
        }
        _ => {
            b.check_keys(
                &[
                    "factor",
                    "original_context",
                    "beta_fast",
                    "beta_slow",
                    "mscale",
                    "mscale_all_dim",
                    "attention_factor",
                    "truncate",
                ],
                d,
            );
            let factor = req_f64("factor", d);
            let orig = b.req_size("original_context", d);
            let yarn = RopeScaling::Yarn {
                factor: factor?,
                original_context: orig?,
                beta_fast: b.f64_or("beta_fast", 32.0, d),
                beta_slow: b.f64_or("beta_slow", 1.0, d),
                mscale: b.f64_or("mscale", 1.0, d),
                mscale_all_dim: b.f64_or("mscale_all_dim", 0.0, d),
                attention_factor: b.opt_f64("attention_factor", d),
                truncate: b.bool_or("truncate", true, d),
            };
            yarn_mscales(&b, &yarn, scale_at, d);
            yarn
        }
    })
}

/// YaRN's `mscale` sets the cos/sin factor only together with a non-zero
/// `mscale_all_dim` and without an explicit `attention_factor` (as in HF); `mscale_all_dim`
/// also scales the softmax, unless the attention gives `scale`. A given field that would
/// do nothing is refused.
fn yarn_mscales(b: &Sect, yarn: &RopeScaling, scale_at: Option<Span>, d: &mut Diags) {
    let RopeScaling::Yarn {
        mscale_all_dim,
        attention_factor,
        ..
    } = yarn
    else {
        return;
    };
    let factor_at = b
        .get("attention_factor")
        .map(|_| value_span(b, "attention_factor"));
    if b.get("mscale").is_some() {
        let diag = Diagnostic::error(
            value_span(b, "mscale"),
            "`mscale` sets the attention factor only with a non-zero `mscale_all_dim` and no `attention_factor`",
        )
        .label("would be ignored");
        match factor_at {
            Some(at) if attention_factor.is_some() => d.push(
                diag.secondary(at, "the attention factor is given here")
                    .hint("remove `mscale`"),
            ),
            _ if *mscale_all_dim == 0.0 => d.push(
                diag.hint("give `mscale_all_dim` too (DeepSeek's variant), or remove `mscale`"),
            ),
            _ => {}
        }
    }
    if let (Some(factor_at), Some(scale_at), Some(_)) =
        (factor_at, scale_at, b.get("mscale_all_dim"))
    {
        d.push(
            Diagnostic::error(
                value_span(b, "mscale_all_dim"),
                "`mscale_all_dim` does nothing when both `attention_factor` and the attention's `scale` are given",
            )
            .label("would be ignored")
            .secondary(factor_at, "the cos/sin factor is given here")
            .secondary(scale_at, "the softmax scale is given here")
            .hint("remove `mscale_all_dim`"),
        );
    }
}
