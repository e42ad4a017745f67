//! A mixture-of-experts layer as one kernel: the router (scores, correction bias, group
//! top-k, renormalisation, scaling) and a dispatch that runs each token through only the
//! experts it selected.
//!
//! Matches, from the `sum{axis=1}` over expert slots backwards: the weighted down
//! projection (`mul` by the reshaped routing weights, or unweighted when the weights scale
//! the input instead), `expert_matmul`s for up, gate and down with optional gathered
//! biases, the activation between them, `router_select` and `router_weights` on the same
//! logits. Every matched node must be used only inside the match.
//!
//! After: one `moe{...}` node reading `x`, the logits, the correction bias and the
//! stacked expert weights; the router's matmul stays a linear of its own (it may be
//! merged with other projections of `x`).

use super::{node_id, replace, Uses};
use crate::ir::{BinaryOp, ExpertAct, Graph, MoeOp, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The node behind `v`, if `v` is a node with operation `op`-like shape checked by `f`.
fn node(g: &Graph, v: Value) -> Option<(usize, &crate::ir::Node)> {
    node_id(v).map(|i| (i, &g.nodes[i]))
}

/// `expert_matmul(x, @w, sel)`, optionally `+ gather(@b, sel)`: returns (x, w, b, sel).
fn expert(
    g: &Graph,
    v: Value,
    set: &mut BTreeSet<usize>,
) -> Option<(Value, Value, Option<Value>, Value)> {
    let (i, n) = node(g, v)?;
    match n.op {
        Op::ExpertMatMul => {
            set.insert(i);
            Some((n.inputs[0], n.inputs[1], None, n.inputs[2]))
        }
        Op::Binary(BinaryOp::Add) => {
            let (mi, m) = node(g, n.inputs[0])?;
            let (gi, gn) = node(g, n.inputs[1])?;
            if m.op != Op::ExpertMatMul || gn.op != Op::Gather || gn.inputs[1] != m.inputs[2] {
                return None;
            }
            set.extend([i, mi, gi]);
            Some((m.inputs[0], m.inputs[1], Some(gn.inputs[0]), m.inputs[2]))
        }
        _ => None,
    }
}

fn match_moe(g: &Graph, root: usize) -> Option<(MoeOp, Vec<Value>, BTreeSet<usize>)> {
    let mut set = BTreeSet::from([root]);
    let sum = &g.nodes[root];
    if sum.op != (Op::Sum { axis: 1 }) {
        return None;
    }
    // Weighted output, or unweighted when the weights scaled the input.
    let (down_v, out_w3) = match node(g, sum.inputs[0])? {
        (i, n) if n.op == Op::Binary(BinaryOp::Mul) => {
            set.insert(i);
            (n.inputs[0], Some(n.inputs[1]))
        }
        _ => (sum.inputs[0], None),
    };
    let (act_v, wd, bd, sel) = expert(g, down_v, &mut set)?;
    let (ai, an) = node(g, act_v)?;
    set.insert(ai);
    let (act, up_v, gate_v) = match an.op {
        Op::Unary(u) => (ExpertAct::Plain(u), an.inputs[0], None),
        Op::ClampedSwiglu { alpha, limit } => (
            ExpertAct::Clamped { alpha, limit },
            an.inputs[1],
            Some(an.inputs[0]),
        ),
        Op::Binary(BinaryOp::Mul) => {
            let (ui, un) = node(g, an.inputs[0])?;
            let Op::Unary(u) = un.op else { return None };
            set.insert(ui);
            (ExpertAct::Glu(u), an.inputs[1], Some(un.inputs[0]))
        }
        _ => return None,
    };
    let (xin, wu, bu, sel_u) = expert(g, up_v, &mut set)?;
    let mut gate = None;
    if let Some(gv) = gate_v {
        let (xg, wg, bg, sel_g) = expert(g, gv, &mut set)?;
        if xg != xin || sel_g != sel {
            return None;
        }
        gate = Some((wg, bg));
    }
    if sel_u != sel {
        return None;
    }
    // Router: sel = router_select(logits[, bias]); weights = router_weights(logits, sel),
    // reshaped to [s, k, 1].
    let (si, sn) = node(g, sel)?;
    let Op::RouterSelect(select) = sn.op else {
        return None;
    };
    set.insert(si);
    let logits = sn.inputs[0];
    let w3 = match out_w3 {
        Some(w3) => w3,
        None => {
            // Llama 4: xin = reshape(x, [s, 1, h]) * w3.
            let (mi, mn) = node(g, xin)?;
            if mn.op != Op::Binary(BinaryOp::Mul) {
                return None;
            }
            set.insert(mi);
            mn.inputs[1]
        }
    };
    let (ri, rn) = node(g, w3)?;
    if !matches!(rn.op, Op::Reshape { .. }) {
        return None;
    }
    let (wi, wn) = node(g, rn.inputs[0])?;
    let Op::RouterWeights(weights) = wn.op else {
        return None;
    };
    if wn.inputs[0] != logits || wn.inputs[1] != sel {
        return None;
    }
    set.extend([ri, wi]);
    let x = if out_w3.is_some() {
        xin
    } else {
        let (mi, _) = node(g, xin)?;
        let (xi, xn) = node(g, g.nodes[mi].inputs[0])?;
        if !matches!(xn.op, Op::Reshape { .. }) {
            return None;
        }
        set.insert(xi);
        xn.inputs[0]
    };
    let bias = bd.is_some();
    if bu.is_some() != bias || gate.is_some_and(|(_, bg)| bg.is_some() != bias) {
        return None;
    }
    let mut ins = vec![x, logits];
    ins.extend_from_slice(&sn.inputs[1..]);
    ins.push(wu);
    ins.extend(gate.map(|(wg, _)| wg));
    ins.push(wd);
    ins.extend(bu);
    ins.extend(gate.and_then(|(_, bg)| bg));
    ins.extend(bd);
    let op = MoeOp {
        select,
        weights,
        act,
        bias,
        weight_input: out_w3.is_none(),
    };
    Some((op, ins, set))
}

pub fn fuse_moe(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for i in 0..g.nodes.len() {
        let Some((op, ins, set)) = match_moe(g, i) else {
            continue;
        };
        // Everything matched must be private to this layer, and `x` must not be inside.
        if !uses.closed(&set, i) || node_id(ins[0]).is_some_and(|x| set.contains(&x)) {
            continue;
        }
        absorbed.extend(set.into_iter().filter(|&n| n != i));
        fused.insert(i, (Op::Moe(op), ins));
    }
    replace(g, fused, &absorbed)
}
