//! Dead-code elimination.
//!
//! Matches: nodes that no output depends on (runtime inputs are kept, since they are the
//! graph's interface), and parameters that no remaining node reads.
//!
//! After: every node is an input or reaches an output, and every parameter is used.

use super::Rebuild;
use crate::ir::{Graph, Op, ParamId, Value};

pub fn dce(g: &Graph) -> Graph {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        if let Some(l) = live.get_mut(o.node.0 as usize) {
            *l = true;
        }
    }
    for i in (0..n).rev() {
        if matches!(g.nodes[i].op, Op::Input { .. }) {
            live[i] = true;
        }
        if live[i] {
            for v in &g.nodes[i].inputs {
                if let Value::Node(id) = v {
                    if let Some(l) = live.get_mut(id.0 as usize) {
                        *l = true;
                    }
                }
            }
        }
    }
    let mut used = vec![false; g.params.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for v in &node.inputs {
            if let (true, Value::Param(p)) = (live[i], v) {
                if let Some(u) = used.get_mut(p.0 as usize) {
                    *u = true;
                }
            }
        }
    }
    if live.iter().all(|l| *l) && used.iter().all(|u| *u) {
        return g.clone();
    }
    let mut rb = Rebuild::new(g);
    for (i, l) in live.iter().enumerate() {
        rb.begin();
        if *l {
            rb.copy(i);
        }
    }
    let mut out = rb.finish();
    // Drop unused parameters and renumber the rest.
    let mut remap = vec![None; g.params.len()];
    let mut params = Vec::new();
    for (i, p) in g.params.iter().enumerate() {
        if used[i] {
            remap[i] = Some(ParamId(params.len() as u32));
            params.push(p.clone());
        }
    }
    out.params = params;
    for node in &mut out.nodes {
        for v in &mut node.inputs {
            if let Value::Param(p) = v {
                *p = remap[p.0 as usize].unwrap_or(ParamId(u32::MAX));
            }
        }
    }
    out
}
