//! What each box of a figure says: the words for a model's attention, mixers, feed-forward,
//! norms, embedding, head and numbers, and which boxes the differences between the models
//! of one figure fall on.

use super::scene::{wrap, Line, TextBox, Tone};
use crate::diff::{self, activation, group, num, router, selector};
use crate::spec::{
    Attention, Block, Ffn, GatedDeltaNet, KimiDelta, Mixer, Moe, Norm, NormKind, QkNorm,
    RopeScaling, ShortConv, Spec,
};
use crate::stats;
use std::collections::BTreeSet;

/// The widest a line of a box's body may be, in characters, before it wraps.
pub const WRAP: usize = 38;

/// Body lines from texts, each wrapped at [`WRAP`].
fn body(texts: impl IntoIterator<Item = String>) -> Vec<Line> {
    texts
        .into_iter()
        .flat_map(|t| wrap(&t, WRAP))
        .map(Line::body)
        .collect()
}

fn boxed(tone: Tone, heading: &str, rest: Vec<String>) -> TextBox {
    let mut lines = vec![Line::heading(heading)];
    lines.extend(body(rest));
    TextBox::new(tone, lines)
}

/// The title of a model's column: its name and family.
pub fn title(spec: &Spec) -> TextBox {
    let mut lines: Vec<Line> = wrap(&spec.name, 28).into_iter().map(Line::title).collect();
    lines.push(Line::body(format!(
        "{}, {} layers",
        spec.family.as_str(),
        spec.layers
    )));
    TextBox::new(Tone::Label, lines)
}

/// The name of a norm as a box heading: `RMSNorm`, `LayerNorm`, with `(1 + w)` weights.
pub fn norm_name(n: &Norm) -> String {
    match n.kind {
        NormKind::RmsNorm if n.plus_one => "RMSNorm (1 + w)".to_string(),
        NormKind::RmsNorm => "RMSNorm".to_string(),
        NormKind::LayerNorm if n.bias => "LayerNorm".to_string(),
        NormKind::LayerNorm => "LayerNorm, no bias".to_string(),
    }
}

pub fn norm(n: &Norm, what: &str) -> TextBox {
    let name = format!("{}, ε {:e}", norm_name(n), n.eps);
    let text = if what.is_empty() {
        name
    } else {
        format!("{what} {name}")
    };
    TextBox::new(Tone::Norm, vec![Line::body(text)])
}

/// The attention box: its kind and head counts, positions, and every variant it has.
pub fn attention(a: &Attention, learned_positions: bool) -> TextBox {
    let (heading, heads) = match &a.mla {
        Some(m) => {
            let q = match m.q_rank {
                Some(r) => format!("q rank {}, ", group(r)),
                None => String::new(),
            };
            (
                "Multi-head latent attention",
                vec![
                    format!("{} heads", a.heads),
                    format!("{q}kv rank {}", group(m.kv_rank)),
                    format!(
                        "head {} + {} RoPE, value {}",
                        m.nope_dim, m.rope_dim, a.v_head_dim
                    ),
                ],
            )
        }
        None => {
            let heading = if a.kv_heads == a.heads {
                "Multi-head attention"
            } else if a.kv_heads == 1 {
                "Multi-query attention"
            } else {
                "Grouped-query attention"
            };
            let counts = if a.kv_heads == a.heads {
                format!("{} heads", a.heads)
            } else {
                let ratio = a.heads / a.kv_heads.max(1);
                format!("{} heads : {} KV ({ratio}:1)", a.heads, a.kv_heads)
            };
            let dims = if a.v_head_dim == a.head_dim {
                format!("head dim {}", a.head_dim)
            } else {
                format!("head dim {}, value {}", a.head_dim, a.v_head_dim)
            };
            (heading, vec![counts, dims])
        }
    };
    let mut rest = heads;
    match &a.rope {
        Some(r) => {
            let rotated = if r.dims < a.head_dim && a.mla.is_none() {
                format!(" on {} of {} dims", r.dims, a.head_dim)
            } else {
                String::new()
            };
            let pairing = match r.pairing {
                crate::spec::Pairing::Half => "",
                crate::spec::Pairing::Interleaved => ", interleaved",
            };
            rest.push(format!("RoPE θ {}{rotated}{pairing}", group_f(r.theta)));
            if let Some(s) = rope_scaling(&r.scaling) {
                rest.push(s);
            }
        }
        None if learned_positions => rest.push("learned positions".to_string()),
        None => rest.push("NoPE: no rotary positions".to_string()),
    }
    if let Some(w) = a.window {
        rest.push(format!("sliding window {}", group(w)));
    }
    if let Some(c) = a.chunk {
        rest.push(format!("chunked, {} per chunk", group(c)));
    }
    if !a.causal {
        rest.push("bidirectional".to_string());
    }
    match &a.qk_norm {
        QkNorm::None => {}
        QkNorm::PerHead(n) => rest.push(format!("QK-norm per head ({})", norm_name(n))),
        QkNorm::Full(n) => rest.push(format!("QK-norm, whole projection ({})", norm_name(n))),
        QkNorm::L2 { .. } => rest.push("QK-norm: L2, no weights".to_string()),
    }
    if a.sinks {
        rest.push("attention sinks".to_string());
    }
    if a.gate {
        rest.push("output gate".to_string());
    }
    if let Some(c) = a.softcap {
        rest.push(format!("logit softcap {}", num(c)));
    }
    if let Some(s) = a.scale {
        rest.push(format!("score scale {}", diff::sig(s)));
    }
    if let Some(t) = &a.temperature {
        rest.push(format!(
            "query temperature: floor {}, scale {}",
            num(t.floor_scale),
            num(t.attn_scale)
        ));
    }
    let b = a.bias;
    let biased: Vec<&str> = [(b.q, "q"), (b.k, "k"), (b.v, "v"), (b.o, "o")]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
    if !biased.is_empty() {
        rest.push(format!("bias on {}", biased.join(", ")));
    }
    boxed(Tone::Attention, heading, rest)
}

