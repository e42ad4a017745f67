//! The kernel IR of attention, norm+RoPE+cache and mixture-of-experts nodes against the
//! graph interpreter: tiny random-weight models are lowered (and optimised), the graph
//! interpreter computes every node, and each node of those ops is cut out into a one-node
//! graph, compiled to a kernel program and run in the kernel interpreter on three threads
//! with the same operands; the result must match the node's interpreter value to 1e-5.
//! Attention kernels also run compiled through LLVM at sizes that cut the kernel's query
//! tiles and key blocks unevenly.

use archc_compiler::codegen::llvm::{compile_kernels_with, Options, Target};
use archc_compiler::interp::{self, Bindings, RandomWeights, Tensor, WeightSource};
use archc_compiler::ir::{Graph, Io, Node, NodeId, Op, Output, ParamId, Value};
use archc_compiler::kernel::interp::{run_program, KBufData, KData};
use archc_compiler::kernel::lower::program;
use archc_compiler::kernel::{BufferKind, Elem, Program};
use archc_compiler::testing::*;
use archc_compiler::{passes, Mode};
use archc_spec::*;
use std::collections::BTreeMap;

/// Largest difference allowed between the kernel and the graph interpreter.
const TOL: f32 = 1e-5;
/// The same through LLVM, whose `exp` in vector loops is a polynomial, not libm's.
const LLVM_TOL: f32 = 1e-4;
/// Threads each kernel is split over (each runs its chunk of the parallel loop).
const THREADS: i64 = 3;

fn is_ours(op: &Op) -> bool {
    matches!(
        op,
        Op::Attention(_)
            | Op::FlashAttention(_)
            | Op::NormRope(_)
            | Op::ExpertMatMul
            | Op::RouterSelect(_)
            | Op::RouterWeights(_)
            | Op::Moe(_)
    )
}

/// A small xorshift stream in `[-1, 1)` for inputs (the weights have their own).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// One checked node: its op and the largest difference from the interpreter.
struct Checked {
    op: Op,
    diff: f32,
}

/// The graph with node `id` alone: its node operands become inputs `in{j}` of the same
/// types, its parameters stay parameters, and its result is the output `out`.
fn isolate(g: &Graph, id: usize) -> Graph {
    let node = &g.nodes[id];
    let mut m = Graph::new("node", g.mode);
    let mut ins = Vec::new();
    for (j, v) in node.inputs.iter().enumerate() {
        ins.push(match v {
            Value::Node(n) => {
                m.nodes.push(Node {
                    op: Op::Input {
                        io: Io::value(format!("in{j}")),
                    },
                    inputs: vec![],
                    ty: g.node(*n).ty.clone(),
                });
                Value::Node(NodeId(m.nodes.len() as u32 - 1))
            }
            Value::Param(p) => {
                let param = g.param(*p);
                let at = match m.param_id(&param.name) {
                    Some(q) => q,
                    None => {
                        m.params.push(param.clone());
                        ParamId(m.params.len() as u32 - 1)
                    }
                };
                Value::Param(at)
            }
        });
    }
    m.nodes.push(Node {
        op: node.op.clone(),
        inputs: ins,
        ty: node.ty.clone(),
    });
    m.outputs.push(Output {
        io: Io::value("out"),
        node: NodeId(m.nodes.len() as u32 - 1),
    });
    m
}

