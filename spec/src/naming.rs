//! Checkpoint naming tables, one per `Family`, as data: how each canonical tensor of
//! `tensors()` is found in an HF safetensors checkpoint and in a llama.cpp GGUF file.
//!
//! A table maps canonical names (without the `layers.{i}.` prefix) to a [`Rule`]; the
//! first entry whose key matches wins, so family-specific fragments come before shared
//! ones. A key matches a canonical name exactly, or (for `Module`-like rules) matches its
//! base, the name without its final `.weight` / `.bias`, which is carried over.
//!
//! HF names are the ones real hub checkpoints use, which is also what transformers'
//! `save_pretrained` writes: MoE experts are stored one tensor per expert
//! (`mlp.experts.{e}.gate_proj.weight`), except for Llama 4 and GPT-OSS, whose
//! checkpoints hold fused `[E, in, out]` tensors. Kimi Linear's dense layers are
//! `mlp.*` on the hub (transformers 5.23's `save_pretrained` renames them to
//! `block_sparse_moe.*`, an artifact of reversing its load-time rename; we follow the hub).

use crate::spec::{Family, Mixer, Spec};
use crate::tensors::{GgufBinding, GgufFix, Source};

/// How one canonical tensor (or a canonical module's weight and bias) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A module: canonical `{key}.weight|bias` is `{0}.weight|bias`.
    Module(&'static str),
    /// Exactly this stored tensor.
    Exact(&'static str),
    /// This stored tensor with its last two axes swapped.
    Transposed(&'static str),
    /// A GPT-2 Conv1D module: the weight is stored `[in, out]`, the bias as is.
    Conv1d(&'static str),
    /// Part `index` of equal contiguous parts of a fused GPT-2 Conv1D module (`c_attn`),
    /// each as wide as the canonical tensor.
    Conv1dPart { module: &'static str, index: u64 },
    /// Part `index` of `parts` of a fused tensor along `axis`; contiguous parts, or
    /// interleaved ones (`index`, `index + parts`, ...); then transposed when `transpose`.
    Part {
        name: &'static str,
        axis: usize,
        index: u64,
        parts: u64,
        interleaved: bool,
        transpose: bool,
    },
    /// Per-expert modules stacked: `{0}` with `{e}` the expert index, plus `.weight|.bias`.
    PerExpert(&'static str),
}

type Entries = &'static [(&'static str, Rule)];

/// The naming of one family in one checkpoint format.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Prefix of every per-layer name; `{i}` is the layer index.
    pub layer_prefix: &'static str,
    /// Global tensors.
    pub global: Entries,
    /// Per-layer tensors, searched fragment by fragment, first match wins.
    pub layer: &'static [Entries],
}

impl Table {
    /// The rule for a canonical name (`local` without the layer prefix) and the
    /// suffix (`weight` / `bias`) it carries over, if it matched a module-like key.
    pub fn lookup<'a>(&self, layer: bool, local: &'a str) -> Option<(Rule, Option<&'a str>)> {
        let frags: &[Entries] = if layer {
            self.layer
        } else {
            std::slice::from_ref(&self.global)
        };
        let (base, suffix) = match local.rsplit_once('.') {
            Some((b, s @ ("weight" | "bias"))) => (b, Some(s)),
            _ => (local, None),
        };
        for frag in frags {
            for (key, rule) in frag.iter() {
                if *key == local {
                    return Some((*rule, None));
                }
                if *key == base && suffix.is_some() && rule.is_modular() {
                    return Some((*rule, suffix));
                }
            }
        }
        None
    }
}

impl Rule {
    fn is_modular(self) -> bool {
        matches!(
            self,
            Rule::Module(_) | Rule::Conv1d(_) | Rule::Conv1dPart { .. } | Rule::PerExpert(_)
        )
    }

    /// The checkpoint source for a canonical tensor of `shape`; `prefix` is the layer
    /// prefix already resolved (empty for globals).
    fn source(self, prefix: &str, suffix: Option<&str>, shape: &[u64]) -> Source {
        let full = |n: &str| match suffix {
            Some(s) => format!("{prefix}{n}.{s}"),
            None => format!("{prefix}{n}"),
        };
        match self {
            Rule::Module(n) | Rule::Exact(n) => Source::Plain { name: full(n) },
            Rule::Transposed(n) => Source::Transposed { name: full(n) },
            Rule::Conv1d(n) => match suffix {
                Some("weight") => Source::Transposed { name: full(n) },
                _ => Source::Plain { name: full(n) },
            },
            Rule::Conv1dPart { module, index } => {
                let weight = suffix == Some("weight");
                let len = shape.first().copied().unwrap_or(0);
                Source::Slice {
                    name: full(module),
                    axis: usize::from(weight),
                    start: index.saturating_mul(len),
                    len,
                    stride: 1,
                    transpose: weight,
                }
            }
            Rule::Part {
                name,
                axis,
                index,
                parts,
                interleaved,
                transpose,
            } => {
                // The canonical axis the sliced axis ends up as: a transpose swaps the last two.
                let rank = shape.len();
                let canon_axis = if transpose && rank >= 2 && axis + 2 >= rank {
                    if axis == rank - 1 {
                        rank - 2
                    } else {
                        rank - 1
                    }
                } else {
                    axis
                };
                let len = shape.get(canon_axis).copied().unwrap_or(0);
                let (start, stride) = if interleaved {
                    (index, parts)
                } else {
                    (index.saturating_mul(len), 1)
                };
                Source::Slice {
                    name: full(name),
                    axis,
                    start,
                    len,
                    stride,
                    transpose,
                }
            }
            Rule::PerExpert(t) => Source::Stack {
                template: full(t),
                count: shape.first().copied().unwrap_or(0),
            },
        }
    }
}

/// The HF source of a canonical tensor of `spec`, or `None` when the family's
/// checkpoints have no such tensor.
pub fn hf_source(spec: &Spec, layer: Option<usize>, local: &str, shape: &[u64]) -> Option<Source> {
    let table = hf_table(spec.family);
    resolve(&table, layer, local, shape)
}

/// The GGUF binding of a canonical tensor of `spec`, or `None` where unknown.
pub fn gguf_binding(
    spec: &Spec,
    layer: Option<usize>,
    local: &str,
    shape: &[u64],
) -> Option<GgufBinding> {
    let table = gguf_table(spec.family)?;
    let source = resolve(&table, layer, local, shape)?;
    let fix = gguf_fix(spec, layer, local);
    Some(GgufBinding { source, fix })
}

fn resolve(table: &Table, layer: Option<usize>, local: &str, shape: &[u64]) -> Option<Source> {
    let (rule, suffix) = table.lookup(layer.is_some(), local)?;
    let prefix = match layer {
        Some(i) => table.layer_prefix.replace("{i}", &i.to_string()),
        None => String::new(),
    };
    Some(rule.source(&prefix, suffix, shape))
}

/// Value fix-ups llama.cpp's converter applies per family.
fn gguf_fix(spec: &Spec, layer: Option<usize>, local: &str) -> GgufFix {
    let block = layer.and_then(|i| spec.schedule.get(i).and_then(|&b| spec.blocks.get(b)));
    let attention = block.and_then(|b| match &b.mixer {
        Mixer::Attention(a) => Some(a),
        _ => None,
    });
    let permutes = matches!(
        spec.family,
        Family::Llama | Family::Mistral | Family::Mixtral | Family::Smollm3
    );
    if permutes {
        if let Some(a) = attention.filter(|a| a.mla.is_none() && a.rope.is_some()) {
            match local {
                "attn.q.weight" | "attn.q.bias" => return GgufFix::RopePermute { heads: a.heads },
                "attn.k.weight" | "attn.k.bias" => {
                    return GgufFix::RopePermute { heads: a.kv_heads }
                }
                _ => {}
            }
        }
    }
    let is_norm_weight = local.ends_with("norm.weight");
    match spec.family {
        Family::Gemma3Text if is_norm_weight => GgufFix::PlusOne,
        Family::Qwen3Next if is_norm_weight && local != "gdn.norm.weight" => GgufFix::PlusOne,
        Family::Qwen3Next if local == "gdn.a_log" => GgufFix::NegExp,
        _ => GgufFix::None,
    }
}

// ---------------------------------------------------------------------------------
// HF tables.

const HF_GLOBAL: Entries = &[
    ("embed.tokens", Rule::Exact("model.embed_tokens.weight")),
    ("final_norm", Rule::Module("model.norm")),
    ("lm_head", Rule::Module("lm_head")),
];

/// LFM2's globals: its final norm is `embedding_norm`.
const LFM2_GLOBAL: Entries = &[
    ("embed.tokens", Rule::Exact("model.embed_tokens.weight")),
    ("final_norm", Rule::Module("model.embedding_norm")),
    ("lm_head", Rule::Module("lm_head")),
];

/// LFM2's layers: `operator_norm` before the mixer, attention with `out_proj` and
/// `q_layernorm`/`k_layernorm`, the gated short convolution under `conv`, and the
/// feed-forward as `w1` (gate), `w3` (up), `w2` (down).
const HF_LFM2: Entries = &[
    ("attn_norm", Rule::Module("operator_norm")),
    ("ffn_norm", Rule::Module("ffn_norm")),
    ("attn.q", Rule::Module("self_attn.q_proj")),
    ("attn.k", Rule::Module("self_attn.k_proj")),
    ("attn.v", Rule::Module("self_attn.v_proj")),
    ("attn.o", Rule::Module("self_attn.out_proj")),
    ("attn.q_norm", Rule::Module("self_attn.q_layernorm")),
    ("attn.k_norm", Rule::Module("self_attn.k_layernorm")),
    ("short_conv.in", Rule::Module("conv.in_proj")),
    ("short_conv.conv", Rule::Module("conv.conv")),
    ("short_conv.out", Rule::Module("conv.out_proj")),
    ("ffn.gate", Rule::Module("feed_forward.w1")),
    ("ffn.up", Rule::Module("feed_forward.w3")),
    ("ffn.down", Rule::Module("feed_forward.w2")),
];

/// Norms of pre-norm models (Llama and most others).
const HF_PRE_NORMS: Entries = &[
    ("attn_norm", Rule::Module("input_layernorm")),
    ("ffn_norm", Rule::Module("post_attention_layernorm")),
];

/// Norms of OLMo 2/3 (post placement: norm after each sub-layer's output).
const HF_OLMO_NORMS: Entries = &[
    ("attn_post_norm", Rule::Module("post_attention_layernorm")),
    ("ffn_post_norm", Rule::Module("post_feedforward_layernorm")),
];

/// Norms of Gemma 3 (sandwich).
const HF_GEMMA_NORMS: Entries = &[
    ("attn_norm", Rule::Module("input_layernorm")),
    ("attn_post_norm", Rule::Module("post_attention_layernorm")),
    ("ffn_norm", Rule::Module("pre_feedforward_layernorm")),
    ("ffn_post_norm", Rule::Module("post_feedforward_layernorm")),
];

const HF_ATTN: Entries = &[
    ("attn.q", Rule::Module("self_attn.q_proj")),
    ("attn.k", Rule::Module("self_attn.k_proj")),
    ("attn.v", Rule::Module("self_attn.v_proj")),
    ("attn.o", Rule::Module("self_attn.o_proj")),
    ("attn.q_norm", Rule::Module("self_attn.q_norm")),
    ("attn.k_norm", Rule::Module("self_attn.k_norm")),
    ("attn.sinks", Rule::Exact("self_attn.sinks")),
];

const HF_MLA: Entries = &[
    ("attn.q_a", Rule::Module("self_attn.q_a_proj")),
    ("attn.q_a_norm", Rule::Module("self_attn.q_a_layernorm")),
    ("attn.q_b", Rule::Module("self_attn.q_b_proj")),
    ("attn.kv_a", Rule::Module("self_attn.kv_a_proj_with_mqa")),
    ("attn.kv_a_norm", Rule::Module("self_attn.kv_a_layernorm")),
    ("attn.kv_b", Rule::Module("self_attn.kv_b_proj")),
];

const HF_MLP: Entries = &[
    ("ffn.gate", Rule::Module("mlp.gate_proj")),
    ("ffn.up", Rule::Module("mlp.up_proj")),
    ("ffn.down", Rule::Module("mlp.down_proj")),
];

/// Qwen-style MoE: `mlp.gate` router, per-expert `gate_proj/up_proj/down_proj`.
const HF_QWEN_MOE: Entries = &[
    ("moe.router", Rule::Module("mlp.gate")),
    (
        "moe.router.correction_bias",
        Rule::Exact("mlp.gate.e_score_correction_bias"),
    ),
    (
        "moe.experts.gate",
        Rule::PerExpert("mlp.experts.{e}.gate_proj"),
    ),
    ("moe.experts.up", Rule::PerExpert("mlp.experts.{e}.up_proj")),
    (
        "moe.experts.down",
        Rule::PerExpert("mlp.experts.{e}.down_proj"),
    ),
];

/// DeepSeek-style shared experts (`shared_experts`, one MLP of `count * hidden`).
const HF_SHARED_EXPERTS: Entries = &[
    (
        "moe.shared.gate",
        Rule::Module("mlp.shared_experts.gate_proj"),
    ),
    ("moe.shared.up", Rule::Module("mlp.shared_experts.up_proj")),
    (
        "moe.shared.down",
        Rule::Module("mlp.shared_experts.down_proj"),
    ),
];

/// Qwen3-Next's single gated shared expert.
const HF_SHARED_EXPERT_GATED: Entries = &[
    (
        "moe.shared.gate",
        Rule::Module("mlp.shared_expert.gate_proj"),
    ),
    ("moe.shared.up", Rule::Module("mlp.shared_expert.up_proj")),
    (
        "moe.shared.down",
        Rule::Module("mlp.shared_expert.down_proj"),
    ),
    ("moe.shared_gate", Rule::Module("mlp.shared_expert_gate")),
];

/// Mixtral-style MoE: `block_sparse_moe`, experts `w1` (gate), `w3` (up), `w2` (down).
const HF_MIXTRAL_MOE: Entries = &[
    ("moe.router", Rule::Module("block_sparse_moe.gate")),
    (
        "moe.router.correction_bias",
        Rule::Exact("block_sparse_moe.e_score_correction_bias"),
    ),
    (
        "moe.experts.gate",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w1"),
    ),
    (
        "moe.experts.up",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w3"),
    ),
    (
        "moe.experts.down",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w2"),
    ),
];

/// Kimi Linear's MoE: Mixtral-style experts, DeepSeek-style router and shared experts.
const HF_KIMI_MOE: Entries = &[
    ("moe.router", Rule::Module("block_sparse_moe.gate")),
    (
        "moe.router.correction_bias",
        Rule::Exact("block_sparse_moe.gate.e_score_correction_bias"),
    ),
    (
        "moe.experts.gate",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w1"),
    ),
    (
        "moe.experts.up",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w3"),
    ),
    (
        "moe.experts.down",
        Rule::PerExpert("block_sparse_moe.experts.{e}.w2"),
    ),
    (
        "moe.shared.gate",
        Rule::Module("block_sparse_moe.shared_experts.gate_proj"),
    ),
    (
        "moe.shared.up",
        Rule::Module("block_sparse_moe.shared_experts.up_proj"),
    ),
    (
        "moe.shared.down",
        Rule::Module("block_sparse_moe.shared_experts.down_proj"),
    ),
];

/// GPT-OSS: fused `[E, H, 2I]` gate/up with gate and up interleaved, `[E, I, H]` down.
const HF_GPT_OSS_MOE: Entries = &[
    ("moe.router", Rule::Module("mlp.router")),
    (
        "moe.experts.gate.weight",
        Rule::Part {
            name: "mlp.experts.gate_up_proj",
            axis: 2,
            index: 0,
            parts: 2,
            interleaved: true,
            transpose: true,
        },
    ),
    (
        "moe.experts.up.weight",
        Rule::Part {
            name: "mlp.experts.gate_up_proj",
            axis: 2,
            index: 1,
            parts: 2,
            interleaved: true,
            transpose: true,
        },
    ),
    (
        "moe.experts.gate.bias",
        Rule::Part {
            name: "mlp.experts.gate_up_proj_bias",
            axis: 1,
            index: 0,
            parts: 2,
            interleaved: true,
            transpose: false,
        },
    ),
    (
        "moe.experts.up.bias",
        Rule::Part {
            name: "mlp.experts.gate_up_proj_bias",
            axis: 1,
            index: 1,
            parts: 2,
            interleaved: true,
            transpose: false,
        },
    ),
    (
        "moe.experts.down.weight",
        Rule::Transposed("mlp.experts.down_proj"),
    ),
    (
        "moe.experts.down.bias",
        Rule::Exact("mlp.experts.down_proj_bias"),
    ),
];

/// Llama 4 text: `feed_forward`, fused `[E, H, 2I]` gate/up (gate first), `[E, I, H]` down.
const HF_LLAMA4_FFN: Entries = &[
    ("ffn.gate", Rule::Module("feed_forward.gate_proj")),
    ("ffn.up", Rule::Module("feed_forward.up_proj")),
    ("ffn.down", Rule::Module("feed_forward.down_proj")),
    ("moe.router", Rule::Module("feed_forward.router")),
    (
        "moe.experts.gate.weight",
        Rule::Part {
            name: "feed_forward.experts.gate_up_proj",
            axis: 2,
            index: 0,
            parts: 2,
            interleaved: false,
            transpose: true,
        },
    ),
    (
        "moe.experts.up.weight",
        Rule::Part {
            name: "feed_forward.experts.gate_up_proj",
            axis: 2,
            index: 1,
            parts: 2,
            interleaved: false,
            transpose: true,
        },
    ),
    (
        "moe.experts.down.weight",
        Rule::Transposed("feed_forward.experts.down_proj"),
    ),
    (
        "moe.shared.gate",
        Rule::Module("feed_forward.shared_expert.gate_proj"),
    ),
    (
        "moe.shared.up",
        Rule::Module("feed_forward.shared_expert.up_proj"),
    ),
    (
        "moe.shared.down",
        Rule::Module("feed_forward.shared_expert.down_proj"),
    ),
];

/// Qwen3-Next's Gated DeltaNet (`linear_attn`).
const HF_GDN: Entries = &[
    ("gdn.in_qkvz", Rule::Module("linear_attn.in_proj_qkvz")),
    ("gdn.in_ba", Rule::Module("linear_attn.in_proj_ba")),
    ("gdn.conv", Rule::Module("linear_attn.conv1d")),
    ("gdn.dt_bias", Rule::Exact("linear_attn.dt_bias")),
    ("gdn.a_log", Rule::Exact("linear_attn.A_log")),
    ("gdn.norm", Rule::Module("linear_attn.norm")),
    ("gdn.out", Rule::Module("linear_attn.out_proj")),
];

/// Kimi Delta Attention, stored under `self_attn` as the hub checkpoints have it.
const HF_KDA: Entries = &[
    ("kda.q", Rule::Module("self_attn.q_proj")),
    ("kda.k", Rule::Module("self_attn.k_proj")),
    ("kda.v", Rule::Module("self_attn.v_proj")),
    ("kda.q_conv", Rule::Module("self_attn.q_conv1d")),
    ("kda.k_conv", Rule::Module("self_attn.k_conv1d")),
    ("kda.v_conv", Rule::Module("self_attn.v_conv1d")),
    ("kda.f_a", Rule::Module("self_attn.f_a_proj")),
    ("kda.f_b", Rule::Module("self_attn.f_b_proj")),
    ("kda.dt_bias", Rule::Exact("self_attn.dt_bias")),
    ("kda.a_log", Rule::Exact("self_attn.A_log")),
    ("kda.b", Rule::Module("self_attn.b_proj")),
    ("kda.g_a", Rule::Module("self_attn.g_a_proj")),
    ("kda.g_b", Rule::Module("self_attn.g_b_proj")),
    ("kda.o_norm", Rule::Module("self_attn.o_norm")),
    ("kda.o", Rule::Module("self_attn.o_proj")),
];

const GPT2_GLOBAL: Entries = &[
    ("embed.tokens", Rule::Exact("transformer.wte.weight")),
    ("embed.positions", Rule::Exact("transformer.wpe.weight")),
    ("final_norm", Rule::Module("transformer.ln_f")),
    ("lm_head", Rule::Module("lm_head")),
];

const GPT2_LAYER: Entries = &[
    ("attn_norm", Rule::Module("ln_1")),
    ("ffn_norm", Rule::Module("ln_2")),
    (
        "attn.q",
        Rule::Conv1dPart {
            module: "attn.c_attn",
            index: 0,
        },
    ),
    (
        "attn.k",
        Rule::Conv1dPart {
            module: "attn.c_attn",
            index: 1,
        },
    ),
    (
        "attn.v",
        Rule::Conv1dPart {
            module: "attn.c_attn",
            index: 2,
        },
    ),
    ("attn.o", Rule::Conv1d("attn.c_proj")),
    ("ffn.up", Rule::Conv1d("mlp.c_fc")),
    ("ffn.down", Rule::Conv1d("mlp.c_proj")),
];

const MODEL_LAYERS: &str = "model.layers.{i}.";

/// The HF naming table of a family.
pub fn hf_table(family: Family) -> Table {
    let t = |layer: &'static [Entries]| Table {
        layer_prefix: MODEL_LAYERS,
        global: HF_GLOBAL,
        layer,
    };
    match family {
        Family::Gpt2 => Table {
            layer_prefix: "transformer.h.{i}.",
            global: GPT2_GLOBAL,
            layer: &[GPT2_LAYER],
        },
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 | Family::Smollm3 => {
            t(&[HF_PRE_NORMS, HF_ATTN, HF_MLP])
        }
        Family::Mixtral | Family::MinimaxM2 => t(&[HF_PRE_NORMS, HF_ATTN, HF_MLP, HF_MIXTRAL_MOE]),
        Family::Qwen3Moe => t(&[
            HF_PRE_NORMS,
            HF_ATTN,
            HF_MLP,
            HF_QWEN_MOE,
            HF_SHARED_EXPERTS,
        ]),
        Family::Gemma3Text => t(&[HF_GEMMA_NORMS, HF_ATTN, HF_MLP]),
        Family::Olmo2 | Family::Olmo3 => t(&[HF_OLMO_NORMS, HF_ATTN, HF_MLP]),
        Family::DeepseekV3 | Family::Glm4Moe => t(&[
            HF_PRE_NORMS,
            HF_ATTN,
            HF_MLA,
            HF_MLP,
            HF_QWEN_MOE,
            HF_SHARED_EXPERTS,
        ]),
        Family::GptOss => t(&[HF_PRE_NORMS, HF_ATTN, HF_GPT_OSS_MOE]),
        Family::Llama4Text => t(&[HF_PRE_NORMS, HF_ATTN, HF_LLAMA4_FFN]),
        Family::Qwen3Next => t(&[
            HF_PRE_NORMS,
            HF_ATTN,
            HF_GDN,
            HF_MLP,
            HF_QWEN_MOE,
            HF_SHARED_EXPERT_GATED,
        ]),
        Family::KimiLinear => t(&[HF_PRE_NORMS, HF_KDA, HF_ATTN, HF_MLA, HF_MLP, HF_KIMI_MOE]),
        Family::Lfm2 => Table {
            layer_prefix: MODEL_LAYERS,
            global: LFM2_GLOBAL,
            layer: &[HF_LFM2],
        },
    }
}

