//! The Graph IR verifier: operand ids in range and defined before use (topological
//! order), stored types equal to the type rules' result, unique inputs and outputs,
//! every parameter used, at least one output, outputs naming real nodes.

use super::{infer, Graph, Op, Value};
use std::collections::BTreeSet;
use std::fmt;

/// The first problem found in a graph, with the node it concerns (when there is one).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyError {
    pub node: Option<u32>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "%{n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Check every invariant of a graph; see the module docs.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let at = |i: usize, message: String| VerifyError {
        node: Some(i as u32),
        message,
    };
    let global = |message: String| VerifyError {
        node: None,
        message,
    };

    let mut names = BTreeSet::new();
    for p in &g.params {
        if !names.insert(p.name.as_str()) {
            return Err(global(format!("parameter @{} is declared twice", p.name)));
        }
    }
    let mut used = vec![false; g.params.len()];
    let mut input_names = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let mut tys = Vec::with_capacity(n.inputs.len());
        for v in &n.inputs {
            match *v {
                Value::Node(id) if id.0 as usize >= i => {
                    return Err(at(
                        i,
                        format!("operand %{} is not defined before its use", id.0),
                    ));
                }
                Value::Param(p) if p.0 as usize >= g.params.len() => {
                    return Err(at(
                        i,
                        format!("operand names parameter #{} of {}", p.0, g.params.len()),
                    ));
                }
                Value::Param(p) => used[p.0 as usize] = true,
                Value::Node(_) => {}
            }
            tys.push(
                g.value_type(*v)
                    .ok_or_else(|| at(i, "dangling operand".into()))?,
            );
        }
        if let Op::Input { io } = &n.op {
            if !n.inputs.is_empty() {
                return Err(at(i, "an input has no operands".into()));
            }
            if !input_names.insert(io) {
                return Err(at(i, format!("input {io} is declared twice")));
            }
            continue;
        }
        let ty = infer(&n.op, &tys).map_err(|e| at(i, e))?;
        if ty != n.ty {
            return Err(at(
                i,
                format!("stored type {} differs from the inferred {ty}", n.ty),
            ));
        }
    }
    if let Some(p) = used.iter().position(|u| !u) {
        return Err(global(format!(
            "parameter @{} is never used",
            g.params[p].name
        )));
    }
    let mut out_names = BTreeSet::new();
    for o in &g.outputs {
        if o.node.0 as usize >= g.nodes.len() {
            return Err(global(format!(
                "output {} names %{}, which does not exist",
                o.io, o.node.0
            )));
        }
        if !out_names.insert(&o.io) {
            return Err(global(format!("output {} is declared twice", o.io)));
        }
    }
    if g.outputs.is_empty() {
        return Err(global("the graph has no outputs".into()));
    }
    for (id, _) in &g.labels {
        if id.0 as usize > g.nodes.len() {
            return Err(global(format!(
                "a label names %{}, which does not exist",
                id.0
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim, Io, Node, NodeId, Output, Param, ParamId, Type};

    /// tokens → gather(@table) → logits.
    fn graph() -> Graph {
        let mut g = Graph::new("t", crate::ir::Mode::Prefill);
        g.params.push(Param {
            name: "embed.tokens".into(),
            shape: vec![8, 4],
            dtype: DType::F32,
        });
        g.nodes.push(Node {
            op: Op::Input { io: Io::Tokens },
            inputs: vec![],
            ty: Type::new(vec![Dim::SEQ], DType::I32),
        });
        g.nodes.push(Node {
            op: Op::Gather,
            inputs: vec![Value::Param(ParamId(0)), Value::Node(NodeId(0))],
            ty: Type::new(vec![Dim::SEQ, Dim::c(4)], DType::F32),
        });
        g.outputs.push(Output {
            io: Io::Logits,
            node: NodeId(1),
        });
        g
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        assert_eq!(verify(&graph()), Ok(()));
    }

    #[test]
    fn rejects_use_before_definition() {
        let mut g = graph();
        g.nodes[1].inputs[1] = Value::Node(NodeId(1));
        assert_eq!(
            verify(&g).map_err(|e| e.to_string()),
            Err("%1: operand %1 is not defined before its use".into())
        );
    }

    #[test]
    fn rejects_a_wrong_stored_type() {
        let mut g = graph();
        g.nodes[1].ty.shape[1] = Dim::c(5);
        assert_eq!(
            verify(&g).map_err(|e| e.to_string()),
            Err("%1: stored type [seq, 5] f32 differs from the inferred [seq, 4] f32".into())
        );
    }

    #[test]
    fn rejects_unused_parameters_and_no_outputs() {
        let mut g = graph();
        g.params.push(Param {
            name: "lm_head.weight".into(),
            shape: vec![8, 4],
            dtype: DType::F32,
        });
        assert_eq!(
            verify(&g).map_err(|e| e.to_string()),
            Err("parameter @lm_head.weight is never used".into())
        );
        let mut g = graph();
        g.outputs.clear();
        assert_eq!(
            verify(&g).map_err(|e| e.to_string()),
            Err("the graph has no outputs".into())
        );
    }
}