fn weight_values(w: &RandomWeights, name: &str) -> Vec<f32> {
    let v = w.get(name).expect("every parameter has a random weight");
    v.bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Every node of `g` computed by the graph interpreter for `seq` new tokens after `past`
/// cached ones (random cache contents), by node index.
fn interpret(
    g: &Graph,
    weights: &RandomWeights,
    seq: usize,
    past: usize,
    rng: &mut Rng,
) -> BTreeMap<usize, Tensor> {
    let mut inputs = BTreeMap::new();
    for (id, name) in g.inputs() {
        let shape: Vec<usize> = g
            .node(id)
            .ty
            .shape
            .iter()
            .map(|d| d.eval(seq, past))
            .collect();
        let n: usize = shape.iter().product();
        let data = match name {
            Io::Tokens => (0..n).map(|i| ((i * 17 + 5) % 61) as f32).collect(),
            Io::Positions => (past..past + n).map(|p| p as f32).collect(),
            _ => (0..n).map(|_| rng.next()).collect(),
        };
        inputs.insert(name.clone(), Tensor::new(shape, data));
    }
    let mut all = g.clone();
    all.outputs = (0..g.nodes.len())
        .map(|i| Output {
            io: Io::value(format!("v{i}")),
            node: NodeId(i as u32),
        })
        .collect();
    let outs = interp::run(&all, weights, &inputs, Bindings { seq, past }).expect("graph runs");
    outs.into_iter()
        .map(|(io, t)| (io.to_string()[1..].parse().expect("named v{i}"), t))
        .collect()
}

/// Run every attention / MoE node of `g` as a kernel and compare with the interpreter.
fn check_graph(
    g: &Graph,
    weights: &RandomWeights,
    seq: usize,
    past: usize,
    rng: &mut Rng,
    llvm: bool,
) -> Vec<Checked> {
    let values = interpret(g, weights, seq, past, rng);
    let mut checked = Vec::new();
    for (id, node) in g.nodes.iter().enumerate() {
        if !is_ours(&node.op) {
            continue;
        }
        let m = isolate(g, id);
        let p = program(&m).unwrap_or_else(|e| panic!("%{id} {:?}: {e}", node.op));
        let mut mem: Vec<(String, KData)> = Vec::new();
        for param in &m.params {
            mem.push((
                format!("@{}", param.name),
                KData::F32(weight_values(weights, &param.name)),
            ));
        }
        for (j, v) in node.inputs.iter().enumerate() {
            if let Value::Node(n) = v {
                let t = &values[&(n.0 as usize)];
                let data = if g.node(*n).ty.dtype.is_float() {
                    KData::F32(t.data.clone())
                } else {
                    KData::I32(t.data.iter().map(|&x| x as i32).collect())
                };
                mem.push((format!("in{j}"), data));
            }
        }
        let bufs: BTreeMap<String, KBufData> =
            mem.iter().map(|(n, d)| (n.clone(), d.view_ro())).collect();
        let outs = run_program(&p, bufs, seq as i64, past as i64, THREADS)
            .unwrap_or_else(|e| panic!("%{id} {:?}: {e}\n{p}", node.op));
        let got = outs["out"].to_f32();
        let want = &values[&id].data;
        assert_eq!(got.len(), want.len(), "%{id} {:?}: element count", node.op);
        let mut diff = 0.0f32;
        for (a, b) in got.iter().zip(want) {
            let d = (a - b).abs();
            // NaN must not hide behind `max`.
            assert!(d.is_finite(), "%{id} {:?}: {a} vs {b}", node.op);
            diff = diff.max(d);
        }
        if !node.ty.dtype.is_float() {
            assert_eq!(diff, 0.0, "%{id} {:?}: expert indices differ", node.op);
        }
        if llvm && matches!(node.op, Op::Attention(_) | Op::FlashAttention(_)) {
            let got = run_llvm(&p, &mem, seq, past);
            assert_eq!(got.len(), want.len(), "%{id} {:?}: LLVM count", node.op);
            for (n, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= LLVM_TOL,
                    "%{id} {:?} through LLVM (seq {seq}, past {past}), element {n}: {a} vs {b}",
                    node.op
                );
            }
        }
        assert!(
            diff <= TOL,
            "%{id} {:?} (seq {seq}, past {past}): differs by {diff}\n{p}",
            node.op
        );
        checked.push(Checked {
            op: node.op.clone(),
            diff,
        });
    }
    checked
}

