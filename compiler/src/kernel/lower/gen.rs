//! The per-node kernel builder that every generator uses ([`Gen`]), what the dispatch
//! hands a generator ([`NodeLowering`]), and the small expression helpers they share.
//!
//! A `Gen` declares the node's operands as read buffers named by their roles (a kernel is
//! shared by every launch, so it names roles, not program buffers), in the element type
//! each operand is stored in, then the result buffer `out`; scratch buffers follow. Code
//! goes in two styles over the same builder: generators that assemble statement lists
//! (`bind` returns a statement and its variable) push them with [`Gen::push`], and
//! generators that nest closures ([`Gen::for_`], [`Gen::let_`]) emit into the innermost
//! open block. [`Gen::finish`] returns the kernel.

use super::format::{BlockFormat, Stored};
use super::matmul::decode::decode_block;
use super::{stored, KernelError, KernelOptions, Schedule};
use crate::ir::{Dim, Graph, Node, NodeId, Type, Value};
use crate::kernel::build::{self, add, bin, div, f, i, load, mul, un, var};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId};

/// What the dispatch hands a generator: the node, its kernel's kind name, the target's
/// schedule, the lowering options, and how each operand is stored.
pub(super) struct NodeLowering<'a> {
    pub graph: &'a Graph,
    pub id: NodeId,
    /// The kind part of the kernel's name (`linear`); the program appends a hash.
    pub name: &'a str,
    pub schedule: Schedule,
    pub options: KernelOptions,
    /// One per operand, in operand order.
    pub stored: &'a [Stored],
}

impl NodeLowering<'_> {
    pub fn node(&self) -> &Node {
        self.graph.node(self.id)
    }

    /// Refuses a node whose operand count is not `roles.len()`.
    pub fn expect_operands<S: AsRef<str>>(&self, roles: &[S]) -> Result<(), KernelError> {
        let node = self.node();
        if node.inputs.len() == roles.len() {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_ref()).collect();
        Err(invalid(
            self.id,
            format!(
                "`{}` takes {} operands ({}), found {}",
                crate::ir::op_text(&node.op),
                roles.len(),
                names.join(", "),
                node.inputs.len()
            ),
        ))
    }
}

/// One operand of the node: its kernel buffer, its graph type (the logical shape, also
/// of a block-quantised weight) and its block format, if it is stored as blocks.
pub(super) struct Operand {
    pub buf: BufId,
    pub ty: Type,
    pub block: Option<BlockFormat>,
}

/// A kernel under construction for one node.
pub(super) struct Gen {
    pub k: Kernel,
    pub node: u32,
    pub ins: Vec<Operand>,
    pub out: BufId,
    pub out_shape: Vec<Dim>,
    pub schedule: Schedule,
    pub opts: KernelOptions,
    /// Open statement blocks; the first is the kernel body.
    blocks: Vec<Vec<Stmt>>,
}

impl Gen {
    /// The builder of `cx`'s kernel: one read buffer per operand, named by `roles` (`in{j}`
    /// past their end), then `out`.
    pub fn new<S: AsRef<str>>(cx: &NodeLowering, roles: &[S]) -> Result<Gen, KernelError> {
        let node = cx.node();
        let mut k = Kernel::new(cx.name);
        let mut ins = Vec::new();
        for (j, v) in node.inputs.iter().enumerate() {
            let role = roles
                .get(j)
                .map_or_else(|| format!("in{j}"), |r| r.as_ref().to_string());
            let ty = cx
                .graph
                .value_type(*v)
                .ok_or_else(|| invalid(cx.id, format!("operand {j} ({role}) does not exist")))?;
            let st = match cx.stored.get(j) {
                Some(s) => *s,
                None => Stored::of(ty.dtype),
            };
            if st.block.is_some() && !matches!(v, Value::Param(_)) {
                return Err(invalid(
                    cx.id,
                    format!("operand {j} ({role}) is a value stored as blocks"),
                ));
            }
            let buf = k.buf(role, st.elem, Access::Read);
            ins.push(Operand {
                buf,
                ty,
                block: st.block,
            });
        }
        let out = k.buf("out", stored(node.ty.dtype), Access::Write);
        Ok(Gen {
            k,
            node: cx.id.0,
            ins,
            out,
            out_shape: node.ty.shape.clone(),
            schedule: cx.schedule,
            opts: cx.options,
            blocks: vec![Vec::new()],
        })
    }

    /// [`Gen::new`] for a node that must have exactly `roles.len()` operands; also returns
    /// each operand's buffer and type.
    pub fn with_operands(
        cx: &NodeLowering,
        roles: &[&str],
    ) -> Result<(Gen, Vec<(BufId, Type)>), KernelError> {
        cx.expect_operands(roles)?;
        let g = Gen::new(cx, roles)?;
        let ins = g.ins.iter().map(|o| (o.buf, o.ty.clone())).collect();
        Ok((g, ins))
    }

