//! Kernel IR: what a fused graph node becomes before code generation — loop nests over
//! flat buffers with explicit tiling (loop steps), vector width, reductions (mutable
//! accumulators) and one parallel axis, independent of the target.
//!
//! A `Program` is the whole forward pass: buffer declarations with symbolic sizes, the
//! kernels, and the launch sequence binding buffers to kernel parameters. Every kernel
//! has the same calling convention on every target:
//!
//! ```text
//! void kernel(void **bufs, const int64_t *dims, int64_t thread, int64_t threads)
//! ```
//!
//! `bufs[i]` is the kernel's i-th buffer parameter, `dims[0]` is `seq` and `dims[1]` is
//! `past`. The one `Parallel` loop of a kernel (if any) is split into `threads` contiguous
//! chunks and chunk `thread` runs; everything outside it runs on every thread, so a kernel
//! with a parallel loop only writes to buffers inside it.
//!
//! **Invariant:** nothing here names a CPU or GPU feature. Targets read `LoopKind::Vector`
//! as a hint for the vector width and `Parallel` as the axis to spread over cores or a grid.

pub mod analysis;
pub mod interp;
pub mod lower;
mod parse;
mod print;
pub mod program;
pub mod tile;
pub mod vars;
pub mod verify;

pub use parse::{parse_kernel, parse_program, ParseError};
pub use tile::{Tile, TileOut, TileRef};

use crate::ir::{Dim, Io};
use serde::{Deserialize, Serialize};

/// Element type of a buffer in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Elem {
    F32,
    Bf16,
    F16,
    I32,
    /// Raw bytes (quantised weight blocks); loads zero-extend to `I64`.
    U8,
    /// 8-bit float e4m3fn (1 sign bit, 4 exponent bits with bias 7, 3 mantissa bits; no
    /// infinities, `0x7f`/`0xff` are NaN, the largest finite value is 448). Loads widen to
    /// `F32` exactly. Weights only: an f8 buffer is read-only, a store into one is
    /// rejected by the verifier (there is no rounding mode or saturation rule to agree on).
    F8,
}

impl Elem {
    pub fn as_str(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::U8 => "u8",
            Elem::F8 => "f8",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::Bf16 | Elem::F16 => 2,
            Elem::U8 | Elem::F8 => 1,
        }
    }

    /// By its text form (`f32`, `bf16`, ...).
    pub fn by_name(name: &str) -> Option<Elem> {
        [
            Elem::F32,
            Elem::Bf16,
            Elem::F16,
            Elem::I32,
            Elem::U8,
            Elem::F8,
        ]
        .into_iter()
        .find(|e| e.as_str() == name)
    }
}

/// Type of a scalar value in a kernel body. Loads widen: a float buffer (f32, bf16, f16,
/// f8) loads as `F32`, an `I32` buffer as `I64` (sign-extended), a `U8` buffer as `I64`
/// (zero-extended); stores narrow back to the buffer's type (bf16 and f16 round to nearest
/// even, integers keep their low bits; f8 buffers take no stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    F32,
    I64,
    Bool,
}

impl Ty {
    pub fn as_str(self) -> &'static str {
        match self {
            Ty::F32 => "f32",
            Ty::I64 => "i64",
            Ty::Bool => "bool",
        }
    }
}

/// A buffer parameter of a kernel (index into `Kernel::bufs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BufId(pub u32);

/// A scalar variable of a kernel (index into `Kernel::vars`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VarId(pub u32);

/// The runtime sizes every kernel receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DimVar {
    Seq,
    Past,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sin,
    Cos,
    Floor,
    /// `I64 → F32`.
    ToF32,
    /// `F32 → I64`, truncating toward zero.
    ToI64,
    /// `Bool → Bool`.
    Not,
    /// `I64 → F32`: the low 16 bits read as an IEEE half (exact; a NaN stays a NaN, its
    /// payload unspecified), the rest ignored; how block formats store their scales.
    F16Bits,
    /// `I64 → F32`: the low 32 bits read as an IEEE single (exact, bit for bit), the rest
    /// ignored; how block formats with f32 scales (FP8) store them.
    F32Bits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Float division, or integer division truncating toward zero.
    Div,
    /// Integer remainder (operands non-negative where used).
    Rem,
    Min,
    Max,
    /// `F32` power.
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    /// `I64` shift left by `0..64` bits (bits shifted out are lost).
    Shl,
    /// `I64` arithmetic shift right by `0..64` bits (the sign bit is copied in).
    Shr,
    /// `I64` bitwise and.
    BitAnd,
    /// `I64` bitwise or.
    BitOr,
}

