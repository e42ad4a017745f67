//! Refuses a chat template whose constant expressions minijinja would compute, when it
//! compiles the template, into a value past [`MAX_VALUE_BYTES`].
//!
//! minijinja folds an operator on constants (`'x' * 90000000`, `'a' ~ 'b'`) while compiling,
//! before any bound of a render applies, and a long chain of such terms can make a value of
//! terabytes. This pass parses the template (minijinja's parser, which bounds its own
//! nesting) and estimates every constant expression's size without building it.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::machinery::{parse, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind};

use super::bounds::MAX_VALUE_BYTES;

/// What a constant expression folds to, as far as its size goes.
#[derive(Debug, Clone, Copy)]
enum Folded {
    /// A string, list or map that prints as about this many bytes.
    Sized(usize),
    /// A number (a float counted by its integral part), which may repeat a string.
    Number(i128),
    /// Anything else: a boolean, none.
    Small,
}

/// The size a folded value prints as, about.
fn size(f: Folded) -> usize {
    match f {
        Folded::Sized(n) => n,
        Folded::Number(_) | Folded::Small => 40,
    }
}

fn count(n: i128) -> usize {
    usize::try_from(n.max(0)).unwrap_or(usize::MAX)
}

/// Checks every expression of `source`; a template that does not parse passes here and
/// fails to compile with minijinja's own error.
// `SyntaxConfig` is a unit struct unless minijinja's `custom_syntax` feature is on, which
// another crate could turn on; `default()` compiles either way.
#[allow(clippy::default_constructed_unit_structs)]
pub fn check(source: &str, name: &str) -> Result<(), Error> {
    let Ok(ast) = parse(
        source,
        name,
        SyntaxConfig::default(),
        WhitespaceConfig::default(),
    ) else {
        return Ok(());
    };
    stmt(&ast)
}

