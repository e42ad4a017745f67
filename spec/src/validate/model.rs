//! Reading a `Spec` out of the tables: the model's fields, every block section with its
//! defaults (grammar/LANGUAGE.md), inheritance between blocks, and the consistency
//! checks between numbers (heads and kv_heads, rotary dims, router groups, ...).

use super::attention::attention;
use super::eval::{quoted, type_error, word_of, Diags, Sect};
use super::ffn::{mlp, moe};
use super::schedule::{self, Declared};
use super::tree::{merge_block, Node, NodeValue, Table, FFNS, MIXERS};
use crate::ast::{File, Ident, ItemKind, ScheduleBody, Span, ValueKind};
use crate::diagnostics::{did_you_mean, Diagnostic};
use crate::spec::*;

const MODEL_KEYS: &[&str] = &[
    "family",
    "vocab",
    "hidden",
    "layers",
    "context",
    "dtype",
    "tied",
    "embed_scale",
    "positions",
    "token_types",
    "embed_norm",
    "norm",
    "final_norm",
    "logit_softcap",
    "mtp",
];
const BLOCK_KEYS: &[&str] = &[
    "norm",
    "placement",
    "attention",
    "gated_deltanet",
    "kimi_delta",
    "short_conv",
    "mlp",
    "moe",
];
pub(super) const ATTENTION_KEYS: &[&str] = &[
    "heads",
    "kv_heads",
    "head_dim",
    "bias",
    "qk_norm",
    "causal",
    "window",
    "chunk",
    "sinks",
    "softcap",
    "scale",
    "gate",
    "temperature",
    "rope",
    "mla",
];
const DTYPES: &[&str] = &["f32", "f16", "bf16", "f8"];
pub(super) const NORMS: &[&str] = &["rmsnorm", "layernorm"];
pub(super) const ACTS: &[&str] = &["gelu", "gelu_tanh", "relu", "silu", "clamped_swiglu"];

/// The default model norm.
pub const DEFAULT_NORM: Norm = Norm {
    kind: NormKind::RmsNorm,
    eps: 1e-5,
    bias: false,
    plus_one: false,
};
/// Default context length when `context` is not given.
pub const DEFAULT_CONTEXT: u64 = 4096;
use super::limits::MAX_LAYERS;

struct DeclBlock<'a> {
    name: String,
    header: Span,
    name_ident: Option<&'a Ident>,
    parent: Option<&'a Ident>,
    own: Table,
}

