//! Side-by-side comparison of two architectures: the rows of `archc diff`.
//!
//! A diff is a pure function of two `Spec`s. Each spec is first described as a fixed list of
//! facts in the words of an architecture comparison ("GQA 32:8", "YaRN ×40 from 4,096",
//! "sigmoid, selection bias, renormalised, ×2.5"); facts that vary by layer are summarised
//! with the selectors of the schedule language ("none on every 6 from 5, else 1,024"). The
//! diff keeps the rows whose two descriptions differ, in the fixed order of the description,
//! so the output is deterministic. Parameter counts come from `stats`.

use crate::spec::{
    Activation, Attention, AttnBias, Block, Ffn, Mixer, Moe, Norm, NormKind, Pairing, Placement,
    QkNorm, RopeScaling, RouterScore, Spec,
};
use crate::stats;
use std::fmt::Write as _;

/// Parameter counts of a model, as the diff shows them (filled in from `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: u64,
    pub active: u64,
}

/// One row of the comparison: a fact and its value on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The section the fact belongs to (`model`, `attention`, `feed-forward`, ...).
    pub section: &'static str,
    pub label: &'static str,
    pub left: String,
    pub right: String,
}

impl Row {
    pub fn differs(&self) -> bool {
        self.left != self.right
    }
}

/// Every row of the comparison of `a` and `b`, equal or not, in display order.
/// `params` carries the parameter counts of each side when the caller has them.
pub fn rows(a: &Spec, b: &Spec, params: [Option<ParamCounts>; 2]) -> Vec<Row> {
    let left = describe(a, params[0]);
    let right = describe(b, params[1]);
    // Both descriptions list the same facts in the same order, so they zip.
    left.into_iter()
        .zip(right)
        .map(|(l, r)| Row {
            section: l.section,
            label: l.label,
            left: l.value,
            right: r.value,
        })
        .collect()
}

/// The rows that differ between `a` and `b` (all rows when `all` is set).
pub fn diff(a: &Spec, b: &Spec, params: [Option<ParamCounts>; 2], all: bool) -> Vec<Row> {
    rows(a, b, params)
        .into_iter()
        .filter(|r| all || r.differs())
        .collect()
}

/// The parameter counts `archc diff` shows, from [`stats`](crate::stats).
pub fn params(spec: &Spec) -> ParamCounts {
    let s = stats::stats(spec, stats::Options::for_spec(spec));
    ParamCounts {
        total: s.params_total,
        active: s.params_active,
    }
}

/// The whole `archc diff` report of two models: the differing rows (all rows when `all` is
/// set), parameter counts included, rendered under the two model names.
pub fn report(a: &Spec, b: &Spec, all: bool) -> String {
    let rows = diff(a, b, [Some(params(a)), Some(params(b))], all);
    render(&a.name, &b.name, &rows)
}

/// Render rows as an aligned table headed by the two model names. Sections are separated by a
/// blank line; an empty diff says so instead of printing an empty table.
pub fn render(left_name: &str, right_name: &str, rows: &[Row]) -> String {
    if rows.is_empty() {
        return format!("{left_name} and {right_name} describe the same architecture\n");
    }
    let label_w = rows
        .iter()
        .map(|r| r.label.chars().count())
        .chain([0])
        .max()
        .unwrap_or(0);
    let left_w = rows
        .iter()
        .map(|r| r.left.chars().count())
        .chain([left_name.chars().count()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let line = |out: &mut String, label: &str, left: &str, right: &str| {
        let text = format!("{label:<label_w$}  {left:<left_w$}  {right}");
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, "", left_name, right_name);
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = r.section;
            let _ = writeln!(out, "\n[{section}]");
        }
        line(&mut out, r.label, &r.left, &r.right);
    }
    out
}

/// One fact about one model.
pub(crate) struct Fact {
    pub(crate) section: &'static str,
    pub(crate) label: &'static str,
    pub(crate) value: String,
}

