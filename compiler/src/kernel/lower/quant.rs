//! Kernels that read weights in their stored format: block-quantised weights (GGML's
//! Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) stay raw bytes in memory and are decoded inside
//! the matmul and gather kernels, and float weights are read in their stored float type.
//!
//! The graph stays dtype-agnostic: how each parameter is stored is a property of the
//! bound weights, given to [`program_with`] as a function of the parameter's name. A
//! quantised parameter becomes a `u8` buffer of shape `[rows, row_bytes]` and every
//! kernel reading it decodes blocks with integer bit operations and `f16bits`.
//!
//! **Decoding matches the reference dequantisation bit for bit** (llama.cpp's
//! `dequantize_row_*`): scales widen from f16, each element is one f32 multiply and at
//! most one subtract or add, in the same order. A matmul multiplies each decoded weight
//! with its activation and accumulates in f32, so it differs from an f32 matmul over the
//! dequantised weights only in summation order.
//!
//! Shapes: parallel over blocks of `COLS` output columns, then token rows, then columns,
//! with one dot product per weight part. **Decode** (matrix-vector): each dot product
//! decodes the quantised row block by block, vector loops inside a block adding element
//! `e` of every block into a per-thread scratch `lanes[e]` (no reduction inside the short
//! block loops), summed once at the end; each quantised row is streamed once. **Prefill**
//! (matrix-matrix): the column block's quantised rows are first decoded into a per-thread
//! f32 `tile` (bit-exact dequantised values), then every token row takes dense dot
//! products with the tile, so each weight is decoded once per call.

use super::basic::{clamped_swiglu_expr, unary_expr};
use super::{ix, KernelError, KernelOptions, Kernels};
use crate::ir::{Dim, Epilogue, Graph, LinearOp, NodeId, NormKind, NormOp, Op, Value};
use crate::kernel::build::{self, f, i, load, un};
use crate::kernel::{
    Access, BinOp, BufId, BufferKind, Elem, Expr, Kernel, Launch, LoopKind, Program, Stmt, Ty,
    UnOp, VarId,
};

/// Output columns per parallel iteration of a quantised matmul.
const COLS: i64 = 64;
/// The vector width hint of inner loops.
const VEC: u32 = 16;

/// A GGML block format: `block_len` elements stored in `block_bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlockFormat {
    /// f16 `d`, 16 bytes of nibbles; `x = (q - 8) * d`.
    Q4_0,
    /// f16 `d`, f16 `m`, 16 bytes of nibbles; `x = d * q + m`.
    Q4_1,
    /// f16 `d`, 32 signed bytes; `x = q * d`.
    Q8_0,
    /// 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit quants.
    Q4K,
    /// Q4_K with a fifth bit per element.
    Q5K,
    /// 16 sub-blocks of 16 with signed 8-bit scales, 6-bit quants.
    Q6K,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 6] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
    ];

    pub fn block_len(self) -> u64 {
        match self {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0 => 32,
            BlockFormat::Q4K | BlockFormat::Q5K | BlockFormat::Q6K => 256,
        }
    }

    pub fn block_bytes(self) -> u64 {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
        }
    }

    /// llama.cpp's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q5K => "Q5_K",
            BlockFormat::Q6K => "Q6_K",
        }
    }

    /// The lower-case name used in kernel names (`linear_q4_k_...`).
    fn tag(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4K => "q4_k",
            BlockFormat::Q5K => "q5_k",
            BlockFormat::Q6K => "q6_k",
        }
    }
}

/// How a parameter is stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamFormat {
    F32,
    F16,
    Bf16,
    Block(BlockFormat),
}

impl ParamFormat {
    /// The element type of the parameter's program buffer.
    pub fn elem(self) -> Elem {
        match self {
            ParamFormat::F32 => Elem::F32,
            ParamFormat::F16 => Elem::F16,
            ParamFormat::Bf16 => Elem::Bf16,
            ParamFormat::Block(_) => Elem::U8,
        }
    }
}

/// The kernel program of `graph` with each parameter read in the format `format` gives
/// for its name (`None`: the graph's dtype, as [`super::program`] does).
///
/// A block format is honoured where every node reading the parameter can decode it: the
/// weight of a `MatMul` or a `Linear` part (2-D, rows a whole number of blocks) and the
/// table of a `Gather`. Any other reader (expert weights, say) keeps the parameter in the
/// graph's dtype, so the caller converts it as before. A float format is honoured
/// everywhere: loads widen to f32 whatever the stored float type.
pub fn program_with(
    graph: &Graph,
    format: &dyn Fn(&str) -> Option<ParamFormat>,
) -> Result<Program, KernelError> {
    program_with_options(graph, format, &KernelOptions::default())
}

