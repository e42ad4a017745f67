//! Graph IR (after the fusion passes) to kernel IR: one kernel per computing node, buffers
//! for every value, aliases for reshapes, and the launch sequence.
//!
//! **Convention:** the kernel of node `n` takes one buffer parameter per operand of `n`, in
//! operand order (node results and parameters alike), then the result buffer, then any
//! scratch buffers. Kernel generators live in `basic.rs` (layout, elementwise, norms, RoPE,
//! matmuls), `attention.rs` (attention, norm+RoPE+cache) and `moe.rs` (routers, experts).
//! Identical kernels (same body and parameters, e.g. the same op in every layer) are emitted
//! once and launched many times.
//!
//! **Buffers of a program**, in this order:
//! - one per parameter that some node reads, named `@` + its canonical name, in the
//!   parameter's stored element type (f32, bf16, f16, f8; kernels read f8 weights in
//!   place and widen them to f32 in registers);
//! - one per node, in node order: an `Op::Input` is an `Input` buffer named by the input
//!   (`tokens`, `positions`, `cache.0.k`; ids and positions are i32); a reshape is an
//!   `Alias` of the buffer owning its operand's memory (row-major, so no data moves); a
//!   node that is a graph output is an `Output` buffer named by the output (`logits`,
//!   `cache.0.k`); every other node is a `Temp` named `%{node}`.
//!
//! An updated cache output carries the same name as the cache input it replaces: names
//! are binding keys, unique among params and inputs and among outputs, and the kind says
//! which side a buffer is on ([`Program::input`], [`Program::output`]).
//!
//! **Outputs that compute nothing.** An output whose node is an input or a reshape, or a
//! second output naming the same node, would share memory with a buffer the caller owns
//! for another purpose. Such an output gets a buffer of its own and a `copy` launch at the
//! end of the program, so every output buffer is written by exactly one launch and never
//! aliases an input or a parameter.
//!
//! **Kernel names** are the op kind and eight hex digits of an FNV-1a hash of the kernel's
//! text with its name and parameter names left out (`linear_3fa2c901`): stable across runs
//! and machines, equal for equal kernels, and valid C identifiers.

mod attention;
mod basic;
mod moe;
mod quant;
mod rows;

pub use quant::{program_with, program_with_options, BlockFormat, ParamFormat};

