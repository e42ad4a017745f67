//! Kernel generators for basic ops (see `mod.rs` for the buffer convention).

use super::KernelError;
use crate::ir::{Graph, NodeId};
use crate::kernel::Kernel;

pub(super) fn kernel(graph: &Graph, id: NodeId, name: &str) -> Result<Kernel, KernelError> {
    let _ = name;
    Err(KernelError::Unsupported {
        node: id.0,
        op: crate::ir::op_text(&graph.nodes[id.0 as usize].op),
    })
}