/// [`program_with`] with lowering options (see [`KernelOptions`]).
pub fn program_with_options(
    graph: &Graph,
    format: &dyn Fn(&str) -> Option<ParamFormat>,
    opts: &KernelOptions,
) -> Result<Program, KernelError> {
    let mut program = super::program_opts(graph, opts)?;
    let formats = effective_formats(graph, format);
    let elem_of = |pi: usize| -> Option<Elem> {
        let p = &graph.params[pi];
        let declared = super::elem(p.dtype, 0, "").ok();
        formats[pi]
            .map(ParamFormat::elem)
            .filter(|e| Some(*e) != declared)
    };
    if (0..graph.params.len()).all(|pi| elem_of(pi).is_none()) {
        return Ok(program);
    }

    // Parameter buffers take their stored type (and byte shape for blocks).
    let mut buf_param: Vec<Option<usize>> = vec![None; program.buffers.len()];
    for (bi, b) in program.buffers.iter_mut().enumerate() {
        if b.kind != BufferKind::Param {
            continue;
        }
        let Some(pid) = b.name.strip_prefix('@').and_then(|n| graph.param_id(n)) else {
            continue;
        };
        let pi = pid.0 as usize;
        buf_param[bi] = Some(pi);
        match formats[pi] {
            Some(ParamFormat::Block(fmt)) => {
                let shape = &graph.params[pi].shape;
                let (rows, k) = (shape[0], shape[1]);
                b.elem = Elem::U8;
                b.shape = vec![
                    Dim::c(rows),
                    Dim::c(k / fmt.block_len() * fmt.block_bytes()),
                ];
            }
            Some(float) => b.elem = float.elem(),
            None => {}
        }
    }

    // Which node each launch computes: `program` launches every computing node in order,
    // then the output copies.
    let computing: Vec<NodeId> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !matches!(n.op, Op::Input { .. } | Op::Reshape { .. }))
        .map(|(i, _)| NodeId(i as u32))
        .collect();
    if computing.len() > program.launches.len() {
        return Err(KernelError::Invalid {
            node: 0,
            message: format!(
                "{} computing nodes but {} launches",
                computing.len(),
                program.launches.len()
            ),
        });
    }

    let old_kernels = std::mem::take(&mut program.kernels);
    let old_launches = std::mem::take(&mut program.launches);
    let mut kernels = Kernels::default();
    for (li, launch) in old_launches.into_iter().enumerate() {
        let Some(&id) = computing.get(li) else {
            let k = old_kernels[launch.kernel].clone();
            let kernel = kernels.add("copy", k);
            program.launches.push(Launch {
                kernel,
                bufs: launch.bufs,
            });
            continue;
        };
        let node = graph.node(id);
        // The operands as bound: a parameter operand must be its parameter's buffer.
        let mut block = false;
        let mut retyped = false;
        for (j, v) in node.inputs.iter().enumerate() {
            if let Value::Param(p) = v {
                let bound = launch.bufs.get(j).copied().flatten();
                if bound.and_then(|b| buf_param[b]) != Some(p.0 as usize) {
                    return Err(KernelError::Invalid {
                        node: id.0,
                        message: format!(
                            "launch {li} does not bind operand {j} to @{}",
                            graph.param(*p).name
                        ),
                    });
                }
                let pi = p.0 as usize;
                block |= matches!(formats[pi], Some(ParamFormat::Block(_)));
                retyped |= elem_of(pi).is_some();
            }
        }
        let kind = super::kind_name(&node.op);
        let (kind, k) = if block {
            let (tag, k) = kernel(graph, id, &formats)?;
            (format!("{kind}_{tag}"), k)
        } else if retyped {
            let mut k = old_kernels[launch.kernel].clone();
            for (j, v) in node.inputs.iter().enumerate() {
                if let (Value::Param(p), Some(kb)) = (v, k.bufs.get_mut(j)) {
                    if let Some(e) = elem_of(p.0 as usize) {
                        kb.elem = e;
                    }
                }
            }
            (kind.to_string(), k)
        } else {
            (kind.to_string(), old_kernels[launch.kernel].clone())
        };
        // Operands and result as before; scratch parameters unbound.
        let mut bufs: Vec<Option<usize>> = launch.bufs[..node.inputs.len() + 1].to_vec();
        bufs.resize(k.bufs.len(), None);
        let kernel = kernels.add(&kind, k);
        program.launches.push(Launch { kernel, bufs });
    }
    program.kernels = kernels.kernels;
    Ok(program)
}

/// The formats `program_with` honours, per parameter id.
fn effective_formats(
    graph: &Graph,
    format: &dyn Fn(&str) -> Option<ParamFormat>,
) -> Vec<Option<ParamFormat>> {
    let mut formats: Vec<Option<ParamFormat>> =
        graph.params.iter().map(|p| format(&p.name)).collect();
    for (pi, p) in graph.params.iter().enumerate() {
        if let Some(ParamFormat::Block(fmt)) = formats[pi] {
            let fits = p.shape.len() == 2 && p.shape[1] % fmt.block_len() == 0;
            if !fits {
                formats[pi] = None;
            }
        }
    }
    for node in &graph.nodes {
        for (j, v) in node.inputs.iter().enumerate() {
            if let Value::Param(p) = v {
                let pi = p.0 as usize;
                if matches!(formats.get(pi), Some(Some(ParamFormat::Block(_))))
                    && !decodes_blocks(&node.op, j)
                {
                    formats[pi] = None;
                }
            }
        }
    }
    formats
}