/// Program `p` compiled by LLVM for this machine, every launch in order, each kernel's
/// parallel loop cut into `THREADS` chunks run one after another; returns `out`.
fn run_llvm(p: &Program, mem: &[(String, KData)], seq: usize, past: usize) -> Vec<f32> {
    let compiled = compile_kernels_with(&p.kernels, &Target::host(), &Options::no_cache())
        .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    let root = |mut b: usize| {
        while let BufferKind::Alias { of } = p.buffers[b].kind {
            b = of;
        }
        b
    };
    // Storage in u64 words, so every element type is aligned.
    let mut store: Vec<Vec<u64>> = p
        .buffers
        .iter()
        .map(|b| {
            let n: usize = b.shape.iter().map(|d| d.eval(seq, past)).product();
            let bytes = n * b.elem.bytes();
            let mut words = vec![0u64; bytes.div_ceil(8) + 1];
            if let Some((_, data)) = mem.iter().find(|(name, _)| *name == b.name) {
                let src: Vec<u8> = match data {
                    KData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    KData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    _ => panic!("{}: only f32 and i32 operands here", b.name),
                };
                let dst = bytes_mut(&mut words);
                dst[..src.len()].copy_from_slice(&src);
            }
            words
        })
        .collect();
    for launch in &p.launches {
        let ptrs: Vec<*mut u8> = launch
            .bufs
            .iter()
            .map(|b| match b {
                Some(b) => store[root(*b)].as_mut_ptr().cast(),
                None => std::ptr::null_mut(),
            })
            .collect();
        for t in 0..THREADS {
            // SAFETY: every buffer is allocated at its full size from the program's shapes.
            unsafe { compiled.call(launch.kernel, &ptrs, [seq as i64, past as i64], t, THREADS) };
        }
    }
    let out = p
        .buffers
        .iter()
        .position(|b| b.name == "out" && matches!(b.kind, BufferKind::Output(_)))
        .or_else(|| p.buffers.iter().position(|b| b.name == "out"))
        .expect("the program has an output `out`");
    let n: usize = p.buffers[out]
        .shape
        .iter()
        .map(|d| d.eval(seq, past))
        .product();
    assert_eq!(p.buffers[root(out)].elem, Elem::F32, "`out` is f32");
    bytes_mut(&mut store[root(out)])[..n * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u8, and the length covers the same memory.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) }
}

/// Lower `spec` for prefill from scratch, prefill after a cache longer than one key block,
/// and decode; check both the plain and the optimised graphs.
fn check_spec(spec: &Spec, prefill_only: bool) -> Vec<Checked> {
    let (pre, dec) = lower_both(spec);
    let weights = RandomWeights::for_graphs(&[&pre, &dec], 11);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut runs = vec![(pre.clone(), 5, 0)];
    if !prefill_only {
        runs.push((pre, 6, 13));
        runs.push((dec, 1, 20));
    }
    let mut checked = Vec::new();
    for (g, seq, past) in runs {
        let opt = passes::optimize(&g);
        checked.extend(check_graph(&g, &weights, seq, past, &mut rng, false));
        checked.extend(check_graph(&opt, &weights, seq, past, &mut rng, false));
    }
    for c in &checked {
        eprintln!("{:<12.3e} {:?}", c.diff, c.op);
    }
    checked
}

/// Assert that some checked node satisfies `pred` (so a variant is really covered).
fn covers(checked: &[Checked], what: &str, pred: impl Fn(&Op) -> bool) {
    assert!(
        checked.iter().any(|c| pred(&c.op)),
        "no checked node is {what}"
    );
}

// ---------------------------------------------------------------------------------------
// Specs.

/// One layer per block, in order.
fn in_order(blocks: Vec<Block>) -> Spec {
    let schedule: Vec<usize> = (0..blocks.len()).collect();
    spec(blocks, schedule)
}

/// One layer per attention, each with a small gated SiLU MLP.
fn attn_spec(mixers: Vec<Attention>) -> Spec {
    in_order(mixers.into_iter().map(|a| block(a, swiglu(24))).collect())
}

