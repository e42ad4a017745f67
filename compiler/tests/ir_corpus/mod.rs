//! Hand-built IR for the round-trip tests: every op, attribute, literal, operator and
//! buffer-name form of the graph and kernel text, including those lowering may not
//! produce.

use archc_compiler::ir::{
    AttnOp, BinaryOp, DType, Dim, ElementwiseOp, Epilogue, ExpertAct, FlashAttnOp, Graph, Instr,
    Io, KvPart, LinearOp, MlaAttn, Mode, MoeOp, Node, NodeId, NormKind, NormOp, NormRopeOp, Op,
    Output, Param, ParamId, RopeOp, RouterSelectOp, RouterWeightsOp, StatePart, Type, UnaryOp,
    Value,
};
use archc_compiler::kernel::build::{bin, f, i, load, past, select, seq, un, var};
use archc_compiler::kernel::{
    Access, BinOp, Buffer, BufferKind, Elem, Expr, Kernel, Launch, LoopKind, Program, Stmt, Ty,
    UnOp,
};
use archc_spec::{Pairing, RopeScaling, RouterScore};

fn rope(pairing: Pairing, scaling: RopeScaling) -> RopeOp {
    RopeOp {
        theta: 500000.0,
        dims: 64,
        pairing,
        scaling,
    }
}

fn yarn(
    mscale: f64,
    mscale_all_dim: f64,
    attention_factor: Option<f64>,
    truncate: bool,
) -> RopeScaling {
    RopeScaling::Yarn {
        factor: 40.0,
        original_context: 4096,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale,
        mscale_all_dim,
        attention_factor,
        truncate,
    }
}

fn attn_full() -> AttnOp {
    AttnOp {
        scale: 0.1352337788608801,
        causal: true,
        window: Some(4096),
        chunk: Some(8192),
        softcap: Some(50.0),
        sinks: true,
        mla: Some(MlaAttn {
            rank: 512,
            nope: 128,
            v: 128,
        }),
    }
}

fn attn_plain() -> AttnOp {
    AttnOp {
        scale: 1e-20,
        causal: false,
        window: None,
        chunk: None,
        softcap: None,
        sinks: false,
        mla: None,
    }
}

fn select_op(full: bool) -> RouterSelectOp {
    RouterSelectOp {
        top_k: 8,
        score: if full {
            RouterScore::Sigmoid
        } else {
            RouterScore::Softmax
        },
        topk_first: full,
        correction_bias: full,
        groups: full.then_some((8, 4)),
    }
}

fn weights_op(full: bool) -> RouterWeightsOp {
    RouterWeightsOp {
        score: RouterScore::Sigmoid,
        topk_first: full,
        renormalize: full,
        scale: if full { 2.827 } else { 1.0 },
    }
}

