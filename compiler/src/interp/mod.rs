//! The reference interpreter: plain f32 Rust over a Graph IR, node by node.
//!
//! Every backend is checked against it, and it is checked against HF transformers, so it
//! favours the obvious formula over speed; only the matmuls are written for speed (rows
//! of `[out, in]` weights dotted with every token row, split over a few threads).
//!
//! Typical use: lower a spec twice (prefill and decode), bind weights, keep a `KvCache`:
//! ```text
//! let interp = Interpreter::new(&prefill_graph, &decode_graph, &weights)?;
//! let mut cache = interp.new_cache();
//! let logits = interp.prefill(&mut cache, &[1, 2, 3])?; // [3 * vocab]
//! let next = interp.decode(&mut cache, 4)?;             // [vocab]
//! ```
//! Integer tensors (token ids, positions, expert indices) are held as exact f32 values.

mod fused;
mod kernels;
mod linear;
mod mla;
pub mod random;
mod weights;

pub use random::RandomWeights;
pub use weights::{f16_to_f32, BlockView, WeightDType, WeightSource, WeightView};

use crate::ir::{Graph, Io, Op, Value};
use std::collections::BTreeMap;
use std::fmt;
use weights::Rows;

/// A dense row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
}

/// Why a run failed: a missing or misshapen weight or input, or a bad token.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpError {
    pub message: String,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

pub(crate) fn error(message: impl Into<String>) -> InterpError {
    InterpError {
        message: message.into(),
    }
}

/// The KV cache between calls: for every carried input of the graphs (`Io::Kv`,
/// `Io::State`), the keys or
/// values of the `past` tokens seen so far (`[past, kv_heads, dim]`), MLA's latent rows
/// (`[past, kv_rank + rope_dim]`), or a linear-attention layer's fixed-size convolution
/// and recurrent state (zeros before the first token); shapes come from the graph's
/// inputs, and every call replaces each tensor by the graph's output of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub past: usize,
    pub tensors: BTreeMap<Io, Tensor>,
}

/// Values of the symbolic dims for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bindings {
    pub seq: usize,
    pub past: usize,
}

/// Check that every parameter of `graph` is in `weights` with the graph's shape and a
/// byte length that fits its dtype; the error names the tensor.
pub fn check_weights(graph: &Graph, weights: &dyn WeightSource) -> Result<(), InterpError> {
    for p in &graph.params {
        let w = weights
            .get(&p.name)
            .ok_or_else(|| error(format!("missing weight `{}`", p.name)))?;
        let want: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
        if w.shape != want.as_slice() {
            return Err(error(format!(
                "weight `{}` has shape {:?}, the graph expects {:?}",
                p.name, w.shape, want
            )));
        }
        let n: usize = want.iter().product();
        if w.bytes.len() != n * w.dtype.bytes() {
            return Err(error(format!(
                "weight `{}` has {} bytes, {n} elements of {:?} need {}",
                p.name,
                w.bytes.len(),
                w.dtype,
                n * w.dtype.bytes()
            )));
        }
    }
    Ok(())
}

/// Run `graph` once: `inputs` holds every `Op::Input`; the result holds every output.
/// Weights are checked as they are used.
pub fn run(
    graph: &Graph,
    weights: &dyn WeightSource,
    inputs: &BTreeMap<Io, Tensor>,
    dims: Bindings,
) -> Result<BTreeMap<Io, Tensor>, InterpError> {
    // Free every value after its last use; outputs live to the end.
    let n = graph.nodes.len();
    let mut last_use = vec![0usize; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in &node.inputs {
            if let Value::Node(id) = v {
                last_use[id.0 as usize] = i;
            }
        }
    }
    for o in &graph.outputs {
        last_use[o.node.0 as usize] = usize::MAX;
    }
    let mut values: Vec<Option<Tensor>> = vec![None; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        let shape: Vec<usize> = node
            .ty
            .shape
            .iter()
            .map(|d| d.eval(dims.seq, dims.past))
            .collect();
        let out = if let Op::Input { io } = &node.op {
            let t = inputs
                .get(io)
                .ok_or_else(|| error(format!("missing input `{io}`")))?;
            if t.shape != shape {
                return Err(error(format!(
                    "input `{io}` has shape {:?}, expected {:?}",
                    t.shape, shape
                )));
            }
            t.clone()
        } else {
            let mut args = Vec::with_capacity(node.inputs.len());
            for v in &node.inputs {
                args.push(match *v {
                    Value::Node(id) => {
                        let t = values[id.0 as usize].as_ref().ok_or_else(|| {
                            error(format!("%{i} reads %{}, which has no value", id.0))
                        })?;
                        kernels::Arg {
                            shape: t.shape.clone(),
                            rows: Rows::F32(&t.data),
                        }
                    }
                    Value::Param(p) => {
                        let p = graph.param(p);
                        let w = weights
                            .get(&p.name)
                            .ok_or_else(|| error(format!("missing weight `{}`", p.name)))?;
                        let want: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
                        if w.shape != want.as_slice() {
                            return Err(error(format!(
                                "weight `{}` has shape {:?}, the graph expects {:?}",
                                p.name, w.shape, want
                            )));
                        }
                        kernels::Arg {
                            shape: want,
                            rows: Rows::View(w),
                        }
                    }
                });
            }
            let t = kernels::eval(&node.op, &args, &shape)
                .map_err(|e| error(format!("%{i}: {}", e.message)))?;
            if t.shape != shape {
                return Err(error(format!(
                    "%{i}: computed shape {:?}, expected {:?}",
                    t.shape, shape
                )));
            }
            t
        };
        values[i] = Some(out);
        for v in &node.inputs {
            if let Value::Node(id) = v {
                if last_use[id.0 as usize] == i {
                    values[id.0 as usize] = None;
                }
            }
        }
    }
    let mut outs = BTreeMap::new();
    for o in &graph.outputs {
        let t = values[o.node.0 as usize]
            .clone()
            .ok_or_else(|| error(format!("output {} has no value", o.io)))?;
        outs.insert(o.io.clone(), t);
    }
    Ok(outs)
}

