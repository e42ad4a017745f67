//! Graph IR (after the fusion passes) to kernel IR: buffers for every value, aliases for
//! reshapes, one kernel per computing node, and the launch sequence.
//!
//! **One dispatch.** Lowering takes a graph and a [`Lowering`]: the target's [`Schedule`]
//! (tile shapes, vector hints, which matmul schedules the target may run), the
//! [`KernelOptions`] (numerics and buffer contracts that the graph does not fix) and how
//! each parameter is stored ([`ParamFormat`]). The program's buffers are laid out first,
//! parameters in their stored element type and shape (a block-quantised weight is a `u8`
//! buffer `[rows, row_bytes]`); then `dispatch::node_kernel` hands each node, with the
//! schedule, the options and its operands' stored formats, to the generator of its op
//! family, which returns its kernel. Block-quantised weights are decoded by the kernels
//! that read them (`matmul/quant.rs`, `gather.rs`); nothing is patched afterwards.
//!
//! **Generators**, one file per op family: `layout.rs` (slice, concat, sum, output
//! copies), `elementwise.rs` (broadcast unary and binary ops, expand, fused elementwise
//! programs, clamped SwiGLU, the activation math), `norm.rs`, `rope.rs` (+ attention
//! temperature), `gather.rs`, `matmul/` (the schedule choice in `mod.rs`; `matvec.rs`,
//! `tiles.rs`, `blocked.rs`, `lanes.rs`, `quant.rs`), `attention/` (flash attention;
//! norm + RoPE + cache append), `moe.rs` (routers, experts, the fused MoE) and `rows.rs`
//! (last row, in-place cache appends). They share one builder (`gen.rs`) and the index
//! folding of `ix.rs`.
//!
//! **Convention:** the kernel of node `n` takes one buffer parameter per operand of `n`, in
//! operand order (node results and parameters alike), then the result buffer, then any
//! scratch buffers. Identical kernels (same body and parameters, e.g. the same op in every
//! layer) are emitted once and launched many times.
//!
//! **Buffers of a program**, in this order:
//! - one per parameter that some node reads, named `@` + its canonical name, in the
//!   parameter's stored element type (f32, bf16, f16, f8; kernels read f8 weights in
//!   place and widen them to f32 in registers; `u8` for GGML blocks);
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
//! **Kernel names** are the op kind (with the block formats it decodes, `linear_q4_k`)
//! and eight hex digits of an FNV-1a hash of the kernel's text with its name and parameter
//! names left out (`linear_3fa2c901`): stable across runs and machines, equal for equal
//! kernels, and valid C identifiers.

mod attention;
mod dispatch;
mod elementwise;
mod format;
mod gather;
mod gen;
pub(crate) mod ix;
mod layout;
mod matmul;
mod moe;
mod norm;
mod recurrent;
mod rope;
mod rows;
mod schedule;

pub use format::{BlockFormat, ParamFormat};
pub use schedule::{KChunks, LanesTile, MatmulSchedule, Schedule, Tile};

use super::{Buffer, BufferKind, Elem, Launch, Program};
use crate::ir::{DType, Dim, Graph, Io, NodeId, Op, Value};
use format::Stored;
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

/// Choices of kernel lowering that the graph does not fix and that are not the target's
/// schedule: numerics and buffer contracts. The default computes what the graph
/// interpreter computes, up to f32 summation order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KernelOptions {
    /// Matmuls whose weights are all bf16 round their activation rows to bf16 (after the
    /// norm prologue, where there is one) and multiply them in bf16 pairs accumulated in
    /// f32, as PyTorch bf16 and llama.cpp do: code generators can then use bf16
    /// dot-product instructions. Matmuls over other weights are untouched. Which schedule
    /// a prefill matmul then takes (tokens in lanes, row blocks) is the [`Schedule`]'s
    /// choice; decode rounds its one row. Changes numerics, so off by default.
    pub bf16_activations: bool,
    /// KV-cache appends grow the cache input in place: the grown cache is a
    /// `BufferKind::Append` of the input (see its contract) and the appending kernels
    /// write only the new rows, instead of copying the old rows into a new output. Off by
    /// default until every executor honours `Append`.
    pub append_in_place: bool,
}

