//! The memory plan of one kernel program: which storage backs each buffer (a checkpoint
//! tensor, a runtime input, the KV cache, or a range of the activation arena), checked once
//! when the program is loaded, and the byte layout of the arena for a given `(seq, past)`.
//!
//! Temps, `tokens`, `positions` and `logits` live in one 64-byte-aligned arena. Temps whose
//! lifetimes do not overlap share bytes: a temp lives from the first launch that touches it
//! to the last one (an alias's uses count as its root's), and `layout` places the temps,
//! largest first, at the lowest 64-byte-aligned offset free of every temp live at the same
//! time. Inputs and outputs live for the whole call and are never shared. Sharing keeps the
//! working set small (it stays in cache, and fresh pages are not faulted in and cleared by
//! the kernel), and the caller keeps the arena between calls, growing it only.
//! The lifetimes are computed once; the offsets again for every call, since sizes depend on
//! `(seq, past)` (one pass over each temp's few overlapping neighbours).

use super::aligned::align_up;
use crate::exec::ExecError;
use archc_compiler::ir::{Dim, Io};
use archc_compiler::kernel::analysis::ProgramInfo;
use archc_compiler::kernel::program::ProgramDoc;
use archc_compiler::kernel::{Buffer, BufferKind, Elem};

/// What backs a program buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// A model parameter (index into the executor's parameter table).
    Param(usize),
    /// Token ids, `[seq]` i32.
    Tokens,
    /// Absolute positions `past..past+seq`, `[seq]` i32.
    Positions,
    /// A carried value (KV cache or recurrent state) as the program reads it.
    CarriedIn(Io),
    /// The new value of a carried input in a second buffer, swapped in after the call.
    CarriedOut(Io),
    /// The grown KV cache in place (`BufferKind::Append`): the same memory as its
    /// `CarriedIn`, with room for the new rows, which the kernels write.
    CarriedGrow(Io),
    /// The logits, `[seq, vocab]`.
    Logits,
    /// An arena slot: intermediate activations and outputs nobody reads back.
    Arena,
    /// The same memory as this (non-alias) buffer.
    Alias(usize),
}

/// A loaded program's buffers and what the launches need, from the program's analysis.
#[derive(Debug)]
pub struct Plan {
    pub roles: Vec<Role>,
    /// Arena buffers that some kernel reads before any kernel writes them, to be zeroed
    /// before every call so that such a read is deterministic. Their lifetimes start at
    /// the first launch, so nothing else uses their bytes before it. Empty after
    /// `zero_at_first_use`, which moves them to `zero_before`.
    pub zero_first: Vec<usize>,
    /// Per kernel: whether it has a `Parallel` loop (otherwise it runs on one thread).
    pub parallel: Vec<bool>,
    /// Per launch: the read-before-written buffers to zero just before it (filled by
    /// `zero_at_first_use`).
    zero_at: Vec<Vec<usize>>,
    /// Per buffer: the launches `(first, last)` between which a shareable arena temp is
    /// live; `None` for buffers that do not share memory (non-arena, inputs, outputs,
    /// aliases, and temps no launch uses).
    live: Vec<Option<(usize, usize)>>,
    /// Per shareable temp: the other shareable temps live at the same time as it.
    conflicts: Vec<Vec<usize>>,
    /// Per buffer: the first launch that uses it (through any alias), `usize::MAX` if none.
    first_use: Vec<usize>,
}

/// Byte sizes and arena offsets of every buffer for one `(seq, past)`.
#[derive(Debug, Default)]
pub struct Layout {
    pub bytes: Vec<usize>,
    /// Offset into the arena for `Role::Arena`, `Tokens`, `Positions` and `Logits`.
    pub offset: Vec<usize>,
    pub arena_bytes: usize,
    /// Scratch of the allocator, kept so that a call does not allocate: the temps in
    /// placement order, whether each is placed, and the occupied ranges next to one temp.
    order: Vec<usize>,
    placed: Vec<bool>,
    ranges: Vec<(usize, usize)>,
}

