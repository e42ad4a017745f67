//! Fusion passes over the Graph IR, one file each, and the pipeline that runs them.
//!
//! Every pass is a pure function `fn(&Graph) -> Graph` with no device knowledge. A pass
//! that finds nothing to do returns a graph equal to its input. Fused ops (`Op::Linear`,
//! `Op::Elementwise`, `Op::NormRope`, `Op::FlashAttention`, `Op::Moe`) are created here
//! and nowhere else; passes never copy or concatenate weights, they only refer to them.
//!
//! **Invariant:** `optimize(g)` computes what `g` computes (the differential tests in
//! `tests/passes.rs` hold the interpreter to 1e-5), and every intermediate graph verifies.

mod cse;
mod dce;
mod fuse_attention;
mod fuse_elementwise;
mod fuse_glu;
mod fuse_linear_bias;
mod fuse_moe;
mod fuse_norm_prologue;
mod fuse_norm_rope;
mod fuse_residual;
mod merge_projections;

pub use cse::cse;
pub use dce::dce;
pub use fuse_attention::fuse_attention;
pub use fuse_elementwise::fuse_elementwise;
pub use fuse_glu::fuse_glu;
pub use fuse_linear_bias::fuse_linear_bias;
pub use fuse_moe::fuse_moe;
pub use fuse_norm_prologue::fuse_norm_prologue;
pub use fuse_norm_rope::fuse_norm_rope;
pub use fuse_residual::fuse_residual;
pub use merge_projections::merge_projections;

use crate::ir::{
    infer, verify, Epilogue, Graph, LinearOp, Node, NodeId, Op, Type, Value, VerifyError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A pass: a pure function from a graph to a graph.
pub type Pass = fn(&Graph) -> Graph;

/// The pipeline, in order. Later passes rely on earlier ones: biases are folded before
/// projections merge, merged gate/up pairs before their activation becomes an epilogue,
/// and every matmul fusion before the norm prologue, which needs to see all of a norm's
/// users as linears.
pub const PIPELINE: [(&str, Pass); 11] = [
    ("cse", cse),
    ("dce", dce),
    ("fuse_linear_bias", fuse_linear_bias),
    ("merge_projections", merge_projections),
    ("fuse_glu", fuse_glu),
    ("fuse_residual", fuse_residual),
    ("fuse_norm_prologue", fuse_norm_prologue),
    ("fuse_norm_rope", fuse_norm_rope),
    ("fuse_attention", fuse_attention),
    ("fuse_moe", fuse_moe),
    ("fuse_elementwise", fuse_elementwise),
];

/// Run every pass of `PIPELINE` in order.
pub fn optimize(graph: &Graph) -> Graph {
    PIPELINE.iter().fold(graph.clone(), |g, (_, pass)| pass(&g))
}

/// A pass produced a graph that does not verify: a compiler bug.
#[derive(Debug, Clone, PartialEq)]
pub struct PassError {
    pub pass: &'static str,
    pub error: VerifyError,
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "after pass {}: {}", self.pass, self.error)
    }
}

impl std::error::Error for PassError {}

/// `optimize`, verifying the input and the graph after every pass; returns every
/// intermediate graph with the name of the pass that produced it (the input first, named
/// `input`).
pub fn optimize_verified(graph: &Graph) -> Result<Vec<(&'static str, Graph)>, PassError> {
    verify(graph).map_err(|error| PassError {
        pass: "input",
        error,
    })?;
    let mut out = vec![("input", graph.clone())];
    for (name, pass) in PIPELINE {
        let g = pass(&out[out.len() - 1].1);
        verify(&g).map_err(|error| PassError { pass: name, error })?;
        out.push((name, g));
    }
    Ok(out)
}

/// Who uses each node: the consuming nodes (once per operand slot) and whether it is a
/// graph output.
pub(crate) struct Uses {
    pub users: Vec<Vec<usize>>,
    pub output: Vec<bool>,
}

impl Uses {
    pub fn of(g: &Graph) -> Uses {
        let mut users = vec![Vec::new(); g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for v in &n.inputs {
                if let Value::Node(id) = v {
                    users[id.0 as usize].push(i);
                }
            }
        }
        let mut output = vec![false; g.nodes.len()];
        for o in &g.outputs {
            output[o.node.0 as usize] = true;
        }
        Uses { users, output }
    }

    /// The node's only user, when it has exactly one operand use and is not an output.
    pub fn single(&self, id: usize) -> Option<usize> {
        match self.users[id].as_slice() {
            [u] if !self.output[id] => Some(*u),
            _ => None,
        }
    }

    /// Whether every use of every node in `set` other than `root` lies inside `set`, so
    /// that the set can become one node computed at `root`.
    pub fn closed(&self, set: &BTreeSet<usize>, root: usize) -> bool {
        set.iter().all(|&n| {
            n == root || (!self.output[n] && self.users[n].iter().all(|u| set.contains(u)))
        })
    }
}

