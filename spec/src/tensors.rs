//! Every parameter tensor of a model: canonical name, shape, role, and where it lives in
//! an HF safetensors checkpoint and a GGUF file.
//!
//! The canonical names are the contract between this crate, the compiler (which names
//! graph parameters after them) and the runtime (which binds checkpoint tensors to them).
//! Shapes follow torch `Linear`: `[out, in]`. Per-layer tensors carry the prefix
//! `layers.{i}.`. The list is in a stable order: global embeddings, then every layer in
//! order (norms around the mixer, the mixer, norms around the feed-forward, the
//! feed-forward), then the final norm and the output head.
//!
//! Linear-attention tensors (`gdn.` for Gated DeltaNet, `kda.` for Kimi Delta) keep
//! exactly the shapes HF's modeling code gives them, including the depthwise-conv
//! `[channels, 1, kernel]` layout and Kimi's `A_log` of shape `[1, 1, heads, 1]`.

use crate::naming;
use crate::spec::{
    Attention, Block, Ffn, GatedDeltaNet, KimiDelta, Mixer, Mla, Moe, Norm, NormKind, QkNorm,
    ShortConv, Spec,
};
use serde::Serialize;

/// One parameter tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    /// Canonical name, e.g. `layers.3.attn.q.weight`.
    pub name: String,
    /// Shape in torch order (`[out, in]` for projections).
    pub shape: Vec<u64>,
    /// Which part of the model the tensor belongs to (used by stats).
    pub role: Role,
    /// The layer the tensor belongs to; `None` for global tensors.
    pub layer: Option<usize>,
    /// How to build this tensor from an HF safetensors checkpoint of `spec.family`;
    /// `None` when that family has no such tensor (a feature the family never uses).
    pub hf: Option<Source>,
    /// How to build this tensor from a llama.cpp GGUF file; `None` where unknown.
    pub gguf: Option<GgufBinding>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Whether the tensor counts as a parameter. The router's correction bias does not:
    /// HF keeps it as a buffer, moved by a load-balancing rule rather than by gradients,
    /// so HF's parameter counts leave it out, though checkpoints store it.
    pub fn is_parameter(&self) -> bool {
        !self.name.ends_with("moe.router.correction_bias")
    }

    /// Parameters this tensor contributes: `numel` when it is one, else 0.
    pub fn param_count(&self) -> u64 {
        if self.is_parameter() {
            self.numel()
        } else {
            0
        }
    }
}

/// The component a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Token, position and token-type embeddings.
    Embedding,
    /// Softmax attention, including its internal norms (QK-norm, MLA latent norms) and sinks.
    Attention,
    /// Recurrent mixers: linear attention (Gated DeltaNet, Kimi Delta), including their
    /// internal norms, and gated short convolutions (LFM2).
    LinearAttention,
    /// Dense feed-forward.
    Ffn,
    /// Routed experts of a MoE layer (weights and expert biases).
    RoutedExpert,
    /// Shared experts of a MoE layer, including the shared-expert gate.
    SharedExpert,
    /// The router projection, its bias and its selection-only correction bias.
    Router,
    /// Block norms, the embedding norm and the final norm.
    Norm,
    /// The output head (absent when tied).
    Head,
}

impl Role {
    /// Every role, in report order.
    pub const ALL: [Role; 9] = [
        Role::Embedding,
        Role::Attention,
        Role::LinearAttention,
        Role::Ffn,
        Role::RoutedExpert,
        Role::SharedExpert,
        Role::Router,
        Role::Norm,
        Role::Head,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Embedding => "embedding",
            Role::Attention => "attention",
            Role::LinearAttention => "linear_attention",
            Role::Ffn => "ffn",
            Role::RoutedExpert => "routed_expert",
            Role::SharedExpert => "shared_expert",
            Role::Router => "router",
            Role::Norm => "norm",
            Role::Head => "head",
        }
    }
}

