//! How parameters are stored in memory, as the kernels read them: a float type (loads
//! widen to f32 whatever it is) or blocks that stay raw bytes and are decoded inside the
//! kernels that read them: GGML's (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K,
//! Q5_K, Q6_K, IQ4_XS, MXFP4) and the block-scaled FP8 of HF checkpoints.
//!
//! The graph stays dtype-agnostic: how each parameter is stored is a property of the bound
//! weights, given to lowering as a function of the parameter's name
//! ([`super::Lowering::formats`]). [`param_formats`] decides, once per program, which of
//! those formats the program honours; the program's parameter buffers take them before any
//! kernel is generated, and the dispatch hands each generator its operands' [`Stored`].

use super::stored;
use crate::ir::{DType, Graph, Op, Value};
use crate::kernel::Elem;

/// A block format: `block_len` elements stored in `block_bytes` bytes.
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
    /// f16 `d`, 32 fifth bits, 16 bytes of nibbles; `x = (q - 16) * d`.
    Q5_0,
    /// f16 `d`, f16 `m`, 32 fifth bits, 16 bytes of nibbles; `x = d * q + m`.
    Q5_1,
    /// 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit quants.
    Q2K,
    /// 16 sub-blocks of 16 with signed 6-bit scales, 3-bit quants.
    Q3K,
    /// f16 `d`, 16 bytes of nibbles indexing 16 fixed values; `x = d * table[q]`.
    Iq4Nl,
    /// 8 sub-blocks of 32 with signed 6-bit scales, IQ4_NL's table.
    Iq4Xs,
    /// GGML's MXFP4: an E8M0 exponent `e`, 16 bytes of FP4 (e2m1) nibbles;
    /// `x = table[q] * 2^(e - 128)` with the doubled e2m1 values as the table.
    Mxfp4,
    /// Block-scaled FP8 as HF checkpoints ship it (`float8_e4m3fn` weights with a
    /// `weight_scale_inv` per 128×128 block), held as archc's own block: the f32 scale
    /// of the block the 32 elements fall in, then the 32 e4m3 bytes; `x = e4m3(q) * s`.
    /// Not a GGML type: binding builds it from the two checkpoint tensors.
    F8E4m3,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 14] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q2K,
        BlockFormat::Q3K,
        BlockFormat::Iq4Nl,
        BlockFormat::Iq4Xs,
        BlockFormat::Mxfp4,
        BlockFormat::F8E4m3,
    ];

    pub fn block_len(self) -> u64 {
        match self {
            BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::Q8_0
            | BlockFormat::Iq4Nl
            | BlockFormat::Mxfp4
            | BlockFormat::F8E4m3 => 32,
            BlockFormat::Q2K
            | BlockFormat::Q3K
            | BlockFormat::Q4K
            | BlockFormat::Q5K
            | BlockFormat::Q6K
            | BlockFormat::Iq4Xs => 256,
        }
    }

    pub fn block_bytes(self) -> u64 {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Iq4Nl => 18,
            BlockFormat::Q2K => 84,
            BlockFormat::Q3K => 110,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
            BlockFormat::Iq4Xs => 136,
            BlockFormat::Mxfp4 => 17,
            BlockFormat::F8E4m3 => 36,
        }
    }

    /// Byte offsets of the block's f16 fields (scales and minimums). Apart from these and
    /// [`Self::f32_fields`], every byte is quants or integer scales, any bit pattern of
    /// which decodes to a finite value, except FP8's e4m3 NaN codes (`0x7f`, `0xff`),
    /// which binding refuses.
    pub fn f16_fields(self) -> &'static [u64] {
        match self {
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => &[0],
            BlockFormat::Iq4Nl | BlockFormat::Iq4Xs => &[0],
            BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q4K | BlockFormat::Q5K => &[0, 2],
            BlockFormat::Q2K => &[80, 82],
            BlockFormat::Q3K => &[108],
            BlockFormat::Q6K => &[208],
            BlockFormat::Mxfp4 | BlockFormat::F8E4m3 => &[],
        }
    }

    /// Byte offsets of the block's f32 fields (FP8's scale).
    pub fn f32_fields(self) -> &'static [u64] {
        match self {
            BlockFormat::F8E4m3 => &[0],
            _ => &[],
        }
    }

    /// llama.cpp's name of the format (archc's `FP8_E4M3` for the FP8 blocks).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q2K => "Q2_K",
            BlockFormat::Q3K => "Q3_K",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q5K => "Q5_K",
            BlockFormat::Q6K => "Q6_K",
            BlockFormat::Iq4Nl => "IQ4_NL",
            BlockFormat::Iq4Xs => "IQ4_XS",
            BlockFormat::Mxfp4 => "MXFP4",
            BlockFormat::F8E4m3 => "FP8_E4M3",
        }
    }

    /// The lower-case name used in kernel names (`linear_q4_k_...`).
    pub(super) fn tag(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
            BlockFormat::Q5_0 => "q5_0",
            BlockFormat::Q5_1 => "q5_1",
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q2K => "q2_k",
            BlockFormat::Q3K => "q3_k",
            BlockFormat::Q4K => "q4_k",
            BlockFormat::Q5K => "q5_k",
            BlockFormat::Q6K => "q6_k",
            BlockFormat::Iq4Nl => "iq4_nl",
            BlockFormat::Iq4Xs => "iq4_xs",
            BlockFormat::Mxfp4 => "mxfp4",
            BlockFormat::F8E4m3 => "fp8",
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

/// How one operand of a node is stored, as its program buffer holds it: the element type,
/// and the block format when the bytes are GGML blocks (`elem` is then `U8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub elem: Elem,
    pub block: Option<BlockFormat>,
}