fn stmts(body: &[Stmt<'_>]) -> Result<(), Error> {
    body.iter().try_for_each(stmt)
}

fn stmt(s: &Stmt<'_>) -> Result<(), Error> {
    match s {
        Stmt::Template(t) => stmts(&t.children),
        Stmt::EmitExpr(e) => expr(&e.expr).map(drop),
        Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => Ok(()),
        Stmt::ForLoop(f) => {
            expr(&f.iter)?;
            if let Some(e) = &f.filter_expr {
                expr(e)?;
            }
            stmts(&f.body)?;
            stmts(&f.else_body)
        }
        Stmt::IfCond(c) => {
            expr(&c.expr)?;
            stmts(&c.true_body)?;
            stmts(&c.false_body)
        }
        Stmt::WithBlock(w) => {
            for (_, e) in &w.assignments {
                expr(e)?;
            }
            stmts(&w.body)
        }
        Stmt::Set(s) => expr(&s.expr).map(drop),
        Stmt::SetBlock(s) => {
            if let Some(f) = &s.filter {
                expr(f)?;
            }
            stmts(&s.body)
        }
        Stmt::AutoEscape(a) => {
            expr(&a.enabled)?;
            stmts(&a.body)
        }
        Stmt::FilterBlock(f) => {
            expr(&f.filter)?;
            stmts(&f.body)
        }
        Stmt::Block(b) => stmts(&b.body),
        Stmt::Import(i) => expr(&i.expr).map(drop),
        Stmt::FromImport(i) => expr(&i.expr).map(drop),
        Stmt::Extends(e) => expr(&e.name).map(drop),
        Stmt::Include(i) => expr(&i.name).map(drop),
        Stmt::Macro(m) => {
            for e in &m.defaults {
                expr(e)?;
            }
            stmts(&m.body)
        }
        Stmt::CallBlock(c) => {
            expr(&c.call.expr)?;
            args(&c.call.args)?;
            for e in &c.macro_decl.defaults {
                expr(e)?;
            }
            stmts(&c.macro_decl.body)
        }
        Stmt::Do(d) => {
            expr(&d.call.expr)?;
            args(&d.call.args)
        }
    }
}

fn args(list: &[CallArg<'_>]) -> Result<(), Error> {
    for a in list {
        match a {
            CallArg::Pos(e)
            | CallArg::Kwarg(_, e)
            | CallArg::PosSplat(e)
            | CallArg::KwargSplat(e) => {
                expr(e)?;
            }
        }
    }
    Ok(())
}

/// What `e` folds to (`None` when it is not constant), once every constant part of it is
/// known to be within the bound.
fn expr(e: &Expr<'_>) -> Result<Option<Folded>, Error> {
    let folded = match e {
        Expr::Var(_) => None,
        Expr::Const(c) => Some(match c.value.kind() {
            ValueKind::String => Folded::Sized(c.value.as_str().map_or(0, str::len)),
            ValueKind::Number => Folded::Number(
                i128::try_from(c.value.clone())
                    .ok()
                    .or_else(|| {
                        f64::try_from(c.value.clone())
                            .ok()
                            .filter(|f| f.is_finite())
                            .map(|f| f as i128)
                    })
                    .unwrap_or(i128::MAX),
            ),
            _ => Folded::Small,
        }),
        Expr::List(l) => {
            let mut total = Some(0usize);
            for item in &l.items {
                let f = expr(item)?;
                total = total.zip(f).map(|(t, f)| t.saturating_add(size(f) + 2));
            }
            total.map(Folded::Sized)
        }
        Expr::Map(m) => {
            let mut total = Some(0usize);
            for item in m.keys.iter().chain(&m.values) {
                let f = expr(item)?;
                total = total.zip(f).map(|(t, f)| t.saturating_add(size(f) + 2));
            }
            total.map(Folded::Sized)
        }
        Expr::UnaryOp(u) => expr(&u.expr)?.map(|f| match (&u.op, f) {
            (UnaryOpKind::Neg, Folded::Number(n)) => Folded::Number(n.saturating_neg()),
            _ => Folded::Small,
        }),
        Expr::BinOp(b) => {
            let (left, right) = (expr(&b.left)?, expr(&b.right)?);
            left.zip(right).map(|(l, r)| binop(&b.op, l, r))
        }
        Expr::Compare(c) => {
            let mut constant = expr(&c.expr)?.is_some();
            for op in &c.ops {
                constant &= expr(&op.expr)?.is_some();
            }
            constant.then_some(Folded::Small)
        }
        Expr::Slice(s) => {
            expr(&s.expr)?;
            for e in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                expr(e)?;
            }
            None
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr)?;
            expr(&i.true_expr)?;
            if let Some(e) = &i.false_expr {
                expr(e)?;
            }
            None
        }
        Expr::Filter(f) => {
            if let Some(e) = &f.expr {
                expr(e)?;
            }
            args(&f.args)?;
            None
        }
        Expr::Test(t) => {
            expr(&t.expr)?;
            args(&t.args)?;
            None
        }
        Expr::GetAttr(g) => expr(&g.expr).map(|_| None)?,
        Expr::GetItem(g) => {
            expr(&g.expr)?;
            expr(&g.subscript_expr)?;
            None
        }
        Expr::Call(c) => {
            expr(&c.expr)?;
            args(&c.args)?;
            None
        }
    };
    if let Some(Folded::Sized(n)) = folded {
        if n > MAX_VALUE_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "a constant expression would be {n} bytes, over the bound of \
                     {MAX_VALUE_BYTES} (line {})",
                    e.span().start_line
                ),
            ));
        }
    }
    Ok(folded)
}

fn binop(op: &BinOpKind, l: Folded, r: Folded) -> Folded {
    use Folded::{Number, Sized, Small};
    match (op, l, r) {
        (BinOpKind::Concat, l, r) => Sized(size(l).saturating_add(size(r))),
        (BinOpKind::Add, Number(a), Number(b)) => Number(a.saturating_add(b)),
        (BinOpKind::Add, l, r) => Sized(size(l).saturating_add(size(r))),
        (BinOpKind::Sub, Number(a), Number(b)) => Number(a.saturating_sub(b)),
        (BinOpKind::Mul, Number(a), Number(b)) => Number(a.saturating_mul(b)),
        (BinOpKind::Mul, Sized(s), Number(n)) | (BinOpKind::Mul, Number(n), Sized(s)) => {
            Sized(s.saturating_mul(count(n)))
        }
        (BinOpKind::Mul, Sized(s), Small) | (BinOpKind::Mul, Small, Sized(s)) => Sized(s),
        (BinOpKind::FloorDiv | BinOpKind::Rem, Number(a), Number(b)) => Number(if b == 0 {
            a
        } else {
            a.saturating_abs().max(b.saturating_abs())
        }),
        // A power or quotient is not tracked as a multiplier, so it counts as huge.
        (BinOpKind::Pow | BinOpKind::Div, Number(_), Number(_)) => Number(i128::MAX),
        _ => Small,
    }
}