fn flash(checked: &[Checked], what: &str, pred: impl Fn(&archc_compiler::ir::FlashAttnOp) -> bool) {
    covers(
        checked,
        what,
        |op| matches!(op, Op::FlashAttention(f) if pred(f)),
    );
}

fn norm_rope(
    checked: &[Checked],
    what: &str,
    pred: impl Fn(&archc_compiler::ir::NormRopeOp) -> bool,
) {
    covers(checked, what, |op| matches!(op, Op::NormRope(n) if pred(n)));
}

fn plain_attention(checked: &[Checked]) {
    covers(checked, "plain attention", |op| {
        matches!(op, Op::Attention(_))
    });
}

#[test]
fn causal_gqa_and_mqa_attention_match() {
    let mut mqa = attention();
    mqa.kv_heads = 1;
    let checked = check_spec(&attn_spec(vec![attention(), mqa]), false);
    plain_attention(&checked);
    flash(&checked, "causal", |f| {
        f.attn.causal && f.attn.window.is_none()
    });
    norm_rope(&checked, "rope + append without a norm", |n| {
        n.norm.is_none() && n.append
    });
}

#[test]
fn bidirectional_attention_matches() {
    let mut a = attention();
    a.causal = false;
    a.rope = None;
    a.kv_heads = 4;
    let mut b = block(a, swiglu(24));
    b.norm = layer_norm();
    let mut s = in_order(vec![b]);
    s.learned_positions = Some(32);
    s.final_norm = Some(layer_norm());
    let checked = check_spec(&s, true);
    flash(&checked, "bidirectional", |f| !f.attn.causal);
}

#[test]
fn window_chunk_sinks_and_softcap_attention_match() {
    let mut window = attention();
    window.window = Some(3);
    let chunk = chunked_l2_attention();
    let sinks = sinks_softcap_attention();
    // A window wider than one key block and a chunk spanning two blocks.
    let mut wide = attention();
    wide.window = Some(18);
    wide.kv_heads = 1;
    let mut long_chunk = attention();
    long_chunk.chunk = Some(20);
    long_chunk.scale = Some(0.3);
    let checked = check_spec(
        &attn_spec(vec![window, chunk, sinks, wide, long_chunk]),
        false,
    );
    plain_attention(&checked);
    flash(&checked, "windowed", |f| f.attn.window == Some(3));
    flash(&checked, "chunked", |f| f.attn.chunk == Some(4));
    flash(&checked, "with sinks and softcap", |f| {
        f.attn.sinks && f.attn.softcap.is_some()
    });
    norm_rope(
        &checked,
        "an L2 (weightless) norm with interleaved pairs",
        |n| n.norm.is_some_and(|m| !m.weight) && n.rope.pairing == Pairing::Interleaved,
    );
}

#[test]
fn mla_attention_matches() {
    // mscale_all_dim below mscale: DeepSeek's attention factor differs from 1.
    let a = mla_attention(Some(12), 0.707);
    let b = mla_attention(None, 0.707);
    let checked = check_spec(&attn_spec(vec![a, b]), false);
    plain_attention(&checked);
    flash(&checked, "MLA (q/k dim differs from v dim)", |f| {
        f.attn.causal
    });
}

