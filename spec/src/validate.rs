//! AST to `Spec`: block inheritance, defaults, expression evaluation, schedule
//! resolution and every consistency check, reporting all errors of a file at once.
//!
//! The work happens in three steps: each item's entries become a `Table` (`tree`),
//! child blocks are merged over their parents (`tree::merge`), and typed readers
//! (`model`, `schedule`) pull the `Spec` fields out of the tables with their defaults.

mod attention;
mod eval;
mod ffn;
mod limits;
mod model;
mod schedule;
mod tree;

use crate::ast::{File, ItemKind, Span};
use crate::diagnostics::Diagnostic;
use crate::spec::Spec;

/// Parses and validates a file. `file_name` is only used by callers when rendering;
/// diagnostics carry byte spans into `src`.
pub fn check_source(file_name: &str, src: &str) -> Result<Spec, Vec<Diagnostic>> {
    let _ = file_name;
    let file = crate::parse::parse(src)?;
    validate(&file)
}

/// Validates a parsed file.
pub fn validate(file: &File) -> Result<Spec, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let spec = model::build(file, &mut diags);
    let errors = diags.iter().any(Diagnostic::is_error);
    match spec {
        Some(spec) if !errors => {
            // The checks above carry spans; this one guards what they cannot see (tensor
            // and model totals) and anything they missed, at the model's header.
            limits::check_spec(&spec).map_err(|problems| {
                let at = file
                    .items
                    .iter()
                    .find(|i| matches!(i.kind, ItemKind::Model { .. }))
                    .map_or(Span::default(), |i| item_header(&i.kind));
                problems
                    .into_iter()
                    .map(|p| Diagnostic::error(at, p).label("this model"))
                    .collect::<Vec<_>>()
            })?;
            Ok(spec)
        }
        _ => {
            if diags.is_empty() {
                diags.push(Diagnostic::error(
                    Span::default(),
                    "the file does not describe a model",
                ));
            }
            diags.sort_by_key(|d| (d.primary.span.start, d.primary.span.end));
            // A block inherits its parent's entries, so an error in an inherited entry
            // is found once per block; report it once.
            diags.dedup_by(|a, b| a == b);
            crate::diagnostics::cap(&mut diags);
            Err(diags)
        }
    }
}

/// The span of an item's header, for errors about the item as a whole.
pub(crate) fn item_header(kind: &ItemKind) -> Span {
    match kind {
        ItemKind::Model {
            keyword, name_span, ..
        } => keyword.to(*name_span),
        ItemKind::Block {
            keyword,
            name,
            parent,
            ..
        } => {
            let mut s = *keyword;
            if let Some(n) = name {
                s = s.to(n.span);
            }
            if let Some(p) = parent {
                s = s.to(p.span);
            }
            s
        }
        ItemKind::Schedule { keyword, .. } => *keyword,
    }
}

pub use eval::{MAX_EVAL_DEPTH, MAX_EVAL_STEPS};
pub use limits::*;
pub use model::{norm_word, DEFAULT_CONTEXT, DEFAULT_NORM};
