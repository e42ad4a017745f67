//! The table of `fields.rs`: for every field of the language, a template spec in which it
//! applies, the slot's text before and after the change, and what the change must do.
//!
//! A row's key is the field's path: the section names and, for a tagged value, its tag
//! (`attention.rope.scaling.yarn.mscale`); a key may have several rows (other values,
//! other contexts, a refused combination).

/// What changing a field must do.
#[derive(Debug)]
pub enum Expect {
    /// The lowered graphs change (their ops, attributes or parameters).
    Graph,
    /// The graphs stay the same and the parameter tensors' checkpoint bindings change:
    /// `family` names the checkpoint's tensors and nothing else.
    Bindings,
    /// The graphs stay the same and this statistic of `archc stats --json` changes:
    /// `context` sizes the KV cache the runtime allocates (`kv_bytes_total`), which the
    /// graph's symbolic `past` dimension leaves open.
    Stats(&'static str),
    /// The validator refuses the change with an error containing this text, located in
    /// the changed text.
    Refused(&'static str),
}

pub struct Row {
    pub key: &'static str,
    /// The template spec, with one `$` slot.
    pub base: &'static str,
    /// The slot's text in the base spec.
    pub from: &'static str,
    /// The slot's text in the changed spec.
    pub to: &'static str,
    pub expect: Expect,
}

use Expect::*;

const fn row(
    key: &'static str,
    base: &'static str,
    from: &'static str,
    to: &'static str,
    expect: Expect,
) -> Row {
    Row {
        key,
        base,
        from,
        to,
        expect,
    }
}

/// The slot is an entry of the model.
const MODEL: &str = "model \"m\" {
  vocab  = 64
  hidden = 16
  layers = 2
  $
}
block {
  attention { heads = 4, kv_heads = 2 }
  mlp { hidden = 32 }
}
";

/// The slot holds the model's sizes.
const SIZES: &str = "model \"m\" { $ }
block {
  attention { heads = 4, kv_heads = 2 }
  mlp { hidden = 32 }
}
";
const SIZES_BASE: &str = "vocab = 64, hidden = 16, layers = 2";

/// The slot is an entry of the block.
const BLOCK: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  $
  attention { heads = 4, kv_heads = 2 }
  mlp { hidden = 32 }
}
";

/// The slot is the block's token mixer.
const MIXER: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  $
  mlp { hidden = 32 }
}
";
const ATTENTION: &str = "attention { heads = 4, kv_heads = 2 }";

/// The slot is the block's feed-forward.
const FFN: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention { heads = 4, kv_heads = 2 }
  $
}
";

/// The slot is an entry of standard attention (head_dim 4).
const ATTN: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 4
    $
  }
  mlp { hidden = 32 }
}
";

/// The slot is an entry of MLA attention.
const MLA: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 4
    mla { kv_rank = 8, nope_dim = 4, rope_dim = 2, v_dim = 4 }
    $
  }
  mlp { hidden = 32 }
}
";

/// The slot is the body of `mla`.
const MLA_SIZES: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 4
    mla { $ }
  }
  mlp { hidden = 32 }
}
";
const MLA_BASE: &str = "kv_rank = 8, nope_dim = 4, rope_dim = 2, v_dim = 4";

/// The slot is the value of `rope.scaling`.
const SCALING: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 2
    rope { scaling = $ }
  }
  mlp { hidden = 32 }
}
";
const LLAMA3: &str =
    "llama3 { factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_context = 64 }";
const YARN: &str = "yarn { factor = 4, original_context = 64 }";

/// The slot is an entry of a YaRN scaling (head_dim 8).
const YARN_BODY: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 2
    rope {
      scaling = yarn {
        factor           = 4
        original_context = 64
        $
      }
    }
  }
  mlp { hidden = 32 }
}
";

/// As `YARN_BODY`, in an attention that gives its softmax `scale`.
const YARN_SCALED: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention {
    heads = 2
    scale = 0.25
    rope {
      scaling = yarn {
        factor           = 4
        original_context = 64
        $
      }
    }
  }
  mlp { hidden = 32 }
}
";

/// The slot is the body of `gated_deltanet`.
const GDN: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  gated_deltanet { $ }
  mlp { hidden = 32 }
}
";
const GDN_BASE: &str = "k_heads = 2, v_heads = 4, k_head_dim = 4, v_head_dim = 4";