/// The fixed list of facts about a model. Both sides of a diff produce the same labels in
/// the same order; a fact that does not apply reads "—" (or "none").
pub(crate) fn describe(spec: &Spec, params: Option<ParamCounts>) -> Vec<Fact> {
    let mut facts = Vec::new();
    let mut push = |section: &'static str, label: &'static str, value: String| {
        facts.push(Fact {
            section,
            label,
            value,
        })
    };
    let per_layer = |f: &dyn Fn(&Block) -> String| per_layer(spec, f);
    let attn = |f: &dyn Fn(&Attention) -> String| {
        per_layer(&|b: &Block| match &b.mixer {
            Mixer::Attention(a) => f(a),
            _ => DASH.to_string(),
        })
    };
    let moe = |f: &dyn Fn(&Moe) -> String| {
        per_layer(&|b: &Block| match &b.ffn {
            Ffn::Moe(m) => f(m),
            Ffn::Mlp(_) => DASH.to_string(),
        })
    };

    const M: &str = "model";
    push(M, "family", spec.family.as_str().to_string());
    push(M, "vocab", group(spec.vocab));
    push(M, "hidden", group(spec.hidden));
    push(M, "layers", spec.layers.to_string());
    push(M, "context", group(spec.context));
    push(M, "dtype", spec.dtype.as_str().to_string());
    push(M, "tied embeddings", yes_no(spec.tied));
    push(
        M,
        "embedding scale",
        opt(spec.embed_scale.map(|x| root(x, 1.0))),
    );
    push(
        M,
        "learned positions",
        opt(spec.learned_positions.map(group)),
    );
    push(
        M,
        "token types",
        opt(spec.token_types.map(|n| n.to_string())),
    );
    push(M, "embedding norm", opt(spec.embed_norm.as_ref().map(norm)));
    push(M, "final norm", opt(spec.final_norm.as_ref().map(norm)));
    push(M, "logit softcap", opt(spec.logit_softcap.map(num)));
    push(M, "MTP layers (not run)", spec.mtp.to_string());

    const L: &str = "layers";
    push(L, "schedule", per_layer(&|b: &Block| b.name.clone()));
    push(L, "mixer", per_layer(&|b: &Block| mixer(&b.mixer)));
    push(L, "norm", per_layer(&|b: &Block| norm(&b.norm)));
    push(
        L,
        "placement",
        per_layer(&|b: &Block| placement(b.placement)),
    );

    const A: &str = "attention";
    push(A, "kind", attn(&attention_kind));
    push(A, "head dim", attn(&head_dim));
    push(A, "bias", attn(&|a: &Attention| bias(a.bias)));
    push(A, "QK-norm", attn(&|a: &Attention| qk_norm(&a.qk_norm)));
    push(A, "causal", attn(&|a: &Attention| yes_no(a.causal)));
    push(
        A,
        "RoPE",
        attn(&|a: &Attention| match &a.rope {
            Some(r) => format!("θ {}", num(r.theta)),
            // Without learned positions a layer without RoPE has no positions at all.
            None if spec.learned_positions.is_some() => "none".to_string(),
            None => "none (NoPE)".to_string(),
        }),
    );
    push(
        A,
        "RoPE dims",
        attn(&|a: &Attention| match &a.rope {
            Some(r) if r.dims < a.head_dim => format!("{} of {} (partial)", r.dims, a.head_dim),
            Some(r) => format!("{} (all)", r.dims),
            None => DASH.to_string(),
        }),
    );
    push(
        A,
        "RoPE pairing",
        attn(&|a: &Attention| match &a.rope {
            Some(r) => match r.pairing {
                Pairing::Half => "half (rotate_half)".to_string(),
                Pairing::Interleaved => "interleaved".to_string(),
            },
            None => DASH.to_string(),
        }),
    );
    push(
        A,
        "RoPE scaling",
        attn(&|a: &Attention| match &a.rope {
            Some(r) => rope_scaling(&r.scaling),
            None => DASH.to_string(),
        }),
    );
    push(A, "window", attn(&|a: &Attention| opt(a.window.map(group))));
    push(A, "chunk", attn(&|a: &Attention| opt(a.chunk.map(group))));
    push(A, "sinks", attn(&|a: &Attention| yes_no(a.sinks)));
    push(A, "softcap", attn(&|a: &Attention| opt(a.softcap.map(num))));
    push(
        A,
        "scale",
        attn(&|a: &Attention| match a.scale {
            Some(s) => root(s, -1.0),
            None => "1/sqrt(head dim)".to_string(),
        }),
    );
    push(A, "output gate", attn(&|a: &Attention| yes_no(a.gate)));
    push(
        A,
        "temperature",
        attn(&|a: &Attention| match &a.temperature {
            Some(t) => format!("floor {}, scale {}", num(t.floor_scale), num(t.attn_scale)),
            None => "none".to_string(),
        }),
    );

    const F: &str = "feed-forward";
    push(
        F,
        "kind",
        per_layer(&|b: &Block| match &b.ffn {
            Ffn::Mlp(_) => "dense".to_string(),
            Ffn::Moe(_) => "MoE".to_string(),
        }),
    );
    push(
        F,
        "dense hidden",
        per_layer(&|b: &Block| match &b.ffn {
            Ffn::Mlp(m) => group(m.hidden),
            Ffn::Moe(_) => DASH.to_string(),
        }),
    );
    push(
        F,
        "activation",
        per_layer(&|b: &Block| match &b.ffn {
            Ffn::Mlp(m) => activation(m.act, m.gated),
            Ffn::Moe(m) => activation(m.act, m.gated),
        }),
    );
    push(
        F,
        "bias",
        per_layer(&|b: &Block| match &b.ffn {
            Ffn::Mlp(m) => yes_no(m.bias),
            Ffn::Moe(m) => yes_no(m.bias),
        }),
    );
    push(F, "experts", moe(&|m: &Moe| m.experts.to_string()));
    push(F, "top-k", moe(&|m: &Moe| m.top_k.to_string()));
    push(F, "expert hidden", moe(&|m: &Moe| group(m.hidden)));
    push(
        F,
        "shared experts",
        moe(&|m: &Moe| match &m.shared {
            Some(s) => {
                let gate = if s.gate { ", gated" } else { "" };
                format!("{} × {}{gate}", s.count, group(s.hidden))
            }
            None => "none".to_string(),
        }),
    );
    push(F, "router", moe(&router));

    const P: &str = "parameters";
    push(P, "total", opt(params.map(|p| billions(p.total))));
    push(P, "active", opt(params.map(|p| billions(p.active))));
    facts
}

