//! Model statistics computed from a `Spec` alone: parameter counts (total, active per
//! token, per component), weight bytes, KV-cache bytes, linear-attention state and
//! forward FLOPs per token.
//!
//! # Definitions
//!
//! - **Total parameters**: the sum of every tensor of [`tensors`](crate::tensors::tensors);
//!   a tied output head is the embedding, counted once; a router's correction bias is a
//!   buffer, not a parameter, as HF counts it (it is in the weight bytes).
//! - **Weight bytes**: every stored tensor at the model dtype.
//! - **Active parameters**: total minus, for every MoE layer, the routed experts a token
//!   does not run: `(experts - top_k) * per-expert parameters` (its projections and their
//!   biases).
//! - **KV bytes per token**: what one more cached token adds, over all softmax-attention
//!   layers: `kv_heads * (head_dim + v_head_dim)` values per layer, or for MLA the latent
//!   plus the shared RoPE key, `kv_rank + rope_dim`, in the KV dtype.
//! - **KV bytes total**: the cache at `context` tokens; a sliding-window layer holds at
//!   most `window` tokens and a chunked layer at most `chunk`.
//! - **Linear state bytes**: the fixed per-sequence state of linear-attention layers, in
//!   the KV dtype: the convolution's last `kernel - 1` inputs of every channel plus the
//!   recurrent state (one `k_head_dim x v_head_dim` matrix per value head).
//! - **FLOPs per token**: one decode step of the token at position `context - 1`, with
//!   `context - 1` tokens cached, counting a multiply-add as 2 FLOPs:
//!   - `2 *` every active matrix parameter (projections, router, experts the token runs,
//!     the depthwise convolutions, and the output head, also when tied); embedding
//!     lookups, norms, biases and other vectors are not counted;
//!   - softmax attention, per layer over `L = min(context, window or chunk)` keys:
//!     `2 * heads * (head_dim + v_head_dim) * L` (scores and the weighted sum of values);
//!     MLA in its absorbed decode form, attending over the cached latent:
//!     `2 * heads * (2 * kv_rank + rope_dim) * L` (its `kv_b` up-projection applied to
//!     the query and the output costs as much as its parameters, already counted);
//!   - linear attention, per layer: `6 * heads * k_dim * v_dim` (reading the recurrent
//!     state with the key, its rank-one update, reading it with the query).
//!
//! # Roofline quantities
//!
//! What `archc bench` sets its measurements against, from the same definitions:
//!
//! - **Decode bytes per token** ([`decode_bytes_per_token`]): the weight bytes one decode
//!   step reads: every tensor once, except an embedding table, of which a token reads one
//!   row (the token embedding is read whole when it is also the output head, that is when
//!   the model is tied). KV-cache reads are not counted.
//! - **Prefill FLOPs** ([`prefill_flops`]): a prefill of `prompt` tokens that computes the
//!   logits of the last position only: `prompt` times the mean of the FLOPs per token at
//!   context 1 and at context `prompt`, less the output head (`2 * vocab * hidden`) of
//!   every position but the last.
//! - **KV bytes** ([`kv_bytes`]): the KV cache plus the linear-attention state at a
//!   context, in a given dtype.

use crate::spec::{DType, Ffn, Mixer, Spec};
use crate::tensors::{expert_params, tensors, Role, TensorSpec};

/// What to compute statistics at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Context length in tokens (the sequence length the KV cache holds).
    pub context: u64,
    /// Dtype of the KV cache and the linear-attention state.
    pub kv_dtype: DType,
}

impl Options {
    /// The model's own context with a bf16 cache.
    pub fn for_spec(spec: &Spec) -> Options {
        Options {
            context: spec.context,
            kv_dtype: DType::Bf16,
        }
    }
}

/// Statistics of one model; see the module documentation for the definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub name: String,
    pub family: &'static str,
    pub params_total: u64,
    pub params_active: u64,
    /// Parameters per component, in [`Role::ALL`] order, components with none included.
    pub breakdown: Vec<(Role, u64)>,
    pub weight_dtype: DType,
    pub weight_bytes: u64,
    pub context: u64,
    pub kv_dtype: DType,
    pub kv_bytes_per_token: u64,
    pub kv_bytes_total: u64,
    pub linear_state_bytes: u64,
    pub flops_per_token: u64,
    /// Layers with softmax attention and with linear attention.
    pub attention_layers: u64,
    pub linear_layers: u64,
    pub moe_layers: u64,
    /// Parameters of the multi-token-prediction layers the checkpoint carries (`mtp`),
    /// which archc does not run: not in `params_total`.
    pub mtp_params: u64,
}