    /// The kernel, its body what was pushed into the outermost block.
    pub fn finish(mut self) -> Kernel {
        self.k.body = self.blocks.pop().unwrap_or_default();
        self.k
    }

    pub fn invalid(&self, message: impl Into<String>) -> KernelError {
        invalid(NodeId(self.node), message)
    }

    /// The operand's shape, checked to have at least `rank` axes.
    pub fn shape(&self, j: usize, rank: usize) -> Result<Vec<Dim>, KernelError> {
        let op = self
            .ins
            .get(j)
            .ok_or_else(|| self.invalid(format!("missing operand {j}")))?;
        if op.ty.shape.len() < rank {
            return Err(self.invalid(format!(
                "operand {j} has rank {}, expected at least {rank}",
                op.ty.shape.len()
            )));
        }
        Ok(op.ty.shape.clone())
    }

    /// The block format of the operand bound to kernel buffer `buf`, if it is one.
    pub fn block_of(&self, buf: BufId) -> Option<BlockFormat> {
        self.ins.iter().find(|o| o.buf == buf).and_then(|o| o.block)
    }

    /// The element type of kernel buffer `buf`.
    pub fn elem_of(&self, buf: BufId) -> Option<Elem> {
        self.k.bufs.get(buf.0 as usize).map(|b| b.elem)
    }

    /// A scratch buffer of `len` elements (at least one).
    pub fn scratch(&mut self, name: &str, elem: Elem, len: u64) -> BufId {
        self.k.buf(name, elem, Access::Scratch { len: len.max(1) })
    }

    pub fn var(&mut self, name: &str, ty: Ty) -> VarId {
        self.k.var(name, ty)
    }

    /// `let name = value` as a fresh variable; returns the statement and the variable.
    pub fn bind(&mut self, name: &str, ty: Ty, value: Expr) -> (Stmt, Expr) {
        let v = self.var(name, ty);
        (Stmt::Let { var: v, value }, build::var(v))
    }

    /// Appends `s` to the innermost open block.
    pub fn push(&mut self, s: Stmt) {
        if let Some(b) = self.blocks.last_mut() {
            b.push(s);
        }
    }

    pub fn extend(&mut self, st: impl IntoIterator<Item = Stmt>) {
        for s in st {
            self.push(s);
        }
    }

    /// `let name = e`, emitted; returns the variable as an expression.
    pub fn let_(&mut self, name: &str, ty: Ty, value: Expr) -> Expr {
        let (st, v) = self.bind(name, ty, value);
        self.push(st);
        v
    }

    /// `local name: ty = init`, emitted.
    pub fn local(&mut self, name: &str, ty: Ty, init: Expr) -> VarId {
        let v = self.k.var(name, ty);
        self.push(Stmt::Local { var: v, init });
        v
    }

    pub fn set(&mut self, v: VarId, value: Expr) {
        self.push(Stmt::Set { var: v, value });
    }

    pub fn store(&mut self, buf: BufId, index: Expr, value: Expr) {
        self.push(Stmt::Store { buf, index, value });
    }

    /// `for name in start..end step step { body }`; `body` gets the loop variable.
    pub fn for_(
        &mut self,
        name: &str,
        start: Expr,
        end: Expr,
        step: u64,
        kind: LoopKind,
        body: impl FnOnce(&mut Gen, Expr),
    ) {
        let v = self.k.var(name, Ty::I64);
        self.blocks.push(Vec::new());
        body(self, var(v));
        let body = self.blocks.pop().unwrap_or_default();
        self.push(Stmt::Loop {
            var: v,
            start,
            end,
            step,
            kind,
            body,
        });
    }

    /// `for name in 0..n` (serial, step 1).
    pub fn range(&mut self, name: &str, n: Expr, body: impl FnOnce(&mut Gen, Expr)) {
        self.for_(name, i(0), n, 1, LoopKind::Serial, body);
    }

    pub fn if_(&mut self, cond: Expr, then: impl FnOnce(&mut Gen), els: impl FnOnce(&mut Gen)) {
        self.blocks.push(Vec::new());
        then(self);
        let then = self.blocks.pop().unwrap_or_default();
        self.blocks.push(Vec::new());
        els(self);
        let els = self.blocks.pop().unwrap_or_default();
        self.push(Stmt::If { cond, then, els });
    }