/// How to build one canonical tensor from tensors stored in a checkpoint, as data.
///
/// A 3-D fused expert tensor already in canonical layout (`[E, out, in]`) is `Plain`;
/// one stored as `[E, in, out]` (Llama 4, GPT-OSS) is a `Slice` or `Transposed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The stored tensor as it is.
    Plain { name: String },
    /// The stored tensor with its last two axes swapped (GPT-2's Conv1D stores `[in, out]`).
    Transposed { name: String },
    /// Part of a fused tensor: along `axis` of the stored tensor take `len` entries,
    /// the first at `start` and each next `stride` further on; then, when `transpose`,
    /// swap the last two axes. GPT-2's `c_attn` is three contiguous parts (`stride` 1);
    /// GPT-OSS's `gate_up_proj` interleaves gate and up (`stride` 2).
    Slice {
        name: String,
        axis: usize,
        start: u64,
        len: u64,
        stride: u64,
        transpose: bool,
    },
    /// Per-expert 2-D tensors stacked on a new leading axis: expert `e` is `template`
    /// with `{e}` replaced by `e`, for `e` in `0..count`.
    Stack { template: String, count: u64 },
}

impl Source {
    /// Every stored tensor this source reads, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Source::Plain { name } | Source::Transposed { name } | Source::Slice { name, .. } => {
                vec![name.clone()]
            }
            Source::Stack { template, count } => (0..*count)
                .map(|e| template.replace("{e}", &e.to_string()))
                .collect(),
        }
    }
}

/// Where a canonical tensor lives in a llama.cpp GGUF file, and the fix-up its values need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufBinding {
    /// Shapes in `source` are in torch (row-major) order, i.e. GGUF `ne` reversed.
    pub source: Source,
    pub fix: GgufFix,
}

/// A value transformation llama.cpp's converter applied that the runtime must undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GgufFix {
    None,
    /// Q/K rows were permuted from HF's half-split RoPE layout to interleaved pairs
    /// (llama.cpp `permute(w, heads)`), with this many heads in the projection.
    RopePermute {
        heads: u64,
    },
    /// The norm weight was stored as `1 + w` (Gemma, Qwen3-Next `(1 + w)` norms).
    PlusOne,
    /// `A_log` was stored as `-exp(A_log)` (Qwen3-Next `ssm_a`).
    NegExp,
}

/// Every parameter tensor of `spec`, in a stable order, with its checkpoint bindings.
pub fn tensors(spec: &Spec) -> Vec<TensorSpec> {
    let mut b = Builder {
        spec,
        out: Vec::new(),
        layer: None,
    };
    let h = spec.hidden;
    b.push("embed.tokens", vec![spec.vocab, h], Role::Embedding);
    if let Some(rows) = spec.learned_positions {
        b.push("embed.positions", vec![rows, h], Role::Embedding);
    }
    if let Some(n) = spec.token_types {
        b.push("embed.token_types", vec![n, h], Role::Embedding);
    }
    if let Some(norm) = &spec.embed_norm {
        b.norm("embed.norm", norm, h, Role::Norm);
    }
    for (i, &index) in spec.schedule.iter().enumerate() {
        // A schedule entry without a block (only in an unchecked spec) lists nothing.
        if let Some(block) = spec.blocks.get(index) {
            b.layer = Some(i);
            b.block(block);
        }
    }
    b.layer = None;
    if let Some(norm) = &spec.final_norm {
        b.norm("final_norm", norm, h, Role::Norm);
    }
    if !spec.tied {
        b.push("lm_head.weight", vec![spec.vocab, h], Role::Head);
    }
    b.out
}

/// Number of parameter tensors of `spec`.
pub fn tensor_count(spec: &Spec) -> usize {
    tensors(spec).len()
}