/// What a fact that does not apply to a layer reads as.
const DASH: &str = "—";

/// Summarise a per-layer fact. One value for every layer it applies to prints as itself;
/// otherwise each value but the most common is named with the layers it holds on, and the
/// most common one follows `else`: `none on every 6 from 5, else 1024`.
fn per_layer(spec: &Spec, f: &dyn Fn(&Block) -> String) -> String {
    let values: Vec<String> = spec.blocks.iter().map(f).collect();
    // Group layers by value, in order of first appearance.
    let mut groups: Vec<(String, Vec<u64>)> = Vec::new();
    for (layer, &block) in spec.schedule.iter().enumerate() {
        let Some(value) = values.get(block) else {
            continue;
        };
        // Layers a fact does not apply to are left out; the mixer and feed-forward rows say
        // which layers those are.
        if value == DASH {
            continue;
        }
        match groups.iter_mut().find(|(v, _)| v == value) {
            Some((_, layers)) => layers.push(layer as u64),
            None => groups.push((value.clone(), vec![layer as u64])),
        }
    }
    match groups.len() {
        0 => DASH.to_string(),
        1 => groups.remove(0).0,
        _ => {
            // The most common value (the first one on a tie) becomes the `else`.
            let mut most = 0;
            for (i, (_, layers)) in groups.iter().enumerate() {
                if layers.len() > groups[most].1.len() {
                    most = i;
                }
            }
            let (rest, _) = groups.remove(most);
            let mut parts: Vec<String> = groups
                .iter()
                .map(|(v, layers)| format!("{v} on {}", selector(layers, spec.layers)))
                .collect();
            parts.push(format!("else {rest}"));
            parts.join(", ")
        }
    }
}

/// A set of layers (sorted, non-empty) in the words of the schedule language.
pub(crate) fn selector(layers: &[u64], total: u64) -> String {
    let (first, last) = (layers[0], layers[layers.len() - 1]);
    let contiguous = last - first + 1 == layers.len() as u64;
    if contiguous {
        return match (first, last + 1 == total) {
            (0, _) => format!("first {}", layers.len()),
            (_, true) => format!("last {}", layers.len()),
            _ => format!("layers {first}..{}", last + 1),
        };
    }
    // An arithmetic progression that runs to the end of the model is `every N from K`.
    let step = layers[1] - first;
    let progression = layers.windows(2).all(|w| w[1] - w[0] == step);
    if progression && last + step >= total && first < step {
        return if first == 0 {
            format!("every {step}")
        } else {
            format!("every {step} from {first}")
        };
    }
    let list: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    format!("layers [{}]", list.join(", "))
}

