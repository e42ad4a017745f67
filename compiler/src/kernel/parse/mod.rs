//! The kernel IR text back to a [`Program`] or a [`Kernel`]: the exact inverse of their
//! `Display`, so that `parse_program(&p.to_string()) == Ok(p)` for every program kernel
//! lowering makes, and a kernel IR file can be compiled on its own.
//!
//! Grammar (blank lines are ignored; spaces may surround every token):
//!
//! ```text
//! program := 'program' ' ' TEXT NL (buffer | launch | kernel)*
//! buffer  := 'buffer' NAME ':' ELEM '[' (DIM (',' DIM)*)? ']' KIND NL
//! KIND    := 'param' | 'input' IO? | 'output' IO? | 'temp'
//!          | 'alias' 'of' REF | 'append' 'to' REF
//! launch  := 'launch' IDENT '(' (ARG (',' ARG)*)? ')' NL
//! ARG     := '_' | REF
//! REF     := NAME ('#' N)?     -- the N-th (from 0) buffer called NAME; `NAME` alone the first
//! kernel  := 'kernel' IDENT '(' (param (',' param)*)? ')' '{' NL stmt* '}' NL
//! param   := BNAME ':' ELEM ('read' | 'write' | 'readwrite' | '[' N ']' 'scratch')
//! ```
//!
//! `TEXT` is the rest of the line; `NAME` runs to a space or one of `:,()#`; an input's or
//! output's io is its name unless it prints one; `DIM` is a `Dim` as it prints (`past+seq`);
//! `ELEM` is `f32`, `bf16`, `f16`, `i32`, `u8` or `f8`. Launches name kernels defined
//! anywhere in the program; kernel names are unique, and so are a kernel's parameter
//! names (`BNAME`: letters, digits, `_`, `.`, `%`, `@`). Statements and expressions are
//! in `body.rs`.

mod body;

pub use crate::ir::ParseError;

use super::{Access, Buffer, BufferKind, Elem, KBuf, Kernel, Launch, Program};
use crate::ir::parse::{is_ident, shape, Cursor, Result};
use crate::ir::Io;
use std::collections::BTreeMap;

/// Parses a whole program (see the module docs for the grammar).
pub fn parse_program(text: &str) -> std::result::Result<Program, ParseError> {
    let mut c = Cursor::new(text);
    c.blank_lines();
    c.word("program")?;
    if !c.eat(" ") {
        return Err(c.expected("a space and the program's name"));
    }
    let name = c.line_rest().to_string();
    c.end_line("the program's name")?;
    let mut p = Program {
        name,
        buffers: Vec::new(),
        kernels: Vec::new(),
        launches: Vec::new(),
    };
    // Buffer references and kernel names are resolved once everything is read.
    let mut buffer_refs: Vec<(usize, Ref<'_>)> = Vec::new();
    let mut launch_refs: Vec<(usize, &str, Vec<Option<Ref<'_>>>)> = Vec::new();
    let mut kernel_ids: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        c.blank_lines();
        c.spaces();
        if c.at_end() {
            break;
        }
        let start = c.pos;
        if c.eat_word("buffer") {
            let (b, r) = buffer(&mut c)?;
            if let Some(r) = r {
                buffer_refs.push((p.buffers.len(), r));
            }
            p.buffers.push(b);
        } else if c.eat_word("launch") {
            let (kernel, args) = launch(&mut c)?;
            launch_refs.push((start, kernel, args));
        } else if c.eat_word("kernel") {
            let k = kernel_rest(&mut c)?;
            if kernel_ids.contains_key(&k.name) {
                return Err(c.error_at(
                    start,
                    format!(
                        "a second kernel is named `{}`; launches name kernels, so names are unique",
                        k.name
                    ),
                ));
            }
            kernel_ids.insert(k.name.clone(), p.kernels.len());
            p.kernels.push(k);
        } else {
            return Err(c.expected("`buffer`, `launch` or `kernel`"));
        }
    }
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, b) in p.buffers.iter().enumerate() {
        by_name.entry(b.name.clone()).or_default().push(i);
    }
    let resolve = |r: &Ref<'_>| -> Result<usize> {
        let same = by_name.get(r.name).map_or(&[][..], Vec::as_slice);
        same.get(r.nth).copied().ok_or_else(|| {
            let have = match same.len() {
                0 => "no buffer has that name".to_string(),
                1 => "one buffer has that name".to_string(),
                n => format!("{n} buffers have that name"),
            };
            c.error_at(r.pos, format!("unknown buffer `{}` ({have})", r.text))
        })
    };
    let mut kinds = Vec::with_capacity(buffer_refs.len());
    for (i, r) in &buffer_refs {
        kinds.push((*i, resolve(r)?));
    }
    for (i, target) in kinds {
        match &mut p.buffers[i].kind {
            BufferKind::Alias { of } => *of = target,
            BufferKind::Append { to } => *to = target,
            _ => {}
        }
    }
    for (at, kernel, args) in &launch_refs {
        let Some(&k) = kernel_ids.get(*kernel) else {
            return Err(c.error_at(
                *at,
                format!("launch of `{kernel}`, which no `kernel` of the program defines"),
            ));
        };
        let bufs = args
            .iter()
            .map(|a| a.as_ref().map(&resolve).transpose())
            .collect::<Result<Vec<_>>>()?;
        p.launches.push(Launch { kernel: k, bufs });
    }
    Ok(p)
}

