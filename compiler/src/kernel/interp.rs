//! The reference interpreter of the kernel IR: a plain tree walker with exactly the
//! semantics documented in `kernel/mod.rs`, against which every backend is tested.
//!
//! Semantics in detail (backends must agree):
//! - Loads widen (bf16, f16, f8 e4m3fn, f32 → `f32`, exactly; i32 → `i64` sign-extended;
//!   u8 → `i64` zero-extended); stores narrow (an f8 buffer takes none: it is read-only), bf16 and f16 with round-to-nearest-even, NaN kept NaN
//!   (quietened); i64 → i32 and i64 → u8 keep the low bits (two's complement).
//! - `<<` and `>>` (arithmetic) shift by `0..64` bits; any other amount is an error, as it
//!   is undefined in the backends. `&` and `|` are bitwise. `f16bits(x)` reads the low 16
//!   bits of `x` as an IEEE half, exactly; of a NaN only its NaN-ness is defined (hardware
//!   conversions quieten signalling NaNs).
//! - `f32` arithmetic is done in `f32`. `min`/`max` return the non-NaN operand (IEEE
//!   minNum/maxNum). `i64` `+ - *` wrap; `/` and `%` truncate toward zero and an integer
//!   division or remainder by zero is an error. `i64(x)` truncates toward zero, saturating.
//! - Both arms of a `select` and both operands of `&&`/`||` are evaluated (no branching), so
//!   an out-of-bounds load in the unused arm is an error, as it is a real access in code.
//! - A loop evaluates `start` and `end` once. Its `n = ceil((end - start) / step)` iterations
//!   (none when `end <= start`) run in order. The `Parallel` loop runs only iterations
//!   `[t * chunk, min(n, (t + 1) * chunk))` with `chunk = ceil(n / threads)` on thread `t`:
//!   the var takes `start + i * step` for those `i`.
//! - Scratch buffers are fresh per call (per thread) and, like temporaries and outputs of a
//!   program, start poisoned (NaN, `i32::MIN`) so that reading before writing shows.

use super::verify::{alias_root, elem_count, verify_kernel, verify_program};
use super::*;
use std::collections::BTreeMap;
use std::fmt;

