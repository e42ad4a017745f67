//! Residual add into the epilogue of the projection that feeds it (attention's output
//! projection, the MLP's down projection).
//!
//! Matches: `add r, y` (either order) where `y` is a linear without a residual, used only
//! by this add, and `r` has the add's shape (no broadcasting).
//!
//! After: `linear{..., residual}` reading `r` as its last operand, placed where the add
//! was.

use super::{as_linear, node_id, replace, Uses};
use crate::ir::{BinaryOp, Graph, Op};
use std::collections::{BTreeMap, BTreeSet};

pub fn fuse_residual(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        for (y, r) in [(n.inputs[1], n.inputs[0]), (n.inputs[0], n.inputs[1])] {
            let Some(m) = node_id(y) else { continue };
            if uses.single(m) != Some(i) || absorbed.contains(&m) {
                continue;
            }
            let Some((mut lin, mut ins)) = as_linear(&g.nodes[m]) else {
                continue;
            };
            let same = g.value_type(r).is_some_and(|t| t.shape == n.ty.shape)
                && g.nodes[m].ty.shape == n.ty.shape;
            if lin.residual || !same {
                continue;
            }
            lin.residual = true;
            ins.push(r);
            fused.insert(i, (Op::Linear(lin), ins));
            absorbed.insert(m);
            break;
        }
    }
    replace(g, fused, &absorbed)
}
