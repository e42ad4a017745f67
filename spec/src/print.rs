//! `Spec` to `.arch` text (used by `archc import`): fields equal to their defaults are
//! left out, the model-level `norm` carries the common norm, a block that differs from
//! an earlier one in a few fields is written as `block NAME : PARENT` with overrides,
//! and the schedule is the shorter of a `repeat` pattern and named rules.
//!
//! **Invariant:** `check_source(to_arch(s)) == Ok(s)` for every valid `Spec` whose
//! blocks are all scheduled. Each inherited block is verified by re-parsing; when the
//! check fails the block is written out in full.

use crate::spec::*;
use crate::validate::check_source;

/// Prints a `Spec` as a canonical `.arch` file.
pub fn to_arch(spec: &Spec) -> String {
    let model_norm = model_norm(spec);
    let model = model_text(spec, model_norm, spec.layers);
    let trees: Vec<Vec<E>> = spec
        .blocks
        .iter()
        .map(|b| block_tree(b, spec.hidden, model_norm))
        .collect();
    let single = spec.blocks.len() == 1;
    let mut texts: Vec<String> = Vec::new();
    for (i, b) in spec.blocks.iter().enumerate() {
        let header = if single && b.name == "default" {
            "block".to_string()
        } else {
            format!("block {}", b.name)
        };
        let full = format!("{header} {}", body(&printed(&trees[i]), 1));
        let mut best = full.clone();
        for (j, parent) in spec.blocks.iter().enumerate().take(i) {
            let over = diff(&trees[j], &trees[i]);
            let text = format!("block {} : {} {}", b.name, parent.name, body(&over, 1));
            if text.len() < best.len() && verify(spec, model_norm, &texts, &text, i) {
                best = text;
            }
        }
        texts.push(best);
    }
    let mut out = model;
    for t in &texts {
        out.push('\n');
        out.push_str(t);
        out.push('\n');
    }
    if !single {
        out.push('\n');
        out.push_str(&schedule_text(spec));
    }
    out
}

/// The norm most blocks use (ties: the final norm), so block norms can be left out.
fn model_norm(spec: &Spec) -> Norm {
    let mut candidates: Vec<Norm> = spec.blocks.iter().map(|b| b.norm).collect();
    candidates.extend(spec.final_norm);
    let count = |n: &Norm| candidates.iter().filter(|m| *m == n).count();
    let mut best = spec.final_norm.or(spec.blocks.first().map(|b| b.norm));
    for c in &candidates {
        if best.is_none_or(|b| count(c) > count(&b)) {
            best = Some(*c);
        }
    }
    best.unwrap_or(crate::validate::DEFAULT_NORM)
}

/// Whether block `i` written as `text` (after `earlier`) reads back as `spec.blocks[i]`.
fn verify(spec: &Spec, norm: Norm, earlier: &[String], text: &str, i: usize) -> bool {
    let mut src = model_text(spec, norm, (i + 1) as u64);
    for t in earlier.iter().chain(std::iter::once(&text.to_string())) {
        src.push('\n');
        src.push_str(t);
        src.push('\n');
    }
    let names: Vec<&str> = spec.blocks[..=i].iter().map(|b| b.name.as_str()).collect();
    src.push_str(&format!(
        "\nschedule {{\n  repeat [{}]\n}}\n",
        names.join(", ")
    ));
    match check_source("", &src) {
        Ok(s) => s.blocks.get(i) == Some(&spec.blocks[i]),
        Err(_) => false,
    }
}

// ---- Numbers --------------------------------------------------------------------

