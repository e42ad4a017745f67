//! Lowering from a validated `Spec` to the Graph IR: embeddings, every layer's norms,
//! mixer and feed-forward around the residual stream, the final norm and the head.
//!
//! Each layer `i` reads its KV cache from the inputs `cache.{i}.k` / `cache.{i}.v`
//! (`[past, kv_heads, dim]`, f32), or for MLA from `cache.{i}.kv` (`[past, kv_rank +
//! rope_dim]`: the normed latent and the shared RoPE key), and returns the appended cache
//! under the same output names. A linear-attention layer instead reads and returns its
//! fixed-size state, `cache.{i}.conv` and `cache.{i}.state` (see `linear`), replaced
//! rather than grown. Parameters are named by the canonical tensor names of `archc_spec::tensors`.

mod attention;
mod ffn;
mod linear;

use crate::ir::{
    infer, BinaryOp, DType, Dim, Graph, Io, Mode, Node, NodeId, NormKind, NormOp, Op, Output,
    Param, ParamId, Type, UnaryOp, Value,
};
use archc_spec::{Mixer, Norm, Placement, Spec};
use std::collections::BTreeMap;
use std::fmt;

/// Why a spec could not be lowered.
#[derive(Debug, Clone, PartialEq)]
pub struct LowerError {
    pub message: String,
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LowerError {}

fn err(message: impl Into<String>) -> LowerError {
    LowerError {
        message: message.into(),
    }
}

/// Which token positions a forward pass computes logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Logits {
    /// Every position: `logits [seq, vocab]` (what `archc logits` and the tests compare).
    #[default]
    All,
    /// The last position only: `logits [1, vocab]`. The residual stream's last row is
    /// taken (`last_row`) before the final norm, so the norm and the LM head run for one
    /// token; generation and benchmarks need nothing else. A decode graph is the same
    /// either way (its `seq` is 1).
    Last,
}

/// What a lowering produces besides the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub logits: Logits,
}

/// Lower `spec` to a graph of one forward pass in the given mode, with logits for every
/// position.
pub fn lower(spec: &Spec, mode: Mode) -> Result<Graph, LowerError> {
    lower_with(spec, mode, &Options::default())
}

