//! Kernel bodies: statements, expressions and the variable table rebuilt from the text.
//!
//! ```text
//! stmt    := 'let' VAR '=' expr
//!          | 'local' VAR ':' ('f32' | 'i64' | 'bool') '=' expr
//!          | BNAME '[' expr ']' '=' expr                   -- a store
//!          | VAR '=' expr                                  -- assignment to a local
//!          | KIND? 'for' VAR 'in' expr '..' expr ('step' N)? '{' NL stmt* '}'
//!          | 'if' expr '{' NL stmt* '}' ('else' '{' NL stmt* '}')?
//!          | 'tile' expr '..' expr ('lanes' N)? '{' NL              -- a matmul tile
//!              'rows' REF (',' REF)* NL 'cols' REF (',' REF)* NL
//!              ('sums' VAR (',' VAR)* | 'store' REF (',' REF)*) NL '}'
//! REF     := BNAME '[' expr ']'
//! KIND    := 'parallel' | 'vector' '(' N ')' | 'unroll' '(' N ')'
//! expr    := operand (BINOP operand)?                      -- operators never chain
//! operand := '-' operand | '!' operand | '(' expr ')' | LITERAL | 'seq' | 'past'
//!          | BNAME '[' expr ']' | FN '(' expr (',' expr)* ')' | VAR
//! BINOP   := + - * / % < <= > >= == != && || << >> & |
//! FN      := abs exp log sqrt tanh sin cos floor f32 i64 f16bits (one operand)
//!          | min max pow (two) | select (three)
//! LITERAL := 'true' | 'false' | -?DIGITS (an i64) | an f32 as `{:?}` prints it
//!            (`1.0`, `-3.4028235e38`, `inf`, `-inf`, `NaN`)
//! ```
//!
//! Each statement is one line, closing braces included. A nested binary operand is always
//! parenthesised, as the printer writes it, so the text has no precedence to know.
//! `-` directly before a number is part of the literal; a negated literal prints as
//! `-(1.0)`. Variables print as `NAME_ID`: kernels are compacted
//! ([`Kernel::compact_vars`](crate::kernel::Kernel::compact_vars)), so the ids count up
//! from 0 in the order the text first mentions them, and a variable's first mention
//! defines it: `for` makes an i64, `local` declares its type, `let` takes its
//! expression's type, a tile's `sums` are f32.

use super::is_param_name;
use crate::ir::parse::{is_ident, Cursor, Result};
use crate::kernel::verify::load_ty;
use crate::kernel::{
    BinOp, BufId, DimVar, Expr, KBuf, KVar, LoopKind, Stmt, Tile, TileOut, TileRef, Ty, UnOp, VarId,
};

/// A kernel body being read: the cursor, the kernel's parameters and the variables met.
pub(super) struct Body<'c, 'a> {
    c: &'c mut Cursor<'a>,
    bufs: &'c [KBuf],
    vars: Vec<KVar>,
    /// Whether each variable's definition has been read (its type is then known).
    defined: Vec<bool>,
}

impl<'c, 'a> Body<'c, 'a> {
    pub fn new(c: &'c mut Cursor<'a>, bufs: &'c [KBuf]) -> Body<'c, 'a> {
        Body {
            c,
            bufs,
            vars: Vec::new(),
            defined: Vec::new(),
        }
    }

    /// The statements up to the kernel's closing `}` (the cursor stays after it), and the
    /// variable table.
    pub fn parse(mut self) -> Result<(Vec<Stmt>, Vec<KVar>)> {
        let body = self.block()?;
        Ok((body, self.vars))
    }

    /// Statement lines up to a line that starts with `}`, which is consumed.
    fn block(&mut self) -> Result<Vec<Stmt>> {
        self.c.enter()?;
        let mut stmts = Vec::new();
        loop {
            self.c.blank_lines();
            self.c.spaces();
            if self.c.eat("}") {
                break;
            }
            if self.c.at_end() {
                return Err(self.c.error("unclosed block: expected `}`"));
            }
            stmts.push(self.stmt()?);
            self.c.end_line("a statement")?;
        }
        self.c.leave();
        Ok(stmts)
    }

