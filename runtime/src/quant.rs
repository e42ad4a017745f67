//! GGML tensor types (and archc's block of block-scaled FP8 checkpoints): block layouts
//! as data, and reference dequantisation to f32.
//!
//! Each quantised type stores a row as consecutive blocks of `block_len` elements in
//! `block_bytes` bytes. The functions here reproduce llama.cpp's `dequantize_row_*`
//! bit for bit: scales are widened from f16 to f32, then each element is one f32
//! multiply (and one subtract or add where the type has a minimum), in the same order,
//! never fused. They are the reference the compiled kernels are checked against; they
//! favour plainness over speed.

use crate::weights::{bf16_to_f32, f16_to_f32};
use std::fmt;

/// The tensor types a GGUF file may hold that this runtime can read ([`GgmlType::ALL`]),
/// and `F8E4m3`, the block binding builds from an HF FP8 checkpoint, which no GGUF holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    /// 32 elements: f16 scale `d`, 16 bytes of 4-bit quants; `x = (q - 8) * d`.
    Q4_0,
    /// 32 elements: f16 `d`, f16 min `m`, 16 bytes of 4-bit quants; `x = q * d + m`.
    Q4_1,
    /// 32 elements: f16 `d`, 32 fifth bits, 16 bytes of nibbles; `x = (q - 16) * d`.
    Q5_0,
    /// 32 elements: f16 `d`, f16 min `m`, 32 fifth bits, 16 bytes of nibbles;
    /// `x = q * d + m`.
    Q5_1,
    /// 32 elements: f16 `d`, 32 signed bytes; `x = q * d`.
    Q8_0,
    /// 256 elements in 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit quants.
    Q2K,
    /// 256 elements in 16 sub-blocks of 16 with signed 6-bit scales, 3-bit quants (two
    /// low bits and a high-bit mask).
    Q3K,
    /// 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins.
    Q4K,
    /// Q4_K plus one high bit per element.
    Q5K,
    /// 256 elements in 16 sub-blocks of 16 with 8-bit scales, 6-bit quants.
    Q6K,
    /// 32 elements: f16 `d`, 16 bytes of nibbles indexing a fixed non-linear table of
    /// 16 signed values; `x = d * table[q]`.
    Iq4Nl,
    /// 256 elements in 8 sub-blocks of 32 with signed 6-bit scales, IQ4_NL's table.
    Iq4Xs,
    /// 32 elements: an E8M0 exponent `e`, 16 bytes of FP4 (e2m1) nibbles;
    /// `x = table[q] * 2^(e - 128)` with the e2m1 values doubled as the table.
    Mxfp4,
    /// 32 elements: the f32 scale of the checkpoint block they fall in, then 32
    /// `float8_e4m3fn` bytes; `x = e4m3(q) * s`. Not a GGML type (no id).
    F8E4m3,
}

/// A block format: elements per block and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    pub block_len: usize,
    pub block_bytes: usize,
}

impl GgmlType {
    /// Every type a GGUF file may hold that this runtime reads, in GGML id order.
    pub const ALL: [GgmlType; 16] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Iq4Nl,
        GgmlType::Iq4Xs,
        GgmlType::Bf16,
        GgmlType::Mxfp4,
    ];

    /// The type with GGML id `id`, if supported.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == Some(id))
    }

    /// The numeric id GGUF files store (`enum ggml_type`); `None` for archc's FP8 block.
    pub fn id(self) -> Option<u32> {
        Some(match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Iq4Nl => 20,
            GgmlType::Iq4Xs => 23,
            GgmlType::Bf16 => 30,
            GgmlType::Mxfp4 => 39,
            GgmlType::F8E4m3 => return None,
        })
    }

    /// llama.cpp's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Iq4Nl => "IQ4_NL",
            GgmlType::Iq4Xs => "IQ4_XS",
            GgmlType::Mxfp4 => "MXFP4",
            GgmlType::F8E4m3 => "FP8_E4M3",
        }
    }

    /// The block layout (a plain float type is a block of one element).
    pub fn layout(self) -> BlockLayout {
        let (block_len, block_bytes) = match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Iq4Nl => (32, 18),
            GgmlType::Iq4Xs => (256, 136),
            GgmlType::Mxfp4 => (32, 17),
            GgmlType::F8E4m3 => (32, 36),
        };
        BlockLayout {
            block_len,
            block_bytes,
        }
    }

    /// Whether the type is block-quantised (not a plain float type).
    pub fn is_quantized(self) -> bool {
        self.layout().block_len > 1
    }

    /// Bytes of `numel` elements, or `None` when `numel` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, numel: u64) -> Option<u64> {
        let l = self.layout();
        if numel % l.block_len as u64 != 0 {
            return None;
        }
        (numel / l.block_len as u64).checked_mul(l.block_bytes as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// llama.cpp's names of the GGML types it knows, by id, for error messages about types
/// this runtime does not read.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [(u32, &str); 36] = [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (30, "BF16"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
        (40, "NVFP4"),
        (41, "Q1_0"),
        (4, "Q4_2 (removed)"),
        (5, "Q4_3 (removed)"),
    ];
    NAMES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

