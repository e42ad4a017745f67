//! The text form of the kernel IR: deterministic, one statement per line, read by people
//! and snapshotted by tests, and complete: `kernel::parse_program` and `parse_kernel`
//! rebuild the same program or kernel from it (their module docs give the grammar).
//!
//! Where the text must choose, it stays unambiguous: a buffer reference (`alias of`,
//! `append to`, launch arguments) is the buffer's name, written `NAME#n` for the n-th
//! (from 0) of several buffers that share it (the KV-cache input `cache.0.k` and its output
//! `cache.0.k#1`); an input or output prints its io only when its name is not the io's
//! text; and the negation of a literal is parenthesised (`-(1.0)`), because `-1.0` is the
//! negative literal.

use super::*;
use std::collections::BTreeMap;
use std::fmt::{self, Write};

impl Program {
    /// How each buffer is referred to in the text: its name, or `NAME#n` when it is the
    /// n-th of several buffers of that name (n > 0), or is called `_` (an unbound slot).
    pub(crate) fn buffer_refs(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        self.buffers
            .iter()
            .map(|b| {
                let n = seen.entry(b.name.as_str()).or_insert(0);
                let text = if *n == 0 && b.name != "_" {
                    b.name.clone()
                } else {
                    format!("{}#{n}", b.name)
                };
                *n += 1;
                text
            })
            .collect()
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refs = self.buffer_refs();
        let buf_ref = |i: usize| {
            refs.get(i)
                .map_or_else(|| format!("?buffer{i}"), String::clone)
        };
        writeln!(f, "program {}", self.name)?;
        for b in &self.buffers {
            let shape: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
            let role = |word: &str, io: &Io| {
                if b.name == io.to_string() {
                    word.to_string()
                } else {
                    format!("{word} {io}")
                }
            };
            let kind = match &b.kind {
                BufferKind::Param => "param".to_string(),
                BufferKind::Input(io) => role("input", io),
                BufferKind::Output(io) => role("output", io),
                BufferKind::Temp => "temp".to_string(),
                BufferKind::Alias { of } => format!("alias of {}", buf_ref(*of)),
                BufferKind::Append { to } => format!("append to {}", buf_ref(*to)),
            };
            writeln!(
                f,
                "buffer {}: {}[{}] {kind}",
                b.name,
                b.elem.as_str(),
                shape.join(", ")
            )?;
        }
        for l in &self.launches {
            let args: Vec<String> = l
                .bufs
                .iter()
                .map(|b| match b {
                    Some(i) => buf_ref(*i),
                    None => "_".to_string(),
                })
                .collect();
            let kernel = self
                .kernels
                .get(l.kernel)
                .map_or_else(|| format!("?kernel{}", l.kernel), |k| k.name.clone());
            writeln!(f, "launch {kernel}({})", args.join(", "))?;
        }
        for k in &self.kernels {
            writeln!(f)?;
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .bufs
            .iter()
            .map(|b| match b.access {
                Access::Read => format!("{}: {} read", b.name, b.elem.as_str()),
                Access::Write => format!("{}: {} write", b.name, b.elem.as_str()),
                Access::ReadWrite => format!("{}: {} readwrite", b.name, b.elem.as_str()),
                Access::Scratch { len } => {
                    format!("{}: {}[{len}] scratch", b.name, b.elem.as_str())
                }
            })
            .collect();
        writeln!(f, "kernel {}({}) {{", self.name, params.join(", "))?;
        let mut out = String::new();
        for s in &self.body {
            self.stmt(&mut out, s, 1)?;
        }
        f.write_str(&out)?;
        writeln!(f, "}}")
    }
}

impl Kernel {
    fn var_name(&self, v: VarId) -> String {
        match self.vars.get(v.0 as usize) {
            Some(kv) => format!("{}_{}", kv.name, v.0),
            None => format!("?v{}", v.0),
        }
    }

    fn buf_name(&self, b: BufId) -> &str {
        self.bufs
            .get(b.0 as usize)
            .map(|kb| kb.name.as_str())
            .unwrap_or("?buf")
    }

