//! Statements and loops: each statement is first offered to the target
//! (`Target::lower_stmt`); the rest become allocas' stores, branches and counted loops.

use super::expr::Val;
use super::hints::attach_loop_id;
use super::{Bounds, Emitter, Lowered};
use crate::codegen::CodegenError;
use crate::kernel::{Expr, LoopKind, Stmt, Ty, VarId};
use inkwell::IntPredicate;

/// A `Stmt::Loop`, by its parts.
#[derive(Clone, Copy)]
pub(crate) struct Loop<'k> {
    pub var: VarId,
    pub start: &'k Expr,
    pub end: &'k Expr,
    pub step: u64,
    pub kind: LoopKind,
    pub body: &'k [Stmt],
}

impl<'k> Loop<'k> {
    /// The loop `s` is, if it is one.
    pub fn of(s: &'k Stmt) -> Option<Loop<'k>> {
        match s {
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => Some(Loop {
                var: *var,
                start,
                end,
                step: *step,
                kind: *kind,
                body,
            }),
            _ => None,
        }
    }
}

/// How many loops `s` is or holds: how far it moves the pre-order numbering.
fn loops_in(s: &Stmt) -> usize {
    let all = |b: &[Stmt]| b.iter().map(loops_in).sum::<usize>();
    match s {
        Stmt::Loop { body, .. } => 1 + all(body),
        Stmt::If { then, els, .. } => all(then) + all(els),
        // A target lowers a tile itself, or it was expanded into loops before emission.
        Stmt::Tile(_) => 0,
        Stmt::Let { .. } | Stmt::Local { .. } | Stmt::Set { .. } | Stmt::Store { .. } => 0,
    }
}

impl<'ctx> Emitter<'ctx, '_> {
    /// Emits statements in order.
    pub fn block(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn store_var(&mut self, var: VarId, value: &Expr, what: &str) -> Result<(), CodegenError> {
        let (slot, ty) = self.var_slot(var)?;
        let v = self.expr(value)?;
        if v.ty() != ty {
            return Err(self.err(format!(
                "`{what}` of `{}`: the variable is {} but `{}` is {}",
                self.k.vars[var.0 as usize].name,
                ty.as_str(),
                self.k.expr(value),
                v.ty().as_str()
            )));
        }
        self.b.build_store(slot, v.basic())?;
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        if let Some(lp) = Loop::of(s) {
            self.check_loop(&lp)?;
        }
        let first = self.next_loop;
        let target = self.target;
        if target.lower_stmt(self, s, first)? == Lowered::Handled {
            // Whatever the target emitted, the loops after `s` keep their numbers.
            self.next_loop = first + loops_in(s);
            return Ok(());
        }
        match s {
            Stmt::Let { var, value } => self.store_var(*var, value, "let"),
            Stmt::Local { var, init } => {
                if let Some(d) = self.local_depth.get_mut(var.0 as usize) {
                    *d = self.depth;
                }
                self.store_var(*var, init, "local")
            }
            Stmt::Set { var, value } => {
                let declared = self.local_depth.get(var.0 as usize).copied().unwrap_or(0);
                let prev = self.fast;
                self.fast = self.vector_depth.is_some_and(|vd| declared < vd);
                let r = self.store_var(*var, value, "set");
                self.fast = prev;
                r
            }
            Stmt::Store { buf, index, value } => self.store(*buf, index, value),
            Stmt::Tile(_) => {
                Err(self.err("a tile that the target neither lowers nor expands into loops".into()))
            }
            Stmt::If { cond, then, els } => {
                let c = match self.expr(cond)? {
                    Val::B(c) => c,
                    v => {
                        return Err(self.err(format!(
                            "`if {}`: the condition is {}, not bool",
                            self.k.expr(cond),
                            v.ty().as_str()
                        )))
                    }
                };
                let then_bb = self.ctx.append_basic_block(self.f, "then");
                let else_bb = self.ctx.append_basic_block(self.f, "else");
                let join = self.ctx.append_basic_block(self.f, "endif");
                self.b.build_conditional_branch(c, then_bb, else_bb)?;
                self.b.position_at_end(then_bb);
                self.block(then)?;
                self.b.build_unconditional_branch(join)?;
                self.b.position_at_end(else_bb);
                self.block(els)?;
                self.b.build_unconditional_branch(join)?;
                self.b.position_at_end(join);
                Ok(())
            }
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                let lp = Loop {
                    var: *var,
                    start,
                    end,
                    step: *step,
                    kind: *kind,
                    body,
                };
                let range = self.bounds(&lp)?;
                self.counted_loop(&lp, range)
            }
        }
    }

