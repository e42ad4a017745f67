//! Activations into the matmul epilogue: SwiGLU, GeGLU and GPT-OSS's clamped SwiGLU over a
//! merged gate/up linear, and the plain activation of an ungated MLP.
//!
//! Matches: a two-part `linear` (no epilogue, no residual) whose only users are the two
//! slices of its parts, meeting in `mul(act(gate), up)` (either operand order) or
//! `clamped_swiglu(gate, up)`; and a linear whose only user is an activation
//! (`gelu`, `gelu_tanh`, `relu`, `silu`, `sigmoid`).
//!
//! After: the activation is the linear's epilogue (`glu=silu(gate=1)`, `act=gelu`, ...),
//! placed where the activation was; the slices and the activation nodes are gone.

use super::{as_linear, is_activation, node_id, replace, Uses};
use crate::ir::{BinaryOp, Epilogue, Graph, Node, Op};
use std::collections::{BTreeMap, BTreeSet};

/// Which part a slice of a two-part linear of part width `w` covers.
fn part_of(n: &Node, w: u64) -> Option<usize> {
    match n.op {
        Op::Slice { axis, start, end } if axis + 1 == n.ty.shape.len() && end - start == w => {
            match start {
                0 => Some(0),
                s if s == w => Some(1),
                _ => None,
            }
        }
        _ => None,
    }
}

pub fn fuse_glu(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some((lin, ins)) = as_linear(n) else {
            continue;
        };
        if lin.epilogue != Epilogue::None || lin.residual {
            continue;
        }
        // An ungated activation right after the linear.
        if let Some(u) = uses.single(i) {
            if let Op::Unary(act) = g.nodes[u].op {
                if is_activation(act) {
                    let op = crate::ir::LinearOp {
                        epilogue: Epilogue::Act(act),
                        ..lin
                    };
                    fused.insert(u, (Op::Linear(op), ins));
                    absorbed.insert(i);
                }
            }
            continue;
        }
        if lin.parts() != 2 || uses.output[i] {
            continue;
        }
        let Some(width) = n.ty.shape.last().and_then(|d| d.as_const()) else {
            continue;
        };
        let [s0, s1] = uses.users[i].as_slice() else {
            continue;
        };
        let w = width / 2;
        let (Some(p0), Some(p1)) = (part_of(&g.nodes[*s0], w), part_of(&g.nodes[*s1], w)) else {
            continue;
        };
        if p0 == p1 {
            continue;
        }
        let slice = |p: usize| if p0 == p { *s0 } else { *s1 };
        // Try each part as the gate.
        for gate in 0..2 {
            let (gs, us) = (slice(gate), slice(1 - gate));
            let (Some(gu), Some(uu)) = (uses.single(gs), uses.single(us)) else {
                break;
            };
            let user = &g.nodes[gu];
            let found = match user.op {
                Op::ClampedSwiglu { alpha, limit }
                    if gu == uu && node_id(user.inputs[0]) == Some(gs) =>
                {
                    Some((gu, Epilogue::ClampedGlu { alpha, limit, gate }, None))
                }
                Op::Unary(act) if is_activation(act) => match uses.single(gu) {
                    Some(m) if m == uu && g.nodes[m].op == Op::Binary(BinaryOp::Mul) => {
                        Some((m, Epilogue::Glu { act, gate }, Some(gu)))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some((root, epilogue, act_node)) = found {
                let op = crate::ir::LinearOp {
                    epilogue,
                    ..lin.clone()
                };
                fused.insert(root, (Op::Linear(op), ins.clone()));
                absorbed.extend([i, gs, us]);
                absorbed.extend(act_node);
                break;
            }
        }
    }
    replace(g, fused, &absorbed)
}