    fn stmt(&self, out: &mut String, s: &Stmt, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        match s {
            Stmt::Let { var, value } => {
                writeln!(
                    out,
                    "{pad}let {} = {}",
                    self.var_name(*var),
                    self.expr(value)
                )
            }
            Stmt::Local { var, init } => {
                let ty = self
                    .vars
                    .get(var.0 as usize)
                    .map(|v| v.ty.as_str())
                    .unwrap_or("?");
                writeln!(
                    out,
                    "{pad}local {}: {ty} = {}",
                    self.var_name(*var),
                    self.expr(init)
                )
            }
            Stmt::Set { var, value } => {
                writeln!(out, "{pad}{} = {}", self.var_name(*var), self.expr(value))
            }
            Stmt::Store { buf, index, value } => writeln!(
                out,
                "{pad}{}[{}] = {}",
                self.buf_name(*buf),
                self.expr(index),
                self.expr(value)
            ),
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                let kind = match kind {
                    LoopKind::Serial => String::new(),
                    LoopKind::Parallel => "parallel ".to_string(),
                    LoopKind::Vector(w) => format!("vector({w}) "),
                    LoopKind::Unroll(n) => format!("unroll({n}) "),
                };
                let step = if *step == 1 {
                    String::new()
                } else {
                    format!(" step {step}")
                };
                writeln!(
                    out,
                    "{pad}{kind}for {} in {}..{}{step} {{",
                    self.var_name(*var),
                    self.expr(start),
                    self.expr(end)
                )?;
                for s in body {
                    self.stmt(out, s, depth + 1)?;
                }
                writeln!(out, "{pad}}}")
            }
            Stmt::Tile(t) => {
                let lanes = if t.lanes == 1 {
                    String::new()
                } else {
                    format!(" lanes {}", t.lanes)
                };
                writeln!(
                    out,
                    "{pad}tile {}..{}{lanes} {{",
                    self.expr(&t.start),
                    self.expr(&t.end)
                )?;
                let refs = |rs: &[TileRef]| -> String {
                    rs.iter()
                        .map(|r| format!("{}[{}]", self.buf_name(r.buf), self.expr(&r.base)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                writeln!(out, "{pad}  rows {}", refs(&t.rows))?;
                writeln!(out, "{pad}  cols {}", refs(&t.cols))?;
                match &t.out {
                    TileOut::Sums(vars) => {
                        let names: Vec<String> = vars.iter().map(|v| self.var_name(*v)).collect();
                        writeln!(out, "{pad}  sums {}", names.join(", "))?;
                    }
                    TileOut::Store { buf, bases } => {
                        let at: Vec<String> = bases
                            .iter()
                            .map(|b| format!("{}[{}]", self.buf_name(*buf), self.expr(b)))
                            .collect();
                        writeln!(out, "{pad}  store {}", at.join(", "))?;
                    }
                }
                writeln!(out, "{pad}}}")
            }
            Stmt::If { cond, then, els } => {
                writeln!(out, "{pad}if {} {{", self.expr(cond))?;
                for s in then {
                    self.stmt(out, s, depth + 1)?;
                }
                if !els.is_empty() {
                    writeln!(out, "{pad}}} else {{")?;
                    for s in els {
                        self.stmt(out, s, depth + 1)?;
                    }
                }
                writeln!(out, "{pad}}}")
            }
        }
    }

    /// An expression; binary operators are parenthesised when nested.
    pub fn expr(&self, e: &Expr) -> String {
        self.expr_at(e, true)
    }

    fn expr_at(&self, e: &Expr, top: bool) -> String {
        match e {
            Expr::F32(x) => format!("{x:?}"),
            Expr::I64(x) => x.to_string(),
            Expr::Bool(b) => b.to_string(),
            Expr::Var(v) => self.var_name(*v),
            Expr::Dim(DimVar::Seq) => "seq".to_string(),
            Expr::Dim(DimVar::Past) => "past".to_string(),
            Expr::Load { buf, index } => {
                format!("{}[{}]", self.buf_name(*buf), self.expr_at(index, true))
            }
            Expr::Un(op, a) => {
                let name = match op {
                    // `-1.0` reads back as a negative literal, so a negated literal keeps
                    // its operand apart.
                    UnOp::Neg if matches!(**a, Expr::F32(_) | Expr::I64(_)) => {
                        return format!("-({})", self.expr_at(a, true))
                    }
                    UnOp::Neg => return format!("-{}", self.expr_at(a, false)),
                    UnOp::Not => return format!("!{}", self.expr_at(a, false)),
                    UnOp::Abs => "abs",
                    UnOp::Exp => "exp",
                    UnOp::Log => "log",
                    UnOp::Sqrt => "sqrt",
                    UnOp::Tanh => "tanh",
                    UnOp::Sin => "sin",
                    UnOp::Cos => "cos",
                    UnOp::Floor => "floor",
                    UnOp::ToF32 => "f32",
                    UnOp::ToI64 => "i64",
                    UnOp::F16Bits => "f16bits",
                    UnOp::F32Bits => "f32bits",
                };
                format!("{name}({})", self.expr_at(a, true))
            }
            Expr::Bin(op, a, b) => {
                let sym = match op {
                    BinOp::Min | BinOp::Max | BinOp::Pow => {
                        let name = match op {
                            BinOp::Min => "min",
                            BinOp::Max => "max",
                            _ => "pow",
                        };
                        return format!(
                            "{name}({}, {})",
                            self.expr_at(a, true),
                            self.expr_at(b, true)
                        );
                    }
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    BinOp::Ge => ">=",
                    BinOp::Eq => "==",
                    BinOp::Ne => "!=",
                    BinOp::And => "&&",
                    BinOp::Or => "||",
                    BinOp::Shl => "<<",
                    BinOp::Shr => ">>",
                    BinOp::BitAnd => "&",
                    BinOp::BitOr => "|",
                };
                let text = format!(
                    "{} {sym} {}",
                    self.expr_at(a, false),
                    self.expr_at(b, false)
                );
                if top {
                    text
                } else {
                    format!("({text})")
                }
            }
            Expr::Select(c, a, b) => format!(
                "select({}, {}, {})",
                self.expr_at(c, true),
                self.expr_at(a, true),
                self.expr_at(b, true)
            ),
        }
    }
}
