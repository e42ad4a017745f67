//! Fused operations: the `Op` variants that only the fusion passes (`crate::passes`)
//! create — lowering never emits them — with their operand layouts, type rules and text.
//!
//! Each fused op computes exactly what the chain of plain ops it replaces computes; the
//! interpreter gives each one its own kernel, and the differential tests hold it to the
//! unfused graph.

use super::infer::{broadcast, infer};
use super::print::num;
use super::{
    op_text, AttnOp, BinaryOp, DType, Dim, NormOp, Op, RopeOp, RouterSelectOp, RouterWeightsOp,
    Type, UnaryOp,
};
use std::fmt::Write;

/// What a fused linear applies to its matmul results before the residual add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue {
    None,
    /// `act(y)` on every element.
    Act(UnaryOp),
    /// A gated unit over exactly two parts of equal width: `act(parts[gate]) * parts[1 - gate]`;
    /// the result has one part's width.
    Glu {
        act: UnaryOp,
        gate: usize,
    },
    /// GPT-OSS's clamped SwiGLU of `parts[gate]` and `parts[1 - gate]` (see `Op::ClampedSwiglu`).
    ClampedGlu {
        alpha: f64,
        limit: f64,
        gate: usize,
    },
}

/// A matmul with a prologue and an epilogue: `residual + epilogue(concat_i(norm(x) @ w_i^T + b_i))`.
///
/// Operands, in order: `x [..., k]`; the norm weight and bias when `norm` has them; the
/// weights `w_i [n_i, k]`, one per part; the biases `b_i [n_i]` of the parts whose `bias`
/// flag is set; the residual when `residual`. Without a gated epilogue the result is the
/// parts side by side, `[..., sum n_i]`. Weights are referred to, never concatenated.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearOp {
    /// A norm of `x` over its last axis, applied before the matmul.
    pub norm: Option<NormOp>,
    /// One entry per weight part: whether that part has a bias operand.
    pub bias: Vec<bool>,
    pub epilogue: Epilogue,
    /// The last operand is added to the result.
    pub residual: bool,
}

/// Where each group of a `LinearOp`'s operands starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearLayout {
    pub norm_weight: Option<usize>,
    pub norm_bias: Option<usize>,
    pub weights: usize,
    pub biases: usize,
    pub residual: Option<usize>,
    pub arity: usize,
}

impl LinearOp {
    pub fn parts(&self) -> usize {
        self.bias.len()
    }

    pub fn layout(&self) -> LinearLayout {
        let mut i = 1;
        let mut next = |n: usize| {
            let at = i;
            i += n;
            at
        };
        let norm_weight = self.norm.filter(|n| n.weight).map(|_| next(1));
        let norm_bias = self.norm.filter(|n| n.bias).map(|_| next(1));
        let weights = next(self.parts());
        let biases = next(self.bias.iter().filter(|b| **b).count());
        let residual = self.residual.then(|| next(1));
        LinearLayout {
            norm_weight,
            norm_bias,
            weights,
            biases,
            residual,
            arity: i,
        }
    }
}

/// One instruction of an elementwise loop body. Registers `0..operands` hold the operands;
/// instruction `j` writes register `operands + j`; the last instruction is the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Instr {
    Unary(UnaryOp, u32),
    Binary(BinaryOp, u32, u32),
    ClampedSwiglu {
        alpha: f64,
        limit: f64,
        gate: u32,
        up: u32,
    },
}

/// A chain of elementwise ops run as one loop: every register broadcasts (numpy rules)
/// to the result's shape, so each element is computed without intermediate tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementwiseOp {
    /// The number of operands (registers `0..operands`).
    pub operands: u32,
    pub program: Vec<Instr>,
}

/// QK-norm, RoPE and the KV-cache append of one projection, in one pass over its rows.
/// Operands: `x [s, heads, d]`, `positions [s]`, the norm weight (and bias) when `norm`
/// has them, then the cache `[past, heads, d]` when `append`. Result: the rotated rows,
/// after the cache rows when `append` (`[past + s, heads, d]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NormRopeOp {
    pub norm: Option<NormOp>,
    pub rope: RopeOp,
    pub append: bool,
}