fn mixer(m: &Mixer) -> String {
    match m {
        Mixer::Attention(a) if a.mla.is_some() => "attention (MLA)".to_string(),
        Mixer::Attention(_) => "attention".to_string(),
        Mixer::GatedDeltaNet(g) => format!(
            "Gated DeltaNet (k {}×{}, v {}×{}, conv {})",
            g.k_heads, g.k_head_dim, g.v_heads, g.v_head_dim, g.conv
        ),
        Mixer::KimiDelta(k) => format!("Kimi Delta ({}×{}, conv {})", k.heads, k.head_dim, k.conv),
        Mixer::ShortConv(c) => format!(
            "gated short conv (conv {}{})",
            c.conv,
            if c.bias { ", biases" } else { "" }
        ),
    }
}

fn attention_kind(a: &Attention) -> String {
    if let Some(m) = &a.mla {
        let q = match m.q_rank {
            Some(r) => format!("q_rank {r}"),
            None => "no q_rank".to_string(),
        };
        return format!("MLA {} heads, {q}, kv_rank {}", a.heads, m.kv_rank);
    }
    if a.kv_heads == a.heads {
        format!("MHA {}", a.heads)
    } else if a.kv_heads == 1 {
        format!("MQA {}:1", a.heads)
    } else {
        format!("GQA {}:{}", a.heads, a.kv_heads)
    }
}

fn head_dim(a: &Attention) -> String {
    if let Some(m) = &a.mla {
        return format!(
            "{} ({} nope + {} rope), v {}",
            a.head_dim, m.nope_dim, m.rope_dim, a.v_head_dim
        );
    }
    if a.v_head_dim != a.head_dim {
        return format!("{}, v {}", a.head_dim, a.v_head_dim);
    }
    a.head_dim.to_string()
}

fn bias(b: AttnBias) -> String {
    let names: Vec<&str> = [(b.q, "q"), (b.k, "k"), (b.v, "v"), (b.o, "o")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n)
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn qk_norm(q: &QkNorm) -> String {
    match q {
        QkNorm::None => "none".to_string(),
        QkNorm::PerHead(n) => format!("per head, {}", norm(n)),
        QkNorm::Full(n) => format!("full projection, {}", norm(n)),
        QkNorm::L2 { eps } => format!("L2, ε {eps:e}"),
    }
}

pub(crate) fn norm(n: &Norm) -> String {
    match n.kind {
        NormKind::RmsNorm => {
            let plus = if n.plus_one { ", (1 + w)" } else { "" };
            format!("RMSNorm ε {:e}{plus}", n.eps)
        }
        NormKind::LayerNorm => {
            let bias = if n.bias { "" } else { ", no bias" };
            format!("LayerNorm ε {:e}{bias}", n.eps)
        }
    }
}

fn placement(p: Placement) -> String {
    match p {
        Placement::Pre => "pre-norm",
        Placement::Post => "post-norm in residual",
        Placement::Sandwich => "sandwich",
        Placement::PostLn => "post-LN",
    }
    .to_string()
}

pub(crate) fn rope_scaling(s: &RopeScaling) -> String {
    match s {
        RopeScaling::None => "none".to_string(),
        RopeScaling::Linear { factor } => format!("linear ×{}", num(*factor)),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => format!(
            "llama3 ×{} from {}, freq factors {}/{}",
            num(*factor),
            group(*original_context),
            num(*low_freq_factor),
            num(*high_freq_factor)
        ),
        RopeScaling::Yarn {
            factor,
            original_context,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate,
        } => {
            let mut s = format!(
                "YaRN ×{} from {}, β {}/{}",
                num(*factor),
                group(*original_context),
                num(*beta_fast),
                num(*beta_slow)
            );
            if *mscale != 1.0 || *mscale_all_dim != 0.0 {
                let _ = write!(s, ", mscale {}/{}", num(*mscale), num(*mscale_all_dim));
            }
            if let Some(f) = attention_factor {
                let _ = write!(s, ", attention factor {}", num(*f));
            }
            if !truncate {
                s.push_str(", no truncation");
            }
            s
        }
    }
}

pub(crate) fn activation(act: Activation, gated: bool) -> String {
    match (act, gated) {
        (Activation::ClampedSwiglu { alpha, limit }, _) => {
            format!("clamped SwiGLU (α {}, limit {})", num(alpha), num(limit))
        }
        (Activation::Silu, true) => "SwiGLU".to_string(),
        (Activation::Gelu, true) => "GeGLU".to_string(),
        (Activation::GeluTanh, true) => "GeGLU (tanh)".to_string(),
        (Activation::Relu, true) => "ReGLU".to_string(),
        (Activation::Silu, false) => "SiLU".to_string(),
        (Activation::Gelu, false) => "GELU".to_string(),
        (Activation::GeluTanh, false) => "GELU (tanh)".to_string(),
        (Activation::Relu, false) => "ReLU".to_string(),
    }
}

pub(crate) fn router(m: &Moe) -> String {
    let r = &m.router;
    let mut parts = vec![match r.score {
        RouterScore::Softmax => "softmax",
        RouterScore::Sigmoid => "sigmoid",
    }
    .to_string()];
    if r.topk_first {
        parts.push("top-k first".to_string());
    }
    if r.correction_bias {
        parts.push("selection bias".to_string());
    }
    if let Some(g) = r.groups {
        parts.push(format!("groups {} of {}", g.keep, g.count));
    }
    if r.renormalize {
        parts.push("renormalised".to_string());
    }
    if r.scale != 1.0 {
        parts.push(format!("×{}", num(r.scale)));
    }
    if r.bias {
        parts.push("bias".to_string());
    }
    if r.weight_input {
        parts.push("weights the input".to_string());
    }
    parts.join(", ")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "none".to_string())
}

