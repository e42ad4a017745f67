//! The variables of a kernel in canonical form: only those the body mentions, numbered in
//! the order the text first mentions them. Kernel lowering compacts every kernel this way,
//! so the text form names every variable of the table (`acc_3` is variable 3), and the
//! kernel IR parser can rebuild the table from the text alone.

use super::{Expr, Kernel, Stmt, TileOut, VarId};

/// Calls `f` on every variable mention of `body`, in text order (a statement's defined
/// variable before its expressions; a loop's variable before its bounds; a tile's sums
/// after its operands).
pub fn for_each_var(body: &[Stmt], f: &mut dyn FnMut(VarId)) {
    for s in body {
        match s {
            Stmt::Let { var, value } | Stmt::Set { var, value } => {
                f(*var);
                expr_vars(value, f);
            }
            Stmt::Local { var, init } => {
                f(*var);
                expr_vars(init, f);
            }
            Stmt::Store { index, value, .. } => {
                expr_vars(index, f);
                expr_vars(value, f);
            }
            Stmt::Loop {
                var,
                start,
                end,
                body,
                ..
            } => {
                f(*var);
                expr_vars(start, f);
                expr_vars(end, f);
                for_each_var(body, f);
            }
            Stmt::If { cond, then, els } => {
                expr_vars(cond, f);
                for_each_var(then, f);
                for_each_var(els, f);
            }
            Stmt::Tile(t) => {
                expr_vars(&t.start, f);
                expr_vars(&t.end, f);
                for r in t.rows.iter().chain(&t.cols) {
                    expr_vars(&r.base, f);
                }
                match &t.out {
                    TileOut::Sums(vars) => vars.iter().for_each(|v| f(*v)),
                    TileOut::Store { bases, .. } => bases.iter().for_each(|e| expr_vars(e, f)),
                }
            }
        }
    }
}

fn expr_vars(e: &Expr, f: &mut dyn FnMut(VarId)) {
    match e {
        Expr::Var(v) => f(*v),
        Expr::Load { index, .. } => expr_vars(index, f),
        Expr::Un(_, a) => expr_vars(a, f),
        Expr::Bin(_, a, b) => {
            expr_vars(a, f);
            expr_vars(b, f);
        }
        Expr::Select(c, a, b) => {
            expr_vars(c, f);
            expr_vars(a, f);
            expr_vars(b, f);
        }
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Dim(_) => {}
    }
}

/// Rewrites every variable of `body` through `map`.
pub fn rename_vars(body: &mut [Stmt], map: &dyn Fn(VarId) -> VarId) {
    for s in body {
        match s {
            Stmt::Let { var, value } | Stmt::Set { var, value } => {
                *var = map(*var);
                rename_expr(value, map);
            }
            Stmt::Local { var, init } => {
                *var = map(*var);
                rename_expr(init, map);
            }
            Stmt::Store { index, value, .. } => {
                rename_expr(index, map);
                rename_expr(value, map);
            }
            Stmt::Loop {
                var,
                start,
                end,
                body,
                ..
            } => {
                *var = map(*var);
                rename_expr(start, map);
                rename_expr(end, map);
                rename_vars(body, map);
            }
            Stmt::If { cond, then, els } => {
                rename_expr(cond, map);
                rename_vars(then, map);
                rename_vars(els, map);
            }
            Stmt::Tile(t) => {
                rename_expr(&mut t.start, map);
                rename_expr(&mut t.end, map);
                for r in t.rows.iter_mut().chain(t.cols.iter_mut()) {
                    rename_expr(&mut r.base, map);
                }
                match &mut t.out {
                    TileOut::Sums(vars) => vars.iter_mut().for_each(|v| *v = map(*v)),
                    TileOut::Store { bases, .. } => {
                        bases.iter_mut().for_each(|e| rename_expr(e, map))
                    }
                }
            }
        }
    }
}

fn rename_expr(e: &mut Expr, map: &dyn Fn(VarId) -> VarId) {
    match e {
        Expr::Var(v) => *v = map(*v),
        Expr::Load { index, .. } => rename_expr(index, map),
        Expr::Un(_, a) => rename_expr(a, map),
        Expr::Bin(_, a, b) => {
            rename_expr(a, map);
            rename_expr(b, map);
        }
        Expr::Select(c, a, b) => {
            rename_expr(c, map);
            rename_expr(a, map);
            rename_expr(b, map);
        }
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Dim(_) => {}
    }
}

impl Kernel {
    /// Drops the variables the body never mentions and renumbers the rest in the order the
    /// text first mentions them. Ids out of range are left alone (the verifier reports
    /// them).
    pub fn compact_vars(&mut self) {
        let n = self.vars.len();
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut new_id = vec![u32::MAX; n];
        for_each_var(&self.body, &mut |v| {
            let i = v.0 as usize;
            if i < n && new_id[i] == u32::MAX {
                new_id[i] = order.len() as u32;
                order.push(v.0);
            }
        });
        if order.len() == n && order.iter().enumerate().all(|(i, &v)| i as u32 == v) {
            return;
        }
        let vars = order
            .iter()
            .map(|&v| self.vars[v as usize].clone())
            .collect();
        rename_vars(&mut self.body, &|v| match new_id.get(v.0 as usize) {
            Some(&id) if id != u32::MAX => VarId(id),
            _ => v,
        });
        self.vars = vars;
    }

    /// Whether [`Kernel::compact_vars`] would change nothing.
    pub fn has_compact_vars(&self) -> bool {
        let mut k = self.clone();
        k.compact_vars();
        k == *self
    }
}