/// RoPE scaling in a few words, `None` without scaling.
fn rope_scaling(s: &RopeScaling) -> Option<String> {
    match s {
        RopeScaling::None => None,
        RopeScaling::Linear { factor } => Some(format!("linear scaling ×{}", num(*factor))),
        RopeScaling::Llama3 {
            factor,
            original_context,
            ..
        } => Some(format!(
            "Llama 3 scaling ×{} from {}",
            num(*factor),
            group(*original_context)
        )),
        RopeScaling::Yarn {
            factor,
            original_context,
            ..
        } => Some(format!(
            "YaRN ×{} from {}",
            num(*factor),
            group(*original_context)
        )),
    }
}

/// A float that is a whole number reads with separators: `1,000,000`.
fn group_f(x: f64) -> String {
    if x.fract() == 0.0 && (0.0..1e15).contains(&x) {
        group(x as u64)
    } else {
        num(x)
    }
}

pub fn gated_deltanet(g: &GatedDeltaNet) -> TextBox {
    boxed(
        Tone::Recurrent,
        "Gated DeltaNet",
        vec![
            format!("{} key heads × {}", g.k_heads, g.k_head_dim),
            format!("{} value heads × {}", g.v_heads, g.v_head_dim),
            format!("short conv, width {}", g.conv),
            "linear attention, fixed state".to_string(),
        ],
    )
}

pub fn kimi_delta(k: &KimiDelta) -> TextBox {
    boxed(
        Tone::Recurrent,
        "Kimi Delta Attention",
        vec![
            format!("{} heads × {}", k.heads, k.head_dim),
            format!("short conv, width {}", k.conv),
            "per-channel decay, fixed state".to_string(),
        ],
    )
}

pub fn short_conv(c: &ShortConv) -> TextBox {
    boxed(
        Tone::Recurrent,
        "Gated short convolution",
        vec![
            format!("conv width {}, gated by B and C", c.conv),
            "fixed state".to_string(),
        ],
    )
}

pub fn mixer(m: &Mixer, learned_positions: bool) -> TextBox {
    match m {
        Mixer::Attention(a) => attention(a, learned_positions),
        Mixer::GatedDeltaNet(g) => gated_deltanet(g),
        Mixer::KimiDelta(k) => kimi_delta(k),
        Mixer::ShortConv(c) => short_conv(c),
    }
}

