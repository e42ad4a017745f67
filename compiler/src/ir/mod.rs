//! The Graph IR: an arena of tensor-op nodes with typed ids, one closed `Op` enum and
//! symbolic dimensions, plus its text form (`print`) and its parser (`parse`), type rules
//! (`infer`) and verifier.
//!
//! A graph describes one forward pass over one sequence: `seq` new tokens that attend to
//! a KV cache of `past` earlier tokens. Parameters are not nodes: they live in their own
//! table and are referred to by name (`@layers.0.attn.q.weight`). Runtime inputs (token
//! ids, positions, KV-cache tensors) are `Op::Input` nodes; outputs name nodes. Both are
//! typed ([`Io`]), never recognised by their names.
//!
//! **Invariant:** nodes are in topological order (every operand precedes its user), and
//! every node's stored type is what `infer` computes from its operands.

pub mod fused;
mod infer;
mod io;
pub(crate) mod parse;
mod print;
pub(crate) use print::op_text;
pub mod rope;
mod verify;

pub use fused::{
    ElementwiseOp, Epilogue, ExpertAct, FlashAttnOp, Instr, LinearOp, MoeOp, NormRopeOp,
};
pub use infer::infer;
pub use io::{Io, IoError, KvPart, StatePart};
pub use parse::{parse, ParseError};
pub use verify::{verify, VerifyError};

use std::fmt;

/// Index of a node in `Graph::nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// Index of a parameter in `Graph::params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(pub u32);

/// An operand: the result of a node or a parameter tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Node(NodeId),
    Param(ParamId),
}

/// Element types. Activations are `F32`; parameters keep their storage type; token ids,
/// positions and expert indices are `I32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    Bf16,
    F8,
    I32,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F8 => "f8",
            DType::I32 => "i32",
        }
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }
}

impl From<archc_spec::DType> for DType {
    fn from(d: archc_spec::DType) -> DType {
        match d {
            archc_spec::DType::F32 => DType::F32,
            archc_spec::DType::F16 => DType::F16,
            archc_spec::DType::Bf16 => DType::Bf16,
            archc_spec::DType::F8 => DType::F8,
        }
    }
}

/// A dimension: `konst + seq * [seq] + past * [past]`, a linear form over the two
/// symbols of a forward pass. Concrete dims have both coefficients zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim {
    pub konst: u64,
    pub seq: u64,
    pub past: u64,
}

impl Dim {
    /// The number of new tokens in this pass.
    pub const SEQ: Dim = Dim {
        konst: 0,
        seq: 1,
        past: 0,
    };
    /// The number of tokens already in the KV cache.
    pub const PAST: Dim = Dim {
        konst: 0,
        seq: 0,
        past: 1,
    };

    pub const fn c(n: u64) -> Dim {
        Dim {
            konst: n,
            seq: 0,
            past: 0,
        }
    }

    pub fn is_const(self) -> bool {
        self.seq == 0 && self.past == 0
    }

    /// The concrete value, if the dim has no symbolic part.
    pub fn as_const(self) -> Option<u64> {
        self.is_const().then_some(self.konst)
    }

    /// The value for given symbol bindings.
    pub fn eval(self, seq: usize, past: usize) -> usize {
        self.konst as usize + self.seq as usize * seq + self.past as usize * past
    }

    pub fn plus(self, other: Dim) -> Dim {
        Dim {
            konst: self.konst + other.konst,
            seq: self.seq + other.seq,
            past: self.past + other.past,
        }
    }
}

impl std::str::FromStr for Dim {
    type Err = String;

    /// The text form back: terms `N`, `seq`, `past`, `N*seq`, `N*past` joined by `+`.
    fn from_str(s: &str) -> Result<Dim, String> {
        let bad = || format!("`{s}` is not a dimension (like `4096`, `seq` or `past+seq`)");
        let mut d = Dim::c(0);
        for term in s.split('+') {
            let term = term.trim();
            let (coef, sym) = match term.split_once('*') {
                Some((n, sym)) => (n.trim().parse::<u64>().map_err(|_| bad())?, sym.trim()),
                None if term == "seq" || term == "past" => (1, term),
                None => {
                    d.konst = term.parse::<u64>().map_err(|_| bad())?;
                    continue;
                }
            };
            match sym {
                "seq" => d.seq = coef,
                "past" => d.past = coef,
                _ => return Err(bad()),
            }
        }
        Ok(d)
    }
}

