//! The Graph IR text back to a [`Graph`]: the exact inverse of its `Display`, so that
//! `parse(&g.to_string()) == Ok(g)` for every graph the verifier accepts, and file tests can
//! start from a few lines of IR instead of a whole model.
//!
//! Grammar (one item per line; blank lines are ignored; spaces may surround every token):
//!
//! ```text
//! graph   := 'graph' STRING ('prefill' | 'decode') NL
//!            param* (label | node)* output*
//! param   := 'param' '@' NAME ':' '[' (INT (',' INT)*)? ']' DTYPE
//! label   := '#' ' '? TEXT                       -- a label of the next node
//! node    := '%' N '=' OP (value (',' value)*)? ':' type
//! value   := '%' N | '@' NAME
//! type    := '[' (DIM (',' DIM)*)? ']' DTYPE     -- DIM as `Dim` prints: 64, seq, past+seq
//! output  := 'output' IO '=' '%' N
//! DTYPE   := 'f32' | 'f16' | 'bf16' | 'f8' | 'i32'
//! ```
//!
//! `STRING` is double-quoted with Rust's escapes; `NAME` runs to the next space or comma;
//! `IO` is an [`super::Io`] in its text form; node numbers count up from 0 in order and an
//! operand or output names an existing node. A label line after the last node labels the
//! end of the graph. `OP` is an op's name and attributes as [`super::op_text`] prints them
//! (see `ops.rs` for each form); `reshape` and `expand` take their shape from the node's
//! type unless they print one (`reshape{[4, seq]}`).

mod cursor;
mod ops;

pub use cursor::ParseError;
pub(crate) use cursor::{is_ident, Cursor, Result};

use super::{DType, Dim, Graph, Io, Mode, Node, NodeId, Output, Param, ParamId, Type, Value};
use std::collections::BTreeMap;

/// Parses the text form of a graph (see the module docs for the grammar).
pub fn parse(text: &str) -> std::result::Result<Graph, ParseError> {
    GraphParser {
        c: Cursor::new(text),
        params: BTreeMap::new(),
        node_refs: Vec::new(),
    }
    .graph()
}

struct GraphParser<'a> {
    c: Cursor<'a>,
    params: BTreeMap<&'a str, ParamId>,
    /// Node operands and outputs with the position of their `%N`, checked once every
    /// node is known.
    node_refs: Vec<(u32, usize)>,
}

/// Bytes of a parameter name or an io name: anything up to a space, a comma or a newline.
fn is_name(b: u8) -> bool {
    !b.is_ascii_whitespace() && b != b','
}

impl<'a> GraphParser<'a> {
    fn graph(mut self) -> Result<Graph> {
        self.c.blank_lines();
        self.c.word("graph")?;
        self.c.spaces();
        let name = quoted(&mut self.c)?;
        self.c.spaces();
        let mode = match self.c.ident("`prefill` or `decode`")? {
            "prefill" => Mode::Prefill,
            "decode" => Mode::Decode,
            other => {
                let at = self.c.pos - other.len();
                return Err(self.c.error_at(
                    at,
                    format!("expected `prefill` or `decode`, found `{other}`"),
                ));
            }
        };
        self.c.end_line("the graph header")?;
        let mut g = Graph::new(&name, mode);
        #[derive(PartialEq, PartialOrd)]
        enum Section {
            Params,
            Nodes,
            Outputs,
        }
        let mut section = Section::Params;
        loop {
            self.c.blank_lines();
            self.c.spaces();
            if self.c.at_end() {
                break;
            }
            let start = self.c.pos;
            let (kind, what) = if self.c.eat_word("param") {
                (Section::Params, "a `param` line")
            } else if self.c.eat_word("output") {
                (Section::Outputs, "an `output` line")
            } else if matches!(self.c.peek(), Some(b'%' | b'#')) {
                (Section::Nodes, "a node or label line")
            } else {
                return Err(self
                    .c
                    .expected("`param @NAME`, `%N = ...`, `# label` or `output`"));
            };
            if kind < section {
                let order = "params come first, then nodes and labels, then outputs";
                return Err(self
                    .c
                    .error_at(start, format!("{what} out of order: {order}")));
            }
            section = kind;
            match section {
                Section::Params => self.param(&mut g)?,
                Section::Outputs => self.output(&mut g)?,
                Section::Nodes if self.c.eat("#") => {
                    // A label line: one space after `#`, then the text verbatim.
                    self.c.eat(" ");
                    let text = self.c.line_rest();
                    g.labels
                        .push((NodeId(g.nodes.len() as u32), text.to_string()));
                    self.c.end_line("a label")?;
                }
                Section::Nodes => self.node(&mut g)?,
            }
        }
        for &(n, at) in &self.node_refs {
            if n as usize >= g.nodes.len() {
                return Err(self.c.error_at(
                    at,
                    format!(
                        "%{n} does not exist (the graph has {} node{})",
                        g.nodes.len(),
                        if g.nodes.len() == 1 { "" } else { "s" }
                    ),
                ));
            }
        }
        Ok(g)
    }