/// `lower` with explicit options.
pub fn lower_with(spec: &Spec, mode: Mode, options: &Options) -> Result<Graph, LowerError> {
    let seq = match mode {
        Mode::Prefill => Dim::SEQ,
        Mode::Decode => Dim::c(1),
    };
    let mut b = Builder {
        g: Graph::new(&spec.name, mode),
        params: BTreeMap::new(),
        dtype: spec.dtype.into(),
        seq,
        prefix: String::new(),
    };
    if spec.schedule.len() as u64 != spec.layers
        || spec.schedule.iter().any(|&s| s >= spec.blocks.len())
    {
        return Err(err(
            "the spec's schedule does not cover its layers with known blocks",
        ));
    }
    let h = spec.hidden;
    b.label("embeddings");
    let tokens = b.input(Io::Tokens, vec![seq], DType::I32);
    let positions = b.input(Io::Positions, vec![seq], DType::I32);
    let table = b.param("embed.tokens", &[spec.vocab, h]);
    let mut x = b.op(Op::Gather, &[table, tokens])?;
    if let Some(s) = spec.embed_scale {
        // HF multiplies by the scale cast to the weights' dtype (Gemma), so round it the same way.
        x = b.op(Op::Unary(UnaryOp::Scale(round_to(s, spec.dtype))), &[x])?;
    }
    if let Some(rows) = spec.learned_positions {
        let table = b.param("embed.positions", &[rows, h]);
        let pe = b.op(Op::Gather, &[table, positions])?;
        x = b.op(Op::Binary(BinaryOp::Add), &[x, pe])?;
    }
    if let Some(n) = spec.token_types {
        // Token-type ids default to zeros (as in HF when none are passed): add row 0.
        let table = b.param("embed.token_types", &[n, h]);
        let row = b.op(
            Op::Slice {
                axis: 0,
                start: 0,
                end: 1,
            },
            &[table],
        )?;
        x = b.op(Op::Binary(BinaryOp::Add), &[x, row])?;
    }
    if let Some(n) = &spec.embed_norm {
        x = b.norm(x, "embed.norm", n, h)?;
    }

    for layer in 0..spec.layers as usize {
        let block = spec.block(layer);
        b.prefix = format!("layers.{layer}.");
        b.label(&format!("layer {layer} (block {})", block.name));
        let at = |e: LowerError| {
            err(format!(
                "layer {layer} (block {}): {}",
                block.name, e.message
            ))
        };
        let norm = &block.norm;
        let mixer = |b: &mut Builder, x: Value| -> Result<Value, LowerError> {
            match &block.mixer {
                Mixer::Attention(a) => attention::lower(b, spec, layer, a, x, positions),
                Mixer::GatedDeltaNet(g) => linear::gated_deltanet(b, spec, layer, g, norm.eps, x),
                Mixer::KimiDelta(k) => linear::kimi_delta(b, spec, layer, k, norm.eps, x),
                Mixer::ShortConv(c) => linear::short_conv(b, spec, layer, c, x),
            }
        };
        let ffn = |b: &mut Builder, x: Value| ffn::lower(b, spec, &block.ffn, x);
        x = match block.placement {
            Placement::Pre | Placement::Sandwich => {
                let sandwich = block.placement == Placement::Sandwich;
                let n = b.norm(x, "attn_norm", norm, h).map_err(at)?;
                let mut m = mixer(&mut b, n).map_err(at)?;
                if sandwich {
                    m = b.norm(m, "attn_post_norm", norm, h).map_err(at)?;
                }
                let x = b.op(Op::Binary(BinaryOp::Add), &[x, m])?;
                let n = b.norm(x, "ffn_norm", norm, h).map_err(at)?;
                let mut f = ffn(&mut b, n).map_err(at)?;
                if sandwich {
                    f = b.norm(f, "ffn_post_norm", norm, h).map_err(at)?;
                }
                b.op(Op::Binary(BinaryOp::Add), &[x, f])?
            }
            Placement::Post => {
                let m = mixer(&mut b, x).map_err(at)?;
                let m = b.norm(m, "attn_post_norm", norm, h).map_err(at)?;
                let x = b.op(Op::Binary(BinaryOp::Add), &[x, m])?;
                let f = ffn(&mut b, x).map_err(at)?;
                let f = b.norm(f, "ffn_post_norm", norm, h).map_err(at)?;
                b.op(Op::Binary(BinaryOp::Add), &[x, f])?
            }
            Placement::PostLn => {
                let m = mixer(&mut b, x).map_err(at)?;
                let x = b.op(Op::Binary(BinaryOp::Add), &[x, m])?;
                let x = b.norm(x, "attn_post_norm", norm, h).map_err(at)?;
                let f = ffn(&mut b, x).map_err(at)?;
                let x = b.op(Op::Binary(BinaryOp::Add), &[x, f])?;
                b.norm(x, "ffn_post_norm", norm, h).map_err(at)?
            }
        };
    }

    b.prefix.clear();
    b.label("head");
    if options.logits == Logits::Last && mode == Mode::Prefill {
        x = b.op(Op::LastRow, &[x])?;
    }
    if let Some(n) = &spec.final_norm {
        x = b.norm(x, "final_norm", n, h)?;
    }
    let head = if spec.tied {
        "embed.tokens"
    } else {
        "lm_head.weight"
    };
    let w = b.param(head, &[spec.vocab, h]);
    let mut logits = b.op(Op::MatMul, &[x, w])?;
    if let Some(cap) = spec.logit_softcap {
        logits = b.op(Op::Unary(UnaryOp::Softcap(cap)), &[logits])?;
    }
    b.output(Io::Logits, logits);
    // Cache outputs come after the logits, in layer order.
    let mut g = b.g;
    let logits_out = g.outputs.pop().expect("logits was just pushed");
    g.outputs.insert(0, logits_out);
    Ok(g)
}

/// Round a constant to what a tensor of `dtype` would hold (round to nearest even).
fn round_to(x: f64, dtype: archc_spec::DType) -> f64 {
    let keep = match dtype {
        archc_spec::DType::F32 => return x as f32 as f64,
        archc_spec::DType::F16 => 10,
        archc_spec::DType::Bf16 => 7,
        archc_spec::DType::F8 => 3,
    };
    let bits = (x as f32).to_bits();
    let drop = 23 - keep;
    let half = 1u32 << (drop - 1);
    let lsb = (bits >> drop) & 1;
    let rounded = (bits + half - 1 + lsb) & !((1u32 << drop) - 1);
    f32::from_bits(rounded) as f64
}

/// Graph construction state: the graph so far, parameters by name, and the name prefix
/// of the layer being lowered.
pub(crate) struct Builder {
    g: Graph,
    params: BTreeMap<String, ParamId>,
    dtype: DType,
    /// The length of the new-token axis: `seq` for prefill, 1 for decode.
    seq: Dim,
    prefix: String,
}