    /// `{` at the end of a line, then the block.
    fn braced(&mut self) -> Result<Vec<Stmt>> {
        self.c.lit("{")?;
        self.c.end_line("`{`")?;
        self.block()
    }

    /// One statement, without its line end; the first word decides which.
    fn stmt(&mut self) -> Result<Stmt> {
        let start = self.c.pos;
        let word = self.c.take_while(is_param_name);
        if self.c.peek() == Some(b'[') {
            return self.store(word, start);
        }
        match word {
            "let" => {
                let (var, at) = self.define_var()?;
                self.c.lit("=")?;
                let (value, ty) = self.expr()?;
                self.check_redefinition(var, ty, at)?;
                self.set_type(var, ty);
                Ok(Stmt::Let { var, value })
            }
            "local" => {
                let (var, at) = self.define_var()?;
                self.c.lit(":")?;
                let ty = self.ty()?;
                self.check_redefinition(var, ty, at)?;
                self.set_type(var, ty);
                self.c.lit("=")?;
                let (init, _) = self.expr()?;
                Ok(Stmt::Local { var, init })
            }
            "for" => self.for_loop(LoopKind::Serial),
            "parallel" => {
                self.c.word("for")?;
                self.for_loop(LoopKind::Parallel)
            }
            "vector" | "unroll" => {
                self.c.lit("(")?;
                let n = self.c.u32("a width")?;
                self.c.lit(")")?;
                self.c.word("for")?;
                let kind = if word == "vector" {
                    LoopKind::Vector(n)
                } else {
                    LoopKind::Unroll(n)
                };
                self.for_loop(kind)
            }
            "if" => {
                let (cond, _) = self.expr()?;
                let then = self.braced()?;
                self.c.spaces();
                let els = if self.c.eat_word("else") {
                    self.braced()?
                } else {
                    Vec::new()
                };
                Ok(Stmt::If { cond, then, els })
            }
            "tile" => self.tile(),
            "" => Err(self.c.expected("a statement")),
            _ => {
                let (var, _) = self.use_var(word, start, "assigned")?;
                self.c.lit("=")?;
                let (value, _) = self.expr()?;
                Ok(Stmt::Set { var, value })
            }
        }
    }

    /// The rest of a tile after `tile` (see `kernel::tile`); its closing `}` is the last
    /// thing read.
    fn tile(&mut self) -> Result<Stmt> {
        let (start, _) = self.expr()?;
        self.c.lit("..")?;
        let (end, _) = self.expr()?;
        self.c.spaces();
        let lanes = if self.c.eat_word("lanes") {
            self.c.u32("a lane count")?
        } else {
            1
        };
        self.c.lit("{")?;
        self.c.end_line("`{`")?;
        self.c.spaces();
        self.c.word("rows")?;
        let rows = self.refs()?;
        self.c.end_line("the tile's rows")?;
        self.c.spaces();
        self.c.word("cols")?;
        let cols = self.refs()?;
        self.c.end_line("the tile's columns")?;
        self.c.spaces();
        let at = self.c.pos;
        let out = match self.c.take_while(is_param_name) {
            "sums" => {
                let mut vars = Vec::new();
                loop {
                    let (var, at) = self.define_var()?;
                    self.check_redefinition(var, Ty::F32, at)?;
                    self.set_type(var, Ty::F32);
                    vars.push(var);
                    self.c.spaces();
                    if !self.c.eat(",") {
                        break;
                    }
                }
                TileOut::Sums(vars)
            }
            "store" => {
                let refs = self.refs()?;
                let buf = refs.first().map_or(BufId(0), |r| r.buf);
                if refs.iter().any(|r| r.buf != buf) {
                    return Err(self
                        .c
                        .error_at(at, "a tile stores all its sums into one buffer"));
                }
                TileOut::Store {
                    buf,
                    bases: refs.into_iter().map(|r| r.base).collect(),
                }
            }
            _ => return Err(self.c.error_at(at, "expected `sums` or `store`")),
        };
        self.c.end_line("where the tile's sums go")?;
        self.c.spaces();
        self.c.lit("}")?;
        Ok(Stmt::Tile(Box::new(Tile {
            start,
            end,
            lanes,
            rows,
            cols,
            out,
        })))
    }