/// An integer with thousands separators: `128,256`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A parameter count in billions (millions below one billion), with the exact count.
fn billions(n: u64) -> String {
    format!("{} ({})", short_count(n), group(n))
}

/// A count in short form: `671.03B`, `1.20T`, `135.0M`, `12.3K`.
pub(crate) fn short_count(n: u64) -> String {
    if n >= 1_000_000_000_000 {
        format!("{:.2}T", n as f64 / 1e12)
    } else if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else {
        format!("{:.1}K", n as f64 / 1e3)
    }
}

/// A factor that is often a square root (`sqrt(hidden)`, `1/sqrt(168)`) reads as one when
/// `x^(2 * power)` is a whole number: `sqrt(5376) ≈ 73.3212`, `1/sqrt(168) ≈ 0.077152`.
fn root(x: f64, power: f64) -> String {
    let square = x.powf(2.0 * power);
    let whole = square.round();
    if x.fract() != 0.0 && whole >= 2.0 && (square - whole).abs() < 1e-6 * whole {
        let inv = if power < 0.0 { "1/" } else { "" };
        format!("{inv}sqrt({}) ≈ {}", whole as u64, sig(x))
    } else {
        sig(x)
    }
}

/// Six significant digits, trailing zeros dropped.
pub(crate) fn sig(x: f64) -> String {
    if x.fract() == 0.0 {
        return num(x);
    }
    let digits = (5 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A float as short as it reads exactly: `500000`, `0.1`, `1.702`.
pub(crate) fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_use_schedule_words() {
        assert_eq!(selector(&[0, 1, 2], 61), "first 3");
        assert_eq!(selector(&[59, 60], 61), "last 2");
        assert_eq!(selector(&[4, 5], 61), "layers 4..6");
        assert_eq!(
            selector(&[5, 11, 17, 23, 29, 35, 41, 47, 53, 59], 62),
            "every 6 from 5"
        );
        assert_eq!(selector(&[0, 2, 4], 6), "every 2");
        assert_eq!(selector(&[2, 5], 6), "every 3 from 2");
        assert_eq!(selector(&[2, 5], 9), "layers [2, 5]");
        assert_eq!(
            selector(&[3, 7, 11, 15, 19, 23, 26], 27),
            "layers [3, 7, 11, 15, 19, 23, 26]"
        );
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(group(128_256), "128,256");
        assert_eq!(group(999), "999");
        assert_eq!(num(500_000.0), "500000");
        assert_eq!(num(1.702), "1.702");
        assert_eq!(billions(8_030_261_248), "8.03B (8,030,261,248)");
        assert_eq!(billions(124_439_808), "124.4M (124,439,808)");
        assert_eq!(billions(1_026_408_209_408), "1.03T (1,026,408,209,408)");
        assert_eq!(root(5376f64.sqrt(), 1.0), "sqrt(5376) ≈ 73.3212");
        assert_eq!(root(168f64.powf(-0.5), -1.0), "1/sqrt(168) ≈ 0.0771517");
        assert_eq!(root(0.125, -1.0), "1/sqrt(64) ≈ 0.125");
        assert_eq!(root(2.0, 1.0), "2");
    }
}