impl serde::Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        for (coef, sym) in [(self.past, "past"), (self.seq, "seq")] {
            match coef {
                0 => {}
                1 => terms.push(sym.to_string()),
                n => terms.push(format!("{n}*{sym}")),
            }
        }
        if self.konst != 0 || terms.is_empty() {
            terms.push(self.konst.to_string());
        }
        f.write_str(&terms.join("+"))
    }
}

/// Shape and element type of a node's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Type {
    pub shape: Vec<Dim>,
    pub dtype: DType,
}

impl Type {
    pub fn new(shape: Vec<Dim>, dtype: DType) -> Type {
        Type { shape, dtype }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "] {}", self.dtype.as_str())
    }
}

/// A parameter tensor, bound by the runtime to the checkpoint tensor of the same
/// canonical name (`layers.3.attn.q.weight`).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

impl Param {
    pub fn ty(&self) -> Type {
        Type::new(self.shape.iter().map(|&n| Dim::c(n)).collect(), self.dtype)
    }
}

/// Elementwise functions of one operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// Exact GELU, `x * Φ(x)`.
    Gelu,
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    /// `x * sigmoid(x)`.
    Silu,
    Sigmoid,
    /// Multiply by a constant.
    Scale(f64),
    /// `cap * tanh(x / cap)`.
    Softcap(f64),
}

/// Elementwise functions of two operands with numpy broadcasting (trailing dims align;
/// a dim of 1 stretches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / sqrt(mean(x²) + eps)`, then `* w` (or `* (1 + w)`).
    Rms,
    /// `(x - mean) / sqrt(var + eps)`, then `* w + b`.
    Layer,
}

/// A normalisation over the last axis. Operands: `x`, then the weight when
/// `weight`, then the bias when `bias`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormOp {
    pub kind: NormKind,
    pub eps: f64,
    /// The weight is applied as `(1 + w)`.
    pub plus_one: bool,
    pub weight: bool,
    pub bias: bool,
}

/// Rotary position embedding of `x [s, heads, d]` at `positions [s]`: the first `dims`
/// dims of every head are rotated, the rest pass through. Frequencies come from
/// `rope::inv_freq`; cos and sin are multiplied by its attention factor (YaRN).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeOp {
    pub theta: f64,
    pub dims: u64,
    pub pairing: archc_spec::Pairing,
    pub scaling: archc_spec::RopeScaling,
}

/// Softmax attention. Operands: `q [s, H, d]`, `k [t, K, d]`, `v [t, K, dv]`,
/// `positions [s]` (absolute positions of the queries; key `j` sits at position `j`),
/// then `sinks [H]` when `sinks`. Query head `h` reads KV head `h / (H / K)`.
/// Result `[s, H, dv]`.
///
/// With `mla` the keys and values are MLA's compressed latent cache and the low-rank
/// up-projections are absorbed (see [`MlaAttn`]); the operands are then `q [s, H, nope +
/// rope]`, `kv [t, 1, rank + rope]`, the up-projection `w [H * (nope + v), rank]` (MLA's
/// `kv_b.weight`, in the slot of `v`), `positions`, `[sinks]`; the result is `[s, H, v]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnOp {
    pub scale: f64,
    pub causal: bool,
    /// A query at `p` sees keys `j` with `p - j < window`.
    pub window: Option<u64>,
    /// A query at `p` sees keys `j` with `j / chunk == p / chunk`.
    pub chunk: Option<u64>,
    /// Attention logits become `cap * tanh(s / cap)` before masking.
    pub softcap: Option<f64>,
    /// One extra logit per head joins the softmax denominator.
    pub sinks: bool,
    /// Attend over MLA's latent cache with the absorbed up-projections.
    pub mla: Option<MlaAttn>,
}