use super::{build, Buffer, BufferKind, Elem, Expr, Kernel, Launch, Program};
use crate::ir::{DType, Dim, Graph, Io, Node, NodeId, Op, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Why a graph could not be turned into kernels.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// The op has no kernel generator yet.
    Unsupported { node: u32, op: String },
    /// A malformed graph (an operand type missing, a rank the generator does not handle).
    Invalid { node: u32, message: String },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Unsupported { node, op } => {
                write!(f, "%{node}: no kernel for `{op}` yet")
            }
            KernelError::Invalid { node, message } => write!(f, "%{node}: {message}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// The kernel that computes node `id`, or `None` for nodes that need none (inputs,
/// reshapes, which become buffer aliases).
pub(crate) fn node_kernel(
    graph: &Graph,
    id: NodeId,
    name: &str,
    opts: &KernelOptions,
) -> Result<Option<Kernel>, KernelError> {
    let node: &Node = &graph.nodes[id.0 as usize];
    if opts.append_in_place && rows::in_place_append(graph, id).is_some() {
        return match &node.op {
            Op::NormRope(_) => attention::norm_rope_in_place(graph, id, name).map(Some),
            _ => rows::append_rows(graph, id, name).map(Some),
        };
    }
    match &node.op {
        Op::Input { .. } | Op::Reshape { .. } => Ok(None),
        Op::Attention(_) | Op::FlashAttention(_) | Op::NormRope(_) => {
            attention::kernel(graph, id, name).map(Some)
        }
        Op::ExpertMatMul | Op::RouterSelect(_) | Op::RouterWeights(_) | Op::Moe(_) => {
            moe::kernel(graph, id, name).map(Some)
        }
        Op::LastRow => rows::last_row(graph, id, name).map(Some),
        // The linear-attention ops (Gated DeltaNet, Kimi Delta) run in the graph
        // interpreter only so far.
        Op::TailRows { .. }
        | Op::DropTailRows { .. }
        | Op::DepthwiseConv
        | Op::DecayGate
        | Op::DeltaRule => Err(KernelError::Unsupported {
            node: id.0,
            op: crate::ir::op_text(&node.op),
        }),
        _ => basic::kernel(graph, id, name, opts).map(Some),
    }
}

/// The kind part of a kernel's name.
fn kind_name(op: &Op) -> &'static str {
    use crate::ir::{BinaryOp, NormKind};
    match op {
        Op::Input { .. } | Op::Reshape { .. } => "copy",
        Op::Gather => "gather",
        Op::MatMul => "matmul",
        Op::ExpertMatMul => "expert_matmul",
        Op::Unary(_) => "unary",
        Op::Binary(BinaryOp::Add) => "add",
        Op::Binary(BinaryOp::Mul) => "mul",
        Op::Norm(n) => match n.kind {
            NormKind::Rms => "rmsnorm",
            NormKind::Layer => "layernorm",
        },
        Op::Slice { .. } => "slice",
        Op::LastRow => "last_row",
        Op::TailRows { .. } => "tail_rows",
        Op::DropTailRows { .. } => "drop_tail_rows",
        Op::DepthwiseConv => "depthwise_conv",
        Op::DecayGate => "decay_gate",
        Op::DeltaRule => "delta_rule",
        Op::Expand { .. } => "expand",
        Op::Concat { .. } => "concat",
        Op::Sum { .. } => "sum",
        Op::Rope(_) => "rope",
        Op::Attention(_) => "attention",
        Op::AttnTemperature { .. } => "attn_temperature",
        Op::RouterSelect(_) => "router_select",
        Op::RouterWeights(_) => "router_weights",
        Op::ClampedSwiglu { .. } => "clamped_swiglu",
        Op::Linear(_) => "linear",
        Op::Elementwise(_) => "elementwise",
        Op::NormRope(_) => "norm_rope",
        Op::FlashAttention(_) => "flash_attention",
        Op::Moe(_) => "moe",
    }
}

/// The element type a graph dtype is stored as. Every dtype has one; f8 (e4m3fn) buffers
/// are read-only, which [`program`] enforces by refusing nodes that compute an f8 value.
fn stored(dtype: DType) -> Elem {
    match dtype {
        DType::F32 => Elem::F32,
        DType::Bf16 => Elem::Bf16,
        DType::F16 => Elem::F16,
        DType::I32 => Elem::I32,
        DType::F8 => Elem::F8,
    }
}

/// [`stored`] in the fallible form the kernel generators call for each operand and result
/// (`node` and `what` locate a refusal, should a dtype ever have no element type again).
fn elem(dtype: DType, _node: u32, _what: &str) -> Result<Elem, KernelError> {
    Ok(stored(dtype))
}

/// Collects kernels, emitting each distinct one once.
#[derive(Default)]
struct Kernels {
    kernels: Vec<Kernel>,
    /// Kernel text without names → index.
    by_body: BTreeMap<String, usize>,
    names: BTreeMap<String, usize>,
}

impl Kernels {
    /// The index of `k` (named `{kind}_{hash}`), adding it if no equal kernel exists.
    fn add(&mut self, kind: &str, mut k: Kernel) -> usize {
        // Canonical variables: the text names every variable of the table.
        k.compact_vars();
        let body = crate::kernel::program::content_text(&k, kind);
        if let Some(&i) = self.by_body.get(&body) {
            return i;
        }
        let base = format!(
            "{kind}_{:08x}",
            crate::kernel::program::fnv1a64(&body) as u32
        );
        // A 32-bit collision between different kernels is unlikely but must not merge them.
        let mut name = base.clone();
        let mut n = 2;
        while self.names.contains_key(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        k.name = name.clone();
        let i = self.kernels.len();
        self.kernels.push(k);
        self.by_body.insert(body, i);
        self.names.insert(name, i);
        i
    }
}

/// Choices of kernel lowering that the graph does not fix. The default computes what the
/// graph interpreter computes, up to f32 summation order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KernelOptions {
    /// Matmuls whose weights are all bf16 round their activation rows to bf16 (after the
    /// norm prologue, where there is one) and multiply them in bf16 pairs accumulated in f32, as
    /// PyTorch bf16 and llama.cpp do: code generators can then use bf16 dot-product
    /// instructions. Prefill matmuls also switch to row blocks with the rounded rows in
    /// per-thread scratch (a CPU schedule); decode rounds its one row. Changes numerics,
    /// so off by default.
    pub bf16_activations: bool,
    /// KV-cache appends grow the cache input in place: the grown cache is a
    /// `BufferKind::Append` of the input (see its contract) and the appending kernels
    /// write only the new rows, instead of copying the old rows into a new output. Off by
    /// default until every executor honours `Append`.
    pub append_in_place: bool,
}

/// The whole graph as a kernel program (see the module docs for the buffer layout).
pub fn program(graph: &Graph) -> Result<Program, KernelError> {
    program_opts(graph, &KernelOptions::default())
}

/// [`program`] with lowering options.
pub fn program_opts(graph: &Graph, opts: &KernelOptions) -> Result<Program, KernelError> {
    let mut buffers: Vec<Buffer> = Vec::new();
    // Parameters that some node reads, in parameter order.
    let mut used = vec![false; graph.params.len()];
    for n in &graph.nodes {
        for v in &n.inputs {
            if let Value::Param(p) = v {
                if let Some(u) = used.get_mut(p.0 as usize) {
                    *u = true;
                }
            }
        }
    }
    let mut param_buf = vec![usize::MAX; graph.params.len()];
    for (i, p) in graph.params.iter().enumerate() {
        if !used[i] {
            continue;
        }
        let e = stored(p.dtype);
        param_buf[i] = buffers.len();
        buffers.push(Buffer {
            name: format!("@{}", p.name),
            elem: e,
            shape: p.shape.iter().map(|&d| Dim::c(d)).collect(),
            kind: BufferKind::Param,
        });
    }

    // The first output naming a computing node owns that node's buffer; every other output
    // is copied at the end.
    let mut owner: BTreeMap<u32, &Io> = BTreeMap::new();
    let mut copies: Vec<(&Io, NodeId)> = Vec::new();
    for o in &graph.outputs {
        let node = graph
            .nodes
            .get(o.node.0 as usize)
            .ok_or_else(|| KernelError::Invalid {
                node: o.node.0,
                message: format!("output `{}` names a node that does not exist", o.io),
            })?;
        let computes = !matches!(node.op, Op::Input { .. } | Op::Reshape { .. });
        if computes && !owner.contains_key(&o.node.0) {
            owner.insert(o.node.0, &o.io);
        } else {
            copies.push((&o.io, o.node));
        }
    }

    let mut node_buf = vec![usize::MAX; graph.nodes.len()];
    let value_buf = |v: &Value, node_buf: &[usize]| -> usize {
        match v {
            Value::Node(n) => node_buf[n.0 as usize],
            Value::Param(p) => param_buf[p.0 as usize],
        }
    };
    let mut kernels = Kernels::default();
    let mut launches = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let id = i as u32;
        for v in &node.inputs {
            let bad = match v {
                Value::Node(n) => {
                    (n.0 >= id).then(|| format!("%{}, which does not precede it", n.0))
                }
                Value::Param(p) => (p.0 as usize >= graph.params.len())
                    .then(|| format!("parameter {}, which does not exist", p.0)),
            };
            if let Some(what) = bad {
                return Err(KernelError::Invalid {
                    node: id,
                    message: format!("reads {what}"),
                });
            }
        }
        // Kernels never store f8 (weights only), so an f8 value may only be a reshape of an
        // f8 parameter, which is an alias and computes nothing.
        if node.ty.dtype == DType::F8 && !matches!(node.op, Op::Reshape { .. }) {
            return Err(KernelError::Unsupported {
                node: id,
                op: format!(
                    "an f8 {} result (f8 buffers are read-only weights)",
                    kind_name(&node.op)
                ),
            });
        }
        let e = stored(node.ty.dtype);
        let shape = node.ty.shape.clone();
        let (name, kind) = match &node.op {
            Op::Input { io } => (io.to_string(), BufferKind::Input(io.clone())),
            Op::Reshape { .. } => {
                let src = node.inputs.first().ok_or_else(|| KernelError::Invalid {
                    node: id,
                    message: "reshape without an operand".into(),
                })?;
                let mut of = value_buf(src, &node_buf);
                while let BufferKind::Alias { of: o } = buffers[of].kind {
                    of = o;
                }
                (format!("%{i}"), BufferKind::Alias { of })
            }
            _ => match owner.get(&id) {
                Some(out) if opts.append_in_place => {
                    match rows::in_place_append(graph, NodeId(id)) {
                        Some(c) => (
                            out.to_string(),
                            BufferKind::Append {
                                to: node_buf[c.0 as usize],
                            },
                        ),
                        None => (out.to_string(), BufferKind::Output((*out).clone())),
                    }
                }
                Some(out) => (out.to_string(), BufferKind::Output((*out).clone())),
                None => (format!("%{i}"), BufferKind::Temp),
            },
        };
        node_buf[i] = buffers.len();
        buffers.push(Buffer {
            name,
            elem: e,
            shape,
            kind,
        });
        let kind_str = kind_name(&node.op);
        if let Some(k) = node_kernel(graph, NodeId(id), kind_str, opts)? {
            let mut bufs: Vec<Option<usize>> = node
                .inputs
                .iter()
                .map(|v| Some(value_buf(v, &node_buf)))
                .collect();
            bufs.push(Some(node_buf[i]));
            while bufs.len() < k.bufs.len() {
                bufs.push(None);
            }
            if bufs.len() != k.bufs.len() {
                return Err(KernelError::Invalid {
                    node: id,
                    message: format!(
                        "the kernel has {} parameters, fewer than the node's {} operands and result",
                        k.bufs.len(),
                        node.inputs.len() + 1
                    ),
                });
            }
            let kernel = kernels.add(kind_str, k);
            launches.push(Launch { kernel, bufs });
        }
    }

    for (io, node) in copies {
        let src = node_buf[node.0 as usize];
        let b = &buffers[src];
        let (e, shape) = (b.elem, b.shape.clone());
        let dst = buffers.len();
        buffers.push(Buffer {
            name: io.to_string(),
            elem: e,
            shape: shape.clone(),
            kind: BufferKind::Output(io.clone()),
        });
        let k = basic::copy_kernel(e, &shape);
        let kernel = kernels.add("copy", k);
        launches.push(Launch {
            kernel,
            bufs: vec![Some(src), Some(dst)],
        });
    }

    Ok(Program {
        name: format!("{}.{}", graph.name, graph.mode.as_str()),
        buffers,
        kernels: kernels.kernels,
        launches,
    })
}

