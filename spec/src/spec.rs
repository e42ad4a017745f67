//! The validated model description: every default applied, every number resolved.
//!
//! A `Spec` knows nothing of pest, source spans, LLVM or weight files. It is what the
//! validator produces from a `.arch` file and what `import` produces from an HF config,
//! and it is the only input of stats, lowering and weight binding.

use serde::{Deserialize, Serialize};

/// A whole model: global sizes, embeddings, the distinct layer variants and the
/// per-layer schedule that picks one variant for every layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Human-readable model name, e.g. `llama-3.1-8b`.
    pub name: String,
    /// Checkpoint naming convention (the HF `model_type` the weights come from).
    pub family: Family,
    pub vocab: u64,
    pub hidden: u64,
    /// Number of layers; `schedule.len() == layers`.
    pub layers: u64,
    /// Maximum context length in tokens.
    pub context: u64,
    /// Storage dtype of the weights.
    pub dtype: DType,
    /// Output head shares the token-embedding matrix.
    pub tied: bool,
    /// Multiply token embeddings by this factor (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    /// Learned absolute position embeddings with this many rows (GPT-2, BERT).
    pub learned_positions: Option<u64>,
    /// Token-type (segment) embeddings with this many rows (BERT).
    pub token_types: Option<u64>,
    /// Norm applied to the embeddings before the first layer (BERT).
    pub embed_norm: Option<Norm>,
    /// Norm applied after the last layer, before the output head.
    pub final_norm: Option<Norm>,
    /// Final-logit softcap: `logits = cap * tanh(logits / cap)`.
    pub logit_softcap: Option<f64>,
    /// Multi-token-prediction layers the checkpoint carries after the model's own (DeepSeek
    /// V3, GLM-4.5, Qwen3-Next). archc does not run them: binding accepts their tensors,
    /// leaves them unread with a note, and `stats` counts their parameters apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtp: u64,
    /// Distinct layer variants, in declaration order.
    pub blocks: Vec<Block>,
    /// For every layer, the index into `blocks` of its variant.
    pub schedule: Vec<usize>,
}

/// Checkpoint naming convention: which HF model type (and which GGUF architecture)
/// the parameter tensors are named after. One variant per supported HF `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Gpt2,
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3Text,
    Olmo2,
    Olmo3,
    Smollm3,
    DeepseekV3,
    GptOss,
    Glm4Moe,
    MinimaxM2,
    Llama4Text,
    Qwen3Next,
    KimiLinear,
    Lfm2,
}

impl Family {
    /// Every family, in a stable order (used for "did you mean" and error lists).
    pub const ALL: [Family; 19] = [
        Family::Gpt2,
        Family::Llama,
        Family::Mistral,
        Family::Mixtral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Qwen3Moe,
        Family::Gemma3Text,
        Family::Olmo2,
        Family::Olmo3,
        Family::Smollm3,
        Family::DeepseekV3,
        Family::GptOss,
        Family::Glm4Moe,
        Family::MinimaxM2,
        Family::Llama4Text,
        Family::Qwen3Next,
        Family::KimiLinear,
        Family::Lfm2,
    ];

    /// The word used in `.arch` files and equal to the HF `model_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Mixtral => "mixtral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Gemma3Text => "gemma3_text",
            Family::Olmo2 => "olmo2",
            Family::Olmo3 => "olmo3",
            Family::Smollm3 => "smollm3",
            Family::DeepseekV3 => "deepseek_v3",
            Family::GptOss => "gpt_oss",
            Family::Glm4Moe => "glm4_moe",
            Family::MinimaxM2 => "minimax_m2",
            Family::Llama4Text => "llama4_text",
            Family::Qwen3Next => "qwen3_next",
            Family::KimiLinear => "kimi_linear",
            Family::Lfm2 => "lfm2",
        }
    }

    pub fn from_name(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Storage dtype of weights (and of the KV cache in stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F16,
    Bf16,
    /// 8-bit float (e4m3), as DeepSeek V3 ships its weights.
    F8,
}

impl DType {
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::F8 => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F8 => "f8",
        }
    }
}