#[test]
fn gated_and_normed_attention_with_rope_scalings_match() {
    // Gemma: per-head (1 + w) norm, explicit scale, window, linear RoPE scaling.
    let mut gemma = gemma_local_attention();
    gemma.rope.as_mut().expect("rope").scaling = RopeScaling::Linear { factor: 8.0 };
    // Qwen3-Next: output gate, per-head norm (Gemma's eps here), partial rotary.
    let mut gated = qwen3_next_attention();
    gated.qk_norm = QkNorm::PerHead(gemma_norm());
    // OLMo 2: a norm over the whole projection (not fused), Llama 3 scaling.
    let full = olmo_attention();
    // A per-head LayerNorm with bias, interleaved and partial.
    let mut layer = attention();
    layer.qk_norm = QkNorm::PerHead(layer_norm());
    layer.rope = Some(Rope {
        dims: 6,
        pairing: Pairing::Interleaved,
        ..rope()
    });
    // YaRN with an attention factor other than 1 (DeepSeek's mscale ratio).
    let mut yarn_attn = attention();
    yarn_attn.rope.as_mut().expect("rope").scaling = yarn(0.707);
    let checked = check_spec(
        &attn_spec(vec![gemma, gated, full, layer, yarn_attn]),
        false,
    );
    flash(&checked, "gated", |f| f.gate);
    norm_rope(&checked, "a per-head (1 + w) norm", |n| {
        n.norm.is_some_and(|m| m.plus_one)
    });
    norm_rope(&checked, "partial rotary", |n| n.rope.dims == 4);
    norm_rope(&checked, "a per-head layer norm with bias", |n| {
        n.norm.is_some_and(|m| m.bias)
    });
    norm_rope(&checked, "llama3 scaling", |n| {
        matches!(n.rope.scaling, RopeScaling::Llama3 { .. })
    });
    norm_rope(&checked, "linear scaling", |n| {
        matches!(n.rope.scaling, RopeScaling::Linear { .. })
    });
    norm_rope(&checked, "without the cache append (queries)", |n| {
        !n.append
    });
    norm_rope(&checked, "yarn", |n| {
        matches!(n.rope.scaling, RopeScaling::Yarn { .. })
    });
}

