//! The one analysis of a program document that every executor consumes (as naga's
//! `valid::ModuleInfo` serves all of its backends): it checks the program contract and
//! says, for every buffer, what owns its memory, when launches use it and whether it must
//! be zeroed; for every kernel, whether it runs in parallel; and which values a call
//! carries to the next (the KV cache and recurrent state).
//!
//! **The contract** (checked here, relied on by the CPU and CUDA executors):
//! - every launch names an existing kernel and binds one buffer per non-scratch parameter,
//!   of the parameter's element type, and none to a scratch parameter;
//! - no launch writes a parameter or an input;
//! - token ids and positions are i32, the logits f32; there is at most one logits output;
//! - every carried input (`Io::Kv`, `Io::State`) has exactly one output: an
//!   `Output` of the same `Io` in a buffer of its own, or (KV caches only) an
//!   `Append` that grows the input's memory in place (see `BufferKind::Append`);
//! - aliases end at a non-alias buffer of the same element type (no cycles).

use super::program::ProgramDoc;
use super::{Access, BufferKind, Elem};
use crate::ir::Io;
use std::fmt;

/// A broken rule of the program contract, naming the buffer or launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractError {
    /// A buffer's role or type is wrong.
    Buffer { buffer: String, message: String },
    /// A launch's bindings are wrong.
    Launch {
        launch: usize,
        kernel: String,
        message: String,
    },
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::Buffer { buffer, message } => write!(f, "buffer `{buffer}`: {message}"),
            ContractError::Launch {
                launch,
                kernel,
                message,
            } => write!(f, "launch {launch} (kernel `{kernel}`): {message}"),
        }
    }
}

impl std::error::Error for ContractError {}

/// A value carried from one call to the next: where the program reads it and where it
/// leaves the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub io: Io,
    /// The input buffer (`[past, ...]` for a KV cache, the fixed shape for a state).
    pub input: usize,
    /// The output buffer.
    pub output: usize,
    /// The output is an `Append` sharing the input's memory (grown in place); otherwise it
    /// is a buffer of its own that replaces the input after the call.
    pub in_place: bool,
}

/// What the executors need to know of a program, computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramInfo {
    /// Per buffer: the buffer that owns its memory (itself unless an alias).
    pub roots: Vec<usize>,
    /// Per kernel: whether it has a parallel loop.
    pub parallel: Vec<bool>,
    /// Per kernel: whether it reads `past`.
    pub uses_past: Vec<bool>,
    /// Per root buffer: the first and last launch that use it (through any alias).
    pub uses: Vec<Option<(usize, usize)>>,
    /// Root temps and outputs (not carried values) that some launch reads before any
    /// launch writes them, in order of that first read: an executor zeroes them before
    /// that launch so that what is read is deterministic.
    pub read_before_write: Vec<usize>,
    /// The carried values, in input order.
    pub carried: Vec<Carried>,
    /// The token ids, positions and logits buffers (a model's program has all three; the
    /// contract allows programs without them, such as one kernel under test).
    pub tokens: Option<usize>,
    pub positions: Option<usize>,
    pub logits: Option<usize>,
}

impl ProgramInfo {
    /// The role of buffer `b` after following aliases.
    pub fn root_kind<'a>(&self, doc: &'a ProgramDoc, b: usize) -> &'a BufferKind {
        &doc.buffers[self.roots[b]].kind
    }
}