// ---------------------------------------------------------------------------------
// GGUF tables (llama.cpp tensor names). Shapes are torch order, i.e. GGUF `ne` reversed.

const GGUF_GLOBAL: Entries = &[
    ("embed.tokens", Rule::Exact("token_embd.weight")),
    ("embed.positions", Rule::Exact("position_embd.weight")),
    ("embed.token_types", Rule::Exact("token_types.weight")),
    ("embed.norm", Rule::Module("token_embd_norm")),
    ("final_norm", Rule::Module("output_norm")),
    ("lm_head", Rule::Module("output")),
];

const GGUF_NORMS: Entries = &[
    ("attn_norm", Rule::Module("attn_norm")),
    ("attn_post_norm", Rule::Module("post_attention_norm")),
    ("ffn_norm", Rule::Module("ffn_norm")),
    ("ffn_post_norm", Rule::Module("post_ffw_norm")),
];

/// GPT-OSS: llama.cpp keeps HF's name `post_attention_layernorm` for the norm before the
/// MLP (`post_attention_norm`), and has no norm after either sublayer.
const GGUF_GPT_OSS_NORMS: Entries = &[
    ("attn_norm", Rule::Module("attn_norm")),
    ("ffn_norm", Rule::Module("post_attention_norm")),
];

const GGUF_ATTN: Entries = &[
    ("attn.q", Rule::Module("attn_q")),
    ("attn.k", Rule::Module("attn_k")),
    ("attn.v", Rule::Module("attn_v")),
    ("attn.o", Rule::Module("attn_output")),
    ("attn.q_norm", Rule::Module("attn_q_norm")),
    ("attn.k_norm", Rule::Module("attn_k_norm")),
    ("attn.sinks", Rule::Exact("attn_sinks.weight")),
    ("attn.q_a", Rule::Module("attn_q_a")),
    ("attn.q_a_norm", Rule::Module("attn_q_a_norm")),
    ("attn.q_b", Rule::Module("attn_q_b")),
    ("attn.kv_a", Rule::Module("attn_kv_a_mqa")),
    ("attn.kv_a_norm", Rule::Module("attn_kv_a_norm")),
    // Older conversions; newer llama.cpp splits this into attn_k_b / attn_v_b.
    ("attn.kv_b", Rule::Module("attn_kv_b")),
];