/// A typed view of one buffer's memory, in its storage type (bf16, f16 and f8 as raw bits).
/// The `...Ro` variants are read-only: storing into them is an error. `Unbound` stands for
/// a scratch parameter, which the kernel allocates itself.
#[derive(Debug)]
pub enum KBufData<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [u16]),
    F16(&'a mut [u16]),
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
    /// f8 e4m3fn bits. Mutable memory can be given, but the kernel never stores into it.
    F8(&'a mut [u8]),
    F32Ro(&'a [f32]),
    Bf16Ro(&'a [u16]),
    F16Ro(&'a [u16]),
    I32Ro(&'a [i32]),
    U8Ro(&'a [u8]),
    F8Ro(&'a [u8]),
    Unbound,
}

impl KBufData<'_> {
    /// The element type, `None` for `Unbound`.
    pub fn elem(&self) -> Option<Elem> {
        Some(match self {
            KBufData::F32(_) | KBufData::F32Ro(_) => Elem::F32,
            KBufData::Bf16(_) | KBufData::Bf16Ro(_) => Elem::Bf16,
            KBufData::F16(_) | KBufData::F16Ro(_) => Elem::F16,
            KBufData::I32(_) | KBufData::I32Ro(_) => Elem::I32,
            KBufData::U8(_) | KBufData::U8Ro(_) => Elem::U8,
            KBufData::F8(_) | KBufData::F8Ro(_) => Elem::F8,
            KBufData::Unbound => return None,
        })
    }

    pub fn len(&self) -> usize {
        match self {
            KBufData::F32(s) => s.len(),
            KBufData::Bf16(s) | KBufData::F16(s) => s.len(),
            KBufData::I32(s) => s.len(),
            KBufData::F32Ro(s) => s.len(),
            KBufData::Bf16Ro(s) | KBufData::F16Ro(s) => s.len(),
            KBufData::I32Ro(s) => s.len(),
            KBufData::U8(s) => s.len(),
            KBufData::U8Ro(s) => s.len(),
            KBufData::F8(s) => s.len(),
            KBufData::F8Ro(s) => s.len(),
            KBufData::Unbound => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A shorter-lived view of the same memory.
    pub fn reborrow(&mut self) -> KBufData<'_> {
        match self {
            KBufData::F32(s) => KBufData::F32(s),
            KBufData::Bf16(s) => KBufData::Bf16(s),
            KBufData::F16(s) => KBufData::F16(s),
            KBufData::I32(s) => KBufData::I32(s),
            KBufData::F32Ro(s) => KBufData::F32Ro(s),
            KBufData::Bf16Ro(s) => KBufData::Bf16Ro(s),
            KBufData::F16Ro(s) => KBufData::F16Ro(s),
            KBufData::I32Ro(s) => KBufData::I32Ro(s),
            KBufData::U8(s) => KBufData::U8(s),
            KBufData::U8Ro(s) => KBufData::U8Ro(s),
            KBufData::F8(s) => KBufData::F8(s),
            KBufData::F8Ro(s) => KBufData::F8Ro(s),
            KBufData::Unbound => KBufData::Unbound,
        }
    }

    fn get(&self, i: usize) -> Option<Val> {
        Some(match self {
            KBufData::F32(s) => Val::F(*s.get(i)?),
            KBufData::F32Ro(s) => Val::F(*s.get(i)?),
            KBufData::Bf16(s) => Val::F(bf16_to_f32(*s.get(i)?)),
            KBufData::Bf16Ro(s) => Val::F(bf16_to_f32(*s.get(i)?)),
            KBufData::F16(s) => Val::F(f16_to_f32(*s.get(i)?)),
            KBufData::F16Ro(s) => Val::F(f16_to_f32(*s.get(i)?)),
            KBufData::I32(s) => Val::I(i64::from(*s.get(i)?)),
            KBufData::I32Ro(s) => Val::I(i64::from(*s.get(i)?)),
            KBufData::U8(s) => Val::I(i64::from(*s.get(i)?)),
            KBufData::U8Ro(s) => Val::I(i64::from(*s.get(i)?)),
            KBufData::F8(s) => Val::F(f8e4m3_to_f32(*s.get(i)?)),
            KBufData::F8Ro(s) => Val::F(f8e4m3_to_f32(*s.get(i)?)),
            KBufData::Unbound => return None,
        })
    }

    /// Stores a value narrowed to the element type; the caller has checked the bounds.
    fn set(&mut self, i: usize, v: Val) -> Result<(), String> {
        let slot_err = || format!("element {i} does not exist");
        match (self, v) {
            (KBufData::F32(s), Val::F(x)) => *s.get_mut(i).ok_or_else(slot_err)? = x,
            (KBufData::Bf16(s), Val::F(x)) => *s.get_mut(i).ok_or_else(slot_err)? = f32_to_bf16(x),
            (KBufData::F16(s), Val::F(x)) => *s.get_mut(i).ok_or_else(slot_err)? = f32_to_f16(x),
            // Truncation, as a native `trunc` does.
            (KBufData::I32(s), Val::I(x)) => *s.get_mut(i).ok_or_else(slot_err)? = x as i32,
            (KBufData::U8(s), Val::I(x)) => *s.get_mut(i).ok_or_else(slot_err)? = x as u8,
            (
                KBufData::F32Ro(_)
                | KBufData::Bf16Ro(_)
                | KBufData::F16Ro(_)
                | KBufData::I32Ro(_)
                | KBufData::U8Ro(_)
                | KBufData::F8Ro(_),
                _,
            ) => return Err("the memory was given read-only".to_string()),
            (KBufData::F8(_), _) => {
                return Err("f8 buffers are read-only (weights); there is no f8 store".to_string())
            }
            (_, v) => return Err(format!("cannot store {v:?} into this buffer")),
        }
        Ok(())
    }
}

/// Owned buffer memory in its storage type: the outputs of `run_program`.
#[derive(Debug, Clone, PartialEq)]
pub enum KData {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    F16(Vec<u16>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    F8(Vec<u8>),
}

impl KData {
    /// `len` elements poisoned so that reading them before writing shows: NaN for floats,
    /// `i32::MIN` for i32, `0xff` for bytes (a NaN in f8).
    pub fn poisoned(elem: Elem, len: usize) -> KData {
        match elem {
            Elem::F32 => KData::F32(vec![f32::NAN; len]),
            Elem::Bf16 => KData::Bf16(vec![0x7fc0; len]),
            Elem::F16 => KData::F16(vec![0x7e00; len]),
            Elem::I32 => KData::I32(vec![i32::MIN; len]),
            Elem::U8 => KData::U8(vec![0xff; len]),
            Elem::F8 => KData::F8(vec![0xff; len]),
        }
    }

    pub fn elem(&self) -> Elem {
        match self {
            KData::F32(_) => Elem::F32,
            KData::Bf16(_) => Elem::Bf16,
            KData::F16(_) => Elem::F16,
            KData::I32(_) => Elem::I32,
            KData::U8(_) => Elem::U8,
            KData::F8(_) => Elem::F8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            KData::F32(v) => v.len(),
            KData::Bf16(v) | KData::F16(v) => v.len(),
            KData::I32(v) => v.len(),
            KData::U8(v) | KData::F8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A mutable view.
    pub fn view(&mut self) -> KBufData<'_> {
        match self {
            KData::F32(v) => KBufData::F32(v),
            KData::Bf16(v) => KBufData::Bf16(v),
            KData::F16(v) => KBufData::F16(v),
            KData::I32(v) => KBufData::I32(v),
            KData::U8(v) => KBufData::U8(v),
            KData::F8(v) => KBufData::F8(v),
        }
    }

    /// A read-only view.
    pub fn view_ro(&self) -> KBufData<'_> {
        match self {
            KData::F32(v) => KBufData::F32Ro(v),
            KData::Bf16(v) => KBufData::Bf16Ro(v),
            KData::F16(v) => KBufData::F16Ro(v),
            KData::I32(v) => KBufData::I32Ro(v),
            KData::U8(v) => KBufData::U8Ro(v),
            KData::F8(v) => KBufData::F8Ro(v),
        }
    }

    /// The values widened to `f32` (i32 converted), for comparisons in tests.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            KData::F32(v) => v.clone(),
            KData::Bf16(v) => v.iter().map(|&b| bf16_to_f32(b)).collect(),
            KData::F16(v) => v.iter().map(|&b| f16_to_f32(b)).collect(),
            KData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            KData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            KData::F8(v) => v.iter().map(|&b| f8e4m3_to_f32(b)).collect(),
        }
    }
}

/// Why a kernel or program could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRunError {
    /// A fault inside a kernel (out-of-bounds access, division by zero, bad binding).
    Kernel { kernel: String, message: String },
    /// A program-level problem (missing or mis-sized input, verifier failure).
    Program { program: String, message: String },
}

impl fmt::Display for KernelRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelRunError::Kernel { kernel, message } => {
                write!(f, "kernel `{kernel}`: {message}")
            }
            KernelRunError::Program { program, message } => {
                write!(f, "program `{program}`: {message}")
            }
        }
    }
}

impl std::error::Error for KernelRunError {}

pub use crate::floats::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, f8e4m3_to_f32};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    F(f32),
    I(i64),
    B(bool),
}