/// Every op and every attribute value worth telling apart, in one (unverified) graph.
pub fn every_op() -> Vec<Op> {
    let mut ops = vec![
        Op::Input { io: Io::Tokens },
        Op::Input { io: Io::Positions },
        Op::Input {
            io: Io::kv(0, KvPart::K),
        },
        Op::Input {
            io: Io::kv(3, KvPart::Latent),
        },
        Op::Input {
            io: Io::state(1, StatePart::Conv),
        },
        Op::Input {
            io: Io::state(1, StatePart::Recurrent),
        },
        Op::Input { io: Io::value("x") },
        Op::Gather,
        Op::MatMul,
        Op::ExpertMatMul,
        Op::Binary(BinaryOp::Add),
        Op::Binary(BinaryOp::Mul),
        Op::Reshape {
            shape: vec![Dim::SEQ, Dim::c(4), Dim::c(8)],
        },
        Op::Expand {
            shape: vec![Dim::c(1), Dim::PAST],
        },
        Op::Slice {
            axis: 2,
            start: 576,
            end: 768,
        },
        Op::LastRow,
        Op::TailRows { n: 3 },
        Op::DropTailRows { n: 128 },
        Op::DepthwiseConv,
        Op::DecayGate,
        Op::DeltaRule,
        Op::Concat { axis: 0 },
        Op::Sum { axis: 1 },
        Op::Attention(attn_full()),
        Op::Attention(attn_plain()),
        Op::AttnTemperature {
            floor_scale: 8192.0,
            attn_scale: 0.1,
        },
        Op::RouterSelect(select_op(true)),
        Op::RouterSelect(select_op(false)),
        Op::RouterWeights(weights_op(true)),
        Op::RouterWeights(weights_op(false)),
        Op::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        },
        Op::FlashAttention(FlashAttnOp {
            attn: attn_full(),
            gate: true,
        }),
        Op::FlashAttention(FlashAttnOp {
            attn: attn_plain(),
            gate: false,
        }),
        Op::Elementwise(ElementwiseOp {
            operands: 3,
            program: Vec::new(),
        }),
        Op::Elementwise(ElementwiseOp {
            operands: 2,
            program: vec![
                Instr::Unary(UnaryOp::Scale(-0.5), 1),
                Instr::Binary(BinaryOp::Mul, 0, 2),
                Instr::ClampedSwiglu {
                    alpha: 1.702,
                    limit: 7.0,
                    gate: 3,
                    up: 0,
                },
                Instr::Unary(UnaryOp::Softcap(30.0), 4),
            ],
        }),
    ];
    for u in [
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Relu,
        UnaryOp::Silu,
        UnaryOp::Sigmoid,
        UnaryOp::Scale(0.1),
        UnaryOp::Scale(-1e-300),
        UnaryOp::Scale(1.5e20),
        UnaryOp::Scale(f64::MIN_POSITIVE / 4.0),
        UnaryOp::Softcap(f64::INFINITY),
        UnaryOp::Softcap(f64::NEG_INFINITY),
        UnaryOp::Scale(-0.0),
    ] {
        ops.push(Op::Unary(u));
    }
    let mut norms = Vec::new();
    for kind in [NormKind::Rms, NormKind::Layer] {
        for plus_one in [false, true] {
            for weight in [false, true] {
                for bias in [false, true] {
                    norms.push(NormOp {
                        kind,
                        eps: 1e-6,
                        plus_one,
                        weight,
                        bias,
                    });
                }
            }
        }
    }
    for &n in &norms {
        ops.push(Op::Norm(n));
    }
    let scalings = [
        RopeScaling::None,
        RopeScaling::Linear { factor: 8.0 },
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192,
        },
        yarn(1.0, 0.0, None, true),
        yarn(0.707, 1.0, Some(1.2), false),
        yarn(1.0, 0.707, None, true),
    ];
    for pairing in [Pairing::Half, Pairing::Interleaved] {
        for s in &scalings {
            ops.push(Op::Rope(rope(pairing, s.clone())));
        }
    }
    for (i, s) in scalings.iter().enumerate() {
        ops.push(Op::NormRope(NormRopeOp {
            norm: (i % 2 == 0).then_some(norms[i + 3]),
            rope: rope(Pairing::Half, s.clone()),
            append: i % 3 == 0,
        }));
    }
    let epilogues = [
        Epilogue::None,
        Epilogue::Act(UnaryOp::Scale(0.5)),
        Epilogue::Glu {
            act: UnaryOp::GeluTanh,
            gate: 1,
        },
        Epilogue::ClampedGlu {
            alpha: 1.702,
            limit: 7.0,
            gate: 0,
        },
    ];
    for (i, epilogue) in epilogues.into_iter().enumerate() {
        ops.push(Op::Linear(LinearOp {
            norm: (i % 2 == 1).then_some(norms[i * 3]),
            bias: [
                vec![],
                vec![true, false, true],
                vec![false, true],
                vec![true, true],
            ][i]
                .clone(),
            epilogue,
            residual: i % 2 == 0,
        }));
    }
    for (act, bias, weight_input) in [
        (ExpertAct::Plain(UnaryOp::Relu), true, false),
        (ExpertAct::Glu(UnaryOp::Silu), false, true),
        (
            ExpertAct::Clamped {
                alpha: 1.702,
                limit: 7.0,
            },
            true,
            true,
        ),
    ] {
        ops.push(Op::Moe(MoeOp {
            select: select_op(bias),
            weights: weights_op(weight_input),
            act,
            bias,
            weight_input,
        }));
    }
    ops
}

