//! The syntax tree of a `.arch` file, with byte spans into the source and the comments
//! attached to the items and entries they belong to (so `archc fmt` can keep them).
//!
//! The AST is what the source says, nothing more: no defaults, no inheritance, no
//! evaluated expressions. `validate` turns it into a `Spec`.

/// A half-open byte range `start..end` into the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span that covers both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A word with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A `# ...` comment; `text` includes the `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// Comments and blank lines around an item or entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trivia {
    /// Whole-line comments just above the node (and comments found inside a value that
    /// has no other place for them, such as a list split over lines).
    pub leading: Vec<Comment>,
    /// A comment at the end of the node's last line.
    pub trailing: Option<Comment>,
    /// The source had at least one blank line before the node (or its leading comments).
    pub blank_before: bool,
}

/// A whole file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
    /// Comments after the last item.
    pub trailing_comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: ItemKind,
    pub trivia: Trivia,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// `model "name" { ... }`
    Model {
        keyword: Span,
        name: String,
        name_span: Span,
        body: Body,
    },
    /// `block [NAME [: PARENT]] { ... }`
    Block {
        keyword: Span,
        name: Option<Ident>,
        parent: Option<Ident>,
        body: Body,
    },
    /// `schedule { ... }`
    Schedule { keyword: Span, body: ScheduleBody },
}

/// `{ entries }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub entries: Vec<Entry>,
    /// A comment on the line of the opening brace.
    pub open_comment: Option<Comment>,
    /// Comments after the last entry, before the closing brace.
    pub closing_comments: Vec<Comment>,
    pub span: Span,
}

impl Body {
    /// Whether any comment is attached anywhere in this body (fmt keeps such bodies on
    /// several lines).
    pub fn has_comments(&self) -> bool {
        self.open_comment.is_some()
            || !self.closing_comments.is_empty()
            || self.entries.iter().any(|e| {
                !e.trivia.leading.is_empty()
                    || e.trivia.trailing.is_some()
                    || match &e.kind {
                        EntryKind::Section { body, .. } => body.has_comments(),
                        EntryKind::Assign { value, .. } => value.has_comments(),
                    }
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: EntryKind,
    pub trivia: Trivia,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// `a.b.c = value`
    Assign { path: Vec<Ident>, value: Value },
    /// `name { ... }` or `a.b { ... }`
    Section { path: Vec<Ident>, body: Body },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

impl Value {
    fn has_comments(&self) -> bool {
        match &self.kind {
            ValueKind::Tagged { body, .. } => body.has_comments(),
            ValueKind::List(items) => items.iter().any(Value::has_comments),
            _ => false,
        }
    }

    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            ValueKind::Number { raw, .. } => format!("the number `{raw}`"),
            ValueKind::Word(w) => format!("the word `{w}`"),
            ValueKind::Bool(b) => format!("`{b}`"),
            ValueKind::None => "`none`".to_string(),
            ValueKind::Str(_) => "a string".to_string(),
            ValueKind::List(_) => "a list".to_string(),
            ValueKind::Tagged { tag, .. } => format!("`{} {{ ... }}`", tag.name),
            ValueKind::Neg(_)
            | ValueKind::Binary { .. }
            | ValueKind::Call { .. }
            | ValueKind::Paren(_) => "an expression".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "**",
        }
    }
}

/// Values and expressions share one type: a bare word is either an enumeration value
/// or the name of a numeric field, and only validation knows which one is wanted.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// A number literal; `raw` is the text as written (fmt prints it unchanged).
    Number {
        value: f64,
        raw: String,
    },
    Word(String),
    Bool(bool),
    None,
    Str(String),
    List(Vec<Value>),
    /// `word { ... }`
    Tagged {
        tag: Ident,
        body: Body,
    },
    Neg(Box<Value>),
    Binary {
        op: BinOp,
        lhs: Box<Value>,
        rhs: Box<Value>,
    },
    /// `sqrt(x)`, `min(a, b)`, `max(a, b)`.
    Call {
        func: Ident,
        args: Vec<Value>,
    },
    /// Parentheses are kept so fmt prints them as written.
    Paren(Box<Value>),
}

/// `schedule { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleBody {
    pub entries: Vec<ScheduleEntry>,
    pub open_comment: Option<Comment>,
    pub closing_comments: Vec<Comment>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEntry {
    pub kind: ScheduleEntryKind,
    pub trivia: Trivia,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleEntryKind {
    /// `block = selector + selector ...`
    Rule {
        block: Ident,
        selectors: Vec<Selector>,
    },
    /// `repeat [a * 5, b]`
    Repeat(Vec<RepeatItem>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepeatItem {
    pub block: Ident,
    /// `a * 5`; `None` means once.
    pub count: Option<Int>,
    pub span: Span,
}

/// An integer literal of the schedule, with its text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int {
    /// `None` when the literal does not fit in a u64.
    pub value: Option<u64>,
    pub raw: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub kind: SelectorKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectorKind {
    First(Int),
    Last(Int),
    Every {
        step: Int,
        from: Option<Int>,
    },
    /// `layers [i, j, ...]`
    List(Vec<Int>),
    /// `layers A..B`, half-open.
    Range(Int, Int),
    Rest,
}