/// The activations a linear's epilogue can apply (not scales or softcaps, which stay
/// elementwise ops).
pub(crate) fn is_activation(u: crate::ir::UnaryOp) -> bool {
    use crate::ir::UnaryOp::*;
    matches!(u, Gelu | GeluTanh | Relu | Silu | Sigmoid)
}

/// The node behind an operand, if it is one.
pub(crate) fn node_id(v: Value) -> Option<usize> {
    match v {
        Value::Node(id) => Some(id.0 as usize),
        Value::Param(_) => None,
    }
}

/// A matmul by a parameter, or a fused linear, seen as a `LinearOp` with its operands.
pub(crate) fn as_linear(n: &Node) -> Option<(LinearOp, Vec<Value>)> {
    match &n.op {
        Op::MatMul if matches!(n.inputs[1], Value::Param(_)) => Some((
            LinearOp {
                norm: None,
                bias: vec![false],
                epilogue: Epilogue::None,
                residual: false,
            },
            n.inputs.clone(),
        )),
        Op::Linear(l) => Some((l.clone(), n.inputs.clone())),
        _ => None,
    }
}

/// Builds a new graph from an old one node by node, mapping old node ids to new values.
pub(crate) struct Rebuild<'a> {
    old: &'a Graph,
    new: Graph,
    map: Vec<Option<Value>>,
    /// For each old node, how many new nodes existed when it was reached (for labels).
    starts: Vec<u32>,
}

impl<'a> Rebuild<'a> {
    pub fn new(old: &'a Graph) -> Rebuild<'a> {
        let mut new = Graph::new(&old.name, old.mode);
        new.params = old.params.clone();
        Rebuild {
            old,
            new,
            map: vec![None; old.nodes.len()],
            starts: Vec::with_capacity(old.nodes.len()),
        }
    }

    /// Call once per old node, in order, before emitting anything for it.
    pub fn begin(&mut self) {
        self.starts.push(self.new.nodes.len() as u32);
    }

    /// An old operand in the new graph. A node that was dropped while still used maps to
    /// an id that the verifier reports as undefined.
    pub fn val(&self, v: Value) -> Value {
        match v {
            Value::Node(id) => self.map[id.0 as usize].unwrap_or(Value::Node(NodeId(u32::MAX))),
            p => p,
        }
    }

    pub fn vals(&self, vs: &[Value]) -> Vec<Value> {
        vs.iter().map(|v| self.val(*v)).collect()
    }

    /// Copy old node `i` with its operands mapped.
    pub fn copy(&mut self, i: usize) {
        let n = &self.old.nodes[i];
        let node = Node {
            op: n.op.clone(),
            inputs: self.vals(&n.inputs),
            ty: n.ty.clone(),
        };
        self.map[i] = Some(self.emit_node(node));
    }

    /// Emit a new node with operands already in the new graph. Its type comes from the
    /// type rules; if they reject it (a pass bug), `fallback` is stored so that the
    /// verifier names the node.
    pub fn push(&mut self, op: Op, inputs: Vec<Value>, fallback: &Type) -> Value {
        let tys: Option<Vec<Type>> = inputs.iter().map(|v| self.new.value_type(*v)).collect();
        let ty = tys
            .and_then(|t| infer(&op, &t).ok())
            .unwrap_or_else(|| fallback.clone());
        self.emit_node(Node { op, inputs, ty })
    }

    fn emit_node(&mut self, node: Node) -> Value {
        let id = NodeId(self.new.nodes.len() as u32);
        self.new.nodes.push(node);
        Value::Node(id)
    }

    pub fn set(&mut self, i: usize, v: Value) {
        self.map[i] = Some(v);
    }

    pub fn finish(mut self) -> Graph {
        for o in &self.old.outputs {
            let node = match self.val(Value::Node(o.node)) {
                Value::Node(id) => id,
                Value::Param(_) => NodeId(u32::MAX),
            };
            self.new.outputs.push(crate::ir::Output {
                io: o.io.clone(),
                node,
            });
        }
        let end = self.new.nodes.len() as u32;
        for (id, text) in &self.old.labels {
            let at = self.starts.get(id.0 as usize).copied().unwrap_or(end);
            self.new.labels.push((NodeId(at), text.clone()));
        }
        self.new
    }
}

/// Rebuild `g` with the nodes of `fused` replaced (old id → op and operands in the old
/// graph) and the nodes of `absorbed` dropped. The operands of a replacement must be
/// defined before the node it replaces. Without replacements, `g` comes back unchanged.
pub(crate) fn replace(
    g: &Graph,
    fused: BTreeMap<usize, (Op, Vec<Value>)>,
    absorbed: &BTreeSet<usize>,
) -> Graph {
    if fused.is_empty() && absorbed.is_empty() {
        return g.clone();
    }
    let mut rb = Rebuild::new(g);
    for i in 0..g.nodes.len() {
        rb.begin();
        if let Some((op, inputs)) = fused.get(&i) {
            let inputs = rb.vals(inputs);
            let v = rb.push(op.clone(), inputs, &g.nodes[i].ty);
            rb.set(i, v);
        } else if !absorbed.contains(&i) {
            rb.copy(i);
        }
    }
    rb.finish()
}