    /// `sum_{c < len} a(c) * b(c)` accumulated in f32 in a vector loop (the attention and
    /// MoE kernels' short dot products).
    pub fn dot(
        &mut self,
        name: &str,
        len: u64,
        a: impl FnOnce(Expr) -> Expr,
        b: impl FnOnce(Expr) -> Expr,
    ) -> Expr {
        let acc = self.local(name, Ty::F32, f(0.0));
        self.for_("c", i(0), i(len as i64), 1, LoopKind::Vector(8), |g, c| {
            let term = mul(a(c.clone()), b(c));
            g.set(acc, add(var(acc), term));
        });
        var(acc)
    }

    /// `sum_c a(c) * w[row, c]` over the `len` columns of row `row` of a weight read row
    /// by row (`w` as `[rows, len]`, leading axes folded into the row): a plain dot
    /// product, or, where `w` holds blocks, the row decoded block by block as it streams
    /// (the quantised matmuls' decoder, so the same values).
    pub fn row_dot(
        &mut self,
        name: &str,
        len: u64,
        a: &dyn Fn(Expr) -> Expr,
        w: BufId,
        row: Expr,
    ) -> Expr {
        let Some(fmt) = self.block_of(w) else {
            let wrow = self.let_("wrow", Ty::I64, mul(row, i(len as i64)));
            return self.dot(name, len, a, |c| load(w, add(wrow, c)));
        };
        let acc = self.local(name, Ty::F32, f(0.0));
        self.decode_row_blocks(fmt, len, w, row, &mut |_, at, value| {
            vec![Stmt::Set {
                var: acc,
                value: add(var(acc), mul(a(at), value)),
            }]
        });
        var(acc)
    }

    /// Decodes row `row` of the block weight `w` (`len` elements, whole blocks of `fmt`),
    /// handing `emit(kernel, element index in the row, value)` every element.
    pub fn decode_row_blocks(
        &mut self,
        fmt: BlockFormat,
        len: u64,
        w: BufId,
        row: Expr,
        emit: &mut dyn FnMut(&mut Kernel, Expr, Expr) -> Vec<Stmt>,
    ) {
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = len as i64 / bl;
        let vector = self.schedule.vector;
        self.range("blk", i(nb), |g, blk| {
            let base = g.let_(
                "base",
                Ty::I64,
                mul(add(mul(row, i(nb)), blk.clone()), i(bb)),
            );
            let xoff = g.let_("xoff", Ty::I64, mul(blk, i(bl)));
            let mut at =
                |k: &mut Kernel, e: Expr, value: Expr| emit(k, add(xoff.clone(), e), value);
            let st = decode_block(&mut g.k, vector, fmt, w, &base, &mut at);
            g.extend(st);
        });
    }
}

pub(super) fn invalid(id: NodeId, message: impl Into<String>) -> KernelError {
    KernelError::Invalid {
        node: id.0,
        message: message.into(),
    }
}

/// A constant dim, or an error naming what it is.
pub(super) fn konst(id: NodeId, d: Dim, what: &str) -> Result<u64, KernelError> {
    d.as_const()
        .ok_or_else(|| invalid(id, format!("{what} must be a concrete dim, found {d}")))
}

/// `for var in start..end` with step 1, as a statement.
pub(super) fn lp(var: VarId, start: Expr, end: Expr, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        start,
        end,
        step: 1,
        kind,
        body,
    }
}

/// The f32 value of an integer count (a constant when it is one).
pub(super) fn count_f32(n: Expr) -> Expr {
    match n {
        Expr::I64(c) => f(c as f32),
        e => un(UnOp::ToF32, e),
    }
}

pub(super) fn max(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Max, a, b)
}
pub(super) fn min(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Min, a, b)
}
pub(super) fn lt(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Lt, a, b)
}
pub(super) fn gt(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Gt, a, b)
}
pub(super) fn ge(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Ge, a, b)
}
pub(super) fn eq(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Eq, a, b)
}
pub(super) fn and(a: Expr, b: Expr) -> Expr {
    bin(BinOp::And, a, b)
}
pub(super) fn or(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Or, a, b)
}
pub(super) fn rem(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Rem, a, b)
}
pub(super) fn exp(a: Expr) -> Expr {
    un(UnOp::Exp, a)
}
pub(super) fn neg(a: Expr) -> Expr {
    un(UnOp::Neg, a)
}
pub(super) fn tanh(a: Expr) -> Expr {
    un(UnOp::Tanh, a)
}
pub(super) fn to_f32(a: Expr) -> Expr {
    un(UnOp::ToF32, a)
}

/// `1 / (1 + exp(-x))`, as the interpreter writes it.
pub(super) fn sigmoid(x: Expr) -> Expr {
    div(f(1.0), add(f(1.0), exp(neg(x))))
}