/// Hand-built graphs: every op with odd names, types, labels and operands; and an empty
/// graph.
pub fn graphs() -> Vec<Graph> {
    let mut g = Graph::new("tiny \"q\" \\ é\t☃", Mode::Prefill);
    g.params = vec![
        Param {
            name: "embed.tokens".into(),
            shape: vec![61, 32],
            dtype: DType::Bf16,
        },
        Param {
            name: "layers.0.moe.experts.up.weight".into(),
            shape: vec![],
            dtype: DType::F8,
        },
        Param {
            name: "w-1:x".into(),
            shape: vec![1],
            dtype: DType::F16,
        },
    ];
    let dims = [
        vec![Dim::SEQ, Dim::c(32)],
        vec![],
        vec![Dim::SEQ.plus(Dim::PAST), Dim::c(2)],
        vec![Dim {
            konst: 3,
            seq: 2,
            past: 5,
        }],
        vec![Dim::c(0), Dim::PAST, Dim::c(7)],
    ];
    let dtypes = [DType::F32, DType::I32, DType::Bf16, DType::F16, DType::F8];
    for (j, op) in every_op().into_iter().enumerate() {
        let shape = dims[j % dims.len()].clone();
        let ty = Type::new(shape, dtypes[j % dtypes.len()]);
        // Reshape and expand print their shape only when it is not the type's.
        let op = match op {
            Op::Reshape { .. } if j % 2 == 0 => Op::Reshape {
                shape: ty.shape.clone(),
            },
            op => op,
        };
        let inputs = match j % 4 {
            0 => vec![],
            1 => vec![Value::Param(ParamId(0))],
            2 => vec![
                Value::Node(NodeId(0)),
                Value::Param(ParamId(2)),
                Value::Node(NodeId(j as u32 + 1)),
            ],
            _ => vec![Value::Node(NodeId(j as u32 / 2)); 5],
        };
        g.nodes.push(Node { op, inputs, ty });
        if j % 7 == 0 {
            g.labels
                .push((NodeId(j as u32), format!("layer {j} (block local)")));
        }
        if j % 11 == 0 {
            g.labels.push((NodeId(j as u32), String::new()));
            g.labels.push((
                NodeId(j as u32),
                "  two spaces, a # and trailing space ".into(),
            ));
        }
    }
    // A forward operand (unverified graphs may have one) and a label of the end.
    let n = g.nodes.len() as u32;
    g.nodes.push(Node {
        op: Op::Expand {
            shape: vec![Dim::SEQ],
        },
        inputs: vec![Value::Node(NodeId(0))],
        ty: Type::new(vec![Dim::SEQ], DType::F32),
    });
    g.labels.push((NodeId(n + 1), "end".into()));
    g.outputs = vec![
        Output {
            io: Io::Logits,
            node: NodeId(n),
        },
        Output {
            io: Io::kv(0, KvPart::V),
            node: NodeId(1),
        },
        Output {
            io: Io::value("y_2"),
            node: NodeId(0),
        },
    ];
    vec![g, Graph::new("", Mode::Decode)]
}

