//! RMSNorm/LayerNorm into the prologue of the linears that read it.
//!
//! Matches: a norm whose every use is as the input `x` (operand 0) of a linear without a
//! prologue — the pre-norm before a merged Q/K/V or gate/up projection, the final norm
//! before the head. A norm that anything else reads (a residual, an expert matmul, a
//! reshape) stays a fused norm kernel of its own.
//!
//! After: each of those linears normalises its rows itself (`norm=rmsnorm{...}`), reading
//! the norm's input and parameters; the norm node is gone.

use super::{as_linear, replace, Uses};
use crate::ir::{Graph, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn fuse_norm_prologue(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Op::Norm(norm) = n.op else { continue };
        if uses.output[i] || uses.users[i].is_empty() {
            continue;
        }
        let me = Value::Node(crate::ir::NodeId(i as u32));
        let eligible = uses.users[i].iter().all(|&u| {
            let ins = &g.nodes[u].inputs;
            as_linear(&g.nodes[u]).is_some_and(|(l, _)| l.norm.is_none())
                && ins[0] == me
                && ins[1..].iter().all(|v| *v != me)
        });
        if !eligible {
            continue;
        }
        for &u in &uses.users[i] {
            let Some((mut lin, ins)) = as_linear(&g.nodes[u]) else {
                continue;
            };
            lin.norm = Some(norm);
            // The norm's operands (x, weight, bias) take the place of x.
            let mut new_ins = n.inputs.clone();
            new_ins.extend_from_slice(&ins[1..]);
            fused.insert(u, (Op::Linear(lin), new_ins));
        }
        absorbed.insert(i);
    }
    replace(g, fused, &absorbed)
}