    /// `NAME[base], NAME[base], ...`: at least one.
    fn refs(&mut self) -> Result<Vec<TileRef>> {
        let mut out = Vec::new();
        loop {
            self.c.spaces();
            let at = self.c.pos;
            let name = self.c.take_while(is_param_name);
            if name.is_empty() {
                return Err(self.c.expected("a buffer element `NAME[index]`"));
            }
            let buf = self.buf(name, at)?;
            self.c.lit("[")?;
            let (base, _) = self.expr()?;
            self.c.lit("]")?;
            out.push(TileRef { buf, base });
            self.c.spaces();
            if !self.c.eat(",") {
                return Ok(out);
            }
        }
    }

    /// `NAME[index] = value`, the cursor on the `[`.
    fn store(&mut self, name: &str, at: usize) -> Result<Stmt> {
        let buf = self.buf(name, at)?;
        self.c.lit("[")?;
        let (index, _) = self.expr()?;
        self.c.lit("]")?;
        self.c.lit("=")?;
        let (value, _) = self.expr()?;
        Ok(Stmt::Store { buf, index, value })
    }

    /// The rest of a loop after `for`.
    fn for_loop(&mut self, kind: LoopKind) -> Result<Stmt> {
        let (var, at) = self.define_var()?;
        self.check_redefinition(var, Ty::I64, at)?;
        self.set_type(var, Ty::I64);
        self.c.word("in")?;
        let (start, _) = self.expr()?;
        self.c.lit("..")?;
        let (end, _) = self.expr()?;
        self.c.spaces();
        let step = if self.c.eat_word("step") {
            self.c.u64("a loop step")?
        } else {
            1
        };
        let body = self.braced()?;
        Ok(Stmt::Loop {
            var,
            start,
            end,
            step,
            kind,
            body,
        })
    }

    fn ty(&mut self) -> Result<Ty> {
        self.c.spaces();
        let at = self.c.pos;
        match self.c.ident("a scalar type (f32, i64 or bool)")? {
            "f32" => Ok(Ty::F32),
            "i64" => Ok(Ty::I64),
            "bool" => Ok(Ty::Bool),
            other => Err(self.c.error_at(
                at,
                format!("expected a scalar type (f32, i64 or bool), found `{other}`"),
            )),
        }
    }

    fn buf(&self, name: &str, at: usize) -> Result<BufId> {
        match self.bufs.iter().position(|b| b.name == name) {
            Some(i) => Ok(BufId(i as u32)),
            None => Err(self
                .c
                .error_at(at, format!("`{name}` is not a parameter of the kernel"))),
        }
    }