#[test]
fn tiled_attention_edges_match_through_llvm() {
    // Group sizes 2 (tiles of 4 rows x 2 heads), 1 (8 rows x 1 head) and 4 (2 x 4); a
    // window of 3 (narrower than a tile's rows and a key block), chunks, sinks with a
    // softcap, MLA, and an output gate.
    let gqa = attention();
    let mut mha = attention();
    mha.kv_heads = 4;
    let mut mqa = attention();
    mqa.kv_heads = 1;
    let mut window = attention();
    window.window = Some(3);
    let mut long_chunk = attention();
    long_chunk.chunk = Some(20);
    let specs = [
        attn_spec(vec![gqa, mha, mqa, window]),
        attn_spec(vec![
            chunked_l2_attention(),
            sinks_softcap_attention(),
            long_chunk,
        ]),
        attn_spec(vec![mla_attention(Some(12), 0.707), qwen3_next_attention()]),
    ];
    // (seq, past): rows not a multiple of any tile, a cache and new rows at once, fewer
    // rows than a tile (one row per tile), and decode.
    let runs = [(11, 0), (13, 19), (3, 5), (1, 37), (37, 0)];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for spec in &specs {
        let (pre, dec) = lower_both(spec);
        let weights = RandomWeights::for_graphs(&[&pre, &dec], 5);
        for &(seq, past) in &runs {
            let g = if seq == 1 { &dec } else { &pre };
            let opt = passes::optimize(g);
            let checked = check_graph(&opt, &weights, seq, past, &mut rng, true);
            assert!(
                checked
                    .iter()
                    .any(|c| matches!(c.op, Op::FlashAttention(_) | Op::Attention(_))),
                "seq {seq}, past {past}: no attention node was checked"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mixture of experts.

/// One layer per MoE, each behind a plain attention.
fn moe_spec(ffns: Vec<Moe>) -> Spec {
    in_order(
        ffns.into_iter()
            .map(|m| block(attention(), Ffn::Moe(m)))
            .collect(),
    )
}

fn fused_moe(checked: &[Checked], what: &str, pred: impl Fn(&archc_compiler::ir::MoeOp) -> bool) {
    covers(checked, what, |op| matches!(op, Op::Moe(m) if pred(m)));
}

fn unfused_router(checked: &[Checked]) {
    covers(checked, "router_select", |op| {
        matches!(op, Op::RouterSelect(_))
    });
    covers(checked, "router_weights", |op| {
        matches!(op, Op::RouterWeights(_))
    });
    covers(checked, "expert_matmul", |op| {
        matches!(op, Op::ExpertMatMul)
    });
}

#[test]
fn softmax_routed_moe_matches() {
    let mut plain = moe(Router {
        renormalize: false,
        ..router()
    });
    plain.act = Activation::Gelu;
    plain.gated = false;
    plain.top_k = 3;
    let mut tanh = moe(router());
    tanh.act = Activation::GeluTanh;
    tanh.shared = None;
    let checked = check_spec(&moe_spec(vec![moe(router()), plain, tanh]), false);
    unfused_router(&checked);
    fused_moe(&checked, "softmax with renormalisation", |m| {
        m.weights.renormalize && !m.select.topk_first
    });
    fused_moe(
        &checked,
        "without renormalisation, plain gelu experts",
        |m| !m.weights.renormalize && !m.gated(),
    );
}

#[test]
fn deepseek_llama4_and_gpt_oss_routing_match() {
    let deepseek = moe(deepseek_router());
    let llama4 = moe(llama4_router());
    let oss = gpt_oss_moe();
    // Tiny limits so that the clamps are active on these activations.
    let mut clamped = oss.clone();
    clamped.act = Activation::ClampedSwiglu {
        alpha: 1.702,
        limit: 0.05,
    };
    let checked = check_spec(&moe_spec(vec![deepseek, llama4, oss, clamped]), false);
    unfused_router(&checked);
    fused_moe(&checked, "sigmoid + correction bias + groups", |m| {
        m.select.correction_bias && m.select.groups.is_some()
    });
    fused_moe(&checked, "Llama 4 weight_input", |m| m.weight_input);
    fused_moe(&checked, "GPT-OSS topk_first with biases", |m| {
        m.select.topk_first && m.bias
    });
}

/// Equal router logits: the kernel must pick the same (lowest-index) experts as the
/// interpreter, also among groups with equal scores.
#[test]
fn router_ties_go_to_the_lowest_index() {
    use archc_compiler::ir::{Dim, RouterSelectOp, Type};
    let logits = [
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        [1.0, -1.0, 1.0, 2.0, 2.0, 1.0, -1.0, 1.0],
        [0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0, 0.0],
    ];
    let data: Vec<f32> = logits.iter().flatten().copied().collect();
    for (score, groups, topk_first) in [
        (RouterScore::Softmax, None, false),
        (RouterScore::Sigmoid, Some((4, 2)), false),
        (RouterScore::Sigmoid, Some((2, 1)), false),
        (RouterScore::Softmax, None, true),
    ] {
        let op = RouterSelectOp {
            top_k: 3,
            score,
            topk_first,
            correction_bias: false,
            groups,
        };
        let mut g = Graph::new("ties", Mode::Prefill);
        g.nodes.push(Node {
            op: Op::Input {
                io: Io::value("router_logits"),
            },
            inputs: vec![],
            ty: Type::new(vec![Dim::SEQ, Dim::c(8)], archc_compiler::ir::DType::F32),
        });
        g.nodes.push(Node {
            op: Op::RouterSelect(op),
            inputs: vec![Value::Node(NodeId(0))],
            ty: Type::new(vec![Dim::SEQ, Dim::c(3)], archc_compiler::ir::DType::I32),
        });
        g.outputs.push(Output {
            io: Io::value("idx"),
            node: NodeId(1),
        });
        let mut inputs = BTreeMap::new();
        inputs.insert(
            Io::value("router_logits"),
            Tensor::new(vec![3, 8], data.clone()),
        );
        let want = interp::run(
            &g,
            &RandomWeights::default(),
            &inputs,
            Bindings { seq: 3, past: 0 },
        )
        .expect("interpreter runs")[&Io::value("idx")]
            .data
            .clone();
        let p = program(&g).expect("router_select compiles");
        let mem = KData::F32(data.clone());
        let bufs = BTreeMap::from([("router_logits".to_string(), mem.view_ro())]);
        let got = run_program(&p, bufs, 3, 0, 2).expect("kernel runs")["idx"].to_f32();
        assert_eq!(got, want, "{op:?}");
    }
}