/// Checks the contract of `doc` and computes its [`ProgramInfo`].
pub fn analyze(doc: &ProgramDoc) -> Result<ProgramInfo, ContractError> {
    let n = doc.buffers.len();
    let buf_err = |b: usize, message: String| ContractError::Buffer {
        buffer: doc.buffers[b].name.clone(),
        message,
    };
    // Aliases end at a non-alias of the same element type.
    let mut roots = Vec::with_capacity(n);
    for (i, b) in doc.buffers.iter().enumerate() {
        let mut r = i;
        let mut steps = 0;
        while let BufferKind::Alias { of } = doc.buffers[r].kind {
            if of >= n || steps > n {
                return Err(buf_err(i, "its alias chain is broken or a cycle".into()));
            }
            r = of;
            steps += 1;
        }
        if doc.buffers[r].elem != b.elem {
            return Err(buf_err(
                i,
                format!(
                    "an alias of {} viewing `{}` of {}",
                    b.elem.as_str(),
                    doc.buffers[r].name,
                    doc.buffers[r].elem.as_str()
                ),
            ));
        }
        roots.push(r);
    }

    let (mut tokens, mut positions, mut logits) = (None, None, None);
    let mut carried = Vec::new();
    for (i, b) in doc.buffers.iter().enumerate() {
        let want = |e: Elem, what: &str| {
            if b.elem == e {
                Ok(())
            } else {
                Err(buf_err(
                    i,
                    format!("{what} must be {}, found {}", e.as_str(), b.elem.as_str()),
                ))
            }
        };
        match &b.kind {
            BufferKind::Input(Io::Tokens) => {
                want(Elem::I32, "token ids")?;
                tokens = Some(i);
            }
            BufferKind::Input(Io::Positions) => {
                want(Elem::I32, "positions")?;
                positions = Some(i);
            }
            BufferKind::Output(Io::Logits) => {
                want(Elem::F32, "the logits")?;
                if logits.replace(i).is_some() {
                    return Err(buf_err(i, "a second logits output".into()));
                }
            }
            BufferKind::Input(io) if io.is_carried() => {
                let outs: Vec<(usize, bool)> = doc
                    .buffers
                    .iter()
                    .enumerate()
                    .filter_map(|(o, ob)| match &ob.kind {
                        BufferKind::Output(x) if x == io => Some((o, false)),
                        BufferKind::Append { to } if *to == i => Some((o, true)),
                        _ => None,
                    })
                    .collect();
                let [(output, in_place)] = outs[..] else {
                    return Err(buf_err(
                        i,
                        format!(
                            "a carried input needs exactly one output (a copy or an in-place append), found {}",
                            outs.len()
                        ),
                    ));
                };
                if in_place && !matches!(io, Io::Kv { .. }) {
                    return Err(buf_err(i, "only a KV cache grows in place".into()));
                }
                carried.push(Carried {
                    io: io.clone(),
                    input: i,
                    output,
                    in_place,
                });
            }
            BufferKind::Append { to } => match doc.buffers.get(*to).map(|t| &t.kind) {
                Some(BufferKind::Input(Io::Kv { .. })) => {}
                _ => {
                    return Err(buf_err(
                        i,
                        format!("appends to buffer {to}, which is not a KV-cache input"),
                    ))
                }
            },
            _ => {}
        }
    }

    let mut written = vec![false; n];
    let mut uses: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut read_before_write = Vec::new();
    for (li, l) in doc.launches.iter().enumerate() {
        let k = doc
            .kernels
            .get(l.kernel)
            .ok_or_else(|| ContractError::Launch {
                launch: li,
                kernel: format!("#{}", l.kernel),
                message: "no such kernel".into(),
            })?;
        let err = |message: String| ContractError::Launch {
            launch: li,
            kernel: k.name.clone(),
            message,
        };
        if l.bufs.len() != k.params.len() {
            return Err(err(format!(
                "binds {} buffers, the kernel takes {}",
                l.bufs.len(),
                k.params.len()
            )));
        }
        for (pi, (slot, kb)) in l.bufs.iter().zip(&k.params).enumerate() {
            let b = match (slot, kb.access) {
                (None, Access::Scratch { .. }) => continue,
                (None, _) => return Err(err(format!("parameter {pi} (`{}`) is unbound", kb.name))),
                (Some(_), Access::Scratch { .. }) => {
                    return Err(err(format!(
                        "a buffer is bound to scratch parameter {pi} (`{}`)",
                        kb.name
                    )))
                }
                (Some(b), _) => *b,
            };
            let buf = doc
                .buffers
                .get(b)
                .ok_or_else(|| err(format!("parameter {pi}: buffer {b} does not exist")))?;
            if buf.elem != kb.elem {
                return Err(err(format!(
                    "parameter {pi} (`{}`) is {}, bound to `{}` of {}",
                    kb.name,
                    kb.elem.as_str(),
                    buf.name,
                    buf.elem.as_str()
                )));
            }
            let r = roots[b];
            let writes = matches!(kb.access, Access::Write | Access::ReadWrite);
            let reads = matches!(kb.access, Access::Read | Access::ReadWrite);
            if writes
                && matches!(
                    doc.buffers[r].kind,
                    BufferKind::Param | BufferKind::Input(_)
                )
            {
                return Err(err(format!(
                    "parameter {pi} (`{}`) writes `{}`, which is read-only",
                    kb.name, doc.buffers[r].name
                )));
            }
            // Carried values hold the model's state; they are never cleared.
            let zeroable = matches!(
                doc.buffers[r].kind,
                BufferKind::Temp | BufferKind::Output(Io::Logits | Io::Value { .. })
            );
            if reads && zeroable && !written[r] && !read_before_write.contains(&r) {
                read_before_write.push(r);
            }
            if writes {
                written[r] = true;
            }
            uses[r] = Some(uses[r].map_or((li, li), |(f, _)| (f, li)));
        }
    }
    Ok(ProgramInfo {
        roots,
        parallel: doc.kernels.iter().map(|k| k.parallel).collect(),
        uses_past: doc.kernels.iter().map(|k| k.uses_past).collect(),
        uses,
        read_before_write,
        carried,
        tokens,
        positions,
        logits,
    })
}