    /// `NAME_ID` split at its last `_`.
    fn split_var<'w>(&self, word: &'w str, at: usize) -> Result<(&'w str, u32)> {
        let bad = |why: &str| {
            self.c.error_at(
                at,
                format!(
                    "`{word}` is not a variable: {why} (variables print as NAME_ID, like `acc_3`)"
                ),
            )
        };
        let (name, id) = word.rsplit_once('_').ok_or_else(|| bad("no `_ID`"))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("it does not end in `_` and a number"));
        }
        if id.len() > 1 && id.starts_with('0') {
            return Err(bad("its number has a leading zero"));
        }
        let id = id
            .parse::<u32>()
            .map_err(|_| bad("its number is too large"))?;
        Ok((name, id))
    }

    /// The variable a `let`, `local` or `for` defines, with its position.
    fn define_var(&mut self) -> Result<(VarId, usize)> {
        self.c.spaces();
        let at = self.c.pos;
        let word = self.c.take_while(is_param_name);
        if word.is_empty() {
            return Err(self.c.expected("a variable"));
        }
        let (name, id) = self.split_var(word, at)?;
        let next = self.vars.len() as u32;
        if id < next {
            self.same_name(id, name, word, at)?;
        } else if id == next {
            self.vars.push(KVar {
                name: name.to_string(),
                ty: Ty::I64,
            });
            self.defined.push(false);
        } else {
            return Err(self.skipped(word, next, at));
        }
        Ok((VarId(id), at))
    }

    /// A variable defined again must keep its type.
    fn check_redefinition(&self, var: VarId, ty: Ty, at: usize) -> Result<()> {
        let i = var.0 as usize;
        if self.defined[i] && self.vars[i].ty != ty {
            return Err(self.c.error_at(
                at,
                format!(
                    "`{}_{i}` is defined again as {}, but it is {}",
                    self.vars[i].name,
                    ty.as_str(),
                    self.vars[i].ty.as_str()
                ),
            ));
        }
        Ok(())
    }

    fn set_type(&mut self, var: VarId, ty: Ty) {
        let i = var.0 as usize;
        self.vars[i].ty = ty;
        self.defined[i] = true;
    }

    fn same_name(&self, id: u32, name: &str, word: &str, at: usize) -> Result<()> {
        let known = &self.vars[id as usize].name;
        if known == name {
            Ok(())
        } else {
            Err(self.c.error_at(
                at,
                format!("`{word}`: variable {id} is called `{known}_{id}` where it first appears"),
            ))
        }
    }

    fn skipped(&self, word: &str, next: u32, at: usize) -> crate::ir::ParseError {
        self.c.error_at(
            at,
            format!(
                "`{word}` skips variable numbers: the next new variable is number {next} (variables are numbered in the order the text first mentions them)"
            ),
        )
    }

    /// A use of a defined variable (`what` says how, for the message).
    fn use_var(&self, word: &str, at: usize, what: &str) -> Result<(VarId, Ty)> {
        let (name, id) = self.split_var(word, at)?;
        let next = self.vars.len() as u32;
        if id > next {
            return Err(self.skipped(word, next, at));
        }
        if id == next {
            return Err(self.c.error_at(
                at,
                format!("`{word}` is {what} before it is defined (by `let`, `local` or `for`)"),
            ));
        }
        if !self.defined[id as usize] {
            // Only the variable whose definition is being read can be known but untyped.
            return Err(self
                .c
                .error_at(at, format!("`{word}` is {what} in its own definition")));
        }
        self.same_name(id, name, word, at)?;
        Ok((VarId(id), self.vars[id as usize].ty))
    }

    /// An expression and its type. Types are inferred as the verifier infers them, without
    /// checking: a mistyped expression reads back as written, and the verifier reports it.
    fn expr(&mut self) -> Result<(Expr, Ty)> {
        self.c.enter()?;
        let (a, ta) = self.operand()?;
        let out = match self.binop() {
            None => (a, ta),
            Some(op) => {
                let (b, _) = self.operand()?;
                let at = self.c.pos;
                if let Some(next) = self.binop() {
                    return Err(self.c.error_at(
                        at,
                        format!(
                            "`{}` after a binary operation: operators do not chain, so parenthesise one of them",
                            binop_text(next)
                        ),
                    ));
                }
                let ty = match op {
                    BinOp::Lt
                    | BinOp::Le
                    | BinOp::Gt
                    | BinOp::Ge
                    | BinOp::Eq
                    | BinOp::Ne
                    | BinOp::And
                    | BinOp::Or => Ty::Bool,
                    _ => ta,
                };
                (Expr::Bin(op, Box::new(a), Box::new(b)), ty)
            }
        };
        self.c.leave();
        Ok(out)
    }

    /// A binary operator after spaces, consumed; `None` (nothing consumed) when there is none.
    fn binop(&mut self) -> Option<BinOp> {
        self.c.spaces();
        const OPS: [(&str, BinOp); 17] = [
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("&&", BinOp::And),
            ("||", BinOp::Or),
            ("<<", BinOp::Shl),
            (">>", BinOp::Shr),
            ("+", BinOp::Add),
            ("-", BinOp::Sub),
            ("*", BinOp::Mul),
            ("/", BinOp::Div),
            ("%", BinOp::Rem),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
            ("&", BinOp::BitAnd),
            ("|", BinOp::BitOr),
        ];
        let (text, op) = OPS.iter().find(|(t, _)| self.c.rest().starts_with(t))?;
        self.c.pos += text.len();
        Some(*op)
    }

    fn operand(&mut self) -> Result<(Expr, Ty)> {
        self.c.enter()?;
        self.c.spaces();
        let at = self.c.pos;
        let out = match self.c.peek() {
            Some(b'-') if self.negative_literal() => self.number()?,
            Some(b'-') => {
                self.c.pos += 1;
                let (a, t) = self.operand()?;
                (Expr::Un(UnOp::Neg, Box::new(a)), t)
            }
            Some(b'!') => {
                self.c.pos += 1;
                let (a, _) = self.operand()?;
                (Expr::Un(UnOp::Not, Box::new(a)), Ty::Bool)
            }
            Some(b'(') => {
                self.c.pos += 1;
                let e = self.expr()?;
                self.c.lit(")")?;
                e
            }
            Some(b) if b.is_ascii_digit() => self.number()?,
            Some(b) if is_param_name(b) && b != b'.' => {
                let word = self.name();
                match self.c.peek() {
                    Some(b'[') => {
                        let buf = self.buf(word, at)?;
                        self.c.pos += 1;
                        let (index, _) = self.expr()?;
                        self.c.lit("]")?;
                        let ty = load_ty(self.bufs[buf.0 as usize].elem);
                        let index = Box::new(index);
                        (Expr::Load { buf, index }, ty)
                    }
                    Some(b'(') => self.call(word, at)?,
                    _ => self.atom(word, at)?,
                }
            }
            _ => return Err(self.c.expected("an expression")),
        };
        self.c.leave();
        Ok(out)
    }

    /// Whether the `-` at the cursor starts a negative literal (`-1`, `-2.5`, `-inf`).
    fn negative_literal(&self) -> bool {
        let rest = &self.c.rest().as_bytes()[1..];
        rest.first().is_some_and(u8::is_ascii_digit)
            || (rest.starts_with(b"inf") && !rest.get(3).copied().is_some_and(is_ident))
    }

    /// A name in an expression: parameter-name bytes, where a `.` must be followed by a
    /// name byte (so `a_0..n_1` is a range, not one name).
    fn name(&mut self) -> &'a str {
        let start = self.c.pos;
        while let Some(b) = self.c.peek() {
            let ok = match b {
                b'.' => self.c.peek_at(1).is_some_and(is_ident),
                b'%' | b'@' => self.c.pos == start,
                _ => is_ident(b),
            };
            if !ok {
                break;
            }
            self.c.pos += 1;
        }
        &self.c.text[start..self.c.pos]
    }

    /// A keyword literal or a variable.
    fn atom(&mut self, word: &str, at: usize) -> Result<(Expr, Ty)> {
        Ok(match word {
            "seq" => (Expr::Dim(DimVar::Seq), Ty::I64),
            "past" => (Expr::Dim(DimVar::Past), Ty::I64),
            "true" => (Expr::Bool(true), Ty::Bool),
            "false" => (Expr::Bool(false), Ty::Bool),
            "inf" => (Expr::F32(f32::INFINITY), Ty::F32),
            "NaN" => (Expr::F32(f32::NAN), Ty::F32),
            _ => {
                let (v, ty) = self.use_var(word, at, "used")?;
                (Expr::Var(v), ty)
            }
        })
    }

    /// `FN(args)`, the cursor on the `(`.
    fn call(&mut self, name: &str, at: usize) -> Result<(Expr, Ty)> {
        let un = |op: UnOp, ty: Option<Ty>| (op, ty);
        let unary = match name {
            "abs" => Some(un(UnOp::Abs, None)),
            "exp" => Some(un(UnOp::Exp, Some(Ty::F32))),
            "log" => Some(un(UnOp::Log, Some(Ty::F32))),
            "sqrt" => Some(un(UnOp::Sqrt, Some(Ty::F32))),
            "tanh" => Some(un(UnOp::Tanh, Some(Ty::F32))),
            "sin" => Some(un(UnOp::Sin, Some(Ty::F32))),
            "cos" => Some(un(UnOp::Cos, Some(Ty::F32))),
            "floor" => Some(un(UnOp::Floor, Some(Ty::F32))),
            "f32" => Some(un(UnOp::ToF32, Some(Ty::F32))),
            "i64" => Some(un(UnOp::ToI64, Some(Ty::I64))),
            "f16bits" => Some(un(UnOp::F16Bits, Some(Ty::F32))),
            "f32bits" => Some(un(UnOp::F32Bits, Some(Ty::F32))),
            _ => None,
        };
        let binary = match name {
            "min" => Some(BinOp::Min),
            "max" => Some(BinOp::Max),
            "pow" => Some(BinOp::Pow),
            _ => None,
        };
        let arity = match (unary, binary, name) {
            (Some(_), _, _) => 1,
            (_, Some(_), _) => 2,
            (_, _, "select") => 3,
            _ => {
                return Err(self.c.error_at(
                    at,
                    format!("`{name}` is not a function (abs, exp, log, sqrt, tanh, sin, cos, floor, f32, i64, f16bits, min, max, pow, select)"),
                ))
            }
        };
        self.c.pos += 1;
        let takes = format!(
            "`{name}` takes {arity} operand{}",
            if arity == 1 { "" } else { "s" }
        );
        let mut args = Vec::with_capacity(arity);
        for i in 0..arity {
            if i > 0 {
                self.c.spaces();
                if !self.c.eat(",") {
                    return Err(self.c.expected(&format!("`,`: {takes}")));
                }
            }
            args.push(self.expr()?);
        }
        self.c.spaces();
        if !self.c.eat(")") {
            return Err(self.c.expected(&format!("`)`: {takes}")));
        }
        let mut args = args.into_iter();
        let mut next = || args.next().expect("arity arguments were read");
        Ok(match (unary, binary) {
            (Some((op, ty)), _) => {
                let (a, ta) = next();
                (Expr::Un(op, Box::new(a)), ty.unwrap_or(ta))
            }
            (_, Some(op)) => {
                let (a, ta) = next();
                let (b, _) = next();
                (Expr::Bin(op, Box::new(a), Box::new(b)), ta)
            }
            _ => {
                let (c, _) = next();
                let (a, ta) = next();
                let (b, _) = next();
                (Expr::Select(Box::new(c), Box::new(a), Box::new(b)), ta)
            }
        })
    }

    /// A number literal, with its sign: an i64 when it is only digits, else an f32.
    fn number(&mut self) -> Result<(Expr, Ty)> {
        let start = self.c.pos;
        self.c.eat("-");
        if self.c.eat_word("inf") {
            let x = if self.c.pos - start == 4 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
            return Ok((Expr::F32(x), Ty::F32));
        }
        let digits = |c: &mut Cursor<'_>| !c.take_while(|b| b.is_ascii_digit()).is_empty();
        digits(self.c);
        let mut float = false;
        if self.c.peek() == Some(b'.') && self.c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            self.c.pos += 1;
            digits(self.c);
            float = true;
        }
        if matches!(self.c.peek(), Some(b'e' | b'E')) {
            let save = self.c.pos;
            self.c.pos += 1;
            if !self.c.eat("-") {
                self.c.eat("+");
            }
            if digits(self.c) {
                float = true;
            } else {
                self.c.pos = save;
            }
        }
        let text = &self.c.text[start..self.c.pos];
        if self.c.peek().is_some_and(is_ident) {
            let tail = self.c.found();
            return Err(self
                .c
                .error_at(start, format!("malformed number `{text}` before {tail}")));
        }
        if float {
            let x = text
                .parse::<f32>()
                .map_err(|_| self.c.error_at(start, format!("`{text}` is not an f32")))?;
            Ok((Expr::F32(x), Ty::F32))
        } else {
            let x = text.parse::<i64>().map_err(|_| {
                self.c
                    .error_at(start, format!("`{text}` does not fit in an i64"))
            })?;
            Ok((Expr::I64(x), Ty::I64))
        }
    }
}

fn binop_text(op: BinOp) -> &'static str {
    match op {
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
        BinOp::Min => "min",
        BinOp::Max => "max",
        BinOp::Pow => "pow",
    }
}
