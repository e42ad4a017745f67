//! Merge the projections that read the same activation into one matmul.
//!
//! Matches: two or more plain linears (a matmul by a parameter, or a one-part `linear`
//! with a bias) with the same input `x`. A gate/up pair — two of them that meet in
//! `mul(act(gate), up)` or `clamped_swiglu(gate, up)` — becomes its own two-part linear
//! (so that `fuse_glu` can make the activation its epilogue); the rest of the group
//! (Q/K/V, MLA's `q_a`/`kv_a`, a router with a shared-expert gate) becomes one linear.
//!
//! After: the merged `linear{parts=N}` sits where the first member was, followed by one
//! `slice` per member along the last axis; weights stay separate parameters.

use super::{as_linear, is_activation, Rebuild, Uses};
use crate::ir::{Epilogue, Graph, LinearOp, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Whether node `i` is a linear with nothing fused into it but biases.
fn plain(g: &Graph, i: usize) -> Option<(LinearOp, Vec<Value>)> {
    let (l, ins) = as_linear(&g.nodes[i])?;
    let params = ins[1..].iter().all(|v| matches!(v, Value::Param(_)));
    // A linear of several parts is already a merge; leaving it alone keeps the pass
    // idempotent and a gate/up pair apart from the other projections.
    let single = l.parts() == 1;
    (single && l.norm.is_none() && l.epilogue == Epilogue::None && !l.residual && params)
        .then_some((l, ins))
}

/// If `a` feeds a gated activation together with `b`: `mul(act(a), b)` (either order) or
/// `clamped_swiglu(a, b)`.
fn gates(g: &Graph, uses: &Uses, a: usize, b: usize) -> bool {
    let Some(u) = uses.single(a) else {
        return false;
    };
    let bv = Value::Node(crate::ir::NodeId(b as u32));
    match &g.nodes[u].op {
        Op::ClampedSwiglu { .. } => g.nodes[u].inputs[1] == bv && uses.single(b) == Some(u),
        Op::Unary(act) if is_activation(*act) => {
            let Some(m) = uses.single(u) else {
                return false;
            };
            let n = &g.nodes[m];
            n.op == Op::Binary(crate::ir::BinaryOp::Mul)
                && n.inputs.contains(&bv)
                && uses.single(b) == Some(m)
                && g.nodes[a].ty == g.nodes[b].ty
        }
        _ => false,
    }
}

pub fn merge_projections(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut by_input: BTreeMap<Value, Vec<usize>> = BTreeMap::new();
    for i in 0..g.nodes.len() {
        if plain(g, i).is_some() {
            by_input.entry(g.nodes[i].inputs[0]).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for members in by_input.into_values() {
        if members.len() < 2 {
            continue;
        }
        let mut paired = BTreeSet::new();
        for &a in &members {
            for &b in &members {
                if a != b && !paired.contains(&a) && !paired.contains(&b) && gates(g, &uses, a, b) {
                    paired.insert(a);
                    paired.insert(b);
                    groups.push(vec![a.min(b), a.max(b)]);
                }
            }
        }
        let rest: Vec<usize> = members
            .into_iter()
            .filter(|m| !paired.contains(m))
            .collect();
        if rest.len() >= 2 {
            groups.push(rest);
        }
    }
    if groups.is_empty() {
        return g.clone();
    }
    // Each group is emitted at its first member.
    let first: BTreeMap<usize, &Vec<usize>> = groups.iter().map(|m| (m[0], m)).collect();
    let members: BTreeSet<usize> = groups.iter().flatten().copied().collect();
    let mut rb = Rebuild::new(g);
    for i in 0..g.nodes.len() {
        rb.begin();
        if let Some(group) = first.get(&i) {
            let mut op = LinearOp {
                norm: None,
                bias: Vec::new(),
                epilogue: Epilogue::None,
                residual: false,
            };
            let (mut weights, mut biases) = (Vec::new(), Vec::new());
            for &m in group.iter() {
                let Some((l, ins)) = plain(g, m) else {
                    continue;
                };
                let lay = l.layout();
                weights.extend_from_slice(&ins[lay.weights..lay.weights + l.parts()]);
                biases.extend_from_slice(&ins[lay.biases..lay.arity]);
                op.bias.extend_from_slice(&l.bias);
            }
            let mut inputs = vec![rb.val(g.nodes[i].inputs[0])];
            inputs.extend(weights);
            inputs.extend(biases);
            let merged = rb.push(Op::Linear(op), inputs, &g.nodes[i].ty);
            let axis = g.nodes[i].ty.shape.len() - 1;
            let mut start = 0;
            for &m in group.iter() {
                let width = g.nodes[m].ty.shape[axis].as_const().unwrap_or(0);
                let slice = Op::Slice {
                    axis,
                    start,
                    end: start + width,
                };
                start += width;
                let v = rb.push(slice, vec![merged], &g.nodes[m].ty);
                rb.set(m, v);
            }
        } else if !members.contains(&i) {
            rb.copy(i);
        }
    }
    rb.finish()
}