/// One layer variant: token mixer, feed-forward, and how norms wrap them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The variant's name in the source (`default` for an unnamed block).
    pub name: String,
    pub placement: Placement,
    /// The norm used around the mixer and the feed-forward.
    pub norm: Norm,
    pub mixer: Mixer,
    pub ffn: Ffn,
}

/// Where the norms sit relative to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `x + f(norm(x))` (GPT-2, Llama and most modern models).
    Pre,
    /// Post-norm inside the residual: `x + norm(f(x))` (OLMo 2).
    Post,
    /// Both: `x + norm(f(norm(x)))` (Gemma 2/3).
    Sandwich,
    /// Classic post-LN: `norm(x + f(x))` (BERT, original transformer).
    PostLn,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f64,
    /// LayerNorm has a learned bias (ignored for RMSNorm).
    pub bias: bool,
    /// The weight is applied as `(1 + w)` (Gemma, Qwen3-Next); RMSNorm only.
    pub plus_one: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}

/// The token mixer of a layer.
// A Spec holds a handful of these, built once; boxing would only add noise at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixer {
    Attention(Attention),
    /// Gated DeltaNet (Qwen3-Next's linear attention).
    GatedDeltaNet(GatedDeltaNet),
    /// Kimi Delta Attention (Kimi Linear).
    KimiDelta(KimiDelta),
    /// A gated short convolution (LFM2).
    ShortConv(ShortConv),
}

/// Softmax attention in all its current variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    pub heads: u64,
    /// KV heads: equal to `heads` for MHA, 1 for MQA, a divisor otherwise (GQA).
    pub kv_heads: u64,
    /// Query/key head dimension (for MLA: `nope_dim + rope_dim`).
    pub head_dim: u64,
    /// Value head dimension (equal to `head_dim` except for MLA).
    pub v_head_dim: u64,
    /// Multi-head latent attention (DeepSeek V2/V3, Kimi K2).
    pub mla: Option<Mla>,
    pub bias: AttnBias,
    pub qk_norm: QkNorm,
    pub causal: bool,
    /// Sliding window: a query attends to at most this many most recent keys (itself included).
    pub window: Option<u64>,
    /// Chunked attention: a query attends only within its aligned chunk of this many tokens (Llama 4).
    pub chunk: Option<u64>,
    /// One learned sink logit per head that joins the softmax denominator (GPT-OSS).
    pub sinks: bool,
    /// Attention-logit softcap: `s = cap * tanh(s / cap)` (Gemma 2).
    pub softcap: Option<f64>,
    /// Query scale override; `None` means `1 / sqrt(head_dim)` (adjusted by YaRN where it applies).
    pub scale: Option<f64>,
    /// Sigmoid output gate computed from the query projection (Qwen3-Next).
    pub gate: bool,
    /// Attention temperature tuning on NoPE layers (Llama 4); `None` wherever `rope` is
    /// set (`check_spec` refuses it there, as lowering would ignore it).
    pub temperature: Option<Temperature>,
    /// Rotary embedding; `None` is a NoPE layer.
    pub rope: Option<Rope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttnBias {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub o: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mla {
    /// Rank of the low-rank query projection; `None` projects queries directly.
    pub q_rank: Option<u64>,
    /// Rank of the compressed KV latent (what the cache stores, plus the RoPE key).
    pub kv_rank: u64,
    /// Per-head query/key dims without RoPE.
    pub nope_dim: u64,
    /// Per-head query/key dims with RoPE (the RoPE key is shared by all heads).
    pub rope_dim: u64,
    /// Per-head value dim.
    pub v_dim: u64,
}

/// Normalisation of queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    None,
    /// A norm over each head's `head_dim` (Qwen3, Gemma 3); weights of size head_dim.
    PerHead(Norm),
    /// A norm over the whole projection (OLMo 2, MiniMax-M2); weights of size heads*head_dim.
    Full(Norm),
    /// Weightless L2 normalisation per head (Llama 4).
    L2 {
        eps: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// Positions are bucketed by `floor((pos + 1) / floor_scale)`.
    pub floor_scale: f64,
    /// Query scale is `1 + attn_scale * ln(bucket + 1)`.
    pub attn_scale: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub theta: f64,
    /// Rotated dimensions per head (partial rotary when below head_dim); even.
    pub dims: u64,
    pub pairing: Pairing,
    pub scaling: RopeScaling,
}

/// Which dimensions form rotation pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// `(i, i + dims/2)`: the HF `rotate_half` convention.
    Half,
    /// `(2i, 2i + 1)`: the original RoPE / GPT-J convention.
    Interleaved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: u64,
    },
    Yarn {
        factor: f64,
        original_context: u64,
        beta_fast: f64,
        beta_slow: f64,
        /// `mscale` of DeepSeek's YaRN variant (1.0 when absent).
        mscale: f64,
        /// `mscale_all_dim` of DeepSeek's YaRN variant (0.0 when absent).
        mscale_all_dim: f64,
        /// Explicit attention factor; `None` derives it from the factor.
        attention_factor: Option<f64>,
        /// Round the correction range to whole dims (HF default true).
        truncate: bool,
    },
}