/// A kernel that uses every expression and statement form, compacted as lowering does.
pub fn kernels() -> Vec<Kernel> {
    let mut k = Kernel::new("every_form");
    let x = k.buf("x", Elem::F32, Access::Read);
    let ids = k.buf("%1", Elem::I32, Access::Read);
    let emb = k.buf("@embed.tokens", Elem::Bf16, Access::Read);
    let raw = k.buf("cache.0.k", Elem::U8, Access::ReadWrite);
    let out = k.buf("out", Elem::F32, Access::Write);
    let tmp = k.buf("tmp", Elem::F32, Access::Scratch { len: 64 });
    let t = k.var("t", Ty::I64);
    let j = k.var("row_max", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    let flag = k.var("", Ty::Bool);
    let w = k.var("w_2", Ty::F32);
    let b = k.var("b", Ty::I64);
    let unused = k.var("unused", Ty::F32);
    let _ = unused;
    let floats = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        1e-45,
        f32::MIN_POSITIVE,
        f32::MIN,
        f32::MAX,
        f32::EPSILON,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e16,
        123456790.0,
        -3.4028235e38,
    ];
    let mut body: Vec<Stmt> = floats
        .iter()
        .enumerate()
        .map(|(n, &v)| Stmt::Store {
            buf: out,
            index: i(n as i64),
            value: f(v),
        })
        .collect();
    let ints = [0, -1, 7, i64::MIN, i64::MAX];
    let int_exprs: Vec<Expr> = ints
        .iter()
        .map(|&v| i(v))
        .chain([
            un(UnOp::Neg, i(3)),
            un(UnOp::Neg, i(-3)),
            un(UnOp::Neg, i(i64::MIN)),
            un(UnOp::Neg, un(UnOp::Neg, var(t))),
            un(UnOp::Abs, un(UnOp::Neg, var(t))),
            un(UnOp::ToI64, f(2.5)),
            load(ids, var(t)),
            load(raw, bin(BinOp::Add, seq(), past())),
            bin(BinOp::Shl, var(t), i(3)),
            bin(BinOp::Shr, i(-64), i(2)),
            bin(BinOp::BitAnd, var(t), i(255)),
            bin(BinOp::BitOr, var(t), bin(BinOp::Rem, var(t), i(7))),
            bin(BinOp::Min, var(t), bin(BinOp::Max, i(0), seq())),
            bin(BinOp::Div, bin(BinOp::Sub, var(t), i(-1)), i(2)),
        ])
        .collect();
    let float_exprs = vec![
        un(UnOp::Neg, f(1.0)),
        un(UnOp::Neg, f(-1.0)),
        un(UnOp::Neg, f(f32::INFINITY)),
        un(UnOp::Neg, f(f32::NEG_INFINITY)),
        un(UnOp::Neg, var(acc)),
        un(UnOp::Exp, un(UnOp::Log, un(UnOp::Sqrt, var(acc)))),
        un(
            UnOp::Tanh,
            un(UnOp::Sin, un(UnOp::Cos, un(UnOp::Floor, var(acc)))),
        ),
        un(UnOp::ToF32, var(t)),
        un(UnOp::F16Bits, load(raw, i(0))),
        bin(BinOp::Pow, var(acc), f(0.5)),
        bin(BinOp::Sub, var(acc), f(-1.0)),
        bin(
            BinOp::Mul,
            bin(BinOp::Add, var(acc), f(1.0)),
            bin(BinOp::Div, load(x, var(t)), load(emb, i(2))),
        ),
        select(
            bin(
                BinOp::And,
                bin(BinOp::Lt, var(t), i(3)),
                bin(BinOp::Or, var(flag), un(UnOp::Not, var(flag))),
            ),
            f(1.0),
            load(tmp, var(j)),
        ),
    ];
    let bool_exprs = vec![
        Expr::Bool(true),
        Expr::Bool(false),
        un(UnOp::Not, Expr::Bool(false)),
        un(UnOp::Not, un(UnOp::Not, bin(BinOp::Le, var(t), i(1)))),
        bin(BinOp::Ge, var(acc), f(0.0)),
        bin(BinOp::Gt, var(t), past()),
        bin(BinOp::Eq, var(flag), Expr::Bool(true)),
        bin(BinOp::Ne, var(t), i(-5)),
    ];
    let mut inner = vec![
        Stmt::Local {
            var: acc,
            init: f(0.0),
        },
        Stmt::Let {
            var: flag,
            value: bin(BinOp::Lt, var(t), seq()),
        },
        Stmt::Let {
            var: b,
            value: load(raw, var(t)),
        },
    ];
    for (n, e) in int_exprs.into_iter().enumerate() {
        inner.push(Stmt::Store {
            buf: raw,
            index: i(n as i64),
            value: e,
        });
    }
    for (n, e) in float_exprs.into_iter().enumerate() {
        inner.push(Stmt::Set {
            var: acc,
            value: bin(BinOp::Add, var(acc), e),
        });
        inner.push(Stmt::Store {
            buf: tmp,
            index: i(n as i64),
            value: var(acc),
        });
    }
    for e in bool_exprs {
        inner.push(Stmt::If {
            cond: e,
            then: vec![],
            els: vec![Stmt::Let {
                var: w,
                value: var(acc),
            }],
        });
    }
    inner.push(Stmt::If {
        cond: var(flag),
        then: vec![Stmt::Store {
            buf: out,
            index: var(b),
            value: f(2.0),
        }],
        els: vec![],
    });
    inner.push(Stmt::Loop {
        var: j,
        start: var(t),
        end: bin(BinOp::Mul, seq(), i(4)),
        step: 4,
        kind: LoopKind::Unroll(4),
        body: vec![],
    });
    body.push(Stmt::Loop {
        var: t,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Loop {
            var: j,
            start: i(-2),
            end: i(1),
            step: 3,
            kind: LoopKind::Vector(16),
            body: inner,
        }],
    });
    body.push(Stmt::Loop {
        var: t,
        start: i(0),
        end: i(0),
        step: 1,
        kind: LoopKind::Serial,
        body: vec![],
    });
    k.body = body;
    k.compact_vars();
    let empty = Kernel::new("empty");
    vec![k, empty]
}