/// Computes the statistics of `spec` at `opts`.
///
/// Every sum and product saturates at `u64::MAX`: a spec that passed
/// [`check_spec`](crate::validate::check_spec) stays far below it at its own context, so
/// only a hand-built spec or an absurd `opts.context` can reach the cap, and then the
/// numbers read as "at least this much" instead of panicking or wrapping.
pub fn stats(spec: &Spec, opts: Options) -> Stats {
    let all = tensors(spec);
    let sum = |it: &mut dyn Iterator<Item = u64>| it.fold(0u64, u64::saturating_add);
    let params_total = sum(&mut all.iter().map(TensorSpec::param_count));
    let stored = sum(&mut all.iter().map(TensorSpec::numel));
    let breakdown: Vec<(Role, u64)> = Role::ALL
        .iter()
        .map(|&r| {
            let n = sum(&mut all
                .iter()
                .filter(|t| t.role == r)
                .map(TensorSpec::param_count));
            (r, n)
        })
        .collect();

    // Matrix parameters every token multiplies with; routed experts at full count here,
    // the unused ones subtracted below together with the active count.
    let mut matmul = sum(&mut all.iter().filter(|t| is_matmul(t)).map(TensorSpec::numel));
    if spec.tied {
        matmul = matmul.saturating_add(mul(spec.vocab, spec.hidden));
    }

    let kv = opts.kv_dtype.bytes();
    let ctx = opts.context;
    let mut inactive = 0u64;
    let mut kv_per_token = 0u64;
    let mut kv_total = 0u64;
    let mut linear_state = 0u64;
    let mut attn_flops = 0u64;
    let (mut attention_layers, mut linear_layers, mut moe_layers) = (0u64, 0u64, 0u64);
    // A schedule entry without a block (only in an unchecked spec) counts nothing.
    for block in spec.schedule.iter().filter_map(|&b| spec.blocks.get(b)) {
        if let Ffn::Moe(m) = &block.ffn {
            moe_layers += 1;
            let unused = m.experts.saturating_sub(m.top_k);
            inactive = inactive.saturating_add(mul(unused, expert_params(spec.hidden, m)));
            // Expert biases are vectors, so only the matrices leave the FLOP count.
            let gated = m.gated || m.act.is_gated();
            let mats = if gated { 3 } else { 2 };
            matmul = matmul.saturating_sub(mul(mul(unused, mats), mul(spec.hidden, m.hidden)));
        }
        match &block.mixer {
            Mixer::Attention(a) => {
                attention_layers += 1;
                let per_token = match &a.mla {
                    Some(m) => m.kv_rank.saturating_add(m.rope_dim),
                    None => mul(a.kv_heads, a.head_dim.saturating_add(a.v_head_dim)),
                };
                let held = [a.window, a.chunk]
                    .into_iter()
                    .flatten()
                    .fold(ctx, u64::min);
                kv_per_token = kv_per_token.saturating_add(mul(per_token, kv));
                kv_total = kv_total.saturating_add(mul(mul(per_token, kv), held));
                let per_key = match &a.mla {
                    Some(m) => mul(2, m.kv_rank).saturating_add(m.rope_dim),
                    None => a.head_dim.saturating_add(a.v_head_dim),
                };
                attn_flops = attn_flops.saturating_add(mul(mul(2, a.heads), mul(per_key, held)));
            }
            Mixer::GatedDeltaNet(g) => {
                linear_layers += 1;
                let channels = mul(mul(2, g.k_heads), g.k_head_dim)
                    .saturating_add(mul(g.v_heads, g.v_head_dim));
                let matrices = mul(mul(g.v_heads, g.k_head_dim), g.v_head_dim);
                let state = mul(channels, g.conv.saturating_sub(1)).saturating_add(matrices);
                linear_state = linear_state.saturating_add(mul(state, kv));
                attn_flops = attn_flops.saturating_add(mul(6, matrices));
            }
            Mixer::ShortConv(c) => {
                linear_layers += 1;
                let h = spec.hidden;
                let state = mul(h, c.conv.saturating_sub(1));
                linear_state = linear_state.saturating_add(mul(state, kv));
                // The taps, and the two gating products.
                attn_flops = attn_flops.saturating_add(mul(mul(2, h), c.conv.saturating_add(2)));
            }
            Mixer::KimiDelta(k) => {
                linear_layers += 1;
                let channels = mul(mul(3, k.heads), k.head_dim);
                let matrices = mul(mul(k.heads, k.head_dim), k.head_dim);
                let state = mul(channels, k.conv.saturating_sub(1)).saturating_add(matrices);
                linear_state = linear_state.saturating_add(mul(state, kv));
                attn_flops = attn_flops.saturating_add(mul(6, matrices));
            }
        }
    }

    Stats {
        name: spec.name.clone(),
        family: spec.family.as_str(),
        params_total,
        params_active: params_total.saturating_sub(inactive),
        breakdown,
        weight_dtype: spec.dtype,
        weight_bytes: mul(stored, spec.dtype.bytes()),
        context: ctx,
        kv_dtype: opts.kv_dtype,
        kv_bytes_per_token: kv_per_token,
        kv_bytes_total: kv_total,
        linear_state_bytes: linear_state,
        flops_per_token: mul(2, matmul).saturating_add(attn_flops),
        attention_layers,
        linear_layers,
        moe_layers,
        mtp_params: crate::mtp::mtp_params(spec),
    }
}

fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// Bytes of the weights one decode step reads, given the bytes each tensor of
/// [`tensors`] is stored in (`stored`; a block-quantised tensor counts as its blocks):
/// every tensor once, except an embedding table (a two-axis [`Role::Embedding`] tensor),
/// of which a token reads one row, `stored / rows`; the token embedding of a tied model is
/// also the output head and is read whole. KV-cache reads are not counted.
pub fn decode_bytes_per_token(spec: &Spec, stored: &dyn Fn(&TensorSpec) -> u64) -> u64 {
    tensors(spec).iter().fold(0u64, |total, t| {
        let all = stored(t);
        let lookup = t.role == Role::Embedding && t.shape.len() == 2;
        let read = if lookup && !(spec.tied && t.name == "embed.tokens") {
            all / t.shape[0].max(1)
        } else {
            all
        };
        total.saturating_add(read)
    })
}

/// [`decode_bytes_per_token`] with every tensor stored at the model dtype, as the
/// weight bytes of [`Stats`] count them.
pub fn decode_bytes_per_token_at_dtype(spec: &Spec) -> u64 {
    decode_bytes_per_token(spec, &|t| mul(t.numel(), spec.dtype.bytes()))
}

/// FLOPs of a prefill of `prompt` tokens from an empty cache that computes the logits of
/// the last position only: `prompt` times the mean of [`Stats::flops_per_token`] at
/// context 1 and at context `prompt`, less the output head (`2 * vocab * hidden`) of the
/// `prompt - 1` positions whose logits are not computed. The mean is exact when the cost
/// of a token grows linearly with its position (every layer attends over the whole
/// prefix); sliding-window and chunked layers, whose cost stops growing, make it a slight
/// underestimate. Zero for an empty prompt.
pub fn prefill_flops(spec: &Spec, prompt: u64) -> f64 {
    if prompt == 0 {
        return 0.0;
    }
    // FLOPs do not depend on the cache dtype.
    let at = |context: u64| {
        stats(
            spec,
            Options {
                context,
                kv_dtype: DType::Bf16,
            },
        )
        .flops_per_token as f64
    };
    let head = 2.0 * spec.vocab as f64 * spec.hidden as f64;
    let per_token = (at(1) + at(prompt)) / 2.0;
    prompt as f64 * per_token - (prompt as f64 - 1.0) * head
}

/// The KV cache and the linear-attention state at `context` tokens in `kv_dtype`: the
/// [`Stats::kv_bytes_total`] plus [`Stats::linear_state_bytes`] of those options.
pub fn kv_bytes(spec: &Spec, context: u64, kv_dtype: DType) -> u64 {
    let s = stats(spec, Options { context, kv_dtype });
    s.kv_bytes_total.saturating_add(s.linear_state_bytes)
}

/// A tensor a token multiplies with: at least two axes, not an embedding table and not
/// Kimi's `A_log` (stored with four axes but a per-head vector).
fn is_matmul(t: &TensorSpec) -> bool {
    t.shape.len() >= 2 && t.role != Role::Embedding && !t.name.ends_with("a_log")
}

