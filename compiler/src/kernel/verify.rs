//! The kernel IR verifier: checks the invariants every backend and the reference
//! interpreter rely on (ids in range, expression types, variable scoping, loop shapes, the
//! one parallel loop, buffer access modes, and launch bindings of a program).
//!
//! Backends may assume a verified kernel; they do not re-check these rules.

use super::tile::MAX_LANES;
use super::*;
use std::collections::BTreeSet;
use std::fmt;

/// What is wrong and where: `at` names the kernel (or the program buffer or launch),
/// `message` says what rule is broken, quoting the offending expression in the text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVerifyError {
    pub at: String,
    pub message: String,
}

impl fmt::Display for KernelVerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for KernelVerifyError {}

/// Checks one kernel on its own.
pub fn verify_kernel(k: &Kernel) -> Result<(), KernelVerifyError> {
    let mut c = Checker {
        k,
        defined: vec![false; k.vars.len()],
        in_scope: vec![false; k.vars.len()],
        locals: vec![false; k.vars.len()],
        parallel_loops: 0,
        in_parallel: false,
    };
    mark_locals(&k.body, &mut c.locals);
    c.block(&k.body).map_err(|message| KernelVerifyError {
        at: format!("kernel `{}`", k.name),
        message,
    })?;
    if c.parallel_loops > 1 {
        return Err(KernelVerifyError {
            at: format!("kernel `{}`", k.name),
            message: format!(
                "{} parallel loops; a kernel has at most one",
                c.parallel_loops
            ),
        });
    }
    if c.parallel_loops == 1 {
        // Everything outside the parallel loop runs on every thread, so a store there
        // would be a race between threads.
        if let Some(message) = store_outside_parallel(k, &k.body) {
            return Err(KernelVerifyError {
                at: format!("kernel `{}`", k.name),
                message,
            });
        }
    }
    Ok(())
}