pub(crate) fn build(file: &File, d: &mut Diags) -> Option<Spec> {
    let mut model: Option<(&ItemKind, Span)> = None;
    let mut schedule_item: Option<(&ScheduleBody, Span)> = None;
    let mut blocks: Vec<DeclBlock> = Vec::new();
    for item in &file.items {
        let header = super::item_header(&item.kind);
        match &item.kind {
            ItemKind::Model { .. } => {
                if let Some((_, first)) = model {
                    d.push(
                        Diagnostic::error(header, "a second `model`")
                            .label("a file describes one model")
                            .secondary(first, "the first `model`"),
                    );
                } else {
                    model = Some((&item.kind, header));
                }
            }
            ItemKind::Schedule { body, .. } => {
                if let Some((_, first)) = schedule_item {
                    d.push(
                        Diagnostic::error(header, "a second `schedule`")
                            .label("a file has one schedule")
                            .secondary(first, "the first `schedule`"),
                    );
                } else {
                    schedule_item = Some((body, header));
                }
            }
            ItemKind::Block {
                name, parent, body, ..
            } => {
                let block_name = name.as_ref().map_or("default", |n| n.name.as_str());
                if let Some(first) = blocks.iter().find(|b| b.name == block_name) {
                    d.push(
                        Diagnostic::error(header, format!("a second block named `{block_name}`"))
                            .label("block names must be unique")
                            .secondary(first.header, "first declared here")
                            .hint(if name.is_none() {
                                "only a file with a single block may leave it unnamed"
                            } else {
                                "rename one of them"
                            }),
                    );
                    continue;
                }
                blocks.push(DeclBlock {
                    name: block_name.to_string(),
                    header,
                    name_ident: name.as_ref(),
                    parent: parent.as_ref(),
                    own: Table::from_body(body, header, d),
                });
            }
        }
    }
    let Some((ItemKind::Model { name, body, .. }, model_header)) = model else {
        let at = file
            .items
            .first()
            .map_or(Span::default(), |i| super::item_header(&i.kind));
        d.push(
            Diagnostic::error(at, "the file has no `model`")
                .label("expected a `model \"name\" { ... }` item")
                .hint("start the file with `model \"name\" { vocab = ..., hidden = ..., layers = ... }`"),
        );
        return None;
    };
    let model_table = Table::from_body(body, model_header, d);
    let m = Sect::root(&model_table, "`model`");
    m.check_keys(MODEL_KEYS, d);

    let family = match m.word("family", &family_names(), d) {
        Some((w, _)) => Family::from_name(&w).unwrap_or(Family::Llama),
        None => Family::Llama,
    };
    let vocab = m.req_size("vocab", d);
    let hidden = m.req_size("hidden", d);
    let mut layers = m.req_size("layers", d);
    if let Some(n) = layers.filter(|&n| n > MAX_LAYERS) {
        d.push(
            Diagnostic::error(
                value_span(&m, "layers"),
                format!("{n} layers is more than {MAX_LAYERS}"),
            )
            .label("too many layers"),
        );
        layers = None;
    }
    let context = if m.get("context").is_some() {
        m.size("context", d)
    } else {
        Some(DEFAULT_CONTEXT)
    };
    let dtype = match m.word("dtype", DTYPES, d).as_ref().map(|(w, _)| w.as_str()) {
        Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("f8") => DType::F8,
        _ => DType::Bf16,
    };
    let tied = m.bool_or("tied", false, d);
    let embed_scale = m.opt_f64("embed_scale", d);
    let learned_positions = positions(&m, context.unwrap_or(DEFAULT_CONTEXT), d);
    let token_types = m.opt_size("token_types", d);
    let norm = match m.get("norm") {
        Some(node) => norm_of(node, &m, "norm", None, d).unwrap_or(DEFAULT_NORM),
        None => DEFAULT_NORM,
    };
    let embed_norm = m
        .get("embed_norm")
        .and_then(|node| opt_norm(node, &m, "embed_norm", None, d));
    let final_norm = match m.get("final_norm") {
        Some(node) => opt_norm(node, &m, "final_norm", Some(norm), d),
        None => Some(norm),
    };
    let logit_softcap = m.opt_positive("logit_softcap", d);
    let mtp = if m.get("mtp").is_some() {
        m.u64("mtp", d).unwrap_or(0)
    } else {
        0
    };
    if mtp > 0 && !crate::mtp::has_mtp_layout(family) {
        d.push(
            Diagnostic::error(
                value_span(&m, "mtp"),
                format!(
                    "archc knows no multi-token-prediction tensor layout for family {}",
                    family.as_str()
                ),
            )
            .label("MTP layers of this family cannot be told apart from stray tensors")
            .hint("`mtp` applies to deepseek_v3, glm4_moe and qwen3_next checkpoints"),
        );
    }

    // Inheritance.
    let resolved = resolve_blocks(&blocks, d);

    let declared: Vec<Declared> = blocks
        .iter()
        .map(|b| Declared {
            name: &b.name,
            span: b.name_ident.map_or(b.header, |i| i.span),
        })
        .collect();
    if blocks.is_empty() {
        d.push(
            Diagnostic::error(model_header, "the file has no `block`")
                .label("a model needs at least one layer variant")
                .hint("add `block { attention { heads = ... } mlp { hidden = ... } }`"),
        );
    }
    let sched = schedule::resolve(schedule_item, &declared, layers, d);
    for (i, b) in blocks.iter().enumerate() {
        let is_parent = blocks
            .iter()
            .any(|c| c.parent.is_some_and(|p| p.name == b.name));
        if !sched.referenced[i] && !is_parent && schedule_item.is_some() {
            d.push(
                Diagnostic::error(
                    declared[i].span,
                    format!("block `{}` is never scheduled", b.name),
                )
                .label("no layer runs this block")
                .hint("name it in the `schedule`, or remove it"),
            );
        }
    }

    let mut spec_blocks = Vec::new();
    let mut index_of = vec![usize::MAX; blocks.len()];
    for (i, b) in blocks.iter().enumerate() {
        if !sched.referenced[i] {
            continue;
        }
        let Some(table) = &resolved[i] else {
            continue;
        };
        if let Some(block) = read_block(table, &b.name, &m, hidden, norm, d) {
            index_of[i] = spec_blocks.len();
            spec_blocks.push(block);
        }
    }
    let schedule: Vec<usize> = sched.layers?.into_iter().map(|i| index_of[i]).collect();
    if schedule.contains(&usize::MAX) {
        return None;
    }
    Some(Spec {
        name: name.clone(),
        family,
        vocab: vocab?,
        hidden: hidden?,
        layers: layers?,
        context: context?,
        dtype,
        tied,
        embed_scale,
        learned_positions,
        token_types,
        embed_norm,
        final_norm,
        logit_softcap,
        mtp,
        blocks: spec_blocks,
        schedule,
    })
}