/// Parses one kernel (see the module docs for the grammar).
pub fn parse_kernel(text: &str) -> std::result::Result<Kernel, ParseError> {
    let mut c = Cursor::new(text);
    c.blank_lines();
    c.word("kernel")?;
    let k = kernel_rest(&mut c)?;
    c.blank_lines();
    c.spaces();
    if !c.at_end() {
        return Err(c.expected("the end of the text after the kernel"));
    }
    Ok(k)
}

/// A reference to a program buffer: `NAME` or `NAME#n`.
#[derive(Debug)]
struct Ref<'a> {
    text: &'a str,
    name: &'a str,
    nth: usize,
    pos: usize,
}

/// Bytes of program buffer names.
fn is_buffer_name(b: u8) -> bool {
    !b.is_ascii_whitespace() && !matches!(b, b':' | b',' | b'(' | b')' | b'#')
}

/// Bytes of kernel parameter names (also how the body refers to them).
pub(super) fn is_param_name(b: u8) -> bool {
    is_ident(b) || matches!(b, b'.' | b'%' | b'@')
}

fn buffer_ref<'a>(c: &mut Cursor<'a>) -> Result<Ref<'a>> {
    c.spaces();
    let pos = c.pos;
    let name = c.take_while(is_buffer_name);
    if name.is_empty() {
        return Err(c.expected("a buffer name"));
    }
    let nth = if c.eat("#") {
        let n = c.u64("a buffer's number after `#`")?;
        usize::try_from(n).unwrap_or(usize::MAX)
    } else {
        0
    };
    Ok(Ref {
        text: &c.text[pos..c.pos],
        name,
        nth,
        pos,
    })
}

fn elem(c: &mut Cursor<'_>) -> Result<Elem> {
    c.spaces();
    let start = c.pos;
    let w = c.take_while(is_ident);
    Elem::by_name(w).ok_or_else(|| {
        let found = if w.is_empty() {
            c.found()
        } else {
            format!("`{w}`")
        };
        c.error_at(
            start,
            format!("expected an element type (f32, bf16, f16, i32, u8 or f8), found {found}"),
        )
    })
}