/// Attention as one kernel with an online (flash-style) softmax. Every variant — causal
/// or not, window, chunk, sinks, softcap, GQA sharing, MLA's latent cache with the
/// absorbed up-projections (`attn.mla`) — is a parameter of `attn`; `gate`
/// multiplies the output by `sigmoid(gate)` (Qwen3-Next). Operands: those of
/// `Op::Attention`, then the gate `[s, heads * dv]` when `gate`. Result: the heads side by
/// side, `[s, heads * dv]`, as the output projection reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlashAttnOp {
    pub attn: AttnOp,
    pub gate: bool,
}

/// The gated or plain activation between the experts' up (and gate) and down projections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertAct {
    /// `act(up)`.
    Plain(UnaryOp),
    /// `act(gate) * up`.
    Glu(UnaryOp),
    /// `clamped_swiglu(gate, up)`.
    Clamped { alpha: f64, limit: f64 },
}

/// A whole mixture-of-experts layer: the router (scores, correction bias, group-limited
/// top-k, renormalisation, scaling) and the routed experts, each token running only the
/// experts it selected, their outputs weighted and summed. Operands: `x [s, h]`, router
/// logits `[s, E]`, the correction bias `[E]` when `select.correction_bias`, then the
/// stacked up, gate (when the activation is gated) and down weights, then their biases
/// `[E, n]` in the same order when `bias`. Result `[s, h]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeOp {
    pub select: RouterSelectOp,
    pub weights: RouterWeightsOp,
    pub act: ExpertAct,
    pub bias: bool,
    /// Scale each expert's input by its routing weight instead of its output (Llama 4).
    pub weight_input: bool,
}

impl MoeOp {
    pub fn gated(&self) -> bool {
        !matches!(self.act, ExpertAct::Plain(_))
    }

    /// The number of weight operands (up, gate, down or up, down).
    pub fn matrices(&self) -> usize {
        if self.gated() {
            3
        } else {
            2
        }
    }

    pub fn arity(&self) -> usize {
        2 + self.select.correction_bias as usize + self.matrices() * (1 + self.bias as usize)
    }
}

fn arity(ins: &[Type], n: usize) -> Result<(), String> {
    if ins.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} operands, found {}", ins.len()))
    }
}

fn konst(d: Dim, what: &str) -> Result<u64, String> {
    d.as_const()
        .ok_or_else(|| format!("{what} must be a concrete dim, found {d}"))
}

pub(crate) fn infer_linear(op: &LinearOp, ins: &[Type]) -> Result<Type, String> {
    let l = op.layout();
    arity(ins, l.arity)?;
    if op.parts() == 0 {
        return Err("linear needs at least one weight".into());
    }
    let x = &ins[0];
    let mut x_ty = x.clone();
    if let Some(n) = op.norm {
        let end = 1 + n.weight as usize + n.bias as usize;
        x_ty = infer(&Op::Norm(n), &ins[..end])?;
    }
    let mut widths = Vec::new();
    for w in &ins[l.weights..l.weights + op.parts()] {
        let t = infer(&Op::MatMul, &[x_ty.clone(), w.clone()])?;
        widths.push(*t.shape.last().expect("matmul results have rank >= 1"));
    }
    let mut b = l.biases;
    for (i, has) in op.bias.iter().enumerate() {
        if *has {
            if ins[b].shape != [widths[i]] {
                return Err(format!(
                    "linear bias of part {i} must be [{}], found {}",
                    widths[i], ins[b]
                ));
            }
            b += 1;
        }
    }
    let total = widths
        .iter()
        .map(|d| konst(*d, "a weight's width"))
        .sum::<Result<u64, _>>()?;
    let out = match op.epilogue {
        Epilogue::None | Epilogue::Act(_) => total,
        Epilogue::Glu { gate, .. } | Epilogue::ClampedGlu { gate, .. } => {
            if widths.len() != 2 || widths[0] != widths[1] || gate > 1 {
                return Err(format!(
                    "a gated epilogue needs two parts of equal width, found {}",
                    widths.len()
                ));
            }
            total / 2
        }
    };
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank checked by matmul") = Dim::c(out);
    let ty = Type::new(shape, DType::F32);
    if let Some(r) = l.residual {
        if ins[r].shape != ty.shape {
            return Err(format!("linear residual must be {ty}, found {}", ins[r]));
        }
    }
    Ok(ty)
}