pub fn ffn(f: &Ffn, hidden: u64) -> TextBox {
    match f {
        Ffn::Mlp(m) => {
            let mut rest = vec![format!(
                "{} → {} → {}",
                group(hidden),
                group(m.hidden),
                group(hidden)
            )];
            if m.bias {
                rest.push("with bias".to_string());
            }
            boxed(
                Tone::Mlp,
                &format!("Feed-forward, {}", activation(m.act, m.gated)),
                rest,
            )
        }
        Ffn::Moe(m) => moe(m),
    }
}

pub fn moe(m: &Moe) -> TextBox {
    let mut rest = vec![
        format!("{} experts, {} per token", m.experts, m.top_k),
        format!(
            "expert width {}, {}",
            group(m.hidden),
            activation(m.act, m.gated)
        ),
    ];
    if let Some(s) = &m.shared {
        let gate = if s.gate { ", gated" } else { "" };
        let n = if s.count == 1 {
            "1 shared expert".to_string()
        } else {
            format!("{} shared experts", s.count)
        };
        rest.push(format!("{n}, width {}{gate}", group(s.hidden)));
    }
    rest.push(format!("router: {}", router(m)));
    if m.bias {
        rest.push("with bias".to_string());
    }
    boxed(Tone::Moe, "Mixture of experts", rest)
}

pub fn embedding(spec: &Spec) -> TextBox {
    let mut rest = vec![format!("{} × {}", group(spec.vocab), group(spec.hidden))];
    if let Some(s) = spec.embed_scale {
        rest.push(format!("scaled by {}", diff::sig(s)));
    }
    if let Some(n) = spec.learned_positions {
        rest.push(format!("+ learned positions ({})", group(n)));
    }
    if let Some(n) = spec.token_types {
        rest.push(format!("+ token types ({n})"));
    }
    boxed(Tone::Io, "Token embedding", rest)
}

pub fn head(spec: &Spec) -> TextBox {
    let mut rest = vec![format!("{} → {}", group(spec.hidden), group(spec.vocab))];
    if spec.tied {
        rest.push("tied to the embedding".to_string());
    }
    if let Some(c) = spec.logit_softcap {
        rest.push(format!("logit softcap {}", num(c)));
    }
    boxed(Tone::Io, "Output head", rest)
}

pub fn io(text: &str) -> TextBox {
    TextBox::new(Tone::Io, vec![Line::body(text)])
}

/// The header of a block variant's frame: its name, how many layers use it and which.
pub fn block_header(spec: &Spec, index: usize, block: &Block) -> TextBox {
    let layers: Vec<u64> = (0..spec.schedule.len() as u64)
        .filter(|&l| spec.schedule[l as usize] == index)
        .collect();
    let mut lines = vec![Line::heading(format!("{} × {}", block.name, layers.len()))];
    lines.extend(
        wrap(&which_layers(&layers, spec.layers), WRAP)
            .into_iter()
            .map(Line::body)
            .collect::<Vec<_>>(),
    );
    TextBox::new(Tone::Label, lines).left()
}

/// A set of layers in a few words: `every 6 from 5`, `all but every 6 from 5`, or the
/// first few numbers of a list that has no shorter name.
pub fn which_layers(layers: &[u64], total: u64) -> String {
    if layers.len() as u64 == total {
        return "every layer".to_string();
    }
    let listed = |s: &str| s.starts_with("layers [");
    let named = selector(layers, total);
    if !listed(&named) {
        return named;
    }
    let rest: Vec<u64> = (0..total).filter(|l| !layers.contains(l)).collect();
    if !rest.is_empty() {
        let other = selector(&rest, total);
        if !listed(&other) {
            return format!("all but {other}");
        }
    }
    const SHOWN: usize = 8;
    if layers.len() <= SHOWN {
        return named;
    }
    let first: Vec<String> = layers[..SHOWN].iter().map(u64::to_string).collect();
    format!("layers {}, … ({} in all)", first.join(", "), layers.len())
}

