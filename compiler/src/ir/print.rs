//! The text form of a graph: a header, one line per parameter, one line per node
//! (`%12 = matmul %10, @layers.0.attn.q.weight : [seq, 2048] f32`) and the outputs.
//!
//! Numbering is the arena index, so the text is deterministic and names what the
//! verifier's errors name. The text is complete: `ir::parse` rebuilds the same graph from
//! it (its module docs give the grammar). Attributes that have a usual value (a norm's
//! weight and bias, YaRN's `mscale`) print only when they differ from it, and a `reshape`
//! or `expand` prints its shape only when it is not the node's type.

use super::{AttnOp, BinaryOp, Graph, NormKind, Op, UnaryOp, Value};
use archc_spec::{Pairing, RopeScaling, RouterScore};
use std::fmt::{self, Write};

/// A float as it is printed: shortest round-trip form, in exponent notation when tiny or huge.
pub(crate) fn num(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` escapes quotes and control characters, so any name reads back exactly.
        writeln!(f, "graph {:?} {}", self.name, self.mode.as_str())?;
        for p in &self.params {
            writeln!(f, "param @{} : {}", p.name, p.ty())?;
        }
        let mut labels = self.labels.iter().peekable();
        for (i, n) in self.nodes.iter().enumerate() {
            while let Some((_, text)) = labels.next_if(|(id, _)| id.0 as usize <= i) {
                writeln!(f, "# {text}")?;
            }
            write!(f, "%{i} = {}", op_text(&n.op))?;
            if let Op::Reshape { shape } | Op::Expand { shape } = &n.op {
                if *shape != n.ty.shape {
                    write!(f, "{{[{}]}}", dims_text(shape))?;
                }
            }
            for (j, v) in n.inputs.iter().enumerate() {
                f.write_str(if j == 0 { " " } else { ", " })?;
                self.write_value(f, *v)?;
            }
            writeln!(f, " : {}", n.ty)?;
        }
        // Labels of the end of the graph (a pass may leave one after its last node).
        for (_, text) in labels {
            writeln!(f, "# {text}")?;
        }
        for o in &self.outputs {
            writeln!(f, "output {} = %{}", o.io, o.node.0)?;
        }
        Ok(())
    }
}

impl Graph {
    fn write_value(&self, f: &mut fmt::Formatter<'_>, v: Value) -> fmt::Result {
        match v {
            Value::Node(n) => write!(f, "%{}", n.0),
            Value::Param(p) => match self.params.get(p.0 as usize) {
                Some(p) => write!(f, "@{}", p.name),
                None => write!(f, "@<bad param {}>", p.0),
            },
        }
    }
}

/// The op's name and attributes, e.g. `rmsnorm{eps=1e-6}`.
pub(crate) fn op_text(op: &Op) -> String {
    match op {
        Op::Input { io } => format!("input {io}"),
        Op::Gather => "gather".into(),
        Op::MatMul => "matmul".into(),
        Op::ExpertMatMul => "expert_matmul".into(),
        Op::Unary(u) => match u {
            UnaryOp::Gelu => "gelu".into(),
            UnaryOp::GeluTanh => "gelu_tanh".into(),
            UnaryOp::Relu => "relu".into(),
            UnaryOp::Silu => "silu".into(),
            UnaryOp::Sigmoid => "sigmoid".into(),
            UnaryOp::Scale(c) => format!("scale{{{}}}", num(*c)),
            UnaryOp::Softcap(c) => format!("softcap{{{}}}", num(*c)),
        },
        Op::Binary(BinaryOp::Add) => "add".into(),
        Op::Binary(BinaryOp::Mul) => "mul".into(),
        Op::Norm(n) => {
            let mut s = match n.kind {
                NormKind::Rms => "rmsnorm".to_string(),
                NormKind::Layer => "layernorm".to_string(),
            };
            let _ = write!(s, "{{eps={}", num(n.eps));
            if n.plus_one {
                s.push_str(", plus_one");
            }
            if !n.weight {
                s.push_str(", no_weight");
            }
            // A layer norm usually has a bias, an RMS norm not.
            match (n.kind, n.bias) {
                (NormKind::Rms, true) => s.push_str(", bias"),
                (NormKind::Layer, false) => s.push_str(", no_bias"),
                _ => {}
            }
            s.push('}');
            s
        }
        Op::Reshape { .. } => "reshape".into(),
        Op::LastRow => "last_row".into(),
        Op::Expand { .. } => "expand".into(),
        Op::Slice { axis, start, end } => format!("slice{{axis={axis}, {start}..{end}}}"),
        Op::Concat { axis } => format!("concat{{axis={axis}}}"),
        Op::Sum { axis } => format!("sum{{axis={axis}}}"),
        Op::Rope(r) => {
            let mut s = format!("rope{{dims={}, theta={}", r.dims, num(r.theta));
            if r.pairing == Pairing::Interleaved {
                s.push_str(", interleaved");
            }
            match &r.scaling {
                RopeScaling::None => {}
                RopeScaling::Linear { factor } => {
                    let _ = write!(s, ", linear(factor={})", num(*factor));
                }
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_context,
                } => {
                    let _ = write!(
                        s,
                        ", llama3(factor={}, low={}, high={}, original={original_context})",
                        num(*factor),
                        num(*low_freq_factor),
                        num(*high_freq_factor)
                    );
                }
                RopeScaling::Yarn {
                    factor,
                    original_context,
                    beta_fast,
                    beta_slow,
                    mscale,
                    mscale_all_dim,
                    attention_factor,
                    truncate,
                } => {
                    let _ = write!(
                        s,
                        ", yarn(factor={}, original={original_context}, beta={}/{}, truncate={truncate}",
                        num(*factor),
                        num(*beta_fast),
                        num(*beta_slow),
                    );
                    // DeepSeek's variant sets these; HF's defaults are 1 and 0.
                    if *mscale != 1.0 {
                        let _ = write!(s, ", mscale={}", num(*mscale));
                    }
                    if *mscale_all_dim != 0.0 {
                        let _ = write!(s, ", mscale_all_dim={}", num(*mscale_all_dim));
                    }
                    if let Some(a) = attention_factor {
                        let _ = write!(s, ", attention_factor={}", num(*a));
                    }
                    s.push(')');
                }
            }
            s.push('}');
            s
        }
        Op::TailRows { n } => format!("tail_rows{{n={n}}}"),
        Op::DropTailRows { n } => format!("drop_tail_rows{{n={n}}}"),
        Op::DepthwiseConv => "depthwise_conv".into(),
        Op::DecayGate => "decay_gate".into(),
        Op::DeltaRule => "delta_rule".into(),
        Op::Attention(a) => attn_text(a),
        Op::AttnTemperature {
            floor_scale,
            attn_scale,
        } => {
            format!(
                "attn_temperature{{floor_scale={}, attn_scale={}}}",
                num(*floor_scale),
                num(*attn_scale)
            )
        }
        Op::RouterSelect(r) => {
            let mut s = format!("router_select{{top_k={}, {}", r.top_k, score(r.score));
            if r.topk_first {
                s.push_str(", topk_first");
            }
            if r.correction_bias {
                s.push_str(", correction_bias");
            }
            if let Some((count, keep)) = r.groups {
                let _ = write!(s, ", groups={count}/keep={keep}");
            }
            s.push('}');
            s
        }
        Op::RouterWeights(r) => {
            let mut s = format!("router_weights{{{}", score(r.score));
            if r.topk_first {
                s.push_str(", topk_first");
            }
            if r.renormalize {
                s.push_str(", renormalize");
            }
            if r.scale != 1.0 {
                let _ = write!(s, ", scale={}", num(r.scale));
            }
            s.push('}');
            s
        }
        Op::ClampedSwiglu { alpha, limit } => {
            format!(
                "clamped_swiglu{{alpha={}, limit={}}}",
                num(*alpha),
                num(*limit)
            )
        }
        Op::Linear(l) => super::fused::linear_text(l),
        Op::Elementwise(e) => super::fused::elementwise_text(e),
        Op::NormRope(n) => super::fused::norm_rope_text(n),
        Op::FlashAttention(f) => super::fused::flash_text(f),
        Op::Moe(m) => super::fused::moe_text(m),
    }
}

/// Dims as a shape prints them, without brackets: `seq, 8, 64`.
fn dims_text(shape: &[super::Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    dims.join(", ")
}

fn score(s: RouterScore) -> &'static str {
    match s {
        RouterScore::Softmax => "softmax",
        RouterScore::Sigmoid => "sigmoid",
    }
}

fn attn_text(a: &AttnOp) -> String {
    let mut s = format!("attention{{scale={}", num(a.scale));
    if a.causal {
        s.push_str(", causal");
    }
    if let Some(w) = a.window {
        let _ = write!(s, ", window={w}");
    }
    if let Some(c) = a.chunk {
        let _ = write!(s, ", chunk={c}");
    }
    if let Some(c) = a.softcap {
        let _ = write!(s, ", softcap={}", num(c));
    }
    if a.sinks {
        s.push_str(", sinks");
    }
    if let Some(m) = a.mla {
        let _ = write!(s, ", mla(rank={}, nope={}, v={})", m.rank, m.nope, m.v);
    }
    s.push('}');
    s
}