/// Gated DeltaNet linear attention (Qwen3-Next).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedDeltaNet {
    pub k_heads: u64,
    pub v_heads: u64,
    pub k_head_dim: u64,
    pub v_head_dim: u64,
    /// Short causal convolution kernel size.
    pub conv: u64,
}

/// Kimi Delta Attention (Kimi Linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KimiDelta {
    pub heads: u64,
    pub head_dim: u64,
    /// Short causal convolution kernel size.
    pub conv: u64,
}

/// LFM2's gated short convolution: `in` projects to `B`, `C` and `x` (each `hidden`
/// wide); `B * x` passes a causal depthwise convolution of `conv` taps; the result times
/// `C` goes through `out`. Its state is the convolution's last `conv - 1` input rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortConv {
    /// Convolution kernel size (taps).
    pub conv: u64,
    /// Biases on the two projections and the convolution.
    pub bias: bool,
}

/// The feed-forward of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ffn {
    Mlp(Mlp),
    Moe(Moe),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    pub hidden: u64,
    pub act: Activation,
    /// Gated (GLU): `down(act(gate(x)) * up(x))`; plain: `down(act(up(x)))`.
    pub gated: bool,
    pub bias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
    /// GPT-OSS: gate clamped above at `limit`, up clamped to ±limit,
    /// `(up + 1) * gate * sigmoid(alpha * gate)`. Always gated.
    ClampedSwiglu {
        alpha: f64,
        limit: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moe {
    pub experts: u64,
    pub top_k: u64,
    /// Hidden size of each routed expert.
    pub hidden: u64,
    pub act: Activation,
    pub gated: bool,
    /// Experts carry biases (GPT-OSS).
    pub bias: bool,
    pub shared: Option<SharedExperts>,
    pub router: Router,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedExperts {
    pub count: u64,
    /// Hidden size of one shared expert; the shared MLP has `count * hidden`.
    pub hidden: u64,
    /// Scale the shared output by `sigmoid(w · x)` (Qwen3-Next).
    pub gate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Router {
    pub score: RouterScore,
    /// Select the top-k on raw logits first, then score only those (GPT-OSS, Llama 4).
    pub topk_first: bool,
    /// Renormalise the selected weights to sum to one.
    pub renormalize: bool,
    /// Multiply the routed output by this factor.
    pub scale: f64,
    /// A learned bias added to scores for selection only (DeepSeek V3).
    pub correction_bias: bool,
    /// Group-limited routing.
    pub groups: Option<RouterGroups>,
    /// The router projection has a bias (GPT-OSS).
    pub bias: bool,
    /// Apply routing weights to the expert input instead of its output (Llama 4).
    pub weight_input: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterScore {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGroups {
    /// Experts are split into this many equal groups.
    pub count: u64,
    /// Only experts of the best `keep` groups (by the sum of each group's top-2 scores) are eligible.
    pub keep: u64,
}

impl Spec {
    /// The block a layer runs.
    pub fn block(&self, layer: usize) -> &Block {
        &self.blocks[self.schedule[layer]]
    }
}

/// For serde: a zero count is left out of the JSON form (what specs without MTP layers
/// have always written).
fn is_zero(n: &u64) -> bool {
    *n == 0
}
