//! Attention as one flash-style kernel, with the head merge and the output gate.
//!
//! Matches: `attention` whose only user is the `reshape` to `[s, heads * dv]`, and, when
//! that reshape's only user is `mul` by `sigmoid(g)` (Qwen3-Next's output gate, either
//! operand order), that gate too.
//!
//! After: one `flash_attention{...}` node (online softmax; causal, window, chunk, sinks,
//! softcap, GQA, MLA's absorbed latent form (`mla(...)`, operands as the attention's) and
//! the gate are its parameters) producing `[s, heads * dv]`.

use super::{node_id, replace, Uses};
use crate::ir::{BinaryOp, FlashAttnOp, Graph, Op, UnaryOp};
use std::collections::{BTreeMap, BTreeSet};

pub fn fuse_attention(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Op::Attention(attn) = n.op else { continue };
        let Some(r) = uses.single(i) else { continue };
        let rn = &g.nodes[r];
        let flat = match (n.ty.shape.as_slice(), rn.ty.shape.as_slice()) {
            ([s, h, dv], [s2, w]) => {
                s == s2
                    && h.as_const()
                        .zip(dv.as_const())
                        .is_some_and(|(h, dv)| w.as_const() == Some(h * dv))
            }
            _ => false,
        };
        if !matches!(rn.op, Op::Reshape { .. }) || !flat {
            continue;
        }
        let mut ins = n.inputs.clone();
        let mut root = r;
        let mut gate = false;
        if let Some(m) = uses.single(r) {
            let mn = &g.nodes[m];
            if mn.op == Op::Binary(BinaryOp::Mul) {
                let other = if node_id(mn.inputs[0]) == Some(r) {
                    mn.inputs[1]
                } else {
                    mn.inputs[0]
                };
                if let Some(s) = node_id(other) {
                    let sn = &g.nodes[s];
                    if sn.op == Op::Unary(UnaryOp::Sigmoid)
                        && uses.single(s) == Some(m)
                        && sn.ty.shape == rn.ty.shape
                    {
                        ins.push(sn.inputs[0]);
                        absorbed.extend([r, s]);
                        root = m;
                        gate = true;
                    }
                }
            }
        }
        absorbed.insert(i);
        fused.insert(root, (Op::FlashAttention(FlashAttnOp { attn, gate }), ins));
    }
    replace(g, fused, &absorbed)
}