/// The kernel IR text of a graph, or its error as one line.
pub fn emit_kernel_text(graph: &Graph) -> Result<String, KernelError> {
    program(graph).map(|p| p.to_string())
}

impl Program {
    /// The index of the input buffer of `io`.
    pub fn input(&self, io: &Io) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| matches!(&b.kind, BufferKind::Input(x) if x == io))
    }

    /// The index of the parameter buffer of tensor `name` (without the `@`).
    pub fn param(&self, name: &str) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| b.kind == BufferKind::Param && b.name.strip_prefix('@') == Some(name))
    }

    /// The index of the output buffer of `io` (an `Output`, or the `Append` growing the
    /// input of `io`).
    pub fn output(&self, io: &Io) -> Option<usize> {
        self.buffers.iter().position(|b| match &b.kind {
            BufferKind::Output(x) => x == io,
            BufferKind::Append { to } => {
                matches!(self.buffers.get(*to).map(|t| &t.kind), Some(BufferKind::Input(x)) if x == io)
            }
            _ => false,
        })
    }
}

/// Index arithmetic with constant folding, shared by the kernel generators so that
/// concrete shapes print as plain numbers (`t * 2048 + j`, not `t * (2048 * 1) + j`).
pub(crate) mod ix {
    use super::*;
    use crate::kernel::BinOp;

