//! Weight access for the interpreter: the `WeightSource` trait the runtime implements,
//! little-endian f32/f16/bf16 views, and row-wise conversion to f32.

use super::Tensor;

/// Storage type of a weight tensor handed to the interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    F32,
    F16,
    Bf16,
}

impl WeightDType {
    pub fn bytes(self) -> usize {
        match self {
            WeightDType::F32 => 4,
            WeightDType::F16 | WeightDType::Bf16 => 2,
        }
    }
}

/// A borrowed, row-major, little-endian weight tensor.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    pub dtype: WeightDType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// Where the interpreter finds parameters: by canonical tensor name
/// (`layers.3.attn.q.weight`), already in the canonical `[out, in]` layout.
pub trait WeightSource {
    fn get(&self, name: &str) -> Option<WeightView<'_>>;

    /// The parameter's raw blocks when it is stored block-quantised, for kernels that
    /// decode them in place (`kernel::lower::program_with`); `None` otherwise.
    fn blocks(&self, _name: &str) -> Option<BlockView<'_>> {
        None
    }
}

/// A block-quantised parameter as stored: whole blocks per row of its canonical shape.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    pub format: crate::kernel::lower::BlockFormat,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

pub use crate::floats::f16_to_f32;

/// Convert `out.len()` elements starting at element `start` of a view.
pub fn convert_into(w: &WeightView<'_>, start: usize, out: &mut [f32]) {
    let n = out.len();
    match w.dtype {
        WeightDType::F32 => {
            let b = &w.bytes[start * 4..(start + n) * 4];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightDType::Bf16 => {
            let b = &w.bytes[start * 2..(start + n) * 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        WeightDType::F16 => {
            let b = &w.bytes[start * 2..(start + n) * 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
    }
}

/// A matrix-like operand: an f32 tensor or a weight view, read a row at a time.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    F32(&'a [f32]),
    View(WeightView<'a>),
}

impl Rows<'_> {
    /// Elements `[start, start + out.len())` as f32.
    pub(crate) fn read(&self, start: usize, out: &mut [f32]) {
        match self {
            Rows::F32(d) => out.copy_from_slice(&d[start..start + out.len()]),
            Rows::View(w) => convert_into(w, start, out),
        }
    }

    /// The whole operand as an f32 tensor.
    pub(crate) fn to_tensor(self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let mut data = vec![0.0; n];
        self.read(0, &mut data);
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }
}