/// Everything kernel lowering takes besides the graph. `Lowering::default()` is the CPU
/// schedule, the default options and every parameter in the graph's dtype (what
/// [`program`] lowers with); set the fields that differ.
#[derive(Clone, Copy)]
pub struct Lowering<'a> {
    /// The target's schedule choices.
    pub schedule: Schedule,
    /// Numerics and buffer options.
    pub options: KernelOptions,
    /// How each parameter is stored, by canonical name; `None`: the graph's dtype. A
    /// block format is honoured where every node reading the parameter decodes blocks
    /// (a `MatMul` or `Linear` weight whose rows are whole blocks, a `Gather` table);
    /// elsewhere the parameter stays in the graph's dtype and the caller converts it. A
    /// float format is honoured everywhere (loads widen to f32), and the generators see
    /// it: a weight stored as bf16 is a bf16 weight for `bf16_activations`.
    pub formats: &'a dyn Fn(&str) -> Option<ParamFormat>,
}

/// Every parameter in the graph's dtype.
fn graph_dtypes(_: &str) -> Option<ParamFormat> {
    None
}

impl Default for Lowering<'_> {
    fn default() -> Self {
        Lowering {
            schedule: Schedule::cpu(),
            options: KernelOptions::default(),
            formats: &graph_dtypes,
        }
    }
}

impl<'a> Lowering<'a> {
    /// The default lowering with parameters stored as `formats` says.
    pub fn with_formats(formats: &'a dyn Fn(&str) -> Option<ParamFormat>) -> Lowering<'a> {
        Lowering {
            formats,
            ..Lowering::default()
        }
    }
}

impl fmt::Debug for Lowering<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lowering")
            .field("schedule", &self.schedule)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The element type a graph dtype is stored as. Every dtype has one; f8 (e4m3fn) buffers
/// are read-only, which [`program_with`] enforces by refusing nodes that compute an f8
/// value.
fn stored(dtype: DType) -> Elem {
    match dtype {
        DType::F32 => Elem::F32,
        DType::Bf16 => Elem::Bf16,
        DType::F16 => Elem::F16,
        DType::I32 => Elem::I32,
        DType::F8 => Elem::F8,
    }
}

/// Collects kernels, emitting each distinct one once.
#[derive(Default)]
struct Kernels {
    kernels: Vec<super::Kernel>,
    /// Kernel text without names → index.
    by_body: BTreeMap<String, usize>,
    names: BTreeMap<String, usize>,
}

impl Kernels {
    /// The index of `k` (named `{kind}_{hash}`), adding it if no equal kernel exists.
    fn add(&mut self, kind: &str, mut k: super::Kernel) -> usize {
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

/// The whole graph as a kernel program with the default [`Lowering`]: the CPU schedule,
/// default options, parameters in the graph's dtype (see the module docs for the layout).
pub fn program(graph: &Graph) -> Result<Program, KernelError> {
    program_with(graph, &Lowering::default())
}

/// The whole graph as a kernel program for `lowering`'s schedule, options and parameter
/// formats.
pub fn program_with(graph: &Graph, lowering: &Lowering) -> Result<Program, KernelError> {
    let opts = &lowering.options;
    let formats = format::param_formats(graph, lowering.formats);
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
    // Parameter buffers in their stored type (and byte shape for blocks), before any
    // kernel is generated: the generators read the formats from the operands.
    let mut param_buf = vec![usize::MAX; graph.params.len()];
    let mut param_stored = Vec::with_capacity(graph.params.len());
    for (i, p) in graph.params.iter().enumerate() {
        let st = Stored::param(p.dtype, formats[i]);
        param_stored.push(st);
        if !used[i] {
            continue;
        }
        let shape = match (st.block, p.shape.as_slice()) {
            (Some(fmt), &[rows, k]) => vec![
                Dim::c(rows),
                Dim::c(k / fmt.block_len() * fmt.block_bytes()),
            ],
            (Some(fmt), &[experts, rows, k]) => vec![
                Dim::c(experts),
                Dim::c(rows),
                Dim::c(k / fmt.block_len() * fmt.block_bytes()),
            ],
            _ => p.shape.iter().map(|&d| Dim::c(d)).collect(),
        };
        param_buf[i] = buffers.len();
        buffers.push(Buffer {
            name: format!("@{}", p.name),
            elem: st.elem,
            shape,
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
                    dispatch::kind_name(&node.op)
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
        let operands: Vec<Stored> = node
            .inputs
            .iter()
            .map(|v| match v {
                Value::Param(p) => param_stored[p.0 as usize],
                Value::Node(n) => Stored::of(graph.nodes[n.0 as usize].ty.dtype),
            })
            .collect();
        let k = dispatch::node_kernel(graph, NodeId(id), &lowering.schedule, opts, &operands)?;
        if let Some((kind, k)) = k {
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
            let kernel = kernels.add(&kind, k);
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
        let k = layout::copy_kernel(e, &shape);
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
