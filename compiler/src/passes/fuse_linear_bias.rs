//! Bias into the matmul.
//!
//! Matches: `matmul x, @w` whose only user is `add` with a parameter `@b` of shape `[n]`
//! (the bias of a torch Linear), in either operand order.
//!
//! After: such pairs are one `linear{parts=1, bias=0}` node reading `x, @w, @b`; no plain
//! matmul by a parameter has a lone bias add as its only user.

use super::{as_linear, node_id, replace, Uses};
use crate::ir::{BinaryOp, Dim, Epilogue, Graph, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn fuse_linear_bias(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        for (a, b) in [(n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])] {
            let (Some(m), Value::Param(p)) = (node_id(a), b) else {
                continue;
            };
            if uses.single(m) != Some(i) || absorbed.contains(&m) {
                continue;
            }
            let Some((mut lin, mut ins)) = as_linear(&g.nodes[m]) else {
                continue;
            };
            let width = g.nodes[m].ty.shape.last().copied();
            let plain =
                lin.parts() == 1 && !lin.bias[0] && lin.epilogue == Epilogue::None && !lin.residual;
            if !plain || width.is_none() || g.param(p).shape.len() != 1 {
                continue;
            }
            if width != Some(Dim::c(g.param(p).shape[0])) {
                continue;
            }
            lin.bias[0] = true;
            // The bias goes after the weights, before any residual (there is none here).
            ins.push(b);
            fused.insert(i, (Op::Linear(lin), ins));
            absorbed.insert(m);
            break;
        }
    }
    replace(g, fused, &absorbed)
}
