//! Graph IR (after the fusion passes) to kernel IR: one kernel per computing node, buffers
//! for every value, aliases for reshapes, and the launch sequence.
//!
//! **Convention:** the kernel of node `n` takes one buffer parameter per operand of `n`, in
//! operand order (node results and parameters alike), then the result buffer, then any
//! scratch buffers. Kernel generators live in `basic.rs` (layout, elementwise, norms, RoPE,
//! matmuls), `attention.rs` (attention, norm+RoPE+cache) and `moe.rs` (routers, experts).
//! Identical kernels (same body and parameters, e.g. the same op in every layer) are emitted
//! once and launched many times.

mod attention;
mod basic;
mod moe;

use super::{Kernel, Program};
use crate::ir::{Graph, Node, NodeId, Op};
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
) -> Result<Option<Kernel>, KernelError> {
    let node: &Node = &graph.nodes[id.0 as usize];
    match &node.op {
        Op::Input { .. } | Op::Reshape { .. } => Ok(None),
        Op::Attention(_) | Op::FlashAttention(_) | Op::NormRope(_) => {
            attention::kernel(graph, id, name).map(Some)
        }
        Op::ExpertMatMul | Op::RouterSelect(_) | Op::RouterWeights(_) | Op::Moe(_) => {
            moe::kernel(graph, id, name).map(Some)
        }
        _ => basic::kernel(graph, id, name).map(Some),
    }
}

/// The whole graph as a kernel program.
pub fn program(graph: &Graph) -> Result<Program, KernelError> {
    let _ = graph;
    Err(KernelError::Unsupported {
        node: 0,
        op: "program".to_string(),
    })
}