/// Whether operand `j` of `op` may be block-quantised.
fn decodes_blocks(op: &Op, j: usize) -> bool {
    match op {
        Op::Gather => j == 0,
        Op::MatMul => j == 1,
        Op::Linear(l) => {
            let w = l.layout().weights;
            (w..w + l.parts()).contains(&j)
        }
        _ => false,
    }
}

/// The kernel of a node that reads at least one block-quantised parameter, and a tag
/// naming the formats for the kernel's name.
fn kernel(
    graph: &Graph,
    id: NodeId,
    formats: &[Option<ParamFormat>],
) -> Result<(String, Kernel), KernelError> {
    let node = graph.node(id);
    let mut k = Kernel::new("quant");
    let mut ins = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    for (j, v) in node.inputs.iter().enumerate() {
        let ty = graph.value_type(*v).ok_or_else(|| KernelError::Invalid {
            node: id.0,
            message: format!("operand {j} does not exist"),
        })?;
        let fmt = match v {
            Value::Param(p) => formats.get(p.0 as usize).copied().flatten(),
            Value::Node(_) => None,
        };
        let elem = match fmt {
            Some(f) => f.elem(),
            None => super::elem(ty.dtype, id.0, &format!("operand {j}"))?,
        };
        let block = match fmt {
            Some(ParamFormat::Block(b)) => {
                if !tags.contains(&b.tag()) {
                    tags.push(b.tag());
                }
                Some(b)
            }
            _ => None,
        };
        let buf = k.buf(format!("in{j}"), elem, Access::Read);
        ins.push(Operand {
            buf,
            shape: ty.shape,
            block,
        });
    }
    let elem = super::elem(node.ty.dtype, id.0, "result")?;
    let out = k.buf("out", elem, Access::Write);
    let mut g = Gen {
        k,
        node: id.0,
        ins,
        out,
        lanes: None,
        prefill: graph.mode == crate::ir::Mode::Prefill,
    };
    match &node.op {
        Op::Gather => g.gather()?,
        Op::MatMul => g.linear(&LinearOp {
            norm: None,
            bias: vec![false],
            epilogue: Epilogue::None,
            residual: false,
        })?,
        Op::Linear(l) => g.linear(l)?,
        _ => {
            return Err(KernelError::Unsupported {
                node: id.0,
                op: format!("quantised operands of `{}`", crate::ir::op_text(&node.op)),
            })
        }
    }
    Ok((tags.join("_"), g.k))
}

struct Operand {
    buf: BufId,
    shape: Vec<Dim>,
    block: Option<BlockFormat>,
}

struct Gen {
    k: Kernel,
    node: u32,
    ins: Vec<Operand>,
    out: BufId,
    /// Per-element partial sums of a quantised dot product (scratch, made on first use).
    lanes: Option<BufId>,
    /// A prefill kernel: quantised weight rows are decoded once per column block into
    /// scratch and reused for every token row.
    prefill: bool,
}

fn lp(var: VarId, start: Expr, end: Expr, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        start,
        end,
        step: 1,
        kind,
        body,
    }
}

fn bit_and(a: Expr, m: i64) -> Expr {
    build::bin(BinOp::BitAnd, a, i(m))
}

fn shr(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shr, a, i(n))
    }
}

fn shl(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shl, a, i(n))
    }
}

fn bit_or(a: Expr, b: Expr) -> Expr {
    build::bin(BinOp::BitOr, a, b)
}

/// A byte (0..=255) as a signed byte (-128..=127): shift it to the top and back.
fn sign_extend_byte(b: Expr) -> Expr {
    shr(shl(b, 56), 56)
}