impl Stats {
    /// The statistics as one JSON object with a fixed key order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut breakdown = serde_json::Map::new();
        for (role, n) in &self.breakdown {
            breakdown.insert(role.as_str().to_string(), (*n).into());
        }
        serde_json::json!({
            "name": self.name,
            "family": self.family,
            "params_total": self.params_total,
            "params_active": self.params_active,
            "breakdown": breakdown,
            "weight_dtype": self.weight_dtype.as_str(),
            "weight_bytes": self.weight_bytes,
            "context": self.context,
            "kv_dtype": self.kv_dtype.as_str(),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_bytes_total": self.kv_bytes_total,
            "linear_state_bytes": self.linear_state_bytes,
            "flops_per_token": self.flops_per_token,
            "attention_layers": self.attention_layers,
            "linear_layers": self.linear_layers,
            "moe_layers": self.moe_layers,
            "mtp_params": self.mtp_params,
        })
    }

    /// The statistics as an aligned table for people, numbers with thousands separators.
    pub fn render(&self) -> String {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut row = |k: &str, v: String, note: String| rows.push((k.to_string(), v, note));
        row(
            "model",
            format!("{} ({})", self.name, self.family),
            String::new(),
        );
        row(
            "parameters",
            thousands(self.params_total),
            short(self.params_total, ""),
        );
        row(
            "active per token",
            thousands(self.params_active),
            percent(self.params_active, self.params_total),
        );
        for (role, n) in &self.breakdown {
            if *n > 0 {
                row(
                    &format!("  {}", role_label(*role)),
                    thousands(*n),
                    percent(*n, self.params_total),
                );
            }
        }
        if self.mtp_params > 0 {
            row(
                "MTP layers (not run)",
                thousands(self.mtp_params),
                format!("{} more in the checkpoint", short(self.mtp_params, "")),
            );
        }
        row(
            &format!("weights ({})", self.weight_dtype.as_str()),
            thousands(self.weight_bytes),
            bytes(self.weight_bytes),
        );
        row("context", thousands(self.context), String::new());
        row(
            &format!("kv cache per token ({})", self.kv_dtype.as_str()),
            thousands(self.kv_bytes_per_token),
            bytes(self.kv_bytes_per_token),
        );
        row(
            "kv cache at context",
            thousands(self.kv_bytes_total),
            bytes(self.kv_bytes_total),
        );
        if self.linear_layers > 0 {
            row(
                "linear-attention state",
                thousands(self.linear_state_bytes),
                bytes(self.linear_state_bytes),
            );
        }
        row(
            "flops per token",
            thousands(self.flops_per_token),
            short(self.flops_per_token, "FLOP"),
        );
        let mut layers = format!("{} attention", self.attention_layers);
        if self.linear_layers > 0 {
            layers += &format!(", {} linear", self.linear_layers);
        }
        if self.moe_layers > 0 {
            layers += &format!(", {} moe", self.moe_layers);
        }
        row("layers", layers, String::new());

        // Numbers are right-aligned in one column; text values (name, layers) start there.
        let numeric = |v: &str| v.chars().all(|c| c.is_ascii_digit() || c == ',');
        let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let vw = rows
            .iter()
            .filter(|r| numeric(&r.1))
            .map(|r| r.1.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v, note) in rows {
            let line = if numeric(&v) {
                format!("{k:<kw$}  {v:>vw$}  {note}")
            } else {
                format!("{k:<kw$}  {v}  {note}")
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One line per model, for comparing many files at once (`archc stats a.arch b.arch ...`).
pub fn render_summary(all: &[Stats]) -> String {
    let header = [
        "model",
        "family",
        "layers",
        "params",
        "active",
        "weights",
        "kv/token",
        "flops/token",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for s in all {
        rows.push([
            s.name.clone(),
            s.family.to_string(),
            (s.attention_layers + s.linear_layers).to_string(),
            thousands(s.params_total),
            thousands(s.params_active),
            bytes(s.weight_bytes),
            bytes(s.kv_bytes_per_token),
            short(s.flops_per_token, ""),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            // Names left-aligned, numbers right-aligned.
            if i < 2 {
                line += &format!("{cell:<w$}  ");
            } else {
                line += &format!("{cell:>w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn role_label(r: Role) -> &'static str {
    match r {
        Role::Embedding => "embedding",
        Role::Attention => "attention",
        Role::LinearAttention => "linear attention",
        Role::Ffn => "feed-forward",
        Role::RoutedExpert => "routed experts",
        Role::SharedExpert => "shared experts",
        Role::Router => "router",
        Role::Norm => "norms",
        Role::Head => "output head",
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short decimal form: `596.0M`, `671.0B`, `1.2T` followed by `unit`.
fn short(n: u64, unit: &str) -> String {
    let x = n as f64;
    let (v, s) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "B")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "K")
    } else {
        return format!("{n} {unit}").trim_end().to_string();
    };
    format!("{v:.1}{s} {unit}").trim_end().to_string()
}

/// Bytes in binary units: `1.11 GiB`.
fn bytes(n: u64) -> String {
    let x = n as f64;
    const K: f64 = 1024.0;
    if x >= K * K * K * K {
        format!("{:.2} TiB", x / (K * K * K * K))
    } else if x >= K * K * K {
        format!("{:.2} GiB", x / (K * K * K))
    } else if x >= K * K {
        format!("{:.2} MiB", x / (K * K))
    } else if x >= K {
        format!("{:.2} KiB", x / K)
    } else {
        format!("{n} B")
    }
}

fn percent(n: u64, total: u64) -> String {
    if total == 0 {
        return String::new();
    }
    format!("{:.1}%", 100.0 * n as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small Qwen3-shaped model; `tied` and the attention window vary per test.
    fn tiny(tied: bool, window: Option<u64>) -> Spec {
        let window = window.map_or(String::new(), |w| format!("window = {w}"));
        let src = format!(
            r#"model "tiny" {{
  family  = qwen3
  vocab   = 512
  hidden  = 64
  layers  = 2
  context = 256
  tied    = {tied}
  norm    = rmsnorm {{ eps = 1e-6 }}
}}
block {{
  attention {{
    heads    = 4
    kv_heads = 2
    head_dim = 32
    qk_norm  = per_head
    {window}
    rope {{ theta = 1_000_000 }}
  }}
  mlp {{ hidden = 128 }}
}}
"#
        );
        crate::validate::check_source("tiny.arch", &src)
            .unwrap_or_else(|d| panic!("the test model does not validate: {d:?}"))
    }

    fn flops_at(spec: &Spec, context: u64) -> u64 {
        stats(
            spec,
            Options {
                context,
                kv_dtype: DType::Bf16,
            },
        )
        .flops_per_token
    }

    #[test]
    fn decode_reads_one_embedding_row_unless_the_table_is_the_head() {
        let tied = tiny(true, None);
        let weights = stats(&tied, Options::for_spec(&tied)).weight_bytes;
        // Tied: the token embedding is the output head, so every byte is read.
        assert_eq!(decode_bytes_per_token_at_dtype(&tied), weights);
        let untied = tiny(false, None);
        let weights = stats(&untied, Options::for_spec(&untied)).weight_bytes;
        let row = 64 * untied.dtype.bytes();
        assert_eq!(
            decode_bytes_per_token_at_dtype(&untied),
            weights - 511 * row
        );
        // Stored bytes come from the caller: at half a byte per element (4-bit blocks),
        // the same tensors are read at a quarter of their bf16 size.
        let half = decode_bytes_per_token(&untied, &|t| t.numel() / 2);
        assert_eq!(half, decode_bytes_per_token_at_dtype(&untied) / 4);
    }

    #[test]
    fn prefill_flops_sum_every_position_less_the_heads_not_computed() {
        let spec = tiny(false, None);
        let head = 2 * 512 * 64;
        // Full attention: a token's cost is affine in its position, so the mean of the
        // first and last is exact.
        for prompt in [1u64, 2, 7, 64] {
            let sum: u64 = (1..=prompt).map(|c| flops_at(&spec, c)).sum();
            let want = sum - (prompt - 1) * head;
            assert_eq!(prefill_flops(&spec, prompt), want as f64, "prompt {prompt}");
        }
        assert_eq!(prefill_flops(&spec, 1), flops_at(&spec, 1) as f64);
        assert_eq!(prefill_flops(&spec, 0), 0.0);
        // A window stops the growth: the mean of the endpoints then undercounts.
        let windowed = tiny(false, Some(8));
        let sum: u64 = (1..=64).map(|c| flops_at(&windowed, c)).sum();
        let exact = (sum - 63 * head) as f64;
        let estimate = prefill_flops(&windowed, 64);
        assert!(
            estimate < exact && estimate > 0.9 * exact,
            "{estimate} vs {exact}"
        );
    }

    #[test]
    fn kv_bytes_are_the_cache_and_the_linear_state_at_the_context() {
        let spec = tiny(true, None);
        // Two layers of 2 KV heads x (32 + 32) values, 2 bytes each, per token.
        assert_eq!(kv_bytes(&spec, 100, DType::Bf16), 2 * 2 * 64 * 2 * 100);
        assert_eq!(kv_bytes(&spec, 100, DType::F32), 2 * 2 * 64 * 4 * 100);
        let s = stats(
            &spec,
            Options {
                context: 77,
                kv_dtype: DType::F16,
            },
        );
        assert_eq!(
            kv_bytes(&spec, 77, DType::F16),
            s.kv_bytes_total + s.linear_state_bytes
        );
        // A window caps what a layer holds.
        let windowed = tiny(true, Some(8));
        assert_eq!(kv_bytes(&windowed, 100, DType::Bf16), 2 * 2 * 64 * 2 * 8);
    }
}
