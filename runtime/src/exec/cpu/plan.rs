//! The memory plan of one kernel program: which storage backs each buffer (a checkpoint
//! tensor, a runtime input, the KV cache, or a slot in the activation arena), checked once
//! when the program is loaded, and the byte layout of the arena for a given `(seq, past)`.
//!
//! Temps, `tokens`, `positions` and `logits` live in one 64-byte-aligned arena that is
//! laid out again for every call (cheap: one pass over the buffers) and reallocated only
//! when it must grow, with headroom, so token-by-token decode allocates O(log n) times.
//! Every temp has its own slot for now; packing temps whose lifetimes do not overlap into
//! the same bytes is a later optimisation that only changes `layout`.

use super::aligned::align_up;
use archc_compiler::ir::Dim;
use archc_compiler::kernel::{Access, BufferKind, Elem, Program};

/// What backs a program buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// A model parameter (index into the executor's parameter table).
    Param(usize),
    /// Token ids, `[seq]` i32.
    Tokens,
    /// Absolute positions `past..past+seq`, `[seq]` i32.
    Positions,
    /// The KV cache entry of this name as the program reads it (`[past, ...]`).
    CacheIn(String),
    /// The grown KV cache entry of this name (`[past+seq, ...]`).
    CacheOut(String),
    /// The logits, `[seq, vocab]`.
    Logits,
    /// An arena slot: intermediate activations and outputs nobody reads back.
    Arena,
    /// The same memory as this (non-alias) buffer.
    Alias(usize),
}

/// A loaded program's buffers and what the launches need, checked for consistency.
#[derive(Debug)]
pub struct Plan {
    pub roles: Vec<Role>,
    /// Arena buffers that some kernel reads before any kernel writes them; zeroed before
    /// every call so that such a read is deterministic.
    pub zero_first: Vec<usize>,
    /// Per kernel: whether it has a `Parallel` loop (otherwise it runs on one thread).
    pub parallel: Vec<bool>,
}

/// Byte sizes and arena offsets of every buffer for one `(seq, past)`.
#[derive(Debug, Default)]
pub struct Layout {
    pub bytes: Vec<usize>,
    /// Offset into the arena for `Role::Arena`, `Tokens`, `Positions` and `Logits`.
    pub offset: Vec<usize>,
    pub arena_bytes: usize,
}

/// Follows alias links to the buffer that owns the memory, refusing cycles.
fn root(program: &Program, mut b: usize) -> Result<usize, String> {
    for _ in 0..=program.buffers.len() {
        match program.buffers.get(b).map(|x| &x.kind) {
            Some(BufferKind::Alias { of }) => b = *of,
            Some(_) => return Ok(b),
            None => return Err(format!("alias refers to buffer {b}, which does not exist")),
        }
    }
    Err(format!(
        "buffer `{}` is an alias cycle",
        program.buffers[b].name
    ))
}