/// What a block variant is, in a few words, for the legend of the layer strip:
/// `sliding-window attention, dense`, `Gated DeltaNet, MoE`.
pub fn variant_kind(block: &Block, learned_positions: bool) -> String {
    let mixer = match &block.mixer {
        Mixer::Attention(a) => {
            let kind = if a.mla.is_some() {
                "MLA"
            } else if a.window.is_some() {
                "sliding-window attention"
            } else if a.chunk.is_some() {
                "chunked attention"
            } else {
                "global attention"
            };
            if a.rope.is_none() && !learned_positions {
                format!("{kind}, NoPE")
            } else {
                kind.to_string()
            }
        }
        Mixer::GatedDeltaNet(_) => "Gated DeltaNet".to_string(),
        Mixer::KimiDelta(_) => "Kimi Delta".to_string(),
        Mixer::ShortConv(_) => "short convolution".to_string(),
    };
    let ffn = match &block.ffn {
        Ffn::Mlp(_) => "dense",
        Ffn::Moe(_) => "MoE",
    };
    format!("{mixer}, {ffn}")
}

/// The rows of the panel of numbers: (label, value).
pub fn numbers(spec: &Spec) -> Vec<(&'static str, String)> {
    let s = stats::stats(spec, stats::Options::for_spec(spec));
    let mut rows = vec![
        ("parameters", diff::short_count(s.params_total)),
        ("active", diff::short_count(s.params_active)),
        (
            "KV cache",
            format!("{}/token (bf16)", bytes(s.kv_bytes_per_token)),
        ),
    ];
    if s.linear_state_bytes > 0 {
        rows.push(("linear state", bytes(s.linear_state_bytes)));
    }
    rows.extend([
        ("context", group(spec.context)),
        ("vocabulary", group(spec.vocab)),
        ("hidden", group(spec.hidden)),
        ("layers", spec.layers.to_string()),
        ("weights", spec.dtype.as_str().to_string()),
    ]);
    rows
}

/// The panel of numbers; rows whose label is in `differs` are set in bold.
pub fn panel(rows: &[(&'static str, String)], differs: &BTreeSet<&'static str>) -> TextBox {
    let lines = rows
        .iter()
        .map(|(label, value)| {
            let mut l = Line::body(format!("{label:<13}{value}"));
            l.bold = differs.contains(label);
            l
        })
        .collect();
    let mut b = TextBox::new(Tone::Panel, lines).left();
    b.differs = !differs.is_empty();
    b
}

/// Bytes in binary units: `68.6 KiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Which parts of every model's drawing carry a fact that differs between the models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub embedding: bool,
    pub norms: bool,
    pub mixer: bool,
    pub ffn: bool,
    pub final_norm: bool,
    pub head: bool,
    pub schedule: bool,
    /// Rows of the panel of numbers.
    pub numbers: BTreeSet<&'static str>,
}

/// The marks of a figure of `specs`: a fact of `archc diff` that is not the same for all
/// of them marks the part it describes; a number of the panel that is not the same is set
/// in bold. One model has no marks.
pub fn marks(specs: &[Spec]) -> Marks {
    let mut m = Marks::default();
    if specs.len() < 2 {
        return m;
    }
    let facts: Vec<Vec<diff::Fact>> = specs
        .iter()
        .map(|s| diff::describe(s, Some(diff::params(s))))
        .collect();
    for (i, fact) in facts[0].iter().enumerate() {
        let same = facts.iter().all(|f| f[i].value == fact.value);
        if same {
            continue;
        }
        match (fact.section, fact.label) {
            ("model", "vocab") => {
                m.embedding = true;
                m.head = true;
            }
            ("model", "hidden" | "embedding scale" | "learned positions" | "token types") => {
                m.embedding = true
            }
            ("model", "embedding norm") => m.embedding = true,
            ("model", "final norm") => m.final_norm = true,
            ("model", "tied embeddings" | "logit softcap") => m.head = true,
            ("model", "layers") => m.schedule = true,
            ("layers", "schedule") => m.schedule = true,
            ("layers", "mixer") => m.mixer = true,
            ("layers", "norm" | "placement") => m.norms = true,
            ("attention", _) => m.mixer = true,
            ("feed-forward", _) => m.ffn = true,
            _ => {}
        }
    }
    let rows: Vec<Vec<(&'static str, String)>> = specs.iter().map(numbers).collect();
    for (label, value) in &rows[0] {
        let same = rows
            .iter()
            .all(|r| r.iter().any(|(l, v)| l == label && v == value));
        if !same {
            m.numbers.insert(label);
        }
    }
    // A row only some models have differs too.
    for r in &rows[1..] {
        for (label, _) in r {
            if !rows[0].iter().any(|(l, _)| l == label) {
                m.numbers.insert(label);
            }
        }
    }
    m
}