/// Programs with shared buffer names, a buffer called `_`, inputs not named by their io,
/// aliases of the second buffer of a name, and in-place appends.
pub fn programs() -> Vec<Program> {
    let dim = |d: &[Dim]| d.to_vec();
    let buffer = |name: &str, shape: Vec<Dim>, kind: BufferKind| Buffer {
        name: name.into(),
        elem: Elem::F32,
        shape,
        kind,
    };
    let ks = kernels();
    let mut copy = Kernel::new("copy");
    copy.buf("a", Elem::F32, Access::Read);
    copy.buf("b", Elem::F32, Access::Write);
    copy.buf("s", Elem::F32, Access::Scratch { len: 8 });
    let p = Program {
        name: "my model.prefill".into(),
        buffers: vec![
            buffer("tok", dim(&[Dim::SEQ]), BufferKind::Input(Io::Tokens)),
            buffer(
                "cache.0.k",
                dim(&[Dim::PAST, Dim::c(2)]),
                BufferKind::Input(Io::kv(0, KvPart::K)),
            ),
            buffer(
                "cache.0.v",
                dim(&[Dim::PAST, Dim::c(2)]),
                BufferKind::Input(Io::kv(0, KvPart::V)),
            ),
            buffer(
                "cache.0.k",
                dim(&[Dim::PAST.plus(Dim::SEQ), Dim::c(2)]),
                BufferKind::Output(Io::kv(0, KvPart::K)),
            ),
            buffer(
                "cache.0.v",
                dim(&[Dim::PAST.plus(Dim::SEQ), Dim::c(2)]),
                BufferKind::Append { to: 2 },
            ),
            buffer(
                "%5",
                dim(&[Dim::c(2), Dim::PAST.plus(Dim::SEQ)]),
                BufferKind::Alias { of: 3 },
            ),
            buffer("_", dim(&[]), BufferKind::Temp),
            buffer("%5", dim(&[Dim::c(4)]), BufferKind::Alias { of: 5 }),
            buffer("@w", dim(&[Dim::c(4)]), BufferKind::Param),
            buffer(
                "logits",
                dim(&[Dim::SEQ, Dim::c(61)]),
                BufferKind::Output(Io::Logits),
            ),
            buffer("y", dim(&[Dim::c(1)]), BufferKind::Output(Io::value("z"))),
        ],
        kernels: vec![ks[0].clone(), copy, ks[1].clone()],
        launches: vec![
            Launch {
                kernel: 1,
                bufs: vec![Some(1), Some(3), None],
            },
            Launch {
                kernel: 1,
                bufs: vec![Some(6), Some(7), None],
            },
            Launch {
                kernel: 2,
                bufs: vec![],
            },
            Launch {
                kernel: 0,
                bufs: vec![Some(0), Some(4), Some(2), Some(5), Some(9), None],
            },
        ],
    };
    let empty = Program {
        name: String::new(),
        buffers: vec![],
        kernels: vec![],
        launches: vec![],
    };
    vec![p, empty]
}
