//! Random weights at a Spec's real shapes, drawn in memory, so that a model can be timed
//! without a checkpoint (`archc bench --random-weights`).

use super::BenchError;
use archc_compiler::interp::{WeightDType, WeightSource, WeightView};
use archc_spec::Spec;
use std::collections::BTreeMap;

/// Every parameter tensor of a Spec, drawn at random in memory at its real shape: the
/// weights of a benchmark that needs no checkpoint. Values are uniform and scaled so that
/// activations stay finite through any depth: a projection's weights have variance
/// 1 / fan-in (the input dimension), norm weights lie in [0.8, 1.2], biases in
/// [-0.1, 0.1], embeddings and attention sinks in [-1, 1]. Element `i` of a tensor is a
/// hash of the seed, the tensor's name and `i`, so the weights depend on nothing else
/// (not the thread count, not the other tensors).
#[derive(Debug, Default)]
pub struct RandomWeights {
    tensors: BTreeMap<String, (Vec<usize>, WeightDType, Vec<u8>)>,
}

impl RandomWeights {
    /// Draws every tensor of `spec` as `dtype` (f32, f16 or bf16) on `threads` threads.
    pub fn for_spec(
        spec: &Spec,
        dtype: WeightDType,
        seed: u64,
        threads: usize,
    ) -> Result<RandomWeights, BenchError> {
        let mut out = RandomWeights::default();
        for t in archc_spec::tensors::tensors(spec) {
            let shape = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| too_large(&t.name))?;
            let numel = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| too_large(&t.name))?;
            let bytes = numel
                .checked_mul(dtype.bytes())
                .ok_or_else(|| too_large(&t.name))?;
            let mut data: Vec<u8> = Vec::new();
            data.try_reserve_exact(bytes)
                .map_err(|_| BenchError::TensorMemory {
                    tensor: t.name.clone(),
                    bytes,
                })?;
            data.resize(bytes, 0);
            let scale = weight_scale(&t.name, &shape);
            let key = seed ^ fnv1a(&t.name);
            fill(&mut data, dtype, key, scale, threads.max(1));
            out.tensors.insert(t.name, (shape, dtype, data));
        }
        Ok(out)
    }

    /// Bytes of every tensor together.
    pub fn bytes(&self) -> u64 {
        self.tensors.values().map(|(_, _, b)| b.len() as u64).sum()
    }

    /// Tensor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

impl WeightSource for RandomWeights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        self.tensors
            .get(name)
            .map(|(shape, dtype, bytes)| WeightView {
                dtype: *dtype,
                shape,
                bytes,
            })
    }
}

fn too_large(tensor: &str) -> BenchError {
    BenchError::TensorTooLarge {
        tensor: tensor.to_string(),
    }
}

/// `(offset, scale)`: values are `offset + scale * u` with `u` uniform in [-1, 1).
fn weight_scale(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.ends_with("norm.weight") {
        (1.0, 0.2)
    } else if name.ends_with(".bias") {
        (0.0, 0.1)
    } else if name.ends_with("sinks") || name.starts_with("embed.") {
        (0.0, 1.0)
    } else {
        let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
        (0.0, (3.0 / fan_in).sqrt())
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Uniform in [-1, 1) from the 64-bit hash (splitmix64) of `key` and `i`.
fn uniform(key: u64, i: u64) -> f32 {
    let mut z = key.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 24 random bits give every f32 in the range equal weight.
    (z >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0
}

/// Fills `data` (elements of `dtype`, little-endian) on up to `threads` threads.
fn fill(
    data: &mut [u8],
    dtype: WeightDType,
    key: u64,
    (offset, scale): (f32, f32),
    threads: usize,
) {
    let width = dtype.bytes();
    let numel = data.len() / width;
    // Chunks of whole elements, at least 64 Ki elements each so small tensors stay on one
    // thread.
    let per = numel.div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (c, chunk) in data.chunks_mut(per * width).enumerate() {
            s.spawn(move || {
                let first = (c * per) as u64;
                for (j, out) in chunk.chunks_exact_mut(width).enumerate() {
                    let v = offset + scale * uniform(key, first + j as u64);
                    match dtype {
                        WeightDType::F32 => out.copy_from_slice(&v.to_le_bytes()),
                        WeightDType::Bf16 => {
                            out.copy_from_slice(&crate::exec::cpu::f32_to_bf16(v).to_le_bytes())
                        }
                        WeightDType::F16 => {
                            out.copy_from_slice(&crate::exec::cpu::f32_to_f16(v).to_le_bytes())
                        }
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_values_cover_the_range_and_depend_only_on_key_and_index() {
        let xs: Vec<f32> = (0..10_000).map(|i| uniform(7, i)).collect();
        assert!(xs.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(xs.iter().any(|&x| x > 0.9) && xs.iter().any(|&x| x < -0.9));
        assert_eq!(uniform(7, 123), xs[123]);
        assert_ne!(uniform(8, 123), xs[123]);
    }

    #[test]
    fn fill_does_not_depend_on_the_thread_count() {
        let mut a = vec![0u8; 300_000 * 2];
        let mut b = a.clone();
        fill(&mut a, WeightDType::Bf16, 5, (0.0, 1.0), 1);
        fill(&mut b, WeightDType::Bf16, 5, (0.0, 1.0), 3);
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn scales_follow_the_tensor_kind() {
        assert_eq!(weight_scale("final_norm.weight", &[64]), (1.0, 0.2));
        assert_eq!(weight_scale("layers.0.attn.q.bias", &[64]), (0.0, 0.1));
        assert_eq!(weight_scale("embed.tokens", &[10, 64]), (0.0, 1.0));
        assert_eq!(
            weight_scale("layers.0.ffn.down.weight", &[64, 300]),
            (0.0, 0.1)
        );
    }
}
