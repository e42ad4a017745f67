//! Deterministic random weights for every parameter of a graph, at scales where every
//! term matters (norm weights near 1, projections ~ 1/sqrt(fan_in), non-zero biases), for
//! tests and benchmarks that need a model but no checkpoint.

use super::{WeightDType, WeightSource, WeightView};
use crate::ir::Graph;
use std::collections::BTreeMap;

/// A small xorshift generator: reproducible across platforms, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// f32 weights held in memory, keyed by canonical name.
#[derive(Debug, Clone, Default)]
pub struct RandomWeights {
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl RandomWeights {
    /// Weights for every parameter of `graphs` (shared names are generated once).
    pub fn for_graphs(graphs: &[&Graph], seed: u64) -> RandomWeights {
        let mut w = RandomWeights::default();
        for g in graphs {
            for p in &g.params {
                if w.tensors.contains_key(&p.name) {
                    continue;
                }
                // Seed per name so adding a tensor does not change the others.
                let mut rng = Rng::new(seed ^ fnv(&p.name));
                let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
                let n: usize = shape.iter().product();
                let fan_in = *shape.last().unwrap_or(&1) as f32;
                let name = p.name.as_str();
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        let u = rng.uniform();
                        if name.ends_with("norm.weight") {
                            1.0 + 0.2 * u
                        } else if name.ends_with(".bias") {
                            0.1 * u
                        } else if name.ends_with("sinks") || name.starts_with("embed.") {
                            u
                        } else {
                            u * (3.0 / fan_in).sqrt()
                        }
                    })
                    .collect();
                w.insert(name, shape, &values);
            }
        }
        w
    }

    /// Add or replace one tensor.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.insert(name.to_string(), (shape, bytes));
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

impl WeightSource for RandomWeights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        self.tensors.get(name).map(|(shape, bytes)| WeightView {
            dtype: WeightDType::F32,
            shape,
            bytes,
        })
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