/// The data does not hold a whole number of blocks of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequantError {
    pub ty: GgmlType,
    pub bytes: usize,
}

impl fmt::Display for DequantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.ty.layout();
        write!(
            f,
            "{} bytes of {} data is not a whole number of {}-byte blocks",
            self.bytes, self.ty, l.block_bytes
        )
    }
}

impl std::error::Error for DequantError {}

/// Dequantises `bytes` of type `ty` to f32, appending to `out`.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), DequantError> {
    let l = ty.layout();
    if bytes.len() % l.block_bytes != 0 {
        return Err(DequantError {
            ty,
            bytes: bytes.len(),
        });
    }
    out.reserve(bytes.len() / l.block_bytes * l.block_len);
    let mut block = [0f32; 256];
    for b in bytes.chunks_exact(l.block_bytes) {
        let y = &mut block[..l.block_len];
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            GgmlType::Bf16 => y[0] = bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            GgmlType::Q4_0 => q4_0(b, y),
            GgmlType::Q4_1 => q4_1(b, y),
            GgmlType::Q5_0 => q5_0(b, y),
            GgmlType::Q5_1 => q5_1(b, y),
            GgmlType::Q8_0 => q8_0(b, y),
            GgmlType::Q2K => q2_k(b, y),
            GgmlType::Q3K => q3_k(b, y),
            GgmlType::Q4K => q4_k(b, y),
            GgmlType::Q5K => q5_k(b, y),
            GgmlType::Q6K => q6_k(b, y),
            GgmlType::Iq4Nl => iq4_nl(b, y),
            GgmlType::Iq4Xs => iq4_xs(b, y),
            GgmlType::Mxfp4 => mxfp4(b, y),
            GgmlType::F8E4m3 => fp8(b, y),
        }
        out.extend_from_slice(y);
    }
    Ok(())
}

/// Dequantises `bytes` of type `ty` to f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, DequantError> {
    let mut out = Vec::new();
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

fn half(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = f32::from(i16::from(qs[j] & 0x0f) as i8 - 8) * d;
        y[j + 16] = f32::from(i16::from(qs[j] >> 4) as i8 - 8) * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let m = half(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * f32::from(qs[j] & 0x0f) + m;
        y[j + 16] = d * f32::from(qs[j] >> 4) + m;
    }
}

