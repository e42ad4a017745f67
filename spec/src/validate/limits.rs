//! The semantic check of a finished `Spec`: structure, consistency between numbers, and the
//! size limits that keep every later stage (stats, tensors, print, diff, lowering, binding)
//! free of overflow and absurd allocations.
//!
//! Both front ends end here: the `.arch` validator runs it after its own span-carrying
//! checks, and `import` runs it before handing a `Spec` out. A `Spec` that passes
//! satisfies:
//!
//! - `1 <= layers <= MAX_LAYERS`, `schedule.len() == layers`, every schedule entry names a
//!   block, and every block is scheduled at least once or not at all (unused blocks are fine);
//! - every size field is in `1..=MAX_SIZE`, experts per layer at most `MAX_EXPERTS`, routed
//!   experts over all layers at most `MAX_EXPERT_INSTANCES`;
//! - every float is finite, and positive where the field is a scale, epsilon or base;
//! - the numbers agree (heads and kv_heads, rotary dims, MLA dims, top_k, router groups);
//! - every field changes the computation: attention temperature tuning only on NoPE layers;
//! - every tensor dimension is at most `MAX_TENSOR_DIM`, every tensor at most
//!   `MAX_TENSOR_ELEMENTS` elements, all tensors together at most `MAX_MODEL_ELEMENTS`;
//! - the KV cache at `context` (in f32), the linear-attention state and the attention FLOPs
//!   per token are each at most `MAX_DERIVED`.
//!
//! With these bounds every product that stats and tensors form fits in a `u64` with room to
//! spare; they still use saturating arithmetic, so a `Spec` built by hand that skipped this
//! check gives capped numbers rather than a panic.

use crate::spec::*;
use crate::tensors::tensors;

/// Largest value of any single size field (vocab, hidden, heads, context, window, ...).
pub const MAX_SIZE: u64 = 1 << 32;
/// More layers than this is surely a typo (the deepest published models have about 130).
/// Every stage works at this depth: the kernel program of a 4,096-layer model is a few
/// hundred megabytes of text (`tests/hostile.rs` lowers one to the kernel stage).
pub const MAX_LAYERS: u64 = 4096;
/// Multi-token-prediction layers (DeepSeek V3 and GLM-4.5 ship one).
pub const MAX_MTP: u64 = 16;
/// Routed experts of one MoE layer (the largest published models have 512).
pub const MAX_EXPERTS: u64 = 1 << 16;
/// Routed experts summed over all layers: bounds the per-expert checkpoint names
/// that binding lists (DeepSeek V3 has 58 * 256 = 14,848).
pub const MAX_EXPERT_INSTANCES: u64 = 1 << 20;
/// Largest dimension of any parameter tensor (e.g. `heads * head_dim`).
pub const MAX_TENSOR_DIM: u64 = 1 << 32;
/// Largest element count of one parameter tensor.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 48;
/// Largest element count of all parameter tensors together (about 500 times the
/// largest published model).
pub const MAX_MODEL_ELEMENTS: u64 = 1 << 50;
/// Largest KV-cache bytes at context, linear-state bytes and attention FLOPs per token.
pub const MAX_DERIVED: u64 = 1 << 60;

/// Checks a finished `Spec`; every problem found, each naming the field by its path
/// (`vocab`, `block "moe": moe.top_k`, `tensor layers.0.attn.q.weight`).
pub fn check_spec(spec: &Spec) -> Result<(), Vec<String>> {
    let mut c = Checker { errors: Vec::new() };
    c.globals(spec);
    c.structure(spec);
    for b in &spec.blocks {
        c.block(b);
    }
    if c.errors.is_empty() {
        c.totals(spec);
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(c.errors)
    }
}

struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn error(&mut self, msg: String) {
        self.errors.push(msg);
    }

    /// A size field: an integer in `1..=max`.
    fn size(&mut self, path: &str, n: u64, max: u64) {
        if n == 0 {
            self.error(format!("{path}: must be at least 1, found 0"));
        } else if n > max {
            self.error(format!("{path}: {n} is more than the limit of {max}"));
        }
    }

    /// A float field: finite, and positive when `positive`.
    fn float(&mut self, path: &str, x: f64, positive: bool) {
        if !x.is_finite() {
            self.error(format!("{path}: {x} is not a finite number"));
        } else if positive && x <= 0.0 {
            self.error(format!("{path}: must be positive, found {x}"));
        }
    }

    fn norm(&mut self, path: &str, n: &Norm) {
        self.float(&format!("{path}.eps"), n.eps, true);
        // Lowering ignores a field of the other kind, and the language cannot say it.
        match n.kind {
            NormKind::RmsNorm if n.bias => {
                self.error(format!("{path}.bias: an RMS norm has no bias"));
            }
            NormKind::LayerNorm if n.plus_one => {
                self.error(format!(
                    "{path}.plus_one: a layer norm's weight is not `1 + w`"
                ));
            }
            _ => {}
        }
    }

    fn globals(&mut self, s: &Spec) {
        if s.mtp > MAX_MTP {
            self.error(format!(
                "mtp: {} is more than the limit of {MAX_MTP}",
                s.mtp
            ));
        }
        if s.mtp > 0 && !crate::mtp::has_mtp_layout(s.family) {
            self.error(format!(
                "mtp: archc knows no multi-token-prediction tensor layout for family {} (it does for {})",
                s.family.as_str(),
                crate::mtp::MTP_FAMILIES
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.size("vocab", s.vocab, MAX_SIZE);
        self.size("hidden", s.hidden, MAX_SIZE);
        self.size("layers", s.layers, MAX_LAYERS);
        self.size("context", s.context, MAX_SIZE);
        if let Some(x) = s.embed_scale {
            self.float("embed_scale", x, false);
        }
        if let Some(n) = s.learned_positions {
            self.size("positions.rows", n, MAX_SIZE);
        }
        if let Some(n) = s.token_types {
            self.size("token_types", n, MAX_SIZE);
        }
        if let Some(n) = &s.embed_norm {
            self.norm("embed_norm", n);
        }
        if let Some(n) = &s.final_norm {
            self.norm("final_norm", n);
        }
        if let Some(x) = s.logit_softcap {
            self.float("logit_softcap", x, true);
        }
    }

    fn structure(&mut self, s: &Spec) {
        if s.blocks.is_empty() {
            self.error("blocks: the model has no layer variant".to_string());
        }
        if s.schedule.len() as u64 != s.layers {
            self.error(format!(
                "schedule: has {} entries but layers is {}",
                s.schedule.len(),
                s.layers
            ));
        }
        if let Some((i, b)) = s
            .schedule
            .iter()
            .enumerate()
            .find(|(_, &b)| b >= s.blocks.len())
        {
            self.error(format!(
                "schedule: layer {i} runs block {b}, but there are {} blocks",
                s.blocks.len()
            ));
        }
        let mut expert_instances: u64 = 0;
        for &b in &s.schedule {
            if let Some(Ffn::Moe(m)) = s.blocks.get(b).map(|b| &b.ffn) {
                expert_instances = expert_instances.saturating_add(m.experts);
            }
        }
        if expert_instances > MAX_EXPERT_INSTANCES {
            self.error(format!(
                "moe.experts: {expert_instances} routed experts over all layers is more than the limit of {MAX_EXPERT_INSTANCES}"
            ));
        }
    }

    fn block(&mut self, b: &Block) {
        let at = format!("block \"{}\"", b.name);
        self.norm(&format!("{at}: norm"), &b.norm);
        match &b.mixer {
            Mixer::Attention(a) => self.attention(&format!("{at}: attention"), a),
            Mixer::GatedDeltaNet(g) => {
                let p = format!("{at}: gated_deltanet");
                self.size(&format!("{p}.k_heads"), g.k_heads, MAX_SIZE);
                self.size(&format!("{p}.v_heads"), g.v_heads, MAX_SIZE);
                self.size(&format!("{p}.k_head_dim"), g.k_head_dim, MAX_SIZE);
                self.size(&format!("{p}.v_head_dim"), g.v_head_dim, MAX_SIZE);
                self.size(&format!("{p}.conv"), g.conv, MAX_SIZE);
                if g.k_heads > 0 && g.v_heads % g.k_heads != 0 {
                    self.error(format!(
                        "{p}.v_heads: {} is not a multiple of k_heads ({})",
                        g.v_heads, g.k_heads
                    ));
                }
            }
            Mixer::KimiDelta(k) => {
                let p = format!("{at}: kimi_delta");
                self.size(&format!("{p}.heads"), k.heads, MAX_SIZE);
                self.size(&format!("{p}.head_dim"), k.head_dim, MAX_SIZE);
                self.size(&format!("{p}.conv"), k.conv, MAX_SIZE);
            }
            Mixer::ShortConv(c) => {
                self.size(&format!("{at}: short_conv.conv"), c.conv, MAX_SIZE);
            }
        }
        match &b.ffn {
            Ffn::Mlp(m) => {
                let p = format!("{at}: mlp");
                self.size(&format!("{p}.hidden"), m.hidden, MAX_SIZE);
                self.activation(&p, m.act, m.gated);
            }
            Ffn::Moe(m) => self.moe(&format!("{at}: moe"), m),
        }
    }

    fn attention(&mut self, p: &str, a: &Attention) {
        self.size(&format!("{p}.heads"), a.heads, MAX_SIZE);
        self.size(&format!("{p}.kv_heads"), a.kv_heads, MAX_SIZE);
        self.size(&format!("{p}.head_dim"), a.head_dim, MAX_SIZE);
        self.size(&format!("{p}.v_head_dim"), a.v_head_dim, MAX_SIZE);
        if a.kv_heads > 0 && a.heads % a.kv_heads != 0 {
            self.error(format!(
                "{p}.kv_heads: heads ({}) is not divisible by kv_heads ({})",
                a.heads, a.kv_heads
            ));
        }
        if let Some(m) = &a.mla {
            if let Some(r) = m.q_rank {
                self.size(&format!("{p}.mla.q_rank"), r, MAX_SIZE);
            }
            self.size(&format!("{p}.mla.kv_rank"), m.kv_rank, MAX_SIZE);
            self.size(&format!("{p}.mla.nope_dim"), m.nope_dim, MAX_SIZE);
            self.size(&format!("{p}.mla.rope_dim"), m.rope_dim, MAX_SIZE);
            self.size(&format!("{p}.mla.v_dim"), m.v_dim, MAX_SIZE);
            if a.kv_heads != a.heads {
                self.error(format!(
                    "{p}.kv_heads: with mla, kv_heads equals heads ({}), not {}",
                    a.heads, a.kv_heads
                ));
            }
            if m.nope_dim.checked_add(m.rope_dim) != Some(a.head_dim) {
                self.error(format!(
                    "{p}.head_dim: with mla, head_dim is nope_dim + rope_dim, not {}",
                    a.head_dim
                ));
            }
            if m.v_dim != a.v_head_dim {
                self.error(format!(
                    "{p}.v_head_dim: with mla, it is mla.v_dim ({}), not {}",
                    m.v_dim, a.v_head_dim
                ));
            }
            // Lowering would ignore these (the validator says why, at the field).
            if a.gate {
                self.error(format!("{p}.gate: does not apply to mla attention"));
            }
            if a.qk_norm != QkNorm::None {
                self.error(format!("{p}.qk_norm: does not apply to mla attention"));
            }
            if a.bias.k != a.bias.v {
                self.error(format!(
                    "{p}.bias: with mla, keys and values share one projection, so k and v have a bias together or not at all"
                ));
            }
        }
        if let Some(w) = a.window {
            self.size(&format!("{p}.window"), w, MAX_SIZE);
        }
        if let Some(c) = a.chunk {
            self.size(&format!("{p}.chunk"), c, MAX_SIZE);
        }
        match &a.qk_norm {
            QkNorm::None => {}
            QkNorm::PerHead(n) | QkNorm::Full(n) => self.norm(&format!("{p}.qk_norm"), n),
            QkNorm::L2 { eps } => self.float(&format!("{p}.qk_norm.eps"), *eps, true),
        }
        if let Some(x) = a.softcap {
            self.float(&format!("{p}.softcap"), x, true);
        }
        if let Some(x) = a.scale {
            self.float(&format!("{p}.scale"), x, false);
        }
        if let Some(t) = &a.temperature {
            self.float(&format!("{p}.temperature.floor_scale"), t.floor_scale, true);
            self.float(&format!("{p}.temperature.attn_scale"), t.attn_scale, false);
            // Lowering tunes the temperature of NoPE layers only.
            if a.rope.is_some() {
                self.error(format!(
                    "{p}.temperature: applies only to NoPE layers (no rope), and this layer has RoPE"
                ));
            }
        }
        if let Some(r) = &a.rope {
            self.rope(&format!("{p}.rope"), r, a);
        }
    }

    fn rope(&mut self, p: &str, r: &Rope, a: &Attention) {
        self.float(&format!("{p}.theta"), r.theta, true);
        // Under MLA only the shared `rope_dim` part of each head rotates.
        let max = a.mla.map_or(a.head_dim, |m| m.rope_dim);
        let what = if a.mla.is_some() {
            "mla.rope_dim"
        } else {
            "head_dim"
        };
        if r.dims == 0 {
            self.error(format!("{p}.dims: must be at least 1, found 0"));
        } else if r.dims % 2 == 1 {
            self.error(format!(
                "{p}.dims: rotary dims must be even, found {}",
                r.dims
            ));
        } else if r.dims > max {
            self.error(format!(
                "{p}.dims: rotary dims ({}) exceed {what} ({max})",
                r.dims
            ));
        }
        match &r.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                self.float(&format!("{p}.scaling.factor"), *factor, true)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let s = format!("{p}.scaling");
                self.float(&format!("{s}.factor"), *factor, true);
                self.float(&format!("{s}.low_freq_factor"), *low_freq_factor, true);
                self.float(&format!("{s}.high_freq_factor"), *high_freq_factor, true);
                self.size(
                    &format!("{s}.original_context"),
                    *original_context,
                    MAX_SIZE,
                );
            }
            RopeScaling::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                attention_factor,
                truncate: _,
            } => {
                let s = format!("{p}.scaling");
                self.float(&format!("{s}.factor"), *factor, true);
                self.size(
                    &format!("{s}.original_context"),
                    *original_context,
                    MAX_SIZE,
                );
                self.float(&format!("{s}.beta_fast"), *beta_fast, false);
                self.float(&format!("{s}.beta_slow"), *beta_slow, false);
                self.float(&format!("{s}.mscale"), *mscale, false);
                self.float(&format!("{s}.mscale_all_dim"), *mscale_all_dim, false);
                if let Some(x) = attention_factor {
                    self.float(&format!("{s}.attention_factor"), *x, false);
                }
                // Lowering would ignore these (the validator says why, at the field).
                if *mscale != 1.0 && (*mscale_all_dim == 0.0 || attention_factor.is_some()) {
                    self.error(format!(
                        "{s}.mscale: sets the attention factor only with a non-zero mscale_all_dim and no attention_factor"
                    ));
                }
                if *mscale_all_dim != 0.0 && attention_factor.is_some() && a.scale.is_some() {
                    self.error(format!(
                        "{s}.mscale_all_dim: does nothing when both attention_factor and the attention's scale are given"
                    ));
                }
            }
        }
    }

    fn activation(&mut self, p: &str, act: Activation, gated: bool) {
        if let Activation::ClampedSwiglu { alpha, limit } = act {
            self.float(&format!("{p}.act.alpha"), alpha, false);
            self.float(&format!("{p}.act.limit"), limit, true);
            if !gated {
                self.error(format!("{p}.gated: clamped_swiglu is always gated"));
            }
        }
    }

    fn moe(&mut self, p: &str, m: &Moe) {
        self.size(&format!("{p}.experts"), m.experts, MAX_EXPERTS);
        self.size(&format!("{p}.top_k"), m.top_k, MAX_EXPERTS);
        self.size(&format!("{p}.hidden"), m.hidden, MAX_SIZE);
        self.activation(p, m.act, m.gated);
        if m.top_k > m.experts {
            self.error(format!(
                "{p}.top_k: {} is more than the number of experts ({})",
                m.top_k, m.experts
            ));
        }
        if let Some(s) = &m.shared {
            self.size(&format!("{p}.shared.count"), s.count, MAX_EXPERTS);
            self.size(&format!("{p}.shared.hidden"), s.hidden, MAX_SIZE);
        }
        let r = &m.router;
        self.float(&format!("{p}.router.scale"), r.scale, true);
        if r.topk_first {
            // Lowering would ignore these (the validator says why, at the field).
            if r.correction_bias {
                self.error(format!(
                    "{p}.router.correction_bias: does not apply with topk_first"
                ));
            }
            if r.groups.is_some() {
                self.error(format!("{p}.router.groups: does not apply with topk_first"));
            }
            if r.renormalize && r.score == RouterScore::Softmax {
                self.error(format!(
                    "{p}.router.renormalize: does nothing with topk_first and softmax"
                ));
            }
        }
        if let Some(g) = &r.groups {
            self.size(&format!("{p}.router.groups.count"), g.count, MAX_EXPERTS);
            self.size(&format!("{p}.router.groups.keep"), g.keep, MAX_EXPERTS);
            if g.keep > g.count {
                self.error(format!(
                    "{p}.router.groups.keep: {} is more than the number of groups ({})",
                    g.keep, g.count
                ));
            } else if g.count > 0 && m.experts % g.count != 0 {
                self.error(format!(
                    "{p}.router.groups.count: {} groups do not divide {} experts",
                    g.count, m.experts
                ));
            } else if g.count > 0 && m.top_k > g.keep * (m.experts / g.count) {
                self.error(format!(
                    "{p}.top_k: {} is more than the {} experts of the {} kept groups",
                    m.top_k,
                    g.keep * (m.experts / g.count),
                    g.keep
                ));
            }
        }
    }

    /// Tensor sizes and derived totals. Runs only on a spec whose fields passed, so every
    /// field is at most `MAX_SIZE` and every product below fits in a `u128`.
    fn totals(&mut self, s: &Spec) {
        // One layer per block lists each block's tensors once; per-layer tensors then count
        // once for every layer that runs their block.
        let mut uses = vec![0u128; s.blocks.len()];
        for &b in &s.schedule {
            uses[b] += 1;
        }
        let reduced = Spec {
            layers: s.blocks.len() as u64,
            schedule: (0..s.blocks.len()).collect(),
            ..s.clone()
        };
        let mut total: u128 = 0;
        for t in tensors(&reduced) {
            let name = match t.layer {
                Some(b) => {
                    let local = t.name.split_once('.').map_or("", |x| x.1);
                    let local = local.split_once('.').map_or(local, |x| x.1);
                    format!("block \"{}\": tensor {local}", s.blocks[b].name)
                }
                None => format!("tensor {}", t.name),
            };
            if let Some(d) = t.shape.iter().find(|&&d| d > MAX_TENSOR_DIM) {
                self.error(format!(
                    "{name}: dimension {d} of shape {:?} is more than the limit of {MAX_TENSOR_DIM}",
                    t.shape
                ));
                continue;
            }
            let numel: u128 = t.shape.iter().map(|&d| u128::from(d)).product();
            if numel > u128::from(MAX_TENSOR_ELEMENTS) {
                self.error(format!(
                    "{name}: shape {:?} has {numel} elements, more than the limit of {MAX_TENSOR_ELEMENTS}",
                    t.shape
                ));
                continue;
            }
            total += numel * t.layer.map_or(1, |b| uses[b]);
        }
        if !self.errors.is_empty() {
            return;
        }
        if total > u128::from(MAX_MODEL_ELEMENTS) {
            self.error(format!(
                "the model has {total} parameter elements, more than the limit of {MAX_MODEL_ELEMENTS}"
            ));
        }
        let ctx = u128::from(s.context);
        let (mut kv, mut state, mut flops) = (0u128, 0u128, 0u128);
        for (b, block) in s.blocks.iter().enumerate() {
            let n = uses[b];
            match &block.mixer {
                Mixer::Attention(a) => {
                    let held = [a.window, a.chunk]
                        .into_iter()
                        .flatten()
                        .fold(ctx, |m, w| m.min(u128::from(w)));
                    let (per_token, per_key) = match &a.mla {
                        Some(m) => (
                            u128::from(m.kv_rank) + u128::from(m.rope_dim),
                            2 * u128::from(m.kv_rank) + u128::from(m.rope_dim),
                        ),
                        None => {
                            let dims = u128::from(a.head_dim) + u128::from(a.v_head_dim);
                            (u128::from(a.kv_heads) * dims, dims)
                        }
                    };
                    kv += n * per_token * 4 * held;
                    flops += n * 2 * u128::from(a.heads) * per_key * held;
                }
                Mixer::GatedDeltaNet(g) => {
                    let (kh, vh) = (u128::from(g.k_heads), u128::from(g.v_heads));
                    let (kd, vd) = (u128::from(g.k_head_dim), u128::from(g.v_head_dim));
                    let channels = 2 * kh * kd + vh * vd;
                    state += n * 4 * (channels * u128::from(g.conv) + vh * kd * vd);
                    flops += n * 6 * vh * kd * vd;
                }
                Mixer::KimiDelta(k) => {
                    let (h, d) = (u128::from(k.heads), u128::from(k.head_dim));
                    state += n * 4 * (3 * h * d * u128::from(k.conv) + h * d * d);
                    flops += n * 6 * h * d * d;
                }
                Mixer::ShortConv(c) => {
                    let hidden = u128::from(s.hidden);
                    state += n * 4 * hidden * u128::from(c.conv);
                    flops += n * 2 * hidden * (u128::from(c.conv) + 2);
                }
            }
        }
        for (what, x) in [
            ("the KV cache at context (in f32)", kv),
            ("the linear-attention state (in f32)", state),
        ] {
            if x > u128::from(MAX_DERIVED) {
                self.error(format!(
                    "{what} is {x} bytes, more than the limit of {MAX_DERIVED}"
                ));
            }
        }
        if flops > u128::from(MAX_DERIVED) {
            self.error(format!(
                "attention takes {flops} FLOPs per token, more than the limit of {MAX_DERIVED}"
            ));
        }
    }
}