/// An integer with `_` grouping from five digits on (`151_936`, `4096`).
pub fn int(n: u64) -> String {
    let s = n.to_string();
    if s.len() < 5 {
        return s;
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// A float that parses back to exactly the same value.
pub fn num(x: f64) -> String {
    if x < 0.0 {
        return format!("-{}", num(-x));
    }
    if x.fract() == 0.0 && x < 1e15 {
        return int(x as u64);
    }
    if x != 0.0 && x < 1e-3 {
        return format!("{x:e}");
    }
    format!("{x}")
}

// ---- Block trees ----------------------------------------------------------------

/// One field of a block in full: its printed value and whether it equals the default
/// (and may be left out).
#[derive(Debug, Clone, PartialEq)]
struct E {
    key: &'static str,
    val: V,
    default: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Leaf(String),
    Sect(Vec<E>),
}

fn leaf(key: &'static str, text: String, default: bool) -> E {
    E {
        key,
        val: V::Leaf(text),
        default,
    }
}

fn sect(key: &'static str, children: Vec<E>, default: bool) -> E {
    E {
        key,
        val: V::Sect(children),
        default,
    }
}

fn norm_text(n: Norm) -> String {
    let word = crate::validate::norm_word(n.kind);
    let mut fields = Vec::new();
    if n.eps != 1e-5 {
        fields.push(format!("eps = {}", num(n.eps)));
    }
    if n.kind == NormKind::LayerNorm && !n.bias {
        fields.push("bias = false".to_string());
    }
    if n.plus_one {
        fields.push("plus_one = true".to_string());
    }
    if fields.is_empty() {
        word.to_string()
    } else {
        format!("{word} {{ {} }}", fields.join(", "))
    }
}

fn qk_text(q: &QkNorm, model: Norm) -> String {
    let (word, n) = match q {
        QkNorm::None => return "none".to_string(),
        QkNorm::L2 { eps } => {
            return if *eps == model.eps {
                "l2".to_string()
            } else {
                format!("l2 {{ eps = {} }}", num(*eps))
            }
        }
        QkNorm::PerHead(n) => ("per_head", *n),
        QkNorm::Full(n) => ("full", *n),
    };
    let base = if n.kind == model.kind {
        model
    } else {
        Norm {
            kind: n.kind,
            eps: model.eps,
            bias: n.kind == NormKind::LayerNorm,
            plus_one: false,
        }
    };
    let mut fields = Vec::new();
    if n.kind != model.kind {
        fields.push(format!("kind = {}", crate::validate::norm_word(n.kind)));
    }
    if n.eps != base.eps {
        fields.push(format!("eps = {}", num(n.eps)));
    }
    if n.bias != base.bias {
        fields.push(format!("bias = {}", n.bias));
    }
    if n.plus_one != base.plus_one {
        fields.push(format!("plus_one = {}", n.plus_one));
    }
    if fields.is_empty() {
        word.to_string()
    } else {
        format!("{word} {{ {} }}", fields.join(", "))
    }
}

fn act_text(a: Activation) -> String {
    match a {
        Activation::Gelu => "gelu".into(),
        Activation::GeluTanh => "gelu_tanh".into(),
        Activation::Relu => "relu".into(),
        Activation::Silu => "silu".into(),
        Activation::ClampedSwiglu { alpha, limit } => {
            let mut fields = Vec::new();
            if alpha != 1.702 {
                fields.push(format!("alpha = {}", num(alpha)));
            }
            if limit != 7.0 {
                fields.push(format!("limit = {}", num(limit)));
            }
            if fields.is_empty() {
                "clamped_swiglu".into()
            } else {
                format!("clamped_swiglu {{ {} }}", fields.join(", "))
            }
        }
    }
}

fn scaling_text(s: &RopeScaling) -> String {
    match s {
        RopeScaling::None => "none".into(),
        RopeScaling::Linear { factor } => format!("linear {{ factor = {} }}", num(*factor)),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => format!(
            "llama3 {{ factor = {}, low_freq_factor = {}, high_freq_factor = {}, original_context = {} }}",
            num(*factor),
            num(*low_freq_factor),
            num(*high_freq_factor),
            int(*original_context)
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
            let mut f = vec![
                format!("factor = {}", num(*factor)),
                format!("original_context = {}", int(*original_context)),
            ];
            for (k, v, d) in [
                ("beta_fast", *beta_fast, 32.0),
                ("beta_slow", *beta_slow, 1.0),
                ("mscale", *mscale, 1.0),
                ("mscale_all_dim", *mscale_all_dim, 0.0),
            ] {
                if v != d {
                    f.push(format!("{k} = {}", num(v)));
                }
            }
            if let Some(a) = attention_factor {
                f.push(format!("attention_factor = {}", num(*a)));
            }
            if !truncate {
                f.push("truncate = false".into());
            }
            format!("yarn {{ {} }}", f.join(", "))
        }
    }
}

fn block_tree(b: &Block, hidden: u64, model_norm: Norm) -> Vec<E> {
    let mut t = vec![
        leaf("norm", norm_text(b.norm), b.norm == model_norm),
        leaf(
            "placement",
            match b.placement {
                Placement::Pre => "pre",
                Placement::Post => "post",
                Placement::Sandwich => "sandwich",
                Placement::PostLn => "post_ln",
            }
            .into(),
            b.placement == Placement::Pre,
        ),
    ];
    t.push(match &b.mixer {
        Mixer::Attention(a) => sect("attention", attention_tree(a, hidden, model_norm), false),
        Mixer::GatedDeltaNet(g) => sect(
            "gated_deltanet",
            vec![
                leaf("k_heads", int(g.k_heads), false),
                leaf("v_heads", int(g.v_heads), false),
                leaf("k_head_dim", int(g.k_head_dim), false),
                leaf("v_head_dim", int(g.v_head_dim), false),
                leaf("conv", int(g.conv), g.conv == 4),
            ],
            false,
        ),
        Mixer::KimiDelta(k) => sect(
            "kimi_delta",
            vec![
                leaf("heads", int(k.heads), false),
                leaf("head_dim", int(k.head_dim), false),
                leaf("conv", int(k.conv), k.conv == 4),
            ],
            false,
        ),
        Mixer::ShortConv(c) => sect(
            "short_conv",
            vec![
                leaf("conv", int(c.conv), c.conv == 3),
                leaf("bias", c.bias.to_string(), !c.bias),
            ],
            false,
        ),
    });
    t.push(match &b.ffn {
        Ffn::Mlp(m) => sect(
            "mlp",
            vec![
                leaf("hidden", int(m.hidden), false),
                leaf("act", act_text(m.act), m.act == Activation::Silu),
                leaf("gated", m.gated.to_string(), m.gated),
                leaf("bias", m.bias.to_string(), !m.bias),
            ],
            false,
        ),
        Ffn::Moe(m) => sect("moe", moe_tree(m), false),
    });
    t
}

fn attention_tree(a: &Attention, hidden: u64, model_norm: Norm) -> Vec<E> {
    let mut t = vec![leaf("heads", int(a.heads), false)];
    match &a.mla {
        Some(m) => {
            let mut f = Vec::new();
            if let Some(q) = m.q_rank {
                f.push(leaf("q_rank", int(q), false));
            }
            f.push(leaf("kv_rank", int(m.kv_rank), false));
            f.push(leaf("nope_dim", int(m.nope_dim), false));
            f.push(leaf("rope_dim", int(m.rope_dim), false));
            f.push(leaf("v_dim", int(m.v_dim), false));
            t.push(sect("mla", f, false));
        }
        None => {
            t.push(leaf("kv_heads", int(a.kv_heads), a.kv_heads == a.heads));
            let default_hd = hidden % a.heads == 0 && hidden / a.heads == a.head_dim;
            t.push(leaf("head_dim", int(a.head_dim), default_hd));
            t.push(leaf("mla", "none".into(), true));
        }
    }
    let b = a.bias;
    let bias = if b.q && b.k && b.v && b.o {
        "true".to_string()
    } else if !(b.q || b.k || b.v || b.o) {
        "false".to_string()
    } else {
        let list: Vec<&str> = [(b.q, "q"), (b.k, "k"), (b.v, "v"), (b.o, "o")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        format!("[{}]", list.join(", "))
    };
    t.push(leaf("bias", bias, b == AttnBias::default()));
    t.push(leaf(
        "qk_norm",
        qk_text(&a.qk_norm, model_norm),
        a.qk_norm == QkNorm::None,
    ));
    t.push(leaf("causal", a.causal.to_string(), a.causal));
    let opt_int = |x: Option<u64>| x.map_or("none".to_string(), int);
    let opt_num = |x: Option<f64>| x.map_or("none".to_string(), num);
    t.push(leaf("window", opt_int(a.window), a.window.is_none()));
    t.push(leaf("chunk", opt_int(a.chunk), a.chunk.is_none()));
    t.push(leaf("sinks", a.sinks.to_string(), !a.sinks));
    t.push(leaf("softcap", opt_num(a.softcap), a.softcap.is_none()));
    t.push(leaf("scale", opt_num(a.scale), a.scale.is_none()));
    t.push(leaf("gate", a.gate.to_string(), !a.gate));
    t.push(match a.temperature {
        Some(temp) => sect(
            "temperature",
            vec![
                leaf("floor_scale", num(temp.floor_scale), false),
                leaf("attn_scale", num(temp.attn_scale), false),
            ],
            false,
        ),
        None => leaf("temperature", "none".into(), true),
    });
    t.push(match &a.rope {
        None => leaf("rope", "none".into(), false),
        Some(r) => {
            let mut f = vec![leaf("theta", num(r.theta), r.theta == 10_000.0)];
            if a.mla.is_none() {
                f.push(leaf("dims", int(r.dims), r.dims == a.head_dim));
            }
            f.push(leaf(
                "pairing",
                match r.pairing {
                    Pairing::Half => "half",
                    Pairing::Interleaved => "interleaved",
                }
                .into(),
                r.pairing == Pairing::Half,
            ));
            f.push(leaf(
                "scaling",
                scaling_text(&r.scaling),
                r.scaling == RopeScaling::None,
            ));
            let all_default = f.iter().all(|e| e.default);
            sect("rope", f, all_default)
        }
    });
    t
}

fn moe_tree(m: &Moe) -> Vec<E> {
    let mut t = vec![
        leaf("experts", int(m.experts), false),
        leaf("top_k", int(m.top_k), false),
        leaf("hidden", int(m.hidden), false),
        leaf("act", act_text(m.act), m.act == Activation::Silu),
        leaf("gated", m.gated.to_string(), m.gated),
        leaf("bias", m.bias.to_string(), !m.bias),
    ];
    t.push(match m.shared {
        Some(s) => sect(
            "shared",
            vec![
                leaf("count", int(s.count), s.count == 1),
                leaf("hidden", int(s.hidden), false),
                leaf("gate", s.gate.to_string(), !s.gate),
            ],
            false,
        ),
        None => leaf("shared", "none".into(), true),
    });
    let r = m.router;
    let mut f = vec![
        leaf(
            "score",
            match r.score {
                RouterScore::Softmax => "softmax",
                RouterScore::Sigmoid => "sigmoid",
            }
            .into(),
            r.score == RouterScore::Softmax,
        ),
        leaf("topk_first", r.topk_first.to_string(), !r.topk_first),
        leaf("renormalize", r.renormalize.to_string(), !r.renormalize),
        leaf("scale", num(r.scale), r.scale == 1.0),
        leaf(
            "correction_bias",
            r.correction_bias.to_string(),
            !r.correction_bias,
        ),
    ];
    f.push(match r.groups {
        Some(g) => sect(
            "groups",
            vec![
                leaf("count", int(g.count), false),
                leaf("keep", int(g.keep), false),
            ],
            false,
        ),
        None => leaf("groups", "none".into(), true),
    });
    f.push(leaf("bias", r.bias.to_string(), !r.bias));
    f.push(leaf(
        "weight_input",
        r.weight_input.to_string(),
        !r.weight_input,
    ));
    let all_default = f.iter().all(|e| e.default);
    t.push(sect("router", f, all_default));
    t
}

/// The entries a full block prints: every non-default field.
fn printed(tree: &[E]) -> Vec<E> {
    tree.iter()
        .filter(|e| !e.default)
        .map(|e| match &e.val {
            V::Sect(c) => sect(e.key, printed(c), false),
            V::Leaf(_) => e.clone(),
        })
        .collect()
}

/// The overrides that turn the parent's printed table into the child: fields whose
/// inherited value would differ, and fields the child sets while the parent left them
/// to a default that depends on other fields.
fn diff(parent: &[E], child: &[E]) -> Vec<E> {
    let mut out = Vec::new();
    for c in child {
        let Some(p) = parent.iter().find(|p| p.key == c.key) else {
            if !c.default {
                out.push(match &c.val {
                    V::Sect(ch) => sect(c.key, printed(ch), false),
                    V::Leaf(_) => c.clone(),
                });
            }
            continue;
        };
        match (&p.val, &c.val) {
            (V::Sect(pc), V::Sect(cc)) => {
                let sub = diff(pc, cc);
                if !sub.is_empty() {
                    out.push(sect(c.key, sub, false));
                }
            }
            (_, V::Sect(cc)) => {
                if p.val != c.val || (p.default && !c.default) {
                    out.push(sect(c.key, printed(cc), false));
                }
            }
            _ => {
                let include = if p.default {
                    !c.default
                } else {
                    p.val != c.val
                };
                if include {
                    out.push(E {
                        default: false,
                        ..c.clone()
                    });
                }
            }
        }
    }
    out
}

/// `{ ... }` with one entry per line at `indent`; short sections stay on one line.
fn body(entries: &[E], indent: usize) -> String {
    if entries.is_empty() {
        return "{ }".to_string();
    }
    let pad = "  ".repeat(indent);
    let width = entries
        .iter()
        .filter(|e| matches!(e.val, V::Leaf(_)))
        .map(|e| e.key.len())
        .max()
        .unwrap_or(0);
    let mut s = "{\n".to_string();
    for e in entries {
        match &e.val {
            V::Leaf(text) => s.push_str(&format!("{pad}{:<width$} = {text}\n", e.key)),
            V::Sect(ch) => {
                let inline = inline(ch);
                if ch.len() <= 3 && inline.len() + indent * 2 + e.key.len() < 80 {
                    s.push_str(&format!("{pad}{} {inline}\n", e.key));
                } else {
                    s.push_str(&format!("{pad}{} {}\n", e.key, body(ch, indent + 1)));
                }
            }
        }
    }
    s.push_str(&"  ".repeat(indent - 1));
    s.push('}');
    s
}

fn inline(entries: &[E]) -> String {
    if entries.is_empty() {
        return "{ }".to_string();
    }
    let parts: Vec<String> = entries
        .iter()
        .map(|e| match &e.val {
            V::Leaf(t) => format!("{} = {t}", e.key),
            V::Sect(ch) => format!("{} {}", e.key, inline(ch)),
        })
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

// ---- Model and schedule ---------------------------------------------------------

fn model_text(spec: &Spec, norm: Norm, layers: u64) -> String {
    let mut f: Vec<(&str, String)> = Vec::new();
    if spec.family != Family::Llama {
        f.push(("family", spec.family.as_str().to_string()));
    }
    f.push(("vocab", int(spec.vocab)));
    f.push(("hidden", int(spec.hidden)));
    f.push(("layers", int(layers)));
    if spec.context != crate::validate::DEFAULT_CONTEXT {
        f.push(("context", int(spec.context)));
    }
    if spec.dtype != DType::Bf16 {
        f.push(("dtype", spec.dtype.as_str().to_string()));
    }
    if spec.tied {
        f.push(("tied", "true".into()));
    }
    if let Some(x) = spec.embed_scale {
        f.push(("embed_scale", num(x)));
    }
    match spec.learned_positions {
        Some(rows) if rows == spec.context => f.push(("positions", "learned".into())),
        Some(rows) => f.push(("positions", format!("learned {{ rows = {} }}", int(rows)))),
        None => {}
    }
    if let Some(n) = spec.token_types {
        f.push(("token_types", int(n)));
    }
    if let Some(n) = spec.embed_norm {
        f.push(("embed_norm", norm_text(n)));
    }
    if norm != crate::validate::DEFAULT_NORM {
        f.push(("norm", norm_text(norm)));
    }
    match spec.final_norm {
        None => f.push(("final_norm", "none".into())),
        Some(n) if n != norm => f.push(("final_norm", norm_text(n))),
        Some(_) => {}
    }
    if let Some(x) = spec.logit_softcap {
        f.push(("logit_softcap", num(x)));
    }
    if spec.mtp > 0 {
        f.push(("mtp", int(spec.mtp)));
    }
    let width = f.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = format!("model \"{}\" {{\n", spec.name);
    for (k, v) in f {
        s.push_str(&format!("  {k:<width$} = {v}\n"));
    }
    s.push_str("}\n");
    s
}

fn schedule_text(spec: &Spec) -> String {
    let names: Vec<&str> = spec.blocks.iter().map(|b| b.name.as_str()).collect();
    let rules = rules_text(spec, &names);
    let repeat = repeat_text(&spec.schedule, &names);
    let body = match repeat {
        Some(r) if r.len() <= rules.len() => r,
        _ => rules,
    };
    format!("schedule {{\n{body}}}\n")
}

/// `repeat [a * 3, b]` with the shortest period, when it is shorter than the model.
fn repeat_text(schedule: &[usize], names: &[&str]) -> Option<String> {
    let n = schedule.len();
    let period = shortest_period(schedule)?;
    if period == n && n > 1 {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < period {
        let mut j = i;
        while j + 1 < period && schedule[j + 1] == schedule[i] {
            j += 1;
        }
        let count = j - i + 1;
        let name = names.get(schedule[i]).copied().unwrap_or("?");
        parts.push(if count == 1 {
            name.to_string()
        } else {
            format!("{name} * {count}")
        });
        i = j + 1;
    }
    Some(format!("  repeat [{}]\n", parts.join(", ")))
}

/// The smallest `p` with `s[i] == s[i % p]` for every `i` (`None` when `s` is empty): the
/// length minus the longest proper border, from the KMP failure function in linear time
/// (a model may have 100,000 layers).
fn shortest_period(s: &[usize]) -> Option<usize> {
    let n = s.len();
    if n == 0 {
        return None;
    }
    let mut border = vec![0usize; n];
    for i in 1..n {
        let mut k = border[i - 1];
        while k > 0 && s[i] != s[k] {
            k = border[k - 1];
        }
        if s[i] == s[k] {
            k += 1;
        }
        border[i] = k;
    }
    Some(n - border[n - 1])
}

/// Named rules: the block with the most layers takes `rest`, the others list theirs.
fn rules_text(spec: &Spec, names: &[&str]) -> String {
    let n = spec.schedule.len();
    let mut sets: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (l, &b) in spec.schedule.iter().enumerate() {
        if let Some(set) = sets.get_mut(b) {
            set.push(l);
        }
    }
    let rest = (0..names.len()).max_by_key(|&b| (sets[b].len(), usize::MAX - b));
    let width = names.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (b, layers) in sets.iter().enumerate() {
        let sel = if Some(b) == rest {
            "rest".to_string()
        } else {
            selectors(layers, n)
        };
        s.push_str(&format!("  {:<width$} = {sel}\n", names[b]));
    }
    s
}

/// A short selector for a set of layers out of `n`.
fn selectors(layers: &[usize], n: usize) -> String {
    // An arithmetic progression that runs to the end: `every N from K`.
    if layers.len() >= 2 {
        let step = layers[1] - layers[0];
        let from = layers[0];
        let expected: Vec<usize> = (from..n).step_by(step.max(1)).collect();
        if step > 1 && expected == layers {
            return if from == 0 {
                format!("every {step}")
            } else {
                format!("every {step} from {from}")
            };
        }
    }
    let mut parts: Vec<String> = Vec::new();
    let mut singles: Vec<String> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        let (a, b) = (layers[i], layers[j] + 1);
        if a == 0 {
            parts.push(format!("first {b}"));
        } else if b == n && j > i {
            parts.push(format!("last {}", b - a));
        } else if j - i >= 2 {
            parts.push(format!("layers {a}..{b}"));
        } else {
            singles.extend((a..b).map(|l| l.to_string()));
        }
        i = j + 1;
    }
    if !singles.is_empty() {
        parts.push(format!("layers [{}]", singles.join(", ")));
    }
    if parts.is_empty() {
        // No layers at all: an empty list is still a valid selector.
        return "layers []".to_string();
    }
    parts.join(" + ")
}

#[cfg(test)]
mod tests {
    use super::shortest_period;

    #[test]
    fn shortest_period_matches_the_definition() {
        let brute = |s: &[usize]| (1..=s.len()).find(|&p| (0..s.len()).all(|i| s[i] == s[i % p]));
        let cases: [&[usize]; 8] = [
            &[],
            &[0],
            &[0, 1, 0, 1, 0],
            &[0, 0, 0, 1],
            &[0, 1, 0],
            &[0, 0, 1, 0, 0, 1, 0, 0],
            &[1, 0, 1, 1, 0, 1, 1],
            &[0, 1, 2, 0, 1, 2, 0, 1, 3],
        ];
        for s in cases {
            assert_eq!(shortest_period(s), brute(s), "{s:?}");
        }
    }
}