/// The fifth bit of element `e` (0..32) of a Q5_0 / Q5_1 block: bit `e` of the
/// little-endian 32-bit word at `at`.
fn fifth_bit(b: &[u8], at: usize, e: usize) -> u8 {
    (b[at + e / 8] >> (e % 8)) & 1
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0f) | (fifth_bit(b, 2, j) << 4);
        let hi = (qs[j] >> 4) | (fifth_bit(b, 2, j + 16) << 4);
        y[j] = f32::from(lo as i8 - 16) * d;
        y[j + 16] = f32::from(hi as i8 - 16) * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let m = half(b, 2);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0f) | (fifth_bit(b, 4, j) << 4);
        let hi = (qs[j] >> 4) | (fifth_bit(b, 4, j + 16) << 4);
        y[j] = d * f32::from(lo) + m;
        y[j + 16] = d * f32::from(hi) + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = half(b, 80);
    let dmin = half(b, 82);
    // Each half of 128 elements reads 32 bytes of quants four times, two bits at a time;
    // element `e` belongs to the sub-block of 16 that `scales[e / 16]` describes.
    for e in 0..256 {
        let (h, r) = (e / 128, e % 128);
        let q = (qs[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        let sc = scales[e / 16];
        let dl = d * f32::from(sc & 0x0f);
        let ml = dmin * f32::from(sc >> 4);
        y[e] = dl * f32::from(q) - ml;
    }
}

/// The signed 6-bit scale of sub-block `j` (0..16) of a Q3_K block from its 12 packed
/// bytes: the low nibble from byte `j % 8` (its high nibble for `j >= 8`), the top two
/// bits from byte `8 + j % 4` (bits `2 * (j / 4)`), less 32.
fn q3_k_scale(j: usize, s: &[u8]) -> i8 {
    let low = (s[j % 8] >> (4 * (j / 8))) & 0x0f;
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = &b[96..108];
    let d = half(b, 108);
    // Two low bits as Q2_K lays them out; a clear bit `e / 32` of `hmask[e % 32]`
    // subtracts 4.
    for e in 0..256 {
        let (h, r) = (e / 128, e % 128);
        let low = (qs[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        let high = (hmask[e % 32] >> (e / 32)) & 1;
        let q = (low | (high << 2)) as i8 - 4;
        let dl = d * f32::from(q3_k_scale(e / 16, scales));
        y[e] = dl * f32::from(q);
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of a
/// Q4_K / Q5_K block: the first four sub-blocks keep theirs in the low six bits of
/// bytes 0..4 (scales) and 4..8 (mins); the last four combine a nibble of bytes 8..12
/// with the top two bits of those bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let dmin = half(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Sub-blocks 2k and 2k+1 share 32 bytes of quants: low nibbles, then high nibbles.
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, scales);
        let d1 = d * f32::from(sc);
        let m1 = dmin * f32::from(m);
        let q = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let shift = 4 * (sub % 2);
        for l in 0..32 {
            y[sub * 32 + l] = d1 * f32::from((q[l] >> shift) & 0x0f) - m1;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let dmin = half(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, scales);
        let d1 = d * f32::from(sc);
        let m1 = dmin * f32::from(m);
        let q = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let shift = 4 * (sub % 2);
        for l in 0..32 {
            // Bit `sub` of qh[l] is the fifth bit of element l of sub-block `sub`.
            let v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> sub) & 1) << 4);
            y[sub * 32 + l] = d1 * f32::from(v) - m1;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = half(b, 208);
    // Each half of 128 elements reads 64 bytes of low nibbles and 32 bytes of high bits.
    for e in 0..256 {
        let h = e / 128;
        let r = e % 128;
        let low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
        let high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        let d1 = d * f32::from(scales[e / 16] as i8);
        y[e] = d1 * f32::from(q);
    }
}

/// IQ4_NL's 16 values, which a 4-bit quant indexes (IQ4_XS shares them).
pub const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

fn iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * f32::from(IQ4_VALUES[usize::from(qs[j] & 0x0f)]);
        y[j + 16] = d * f32::from(IQ4_VALUES[usize::from(qs[j] >> 4)]);
    }
}

/// MXFP4's values: e2m1 doubled (`kvalues_mxfp4`), with `d = 2^(e - 128)`.
const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `2^(e - 128)` for an E8M0 byte `e`, as GGML builds it (a subnormal below `e = 2`).
pub fn e8m0_half(e: u8) -> f32 {
    let e = u32::from(e);
    f32::from_bits(if e < 2 {
        0x0020_0000 << e
    } else {
        (e - 1) << 23
    })
}

fn mxfp4(b: &[u8], y: &mut [f32]) {
    let d = e8m0_half(b[0]);
    let qs = &b[1..17];
    for j in 0..16 {
        y[j] = f32::from(MXFP4_VALUES[usize::from(qs[j] & 0x0f)]) * d;
        y[j + 16] = f32::from(MXFP4_VALUES[usize::from(qs[j] >> 4)]) * d;
    }
}

fn fp8(b: &[u8], y: &mut [f32]) {
    let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in y.iter_mut().zip(&b[4..36]) {
        *o = archc_compiler::floats::f8e4m3_to_f32(q) * s;
    }
}