/// The slot is the body of `kimi_delta`.
const KIMI: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  kimi_delta { $ }
  mlp { hidden = 32 }
}
";

/// The slot is the body of `short_conv`.
const SHORT_CONV: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  short_conv { $ }
  mlp { hidden = 32 }
}
";

/// The slot is the body of `mlp`.
const MLP: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention { heads = 4, kv_heads = 2 }
  mlp { $ }
}
";

/// The slot is the body of `moe`.
const MOE: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention { heads = 4, kv_heads = 2 }
  moe { $ }
}
";
const MOE_BASE: &str = "experts = 4, top_k = 2, hidden = 8";

/// The slot is the body of `moe.shared`.
const SHARED: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention { heads = 4, kv_heads = 2 }
  moe {
    experts = 4, top_k = 2, hidden = 8
    shared { $ }
  }
}
";

/// The slot is the body of `moe.router` (8 experts, top 2).
const ROUTER: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 2 }
block {
  attention { heads = 4, kv_heads = 2 }
  moe {
    experts = 8, top_k = 2, hidden = 8
    router { $ }
  }
}
";

/// The slot is the body of the schedule of two blocks over four layers; `b` differs from
/// `a` by a sliding window.
const SCHEDULE: &str = "model \"m\" { vocab = 64, hidden = 16, layers = 4 }
block a {
  attention { heads = 4, kv_heads = 2 }
  mlp { hidden = 32 }
}
block b : a { attention.window = 8 }
schedule {
  $
}
";

const TEMPERATURE: &str = "rope = none, temperature { floor_scale = 8, attn_scale = 0.1 }";