impl Plan {
    /// Assigns a role to every buffer of a program from its analysis (which checked the
    /// program contract). `param` resolves a parameter buffer to its table index.
    pub fn new(
        doc: &ProgramDoc,
        info: &ProgramInfo,
        mut param: impl FnMut(usize) -> Result<usize, ExecError>,
    ) -> Result<Plan, ExecError> {
        let mut roles = Vec::with_capacity(doc.buffers.len());
        for (i, b) in doc.buffers.iter().enumerate() {
            let role = match &b.kind {
                BufferKind::Param => Role::Param(param(i)?),
                BufferKind::Input(Io::Tokens) => Role::Tokens,
                BufferKind::Input(Io::Positions) => Role::Positions,
                BufferKind::Input(io) if io.is_carried() => Role::CarriedIn(io.clone()),
                BufferKind::Input(io) => {
                    return Err(ExecError::Program(format!(
                        "input `{io}` is not one a model run provides"
                    )))
                }
                BufferKind::Output(Io::Logits) => Role::Logits,
                BufferKind::Output(io) if io.is_carried() => Role::CarriedOut(io.clone()),
                BufferKind::Output(_) | BufferKind::Temp => Role::Arena,
                BufferKind::Alias { .. } => Role::Alias(info.roots[i]),
                BufferKind::Append { to } => match &doc.buffers[*to].kind {
                    BufferKind::Input(io) => Role::CarriedGrow(io.clone()),
                    _ => {
                        return Err(ExecError::Program(format!(
                            "`{}` appends to a buffer that is not an input",
                            b.name
                        )))
                    }
                },
            };
            roles.push(role);
        }
        let zero_first: Vec<usize> = info
            .read_before_write
            .iter()
            .copied()
            .filter(|&r| roles[r] == Role::Arena)
            .collect();
        let first_use = info
            .uses
            .iter()
            .map(|u| u.map_or(usize::MAX, |(f, _)| f))
            .collect();
        // Only temps share memory; outputs nobody reads back stay apart like every other
        // output, so a caller may still look at them after the call.
        let mut live: Vec<Option<(usize, usize)>> = doc
            .buffers
            .iter()
            .zip(&roles)
            .zip(&info.uses)
            .map(|((b, role), u)| {
                (*role == Role::Arena && b.kind == BufferKind::Temp)
                    .then_some(*u)
                    .flatten()
            })
            .collect();
        for &b in &zero_first {
            if let Some((_, last)) = live[b] {
                live[b] = Some((0, last));
            }
        }
        let conflicts = conflicts(&live);
        Ok(Plan {
            roles,
            zero_first,
            parallel: info.parallel.clone(),
            zero_at: vec![Vec::new(); doc.launches.len()],
            live,
            conflicts,
            first_use,
        })
    }

    /// Switches read-before-written buffers from being zeroed at the start of the call
    /// (`zero_first`) to being zeroed just before the launch that first uses them
    /// (`zero_before`), which lets their bytes serve other temps before that launch. A
    /// caller that calls this must zero `zero_before(launch)` before every launch.
    pub fn zero_at_first_use(&mut self) {
        for b in std::mem::take(&mut self.zero_first) {
            match self.live[b] {
                Some((_, last)) => {
                    let first = self.first_use[b];
                    self.live[b] = Some((first, last));
                    self.zero_at[first].push(b);
                }
                // A buffer that does not share memory may be zeroed at any time before
                // its first use; the start of the call is as good as any.
                None => self.zero_at[self.first_use[b]].push(b),
            }
        }
        self.conflicts = conflicts(&self.live);
    }

    /// The buffers to zero right before `launch` (see `zero_at_first_use`).
    pub fn zero_before(&self, launch: usize) -> &[usize] {
        self.zero_at.get(launch).map_or(&[], Vec::as_slice)
    }

    /// The launches between which temp `b` is live, if it shares memory with others.
    #[cfg(test)]
    pub fn lifetime(&self, b: usize) -> Option<(usize, usize)> {
        self.live.get(b).copied().flatten()
    }