const GGUF_FFN: Entries = &[
    ("ffn.gate", Rule::Module("ffn_gate")),
    ("ffn.up", Rule::Module("ffn_up")),
    ("ffn.down", Rule::Module("ffn_down")),
    ("moe.router", Rule::Module("ffn_gate_inp")),
    (
        "moe.router.correction_bias",
        Rule::Exact("exp_probs_b.bias"),
    ),
    ("moe.experts.gate", Rule::Module("ffn_gate_exps")),
    ("moe.experts.up", Rule::Module("ffn_up_exps")),
    ("moe.experts.down", Rule::Module("ffn_down_exps")),
    ("moe.shared.gate", Rule::Module("ffn_gate_shexp")),
    ("moe.shared.up", Rule::Module("ffn_up_shexp")),
    ("moe.shared.down", Rule::Module("ffn_down_shexp")),
    ("moe.shared_gate", Rule::Module("ffn_gate_inp_shexp")),
];

/// Qwen3-Next's linear attention. The fused input projections are left unbound: the
/// converter's row order for them is not pinned down here.
const GGUF_GDN: Entries = &[
    ("gdn.conv", Rule::Module("ssm_conv1d")),
    ("gdn.dt_bias", Rule::Exact("ssm_dt.bias")),
    ("gdn.a_log", Rule::Exact("ssm_a")),
    ("gdn.norm", Rule::Module("ssm_norm")),
    ("gdn.out", Rule::Module("ssm_out")),
];