/// Checks every kernel, the buffer table and every launch of a program.
pub fn verify_program(p: &Program) -> Result<(), KernelVerifyError> {
    let prog = |message: String| KernelVerifyError {
        at: format!("program `{}`", p.name),
        message,
    };
    let mut kernel_names = BTreeSet::new();
    for k in &p.kernels {
        if !kernel_names.insert(k.name.as_str()) {
            return Err(prog(format!("two kernels are named `{}`", k.name)));
        }
        verify_kernel(k)?;
    }
    // Callers bind parameters and inputs by name and receive outputs by name.
    let mut bound_names = BTreeSet::new();
    let mut output_names = BTreeSet::new();
    for (i, b) in p.buffers.iter().enumerate() {
        let at = |message: String| KernelVerifyError {
            at: format!("program `{}`, buffer {i} `{}`", p.name, b.name),
            message,
        };
        if let BufferKind::Input(io) | BufferKind::Output(io) = &b.kind {
            if b.name != io.to_string() {
                return Err(at(format!(
                    "an input or output of `{io}` must have that name"
                )));
            }
        }
        match &b.kind {
            BufferKind::Param | BufferKind::Input(_) => {
                if !bound_names.insert(b.name.as_str()) {
                    return Err(at("a second param or input has this name".to_string()));
                }
            }
            BufferKind::Output(_) => {
                if !output_names.insert(b.name.as_str()) {
                    return Err(at("a second output has this name".to_string()));
                }
            }
            BufferKind::Temp => {}
            BufferKind::Append { to } => {
                if !output_names.insert(b.name.as_str()) {
                    return Err(at("a second output has this name".to_string()));
                }
                let t = p
                    .buffers
                    .get(*to)
                    .filter(|t| matches!(t.kind, BufferKind::Input(Io::Kv { .. })))
                    .ok_or_else(|| {
                        at(format!(
                            "appends to buffer {to}, which is not a KV-cache input"
                        ))
                    })?;
                if t.name != b.name || t.elem != b.elem {
                    return Err(at(format!(
                        "appends to `{}` of {}, but is `{}` of {} (the same name and type are required)",
                        t.name,
                        t.elem.as_str(),
                        b.name,
                        b.elem.as_str()
                    )));
                }
                let rows_grow = |seq, past| {
                    let rows = |x: &Buffer| x.shape.first().map(|d| d.eval(seq, past));
                    matches!((rows(b), rows(t)), (Some(n), Some(m)) if n >= m)
                };
                if t.shape.len() != b.shape.len()
                    || t.shape.get(1..) != b.shape.get(1..)
                    || ![(1, 0), (3, 5), (17, 29)]
                        .iter()
                        .all(|&(s, pa)| rows_grow(s, pa))
                {
                    return Err(at(format!(
                        "an append must have its input's shape with more rows, found [{}] for [{}]",
                        show_shape(&b.shape),
                        show_shape(&t.shape)
                    )));
                }
            }
            BufferKind::Alias { of } => {
                let target = alias_root(p, i).map_err(at)?;
                let t = &p.buffers[target];
                if t.elem != b.elem {
                    return Err(at(format!(
                        "alias of {of} `{}` has element type {} but the target has {}",
                        p.buffers[*of].name,
                        b.elem.as_str(),
                        t.elem.as_str()
                    )));
                }
                // Sizes are polynomials in seq and past; comparing them at a few points
                // catches a view that does not fit its memory.
                for (seq, past) in [(1, 0), (3, 5), (17, 29)] {
                    let (n, m) = (elem_count(b, seq, past), elem_count(t, seq, past));
                    if n > m {
                        return Err(at(format!(
                            "alias has {} elements at seq={seq}, past={past} but its memory `{}` has only {}",
                            show_count(n),
                            t.name,
                            show_count(m)
                        )));
                    }
                }
            }
        }
    }
    for (li, l) in p.launches.iter().enumerate() {
        let Some(k) = p.kernels.get(l.kernel) else {
            return Err(prog(format!(
                "launch {li} calls kernel {} but there are {} kernels",
                l.kernel,
                p.kernels.len()
            )));
        };
        let at = |message: String| KernelVerifyError {
            at: format!("program `{}`, launch {li} of kernel `{}`", p.name, k.name),
            message,
        };
        if l.bufs.len() != k.bufs.len() {
            return Err(at(format!(
                "binds {} buffers (`_` for scratch) to the kernel's {} parameters",
                l.bufs.len(),
                k.bufs.len()
            )));
        }
        for (pi, (binding, param)) in l.bufs.iter().zip(&k.bufs).enumerate() {
            match (binding, param.access) {
                (None, Access::Scratch { .. }) => {}
                (Some(_), Access::Scratch { .. }) => {
                    return Err(at(format!(
                        "parameter {pi} `{}` is scratch and must be bound to `_`",
                        param.name
                    )))
                }
                (None, _) => {
                    return Err(at(format!(
                        "parameter {pi} `{}` is not scratch but is bound to `_`",
                        param.name
                    )))
                }
                (Some(bi), access) => {
                    let appended = p
                        .buffers
                        .iter()
                        .any(|x| x.kind == (BufferKind::Append { to: *bi }));
                    if appended && matches!(access, Access::Write | Access::ReadWrite) {
                        return Err(at(format!(
                            "parameter {pi} `{}` writes buffer {bi}, an input that an append grows in place",
                            param.name
                        )));
                    }
                    let Some(b) = p.buffers.get(*bi) else {
                        return Err(at(format!(
                            "parameter {pi} `{}` is bound to buffer {bi} but there are {} buffers",
                            param.name,
                            p.buffers.len()
                        )));
                    };
                    if b.elem != param.elem {
                        return Err(at(format!(
                            "parameter {pi} `{}` is {} but is bound to buffer `{}` of {}",
                            param.name,
                            param.elem.as_str(),
                            b.name,
                            b.elem.as_str()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The buffer that owns the memory of buffer `i`, following alias chains.
pub(crate) fn alias_root(p: &Program, i: usize) -> Result<usize, String> {
    let mut cur = i;
    for _ in 0..=p.buffers.len() {
        match p.buffers.get(cur).map(|b| &b.kind) {
            Some(BufferKind::Alias { of }) => {
                if *of >= p.buffers.len() {
                    return Err(format!(
                        "alias of buffer {of} but there are {} buffers",
                        p.buffers.len()
                    ));
                }
                cur = *of;
            }
            Some(_) => return Ok(cur),
            None => {
                return Err(format!(
                    "buffer {cur} does not exist ({} buffers)",
                    p.buffers.len()
                ))
            }
        }
    }
    Err("alias chain is a cycle".to_string())
}

/// The element count of a buffer for concrete sizes, `None` on overflow.
pub(crate) fn elem_count(b: &Buffer, seq: usize, past: usize) -> Option<usize> {
    b.shape.iter().try_fold(1usize, |acc, d| {
        let n = (d.konst as usize)
            .checked_add((d.seq as usize).checked_mul(seq)?)?
            .checked_add((d.past as usize).checked_mul(past)?)?;
        acc.checked_mul(n)
    })
}

fn show_count(n: Option<usize>) -> String {
    n.map_or_else(|| "overflowing".to_string(), |n| n.to_string())
}

/// The first store to a non-scratch buffer outside the parallel loop, as a message.
fn store_outside_parallel(k: &Kernel, body: &[Stmt]) -> Option<String> {
    for s in body {
        match s {
            Stmt::Store { buf, index, value } => {
                let scratch = k
                    .bufs
                    .get(buf.0 as usize)
                    .is_some_and(|b| matches!(b.access, Access::Scratch { .. }));
                if !scratch {
                    return Some(format!(
                        "store `{}[{}] = {}` is outside the parallel loop, so every thread would run it",
                        buf_name(k, *buf),
                        k.expr(index),
                        k.expr(value)
                    ));
                }
            }
            Stmt::Loop {
                kind: LoopKind::Parallel,
                ..
            } => {}
            Stmt::Loop { body, .. } => {
                if let Some(m) = store_outside_parallel(k, body) {
                    return Some(m);
                }
            }
            Stmt::If { then, els, .. } => {
                if let Some(m) =
                    store_outside_parallel(k, then).or_else(|| store_outside_parallel(k, els))
                {
                    return Some(m);
                }
            }
            Stmt::Tile(t) => {
                if let TileOut::Store { buf, .. } = &t.out {
                    let scratch = k
                        .bufs
                        .get(buf.0 as usize)
                        .is_some_and(|b| matches!(b.access, Access::Scratch { .. }));
                    if !scratch {
                        return Some(format!(
                            "a tile stores into `{}` outside the parallel loop, so every thread would run it",
                            buf_name(k, *buf)
                        ));
                    }
                }
            }
            Stmt::Let { .. } | Stmt::Local { .. } | Stmt::Set { .. } => {}
        }
    }
    None
}

fn var_name(k: &Kernel, v: VarId) -> String {
    match k.vars.get(v.0 as usize) {
        Some(kv) => format!("{}_{}", kv.name, v.0),
        None => format!("?v{}", v.0),
    }
}

fn buf_name(k: &Kernel, b: BufId) -> &str {
    k.bufs
        .get(b.0 as usize)
        .map_or("?buf", |kb| kb.name.as_str())
}

pub(crate) fn bin_name(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Rem => "%",
        BinOp::Min => "min",
        BinOp::Max => "max",
        BinOp::Pow => "pow",
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
    }
}

pub(crate) fn un_name(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "-",
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
        UnOp::Not => "!",
        UnOp::F16Bits => "f16bits",
        UnOp::F32Bits => "f32bits",
    }
}

/// The scalar type a load from a buffer of this element type produces.
pub(crate) fn load_ty(e: Elem) -> Ty {
    match e {
        Elem::F32 | Elem::Bf16 | Elem::F16 | Elem::F8 => Ty::F32,
        Elem::I32 | Elem::U8 => Ty::I64,
    }
}

struct Checker<'k> {
    k: &'k Kernel,
    /// Whether a var has been defined anywhere so far (each var is defined once).
    defined: Vec<bool>,
    /// Whether a var is visible at the current point.
    in_scope: Vec<bool>,
    /// Whether a var is introduced by `local` (only those may be assigned).
    locals: Vec<bool>,
    parallel_loops: usize,
    in_parallel: bool,
}

impl Checker<'_> {
    /// A block: vars defined inside go out of scope at its end.
    fn block(&mut self, body: &[Stmt]) -> Result<(), String> {
        let mut introduced = Vec::new();
        for s in body {
            self.stmt(s, &mut introduced)?;
        }
        for v in introduced {
            self.in_scope[v] = false;
        }
        Ok(())
    }

    fn var(&self, v: VarId) -> Result<&KVar, String> {
        self.k.vars.get(v.0 as usize).ok_or_else(|| {
            format!(
                "variable id {} out of range ({} variables)",
                v.0,
                self.k.vars.len()
            )
        })
    }

    fn define(&mut self, v: VarId, what: &str) -> Result<(), String> {
        self.var(v)?;
        let i = v.0 as usize;
        if self.defined[i] {
            return Err(format!(
                "`{}` is defined twice (again by {what})",
                var_name(self.k, v)
            ));
        }
        self.defined[i] = true;
        self.in_scope[i] = true;
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt, introduced: &mut Vec<usize>) -> Result<(), String> {
        let k = self.k;
        match s {
            Stmt::Let { var, value } | Stmt::Local { var, init: value } => {
                let kw = if matches!(s, Stmt::Let { .. }) {
                    "let"
                } else {
                    "local"
                };
                let text = format!("{kw} {} = {}", var_name(k, *var), k.expr(value));
                let t = self.expr(value)?;
                let vt = self.var(*var)?.ty;
                if t != vt {
                    return Err(format!(
                        "`{text}`: the variable is {} but the value is {}",
                        vt.as_str(),
                        t.as_str()
                    ));
                }
                self.define(*var, &format!("`{text}`"))?;
                introduced.push(var.0 as usize);
            }
            Stmt::Set { var, value } => {
                let text = format!("{} = {}", var_name(k, *var), k.expr(value));
                let vt = self.var(*var)?.ty;
                if !self.in_scope[var.0 as usize] {
                    return Err(format!(
                        "`{text}`: `{}` is assigned outside its scope or before its definition",
                        var_name(k, *var)
                    ));
                }
                if !self.locals[var.0 as usize] {
                    return Err(format!(
                        "`{text}`: `{}` is not a `local`, so it cannot be assigned",
                        var_name(k, *var)
                    ));
                }
                let t = self.expr(value)?;
                if t != vt {
                    return Err(format!(
                        "`{text}`: the variable is {} but the value is {}",
                        vt.as_str(),
                        t.as_str()
                    ));
                }
            }
            Stmt::Store { buf, index, value } => {
                let kb = self.buf(*buf)?;
                let text = format!("{}[{}] = {}", kb.name, k.expr(index), k.expr(value));
                if kb.access == Access::Read {
                    return Err(format!("`{text}`: buffer `{}` is read-only", kb.name));
                }
                // f8 holds weights, which kernels only read; a narrowing f8 store would need
                // a rounding and saturation rule every backend agrees on, so there is none.
                if kb.elem == Elem::F8 {
                    return Err(format!(
                        "`{text}`: buffer `{}` is f8, which is read-only (weights); kernels cannot store f8",
                        kb.name
                    ));
                }
                let it = self.expr(index)?;
                if it != Ty::I64 {
                    return Err(format!("`{text}`: the index is {}, not i64", it.as_str()));
                }
                let t = self.expr(value)?;
                let want = load_ty(kb.elem);
                if t != want {
                    return Err(format!(
                        "`{text}`: buffer `{}` of {} stores {} values, not {}",
                        kb.name,
                        kb.elem.as_str(),
                        want.as_str(),
                        t.as_str()
                    ));
                }
            }
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                let text = format!(
                    "for {} in {}..{}",
                    var_name(k, *var),
                    k.expr(start),
                    k.expr(end)
                );
                for (what, e) in [("start", start), ("end", end)] {
                    let t = self.expr(e)?;
                    if t != Ty::I64 {
                        return Err(format!("`{text}`: the {what} is {}, not i64", t.as_str()));
                    }
                }
                if *step < 1 {
                    return Err(format!("`{text}`: step {step} must be at least 1"));
                }
                match kind {
                    LoopKind::Vector(0) | LoopKind::Unroll(0) => {
                        return Err(format!("`{text}`: a width or factor of 0"));
                    }
                    _ => {}
                }
                let vt = self.var(*var)?.ty;
                if vt != Ty::I64 {
                    return Err(format!(
                        "`{text}`: the loop variable is {}, not i64",
                        vt.as_str()
                    ));
                }
                let parallel = *kind == LoopKind::Parallel;
                if parallel {
                    if self.in_parallel {
                        return Err(format!(
                            "`parallel {text}` is nested inside another parallel loop"
                        ));
                    }
                    self.parallel_loops += 1;
                }
                self.define(*var, &format!("`{text}`"))?;
                let outer = self.in_parallel;
                self.in_parallel |= parallel;
                self.block(body)?;
                self.in_parallel = outer;
                self.in_scope[var.0 as usize] = false;
            }
            Stmt::If { cond, then, els } => {
                let t = self.expr(cond)?;
                if t != Ty::Bool {
                    return Err(format!(
                        "`if {}`: the condition is {}, not bool",
                        k.expr(cond),
                        t.as_str()
                    ));
                }
                self.block(then)?;
                self.block(els)?;
            }
            Stmt::Tile(t) => self.tile(t, introduced)?,
        }
        Ok(())
    }

    /// A tile's rules (see `kernel::tile`): operands in range and readable as floats,
    /// integer bounds and bases, even constant bounds for lanes, and one new f32 sum per
    /// row and column, or writable float memory and one base per row group and column.
    fn tile(&mut self, t: &Tile, introduced: &mut Vec<usize>) -> Result<(), String> {
        let k = self.k;
        let text = format!("tile {}..{}", k.expr(&t.start), k.expr(&t.end));
        let bad = |m: String| Err(format!("`{text}`: {m}"));
        if t.rows.is_empty() || t.cols.is_empty() {
            return bad("a tile needs at least one row and one column".into());
        }
        if t.lanes == 0 || t.lanes > MAX_LANES || !t.lanes.is_power_of_two() {
            return bad(format!(
                "{} lanes; a tile has a power of two up to {MAX_LANES}",
                t.lanes
            ));
        }
        for (what, e) in [("start", &t.start), ("end", &t.end)] {
            let ty = self.expr(e)?;
            if ty != Ty::I64 {
                return bad(format!("the {what} is {}, not i64", ty.as_str()));
            }
            if t.lanes > 1 && !matches!(e, Expr::I64(v) if v % 2 == 0 && *v >= 0) {
                return bad(format!(
                    "with lanes the {what} must be an even constant, not `{}`",
                    k.expr(e)
                ));
            }
        }
        for r in t.rows.iter().chain(&t.cols) {
            let kb = self.buf(r.buf)?;
            if kb.access == Access::Write {
                return bad(format!("buffer `{}` is write-only", kb.name));
            }
            if load_ty(kb.elem) != Ty::F32 {
                return bad(format!(
                    "buffer `{}` holds {}, not floats",
                    kb.name,
                    kb.elem.as_str()
                ));
            }
            let ty = self.expr(&r.base)?;
            if ty != Ty::I64 {
                return bad(format!(
                    "the base `{}` is {}, not i64",
                    k.expr(&r.base),
                    ty.as_str()
                ));
            }
        }
        let cells = t.rows.len() * t.cols.len();
        match &t.out {
            TileOut::Sums(vars) => {
                if t.lanes != 1 {
                    return bad("a tile with lanes stores its sums; it declares none".into());
                }
                if vars.len() != t.m() * t.n() {
                    return bad(format!(
                        "{} sums for {} rows and {} columns",
                        vars.len(),
                        t.m(),
                        t.n()
                    ));
                }
                for &v in vars {
                    if self.var(v)?.ty != Ty::F32 {
                        return bad(format!("sum `{}` is not f32", var_name(k, v)));
                    }
                    self.define(v, &format!("`{text}`"))?;
                    introduced.push(v.0 as usize);
                }
            }
            TileOut::Store { buf, bases } => {
                let kb = self.buf(*buf)?;
                if kb.access == Access::Read || kb.elem == Elem::F8 || load_ty(kb.elem) != Ty::F32 {
                    return bad(format!(
                        "buffer `{}` ({} {}) cannot take the sums",
                        kb.name,
                        kb.elem.as_str(),
                        access_name(kb.access)
                    ));
                }
                if bases.len() != cells {
                    return bad(format!(
                        "{} store bases for {} row groups and {} columns",
                        bases.len(),
                        t.rows.len(),
                        t.cols.len()
                    ));
                }
                for b in bases {
                    let ty = self.expr(b)?;
                    if ty != Ty::I64 {
                        return bad(format!(
                            "the store base `{}` is {}, not i64",
                            k.expr(b),
                            ty.as_str()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn buf(&self, b: BufId) -> Result<&'_ KBuf, String> {
        self.k.bufs.get(b.0 as usize).ok_or_else(|| {
            format!(
                "buffer id {} out of range ({} buffers)",
                b.0,
                self.k.bufs.len()
            )
        })
    }

    fn expr(&self, e: &Expr) -> Result<Ty, String> {
        let k = self.k;
        Ok(match e {
            Expr::F32(_) => Ty::F32,
            Expr::I64(_) => Ty::I64,
            Expr::Bool(_) => Ty::Bool,
            Expr::Dim(_) => Ty::I64,
            Expr::Var(v) => {
                let kv = self.var(*v)?;
                if !self.in_scope[v.0 as usize] {
                    return Err(format!(
                        "`{}` is used outside its scope or before its definition",
                        var_name(k, *v)
                    ));
                }
                kv.ty
            }
            Expr::Load { buf, index } => {
                let kb = self.buf(*buf)?;
                if kb.access == Access::Write {
                    return Err(format!(
                        "`{}`: buffer `{}` is write-only",
                        k.expr(e),
                        kb.name
                    ));
                }
                let it = self.expr(index)?;
                if it != Ty::I64 {
                    return Err(format!(
                        "`{}`: the index is {}, not i64",
                        k.expr(e),
                        it.as_str()
                    ));
                }
                load_ty(kb.elem)
            }
            Expr::Un(op, a) => {
                let t = self.expr(a)?;
                let (ok, out) = match op {
                    UnOp::Neg | UnOp::Abs => (t == Ty::F32 || t == Ty::I64, t),
                    UnOp::Exp
                    | UnOp::Log
                    | UnOp::Sqrt
                    | UnOp::Tanh
                    | UnOp::Sin
                    | UnOp::Cos
                    | UnOp::Floor => (t == Ty::F32, Ty::F32),
                    UnOp::ToF32 => (t == Ty::I64, Ty::F32),
                    UnOp::ToI64 => (t == Ty::F32, Ty::I64),
                    UnOp::Not => (t == Ty::Bool, Ty::Bool),
                    UnOp::F16Bits | UnOp::F32Bits => (t == Ty::I64, Ty::F32),
                };
                if !ok {
                    return Err(format!(
                        "`{}`: `{}` does not apply to {}",
                        k.expr(e),
                        un_name(*op),
                        t.as_str()
                    ));
                }
                out
            }
            Expr::Bin(op, a, b) => {
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                if ta != tb {
                    return Err(format!(
                        "`{}`: operands of `{}` are {} and {}",
                        k.expr(e),
                        bin_name(*op),
                        ta.as_str(),
                        tb.as_str()
                    ));
                }
                let num = ta == Ty::F32 || ta == Ty::I64;
                let (ok, out) = match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Min | BinOp::Max => {
                        (num, ta)
                    }
                    BinOp::Rem | BinOp::Shl | BinOp::Shr | BinOp::BitAnd | BinOp::BitOr => {
                        (ta == Ty::I64, ta)
                    }
                    BinOp::Pow => (ta == Ty::F32, ta),
                    BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => (num, Ty::Bool),
                    BinOp::Eq | BinOp::Ne => (true, Ty::Bool),
                    BinOp::And | BinOp::Or => (ta == Ty::Bool, Ty::Bool),
                };
                if !ok {
                    return Err(format!(
                        "`{}`: `{}` does not apply to {}",
                        k.expr(e),
                        bin_name(*op),
                        ta.as_str()
                    ));
                }
                out
            }
            Expr::Select(c, a, b) => {
                let tc = self.expr(c)?;
                if tc != Ty::Bool {
                    return Err(format!(
                        "`{}`: the condition is {}, not bool",
                        k.expr(e),
                        tc.as_str()
                    ));
                }
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                if ta != tb {
                    return Err(format!(
                        "`{}`: the arms are {} and {}",
                        k.expr(e),
                        ta.as_str(),
                        tb.as_str()
                    ));
                }
                ta
            }
        })
    }
}

/// Marks the vars introduced by `local` statements anywhere in the body.
fn mark_locals(body: &[Stmt], locals: &mut [bool]) {
    for s in body {
        match s {
            Stmt::Local { var, .. } => {
                if let Some(l) = locals.get_mut(var.0 as usize) {
                    *l = true;
                }
            }
            Stmt::Loop { body, .. } => mark_locals(body, locals),
            Stmt::If { then, els, .. } => {
                mark_locals(then, locals);
                mark_locals(els, locals);
            }
            Stmt::Tile(t) => {
                if let TileOut::Sums(vars) = &t.out {
                    for v in vars {
                        if let Some(l) = locals.get_mut(v.0 as usize) {
                            *l = true;
                        }
                    }
                }
            }
            Stmt::Let { .. } | Stmt::Set { .. } | Stmt::Store { .. } => {}
        }
    }
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::Write => "write",
        Access::ReadWrite => "readwrite",
        Access::Scratch { .. } => "scratch",
    }
}

fn show_shape(shape: &[crate::ir::Dim]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