/// A scalar expression. Operands of a binary op have the same type (no implicit casts).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    F32(f32),
    I64(i64),
    Bool(bool),
    Var(VarId),
    Dim(DimVar),
    /// Element `index` (flat, in elements) of a buffer, widened per `Ty`.
    Load {
        buf: BufId,
        index: Box<Expr>,
    },
    Un(UnOp, Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `if cond { a } else { b }` without branching.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// How a loop's iterations may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopKind {
    Serial,
    /// Iterations are independent and spread over threads (at most one per kernel).
    Parallel,
    /// Iterations may run in SIMD lanes of this width; accumulations into locals inside
    /// are reductions whose order may change (reassociation allowed). Inside, a product
    /// that feeds an addition may also be contracted into one fused multiply-add (one
    /// rounding instead of two); a target decides that per compiled kernel, so one kernel
    /// gives the same bits on every run.
    Vector(u32),
    /// Unroll by this factor.
    Unroll(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// An immutable scalar: `let v = e`.
    Let { var: VarId, value: Expr },
    /// A mutable scalar with an initial value: `local v = e` (accumulators).
    Local { var: VarId, init: Expr },
    /// Assign to a `Local`.
    Set { var: VarId, value: Expr },
    /// `buf[index] = value` (narrowed to the buffer's element type).
    Store {
        buf: BufId,
        index: Expr,
        value: Expr,
    },
    /// `for var in start..end step step`; `var` is `I64`.
    Loop {
        var: VarId,
        start: Expr,
        end: Expr,
        step: u64,
        kind: LoopKind,
        body: Vec<Stmt>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    /// A block of dot products over one reduction, with its operands' layout stated: the
    /// matmul tile that each target lowers itself (see [`Tile`]).
    Tile(Box<Tile>),
}

/// Whether a kernel reads or writes a buffer parameter; `Scratch` is private per-thread
/// memory of a constant size that the kernel allocates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    /// Private to each running thread, `len` elements, uninitialised.
    Scratch {
        len: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KBuf {
    /// The program buffer name it is usually bound to (`%12`, `@layers.0.attn.q.weight`),
    /// for reading the text form; launches bind by position.
    pub name: String,
    pub elem: Elem,
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KVar {
    pub name: String,
    pub ty: Ty,
}

/// One kernel: a function over buffers with the common calling convention.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Unique within a program; a valid C identifier.
    pub name: String,
    pub bufs: Vec<KBuf>,
    pub vars: Vec<KVar>,
    pub body: Vec<Stmt>,
}

/// A buffer of the whole program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub name: String,
    pub elem: Elem,
    /// Shape (sizes symbolic in seq and past); the element count is the product.
    pub shape: Vec<Dim>,
    #[serde(flatten)]
    pub kind: BufferKind,
}

/// What a program buffer is: its typed role in the program contract. Executors match on
/// it; no role is recognised by a buffer's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum BufferKind {
    /// A model parameter, bound by canonical tensor name (the buffer's name after `@`).
    Param,
    /// A runtime input (token ids, positions, a KV cache or a recurrent state).
    Input(Io),
    /// A result (the logits, an updated KV cache or recurrent state).
    Output(Io),
    /// An intermediate activation.
    Temp,
    /// The same memory as another buffer, read with another shape (reshape).
    Alias { of: usize },
    /// A named result that grows the `Input` buffer `to` along the first axis, in place
    /// (the KV cache appended without a copy). Contract, for every executor:
    /// - it has the input's name and element type, and the input's shape with a first
    ///   dimension of `rows(to) + n` (`[past+seq, ...]` for `[past, ...]`);
    /// - rows `[0, rows(to))` *are* the input's rows: the caller binds both buffers to
    ///   the same address, with room for this buffer's size, and after the call the input's
    ///   memory holds the grown contents (no swap, no copy);
    /// - kernels write only the new rows `[rows(to), rows(to) + n)` of it and never the
    ///   input; a kernel may take both as parameters and then reads the old rows through
    ///   either.
    ///
    /// Only lowering with `KernelOptions::append_in_place` produces it; otherwise the
    /// grown cache is an ordinary `Output` that the appending kernel fills with a copy of
    /// the old rows and the new ones.
    Append { to: usize },
}

/// A kernel call: `bufs[i]` is the program buffer bound to the kernel's i-th parameter
/// (`None` for scratch parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub kernel: usize,
    pub bufs: Vec<Option<usize>>,
}

/// A whole forward pass in kernel form.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub launches: Vec<Launch>,
}

/// Small constructors so kernel generators read like the loops they build.
pub mod build {
    use super::*;

    pub fn f(x: f32) -> Expr {
        Expr::F32(x)
    }
    pub fn i(x: i64) -> Expr {
        Expr::I64(x)
    }
    pub fn var(v: VarId) -> Expr {
        Expr::Var(v)
    }
    pub fn seq() -> Expr {
        Expr::Dim(DimVar::Seq)
    }
    pub fn past() -> Expr {
        Expr::Dim(DimVar::Past)
    }
    pub fn load(buf: BufId, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
        }
    }
    pub fn un(op: UnOp, a: Expr) -> Expr {
        Expr::Un(op, Box::new(a))
    }
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }
    pub fn add(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Add, a, b)
    }
    pub fn sub(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Sub, a, b)
    }
    pub fn mul(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Mul, a, b)
    }
    pub fn div(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Div, a, b)
    }
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    impl Kernel {
        pub fn new(name: impl Into<String>) -> Kernel {
            Kernel {
                name: name.into(),
                bufs: Vec::new(),
                vars: Vec::new(),
                body: Vec::new(),
            }
        }

        pub fn buf(&mut self, name: impl Into<String>, elem: Elem, access: Access) -> BufId {
            self.bufs.push(KBuf {
                name: name.into(),
                elem,
                access,
            });
            BufId(self.bufs.len() as u32 - 1)
        }

        pub fn var(&mut self, name: impl Into<String>, ty: Ty) -> VarId {
            self.vars.push(KVar {
                name: name.into(),
                ty,
            });
            VarId(self.vars.len() as u32 - 1)
        }
    }
}
