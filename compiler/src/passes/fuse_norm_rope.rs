//! RoPE fused with the per-head QK-norm before it and the KV-cache append after it.
//!
//! Matches: `concat{axis=0} cache, rope(x)` where `cache` is a runtime input (the key
//! cache), and `rope(norm(x))` where the norm is over each head's last axis; every
//! absorbed node is used only inside the match.
//!
//! After: one `norm_rope{[norm,] rope[, append]}` per query and key projection; value
//! caches (no RoPE) keep their plain `concat`.

use super::{node_id, replace, Uses};
use crate::ir::{Graph, NormRopeOp, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn fuse_norm_rope(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    // Roots: cache appends first, then ropes that no append took.
    let mut roots: Vec<(usize, Option<Value>, usize)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op != (Op::Concat { axis: 0 }) {
            continue;
        }
        let cache = n.inputs[0];
        let is_input = node_id(cache).is_some_and(|c| matches!(g.nodes[c].op, Op::Input { .. }));
        let Some(r) = node_id(n.inputs[1]) else {
            continue;
        };
        if is_input && matches!(g.nodes[r].op, Op::Rope(_)) && uses.single(r) == Some(i) {
            roots.push((i, Some(cache), r));
        }
    }
    let appended: BTreeSet<usize> = roots.iter().map(|r| r.2).collect();
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Rope(_)) && !appended.contains(&i) {
            roots.push((i, None, i));
        }
    }
    for (root, cache, r) in roots {
        let Op::Rope(rope) = &g.nodes[r].op else {
            continue;
        };
        let (x, pos) = (g.nodes[r].inputs[0], g.nodes[r].inputs[1]);
        let norm = node_id(x).and_then(|nid| match g.nodes[nid].op {
            Op::Norm(op) if uses.single(nid) == Some(r) && g.nodes[nid].ty.shape.len() == 3 => {
                Some((nid, op))
            }
            _ => None,
        });
        if norm.is_none() && cache.is_none() {
            continue;
        }
        let mut ins = vec![x, pos];
        if let Some((nid, _)) = norm {
            ins[0] = g.nodes[nid].inputs[0];
            ins.extend_from_slice(&g.nodes[nid].inputs[1..]);
            absorbed.insert(nid);
        }
        ins.extend(cache);
        if root != r {
            absorbed.insert(r);
        }
        let op = NormRopeOp {
            norm: norm.map(|(_, op)| op),
            rope: rope.clone(),
            append: cache.is_some(),
        };
        fused.insert(root, (Op::NormRope(op), ins));
    }
    replace(g, fused, &absorbed)
}