impl Plan {
    /// Checks the program (launch arity, element types, accesses, aliases) and assigns a
    /// role to every buffer. `param` resolves a parameter buffer to its table index.
    pub fn new(
        program: &Program,
        mut param: impl FnMut(usize) -> Result<usize, String>,
    ) -> Result<Plan, String> {
        let mut roles = Vec::with_capacity(program.buffers.len());
        for (i, b) in program.buffers.iter().enumerate() {
            let role = match &b.kind {
                BufferKind::Param => Role::Param(param(i)?),
                BufferKind::Input => match b.name.as_str() {
                    "tokens" => Role::Tokens,
                    "positions" => Role::Positions,
                    n if n.starts_with("cache.") => Role::CacheIn(n.to_string()),
                    n => return Err(format!("unknown program input `{n}`")),
                },
                BufferKind::Output => match b.name.as_str() {
                    "logits" => Role::Logits,
                    n if n.starts_with("cache.") => Role::CacheOut(n.to_string()),
                    _ => Role::Arena,
                },
                BufferKind::Temp => Role::Arena,
                BufferKind::Alias { .. } => Role::Alias(root(program, i)?),
            };
            let want = match role {
                Role::Tokens | Role::Positions => Some(Elem::I32),
                Role::Logits => Some(Elem::F32),
                _ => None,
            };
            if let Some(e) = want {
                if b.elem != e {
                    return Err(format!(
                        "buffer `{}` has element type {}, expected {}",
                        b.name,
                        b.elem.as_str(),
                        e.as_str()
                    ));
                }
            }
            roles.push(role);
        }
        for r in &roles {
            if let Role::CacheIn(n) = r {
                if !roles.contains(&Role::CacheOut(n.clone())) {
                    return Err(format!("cache input `{n}` has no matching output"));
                }
            }
        }
        if !roles.contains(&Role::Logits) {
            return Err("the program has no `logits` output".into());
        }

        let mut written = vec![false; program.buffers.len()];
        let mut zero_first = Vec::new();
        for (li, l) in program.launches.iter().enumerate() {
            let k = program.kernels.get(l.kernel).ok_or_else(|| {
                format!(
                    "launch {li} calls kernel {}, which does not exist",
                    l.kernel
                )
            })?;
            if l.bufs.len() != k.bufs.len() {
                return Err(format!(
                    "launch {li} of `{}` binds {} buffers, the kernel takes {}",
                    k.name,
                    l.bufs.len(),
                    k.bufs.len()
                ));
            }
            for (pi, (slot, kb)) in l.bufs.iter().zip(&k.bufs).enumerate() {
                let here = || {
                    format!(
                        "launch {li} of `{}`, parameter {pi} (`{}`)",
                        k.name, kb.name
                    )
                };
                match (slot, kb.access) {
                    (None, Access::Scratch { .. }) => continue,
                    (None, _) => return Err(format!("{}: no buffer bound", here())),
                    (Some(_), Access::Scratch { .. }) => {
                        return Err(format!(
                            "{}: a buffer is bound to a scratch parameter",
                            here()
                        ))
                    }
                    (Some(_), _) => {}
                }
                let b = slot.unwrap_or(usize::MAX);
                let buf = program
                    .buffers
                    .get(b)
                    .ok_or_else(|| format!("{}: buffer {b} does not exist", here()))?;
                if buf.elem != kb.elem {
                    return Err(format!(
                        "{}: buffer `{}` is {}, the kernel declares {}",
                        here(),
                        buf.name,
                        buf.elem.as_str(),
                        kb.elem.as_str()
                    ));
                }
                let r = match roles[b] {
                    Role::Alias(r) => r,
                    _ => b,
                };
                let writes = matches!(kb.access, Access::Write | Access::ReadWrite);
                let reads = matches!(kb.access, Access::Read | Access::ReadWrite);
                if writes && matches!(roles[r], Role::Param(_) | Role::CacheIn(_)) {
                    return Err(format!(
                        "{}: writes `{}`, which is read-only",
                        here(),
                        program.buffers[r].name
                    ));
                }
                if reads && !written[r] && roles[r] == Role::Arena && !zero_first.contains(&r) {
                    zero_first.push(r);
                }
                if writes {
                    written[r] = true;
                }
            }
        }
        let parallel = program
            .kernels
            .iter()
            .map(|k| has_parallel(&k.body))
            .collect();
        Ok(Plan {
            roles,
            zero_first,
            parallel,
        })
    }

    /// Sizes and arena offsets for `(seq, past)`; errors on overflow or an alias larger
    /// than the buffer it views.
    pub fn layout(
        &self,
        program: &Program,
        seq: usize,
        past: usize,
        out: &mut Layout,
    ) -> Result<(), String> {
        let n = program.buffers.len();
        out.bytes.clear();
        out.offset.clear();
        out.bytes.reserve(n);
        out.offset.reserve(n);
        let mut cursor = 0usize;
        for (b, role) in program.buffers.iter().zip(&self.roles) {
            let bytes = buffer_bytes(&b.shape, b.elem, seq, past).ok_or_else(|| {
                format!(
                    "buffer `{}`: size overflows for seq {seq}, past {past}",
                    b.name
                )
            })?;
            out.bytes.push(bytes);
            let in_arena = matches!(
                role,
                Role::Arena | Role::Tokens | Role::Positions | Role::Logits
            );
            if in_arena {
                out.offset.push(cursor);
                cursor = align_up(bytes)
                    .and_then(|a| cursor.checked_add(a))
                    .ok_or_else(|| "activation arena size overflows".to_string())?;
            } else {
                out.offset.push(0);
            }
        }
        for (i, role) in self.roles.iter().enumerate() {
            if let Role::Alias(r) = role {
                if out.bytes[i] > out.bytes[*r] {
                    return Err(format!(
                        "alias `{}` ({} bytes) is larger than `{}` ({} bytes)",
                        program.buffers[i].name,
                        out.bytes[i],
                        program.buffers[*r].name,
                        out.bytes[*r]
                    ));
                }
            }
        }
        out.arena_bytes = cursor;
        Ok(())
    }
}

/// Bytes of a buffer of `shape` and `elem` for `(seq, past)`, `None` on overflow.
pub fn buffer_bytes(shape: &[Dim], elem: Elem, seq: usize, past: usize) -> Option<usize> {
    let mut n = elem.bytes();
    for d in shape {
        let v = usize::try_from(d.konst)
            .ok()?
            .checked_add(usize::try_from(d.seq).ok()?.checked_mul(seq)?)?
            .checked_add(usize::try_from(d.past).ok()?.checked_mul(past)?)?;
        n = n.checked_mul(v)?;
    }
    Some(n)
}

fn has_parallel(body: &[archc_compiler::kernel::Stmt]) -> bool {
    use archc_compiler::kernel::{LoopKind, Stmt};
    body.iter().any(|s| match s {
        Stmt::Loop { kind, body, .. } => *kind == LoopKind::Parallel || has_parallel(body),
        Stmt::If { then, els, .. } => has_parallel(then) || has_parallel(els),
        _ => false,
    })
}