/// Total number of parameters of `spec` (tied embeddings counted once, the router's
/// correction bias not at all; see [`TensorSpec::is_parameter`]).
pub fn params(spec: &Spec) -> u64 {
    tensors(spec)
        .iter()
        .fold(0u64, |n, t| n.saturating_add(t.param_count()))
}

/// Accumulates tensors; `layer` is the layer being listed (`None` for globals).
struct Builder<'a> {
    spec: &'a Spec,
    out: Vec<TensorSpec>,
    layer: Option<usize>,
}

impl Builder<'_> {
    /// Adds one tensor; `local` is the name without the `layers.{i}.` prefix.
    fn push(&mut self, local: &str, shape: Vec<u64>, role: Role) {
        let name = match self.layer {
            Some(i) => format!("layers.{i}.{local}"),
            None => local.to_string(),
        };
        let hf = naming::hf_source(self.spec, self.layer, local, &shape);
        let gguf = naming::gguf_binding(self.spec, self.layer, local, &shape);
        self.out.push(TensorSpec {
            name,
            shape,
            role,
            layer: self.layer,
            hf,
            gguf,
        });
    }

    /// `{base}.weight` and, for LayerNorm with bias, `{base}.bias`.
    fn norm(&mut self, base: &str, norm: &Norm, dim: u64, role: Role) {
        self.push(&format!("{base}.weight"), vec![dim], role);
        if norm.kind == NormKind::LayerNorm && norm.bias {
            self.push(&format!("{base}.bias"), vec![dim], role);
        }
    }

    /// A projection `[out, inp]` with an optional bias `[out]`.
    fn linear(&mut self, base: &str, out: u64, inp: u64, bias: bool, role: Role) {
        self.push(&format!("{base}.weight"), vec![out, inp], role);
        if bias {
            self.push(&format!("{base}.bias"), vec![out], role);
        }
    }

    fn block(&mut self, block: &Block) {
        use crate::spec::Placement;
        let h = self.spec.hidden;
        let (pre, post) = match block.placement {
            Placement::Pre => (true, false),
            Placement::Post | Placement::PostLn => (false, true),
            Placement::Sandwich => (true, true),
        };
        if pre {
            self.norm("attn_norm", &block.norm, h, Role::Norm);
        }
        match &block.mixer {
            Mixer::Attention(a) => self.attention(a),
            Mixer::GatedDeltaNet(g) => self.gated_deltanet(g),
            Mixer::KimiDelta(k) => self.kimi_delta(k),
            Mixer::ShortConv(c) => self.short_conv(c),
        }
        if post {
            self.norm("attn_post_norm", &block.norm, h, Role::Norm);
        }
        if pre {
            self.norm("ffn_norm", &block.norm, h, Role::Norm);
        }
        match &block.ffn {
            Ffn::Mlp(m) => {
                if m.gated || m.act.is_gated() {
                    self.linear("ffn.gate", m.hidden, h, m.bias, Role::Ffn);
                }
                self.linear("ffn.up", m.hidden, h, m.bias, Role::Ffn);
                self.linear("ffn.down", h, m.hidden, m.bias, Role::Ffn);
            }
            Ffn::Moe(m) => self.moe(m),
        }
        if post {
            self.norm("ffn_post_norm", &block.norm, h, Role::Norm);
        }
    }

    fn attention(&mut self, a: &Attention) {
        let h = self.spec.hidden;
        let r = Role::Attention;
        if let Some(mla) = &a.mla {
            self.mla(a, mla);
            return;
        }
        let q_rows = mul(mul(a.heads, a.head_dim), if a.gate { 2 } else { 1 });
        self.linear("attn.q", q_rows, h, a.bias.q, r);
        self.linear("attn.k", mul(a.kv_heads, a.head_dim), h, a.bias.k, r);
        self.linear("attn.v", mul(a.kv_heads, a.v_head_dim), h, a.bias.v, r);
        match a.qk_norm {
            QkNorm::None | QkNorm::L2 { .. } => {}
            QkNorm::PerHead(n) => {
                self.norm("attn.q_norm", &n, a.head_dim, r);
                self.norm("attn.k_norm", &n, a.head_dim, r);
            }
            QkNorm::Full(n) => {
                self.norm("attn.q_norm", &n, mul(a.heads, a.head_dim), r);
                self.norm("attn.k_norm", &n, mul(a.kv_heads, a.head_dim), r);
            }
        }
        self.linear("attn.o", h, mul(a.heads, a.v_head_dim), a.bias.o, r);
        if a.sinks {
            self.push("attn.sinks", vec![a.heads], r);
        }
    }

    /// Multi-head latent attention. Biases: `bias.q` on the first query projection,
    /// `bias.k` (or `bias.v`) on `kv_a`, `bias.o` on the output, as HF's `attention_bias` does.
    fn mla(&mut self, a: &Attention, m: &Mla) {
        let h = self.spec.hidden;
        let r = Role::Attention;
        let qk = add(m.nope_dim, m.rope_dim);
        let latent_norm = Norm {
            kind: NormKind::RmsNorm,
            eps: 1e-6,
            bias: false,
            plus_one: false,
        };
        match m.q_rank {
            Some(q_rank) => {
                self.linear("attn.q_a", q_rank, h, a.bias.q, r);
                self.norm("attn.q_a_norm", &latent_norm, q_rank, r);
                self.linear("attn.q_b", mul(a.heads, qk), q_rank, false, r);
            }
            None => self.linear("attn.q", mul(a.heads, qk), h, a.bias.q, r),
        }
        self.linear(
            "attn.kv_a",
            add(m.kv_rank, m.rope_dim),
            h,
            a.bias.k || a.bias.v,
            r,
        );
        self.norm("attn.kv_a_norm", &latent_norm, m.kv_rank, r);
        self.linear(
            "attn.kv_b",
            mul(a.heads, add(m.nope_dim, m.v_dim)),
            m.kv_rank,
            false,
            r,
        );
        self.linear("attn.o", h, mul(a.heads, m.v_dim), a.bias.o, r);
        if a.sinks {
            self.push("attn.sinks", vec![a.heads], r);
        }
    }

    /// Gated DeltaNet, shapes as `Qwen3NextGatedDeltaNet` creates them.
    fn gated_deltanet(&mut self, g: &GatedDeltaNet) {
        let h = self.spec.hidden;
        let r = Role::LinearAttention;
        let key_dim = mul(g.k_heads, g.k_head_dim);
        let value_dim = mul(g.v_heads, g.v_head_dim);
        self.push(
            "gdn.in_qkvz.weight",
            vec![add(mul(2, key_dim), mul(2, value_dim)), h],
            r,
        );
        self.push("gdn.in_ba.weight", vec![mul(2, g.v_heads), h], r);
        self.push(
            "gdn.conv.weight",
            vec![add(mul(2, key_dim), value_dim), 1, g.conv],
            r,
        );
        self.push("gdn.dt_bias", vec![g.v_heads], r);
        self.push("gdn.a_log", vec![g.v_heads], r);
        self.push("gdn.norm.weight", vec![g.v_head_dim], r);
        self.push("gdn.out.weight", vec![h, value_dim], r);
    }

    /// Kimi Delta Attention, shapes as `KimiLinearDeltaAttention` creates them (with the
    /// q/k/v convolutions separate, as the checkpoints store them).
    fn kimi_delta(&mut self, k: &KimiDelta) {
        let h = self.spec.hidden;
        let r = Role::LinearAttention;
        let d = mul(k.heads, k.head_dim);
        self.push("kda.q.weight", vec![d, h], r);
        self.push("kda.k.weight", vec![d, h], r);
        self.push("kda.v.weight", vec![d, h], r);
        self.push("kda.q_conv.weight", vec![d, 1, k.conv], r);
        self.push("kda.k_conv.weight", vec![d, 1, k.conv], r);
        self.push("kda.v_conv.weight", vec![d, 1, k.conv], r);
        self.push("kda.f_a.weight", vec![k.head_dim, h], r);
        self.push("kda.f_b.weight", vec![d, k.head_dim], r);
        self.push("kda.dt_bias", vec![d], r);
        self.push("kda.a_log", vec![1, 1, k.heads, 1], r);
        self.push("kda.b.weight", vec![k.heads, h], r);
        self.push("kda.g_a.weight", vec![k.head_dim, h], r);
        self.push("kda.g_b.weight", vec![d, k.head_dim], r);
        self.push("kda.o_norm.weight", vec![k.head_dim], r);
        self.push("kda.o.weight", vec![h, d], r);
    }

    /// LFM2's gated short convolution, shapes as `Lfm2ShortConv` creates them.
    fn short_conv(&mut self, c: &ShortConv) {
        let h = self.spec.hidden;
        let r = Role::LinearAttention;
        self.push("short_conv.in.weight", vec![mul(3, h), h], r);
        self.push("short_conv.conv.weight", vec![h, 1, c.conv], r);
        self.push("short_conv.out.weight", vec![h, h], r);
        if c.bias {
            self.push("short_conv.in.bias", vec![mul(3, h)], r);
            self.push("short_conv.conv.bias", vec![h], r);
            self.push("short_conv.out.bias", vec![h], r);
        }
    }

    fn moe(&mut self, m: &Moe) {
        let h = self.spec.hidden;
        let e = m.experts;
        let i = m.hidden;
        let gated = m.gated || m.act.is_gated();
        self.push("moe.router.weight", vec![e, h], Role::Router);
        if m.router.bias {
            self.push("moe.router.bias", vec![e], Role::Router);
        }
        if m.router.correction_bias {
            self.push("moe.router.correction_bias", vec![e], Role::Router);
        }
        let x = Role::RoutedExpert;
        if gated {
            self.push("moe.experts.gate.weight", vec![e, i, h], x);
            if m.bias {
                self.push("moe.experts.gate.bias", vec![e, i], x);
            }
        }
        self.push("moe.experts.up.weight", vec![e, i, h], x);
        if m.bias {
            self.push("moe.experts.up.bias", vec![e, i], x);
        }
        self.push("moe.experts.down.weight", vec![e, h, i], x);
        if m.bias {
            self.push("moe.experts.down.bias", vec![e, h], x);
        }
        if let Some(s) = &m.shared {
            let si = mul(s.count, s.hidden);
            let r = Role::SharedExpert;
            if gated {
                self.push("moe.shared.gate.weight", vec![si, h], r);
            }
            self.push("moe.shared.up.weight", vec![si, h], r);
            self.push("moe.shared.down.weight", vec![h, si], r);
            if s.gate {
                self.push("moe.shared_gate.weight", vec![1, h], r);
            }
        }
    }
}

/// Parameters of one routed expert of `m` (its three projections and their biases).
pub fn expert_params(hidden: u64, m: &Moe) -> u64 {
    let gated = m.gated || m.act.is_gated();
    let mats = if gated { 3 } else { 2 };
    let mut n = mul(mul(mats, hidden), m.hidden);
    if m.bias {
        n = add(n, add(mul(mats - 1, m.hidden), hidden));
    }
    n
}

// Shapes multiply `Spec` sizes. A validated spec keeps every product far below `u64::MAX`
// (see `validate::check_spec`); saturating keeps an unchecked one from panicking, and
// the check reads a saturated dimension as over its limit.
fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b)
}

impl crate::spec::Activation {
    /// GPT-OSS's clamped SwiGLU is gated whatever `gated` says.
    pub fn is_gated(self) -> bool {
        matches!(self, crate::spec::Activation::ClampedSwiglu { .. })
    }
}