/// GPT-2 keeps the fused QKV projection (already transposed to `[3H, H]`).
const GGUF_GPT2_ATTN: Entries = &[
    (
        "attn.q.weight",
        Rule::Part {
            name: "attn_qkv.weight",
            axis: 0,
            index: 0,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
    (
        "attn.k.weight",
        Rule::Part {
            name: "attn_qkv.weight",
            axis: 0,
            index: 1,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
    (
        "attn.v.weight",
        Rule::Part {
            name: "attn_qkv.weight",
            axis: 0,
            index: 2,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
    (
        "attn.q.bias",
        Rule::Part {
            name: "attn_qkv.bias",
            axis: 0,
            index: 0,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
    (
        "attn.k.bias",
        Rule::Part {
            name: "attn_qkv.bias",
            axis: 0,
            index: 1,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
    (
        "attn.v.bias",
        Rule::Part {
            name: "attn_qkv.bias",
            axis: 0,
            index: 2,
            parts: 3,
            interleaved: false,
            transpose: false,
        },
    ),
];

/// LFM2 in llama.cpp: the final norm is `token_embd_norm`, the short convolution
/// `shortconv.*` (its weight squeezed to `[hidden, taps]`, which binding reads as the
/// canonical `[hidden, 1, taps]`).
const GGUF_LFM2_GLOBAL: Entries = &[
    ("embed.tokens", Rule::Exact("token_embd.weight")),
    ("final_norm", Rule::Module("token_embd_norm")),
    ("lm_head", Rule::Module("output")),
];

const GGUF_LFM2: Entries = &[
    ("short_conv.in", Rule::Module("shortconv.in_proj")),
    ("short_conv.conv", Rule::Module("shortconv.conv")),
    ("short_conv.out", Rule::Module("shortconv.out_proj")),
];

/// The GGUF naming table of a family, or `None` where llama.cpp's layout is not known here.
pub fn gguf_table(family: Family) -> Option<Table> {
    let t = |layer: &'static [Entries]| Table {
        layer_prefix: "blk.{i}.",
        global: GGUF_GLOBAL,
        layer,
    };
    Some(match family {
        Family::Gpt2 => t(&[GGUF_NORMS, GGUF_GPT2_ATTN, GGUF_ATTN, GGUF_FFN]),
        Family::Qwen3Next => t(&[GGUF_NORMS, GGUF_ATTN, GGUF_GDN, GGUF_FFN]),
        Family::GptOss => t(&[GGUF_GPT_OSS_NORMS, GGUF_ATTN, GGUF_FFN]),
        Family::Lfm2 => Table {
            layer_prefix: "blk.{i}.",
            global: GGUF_LFM2_GLOBAL,
            layer: &[GGUF_NORMS, GGUF_ATTN, GGUF_LFM2, GGUF_FFN],
        },
        Family::KimiLinear => return None,
        _ => t(&[GGUF_NORMS, GGUF_ATTN, GGUF_FFN]),
    })
}