/// Runs one kernel call as thread `thread` of `threads`. `bufs` has one entry per kernel
/// parameter: `KBufData::Unbound` for scratch parameters, memory of the declared element
/// type otherwise. The kernel is verified first.
pub fn run_kernel(
    k: &Kernel,
    bufs: &mut [KBufData],
    seq: i64,
    past: i64,
    thread: i64,
    threads: i64,
) -> Result<(), KernelRunError> {
    let err = |message: String| KernelRunError::Kernel {
        kernel: k.name.clone(),
        message,
    };
    verify_kernel(k).map_err(|e| err(format!("does not verify: {}", e.message)))?;
    if bufs.len() != k.bufs.len() {
        return Err(err(format!(
            "{} buffers given for {} parameters",
            bufs.len(),
            k.bufs.len()
        )));
    }
    let mut views: Vec<KBufData> = bufs.iter_mut().map(|b| b.reborrow()).collect();
    let slots: Vec<usize> = (0..views.len()).collect();
    exec(k, &mut views, &slots, None, seq, past, thread, threads)
}

/// Executes `k` with parameter `i` bound to `mem[slots[i]]` (several parameters may share
/// a slot), seeing the first `lens[i]` elements when `lens` is given.
#[allow(clippy::too_many_arguments)]
fn exec(
    k: &Kernel,
    mem: &mut [KBufData],
    slots: &[usize],
    lens: Option<&[usize]>,
    seq: i64,
    past: i64,
    thread: i64,
    threads: i64,
) -> Result<(), KernelRunError> {
    let err = |message: String| KernelRunError::Kernel {
        kernel: k.name.clone(),
        message,
    };
    if threads < 1 || !(0..threads).contains(&thread) {
        return Err(err(format!(
            "thread {thread} of {threads} threads is not a valid thread"
        )));
    }
    if seq < 0 || past < 0 {
        return Err(err(format!("negative sizes seq={seq}, past={past}")));
    }
    // Scratch memory is private to this call.
    let mut scratch: Vec<KData> = Vec::new();
    for (i, p) in k.bufs.iter().enumerate() {
        let m = &mem[slots[i]];
        match p.access {
            Access::Scratch { len } => {
                if !matches!(m, KBufData::Unbound) {
                    return Err(err(format!(
                        "parameter {i} `{}` is scratch but memory was given for it",
                        p.name
                    )));
                }
                // A bound well above any real tile keeps a corrupt length from aborting.
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&n| n <= 1 << 30)
                    .ok_or_else(|| {
                        err(format!(
                            "scratch `{}` of {len} elements is too large",
                            p.name
                        ))
                    })?;
                scratch.push(KData::poisoned(p.elem, len));
            }
            _ => {
                if m.elem() != Some(p.elem) {
                    return Err(err(format!(
                        "parameter {i} `{}` is {} but was given {}",
                        p.name,
                        p.elem.as_str(),
                        m.elem().map_or("no memory", Elem::as_str)
                    )));
                }
            }
        }
    }
    let base = mem.len();
    let mut all: Vec<KBufData> = mem.iter_mut().map(|b| b.reborrow()).collect();
    all.extend(scratch.iter_mut().map(KData::view));
    let mut params = Vec::with_capacity(k.bufs.len());
    let mut next_scratch = base;
    for (i, p) in k.bufs.iter().enumerate() {
        let slot = if matches!(p.access, Access::Scratch { .. }) {
            next_scratch += 1;
            next_scratch - 1
        } else {
            slots[i]
        };
        let mut len = all[slot].len();
        if let Some(lens) = lens {
            if !matches!(p.access, Access::Scratch { .. }) {
                len = len.min(lens[i]);
            }
        }
        params.push((slot, len));
    }
    let mut m = Machine {
        k,
        mem: all,
        params,
        vars: vec![Val::B(false); k.vars.len()],
        seq,
        past,
        thread,
        threads,
    };
    m.block(&k.body).map_err(err)
}