    fn param(&mut self, g: &mut Graph) -> Result<()> {
        self.c.lit("@")?;
        let start = self.c.pos;
        let name = self.c.take_while(is_name);
        if name.is_empty() {
            return Err(self.c.expected("a parameter name after `@`"));
        }
        if self.params.contains_key(name) {
            return Err(self
                .c
                .error_at(start, format!("a second parameter is named `@{name}`")));
        }
        self.c.lit(":")?;
        let ty_start = self.c.pos;
        let ty = ty(&mut self.c)?;
        let mut shape = Vec::with_capacity(ty.shape.len());
        for d in &ty.shape {
            match d.as_const() {
                Some(n) => shape.push(n),
                None => {
                    return Err(self.c.error_at(
                        ty_start,
                        format!("a parameter's dims are numbers, found `{d}` in `@{name}`"),
                    ))
                }
            }
        }
        self.c.end_line("a parameter")?;
        self.params.insert(name, ParamId(g.params.len() as u32));
        g.params.push(Param {
            name: name.to_string(),
            shape,
            dtype: ty.dtype,
        });
        Ok(())
    }

    fn node(&mut self, g: &mut Graph) -> Result<()> {
        let start = self.c.pos;
        self.c.lit("%")?;
        let n = self.c.u32("a node number")?;
        if n as usize != g.nodes.len() {
            return Err(self.c.error_at(
                start,
                format!(
                    "node numbers count up from 0 in order: expected %{}, found %{n}",
                    g.nodes.len()
                ),
            ));
        }
        self.c.lit("=")?;
        self.c.spaces();
        let (mut op, shape_from_type) = ops::op(&mut self.c)?;
        let mut inputs = Vec::new();
        self.c.spaces();
        if self.c.peek() != Some(b':') {
            loop {
                inputs.push(self.value()?);
                self.c.spaces();
                if !self.c.eat(",") {
                    break;
                }
            }
        }
        self.c.lit(":")?;
        let ty = ty(&mut self.c)?;
        self.c.end_line("a node")?;
        if shape_from_type {
            if let super::Op::Reshape { shape } | super::Op::Expand { shape } = &mut op {
                *shape = ty.shape.clone();
            }
        }
        g.nodes.push(Node { op, inputs, ty });
        Ok(())
    }

    fn value(&mut self) -> Result<Value> {
        self.c.spaces();
        let start = self.c.pos;
        if self.c.eat("%") {
            let n = self.c.u32("a node number after `%`")?;
            self.node_refs.push((n, start));
            Ok(Value::Node(NodeId(n)))
        } else if self.c.eat("@") {
            let name = self.c.take_while(is_name);
            match self.params.get(name) {
                Some(&id) => Ok(Value::Param(id)),
                None => Err(self.c.error_at(
                    start,
                    format!("unknown parameter `@{name}` (no `param` line declares it)"),
                )),
            }
        } else {
            Err(self.c.expected("an operand (`%N` or `@NAME`) or `:`"))
        }
    }

    fn output(&mut self, g: &mut Graph) -> Result<()> {
        let io = io(&mut self.c)?;
        self.c.lit("=")?;
        self.c.spaces();
        let start = self.c.pos;
        self.c.lit("%")?;
        let n = self.c.u32("a node number after `%`")?;
        self.node_refs.push((n, start));
        self.c.end_line("an output")?;
        g.outputs.push(Output {
            io,
            node: NodeId(n),
        });
        Ok(())
    }
}

