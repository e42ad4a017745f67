//! The one dispatch of kernel lowering: for a node, the target's [`Schedule`], the
//! options and how each operand is stored, the generator of its op family and the kernel
//! it returns. Storage formats are part of the dispatch, not a pass after it: a matmul
//! whose weight is stored as GGML blocks goes to the quantised matmul generator, a gather
//! from a block table to the block gather, and a float weight stored in another float
//! type is declared in that type by the generator that reads it.

use super::format::{decodes_blocks, Stored};
use super::gen::NodeLowering;
use super::{attention, elementwise, gather, layout, matmul, moe, norm, recurrent, rope, rows};
use super::{KernelError, KernelOptions, Schedule};
use crate::ir::{BinaryOp, Graph, NodeId, NormKind, Op};
use crate::kernel::Kernel;

/// The kernel that computes node `id` and the kind part of its name (`linear`, or
/// `linear_q4_k` when it reads weights stored as blocks), or `None` for nodes that need
/// no kernel (inputs, and reshapes, which are buffer aliases). `stored` has one entry per
/// operand of the node, in operand order.
pub(super) fn node_kernel(
    graph: &Graph,
    id: NodeId,
    schedule: &Schedule,
    options: &KernelOptions,
    stored: &[Stored],
) -> Result<Option<(String, Kernel)>, KernelError> {
    let node = graph.node(id);
    if matches!(node.op, Op::Input { .. } | Op::Reshape { .. }) {
        return Ok(None);
    }
    // Only the generators that decode blocks may see them; `param_formats` keeps every
    // other reader's parameters in the graph's dtype, so this refuses only a bug.
    let mut tags: Vec<&str> = Vec::new();
    for (j, s) in stored.iter().enumerate() {
        let Some(b) = s.block else { continue };
        if !decodes_blocks(&node.op, j) {
            return Err(KernelError::Unsupported {
                node: id.0,
                op: format!(
                    "operand {j} of `{}` stored as {} blocks",
                    crate::ir::op_text(&node.op),
                    b.name()
                ),
            });
        }
        if !tags.contains(&b.tag()) {
            tags.push(b.tag());
        }
    }
    let kind = kind_name(&node.op);
    let cx = NodeLowering {
        graph,
        id,
        name: kind,
        schedule: *schedule,
        options: *options,
        stored,
    };
    let kernel = if options.append_in_place && rows::in_place_append(graph, id).is_some() {
        match &node.op {
            Op::NormRope(_) => attention::norm_rope_in_place(&cx),
            _ => rows::append_rows(&cx),
        }
    } else {
        family_kernel(&cx)
    }?;
    let kind = match tags.is_empty() {
        true => kind.to_string(),
        false => format!("{kind}_{}", tags.join("_")),
    };
    Ok(Some((kind, kernel)))
}

/// The generator of the node's op family.
fn family_kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let op = &cx.node().op;
    match op {
        Op::Gather => gather::kernel(cx),
        Op::MatMul | Op::Linear(_) => matmul::kernel(cx),
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Expand { .. }
        | Op::ClampedSwiglu { .. }
        | Op::Elementwise(_) => elementwise::kernel(cx),
        Op::Norm(n) => norm::kernel(cx, n),
        Op::Slice { .. } | Op::Concat { .. } | Op::Sum { .. } => layout::kernel(cx),
        Op::Rope(_) | Op::AttnTemperature { .. } => rope::kernel(cx),
        Op::Attention(_) | Op::FlashAttention(_) => attention::kernel(cx),
        Op::NormRope(_) => attention::norm_rope(cx),
        Op::ExpertMatMul | Op::RouterSelect(_) | Op::RouterWeights(_) | Op::Moe(_) => {
            moe::kernel(cx)
        }
        Op::LastRow => rows::last_row(cx),
        Op::TailRows { .. }
        | Op::DropTailRows { .. }
        | Op::DepthwiseConv
        | Op::DecayGate
        | Op::DeltaRule => recurrent::kernel(cx),
        // Inputs and reshapes compute nothing (see above).
        Op::Input { .. } | Op::Reshape { .. } => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// The kind part of a kernel's name.
pub(super) fn kind_name(op: &Op) -> &'static str {
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