pub(crate) fn infer_elementwise(op: &ElementwiseOp, ins: &[Type]) -> Result<Type, String> {
    arity(ins, op.operands as usize)?;
    if op.program.is_empty() {
        return Err("an elementwise loop needs at least one instruction".into());
    }
    let mut regs: Vec<Vec<Dim>> = Vec::new();
    for (i, t) in ins.iter().enumerate() {
        if !t.dtype.is_float() {
            return Err(format!(
                "elementwise operand {i} must be a float tensor, found {t}"
            ));
        }
        regs.push(t.shape.clone());
    }
    for ins in &op.program {
        let get = |r: u32| {
            regs.get(r as usize)
                .cloned()
                .ok_or_else(|| format!("register ${r} is read before it is written"))
        };
        let shape = match *ins {
            Instr::Unary(_, a) => get(a)?,
            Instr::Binary(_, a, b) => {
                let (a, b) = (get(a)?, get(b)?);
                broadcast(&a, &b).ok_or("elementwise operands do not broadcast")?
            }
            Instr::ClampedSwiglu { gate, up, .. } => {
                let (g, u) = (get(gate)?, get(up)?);
                if g != u {
                    return Err("clamped_swiglu operands differ in shape".into());
                }
                g
            }
        };
        regs.push(shape);
    }
    let shape = regs.pop().expect("the program is not empty");
    Ok(Type::new(shape, DType::F32))
}

pub(crate) fn infer_norm_rope(op: &NormRopeOp, ins: &[Type]) -> Result<Type, String> {
    let nn = op.norm.map_or(0, |n| n.weight as usize + n.bias as usize);
    arity(ins, 2 + nn + op.append as usize)?;
    let mut x = ins[0].clone();
    if x.shape.len() != 3 {
        return Err(format!("norm_rope wants x [s, heads, d], found {x}"));
    }
    if let Some(n) = op.norm {
        let mut args = vec![x.clone()];
        args.extend_from_slice(&ins[2..2 + nn]);
        x = infer(&Op::Norm(n), &args)?;
    }
    x = infer(&Op::Rope(op.rope.clone()), &[x, ins[1].clone()])?;
    if op.append {
        x = infer(&Op::Concat { axis: 0 }, &[ins[2 + nn].clone(), x])?;
    }
    Ok(x)
}

pub(crate) fn infer_flash(op: &FlashAttnOp, ins: &[Type]) -> Result<Type, String> {
    let n = if op.attn.sinks { 5 } else { 4 };
    arity(ins, n + op.gate as usize)?;
    let t = infer(&Op::Attention(op.attn), &ins[..n])?;
    let width = konst(t.shape[1], "heads")? * konst(t.shape[2], "value dim")?;
    let ty = Type::new(vec![t.shape[0], Dim::c(width)], DType::F32);
    if op.gate && ins[n].shape != ty.shape {
        return Err(format!(
            "flash_attention gate must be {ty}, found {}",
            ins[n]
        ));
    }
    Ok(ty)
}

pub(crate) fn infer_moe(op: &MoeOp, ins: &[Type]) -> Result<Type, String> {
    arity(ins, op.arity())?;
    let x = &ins[0];
    let cb = op.select.correction_bias as usize;
    let sel = infer(&Op::RouterSelect(op.select), &ins[1..2 + cb])?;
    let w = 2 + cb;
    let m = op.matrices();
    let up = infer(&Op::ExpertMatMul, &[x.clone(), ins[w].clone(), sel.clone()])?;
    if op.gated() {
        let gate = infer(
            &Op::ExpertMatMul,
            &[x.clone(), ins[w + 1].clone(), sel.clone()],
        )?;
        if gate != up {
            return Err(format!("moe gate {gate} and up {up} differ"));
        }
    }
    let down = infer(&Op::ExpertMatMul, &[up, ins[w + m - 1].clone(), sel])?;
    if op.bias {
        for j in 0..m {
            let (wt, b) = (&ins[w + j], &ins[w + m + j]);
            if b.shape != wt.shape[..2] {
                return Err(format!("moe expert bias must be [E, n] of {wt}, found {b}"));
            }
        }
    }
    let out = Type::new(vec![down.shape[0], down.shape[2]], DType::F32);
    if out.shape != x.shape {
        return Err(format!("moe output {out} differs from its input {x}"));
    }
    Ok(out)
}

