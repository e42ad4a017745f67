//! Chains of elementwise ops into one loop.
//!
//! Matches: an elementwise node (`unary`, `add`, `mul`, `clamped_swiglu`, or an earlier
//! `elementwise`) whose operand is another elementwise node used only by it and not an
//! output — e.g. the shared-expert gate `mul(y, sigmoid(g))`, `softcap(scale(x))`.
//!
//! After: each maximal single-use chain is one `elementwise{...}` node at the chain's last
//! op, whose program reads the chain's outside operands; a lone elementwise op is left as
//! it is.

use super::{node_id, replace, Uses};
use crate::ir::{ElementwiseOp, Graph, Instr, Node, Op, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A register while a program is being built: an operand or an instruction result.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reg {
    Operand(usize),
    Instr(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ins {
    Unary(crate::ir::UnaryOp, Reg),
    Binary(crate::ir::BinaryOp, Reg, Reg),
    Clamped(f64, f64, Reg, Reg),
}

/// A program under construction, in old-graph operands.
#[derive(Debug, Clone, Default)]
struct Chain {
    operands: Vec<Value>,
    program: Vec<Ins>,
}

impl Chain {
    fn operand(&mut self, v: Value) -> Reg {
        match self.operands.iter().position(|o| *o == v) {
            Some(i) => Reg::Operand(i),
            None => {
                self.operands.push(v);
                Reg::Operand(self.operands.len() - 1)
            }
        }
    }

    /// Append `other`'s program reading the given operand registers; returns its result.
    fn inline(&mut self, other: &Chain) -> Reg {
        let args: Vec<Reg> = other.operands.iter().map(|v| self.operand(*v)).collect();
        let base = self.program.len();
        let map = |r: Reg| match r {
            Reg::Operand(i) => args[i],
            Reg::Instr(j) => Reg::Instr(base + j),
        };
        for ins in &other.program {
            self.program.push(match *ins {
                Ins::Unary(u, a) => Ins::Unary(u, map(a)),
                Ins::Binary(b, x, y) => Ins::Binary(b, map(x), map(y)),
                Ins::Clamped(al, li, x, y) => Ins::Clamped(al, li, map(x), map(y)),
            });
        }
        Reg::Instr(self.program.len() - 1)
    }

    fn finish(&self) -> (Op, Vec<Value>) {
        let n = self.operands.len() as u32;
        let r = |r: Reg| match r {
            Reg::Operand(i) => i as u32,
            Reg::Instr(j) => n + j as u32,
        };
        let program = self
            .program
            .iter()
            .map(|ins| match *ins {
                Ins::Unary(u, a) => Instr::Unary(u, r(a)),
                Ins::Binary(b, x, y) => Instr::Binary(b, r(x), r(y)),
                Ins::Clamped(alpha, limit, g, u) => Instr::ClampedSwiglu {
                    alpha,
                    limit,
                    gate: r(g),
                    up: r(u),
                },
            })
            .collect();
        (
            Op::Elementwise(ElementwiseOp {
                operands: n,
                program,
            }),
            self.operands.clone(),
        )
    }
}

/// The node as a one-node chain, if it is elementwise.
fn chain_of(n: &Node) -> Option<Chain> {
    let mut c = Chain::default();
    let ins = match &n.op {
        Op::Unary(u) => Ins::Unary(*u, c.operand(n.inputs[0])),
        Op::Binary(b) => {
            let x = c.operand(n.inputs[0]);
            Ins::Binary(*b, x, c.operand(n.inputs[1]))
        }
        Op::ClampedSwiglu { alpha, limit } => {
            let x = c.operand(n.inputs[0]);
            Ins::Clamped(*alpha, *limit, x, c.operand(n.inputs[1]))
        }
        Op::Elementwise(e) => {
            c.operands = n.inputs.clone();
            let k = n.inputs.len() as u32;
            let r = |x: u32| {
                if x < k {
                    Reg::Operand(x as usize)
                } else {
                    Reg::Instr((x - k) as usize)
                }
            };
            c.program = e
                .program
                .iter()
                .map(|i| match *i {
                    Instr::Unary(u, a) => Ins::Unary(u, r(a)),
                    Instr::Binary(b, x, y) => Ins::Binary(b, r(x), r(y)),
                    Instr::ClampedSwiglu {
                        alpha,
                        limit,
                        gate,
                        up,
                    } => Ins::Clamped(alpha, limit, r(gate), r(up)),
                })
                .collect();
            return Some(c);
        }
        _ => return None,
    };
    c.program.push(ins);
    Some(c)
}

pub fn fuse_elementwise(g: &Graph) -> Graph {
    let uses = Uses::of(g);
    // The chain ending at each elementwise node, with what it absorbed.
    let mut chains: BTreeMap<usize, Chain> = BTreeMap::new();
    let mut fused = BTreeMap::new();
    let mut absorbed = BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some(own) = chain_of(n) else { continue };
        let inlinable = |v: &Value| {
            node_id(*v).filter(|&p| chains.contains_key(&p) && uses.single(p) == Some(i))
        };
        if !n.inputs.iter().any(|v| inlinable(v).is_some()) {
            chains.insert(i, own);
            continue;
        }
        // Rebuild this node's program with each absorbable operand's chain inlined.
        let mut c = Chain::default();
        let mut regs = Vec::new();
        for v in &n.inputs {
            match inlinable(v) {
                Some(p) => {
                    let pc = chains[&p].clone();
                    regs.push(c.inline(&pc));
                    absorbed.insert(p);
                    fused.remove(&p);
                }
                None => regs.push(c.operand(*v)),
            }
        }
        let mut tail = own.clone();
        // `own` reads its operands in order; point them at the registers built above.
        let base = c.program.len();
        let map = |r: Reg| match r {
            Reg::Operand(j) => {
                let pos = n
                    .inputs
                    .iter()
                    .position(|v| *v == own.operands[j])
                    .unwrap_or(0);
                regs[pos]
            }
            Reg::Instr(j) => Reg::Instr(base + j),
        };
        for ins in tail.program.drain(..) {
            c.program.push(match ins {
                Ins::Unary(u, a) => Ins::Unary(u, map(a)),
                Ins::Binary(b, x, y) => Ins::Binary(b, map(x), map(y)),
                Ins::Clamped(al, li, x, y) => Ins::Clamped(al, li, map(x), map(y)),
            });
        }
        fused.insert(i, c.finish());
        chains.insert(i, c);
    }
    replace(g, fused, &absorbed)
}