/// Decodes one block of `fmt` starting at byte `base` of `w` (an `I64` variable). Every
/// element's value goes to `emit(kernel, element index in the block, value)`, which
/// returns the statements consuming it. Per-block scales are bound once, then vector
/// loops over the quants each hand out two or four elements per iteration.
fn decode_block(
    k: &mut Kernel,
    fmt: BlockFormat,
    w: BufId,
    base: &Expr,
    emit: &mut dyn FnMut(&mut Kernel, Expr, Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let byte = |off: Expr| load(w, ix::add(base.clone(), off));
    let half = |at: i64| un(UnOp::F16Bits, bit_or(byte(i(at)), shl(byte(i(at + 1)), 8)));
    let mut st = Vec::new();
    let bind = |k: &mut Kernel, st: &mut Vec<Stmt>, name: &str, ty: Ty, value: Expr| {
        let v = k.var(name, ty);
        st.push(Stmt::Let { var: v, value });
        build::var(v)
    };
    let to_f = |e: Expr| un(UnOp::ToF32, e);
    match fmt {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let m = (fmt == BlockFormat::Q4_1).then(|| bind(k, &mut st, "m", Ty::F32, half(2)));
            let qs = if m.is_some() { 4 } else { 2 };
            let j = k.var("j", Ty::I64);
            let mut body = Vec::new();
            let q = bind(
                k,
                &mut body,
                "q",
                Ty::I64,
                byte(ix::add(build::var(j), i(qs))),
            );
            for (e, nib) in [
                (build::var(j), bit_and(q.clone(), 15)),
                (ix::add(build::var(j), i(16)), shr(q.clone(), 4)),
            ] {
                let value = match &m {
                    Some(m) => build::add(build::mul(d.clone(), to_f(nib)), m.clone()),
                    None => build::mul(to_f(ix::sub(nib, i(8))), d.clone()),
                };
                body.extend(emit(k, e, value));
            }
            st.push(lp(j, i(0), i(16), LoopKind::Vector(VEC), body));
        }
        BlockFormat::Q8_0 => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let j = k.var("j", Ty::I64);
            let q = sign_extend_byte(byte(ix::add(build::var(j), i(2))));
            let body = emit(k, build::var(j), build::mul(to_f(q), d));
            st.push(lp(j, i(0), i(32), LoopKind::Vector(VEC), body));
        }
        BlockFormat::Q4K | BlockFormat::Q5K => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let dmin = bind(k, &mut st, "dmin", Ty::F32, half(2));
            // The 6-bit scale and min of each of the 8 sub-blocks, from 12 packed bytes.
            let s = |j: i64| byte(i(4 + j));
            let mut d1 = Vec::new();
            let mut m1 = Vec::new();
            for sub in 0..8 {
                let (sc, mn) = if sub < 4 {
                    (bit_and(s(sub), 63), bit_and(s(sub + 4), 63))
                } else {
                    (
                        bit_or(bit_and(s(sub + 4), 15), shl(shr(s(sub - 4), 6), 4)),
                        bit_or(shr(s(sub + 4), 4), shl(shr(s(sub), 6), 4)),
                    )
                };
                d1.push(bind(
                    k,
                    &mut st,
                    "d1",
                    Ty::F32,
                    build::mul(d.clone(), to_f(sc)),
                ));
                m1.push(bind(
                    k,
                    &mut st,
                    "m1",
                    Ty::F32,
                    build::mul(dmin.clone(), to_f(mn)),
                ));
            }
            let (qh, qs) = if fmt == BlockFormat::Q5K {
                (Some(16), 48)
            } else {
                (None, 16)
            };
            // Sub-blocks 2g and 2g+1 share 32 bytes of quants: low nibbles, then high.
            for g in 0..4i64 {
                let l = k.var("l", Ty::I64);
                let mut body = Vec::new();
                let q = bind(
                    k,
                    &mut body,
                    "q",
                    Ty::I64,
                    byte(ix::add(build::var(l), i(qs + 32 * g))),
                );
                let h = qh.map(|at| {
                    bind(
                        k,
                        &mut body,
                        "h",
                        Ty::I64,
                        byte(ix::add(build::var(l), i(at))),
                    )
                });
                for hi in 0..2i64 {
                    let sub = (2 * g + hi) as usize;
                    let nib = if hi == 0 {
                        bit_and(q.clone(), 15)
                    } else {
                        shr(q.clone(), 4)
                    };
                    let v = match &h {
                        Some(h) => bit_or(nib, shl(bit_and(shr(h.clone(), sub as i64), 1), 4)),
                        None => nib,
                    };
                    let value = build::sub(build::mul(d1[sub].clone(), to_f(v)), m1[sub].clone());
                    let e = ix::add(build::var(l), i(64 * g + 32 * hi));
                    body.extend(emit(k, e, value));
                }
                st.push(lp(l, i(0), i(32), LoopKind::Vector(VEC), body));
            }
        }
        BlockFormat::Q6K => {
            let d = bind(k, &mut st, "d", Ty::F32, half(208));
            let d1: Vec<Expr> = (0..16)
                .map(|s| {
                    let sc = to_f(sign_extend_byte(byte(i(192 + s))));
                    bind(k, &mut st, "d1", Ty::F32, build::mul(d.clone(), sc))
                })
                .collect();
            // Each half of 128 elements: 64 bytes of low nibbles, 32 bytes of high bits;
            // the vector loop covers 16 elements of one scale in each quarter.
            for h in 0..2i64 {
                for is in 0..2i64 {
                    let l = k.var("l", Ty::I64);
                    let ll = ix::add(build::var(l), i(16 * is));
                    let mut body = Vec::new();
                    let a = bind(
                        k,
                        &mut body,
                        "a",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(64 * h))),
                    );
                    let b = bind(
                        k,
                        &mut body,
                        "b",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(64 * h + 32))),
                    );
                    let hb = bind(
                        k,
                        &mut body,
                        "hb",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(128 + 32 * h))),
                    );
                    let quarters = [
                        (bit_and(a.clone(), 15), 0),
                        (bit_and(b.clone(), 15), 1),
                        (shr(a, 4), 2),
                        (shr(b, 4), 3),
                    ];
                    for (low, qn) in quarters {
                        let high = bit_and(shr(hb.clone(), 2 * qn), 3);
                        let q = ix::sub(bit_or(low, shl(high, 4)), i(32));
                        let scale = d1[(8 * h + 2 * qn + is) as usize].clone();
                        let e = ix::add(ll.clone(), i(128 * h + 32 * qn));
                        body.extend(emit(k, e, build::mul(scale, to_f(q))));
                    }
                    st.push(lp(l, i(0), i(16), LoopKind::Vector(VEC), body));
                }
            }
        }
    }
    st
}

