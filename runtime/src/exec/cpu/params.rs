//! The parameter table of the CPU executor: each parameter a program reads, bound once per
//! element type, borrowed from the checkpoint where its stored bytes are what the kernels
//! read (zero copy) and converted into an aligned buffer otherwise.

use super::aligned::AlignedBuf;
use crate::exec::ExecError;
use crate::weights::{decode_f32, Dtype};
use archc_compiler::floats::{f32_to_bf16, f32_to_f16};
use archc_compiler::interp::{WeightDType, WeightSource};
use archc_compiler::kernel::Elem;
use std::collections::BTreeMap;

/// A parameter's bytes as the kernels read them.
#[derive(Debug)]
pub(super) enum ParamData<'w> {
    /// Borrowed from the bound checkpoint (memory-mapped or bind's own copy): no copy.
    Borrowed(&'w [u8]),
    /// Converted to the kernel's element type (or realigned).
    Owned(AlignedBuf),
}

impl ParamData<'_> {
    pub(super) fn ptr(&self) -> *mut u8 {
        match self {
            // Kernels only read parameters (`Plan::new` refuses writes), so handing out
            // a mutable pointer to shared bytes never leads to a write.
            ParamData::Borrowed(b) => b.as_ptr().cast_mut(),
            ParamData::Owned(b) => b.as_ptr(),
        }
    }
}

/// The parameters of both programs, each stored once per element type.
#[derive(Debug, Default)]
pub(super) struct Params<'w> {
    index: BTreeMap<(String, &'static str), usize>,
    pub(super) data: Vec<(ParamData<'w>, usize)>,
}

/// How many parameters were bound without a copy, and how many bytes were copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamStats {
    pub zero_copy: usize,
    pub converted: usize,
    pub converted_bytes: usize,
}

impl<'w> Params<'w> {
    /// The table index of parameter `name` as `elem` with `numel` elements of `shape`.
    pub(super) fn bind(
        &mut self,
        weights: &'w dyn WeightSource,
        name: &str,
        elem: Elem,
        shape: &[usize],
    ) -> Result<usize, ExecError> {
        let key = (name.to_string(), elem.as_str());
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        if elem == Elem::U8 {
            // Block-quantised: the kernels decode the stored blocks in place.
            let b = weights.blocks(name).ok_or_else(|| {
                ExecError::param(
                    name,
                    "the program reads blocks the checkpoint does not hold",
                )
            })?;
            let numel: usize = shape.iter().product();
            if b.bytes.len() != numel {
                return Err(ExecError::param(
                    name,
                    format!(
                        "{} bytes of {} blocks stored, the program reads {numel}",
                        b.bytes.len(),
                        b.format.name()
                    ),
                ));
            }
            self.data.push((ParamData::Borrowed(b.bytes), numel));
            self.index.insert(key, self.data.len() - 1);
            return Ok(self.data.len() - 1);
        }
        let view = weights
            .get(name)
            .ok_or_else(|| ExecError::param(name, "not bound to a checkpoint tensor"))?;
        if view.shape != shape {
            return Err(ExecError::param(
                name,
                format!(
                    "shape {:?} in the checkpoint, the program expects {shape:?}",
                    view.shape
                ),
            ));
        }
        let numel: usize = shape.iter().product();
        let (stored, dtype) = match view.dtype {
            WeightDType::F32 => (Elem::F32, Dtype::F32),
            WeightDType::Bf16 => (Elem::Bf16, Dtype::Bf16),
            WeightDType::F16 => (Elem::F16, Dtype::F16),
        };
        let aligned = (view.bytes.as_ptr() as usize) % elem.bytes() == 0;
        let data = if stored == elem && aligned && view.bytes.len() == numel * elem.bytes() {
            ParamData::Borrowed(view.bytes)
        } else {
            let values = decode_f32(dtype, view.bytes)
                .ok_or_else(|| ExecError::param(name, format!("cannot read dtype {dtype}")))?;
            if values.len() != numel {
                return Err(ExecError::param(
                    name,
                    format!("{} elements stored, {numel} expected", values.len()),
                ));
            }
            ParamData::Owned(encode(&values, elem).ok_or_else(|| {
                ExecError::param(name, format!("cannot convert to {}", elem.as_str()))
            })?)
        };
        self.data.push((data, numel * elem.bytes()));
        self.index.insert(key, self.data.len() - 1);
        Ok(self.data.len() - 1)
    }

    pub(super) fn stats(&self) -> ParamStats {
        let mut s = ParamStats::default();
        for (d, bytes) in &self.data {
            match d {
                ParamData::Borrowed(_) => s.zero_copy += 1,
                ParamData::Owned(_) => {
                    s.converted += 1;
                    s.converted_bytes += bytes;
                }
            }
        }
        s
    }
}

/// f32 values in `elem`'s little-endian encoding, in an aligned buffer.
fn encode(values: &[f32], elem: Elem) -> Option<AlignedBuf> {
    let mut buf = AlignedBuf::with_capacity(values.len().checked_mul(elem.bytes())?)?;
    let out = buf.as_mut_slice();
    match elem {
        Elem::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        Elem::Bf16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
        }
        Elem::F16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
            }
        }
        Elem::I32 | Elem::U8 | Elem::F8 => return None,
    }
    Some(buf)
}