/// The rest of a `buffer` line, and the reference of an alias or append (resolved later).
fn buffer<'a>(c: &mut Cursor<'a>) -> Result<(Buffer, Option<Ref<'a>>)> {
    c.spaces();
    let name = c.take_while(is_buffer_name);
    if name.is_empty() {
        return Err(c.expected("a buffer name"));
    }
    c.lit(":")?;
    let elem = elem(c)?;
    let shape = shape(c)?;
    c.spaces();
    let start = c.pos;
    let word = c.ident("a buffer kind (param, input, output, temp, alias of, append to)")?;
    let mut r = None;
    let role = |c: &mut Cursor<'_>| -> Result<Io> {
        if c.at_line_end() {
            name.parse::<Io>().map_err(|e| {
                c.error_at(
                    start,
                    format!("{e}; an input or output not named by its io prints it (`{word} IO`)"),
                )
            })
        } else {
            crate::ir::parse::io(c)
        }
    };
    let kind = match word {
        "param" => BufferKind::Param,
        "temp" => BufferKind::Temp,
        "input" => BufferKind::Input(role(c)?),
        "output" => BufferKind::Output(role(c)?),
        "alias" => {
            c.word("of")?;
            r = Some(buffer_ref(c)?);
            BufferKind::Alias { of: usize::MAX }
        }
        "append" => {
            c.word("to")?;
            r = Some(buffer_ref(c)?);
            BufferKind::Append { to: usize::MAX }
        }
        other => {
            return Err(c.error_at(
                start,
                format!(
                    "expected a buffer kind (param, input, output, temp, alias of, append to), found `{other}`"
                ),
            ))
        }
    };
    c.end_line("a buffer")?;
    let b = Buffer {
        name: name.to_string(),
        elem,
        shape,
        kind,
    };
    Ok((b, r))
}

/// The rest of a `launch` line: the kernel's name and the arguments (`None` for `_`).
fn launch<'a>(c: &mut Cursor<'a>) -> Result<(&'a str, Vec<Option<Ref<'a>>>)> {
    let kernel = c.ident("a kernel name")?;
    c.lit("(")?;
    let mut args = Vec::new();
    c.spaces();
    if !c.eat(")") {
        loop {
            c.spaces();
            let start = c.pos;
            if c.eat("_") && !c.peek().is_some_and(|b| is_buffer_name(b) || b == b'#') {
                args.push(None);
            } else {
                c.pos = start;
                args.push(Some(buffer_ref(c)?));
            }
            c.spaces();
            if c.eat(")") {
                break;
            }
            if !c.eat(",") {
                return Err(c.expected("`,` or `)` in a launch"));
            }
        }
    }
    c.end_line("a launch")?;
    Ok((kernel, args))
}

/// A kernel after its `kernel` keyword, up to and including the line of its closing `}`.
fn kernel_rest(c: &mut Cursor<'_>) -> Result<Kernel> {
    let name = c.ident("a kernel name")?;
    let mut k = Kernel::new(name);
    c.lit("(")?;
    c.spaces();
    if !c.eat(")") {
        loop {
            c.spaces();
            let start = c.pos;
            let pname = c.take_while(is_param_name);
            if pname.is_empty() {
                return Err(c.expected("a parameter name"));
            }
            if k.bufs.iter().any(|b| b.name == pname) {
                return Err(c.error_at(
                    start,
                    format!("a second parameter is named `{pname}`; the body names parameters, so names are unique"),
                ));
            }
            c.lit(":")?;
            let elem = elem(c)?;
            c.spaces();
            let access = if c.eat("[") {
                let len = c.u64("a scratch length")?;
                c.lit("]")?;
                c.word("scratch")?;
                Access::Scratch { len }
            } else {
                let at = c.pos;
                match c.ident("`read`, `write`, `readwrite` or `[N] scratch`")? {
                    "read" => Access::Read,
                    "write" => Access::Write,
                    "readwrite" => Access::ReadWrite,
                    other => {
                        return Err(c.error_at(
                            at,
                            format!("expected `read`, `write`, `readwrite` or `[N] scratch`, found `{other}`"),
                        ))
                    }
                }
            };
            k.bufs.push(KBuf {
                name: pname.to_string(),
                elem,
                access,
            });
            c.spaces();
            if c.eat(")") {
                break;
            }
            if !c.eat(",") {
                return Err(c.expected("`,` or `)` after a parameter"));
            }
        }
    }
    c.lit("{")?;
    c.end_line("the kernel's `{`")?;
    let (body, vars) = body::Body::new(c, &k.bufs).parse()?;
    k.body = body;
    k.vars = vars;
    c.end_line("the kernel's `}`")?;
    Ok(k)
}