impl Gen {
    fn invalid(&self, message: impl Into<String>) -> KernelError {
        KernelError::Invalid {
            node: self.node,
            message: message.into(),
        }
    }

    fn bind(&mut self, name: &str, ty: Ty, value: Expr) -> (Stmt, Expr) {
        let v = self.k.var(name, ty);
        (Stmt::Let { var: v, value }, build::var(v))
    }

    fn shape(&self, j: usize, rank: usize) -> Result<Vec<Dim>, KernelError> {
        let op = self
            .ins
            .get(j)
            .ok_or_else(|| self.invalid(format!("missing operand {j}")))?;
        if op.shape.len() < rank {
            return Err(self.invalid(format!(
                "operand {j} has rank {}, expected at least {rank}",
                op.shape.len()
            )));
        }
        Ok(op.shape.clone())
    }

    /// Rows of a block-quantised table, decoded into the rows of `ids`.
    fn gather(&mut self) -> Result<(), KernelError> {
        let table = self.shape(0, 2)?;
        let ids = self.shape(1, 0)?;
        let fmt = self.ins[0]
            .block
            .ok_or_else(|| self.invalid("the gathered table is not block-quantised"))?;
        let (rows, width) = match (table[0].as_const(), table[1].as_const()) {
            (Some(r), Some(w)) if table.len() == 2 => (r as i64, w as i64),
            _ => return Err(self.invalid("a quantised table must be 2-D and constant")),
        };
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = width / bl;
        let (tb, idb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        let t = self.k.var("t", Ty::I64);
        // Out-of-range ids are clamped, as in the dense gather.
        let clamped = ix::min(
            build::bin(BinOp::Max, load(idb, build::var(t)), i(0)),
            i(rows - 1),
        );
        let (st_row, row) = self.bind("row", Ty::I64, clamped);
        let blk = self.k.var("blk", Ty::I64);
        let (st_base, base) = self.bind(
            "base",
            Ty::I64,
            ix::add(ix::mul(row, i(nb * bb)), ix::mul(build::var(blk), i(bb))),
        );
        let out_at = ix::add(
            ix::mul(build::var(t), i(width)),
            ix::mul(build::var(blk), i(bl)),
        );
        let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
            vec![Stmt::Store {
                buf: out,
                index: ix::add(out_at.clone(), e),
                value,
            }]
        };
        let mut per_block = vec![st_base];
        per_block.extend(decode_block(&mut self.k, fmt, tb, &base, &mut emit));
        let body = vec![st_row, lp(blk, i(0), i(nb), LoopKind::Serial, per_block)];
        self.k
            .body
            .push(lp(t, i(0), ix::prod(&ids), LoopKind::Parallel, body));
        Ok(())
    }