impl Builder {
    /// A parameter by its global name, declared on first use.
    fn param(&mut self, name: &str, shape: &[u64]) -> Value {
        if let Some(&id) = self.params.get(name) {
            return Value::Param(id);
        }
        let id = ParamId(self.g.params.len() as u32);
        self.g.params.push(Param {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        });
        self.params.insert(name.to_string(), id);
        Value::Param(id)
    }

    /// A parameter of the current layer (`layers.{i}.` + `local`).
    fn local(&mut self, local: &str, shape: &[u64]) -> Value {
        let name = format!("{}{local}", self.prefix);
        self.param(&name, shape)
    }

    fn input(&mut self, io: Io, shape: Vec<Dim>, dtype: DType) -> Value {
        let id = NodeId(self.g.nodes.len() as u32);
        self.g.nodes.push(Node {
            op: Op::Input { io },
            inputs: Vec::new(),
            ty: Type::new(shape, dtype),
        });
        Value::Node(id)
    }

    fn op(&mut self, op: Op, inputs: &[Value]) -> Result<Value, LowerError> {
        let tys = inputs
            .iter()
            .map(|v| {
                self.g
                    .value_type(*v)
                    .ok_or_else(|| err("internal: dangling operand"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ty = infer(&op, &tys).map_err(|e| {
            err(format!(
                "internal: ill-typed {}: {e}",
                crate::ir::op_text(&op)
            ))
        })?;
        let id = NodeId(self.g.nodes.len() as u32);
        self.g.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            ty,
        });
        Ok(Value::Node(id))
    }

    fn output(&mut self, io: Io, v: Value) {
        if let Value::Node(node) = v {
            self.g.outputs.push(Output { io, node });
        }
    }

    fn label(&mut self, text: &str) {
        self.g
            .labels
            .push((NodeId(self.g.nodes.len() as u32), text.to_string()));
    }

    fn ty(&self, v: Value) -> Type {
        self.g
            .value_type(v)
            .expect("builder values are always defined")
    }

    /// A norm over the last axis with the weights `{base}.weight` (and `.bias`), global names.
    fn norm(&mut self, x: Value, base: &str, n: &Norm, dim: u64) -> Result<Value, LowerError> {
        let name = format!("{}{base}", self.prefix);
        self.norm_named(x, &name, n, dim)
    }

    fn norm_named(
        &mut self,
        x: Value,
        name: &str,
        n: &Norm,
        dim: u64,
    ) -> Result<Value, LowerError> {
        let kind = match n.kind {
            archc_spec::NormKind::RmsNorm => NormKind::Rms,
            archc_spec::NormKind::LayerNorm => NormKind::Layer,
        };
        let bias = kind == NormKind::Layer && n.bias;
        let mut ins = vec![x, self.param(&format!("{name}.weight"), &[dim])];
        if bias {
            ins.push(self.param(&format!("{name}.bias"), &[dim]));
        }
        let op = NormOp {
            kind,
            eps: n.eps,
            plus_one: n.plus_one && kind == NormKind::Rms,
            weight: true,
            bias,
        };
        self.op(Op::Norm(op), &ins)
    }

    /// A torch Linear of the current layer: `x @ {base}.weight^T (+ {base}.bias)`.
    fn linear(
        &mut self,
        x: Value,
        base: &str,
        out: u64,
        inp: u64,
        bias: bool,
    ) -> Result<Value, LowerError> {
        let w = self.local(&format!("{base}.weight"), &[out, inp]);
        let y = self.op(Op::MatMul, &[x, w])?;
        if bias {
            let b = self.local(&format!("{base}.bias"), &[out]);
            return self.op(Op::Binary(BinaryOp::Add), &[y, b]);
        }
        Ok(y)
    }

    fn reshape(&mut self, x: Value, shape: Vec<Dim>) -> Result<Value, LowerError> {
        self.op(Op::Reshape { shape }, &[x])
    }

    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value, LowerError> {
        self.op(Op::Binary(op), &[a, b])
    }

    fn unary(&mut self, op: UnaryOp, a: Value) -> Result<Value, LowerError> {
        self.op(Op::Unary(op), &[a])
    }
}

#[cfg(test)]
mod tests {
    use super::round_to;
    use archc_spec::DType;

    #[test]
    fn embed_scale_rounds_like_the_model_dtype() {
        // sqrt(2304) = 48 is exact everywhere; sqrt(640) = 25.298... is not.
        assert_eq!(round_to(48.0, DType::Bf16), 48.0);
        assert_eq!(round_to(640f64.sqrt(), DType::Bf16), 25.25);
        assert_eq!(round_to(640f64.sqrt(), DType::F16), 25.296875);
        assert_eq!(
            round_to(640f64.sqrt(), DType::F32),
            640f64.sqrt() as f32 as f64
        );
    }
}