    /// Sizes and arena offsets for `(seq, past)`; errors on overflow or an alias larger
    /// than the buffer it views.
    pub fn layout(
        &self,
        buffers: &[Buffer],
        seq: usize,
        past: usize,
        out: &mut Layout,
    ) -> Result<(), ExecError> {
        let n = buffers.len();
        out.bytes.clear();
        out.offset.clear();
        out.bytes.reserve(n);
        out.offset.reserve(n);
        let overflow = || ExecError::Memory("activation arena size overflows".into());
        // Buffers that never share memory first, one after the other.
        let mut cursor = 0usize;
        for (i, (b, role)) in buffers.iter().zip(&self.roles).enumerate() {
            let bytes = buffer_bytes(&b.shape, b.elem, seq, past).ok_or_else(|| {
                ExecError::Memory(format!(
                    "buffer `{}`: size overflows for seq {seq}, past {past}",
                    b.name
                ))
            })?;
            out.bytes.push(bytes);
            let in_arena = matches!(
                role,
                Role::Arena | Role::Tokens | Role::Positions | Role::Logits
            );
            if in_arena && self.live[i].is_none() {
                out.offset.push(cursor);
                cursor = align_up(bytes)
                    .and_then(|a| cursor.checked_add(a))
                    .ok_or_else(overflow)?;
            } else {
                out.offset.push(0);
            }
        }
        // Then the temps above them, largest first, each at the lowest aligned offset
        // that no temp live at the same time occupies.
        let base = cursor;
        out.order.clear();
        out.order.extend((0..n).filter(|&i| self.live[i].is_some()));
        let bytes = &out.bytes;
        out.order
            .sort_unstable_by(|&a, &b| bytes[b].cmp(&bytes[a]).then(a.cmp(&b)));
        out.placed.clear();
        out.placed.resize(n, false);
        let mut top = 0usize;
        for &b in &out.order {
            let size = align_up(out.bytes[b]).ok_or_else(overflow)?;
            out.ranges.clear();
            for &c in &self.conflicts[b] {
                if out.placed[c] {
                    let at = out.offset[c];
                    out.ranges
                        .push((at, at + align_up(out.bytes[c]).ok_or_else(overflow)?));
                }
            }
            out.ranges.sort_unstable();
            let mut at = 0usize;
            for &(lo, hi) in &out.ranges {
                if at.checked_add(size).ok_or_else(overflow)? <= lo {
                    break;
                }
                at = at.max(hi);
            }
            out.offset[b] = at;
            out.placed[b] = true;
            top = top.max(at.checked_add(size).ok_or_else(overflow)?);
        }
        for &b in &out.order {
            out.offset[b] += base;
        }
        let cursor = base.checked_add(top).ok_or_else(overflow)?;
        for (i, role) in self.roles.iter().enumerate() {
            if let Role::Alias(r) = role {
                if out.bytes[i] > out.bytes[*r] {
                    return Err(ExecError::Program(format!(
                        "alias `{}` ({} bytes) is larger than `{}` ({} bytes)",
                        buffers[i].name, out.bytes[i], buffers[*r].name, out.bytes[*r]
                    )));
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

/// For every temp with a lifetime, the other temps whose lifetimes intersect it (both
/// directions), by a sweep over the temps in order of their first launch.
fn conflicts(live: &[Option<(usize, usize)>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); live.len()];
    let mut by_start: Vec<(usize, usize, usize)> = live
        .iter()
        .enumerate()
        .filter_map(|(b, l)| l.map(|(f, e)| (f, e, b)))
        .collect();
    by_start.sort_unstable();
    for (i, &(_, end, a)) in by_start.iter().enumerate() {
        for &(start, _, b) in &by_start[i + 1..] {
            if start > end {
                break;
            }
            out[a].push(b);
            out[b].push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use archc_compiler::kernel::analysis::analyze;
    use archc_compiler::kernel::{Access, KBuf, Kernel, Launch, Program};

    /// The plan of a program without parameters, as an executor builds it.
    fn plan_of(p: &Program) -> Result<Plan, ExecError> {
        let doc = p.doc();
        let info = analyze(&doc)?;
        Plan::new(&doc, &info, |_| Err(ExecError::Program("no params".into())))
    }

    fn buf(name: &str, kind: BufferKind, shape: Vec<Dim>) -> Buffer {
        Buffer {
            name: name.into(),
            elem: if name == "tokens" || name == "positions" {
                Elem::I32
            } else {
                Elem::F32
            },
            shape,
            kind,
        }
    }

    /// A kernel that reads `reads` buffers and then writes one (`rw`: reads and writes it).
    fn kernel(reads: usize, rw: bool) -> Kernel {
        let mut bufs: Vec<KBuf> = (0..reads)
            .map(|i| KBuf {
                name: format!("in{i}"),
                elem: Elem::F32,
                access: Access::Read,
            })
            .collect();
        bufs.push(KBuf {
            name: "out".into(),
            elem: Elem::F32,
            access: if rw { Access::ReadWrite } else { Access::Write },
        });
        Kernel {
            name: format!("k{reads}{rw}"),
            bufs,
            vars: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `logits` plus temps `t0..tn` of `sizes[i]` f32 elements times `seq`; launch `i`
    /// reads the temps in `reads[i]` and writes `writes[i]` (kernel 0 writes, kernel 1 reads
    /// and writes its output). Buffer `2 + i` is temp `ti`.
    fn program(sizes: &[u64], launches: &[(&[usize], usize, bool)]) -> Program {
        let mut buffers = vec![
            buf("tokens", BufferKind::Input(Io::Tokens), vec![Dim::SEQ]),
            buf(
                "logits",
                BufferKind::Output(Io::Logits),
                vec![Dim::SEQ, Dim::c(3)],
            ),
        ];
        for (i, &n) in sizes.iter().enumerate() {
            buffers.push(buf(
                &format!("t{i}"),
                BufferKind::Temp,
                vec![Dim::SEQ, Dim::c(n)],
            ));
        }
        let mut kernels = Vec::new();
        let mut ls = Vec::new();
        for &(reads, write, rw) in launches {
            let k = kernel(reads.len(), rw);
            let at = kernels.iter().position(|x: &Kernel| x.name == k.name);
            let ki = at.unwrap_or_else(|| {
                kernels.push(k);
                kernels.len() - 1
            });
            let mut bufs: Vec<Option<usize>> = reads.iter().map(|&r| Some(r)).collect();
            bufs.push(Some(write));
            ls.push(Launch { kernel: ki, bufs });
        }
        Program {
            name: "test".into(),
            buffers,
            kernels,
            launches: ls,
        }
    }

    /// Checks that no two buffers live at the same time overlap in the arena and that
    /// every arena buffer lies inside it.
    fn check_disjoint(plan: &Plan, l: &Layout) {
        let n = plan.roles.len();
        let in_arena = |i: usize| {
            matches!(
                plan.roles[i],
                Role::Arena | Role::Tokens | Role::Positions | Role::Logits
            )
        };
        for a in (0..n).filter(|&i| in_arena(i)) {
            assert_eq!(l.offset[a] % 64, 0, "buffer {a} is aligned");
            assert!(l.offset[a] + l.bytes[a] <= l.arena_bytes, "buffer {a} fits");
            for b in (a + 1..n).filter(|&i| in_arena(i)) {
                let together = match (plan.live[a], plan.live[b]) {
                    (Some((f1, e1)), Some((f2, e2))) => f1 <= e2 && f2 <= e1,
                    _ => true,
                };
                let apart = l.offset[a] + l.bytes[a] <= l.offset[b]
                    || l.offset[b] + l.bytes[b] <= l.offset[a]
                    || l.bytes[a] == 0
                    || l.bytes[b] == 0;
                assert!(!together || apart, "buffers {a} and {b} overlap while live");
            }
        }
    }

    #[test]
    fn a_chain_reuses_two_ranges() {
        // t0 -> t1 -> t2 -> t3 -> t4 -> logits: at most two temps live at once.
        let p = program(
            &[16, 16, 16, 16, 16],
            &[
                (&[], 2, false),
                (&[2], 3, false),
                (&[3], 4, false),
                (&[4], 5, false),
                (&[5], 6, false),
                (&[6], 1, false),
            ],
        );
        let plan = plan_of(&p).expect("valid");
        assert_eq!(plan.lifetime(3), Some((1, 2)));
        let mut l = Layout::default();
        plan.layout(&p.buffers, 4, 0, &mut l).expect("layout");
        check_disjoint(&plan, &l);
        // tokens (64) + logits (64) + two 256-byte temps.
        assert_eq!(l.arena_bytes, 64 + 64 + 2 * 256);
        assert_eq!(l.offset[2], l.offset[4], "t0 and t2 share bytes");
    }

    #[test]
    fn live_buffers_never_overlap_in_random_programs() {
        // A small deterministic generator: every launch reads up to three earlier temps.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        for round in 0..50 {
            let temps = 2 + next(30);
            let sizes: Vec<u64> = (0..temps).map(|_| 1 + next(100) as u64).collect();
            let reads: Vec<Vec<usize>> = (0..temps)
                .map(|i| (0..next(4)).map(|_| 2 + next(temps.max(i + 1))).collect())
                .collect();
            let mut launches: Vec<(&[usize], usize, bool)> = reads
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_slice(), 2 + i, next(5) == 0))
                .collect();
            let last = [2 + temps - 1];
            launches.push((&last, 1, false));
            let p = program(&sizes, &launches);
            let mut plan = plan_of(&p).expect("valid");
            let mut l = Layout::default();
            for seq in [1, 7] {
                plan.layout(&p.buffers, seq, 0, &mut l).expect("layout");
                check_disjoint(&plan, &l);
            }
            if round % 2 == 0 {
                plan.zero_at_first_use();
                assert!(plan.zero_first.is_empty());
                plan.layout(&p.buffers, 3, 0, &mut l).expect("layout");
                check_disjoint(&plan, &l);
            }
        }
    }

    #[test]
    fn read_before_write_is_zeroed_at_the_start_or_at_first_use() {
        // t0 written; t1 read-and-written (accumulated) at launch 2 only; t2 = t0 + t1.
        let p = program(
            &[8, 8, 8],
            &[
                (&[], 2, false),
                (&[2], 4, false),
                (&[4], 3, true),
                (&[3], 1, false),
            ],
        );
        let mut plan = plan_of(&p).expect("valid");
        assert_eq!(plan.zero_first, vec![3]);
        // Zeroed at the start of the call: live from launch 0, so t0 cannot lend it bytes.
        assert_eq!(plan.lifetime(3), Some((0, 3)));
        plan.zero_at_first_use();
        assert!(plan.zero_first.is_empty());
        assert_eq!(plan.lifetime(3), Some((2, 3)));
        assert_eq!(plan.zero_before(2), &[3]);
        assert!(plan.zero_before(0).is_empty());
        let mut l = Layout::default();
        plan.layout(&p.buffers, 1, 0, &mut l).expect("layout");
        check_disjoint(&plan, &l);
        assert_eq!(
            l.offset[3], l.offset[2],
            "t1 reuses t0's bytes after its last use"
        );
    }

    #[test]
    fn aliases_extend_their_roots_lifetime_and_outputs_are_not_shared() {
        let mut p = program(
            &[4, 4, 4],
            &[
                (&[], 2, false),
                (&[5], 3, false),
                (&[3], 4, false),
                (&[4], 1, false),
            ],
        );
        // Buffer 5 views t0 (buffer 2) and is read at launch 1; t2 is an unread output.
        p.buffers.push(buf(
            "view",
            BufferKind::Alias { of: 2 },
            vec![Dim::SEQ, Dim::c(4)],
        ));
        p.buffers[4].kind = BufferKind::Output(Io::value("t2"));
        let plan = plan_of(&p).expect("valid");
        assert_eq!(plan.lifetime(2), Some((0, 1)));
        assert_eq!(plan.lifetime(4), None);
        assert_eq!(plan.lifetime(5), None);
        let mut l = Layout::default();
        plan.layout(&p.buffers, 2, 0, &mut l).expect("layout");
        check_disjoint(&plan, &l);
        assert_ne!(l.offset[3], l.offset[2], "t1 is written while t0 is read");
    }
}