#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    // The model.
    row("model.family", MODEL, "", "family = gpt2", Bindings),
    row("model.vocab", SIZES, SIZES_BASE, "vocab = 80, hidden = 16, layers = 2", Graph),
    row("model.hidden", SIZES, SIZES_BASE, "vocab = 64, hidden = 32, layers = 2", Graph),
    row("model.layers", SIZES, SIZES_BASE, "vocab = 64, hidden = 16, layers = 3", Graph),
    row("model.context", MODEL, "", "context = 8192", Stats("kv_bytes_total")),
    row("model.context", MODEL, "positions = learned", "positions = learned, context = 8192", Graph),
    row("model.dtype", MODEL, "", "dtype = f32", Graph),
    row("model.dtype", MODEL, "", "dtype = f16", Graph),
    row("model.dtype", MODEL, "", "dtype = f8", Graph),
    row("model.dtype", MODEL, "dtype = f32", "dtype = bf16", Graph),
    row("model.tied", MODEL, "", "tied = true", Graph),
    row("model.embed_scale", MODEL, "", "embed_scale = 4", Graph),
    row("model.positions", MODEL, "", "positions = learned", Graph),
    row("model.positions", MODEL, "positions = learned", "positions = none", Graph),
    row("model.positions.learned.rows", MODEL, "positions = learned", "positions = learned { rows = 5000 }", Graph),
    row("model.positions.learned.rows", MODEL, "positions = learned", "positions = learned { rows = 100 }", Refused("fewer than the context")),
    row("model.token_types", MODEL, "", "token_types = 2", Graph),
    row("model.embed_norm", MODEL, "", "embed_norm = layernorm", Graph),
    row("model.norm", MODEL, "", "norm = layernorm", Graph),
    row("model.norm.rmsnorm.eps", MODEL, "", "norm = rmsnorm { eps = 1e-6 }", Graph),
    row("model.norm.rmsnorm.plus_one", MODEL, "", "norm = rmsnorm { plus_one = true }", Graph),
    row("model.norm.rmsnorm.bias", MODEL, "", "norm = rmsnorm { bias = true }", Refused("unknown key `bias`")),
    row("model.norm.layernorm.eps", MODEL, "norm = layernorm", "norm = layernorm { eps = 1e-6 }", Graph),
    row("model.norm.layernorm.bias", MODEL, "norm = layernorm", "norm = layernorm { bias = false }", Graph),
    row("model.norm.layernorm.plus_one", MODEL, "norm = layernorm", "norm = layernorm { plus_one = true }", Refused("unknown key `plus_one`")),
    row("model.final_norm", MODEL, "", "final_norm = none", Graph),
    row("model.final_norm", MODEL, "", "final_norm = layernorm { eps = 1e-6 }", Graph),
    row("model.logit_softcap", MODEL, "", "logit_softcap = 30", Graph),
    row("model.mtp", MODEL, "family = deepseek_v3", "family = deepseek_v3, mtp = 1", Stats("mtp_params")),
    row("model.mtp", MODEL, "", "mtp = 1", Refused("no multi-token-prediction tensor layout")),

    // The block.
    row("block.norm", BLOCK, "", "norm = layernorm", Graph),
    row("block.norm.rmsnorm.eps", BLOCK, "", "norm.eps = 1e-6", Graph),
    row("block.norm.rmsnorm.plus_one", BLOCK, "", "norm.plus_one = true", Graph),
    row("block.norm.layernorm.eps", BLOCK, "norm = layernorm", "norm = layernorm { eps = 1e-6 }", Graph),
    row("block.norm.layernorm.bias", BLOCK, "norm = layernorm", "norm = layernorm { bias = false }", Graph),
    row("block.placement", BLOCK, "", "placement = post", Graph),
    row("block.placement", BLOCK, "", "placement = sandwich", Graph),
    row("block.placement", BLOCK, "", "placement = post_ln", Graph),
    row("block.placement", BLOCK, "placement = sandwich", "placement = pre", Graph),
    row("block.attention", MIXER, "kimi_delta { heads = 4, head_dim = 4 }", ATTENTION, Graph),
    row("block.gated_deltanet", MIXER, ATTENTION, "gated_deltanet { k_heads = 2, v_heads = 4, k_head_dim = 4, v_head_dim = 4 }", Graph),
    row("block.gated_deltanet", MIXER, ATTENTION, "attention { heads = 4 }\n  gated_deltanet { k_heads = 2, v_heads = 4, k_head_dim = 4, v_head_dim = 4 }", Refused("has both `attention` and `gated_deltanet`")),
    row("block.kimi_delta", MIXER, ATTENTION, "kimi_delta { heads = 4, head_dim = 4 }", Graph),
    row("block.short_conv", MIXER, ATTENTION, "short_conv { }", Graph),
    row("block.short_conv", MIXER, ATTENTION, "attention { heads = 4 }\n  short_conv { }", Refused("has both `attention` and `short_conv`")),
    row("block.mlp", FFN, "moe { experts = 4, top_k = 2, hidden = 8 }", "mlp { hidden = 32 }", Graph),
    row("block.moe", FFN, "mlp { hidden = 32 }", "moe { experts = 4, top_k = 2, hidden = 8 }", Graph),

    // Attention.
    row("attention.heads", MIXER, ATTENTION, "attention { heads = 8, kv_heads = 2 }", Graph),
    row("attention.kv_heads", ATTN, "", "kv_heads = 2", Graph),
    row("attention.kv_heads", ATTN, "", "kv_heads = 3", Refused("not divisible by kv_heads")),
    row("attention.head_dim", ATTN, "", "head_dim = 8", Graph),
    row("attention.bias", ATTN, "", "bias = true", Graph),
    row("attention.bias.q", ATTN, "", "bias = [q]", Graph),
    row("attention.bias.k", ATTN, "", "bias = [k]", Graph),
    row("attention.bias.v", ATTN, "", "bias = [v]", Graph),
    row("attention.bias.o", ATTN, "", "bias = [o]", Graph),
    row("attention.qk_norm", ATTN, "", "qk_norm = per_head", Graph),
    row("attention.qk_norm", ATTN, "", "qk_norm = full", Graph),
    row("attention.qk_norm", ATTN, "", "qk_norm = l2", Graph),
    row("attention.qk_norm", ATTN, "qk_norm = per_head", "qk_norm = full", Graph),
    row("attention.qk_norm.per_head.kind", ATTN, "qk_norm = per_head", "qk_norm = per_head { kind = layernorm }", Graph),
    row("attention.qk_norm.per_head.eps", ATTN, "qk_norm = per_head", "qk_norm = per_head { eps = 1e-6 }", Graph),
    row("attention.qk_norm.per_head.plus_one", ATTN, "qk_norm = per_head", "qk_norm = per_head { plus_one = true }", Graph),
    row("attention.qk_norm.per_head.plus_one", ATTN, "qk_norm = per_head { kind = layernorm }", "qk_norm = per_head { kind = layernorm, plus_one = true }", Refused("a layer norm's weight is not `1 + w`")),
    row("attention.qk_norm.per_head.bias", ATTN, "qk_norm = per_head { kind = layernorm }", "qk_norm = per_head { kind = layernorm, bias = false }", Graph),
    row("attention.qk_norm.per_head.bias", ATTN, "qk_norm = per_head", "qk_norm = per_head { bias = true }", Refused("an RMS norm has no bias")),
    row("attention.qk_norm.full.kind", ATTN, "qk_norm = full", "qk_norm = full { kind = layernorm }", Graph),
    row("attention.qk_norm.full.eps", ATTN, "qk_norm = full", "qk_norm = full { eps = 1e-6 }", Graph),
    row("attention.qk_norm.full.plus_one", ATTN, "qk_norm = full", "qk_norm = full { plus_one = true }", Graph),
    row("attention.qk_norm.full.bias", ATTN, "qk_norm = full { kind = layernorm }", "qk_norm = full { kind = layernorm, bias = false }", Graph),
    row("attention.qk_norm.l2.eps", ATTN, "qk_norm = l2", "qk_norm = l2 { eps = 1e-3 }", Graph),
    row("attention.causal", ATTN, "", "causal = false", Graph),
    row("attention.window", ATTN, "", "window = 8", Graph),
    row("attention.chunk", ATTN, "", "chunk = 8", Graph),
    row("attention.sinks", ATTN, "", "sinks = true", Graph),
    row("attention.softcap", ATTN, "", "softcap = 50", Graph),
    row("attention.scale", ATTN, "", "scale = 0.125", Graph),
    row("attention.gate", ATTN, "", "gate = true", Graph),
    row("attention.temperature", ATTN, "rope = none", TEMPERATURE, Graph),
    row("attention.temperature", ATTN, "", "temperature { floor_scale = 8, attn_scale = 0.1 }", Refused("applies only to NoPE layers")),
    row("attention.temperature.floor_scale", ATTN, TEMPERATURE, "rope = none, temperature { floor_scale = 16, attn_scale = 0.1 }", Graph),
    row("attention.temperature.attn_scale", ATTN, TEMPERATURE, "rope = none, temperature { floor_scale = 8, attn_scale = 0.2 }", Graph),
    row("attention.rope", ATTN, "", "rope = none", Graph),
    row("attention.rope.theta", ATTN, "", "rope { theta = 1e6 }", Graph),
    row("attention.rope.dims", ATTN, "", "rope { dims = 2 }", Graph),
    row("attention.rope.fraction", ATTN, "", "rope { fraction = 0.5 }", Graph),
    row("attention.rope.fraction", ATTN, "", "rope { dims = 2, fraction = 0.5 }", Refused("either `dims` or `fraction`")),
    row("attention.rope.pairing", ATTN, "", "rope { pairing = interleaved }", Graph),
    row("attention.rope.scaling", SCALING, "none", "linear { factor = 2 }", Graph),
    row("attention.rope.scaling", SCALING, "none", LLAMA3, Graph),
    row("attention.rope.scaling", SCALING, "none", YARN, Graph),
    row("attention.rope.scaling.linear.factor", SCALING, "linear { factor = 2 }", "linear { factor = 4 }", Graph),
    row("attention.rope.scaling.llama3.factor", SCALING, LLAMA3, "llama3 { factor = 2, low_freq_factor = 1, high_freq_factor = 4, original_context = 64 }", Graph),
    row("attention.rope.scaling.llama3.low_freq_factor", SCALING, LLAMA3, "llama3 { factor = 8, low_freq_factor = 2, high_freq_factor = 4, original_context = 64 }", Graph),
    row("attention.rope.scaling.llama3.high_freq_factor", SCALING, LLAMA3, "llama3 { factor = 8, low_freq_factor = 1, high_freq_factor = 8, original_context = 64 }", Graph),
    row("attention.rope.scaling.llama3.original_context", SCALING, LLAMA3, "llama3 { factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_context = 128 }", Graph),
    row("attention.rope.scaling.yarn.factor", SCALING, YARN, "yarn { factor = 8, original_context = 64 }", Graph),
    row("attention.rope.scaling.yarn.original_context", SCALING, YARN, "yarn { factor = 4, original_context = 128 }", Graph),
    row("attention.rope.scaling.yarn.beta_fast", YARN_BODY, "", "beta_fast = 16", Graph),
    row("attention.rope.scaling.yarn.beta_slow", YARN_BODY, "", "beta_slow = 2", Graph),
    row("attention.rope.scaling.yarn.truncate", YARN_BODY, "", "truncate = false", Graph),
    row("attention.rope.scaling.yarn.attention_factor", YARN_BODY, "", "attention_factor = 1.5", Graph),
    row("attention.rope.scaling.yarn.mscale_all_dim", YARN_BODY, "", "mscale_all_dim = 1", Graph),
    row("attention.rope.scaling.yarn.mscale_all_dim", YARN_SCALED, "", "mscale_all_dim = 1", Graph),
    row("attention.rope.scaling.yarn.mscale_all_dim", YARN_BODY, "attention_factor = 1.5", "attention_factor = 1.5, mscale_all_dim = 1", Graph),
    row("attention.rope.scaling.yarn.mscale_all_dim", YARN_SCALED, "attention_factor = 1.5", "attention_factor = 1.5, mscale_all_dim = 1", Refused("`mscale_all_dim` does nothing")),
    row("attention.rope.scaling.yarn.mscale", YARN_BODY, "mscale_all_dim = 1", "mscale_all_dim = 1, mscale = 0.5", Graph),
    row("attention.rope.scaling.yarn.mscale", YARN_BODY, "", "mscale = 0.5", Refused("`mscale` sets the attention factor only")),
    row("attention.rope.scaling.yarn.mscale", YARN_BODY, "mscale_all_dim = 1, attention_factor = 1.5", "mscale_all_dim = 1, attention_factor = 1.5, mscale = 0.5", Refused("`mscale` sets the attention factor only")),

    // Multi-head latent attention.
    row("attention.mla", ATTN, "", "mla { kv_rank = 8, nope_dim = 4, rope_dim = 2, v_dim = 4 }", Graph),
    row("attention.mla.q_rank", MLA_SIZES, MLA_BASE, "kv_rank = 8, nope_dim = 4, rope_dim = 2, v_dim = 4, q_rank = 8", Graph),
    row("attention.mla.kv_rank", MLA_SIZES, MLA_BASE, "kv_rank = 16, nope_dim = 4, rope_dim = 2, v_dim = 4", Graph),
    row("attention.mla.nope_dim", MLA_SIZES, MLA_BASE, "kv_rank = 8, nope_dim = 2, rope_dim = 2, v_dim = 4", Graph),
    row("attention.mla.rope_dim", MLA_SIZES, MLA_BASE, "kv_rank = 8, nope_dim = 4, rope_dim = 4, v_dim = 4", Graph),
    row("attention.mla.v_dim", MLA_SIZES, MLA_BASE, "kv_rank = 8, nope_dim = 4, rope_dim = 2, v_dim = 8", Graph),
    row("attention.head_dim", MLA, "", "head_dim = 8", Refused("with `mla`, head_dim is nope_dim + rope_dim")),
    row("attention.kv_heads", MLA, "", "kv_heads = 2", Refused("with `mla`, kv_heads equals heads")),
    row("attention.bias", MLA, "", "bias = true", Graph),
    row("attention.bias.q", MLA, "", "bias = [q]", Graph),
    row("attention.bias.o", MLA, "", "bias = [o]", Graph),
    row("attention.bias.k", MLA, "", "bias = [k, v]", Graph),
    row("attention.bias.k", MLA, "", "bias = [k]", Refused("keys and values share one projection")),
    row("attention.bias.v", MLA, "", "bias = [v]", Refused("keys and values share one projection")),
    row("attention.qk_norm", MLA, "", "qk_norm = per_head", Refused("`qk_norm` does not apply to `mla`")),
    row("attention.gate", MLA, "", "gate = true", Refused("`gate` does not apply to `mla`")),
    row("attention.causal", MLA, "", "causal = false", Graph),
    row("attention.window", MLA, "", "window = 8", Graph),
    row("attention.chunk", MLA, "", "chunk = 8", Graph),
    row("attention.sinks", MLA, "", "sinks = true", Graph),
    row("attention.softcap", MLA, "", "softcap = 50", Graph),
    row("attention.scale", MLA, "", "scale = 0.125", Graph),
    row("attention.temperature", MLA, "rope = none", TEMPERATURE, Graph),
    row("attention.rope", MLA, "", "rope = none", Graph),
    row("attention.rope.theta", MLA, "", "rope { theta = 1e6 }", Graph),
    row("attention.rope.pairing", MLA, "", "rope { pairing = interleaved }", Graph),
    row("attention.rope.scaling", MLA, "", "rope { scaling = yarn { factor = 4, original_context = 64 } }", Graph),
    row("attention.rope.dims", MLA, "", "rope { dims = 2 }", Refused("with `mla`, the rotary dims are `mla.rope_dim`")),
    row("attention.rope.fraction", MLA, "", "rope { fraction = 0.5 }", Refused("with `mla`, the rotary dims are `mla.rope_dim`")),

    // The linear-attention mixers.
    row("gated_deltanet.k_heads", GDN, GDN_BASE, "k_heads = 4, v_heads = 4, k_head_dim = 4, v_head_dim = 4", Graph),
    row("gated_deltanet.v_heads", GDN, GDN_BASE, "k_heads = 2, v_heads = 8, k_head_dim = 4, v_head_dim = 4", Graph),
    row("gated_deltanet.v_heads", GDN, GDN_BASE, "k_heads = 2, v_heads = 3, k_head_dim = 4, v_head_dim = 4", Refused("not a multiple of k_heads")),
    row("gated_deltanet.k_head_dim", GDN, GDN_BASE, "k_heads = 2, v_heads = 4, k_head_dim = 8, v_head_dim = 4", Graph),
    row("gated_deltanet.v_head_dim", GDN, GDN_BASE, "k_heads = 2, v_heads = 4, k_head_dim = 4, v_head_dim = 8", Graph),
    row("gated_deltanet.conv", GDN, GDN_BASE, "k_heads = 2, v_heads = 4, k_head_dim = 4, v_head_dim = 4, conv = 3", Graph),
    row("kimi_delta.heads", KIMI, "heads = 4, head_dim = 4", "heads = 2, head_dim = 4", Graph),
    row("kimi_delta.head_dim", KIMI, "heads = 4, head_dim = 4", "heads = 4, head_dim = 8", Graph),
    row("kimi_delta.conv", KIMI, "heads = 4, head_dim = 4", "heads = 4, head_dim = 4, conv = 3", Graph),
    row("short_conv.conv", SHORT_CONV, "", "conv = 4", Graph),
    row("short_conv.conv", SHORT_CONV, "", "conv = 0", Refused("at least 1")),
    row("short_conv.bias", SHORT_CONV, "", "bias = true", Graph),

    // Feed-forwards.
    row("mlp.hidden", MLP, "hidden = 32", "hidden = 64", Graph),
    row("mlp.act", MLP, "hidden = 32", "hidden = 32, act = gelu", Graph),
    row("mlp.act", MLP, "hidden = 32", "hidden = 32, act = gelu_tanh", Graph),
    row("mlp.act", MLP, "hidden = 32", "hidden = 32, act = relu", Graph),
    row("mlp.act", MLP, "hidden = 32", "hidden = 32, act = clamped_swiglu", Graph),
    row("mlp.act", MLP, "hidden = 32, act = gelu", "hidden = 32, act = silu", Graph),
    row("mlp.act.clamped_swiglu.alpha", MLP, "hidden = 32, act = clamped_swiglu", "hidden = 32, act = clamped_swiglu { alpha = 1 }", Graph),
    row("mlp.act.clamped_swiglu.limit", MLP, "hidden = 32, act = clamped_swiglu", "hidden = 32, act = clamped_swiglu { limit = 3 }", Graph),
    row("mlp.gated", MLP, "hidden = 32", "hidden = 32, gated = false", Graph),
    row("mlp.gated", MLP, "hidden = 32, act = clamped_swiglu", "hidden = 32, act = clamped_swiglu, gated = false", Refused("`clamped_swiglu` is always gated")),
    row("mlp.bias", MLP, "hidden = 32", "hidden = 32, bias = true", Graph),
    row("moe.experts", MOE, MOE_BASE, "experts = 8, top_k = 2, hidden = 8", Graph),
    row("moe.top_k", MOE, MOE_BASE, "experts = 4, top_k = 1, hidden = 8", Graph),
    row("moe.top_k", MOE, MOE_BASE, "experts = 4, top_k = 5, hidden = 8", Refused("more than the number of experts")),
    row("moe.hidden", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 16", Graph),
    row("moe.act", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 8, act = gelu", Graph),
    row("moe.act.clamped_swiglu.alpha", MOE, "experts = 4, top_k = 2, hidden = 8, act = clamped_swiglu", "experts = 4, top_k = 2, hidden = 8, act = clamped_swiglu { alpha = 1 }", Graph),
    row("moe.act.clamped_swiglu.limit", MOE, "experts = 4, top_k = 2, hidden = 8, act = clamped_swiglu", "experts = 4, top_k = 2, hidden = 8, act = clamped_swiglu { limit = 3 }", Graph),
    row("moe.gated", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 8, gated = false", Graph),
    row("moe.bias", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 8, bias = true", Graph),
    row("moe.shared", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 8, shared { hidden = 8 }", Graph),
    row("moe.shared.count", SHARED, "hidden = 8", "hidden = 8, count = 2", Graph),
    row("moe.shared.hidden", SHARED, "hidden = 8", "hidden = 16", Graph),
    row("moe.shared.gate", SHARED, "hidden = 8", "hidden = 8, gate = true", Graph),
    row("moe.router", MOE, MOE_BASE, "experts = 4, top_k = 2, hidden = 8, router { score = sigmoid }", Graph),
    row("moe.router.score", ROUTER, "", "score = sigmoid", Graph),
    row("moe.router.topk_first", ROUTER, "", "topk_first = true", Graph),
    row("moe.router.renormalize", ROUTER, "", "renormalize = true", Graph),
    row("moe.router.renormalize", ROUTER, "score = sigmoid, topk_first = true", "score = sigmoid, topk_first = true, renormalize = true", Graph),
    row("moe.router.renormalize", ROUTER, "topk_first = true", "topk_first = true, renormalize = true", Refused("`renormalize` does nothing with `topk_first` and `softmax`")),
    row("moe.router.scale", ROUTER, "", "scale = 2.5", Graph),
    row("moe.router.correction_bias", ROUTER, "", "correction_bias = true", Graph),
    row("moe.router.correction_bias", ROUTER, "topk_first = true", "topk_first = true, correction_bias = true", Refused("`correction_bias` does not apply with `topk_first`")),
    row("moe.router.groups", ROUTER, "", "groups { count = 2, keep = 1 }", Graph),
    row("moe.router.groups", ROUTER, "topk_first = true", "topk_first = true, groups { count = 2, keep = 1 }", Refused("`groups` does not apply with `topk_first`")),
    row("moe.router.groups.count", ROUTER, "groups { count = 2, keep = 1 }", "groups { count = 4, keep = 1 }", Graph),
    row("moe.router.groups.keep", ROUTER, "groups { count = 2, keep = 1 }", "groups { count = 2, keep = 2 }", Graph),
    row("moe.router.groups.keep", ROUTER, "groups { count = 2, keep = 1 }", "groups { count = 2, keep = 3 }", Refused("more than the number of groups")),
    row("moe.router.bias", ROUTER, "", "bias = true", Graph),
    row("moe.router.weight_input", ROUTER, "", "weight_input = true", Graph),

    // The schedule.
    row("schedule.repeat", SCHEDULE, "repeat [a, b]", "repeat [a * 3, b]", Graph),
    row("schedule.first", SCHEDULE, "a = first 1, b = rest", "a = first 2, b = rest", Graph),
    row("schedule.last", SCHEDULE, "a = first 1, b = rest", "a = last 1, b = rest", Graph),
    row("schedule.every", SCHEDULE, "a = every 2, b = rest", "a = every 3, b = rest", Graph),
    row("schedule.every.from", SCHEDULE, "a = every 2, b = rest", "a = every 2 from 1, b = rest", Graph),
    row("schedule.layers", SCHEDULE, "a = layers [0, 1], b = rest", "a = layers [0, 2], b = rest", Graph),
    row("schedule.layers", SCHEDULE, "a = layers 0..2, b = rest", "a = layers 1..3, b = rest", Graph),
    row("schedule.layers", SCHEDULE, "a = layers 0..2, b = rest", "a = layers 0..2, b = layers 1..4", Refused("given to both `a` and `b`")),
    row("schedule.rest", SCHEDULE, "a = first 2, b = rest", "a = rest, b = first 2", Graph),
];