fn unary_name(u: UnaryOp) -> String {
    op_text(&Op::Unary(u))
}

pub(crate) fn linear_text(op: &LinearOp) -> String {
    let mut s = format!("linear{{parts={}", op.parts());
    if let Some(n) = op.norm {
        let _ = write!(s, ", norm={}", op_text(&Op::Norm(n)));
    }
    if op.bias.iter().any(|b| *b) {
        let idx: Vec<String> = op
            .bias
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(i, _)| i.to_string())
            .collect();
        let _ = write!(s, ", bias={}", idx.join("+"));
    }
    match op.epilogue {
        Epilogue::None => {}
        Epilogue::Act(u) => {
            let _ = write!(s, ", act={}", unary_name(u));
        }
        Epilogue::Glu { act, gate } => {
            let _ = write!(s, ", glu={}(gate={gate})", unary_name(act));
        }
        Epilogue::ClampedGlu { alpha, limit, gate } => {
            let _ = write!(
                s,
                ", clamped_glu(alpha={}, limit={}, gate={gate})",
                num(alpha),
                num(limit)
            );
        }
    }
    if op.residual {
        s.push_str(", residual");
    }
    s.push('}');
    s
}

pub(crate) fn elementwise_text(op: &ElementwiseOp) -> String {
    let operands = op.operands as usize;
    // The first instruction's register gives the operand count; without one, say it.
    if op.program.is_empty() {
        return format!("elementwise{{operands={operands}}}");
    }
    let mut s = "elementwise{".to_string();
    for (j, ins) in op.program.iter().enumerate() {
        if j > 0 {
            s.push_str("; ");
        }
        let _ = write!(s, "${} = ", operands + j);
        match *ins {
            Instr::Unary(u, a) => {
                let _ = write!(s, "{} ${a}", unary_name(u));
            }
            Instr::Binary(b, x, y) => {
                let _ = write!(s, "{} ${x}, ${y}", op_text(&Op::Binary(b)));
            }
            Instr::ClampedSwiglu {
                alpha,
                limit,
                gate,
                up,
            } => {
                let _ = write!(
                    s,
                    "{} ${gate}, ${up}",
                    op_text(&Op::ClampedSwiglu { alpha, limit })
                );
            }
        }
    }
    s.push('}');
    s
}

pub(crate) fn norm_rope_text(op: &NormRopeOp) -> String {
    let mut parts = Vec::new();
    if let Some(n) = op.norm {
        parts.push(op_text(&Op::Norm(n)));
    }
    parts.push(op_text(&Op::Rope(op.rope.clone())));
    if op.append {
        parts.push("append".into());
    }
    format!("norm_rope{{{}}}", parts.join(", "))
}

pub(crate) fn flash_text(op: &FlashAttnOp) -> String {
    let inner = op_text(&Op::Attention(op.attn));
    let inner = inner.trim_start_matches("attention{").trim_end_matches('}');
    let gate = if op.gate { ", gate" } else { "" };
    format!("flash_attention{{{inner}{gate}}}")
}

pub(crate) fn moe_text(op: &MoeOp) -> String {
    let select = op_text(&Op::RouterSelect(op.select));
    let weights = op_text(&Op::RouterWeights(op.weights));
    let act = match op.act {
        ExpertAct::Plain(u) => unary_name(u),
        ExpertAct::Glu(u) => format!("glu={}", unary_name(u)),
        ExpertAct::Clamped { alpha, limit } => op_text(&Op::ClampedSwiglu { alpha, limit }),
    };
    let mut s = format!("moe{{{select}, {weights}, {act}");
    if op.bias {
        s.push_str(", bias");
    }
    if op.weight_input {
        s.push_str(", weight_input");
    }
    s.push('}');
    s
}