/// An [`Io`] in its text form (`tokens`, `cache.3.k`, a value name), after spaces.
pub(crate) fn io(c: &mut Cursor<'_>) -> Result<Io> {
    c.spaces();
    let start = c.pos;
    let text = c.take_while(is_name);
    if text.is_empty() {
        return Err(c.expected("an input or output name"));
    }
    text.parse::<Io>()
        .map_err(|e| c.error_at(start, e.to_string()))
}

/// A double-quoted string with Rust's escapes, as `{:?}` prints it.
pub(crate) fn quoted(c: &mut Cursor<'_>) -> Result<String> {
    if !c.eat("\"") {
        return Err(c.expected("a double-quoted name"));
    }
    let mut out = String::new();
    loop {
        let rest = c.rest();
        let Some(ch) = rest.chars().next() else {
            return Err(c.error("unterminated string: expected a closing `\"`"));
        };
        match ch {
            '"' => {
                c.pos += 1;
                return Ok(out);
            }
            '\n' => return Err(c.error("unterminated string: expected a closing `\"`")),
            '\\' => {
                let at = c.pos;
                c.pos += 1;
                let esc = c.rest().chars().next();
                c.pos += esc.map_or(0, char::len_utf8);
                out.push(match esc {
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('0') => '\0',
                    Some(e @ ('\\' | '"' | '\'')) => e,
                    Some('u') => unicode_escape(c, at)?,
                    _ => return Err(c.error_at(at, "unknown escape in a string")),
                });
            }
            ch => {
                c.pos += ch.len_utf8();
                out.push(ch);
            }
        }
    }
}

/// The `{XXXX}` of a `\u{XXXX}` escape.
fn unicode_escape(c: &mut Cursor<'_>, at: usize) -> Result<char> {
    let bad = |c: &Cursor<'_>| c.error_at(at, "a `\\u` escape is `\\u{HEX}` of a character");
    if !c.eat("{") {
        return Err(bad(c));
    }
    let hex = c.take_while(|b| b.is_ascii_hexdigit());
    if hex.is_empty() || hex.len() > 6 || !c.eat("}") {
        return Err(bad(c));
    }
    u32::from_str_radix(hex, 16)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| bad(c))
}

/// A type: `[dims] dtype`, after spaces.
pub(crate) fn ty(c: &mut Cursor<'_>) -> Result<Type> {
    let shape = shape(c)?;
    Ok(Type::new(shape, dtype(c)?))
}

/// A shape: `[dims]`, after spaces.
pub(crate) fn shape(c: &mut Cursor<'_>) -> Result<Vec<Dim>> {
    c.lit("[")?;
    let mut shape = Vec::new();
    c.spaces();
    if !c.eat("]") {
        loop {
            shape.push(dim(c)?);
            c.spaces();
            if c.eat("]") {
                break;
            }
            if !c.eat(",") {
                return Err(c.expected("`,` or `]` in a shape"));
            }
        }
    }
    Ok(shape)
}

/// A dimension as `Dim` prints it (`4096`, `seq`, `2*past+seq+1`), after spaces.
pub(crate) fn dim(c: &mut Cursor<'_>) -> Result<Dim> {
    c.spaces();
    let start = c.pos;
    let tok = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'+');
    if tok.is_empty() {
        return Err(c.expected("a dimension (like `4096`, `seq` or `past+seq`)"));
    }
    tok.parse::<Dim>().map_err(|e| c.error_at(start, e))
}

fn dtype(c: &mut Cursor<'_>) -> Result<DType> {
    c.spaces();
    let start = c.pos;
    let w = c.take_while(is_ident);
    Ok(match w {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::Bf16,
        "f8" => DType::F8,
        "i32" => DType::I32,
        _ => {
            let found = if w.is_empty() {
                c.found()
            } else {
                format!("`{w}`")
            };
            return Err(c.error_at(
                start,
                format!("expected an element type (f32, f16, bf16, f8 or i32), found {found}"),
            ));
        }
    })
}