    /// A loop's step is in `1..=i64::MAX` and its variable is an i64.
    fn check_loop(&self, lp: &Loop<'_>) -> Result<(), CodegenError> {
        let step = lp.step;
        if step == 0 || step > i64::MAX as u64 {
            return Err(self.err(format!("loop step {step} is not in 1..=i64::MAX")));
        }
        let (_, ty) = self.var_slot(lp.var)?;
        if ty != Ty::I64 {
            return Err(self.err(format!(
                "loop variable `{}` is {}, not i64",
                self.k.vars[lp.var.0 as usize].name,
                ty.as_str()
            )));
        }
        Ok(())
    }

    /// The loop's bounds evaluated at the builder's position; a parallel loop's are this
    /// invocation's share (`Target::split_parallel`).
    pub fn bounds(&mut self, lp: &Loop<'_>) -> Result<Bounds<'ctx>, CodegenError> {
        let lo = self.int(lp.start, "loop start")?;
        let hi = self.int(lp.end, "loop end")?;
        let range = Bounds {
            lo,
            hi,
            step: self.ctx.i64_type().const_int(lp.step, false),
        };
        if lp.kind != LoopKind::Parallel {
            return Ok(range);
        }
        let target = self.target;
        target.split_parallel(self, range)
    }

    /// `for var in lo..hi step step` as preheader, header (test), body, latch, exit, with
    /// the target's hints on the latch; the builder ends in the exit. The loop takes the
    /// next pre-order number, and the loops of its body the ones after.
    pub fn counted_loop(&mut self, lp: &Loop<'_>, range: Bounds<'ctx>) -> Result<(), CodegenError> {
        self.next_loop += 1;
        let i64t = self.ctx.i64_type();
        let (slot, _) = self.var_slot(lp.var)?;
        self.b.build_store(slot, range.lo)?;
        let header = self.ctx.append_basic_block(self.f, "loop.header");
        let body_bb = self.ctx.append_basic_block(self.f, "loop.body");
        let latch = self.ctx.append_basic_block(self.f, "loop.latch");
        let exit = self.ctx.append_basic_block(self.f, "loop.exit");
        self.b.build_unconditional_branch(header)?;

        self.b.position_at_end(header);
        let iv = self.b.build_load(i64t, slot, "iv")?.into_int_value();
        let more = self
            .b
            .build_int_compare(IntPredicate::SLT, iv, range.hi, "")?;
        self.b.build_conditional_branch(more, body_bb, exit)?;

        self.b.position_at_end(body_bb);
        self.depth += 1;
        let prev_vector = self.vector_depth;
        if matches!(lp.kind, LoopKind::Vector(_)) {
            self.vector_depth = Some(self.depth);
        }
        let r = self.block(lp.body);
        self.vector_depth = prev_vector;
        self.depth -= 1;
        r?;
        self.b.build_unconditional_branch(latch)?;

        self.b.position_at_end(latch);
        let iv = self.b.build_load(i64t, slot, "iv")?.into_int_value();
        let next = self.b.build_int_nsw_add(iv, range.step, "iv.next")?;
        self.b.build_store(slot, next)?;
        let back = self.b.build_unconditional_branch(header)?;
        let hints = self.target.loop_hints(lp);
        if !hints.is_empty() {
            attach_loop_id(self.ctx, back, &hints);
        }
        self.b.position_at_end(exit);
        Ok(())
    }
}