fn family_names() -> Vec<&'static str> {
    Family::ALL.iter().map(|f| f.as_str()).collect()
}

/// The span of a key's value (or of the key, or of the section).
pub(super) fn value_span(s: &Sect, key: &str) -> Span {
    match s.get(key) {
        Some(Node {
            value: NodeValue::Leaf(v),
            ..
        }) => v.span,
        Some(n) => n.key_span,
        None => s.table.span,
    }
}

/// Resolves inheritance: each block's table is its parent's resolved table with the
/// block's own entries merged over it. `None` for blocks in a cycle or with a missing
/// parent.
fn resolve_blocks(blocks: &[DeclBlock], d: &mut Diags) -> Vec<Option<Table>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Todo,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        blocks: &[DeclBlock],
        state: &mut Vec<State>,
        out: &mut Vec<Option<Table>>,
        path: &mut Vec<usize>,
        d: &mut Diags,
    ) {
        if state[i] == State::Done {
            return;
        }
        state[i] = State::Active;
        path.push(i);
        let b = &blocks[i];
        let table = match b.parent {
            None => Some(b.own.clone()),
            Some(p) => match blocks.iter().position(|c| c.name == p.name) {
                None => {
                    let mut diag =
                        Diagnostic::error(p.span, format!("no block named `{}`", p.name))
                            .label("unknown parent block");
                    if let Some(s) = did_you_mean(&p.name, blocks.iter().map(|c| c.name.as_str())) {
                        diag = diag.hint(format!("did you mean `{s}`?"));
                    }
                    d.push(diag);
                    None
                }
                Some(j) if state[j] == State::Active => {
                    let start = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut names: Vec<&str> = path[start..]
                        .iter()
                        .map(|&k| blocks[k].name.as_str())
                        .collect();
                    names.push(&blocks[j].name);
                    d.push(
                        Diagnostic::error(p.span, "blocks inherit from each other in a cycle")
                            .label(format!("cycle: {}", names.join(" : ")))
                            .hint("a block's parent chain must end in a block without a parent"),
                    );
                    None
                }
                Some(j) => {
                    visit(j, blocks, state, out, path, d);
                    out[j].clone().map(|mut base| {
                        merge_block(&mut base, b.own.clone());
                        base.span = b.own.span;
                        base
                    })
                }
            },
        };
        path.pop();
        out[i] = table;
        state[i] = State::Done;
    }
    let mut state = vec![State::Todo; blocks.len()];
    let mut out = vec![None; blocks.len()];
    for i in 0..blocks.len() {
        visit(i, blocks, &mut state, &mut out, &mut Vec::new(), d);
    }
    out
}

fn positions(m: &Sect, context: u64, d: &mut Diags) -> Option<u64> {
    let node = m.get("positions")?;
    match &node.value {
        NodeValue::Leaf(v) => match word_of(v, "positions", &["learned", "none"], d)?.0.as_str() {
            "learned" => Some(context),
            _ => None,
        },
        NodeValue::Tagged { tag, body, .. } if tag.name == "learned" => {
            let s = m.child(body, "`learned`");
            s.check_keys(&["rows"], d);
            if s.get("rows").is_some() {
                let rows = s.size("rows", d)?;
                if rows < context {
                    let v = s.leaf("rows", "", &mut Vec::new())?;
                    d.push(
                        Diagnostic::error(
                            v.span,
                            format!("the position table has {rows} rows, fewer than the context of {context}"),
                        )
                        .label("positions past this have no embedding")
                        .hint(format!("set `rows = {context}`, or lower `context` to {rows}")),
                    );
                    return None;
                }
                Some(rows)
            } else {
                Some(context)
            }
        }
        NodeValue::Tagged { tag, .. } => {
            d.push(unknown_tag(tag, "positions", &["learned"]));
            None
        }
        NodeValue::Table(t) => {
            d.push(
                Diagnostic::error(
                    t.span,
                    "expected `learned` or `none` for `positions`, found a section",
                )
                .label("not a section"),
            );
            None
        }
    }
}