struct Machine<'k, 'm> {
    k: &'k Kernel,
    mem: Vec<KBufData<'m>>,
    /// Per parameter: the memory slot and the number of visible elements.
    params: Vec<(usize, usize)>,
    vars: Vec<Val>,
    seq: i64,
    past: i64,
    thread: i64,
    threads: i64,
}

impl Machine<'_, '_> {
    fn block(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), String> {
        match s {
            Stmt::Let { var, value } => {
                self.vars[var.0 as usize] = self.expr(value)?;
            }
            Stmt::Local { var, init } => {
                self.vars[var.0 as usize] = self.expr(init)?;
            }
            Stmt::Set { var, value } => {
                self.vars[var.0 as usize] = self.expr(value)?;
            }
            Stmt::Store { buf, index, value } => {
                let i = self.int(index)?;
                let v = self.expr(value)?;
                let (slot, len) = self.params[buf.0 as usize];
                let idx = self.check_index(*buf, i, len, || {
                    format!("store `{}[{}]`", self.buf_name(*buf), self.k.expr(index))
                })?;
                let name = self.buf_name(*buf).to_string();
                self.mem[slot]
                    .set(idx, v)
                    .map_err(|e| format!("store to `{name}`[{idx}]: {e}"))?;
            }
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                let start = self.int(start)?;
                let end = self.int(end)?;
                let step =
                    i64::try_from(*step).map_err(|_| format!("loop step {step} too large"))?;
                let n = if end > start {
                    (end - start - 1) / step + 1
                } else {
                    0
                };
                let (lo, hi) = if *kind == LoopKind::Parallel {
                    let chunk = (n + self.threads - 1) / self.threads;
                    (
                        (self.thread * chunk).min(n),
                        ((self.thread + 1) * chunk).min(n),
                    )
                } else {
                    (0, n)
                };
                for it in lo..hi {
                    self.vars[var.0 as usize] = Val::I(start + it * step);
                    self.block(body)?;
                }
            }
            Stmt::If { cond, then, els } => {
                if self.bool(cond)? {
                    self.block(then)?;
                } else {
                    self.block(els)?;
                }
            }
            Stmt::Tile(t) => self.tile(t)?,
        }
        Ok(())
    }

    /// A tile (see `kernel::tile`): every sum in f32, adding products in the order of the
    /// reduction (pairs added as a pair first when the rows come in lanes, as the
    /// bf16 pair instructions do), into new sums or stored.
    fn tile(&mut self, t: &Tile) -> Result<(), String> {
        let (start, end) = (self.int(&t.start)?, self.int(&t.end)?);
        let lanes = i64::from(t.lanes);
        let mut row_base = Vec::with_capacity(t.rows.len());
        for r in &t.rows {
            row_base.push(self.int(&r.base)?);
        }
        let mut col_base = Vec::with_capacity(t.cols.len());
        for c in &t.cols {
            col_base.push(self.int(&c.base)?);
        }
        let n = t.cols.len();
        let mut sums = vec![0f32; t.m() * n];
        let at = |g: usize, l: i64, k: i64| -> i64 {
            if lanes == 1 {
                row_base[g] + k
            } else {
                row_base[g] + (k / 2) * 2 * lanes + 2 * l + k % 2
            }
        };
        for g in 0..t.rows.len() {
            for l in 0..lanes {
                let r = g * lanes as usize + l as usize;
                for (c, cb) in col_base.iter().enumerate() {
                    let (rb, cbuf) = (t.rows[g].buf, t.cols[c].buf);
                    let mut acc = 0f32;
                    let mut kk = start;
                    while kk < end {
                        if lanes == 1 {
                            let p =
                                self.load_f32(rb, at(g, l, kk))? * self.load_f32(cbuf, cb + kk)?;
                            acc += p;
                            kk += 1;
                        } else {
                            let p0 =
                                self.load_f32(rb, at(g, l, kk))? * self.load_f32(cbuf, cb + kk)?;
                            let p1 = self.load_f32(rb, at(g, l, kk + 1))?
                                * self.load_f32(cbuf, cb + kk + 1)?;
                            acc += p0 + p1;
                            kk += 2;
                        }
                    }
                    sums[r * n + c] = acc;
                }
            }
        }
        match &t.out {
            TileOut::Sums(vars) => {
                for (v, x) in vars.iter().zip(sums) {
                    self.vars[v.0 as usize] = Val::F(x);
                }
            }
            TileOut::Store { buf, bases } => {
                let (slot, len) = self.params[buf.0 as usize];
                for g in 0..t.rows.len() {
                    for c in 0..n {
                        let base = self.int(&bases[g * n + c])?;
                        for l in 0..lanes {
                            let r = g * lanes as usize + l as usize;
                            let i = self.check_index(*buf, base + l, len, || {
                                format!("tile store to `{}`", self.buf_name(*buf))
                            })?;
                            let name = self.buf_name(*buf).to_string();
                            self.mem[slot]
                                .set(i, Val::F(sums[r * n + c]))
                                .map_err(|e| format!("tile store to `{name}`[{i}]: {e}"))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Element `i` of buffer `buf` as f32, bounds checked.
    fn load_f32(&self, buf: BufId, i: i64) -> Result<f32, String> {
        let (slot, len) = self.params[buf.0 as usize];
        let idx = self.check_index(buf, i, len, || {
            format!("tile load from `{}`", self.buf_name(buf))
        })?;
        match self.mem[slot].get(idx) {
            Some(Val::F(x)) => Ok(x),
            Some(v) => Err(format!(
                "tile load from `{}`[{idx}] is {v:?}, not f32",
                self.buf_name(buf)
            )),
            None => Err(format!(
                "tile load from `{}`: no memory",
                self.buf_name(buf)
            )),
        }
    }

    fn buf_name(&self, b: BufId) -> &str {
        &self.k.bufs[b.0 as usize].name
    }

    fn check_index(
        &self,
        buf: BufId,
        i: i64,
        len: usize,
        what: impl FnOnce() -> String,
    ) -> Result<usize, String> {
        match usize::try_from(i) {
            Ok(idx) if idx < len => Ok(idx),
            _ => Err(format!(
                "{}: index {i} is out of bounds for buffer `{}` of {len} elements",
                what(),
                self.buf_name(buf)
            )),
        }
    }

    fn int(&self, e: &Expr) -> Result<i64, String> {
        match self.expr(e)? {
            Val::I(x) => Ok(x),
            v => Err(format!("`{}` is {v:?}, not i64", self.k.expr(e))),
        }
    }

    fn bool(&self, e: &Expr) -> Result<bool, String> {
        match self.expr(e)? {
            Val::B(x) => Ok(x),
            v => Err(format!("`{}` is {v:?}, not bool", self.k.expr(e))),
        }
    }

    fn expr(&self, e: &Expr) -> Result<Val, String> {
        Ok(match e {
            Expr::F32(x) => Val::F(*x),
            Expr::I64(x) => Val::I(*x),
            Expr::Bool(x) => Val::B(*x),
            Expr::Var(v) => self.vars[v.0 as usize],
            Expr::Dim(DimVar::Seq) => Val::I(self.seq),
            Expr::Dim(DimVar::Past) => Val::I(self.past),
            Expr::Load { buf, index } => {
                let i = self.int(index)?;
                let (slot, len) = self.params[buf.0 as usize];
                let idx =
                    self.check_index(*buf, i, len, || format!("load `{}`", self.k.expr(e)))?;
                self.mem[slot]
                    .get(idx)
                    .ok_or_else(|| format!("load `{}`: no memory", self.k.expr(e)))?
            }
            Expr::Un(op, a) => match (op, self.expr(a)?) {
                (UnOp::Neg, Val::F(x)) => Val::F(-x),
                (UnOp::Neg, Val::I(x)) => Val::I(x.wrapping_neg()),
                (UnOp::Abs, Val::F(x)) => Val::F(x.abs()),
                (UnOp::Abs, Val::I(x)) => Val::I(x.wrapping_abs()),
                (UnOp::Exp, Val::F(x)) => Val::F(x.exp()),
                (UnOp::Log, Val::F(x)) => Val::F(x.ln()),
                (UnOp::Sqrt, Val::F(x)) => Val::F(x.sqrt()),
                (UnOp::Tanh, Val::F(x)) => Val::F(x.tanh()),
                (UnOp::Sin, Val::F(x)) => Val::F(x.sin()),
                (UnOp::Cos, Val::F(x)) => Val::F(x.cos()),
                (UnOp::Floor, Val::F(x)) => Val::F(x.floor()),
                (UnOp::ToF32, Val::I(x)) => Val::F(x as f32),
                (UnOp::ToI64, Val::F(x)) => Val::I(x as i64),
                (UnOp::Not, Val::B(x)) => Val::B(!x),
                (UnOp::F16Bits, Val::I(x)) => Val::F(f16_to_f32((x & 0xffff) as u16)),
                (UnOp::F32Bits, Val::I(x)) => Val::F(f32::from_bits(x as u32)),
                (_, v) => return Err(format!("`{}`: operand is {v:?}", self.k.expr(e))),
            },
            Expr::Bin(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                match (a, b) {
                    (Val::F(x), Val::F(y)) => match op {
                        BinOp::Add => Val::F(x + y),
                        BinOp::Sub => Val::F(x - y),
                        BinOp::Mul => Val::F(x * y),
                        BinOp::Div => Val::F(x / y),
                        BinOp::Min => Val::F(x.min(y)),
                        BinOp::Max => Val::F(x.max(y)),
                        BinOp::Pow => Val::F(x.powf(y)),
                        BinOp::Lt => Val::B(x < y),
                        BinOp::Le => Val::B(x <= y),
                        BinOp::Gt => Val::B(x > y),
                        BinOp::Ge => Val::B(x >= y),
                        BinOp::Eq => Val::B(x == y),
                        BinOp::Ne => Val::B(x != y),
                        BinOp::Rem
                        | BinOp::And
                        | BinOp::Or
                        | BinOp::Shl
                        | BinOp::Shr
                        | BinOp::BitAnd
                        | BinOp::BitOr => {
                            return Err(format!("`{}`: not defined on f32", self.k.expr(e)))
                        }
                    },
                    (Val::I(x), Val::I(y)) => match op {
                        BinOp::Add => Val::I(x.wrapping_add(y)),
                        BinOp::Sub => Val::I(x.wrapping_sub(y)),
                        BinOp::Mul => Val::I(x.wrapping_mul(y)),
                        BinOp::Div | BinOp::Rem if y == 0 => {
                            return Err(format!(
                                "`{}`: integer division by zero ({x} {} 0)",
                                self.k.expr(e),
                                super::verify::bin_name(*op)
                            ))
                        }
                        BinOp::Div => Val::I(x.wrapping_div(y)),
                        BinOp::Rem => Val::I(x.wrapping_rem(y)),
                        BinOp::Min => Val::I(x.min(y)),
                        BinOp::Max => Val::I(x.max(y)),
                        BinOp::Lt => Val::B(x < y),
                        BinOp::Le => Val::B(x <= y),
                        BinOp::Gt => Val::B(x > y),
                        BinOp::Ge => Val::B(x >= y),
                        BinOp::Eq => Val::B(x == y),
                        BinOp::Ne => Val::B(x != y),
                        BinOp::Shl | BinOp::Shr if !(0..64).contains(&y) => {
                            return Err(format!(
                                "`{}`: shift by {y} bits, outside 0..64",
                                self.k.expr(e)
                            ))
                        }
                        BinOp::Shl => Val::I(x << y),
                        BinOp::Shr => Val::I(x >> y),
                        BinOp::BitAnd => Val::I(x & y),
                        BinOp::BitOr => Val::I(x | y),
                        BinOp::Pow | BinOp::And | BinOp::Or => {
                            return Err(format!("`{}`: not defined on i64", self.k.expr(e)))
                        }
                    },
                    (Val::B(x), Val::B(y)) => match op {
                        BinOp::And => Val::B(x && y),
                        BinOp::Or => Val::B(x || y),
                        BinOp::Eq => Val::B(x == y),
                        BinOp::Ne => Val::B(x != y),
                        _ => return Err(format!("`{}`: not defined on bool", self.k.expr(e))),
                    },
                    _ => {
                        return Err(format!(
                            "`{}`: operands {a:?} and {b:?} differ in type",
                            self.k.expr(e)
                        ))
                    }
                }
            }
            Expr::Select(c, a, b) => {
                let c = self.bool(c)?;
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                if c {
                    a
                } else {
                    b
                }
            }
        })
    }
}

/// Runs a whole program for `seq` new tokens after `past` cached ones, each launch on
/// threads `0..threads` in turn. `inputs` holds every `Param` and `Input` buffer by name
/// (exactly those, each of its declared element type and element count); `Temp` and
/// `Output` buffers are allocated poisoned, an `Alias` is the memory of its target, an
/// `Append` starts as a copy of its input's rows (poisoned after them), and the `Output`
/// and `Append` buffers are returned by name.
pub fn run_program(
    p: &Program,
    mut inputs: BTreeMap<String, KBufData>,
    seq: i64,
    past: i64,
    threads: i64,
) -> Result<BTreeMap<String, KData>, KernelRunError> {
    let err = |message: String| KernelRunError::Program {
        program: p.name.clone(),
        message,
    };
    verify_program(p).map_err(|e| err(e.to_string()))?;
    if threads < 1 {
        return Err(err(format!("{threads} threads")));
    }
    let (useq, upast) = match (usize::try_from(seq), usize::try_from(past)) {
        (Ok(s), Ok(pa)) => (s, pa),
        _ => return Err(err(format!("negative sizes seq={seq}, past={past}"))),
    };
    let counts: Vec<usize> = p
        .buffers
        .iter()
        .map(|b| {
            elem_count(b, useq, upast)
                .ok_or_else(|| err(format!("the size of buffer `{}` overflows", b.name)))
        })
        .collect::<Result<_, _>>()?;
    let roots: Vec<usize> = (0..p.buffers.len())
        .map(|i| alias_root(p, i).map_err(&err))
        .collect::<Result<_, _>>()?;

    // One memory per root buffer: the caller's, or owned here.
    enum Mem<'a> {
        Given(KBufData<'a>),
        Owned(KData),
        None,
    }
    let mut mems: Vec<Mem> = Vec::with_capacity(p.buffers.len());
    for (i, b) in p.buffers.iter().enumerate() {
        mems.push(match b.kind {
            BufferKind::Param | BufferKind::Input(_) => {
                let data = inputs
                    .remove(&b.name)
                    .ok_or_else(|| err(format!("no memory given for buffer `{}`", b.name)))?;
                if data.elem() != Some(b.elem) || data.len() != counts[i] {
                    return Err(err(format!(
                        "buffer `{}` is {}[{}] but was given {}[{}]",
                        b.name,
                        b.elem.as_str(),
                        counts[i],
                        data.elem().map_or("no memory", Elem::as_str),
                        data.len()
                    )));
                }
                Mem::Given(data)
            }
            BufferKind::Output(_) | BufferKind::Temp => {
                Mem::Owned(KData::poisoned(b.elem, counts[i]))
            }
            BufferKind::Alias { .. } => Mem::None,
            // The grown input: its old rows are the input's (copied here, where the
            // executors share the memory), the kernels write the rest.
            BufferKind::Append { to } => {
                let mut grown = KData::poisoned(b.elem, counts[i]);
                let old = match mems.get(to) {
                    Some(Mem::Given(d)) => d,
                    _ => return Err(err(format!("`{}` appends to a buffer not given", b.name))),
                };
                let mut view = grown.view();
                for e in 0..old.len() {
                    let v = old.get(e).ok_or_else(|| err("unreadable input".into()))?;
                    view.set(e, v)
                        .map_err(|m| err(format!("`{}`: {m}", b.name)))?;
                }
                Mem::Owned(grown)
            }
        });
    }
    if let Some(name) = inputs.keys().next() {
        return Err(err(format!(
            "memory given for `{name}`, which is not a param or input of the program"
        )));
    }

    for (li, l) in p.launches.iter().enumerate() {
        let k = &p.kernels[l.kernel];
        // The distinct roots this launch touches, in parameter order.
        let mut used: Vec<usize> = Vec::new();
        let mut slots = Vec::with_capacity(l.bufs.len());
        let mut lens = Vec::with_capacity(l.bufs.len());
        let mut scratch_slots = 0;
        for b in &l.bufs {
            match b {
                Some(bi) => {
                    let r = roots[*bi];
                    let pos = match used.iter().position(|&u| u == r) {
                        Some(pos) => pos,
                        None => {
                            used.push(r);
                            used.len() - 1
                        }
                    };
                    slots.push(pos);
                    lens.push(counts[*bi]);
                }
                None => {
                    slots.push(usize::MAX);
                    lens.push(0);
                    scratch_slots += 1;
                }
            }
        }
        // Move the memories out for the call so each is borrowed once, then put them back.
        let mut taken: Vec<Mem> = used
            .iter()
            .map(|&r| std::mem::replace(&mut mems[r], Mem::None))
            .collect();
        let mut views: Vec<KBufData> = Vec::with_capacity(used.len() + scratch_slots);
        views.extend(taken.iter_mut().map(|m| match m {
            Mem::Given(d) => d.reborrow(),
            Mem::Owned(d) => d.view(),
            Mem::None => KBufData::Unbound,
        }));
        for s in slots.iter_mut() {
            if *s == usize::MAX {
                views.push(KBufData::Unbound);
                *s = views.len() - 1;
            }
        }
        for t in 0..threads {
            exec(k, &mut views, &slots, Some(&lens), seq, past, t, threads).map_err(
                |e| match e {
                    KernelRunError::Kernel { kernel, message } => KernelRunError::Kernel {
                        kernel,
                        message: format!("launch {li}, thread {t}: {message}"),
                    },
                    other => other,
                },
            )?;
        }
        drop(views);
        for (r, m) in used.into_iter().zip(taken) {
            mems[r] = m;
        }
    }

    let mut out = BTreeMap::new();
    for (b, m) in p.buffers.iter().zip(mems) {
        if let (BufferKind::Output(_) | BufferKind::Append { .. }, Mem::Owned(d)) = (&b.kind, m) {
            out.insert(b.name.clone(), d);
        }
    }
    Ok(out)
}