impl Stored {
    /// A value in the graph's dtype (node results, parameters without a format).
    pub fn of(dtype: DType) -> Stored {
        Stored {
            elem: stored(dtype),
            block: None,
        }
    }

    /// A parameter of `dtype` stored as `format` says (`None`: the graph's dtype).
    pub fn param(dtype: DType, format: Option<ParamFormat>) -> Stored {
        match format {
            Some(ParamFormat::Block(b)) => Stored {
                elem: Elem::U8,
                block: Some(b),
            },
            Some(float) => Stored {
                elem: float.elem(),
                block: None,
            },
            None => Stored::of(dtype),
        }
    }
}

/// The formats a program honours, per parameter id, from what `format` says of each name.
///
/// A block format is honoured where every node reading the parameter can decode it: the
/// weight of a `MatMul` or a `Linear` part, the table of a `Gather` and MLA's `kv_b` in
/// its absorbed attention (2-D), and the expert weights of an `ExpertMatMul` or a `Moe`
/// (3-D), rows a whole number of blocks.
/// Any other reader keeps the parameter in the graph's dtype, so the caller converts it as
/// before. A float format is honoured everywhere: loads widen to f32 whatever the stored
/// float type.
pub(super) fn param_formats(
    graph: &Graph,
    format: &dyn Fn(&str) -> Option<ParamFormat>,
) -> Vec<Option<ParamFormat>> {
    let mut formats: Vec<Option<ParamFormat>> =
        graph.params.iter().map(|p| format(&p.name)).collect();
    for (pi, p) in graph.params.iter().enumerate() {
        if let Some(ParamFormat::Block(fmt)) = formats[pi] {
            let fits = matches!(p.shape.len(), 2 | 3)
                && p.shape.last().is_some_and(|k| k % fmt.block_len() == 0);
            if !fits {
                formats[pi] = float_instead(p.dtype);
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
                    formats[pi] = float_instead(graph.params[pi].dtype);
                }
            }
        }
    }
    formats
}

/// What a block-quantised parameter of graph dtype `dtype` is read as where its blocks
/// are not: the graph's dtype (the caller converts), except for f8, which without its
/// block scales is nothing a checkpoint stores: f32 (the dequantised values).
fn float_instead(dtype: DType) -> Option<ParamFormat> {
    (dtype == DType::F8).then_some(ParamFormat::F32)
}

/// Whether operand `j` of `op` may be block-quantised: some generator decodes it.
pub(super) fn decodes_blocks(op: &Op, j: usize) -> bool {
    match op {
        Op::Gather => j == 0,
        Op::MatMul => j == 1,
        Op::Linear(l) => {
            let w = l.layout().weights;
            (w..w + l.parts()).contains(&j)
        }
        Op::ExpertMatMul => j == 1,
        // MLA's absorbed attention reads `kv_b.weight` row by row.
        Op::Attention(a) => a.mla.is_some() && j == 2,
        Op::FlashAttention(fa) => fa.attn.mla.is_some() && j == 2,
        Op::Moe(m) => {
            let w = 2 + m.select.correction_bias as usize;
            (w..w + m.matrices()).contains(&j)
        }
        _ => false,
    }
}