pub(super) fn unknown_tag(tag: &Ident, key: &str, options: &[&str]) -> Diagnostic {
    let mut diag = Diagnostic::error(tag.span, format!("unknown {key} `{}`", tag.name))
        .label(format!("not a valid `{key}`"))
        .note(format!("valid values: {}", options.join(", ")));
    if let Some(s) = did_you_mean(&tag.name, options.iter().copied()) {
        diag = diag.hint(format!("did you mean `{s}`?"));
    }
    diag
}

/// A norm or `none`.
fn opt_norm(node: &Node, s: &Sect, key: &str, base: Option<Norm>, d: &mut Diags) -> Option<Norm> {
    if let NodeValue::Leaf(v) = &node.value {
        if matches!(v.kind, ValueKind::None) {
            return None;
        }
    }
    norm_of(node, s, key, base, d)
}

/// A norm: `rmsnorm`, `layernorm { eps = 1e-12 }`, or (from dotted paths such as
/// `norm.eps = 1e-6`) a section that overrides fields of `base`.
fn norm_of(node: &Node, s: &Sect, key: &str, base: Option<Norm>, d: &mut Diags) -> Option<Norm> {
    let (kind, body): (NormKind, Option<&Table>) = match &node.value {
        NodeValue::Leaf(v) => {
            let (w, _) = word_of(v, key, NORMS, d)?;
            (kind_of(&w), None)
        }
        NodeValue::Tagged { tag, body, .. } => {
            if !NORMS.contains(&tag.name.as_str()) {
                d.push(unknown_tag(tag, key, NORMS));
                return None;
            }
            (kind_of(&tag.name), Some(body))
        }
        NodeValue::Table(t) => match base {
            Some(b) => {
                return Some(norm_fields(s.child(t, &format!("`{key}`")), b, d));
            }
            None => {
                d.push(
                    Diagnostic::error(t.span, format!("`{key}` needs a kind"))
                        .label("no norm to modify here")
                        .hint(format!(
                            "write `{key} = rmsnorm {{ ... }}` or `layernorm {{ ... }}`"
                        )),
                );
                return None;
            }
        },
    };
    let start = Norm {
        kind,
        eps: 1e-5,
        bias: kind == NormKind::LayerNorm,
        plus_one: false,
    };
    Some(match body {
        Some(t) => norm_fields(s.child(t, &format!("`{}`", norm_word(kind))), start, d),
        None => start,
    })
}

pub(super) fn kind_of(w: &str) -> NormKind {
    if w == "layernorm" {
        NormKind::LayerNorm
    } else {
        NormKind::RmsNorm
    }
}

pub fn norm_word(kind: NormKind) -> &'static str {
    match kind {
        NormKind::LayerNorm => "layernorm",
        NormKind::RmsNorm => "rmsnorm",
    }
}

fn norm_fields(s: Sect, base: Norm, d: &mut Diags) -> Norm {
    match base.kind {
        NormKind::RmsNorm => s.check_keys(&["eps", "plus_one"], d),
        NormKind::LayerNorm => s.check_keys(&["eps", "bias"], d),
    }
    Norm {
        kind: base.kind,
        eps: s.positive_or("eps", base.eps, d),
        bias: s.bool_or("bias", base.bias, d),
        plus_one: s.bool_or("plus_one", base.plus_one, d),
    }
}

/// A nested section (`None` when absent or `none`).
pub(super) fn section<'t>(s: &Sect<'t>, key: &str, d: &mut Diags) -> Option<Sect<'t>> {
    let node = s.get(key)?;
    match &node.value {
        NodeValue::Table(t) => Some(s.child(t, &format!("`{key}`"))),
        NodeValue::Leaf(v) if matches!(v.kind, ValueKind::None) => None,
        NodeValue::Leaf(v) => {
            d.push(
                type_error(v, &format!("a section `{key} {{ ... }}`"))
                    .hint(format!("write `{key} {{ ... }}`")),
            );
            None
        }
        NodeValue::Tagged { tag, .. } => {
            d.push(
                Diagnostic::error(
                    node.key_span,
                    format!(
                        "expected a section `{key} {{ ... }}`, found `{key} = {} {{ ... }}`",
                        tag.name
                    ),
                )
                .label("not a section"),
            );
            None
        }
    }
}