/// Multi-head latent attention over the compressed cache, with `kv_b` absorbed (the
/// DeepSeek V2 trick): every cached token is one row `[c ; k_rope]` of `rank + rope`
/// numbers shared by all heads, and `w = kv_b.weight` holds per head `h` the rows
/// `W_UK_h [nope, rank]` then `W_UV_h [v, rank]`. For query row `q = [q_nope ; q_rope]`
/// of head `h`:
/// - `q_lat = q_nope · W_UK_h` (`[rank]`), so `q_lat · c = q_nope · (W_UK_h c) = q_nope ·
///   k_nope` without expanding any key;
/// - logit of key `j`: `scale * (q_lat · c_j + q_rope · k_rope_j)`, then the usual
///   softcap, masks, sinks and softmax;
/// - `o_lat = Σ_j p_j c_j` (`[rank]`) and the output `o = W_UV_h · o_lat` (`[v]`), which
///   equals `Σ_j p_j v_j` without expanding any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaAttn {
    /// The latent width (`kv_rank`).
    pub rank: u64,
    /// Query/key dims without RoPE per head.
    pub nope: u64,
    /// Value dims per head.
    pub v: u64,
}

/// Expert selection. Operands: router logits `[s, E]`, then the correction bias `[E]`
/// when `correction_bias`. Result: the chosen expert indices `[s, top_k]` (i32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterSelectOp {
    pub top_k: u64,
    pub score: archc_spec::RouterScore,
    /// Choose on raw logits instead of scores (and ignore groups and bias).
    pub topk_first: bool,
    pub correction_bias: bool,
    /// Only experts in the best `keep` of `count` groups (by the sum of each group's
    /// top-2 biased scores) are eligible.
    pub groups: Option<(u64, u64)>,
}

/// Routing weights of the chosen experts. Operands: router logits `[s, E]`, indices
/// `[s, k]`. With `topk_first` the score function runs over the k chosen logits only
/// (softmax over k, or sigmoid); otherwise over all E logits, then the chosen ones are
/// gathered. Then optional renormalisation to sum one, then `* scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterWeightsOp {
    pub score: archc_spec::RouterScore,
    pub topk_first: bool,
    pub renormalize: bool,
    pub scale: f64,
}

/// The closed set of Graph IR operations.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A runtime input: `tokens [s]`, `positions [s]`, a layer's KV cache (`cache.{i}.k` /
    /// `cache.{i}.v`, or MLA's latent `cache.{i}.kv`) or recurrent state.
    Input {
        io: Io,
    },
    /// Rows of a table: `table [n, ...]`, `ids [...]` (i32) → `ids.shape ++ table.shape[1..]`.
    Gather,
    /// `x [..., k]` times the transpose of `w [n, k]` → `[..., n]` (a torch Linear).
    MatMul,
    /// Per-slot expert Linear: `x [s, k]` or `[s, slots, k]`, stacked weights `w [E, n, k]`,
    /// indices `[s, slots]` → `[s, slots, n]`, slot `j` of token `t` using expert `idx[t, j]`.
    ExpertMatMul,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Norm(NormOp),
    /// Same elements, new shape (row-major).
    Reshape {
        shape: Vec<Dim>,
    },
    /// `[start, end)` along `axis`.
    Slice {
        axis: usize,
        start: u64,
        end: u64,
    },
    /// The last row along axis 0: `x [n, ...]` → `[1, ...]`, `n` symbolic or not. A pass
    /// that needs only the next token's logits keeps this row before the head.
    LastRow,
    /// The last `n` rows along axis 0: `x [m, ...]` → `[n, ...]`. `m` may be symbolic, but
    /// its constant part must be at least `n`, so every binding has the rows. A causal
    /// convolution keeps its next state this way; the gated delta rule returns its state
    /// as the tail of its result.
    TailRows {
        n: u64,
    },
    /// All but the last `n` rows along axis 0: `x [m, ...]` → `[m - n, ...]`, the constant
    /// part of `m` at least `n`.
    DropTailRows {
        n: u64,
    },
    /// Depthwise convolution along axis 0 without padding: `x [m, C]`, `w [C, 1, K]` →
    /// `[m - K + 1, C]`, `y[t, c] = Σ_j w[c, 0, j] * x[t + j, c]` (the constant part of `m`
    /// at least `K - 1`). A causal short convolution (Qwen3-Next, Kimi Linear) runs it over
    /// its `K - 1` previous input rows followed by the new ones.
    DepthwiseConv,
    /// The log decay of the linear-attention mixers: operands `a`, `a_log`, `dt_bias`,
    /// broadcast together (numpy rules) to the shape of `a`:
    /// `g = -exp(a_log) * softplus(a + dt_bias)` (softplus as torch's, linear above 20).
    DecayGate,
    /// The gated delta rule, token by token (Gated DeltaNet, Kimi Delta Attention).
    /// Operands: `q [s, Hk, dk]`, `k [s, Hk, dk]` (both already normalised and `q`
    /// scaled), `v [s, H, dv]`, the log decay `g` (`[s, H]`: one per head, or `[s, H, dk]`:
    /// one per key channel), `beta [s, H]` and the state `[dk, H, dv]` before the first
    /// token. Value head `h` reads query/key head `h / (H / Hk)`. Per token and head, with
    /// `S` the head's `[dk, dv]` state:
    /// `S = exp(g) * S` (row `i` by `exp(g_i)` when per channel);
    /// `u = beta * (v - Sᵀ k)`; `S = S + k uᵀ`; `o = Sᵀ q`.
    /// Result `[s + dk, H, dv]`: the outputs `o` (rows `[0, s)`), then the final state
    /// (the last `dk` rows, the layout of the state operand).
    DeltaRule,
    /// Broadcast to `shape` (numpy rules: dims of 1 stretch, leading dims may be added).
    Expand {
        shape: Vec<Dim>,
    },
    /// Join the two operands along `axis`.
    Concat {
        axis: usize,
    },
    /// Sum over `axis`, which is removed.
    Sum {
        axis: usize,
    },
    Rope(RopeOp),
    Attention(AttnOp),
    /// Llama 4 attention temperature of `positions [s]` → `[s, 1, 1]`:
    /// `1 + attn_scale * ln(1 + floor((p + 1) / floor_scale))`.
    AttnTemperature {
        floor_scale: f64,
        attn_scale: f64,
    },
    RouterSelect(RouterSelectOp),
    RouterWeights(RouterWeightsOp),
    /// GPT-OSS activation of `gate`, `up`: `(clamp(up, ±limit) + 1) * g * sigmoid(alpha * g)`
    /// with `g = min(gate, limit)`.
    ClampedSwiglu {
        alpha: f64,
        limit: f64,
    },
    /// Fused (created only by passes): a matmul with norm prologue, several weight parts,
    /// activation or gated epilogue and residual add; see `LinearOp`.
    Linear(LinearOp),
    /// Fused (created only by passes): a chain of elementwise ops as one loop.
    Elementwise(ElementwiseOp),
    /// Fused (created only by passes): QK-norm, RoPE and the KV-cache append.
    NormRope(NormRopeOp),
    /// Fused (created only by passes): attention with online softmax and output gate.
    FlashAttention(FlashAttnOp),
    /// Fused (created only by passes): router and routed experts of a MoE layer.
    Moe(MoeOp),
}

