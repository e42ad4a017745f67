//! Tables: the entries of a model or block after dotted paths are expanded, sections
//! merged and duplicates rejected; and the merge of a child block over its parent.

use crate::ast::{Body, EntryKind, Ident, Span, Value, ValueKind};
use crate::diagnostics::Diagnostic;
use std::collections::HashMap;

/// The entries of a section, in source order.
///
/// Keys are also indexed, so that building a table of n entries, and merging one over
/// another, takes time linear in n even for a hostile file with 100,000 keys.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// Read freely; change only through the methods, which keep `index` in step.
    pub entries: Vec<(String, Node)>,
    /// Where each key sits in `entries`.
    index: HashMap<String, usize>,
    /// Where the section was opened (its name, or the item header), for "missing field"
    /// errors.
    pub span: Span,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub key_span: Span,
    pub value: NodeValue,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeValue {
    Table(Table),
    /// `word { ... }`: the body is a table so dotted paths can reach into it.
    Tagged {
        tag: Ident,
        body: Table,
        span: Span,
    },
    Leaf(Value),
}

/// Mixer sections: giving one in a child block replaces the parent's.
pub(crate) const MIXERS: [&str; 4] = ["attention", "gated_deltanet", "kimi_delta", "short_conv"];
/// Feed-forward sections: likewise.
pub(crate) const FFNS: [&str; 2] = ["mlp", "moe"];

impl Table {
    pub fn new(span: Span) -> Table {
        Table {
            entries: Vec::new(),
            index: HashMap::new(),
            span,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        let i = *self.index.get(key)?;
        Some(&mut self.entries[i].1)
    }

    /// Appends a key the table does not have yet.
    fn push(&mut self, key: String, node: Node) {
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, node));
    }

    pub fn remove(&mut self, key: &str) {
        if self.index.remove(key).is_none() {
            return;
        }
        self.entries.retain(|(k, _)| k != key);
        for (i, (k, _)) in self.entries.iter().enumerate() {
            self.index.insert(k.clone(), i);
        }
    }

    /// Builds a table from a body; duplicate keys are reported.
    pub fn from_body(body: &Body, span: Span, diags: &mut Vec<Diagnostic>) -> Table {
        let mut table = Table::new(span);
        for entry in &body.entries {
            match &entry.kind {
                EntryKind::Assign { path, value } => {
                    let value = node_of_value(value, diags);
                    table.insert(path, value, diags);
                }
                EntryKind::Section { path, body } => {
                    let span = path.last().map_or(body.span, |i| i.span);
                    let value = NodeValue::Table(Table::from_body(body, span, diags));
                    table.insert(path, value, diags);
                }
            }
        }
        table
    }

    /// Inserts `value` at a dotted path, creating sections on the way.
    fn insert(&mut self, path: &[Ident], value: NodeValue, diags: &mut Vec<Diagnostic>) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            match self.get_mut(&first.name) {
                None => self.push(
                    first.name.clone(),
                    Node {
                        key_span: first.span,
                        value,
                    },
                ),
                Some(existing) => match (&mut existing.value, value) {
                    // A section repeated, or opened by a dotted path and then written
                    // out: merge, still rejecting keys given twice.
                    (NodeValue::Table(old), NodeValue::Table(new)) => old.absorb(new, diags),
                    _ => diags.push(duplicate(&first.name, first.span, existing.key_span)),
                },
            }
            return;
        }
        if self.get(&first.name).is_none() {
            self.push(
                first.name.clone(),
                Node {
                    key_span: first.span,
                    value: NodeValue::Table(Table::new(first.span)),
                },
            );
        }
        if let Some(node) = self.get_mut(&first.name) {
            match &mut node.value {
                NodeValue::Table(t) => t.insert(rest, value, diags),
                NodeValue::Tagged { body, .. } => body.insert(rest, value, diags),
                NodeValue::Leaf(v) => diags.push(
                    Diagnostic::error(
                        first.span,
                        format!("`{}` is a value here, not a section", first.name),
                    )
                    .label("cannot reach into a value")
                    .secondary(v.span, "given here"),
                ),
            }
        }
    }

    /// Merges a table from the same declaration (duplicates are errors).
    fn absorb(&mut self, other: Table, diags: &mut Vec<Diagnostic>) {
        for (key, node) in other.entries {
            let ident = Ident {
                name: key,
                span: node.key_span,
            };
            self.insert(std::slice::from_ref(&ident), node.value, diags);
        }
    }
}

fn duplicate(name: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::error(span, format!("`{name}` is given twice"))
        .label("given again here")
        .secondary(first, "first given here")
        .hint("remove one of them")
}

fn node_of_value(value: &Value, diags: &mut Vec<Diagnostic>) -> NodeValue {
    match &value.kind {
        ValueKind::Tagged { tag, body } => NodeValue::Tagged {
            tag: tag.clone(),
            body: Table::from_body(body, tag.span, diags),
            span: value.span,
        },
        _ => NodeValue::Leaf(value.clone()),
    }
}

/// Merges a child's own table over a copy of its parent's (resolved) table: sections
/// merge field by field, anything else replaces, and a mixer or feed-forward section
/// in the child replaces the parent's other kinds of that slot.
pub(crate) fn merge_block(base: &mut Table, over: Table) {
    for slot in [&MIXERS[..], &FFNS[..]] {
        if let Some(given) = slot.iter().find(|k| over.get(k).is_some()) {
            for other in slot.iter().filter(|k| *k != given) {
                base.remove(other);
            }
        }
    }
    merge(base, over);
}

fn merge(base: &mut Table, over: Table) {
    for (key, node) in over.entries {
        match base.get_mut(&key) {
            None => base.push(key, node),
            Some(old) => match (&mut old.value, node.value) {
                (NodeValue::Table(b), NodeValue::Table(o)) => merge(b, o),
                (NodeValue::Tagged { body, .. }, NodeValue::Table(o)) => merge(body, o),
                (_, value) => {
                    old.value = value;
                    old.key_span = node.key_span;
                }
            },
        }
    }
}
