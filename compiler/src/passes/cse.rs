//! Common-subexpression elimination.
//!
//! Matches: two nodes with equal ops (attributes included) and equal operands — after
//! the operands themselves were deduplicated — such as the Llama 4 attention temperature
//! that every NoPE layer computes from the same positions. Inputs are never merged.
//!
//! After: no two nodes of the graph have the same op and the same operands; every use of
//! a removed duplicate reads the first occurrence.

use super::Rebuild;
use crate::ir::{Graph, NodeId, Op, Value};
use std::collections::BTreeMap;

pub fn cse(g: &Graph) -> Graph {
    let mut rb = Rebuild::new(g);
    // Candidates by operand list; ops are compared exactly within a bucket.
    let mut seen: BTreeMap<Vec<Value>, Vec<(NodeId, &Op)>> = BTreeMap::new();
    let mut next = 0u32;
    let mut changed = false;
    for (i, n) in g.nodes.iter().enumerate() {
        rb.begin();
        if matches!(n.op, Op::Input { .. }) {
            rb.copy(i);
            next += 1;
            continue;
        }
        let inputs = rb.vals(&n.inputs);
        let bucket = seen.entry(inputs).or_default();
        if let Some((id, _)) = bucket.iter().find(|(_, op)| **op == n.op) {
            rb.set(i, Value::Node(*id));
            changed = true;
            continue;
        }
        bucket.push((NodeId(next), &n.op));
        rb.copy(i);
        next += 1;
    }
    if changed {
        rb.finish()
    } else {
        g.clone()
    }
}