    fn konst(e: &Expr) -> Option<i64> {
        match e {
            Expr::I64(v) => Some(*v),
            _ => None,
        }
    }

    pub fn add(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) => Expr::I64(x + y),
            (Some(0), _) => b,
            (_, Some(0)) => a,
            _ => build::add(a, b),
        }
    }

    pub fn sub(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) => Expr::I64(x - y),
            (_, Some(0)) => a,
            _ => build::sub(a, b),
        }
    }

    pub fn mul(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) => Expr::I64(x * y),
            (Some(0), _) | (_, Some(0)) => Expr::I64(0),
            (Some(1), _) => b,
            (_, Some(1)) => a,
            _ => build::mul(a, b),
        }
    }

    pub fn div(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) if y != 0 => Expr::I64(x / y),
            (_, Some(1)) => a,
            _ => build::div(a, b),
        }
    }

    pub fn rem(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) if y != 0 => Expr::I64(x % y),
            (_, Some(1)) => Expr::I64(0),
            _ => build::bin(BinOp::Rem, a, b),
        }
    }

    pub fn min(a: Expr, b: Expr) -> Expr {
        match (konst(&a), konst(&b)) {
            (Some(x), Some(y)) => Expr::I64(x.min(y)),
            _ => build::bin(BinOp::Min, a, b),
        }
    }

    /// A dimension as an `I64` expression: `konst + seq * a + past * b`.
    pub fn dim(d: Dim) -> Expr {
        let seq = mul(build::seq(), Expr::I64(d.seq as i64));
        let past = mul(build::past(), Expr::I64(d.past as i64));
        add(add(past, seq), Expr::I64(d.konst as i64))
    }

    /// The product of some dimensions (1 for none).
    pub fn prod(dims: &[Dim]) -> Expr {
        dims.iter().fold(Expr::I64(1), |acc, d| mul(acc, dim(*d)))
    }
}
