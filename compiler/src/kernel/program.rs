//! The program contract as a document: what `archc emit --stage program` prints and what
//! every executor (the CPU and CUDA executors, ahead-of-time binaries) reads. It is the
//! kernel program without the kernel bodies: buffers with their typed roles, kernels by
//! content hash with their parameters, the launch order, and the alias and in-place-append
//! contracts (carried by the buffer roles; see [`BufferKind`]).
//!
//! The document is versioned ([`FORMAT`], [`VERSION`]) and deterministic: the same
//! program gives the same bytes, so it can be snapshotted and diffed.

use super::{Access, Buffer, KBuf, Kernel, Launch, LoopKind, Program, Stmt};
use super::{BufferKind, Expr};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The `format` field of every program document.
pub const FORMAT: &str = "archc-program";
/// The version of the document's layout; a reader refuses any other.
pub const VERSION: u32 = 1;

/// A kernel program without its kernel bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramDoc {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<KernelDoc>,
    pub launches: Vec<Launch>,
}

/// What an executor needs to know of a kernel besides its machine code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelDoc {
    /// The kernel's name in the program (`linear_3fa2c901`), unique.
    pub name: String,
    /// 64-bit FNV-1a of the kernel's text with its name and parameter names left out, as
    /// 16 hex digits: equal kernels have equal hashes, on every machine.
    pub hash: String,
    /// The parameters in calling order.
    pub params: Vec<KBuf>,
    /// Whether the kernel has a parallel loop (else one thread runs it).
    pub parallel: bool,
    /// Whether the kernel reads the `past` size (else its work does not depend on it).
    pub uses_past: bool,
}

/// 64-bit FNV-1a: a stable hash with no dependency and no per-process seed.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The content hash of a kernel: its text with the name and the parameter names replaced
/// by `kind` and `b0, b1, ...`, so that kernels differing only in names hash alike.
pub fn content_text(k: &Kernel, kind: &str) -> String {
    let mut anon = k.clone();
    anon.name = kind.to_string();
    for (i, b) in anon.bufs.iter_mut().enumerate() {
        b.name = format!("b{i}");
    }
    anon.to_string()
}

/// See [`content_text`]; the kind is the part of the name before its hash.
pub fn content_hash(k: &Kernel) -> u64 {
    fnv1a64(&content_text(k, kind_of(&k.name)))
}

/// `linear` of `linear_3fa2c901` (names without a hash suffix are their own kind).
fn kind_of(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((kind, hash))
            if !kind.is_empty()
                && hash.len() == 8
                && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            kind
        }
        _ => name,
    }
}

impl KernelDoc {
    pub fn of(k: &Kernel) -> KernelDoc {
        KernelDoc {
            name: k.name.clone(),
            hash: format!("{:016x}", content_hash(k)),
            params: k.bufs.clone(),
            parallel: has_parallel(&k.body),
            uses_past: body_uses_past(&k.body),
        }
    }
}

impl Program {
    /// The program's document (see the module docs).
    pub fn doc(&self) -> ProgramDoc {
        ProgramDoc {
            format: FORMAT.to_string(),
            version: VERSION,
            name: self.name.clone(),
            buffers: self.buffers.clone(),
            kernels: self.kernels.iter().map(KernelDoc::of).collect(),
            launches: self.launches.clone(),
        }
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocError {
    /// Not JSON of the document's shape.
    Json(String),
    /// Another format or version.
    Version { format: String, version: u32 },
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Json(e) => write!(f, "not a program document: {e}"),
            DocError::Version { format, version } => write!(
                f,
                "program document `{format}` version {version}; this build reads `{FORMAT}` version {VERSION}"
            ),
        }
    }
}

impl std::error::Error for DocError {}

impl ProgramDoc {
    /// The document as pretty-printed JSON with a final newline (deterministic).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serialising plain data cannot fail; say so if it ever does.
            format!("{{\"error\": \"{e}\"}}")
        });
        s.push('\n');
        s
    }

    /// Reads a document written by [`ProgramDoc::to_json`], refusing other versions.
    pub fn from_json(text: &str) -> Result<ProgramDoc, DocError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_str(text).map_err(|e| DocError::Json(e.to_string()))?;
        if head.format != FORMAT || head.version != VERSION {
            return Err(DocError::Version {
                format: head.format,
                version: head.version,
            });
        }
        serde_json::from_str(text).map_err(|e| DocError::Json(e.to_string()))
    }

    /// A short human summary: one line per buffer role and count (for logs).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let count =
            |f: &dyn Fn(&BufferKind) -> bool| self.buffers.iter().filter(|b| f(&b.kind)).count();
        let _ = write!(
            s,
            "{}: {} buffers ({} params, {} inputs, {} outputs, {} temps), {} kernels, {} launches",
            self.name,
            self.buffers.len(),
            count(&|k| matches!(k, BufferKind::Param)),
            count(&|k| matches!(k, BufferKind::Input(_))),
            count(&|k| matches!(k, BufferKind::Output(_) | BufferKind::Append { .. })),
            count(&|k| matches!(k, BufferKind::Temp)),
            self.kernels.len(),
            self.launches.len()
        );
        s
    }
}

/// Whether a kernel body has a `Parallel` loop.
pub fn has_parallel(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Loop { kind, body, .. } => *kind == LoopKind::Parallel || has_parallel(body),
        Stmt::If { then, els, .. } => has_parallel(then) || has_parallel(els),
        _ => false,
    })
}

fn expr_uses_past(e: &Expr) -> bool {
    match e {
        Expr::Dim(d) => *d == super::DimVar::Past,
        Expr::Load { index, .. } => expr_uses_past(index),
        Expr::Un(_, a) => expr_uses_past(a),
        Expr::Bin(_, a, b) => expr_uses_past(a) || expr_uses_past(b),
        Expr::Select(c, a, b) => expr_uses_past(c) || expr_uses_past(a) || expr_uses_past(b),
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Var(_) => false,
    }
}

/// Whether a kernel body reads `past` anywhere.
pub fn body_uses_past(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Let { value, .. } | Stmt::Set { value, .. } => expr_uses_past(value),
        Stmt::Local { init, .. } => expr_uses_past(init),
        Stmt::Store { index, value, .. } => expr_uses_past(index) || expr_uses_past(value),
        Stmt::Loop {
            start, end, body, ..
        } => expr_uses_past(start) || expr_uses_past(end) || body_uses_past(body),
        Stmt::If { cond, then, els } => {
            expr_uses_past(cond) || body_uses_past(then) || body_uses_past(els)
        }
        Stmt::Tile(t) => {
            let outs = match &t.out {
                super::TileOut::Sums(_) => &[][..],
                super::TileOut::Store { bases, .. } => bases.as_slice(),
            };
            [&t.start, &t.end]
                .into_iter()
                .chain(t.rows.iter().chain(&t.cols).map(|r| &r.base))
                .chain(outs)
                .any(expr_uses_past)
        }
    })
}

/// The scratch parameters of a kernel are never bound; every other one is.
pub fn is_bound(b: &KBuf) -> bool {
    !matches!(b.access, Access::Scratch { .. })
}