fn iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    let qs = &b[8..136];
    // Sub-block `j` of 32: a 6-bit scale from a nibble of `scales_l` and two bits of
    // `scales_h`, less 32; its 16 bytes hold elements 0..16 low, 16..32 high.
    for j in 0..8 {
        let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0f;
        let high = ((scales_h >> (2 * j)) & 3) as u8;
        let dl = d * f32::from((low | (high << 4)) as i8 - 32);
        let q = &qs[16 * j..16 * j + 16];
        for l in 0..16 {
            y[32 * j + l] = dl * f32::from(IQ4_VALUES[usize::from(q[l] & 0x0f)]);
            y[32 * j + l + 16] = dl * f32::from(IQ4_VALUES[usize::from(q[l] >> 4)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_llama_cpp_sizes() {
        let sizes: Vec<(u32, usize, usize)> = GgmlType::ALL
            .iter()
            .map(|t| {
                (
                    t.id().unwrap_or(u32::MAX),
                    t.layout().block_len,
                    t.layout().block_bytes,
                )
            })
            .collect();
        assert_eq!(
            sizes,
            [
                (0, 1, 4),
                (1, 1, 2),
                (2, 32, 18),
                (3, 32, 20),
                (6, 32, 22),
                (7, 32, 24),
                (8, 32, 34),
                (10, 256, 84),
                (11, 256, 110),
                (12, 256, 144),
                (13, 256, 176),
                (14, 256, 210),
                (20, 32, 18),
                (23, 256, 136),
                (30, 1, 2),
                (39, 32, 17),
            ]
        );
    }

    #[test]
    fn q8_0_scales_signed_bytes() {
        // d = 0.5 (f16 0x3800); quants -2, 3, then zeros.
        let mut b = vec![0x00, 0x38, 0xfe, 0x03];
        b.resize(34, 0);
        let y = dequantize(GgmlType::Q8_0, &b).expect("one block");
        assert_eq!(&y[..3], &[-1.0, 1.5, 0.0]);
    }

    #[test]
    fn mxfp4_scales_by_the_exponent_and_fp8_by_its_f32() {
        // e = 128 gives d = 1; byte 0 holds quants 7 (low, 12) and 9 (high, -1).
        let mut b = vec![128, 0x97];
        b.resize(17, 0);
        let y = dequantize(GgmlType::Mxfp4, &b).expect("one block");
        assert_eq!((y[0], y[16], y[1]), (12.0, -1.0, 0.0));
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
        // scale 0.5; e4m3 0x38 = 1.0, 0xb8 = -1.0, 0x01 = 2^-9 (subnormal).
        let mut b = 0.5f32.to_le_bytes().to_vec();
        b.extend([0x38, 0xb8, 0x01]);
        b.resize(36, 0);
        let y = dequantize(GgmlType::F8E4m3, &b).expect("one block");
        assert_eq!((y[0], y[1], y[2], y[3]), (0.5, -0.5, 2f32.powi(-10), 0.0));
    }

    #[test]
    fn iq4_nl_indexes_its_table() {
        // d = 1.0 (f16 0x3c00); byte 0 holds quants 0 (low) and 8 (high), byte 1 15 and 7.
        let mut b = vec![0x00, 0x3c, 0x80, 0x7f];
        b.resize(18, 0);
        let y = dequantize(GgmlType::Iq4Nl, &b).expect("one block");
        assert_eq!((y[0], y[16], y[1], y[17]), (-127.0, 1.0, 113.0, -10.0));
    }

    #[test]
    fn q3_k_subtracts_four_where_the_high_bit_is_clear() {
        // Every scale 33 (nibble 1, high bits 2), so `d * (33 - 32)` is d = 1.0.
        let mut b = vec![0u8; 110];
        b[96..104].fill(0x11);
        b[104..108].fill(0xaa);
        b[108..110].copy_from_slice(&0x3c00u16.to_le_bytes());
        b[0] = 1; // the high bit of element 0
        b[32] = 3; // the low bits of element 0
        let y = dequantize(GgmlType::Q3K, &b).expect("one block");
        assert_eq!((y[0], y[1], y[32], y[255]), (3.0, -4.0, -4.0, -4.0));
    }

    #[test]
    fn partial_block_is_an_error() {
        let e = dequantize(GgmlType::Q4_1, &[0; 21]).expect_err("21 bytes");
        assert_eq!(
            e.to_string(),
            "21 bytes of Q4_1 data is not a whole number of 20-byte blocks"
        );
    }
}