fn read_block(
    table: &Table,
    name: &str,
    m: &Sect,
    hidden: Option<u64>,
    model_norm: Norm,
    d: &mut Diags,
) -> Option<Block> {
    let b = m.child(table, &format!("block `{name}`"));
    b.check_keys(BLOCK_KEYS, d);
    let norm = match b.get("norm") {
        Some(node) => norm_of(node, &b, "norm", Some(model_norm), d).unwrap_or(model_norm),
        None => model_norm,
    };
    let placement = match b
        .word("placement", &["pre", "post", "sandwich", "post_ln"], d)
        .as_ref()
        .map(|(w, _)| w.as_str())
    {
        Some("post") => Placement::Post,
        Some("sandwich") => Placement::Sandwich,
        Some("post_ln") => Placement::PostLn,
        _ => Placement::Pre,
    };
    let mixer =
        one_slot(&b, &MIXERS, "token mixer", "attention { heads = ... }", d).and_then(|key| {
            match key {
                "attention" => section(&b, key, d)
                    .and_then(|a| attention(&a, hidden, model_norm, d))
                    .map(Mixer::Attention),
                "gated_deltanet" => section(&b, key, d).and_then(|s| {
                    s.check_keys(
                        &["k_heads", "v_heads", "k_head_dim", "v_head_dim", "conv"],
                        d,
                    );
                    let k_heads = s.req_size("k_heads", d);
                    let v_heads = s.req_size("v_heads", d);
                    let k_head_dim = s.req_size("k_head_dim", d);
                    let v_head_dim = s.req_size("v_head_dim", d);
                    let conv = size_or(&s, "conv", 4, d);
                    if let (Some(k), Some(v)) = (k_heads, v_heads) {
                        if v % k != 0 {
                            d.push(
                                Diagnostic::error(
                                    value_span(&s, "v_heads"),
                                    format!("v_heads ({v}) is not a multiple of k_heads ({k})"),
                                )
                                .label("not a multiple of k_heads"),
                            );
                        }
                    }
                    Some(Mixer::GatedDeltaNet(GatedDeltaNet {
                        k_heads: k_heads?,
                        v_heads: v_heads?,
                        k_head_dim: k_head_dim?,
                        v_head_dim: v_head_dim?,
                        conv: conv?,
                    }))
                }),
                "short_conv" => section(&b, key, d).and_then(|s| {
                    s.check_keys(&["conv", "bias"], d);
                    let conv = size_or(&s, "conv", 3, d);
                    let bias = s.bool_or("bias", false, d);
                    Some(Mixer::ShortConv(ShortConv { conv: conv?, bias }))
                }),
                _ => section(&b, key, d).and_then(|s| {
                    s.check_keys(&["heads", "head_dim", "conv"], d);
                    let heads = s.req_size("heads", d);
                    let head_dim = s.req_size("head_dim", d);
                    let conv = size_or(&s, "conv", 4, d);
                    Some(Mixer::KimiDelta(KimiDelta {
                        heads: heads?,
                        head_dim: head_dim?,
                        conv: conv?,
                    }))
                }),
            }
        });
    let ffn = one_slot(&b, &FFNS, "feed-forward", "mlp { hidden = ... }", d).and_then(|key| {
        let s = section(&b, key, d)?;
        if key == "mlp" {
            mlp(&s, d).map(Ffn::Mlp)
        } else {
            moe(&s, d).map(Ffn::Moe)
        }
    });
    Some(Block {
        name: name.to_string(),
        placement,
        norm,
        mixer: mixer?,
        ffn: ffn?,
    })
}

pub(super) fn size_or(s: &Sect, key: &str, default: u64, d: &mut Diags) -> Option<u64> {
    if s.get(key).is_some() {
        s.size(key, d)
    } else {
        Some(default)
    }
}

/// Which one of a slot's sections the block gives; none or several are errors.
fn one_slot(
    b: &Sect,
    keys: &[&'static str],
    what: &str,
    example: &str,
    d: &mut Diags,
) -> Option<&'static str> {
    let given: Vec<&'static str> = keys
        .iter()
        .copied()
        .filter(|k| b.get(k).is_some())
        .collect();
    match given.as_slice() {
        [] => {
            d.push(
                Diagnostic::error(b.table.span, format!("{} has no {what}", b.name))
                    .label(format!("missing a {what}"))
                    .hint(format!("add `{example}` (one of {})", quoted(keys))),
            );
            None
        }
        [one] => Some(one),
        [first, second, ..] => {
            let at = b.get(second).map_or(b.table.span, |n| n.key_span);
            let first_at = b.get(first).map_or(b.table.span, |n| n.key_span);
            d.push(
                Diagnostic::error(at, format!("{} has both `{first}` and `{second}`", b.name))
                    .label(format!("a second {what}"))
                    .secondary(first_at, "the first one")
                    .hint(format!("a block has exactly one {what}")),
            );
            None
        }
    }
}