/// One node: an operation, its operands and the type of its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Value>,
    pub ty: Type,
}

/// Whether a graph processes a whole prompt or a single token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `seq` symbolic new tokens after `past` cached ones (`past` may be 0).
    Prefill,
    /// Exactly one new token after `past` cached ones.
    Decode,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Decode => "decode",
        }
    }
}

/// A graph result: `logits`, or a layer's updated KV cache or state.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub io: Io,
    pub node: NodeId,
}

/// A whole forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    pub mode: Mode,
    pub params: Vec<Param>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
    /// Section comments printed before a node (`layer 3 (block local)`); no semantics.
    pub labels: Vec<(NodeId, String)>,
}

impl Graph {
    pub fn new(name: &str, mode: Mode) -> Graph {
        Graph {
            name: name.to_string(),
            mode,
            params: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0 as usize]
    }

    /// The type of an operand, or `None` for an id out of range.
    pub fn value_type(&self, v: Value) -> Option<Type> {
        match v {
            Value::Node(n) => self.nodes.get(n.0 as usize).map(|n| n.ty.clone()),
            Value::Param(p) => self.params.get(p.0 as usize).map(Param::ty),
        }
    }

    /// Find a parameter by name.
    pub fn param_id(&self, name: &str) -> Option<ParamId> {
        self.params
            .iter()
            .position(|p| p.name == name)
            .map(|i| ParamId(i as u32))
    }

    /// The runtime inputs, in node order.
    pub fn inputs(&self) -> impl Iterator<Item = (NodeId, &Io)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.op {
                Op::Input { io } => Some((NodeId(i as u32), io)),
                _ => None,
            })
    }

    /// The node of output `io`.
    pub fn output(&self, io: &Io) -> Option<NodeId> {
        self.outputs.iter().find(|o| o.io == *io).map(|o| o.node)
    }
}