    /// `sum_k x[xbase + k] * w[o, k]` for weight operand `wj`: decoded block by block
    /// when it is quantised, a plain vector loop otherwise.
    fn dot(
        &mut self,
        wj: usize,
        o: Expr,
        (x, xbase): (BufId, &Expr),
        k: i64,
        tile: Option<(BufId, Expr)>,
    ) -> (Vec<Stmt>, Expr) {
        let acc = self.k.var("acc", Ty::F32);
        let mut st = vec![Stmt::Local {
            var: acc,
            init: f(0.0),
        }];
        let w = self.ins[wj].buf;
        // A row already decoded into the tile is read like a dense one.
        let (dense, dense_at, block) = match tile {
            Some((tb, at)) if self.ins[wj].block.is_some() => (tb, at, None),
            _ => (w, ix::mul(o.clone(), i(k)), self.ins[wj].block),
        };
        match block {
            Some(fmt) => {
                let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
                let nb = k / bl;
                let blk = self.k.var("blk", Ty::I64);
                let (st_base, base) = self.bind(
                    "base",
                    Ty::I64,
                    ix::mul(ix::add(ix::mul(o, i(nb)), build::var(blk)), i(bb)),
                );
                let (st_xb, xb) = self.bind(
                    "xb",
                    Ty::I64,
                    ix::add(xbase.clone(), ix::mul(build::var(blk), i(bl))),
                );
                // Element `e` of every block adds into `lanes[e]`, so the vector loops
                // inside a block carry no reduction; the lanes are summed once at the end.
                let lanes = match self.lanes {
                    Some(b) => b,
                    None => {
                        let len = BlockFormat::ALL.iter().map(|f| f.block_len()).max();
                        let b = self.k.buf(
                            "lanes",
                            Elem::F32,
                            Access::Scratch {
                                len: len.unwrap_or(256),
                            },
                        );
                        self.lanes = Some(b);
                        b
                    }
                };
                let e0 = self.k.var("e", Ty::I64);
                st.push(lp(
                    e0,
                    i(0),
                    i(bl),
                    LoopKind::Vector(VEC),
                    vec![Stmt::Store {
                        buf: lanes,
                        index: build::var(e0),
                        value: f(0.0),
                    }],
                ));
                let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
                    vec![Stmt::Store {
                        buf: lanes,
                        index: e.clone(),
                        value: build::add(
                            load(lanes, e.clone()),
                            build::mul(load(x, ix::add(xb.clone(), e)), value),
                        ),
                    }]
                };
                let mut per_block = vec![st_base, st_xb];
                per_block.extend(decode_block(&mut self.k, fmt, w, &base, &mut emit));
                st.push(lp(blk, i(0), i(nb), LoopKind::Serial, per_block));
                let e1 = self.k.var("e", Ty::I64);
                st.push(lp(
                    e1,
                    i(0),
                    i(bl),
                    LoopKind::Vector(VEC),
                    vec![Stmt::Set {
                        var: acc,
                        value: build::add(build::var(acc), load(lanes, build::var(e1))),
                    }],
                ));
            }
            None => {
                let kk = self.k.var("kk", Ty::I64);
                let value = build::add(
                    build::var(acc),
                    build::mul(
                        load(x, ix::add(xbase.clone(), build::var(kk))),
                        load(dense, ix::add(dense_at, build::var(kk))),
                    ),
                );
                st.push(lp(
                    kk,
                    i(0),
                    i(k),
                    LoopKind::Vector(VEC),
                    vec![Stmt::Set { var: acc, value }],
                ));
            }
        }
        (st, build::var(acc))
    }

    /// Statements normalising row `xbase..xbase + k` of `x` into scratch `xs`, as the
    /// dense kernels order the arithmetic.
    fn norm_row(
        &mut self,
        n: &NormOp,
        (x, xbase): (BufId, &Expr),
        (w, b): (Option<BufId>, Option<BufId>),
        xs: BufId,
        k: i64,
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        let kf = f(k as f32);
        let at = |kk: VarId| ix::add(xbase.clone(), build::var(kk));
        let mean = match n.kind {
            NormKind::Rms => None,
            NormKind::Layer => {
                let sum = self.k.var("sum", Ty::F32);
                let kk = self.k.var("kk", Ty::I64);
                out.push(Stmt::Local {
                    var: sum,
                    init: f(0.0),
                });
                out.push(lp(
                    kk,
                    i(0),
                    i(k),
                    LoopKind::Vector(VEC),
                    vec![Stmt::Set {
                        var: sum,
                        value: build::add(build::var(sum), load(x, at(kk))),
                    }],
                ));
                let (st, m) = self.bind("mean", Ty::F32, build::div(build::var(sum), kf.clone()));
                out.push(st);
                Some(m)
            }
        };
        let sq = self.k.var("sq", Ty::F32);
        let kk = self.k.var("kk", Ty::I64);
        let centered = |e: Expr| match &mean {
            Some(m) => build::sub(e, m.clone()),
            None => e,
        };
        let (st_d, d) = self.bind("d", Ty::F32, centered(load(x, at(kk))));
        out.push(Stmt::Local {
            var: sq,
            init: f(0.0),
        });
        out.push(lp(
            kk,
            i(0),
            i(k),
            LoopKind::Vector(VEC),
            vec![
                st_d,
                Stmt::Set {
                    var: sq,
                    value: build::add(build::var(sq), build::mul(d.clone(), d)),
                },
            ],
        ));
        let inv = build::div(
            f(1.0),
            un(
                UnOp::Sqrt,
                build::add(build::div(build::var(sq), kf), f(n.eps as f32)),
            ),
        );
        let (st, inv) = self.bind("inv", Ty::F32, inv);
        out.push(st);
        let kk = self.k.var("kk", Ty::I64);
        let mut y = build::mul(centered(load(x, at(kk))), inv);
        if let Some(w) = w {
            let wv = load(w, build::var(kk));
            y = build::mul(
                y,
                if n.plus_one {
                    build::add(f(1.0), wv)
                } else {
                    wv
                },
            );
        }
        if let Some(b) = b {
            y = build::add(y, load(b, build::var(kk)));
        }
        out.push(lp(
            kk,
            i(0),
            i(k),
            LoopKind::Vector(VEC),
            vec![Stmt::Store {
                buf: xs,
                index: build::var(kk),
                value: y,
            }],
        ));
        out
    }

    /// Statements decoding row `row` of quantised weight operand `wj` (width `k`) into
    /// `dst[at..at + k]`.
    fn decode_row(&mut self, wj: usize, row: Expr, (dst, at): (BufId, Expr), k: i64) -> Vec<Stmt> {
        let Some(fmt) = self.ins[wj].block else {
            return Vec::new();
        };
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = k / bl;
        let w = self.ins[wj].buf;
        let blk = self.k.var("blk", Ty::I64);
        let (st_base, base) = self.bind(
            "base",
            Ty::I64,
            ix::mul(ix::add(ix::mul(row, i(nb)), build::var(blk)), i(bb)),
        );
        let (st_ob, ob) = self.bind("ob", Ty::I64, ix::add(at, ix::mul(build::var(blk), i(bl))));
        let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
            vec![Stmt::Store {
                buf: dst,
                index: ix::add(ob.clone(), e),
                value,
            }]
        };
        let mut per_block = vec![st_base, st_ob];
        per_block.extend(decode_block(&mut self.k, fmt, w, &base, &mut emit));
        vec![lp(blk, i(0), i(nb), LoopKind::Serial, per_block)]
    }

    /// A matmul with its norm prologue, parts, biases, epilogue and residual, reading
    /// each weight part in its stored format.
    fn linear(&mut self, op: &LinearOp) -> Result<(), KernelError> {
        let l = op.layout();
        if self.ins.len() != l.arity || op.parts() == 0 {
            return Err(self.invalid(format!(
                "linear expects {} operands, found {}",
                l.arity,
                self.ins.len()
            )));
        }
        let x = self.shape(0, 1)?;
        let r = x.len();
        let kd = x[r - 1];
        let k = kd
            .as_const()
            .ok_or_else(|| self.invalid("a matmul over a symbolic width"))? as i64;
        let m = ix::prod(&x[..r - 1]);
        let mut widths = Vec::new();
        for p in 0..op.parts() {
            let w = self.shape(l.weights + p, 2)?;
            let n = w[0]
                .as_const()
                .ok_or_else(|| self.invalid("a weight with a symbolic width"))?;
            if w.len() != 2 || w[1] != kd {
                return Err(self.invalid(format!("weight part {p} does not fit x's width {kd}")));
            }
            if let Some(fmt) = self.ins[l.weights + p].block {
                if k % fmt.block_len() as i64 != 0 {
                    return Err(self.invalid(format!(
                        "weight part {p}: width {k} is not whole {}-element blocks",
                        fmt.block_len()
                    )));
                }
            }
            widths.push(n as i64);
        }
        let gated = matches!(
            op.epilogue,
            Epilogue::Glu { .. } | Epilogue::ClampedGlu { .. }
        );
        if gated && (widths.len() != 2 || widths[0] != widths[1]) {
            return Err(self.invalid("a gated epilogue needs two parts of equal width"));
        }
        let ncols: i64 = if gated {
            widths[0]
        } else {
            widths.iter().sum()
        };
        let (xb, ob) = (self.ins[0].buf, self.out);
        let mut bias: Vec<Option<BufId>> = Vec::new();
        let mut next = l.biases;
        for has in &op.bias {
            if *has {
                bias.push(Some(self.ins[next].buf));
                next += 1;
            } else {
                bias.push(None);
            }
        }
        let res = l.residual.map(|j| self.ins[j].buf);

        let cb = self.k.var("cb", Ty::I64);
        let t = self.k.var("t", Ty::I64);
        let c = self.k.var("c", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(COLS)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(COLS)), i(ncols)),
        );
        block.push(st);

        // Which parts a column reads: the gated pair, or one part found by offset.
        let gate_up = match op.epilogue {
            Epilogue::Glu { gate, .. } | Epilogue::ClampedGlu { gate, .. } if gate <= 1 => {
                Some((gate, 1 - gate))
            }
            _ => None,
        };
        let mut offsets = Vec::new();
        let mut off = 0;
        for w in &widths {
            offsets.push(off);
            off += w;
        }
        // Prefill: decode the block's quantised rows once into `tile` (a slot of `COLS`
        // rows per gated part), then every token row reads them as dense rows.
        let quantised = (0..op.parts()).any(|p| self.ins[l.weights + p].block.is_some());
        let tile = (self.prefill && quantised).then(|| {
            let slots = if gated { 2 } else { 1 };
            self.k.buf(
                "tile",
                Elem::F32,
                Access::Scratch {
                    len: (slots * COLS * k) as u64,
                },
            )
        });
        let slot_at = |slot: i64, col: Expr, c0: &Expr| {
            ix::mul(ix::add(i(slot * COLS), ix::sub(col, c0.clone())), i(k))
        };
        if let Some(tb) = tile {
            let cf = self.k.var("c", Ty::I64);
            let mut fill = Vec::new();
            if let Some((gate, up)) = gate_up.filter(|_| gated) {
                for (slot, p) in [(0, gate), (1, up)] {
                    let at = slot_at(slot, build::var(cf), &c0);
                    fill.extend(self.decode_row(l.weights + p, build::var(cf), (tb, at), k));
                }
            } else {
                let mut chain: Vec<Stmt> = Vec::new();
                for p in (0..op.parts()).rev() {
                    let (st, o) = self.bind("o", Ty::I64, ix::sub(build::var(cf), i(offsets[p])));
                    let at = slot_at(0, build::var(cf), &c0);
                    let mut arm = vec![st];
                    arm.extend(self.decode_row(l.weights + p, o, (tb, at), k));
                    chain = if p == op.parts() - 1 {
                        arm
                    } else {
                        vec![Stmt::If {
                            cond: build::bin(BinOp::Lt, build::var(cf), i(offsets[p + 1])),
                            then: arm,
                            els: chain,
                        }]
                    };
                }
                fill.extend(chain);
            }
            block.push(lp(cf, c0.clone(), c1.clone(), LoopKind::Serial, fill));
        }
        let tile_at = |slot: i64| tile.map(|tb| (tb, slot_at(slot, build::var(c), &c0)));

        let mut row = Vec::new();
        let (st, xbase) = self.bind("xbase", Ty::I64, ix::mul(build::var(t), i(k)));
        row.push(st);
        let (src, base) = match op.norm {
            Some(n) => {
                let xs = self
                    .k
                    .buf("xs", Elem::F32, Access::Scratch { len: k as u64 });
                let nw = l.norm_weight.map(|j| self.ins[j].buf);
                let nb = l.norm_bias.map(|j| self.ins[j].buf);
                row.extend(self.norm_row(&n, (xb, &xbase), (nw, nb), xs, k));
                (xs, i(0))
            }
            None => (xb, xbase),
        };
        let with_bias = |acc: Expr, b: Option<BufId>, o: Expr| match b {
            Some(b) => build::add(acc, load(b, o)),
            None => acc,
        };

        let mut col = Vec::new();
        let y = if gated {
            let (gate, act) = match op.epilogue {
                Epilogue::Glu { gate, act } => (gate, Some(act)),
                Epilogue::ClampedGlu { gate, .. } => (gate, None),
                _ => (0, None),
            };
            if gate > 1 {
                return Err(self.invalid("gated epilogue names a third part"));
            }
            let up = 1 - gate;
            let (st, ga) = self.dot(l.weights + gate, build::var(c), (src, &base), k, tile_at(0));
            col.extend(st);
            let (st, ua) = self.dot(l.weights + up, build::var(c), (src, &base), k, tile_at(1));
            col.extend(st);
            let (st, gv) = self.bind("g", Ty::F32, with_bias(ga, bias[gate], build::var(c)));
            col.push(st);
            let (st, uv) = self.bind("u", Ty::F32, with_bias(ua, bias[up], build::var(c)));
            col.push(st);
            let (st, value) = match (op.epilogue, act) {
                (_, Some(act)) => {
                    let (st, a) = unary_expr(&mut self.k, act, gv);
                    (st, build::mul(a, uv))
                }
                (Epilogue::ClampedGlu { alpha, limit, .. }, None) => {
                    clamped_swiglu_expr(&mut self.k, alpha, limit, gv, uv)
                }
                _ => (Vec::new(), f(0.0)),
            };
            col.extend(st);
            value
        } else if op.parts() == 1 {
            let (st, acc) = self.dot(l.weights, build::var(c), (src, &base), k, tile_at(0));
            col.extend(st);
            with_bias(acc, bias[0], build::var(c))
        } else {
            // Several parts side by side: column `c` belongs to exactly one of them.
            let yv = self.k.var("y", Ty::F32);
            col.push(Stmt::Local {
                var: yv,
                init: f(0.0),
            });
            let mut chain: Vec<Stmt> = Vec::new();
            for p in (0..op.parts()).rev() {
                let (st, o) = self.bind("o", Ty::I64, ix::sub(build::var(c), i(offsets[p])));
                let (dst, acc) = self.dot(l.weights + p, o.clone(), (src, &base), k, tile_at(0));
                let mut arm = vec![st];
                arm.extend(dst);
                arm.push(Stmt::Set {
                    var: yv,
                    value: with_bias(acc, bias[p], o),
                });
                chain = if p == op.parts() - 1 {
                    arm
                } else {
                    vec![Stmt::If {
                        cond: build::bin(BinOp::Lt, build::var(c), i(offsets[p + 1])),
                        then: arm,
                        els: chain,
                    }]
                };
            }
            col.extend(chain);
            build::var(yv)
        };
        let y = match op.epilogue {
            Epilogue::Act(u) => {
                let (st, yv) = self.bind("y", Ty::F32, y);
                col.push(st);
                let (st, a) = unary_expr(&mut self.k, u, yv);
                col.extend(st);
                a
            }
            _ => y,
        };
        let at = ix::add(ix::mul(build::var(t), i(ncols)), build::var(c));
        let y = match res {
            Some(rb) => build::add(y, load(rb, at.clone())),
            None => y,
        };
        col.push(Stmt::Store {
            buf: ob,
            index: at,
            value: y,
        });
        row.push(lp(c, c0, c1, LoopKind::Serial, col));
        block.push(lp(t, i(0), m, LoopKind::Serial, row));
        let nblocks = (ncols + COLS - 1) / COLS;
        self.k
            .body
            .push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        Ok(())
    }
}