/// A model ready to run: a prefill graph, a decode graph and their weights.
pub struct Interpreter<'a> {
    prefill: &'a Graph,
    decode: &'a Graph,
    weights: &'a dyn WeightSource,
    vocab: usize,
}

impl fmt::Debug for Interpreter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interpreter")
            .field("model", &self.prefill.name)
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl<'a> Interpreter<'a> {
    /// Check both graphs' weights and remember them. The graphs must come from the same
    /// spec (`lower(spec, Mode::Prefill)` and `lower(spec, Mode::Decode)`).
    pub fn new(
        prefill: &'a Graph,
        decode: &'a Graph,
        weights: &'a dyn WeightSource,
    ) -> Result<Self, InterpError> {
        check_weights(prefill, weights)?;
        check_weights(decode, weights)?;
        let vocab = prefill
            .output(&Io::Logits)
            .and_then(|id| prefill.node(id).ty.shape.last().and_then(|d| d.as_const()))
            .ok_or_else(|| error("the prefill graph has no [seq, vocab] logits output"))?;
        Ok(Interpreter {
            prefill,
            decode,
            weights,
            vocab: vocab as usize,
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// An empty cache (`past = 0`) with one tensor per cache input of the graphs.
    pub fn new_cache(&self) -> KvCache {
        let mut tensors = BTreeMap::new();
        for (id, io) in self.prefill.inputs() {
            if io.is_carried() {
                let shape = self
                    .prefill
                    .node(id)
                    .ty
                    .shape
                    .iter()
                    .map(|d| d.eval(0, 0))
                    .collect();
                tensors.insert(io.clone(), Tensor::zeros(shape));
            }
        }
        KvCache { past: 0, tensors }
    }

    /// Run `tokens` after the cached ones; returns their logits `[tokens.len() * vocab]`
    /// (row-major, one row per token) and adds them to the cache.
    pub fn prefill(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, InterpError> {
        if tokens.is_empty() {
            return Err(error("prefill needs at least one token"));
        }
        self.step(self.prefill, cache, tokens)
    }

    /// Run one token after the cached ones; returns its logits `[vocab]`.
    pub fn decode(&self, cache: &mut KvCache, token: u32) -> Result<Vec<f32>, InterpError> {
        self.step(self.decode, cache, &[token])
    }

    fn step(
        &self,
        graph: &Graph,
        cache: &mut KvCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, InterpError> {
        let past = cache.past;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(error(format!(
                "token {t} is outside the vocabulary of {}",
                self.vocab
            )));
        }
        let mut inputs = std::mem::take(&mut cache.tensors);
        let seq = tokens.len();
        inputs.insert(
            Io::Tokens,
            Tensor::new(vec![seq], tokens.iter().map(|&t| t as f32).collect()),
        );
        inputs.insert(
            Io::Positions,
            Tensor::new(vec![seq], (past..past + seq).map(|p| p as f32).collect()),
        );
        let result = run(graph, self.weights, &inputs, Bindings { seq, past });
        inputs.remove(&Io::Tokens);
        inputs.remove(&Io::Positions);
        let mut outs = match result {
            Ok(o) => o,
            Err(e) => {
                cache.tensors = inputs;
                return Err(e);
            }
        };
        for io in inputs.into_keys() {
            let new = outs
                .remove(&io)
                .ok_or_else(|| error(format!("the graph does not return `{io}`")))?;
            cache.tensors.insert(io, new);
        }
        cache.past = past + seq;
        let logits = outs
            .remove(&Io::Logits)
            .ok_or_else(|| error("the graph has no logits output"))?;
        Ok(logits.data)
    }
}
