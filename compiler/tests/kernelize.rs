//! Graph → kernel IR lowering: small random-weight models lowered, optimized and turned into
//! kernel programs must compute what the graph interpreter computes (prefill, decode with a
//! KV cache and a prefill continued after a cache, on one and two threads), and the kernel
//! IR text of a few tiny models is snapshotted.
//!
//! Bless with `INSTA_UPDATE=always cargo test -p archc-compiler --test kernelize`, then read
//! the snapshots in `tests/data/kernelize/`.

use archc_compiler::interp::{
    self, Bindings, RandomWeights, Tensor, WeightDType, WeightSource, WeightView,
};
use archc_compiler::ir::{verify, Graph, Io};
use archc_compiler::kernel::interp::{run_program, KBufData, KData};
use archc_compiler::kernel::lower::{program, KernelError};
use archc_compiler::kernel::verify::verify_program;
use archc_compiler::kernel::Program;
use archc_compiler::passes::optimize;
use archc_compiler::testing::{self, max_abs, scaled_diff, PROMPT};
use archc_compiler::{lower, Mode};
use archc_spec::*;
use std::collections::BTreeMap;
use std::path::Path;

// ---------------------------------------------------------------------------------------
// Specs: `archc_compiler::testing`'s, with the vocabulary and MLP wider than a block.

/// A vocabulary of 97: more than one column block of the head's matmul (64), and prime.
fn wide(mut s: Spec) -> Spec {
    s.vocab = 97;
    s
}

fn mlp(act: Activation, gated: bool, bias: bool) -> Ffn {
    // Wider than one column block of a matmul kernel (64), and not a multiple of 16.
    testing::mlp(100, act, gated, bias)
}

fn swiglu() -> Ffn {
    mlp(Activation::Silu, true, false)
}

fn llama() -> Spec {
    wide(testing::llama(swiglu()))
}

fn gpt2() -> Spec {
    let mut s = wide(testing::gpt2(mlp(Activation::GeluTanh, false, true)));
    s.name = "tiny-gpt2".into();
    s.tied = true;
    s
}

fn bert() -> Spec {
    wide(testing::bert(mlp(Activation::Gelu, false, true)))
}

fn gemma() -> Spec {
    wide(testing::gemma(mlp(Activation::GeluTanh, true, false)))
}

// ---------------------------------------------------------------------------------------
// Running both interpreters.

/// Random weights in the spec's dtype (f32 as generated, or rounded to bf16).
struct Weights {
    dtype: WeightDType,
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl Weights {
    fn new(graphs: &[&Graph], bf16: bool) -> Weights {
        let random = RandomWeights::for_graphs(graphs, 7);
        let mut tensors = BTreeMap::new();
        for name in random.names() {
            let w = random.get(name).expect("listed weights exist");
            let bytes = if bf16 {
                w.bytes
                    .chunks_exact(4)
                    .flat_map(|b| {
                        let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        archc_compiler::kernel::interp::f32_to_bf16(x).to_le_bytes()
                    })
                    .collect()
            } else {
                w.bytes.to_vec()
            };
            tensors.insert(name.to_string(), (w.shape.to_vec(), bytes));
        }
        Weights {
            dtype: if bf16 {
                WeightDType::Bf16
            } else {
                WeightDType::F32
            },
            tensors,
        }
    }

    /// The tensor in its storage type, as the kernel interpreter takes it.
    fn data(&self, name: &str) -> KData {
        let (_, bytes) = &self.tensors[name];
        match self.dtype {
            WeightDType::Bf16 => KData::Bf16(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            _ => KData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
        }
    }
}

impl WeightSource for Weights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        self.tensors.get(name).map(|(shape, bytes)| WeightView {
            dtype: self.dtype,
            shape,
            bytes,
        })
    }
}

/// One forward step through the kernel program.
fn run_kernels(
    p: &Program,
    params: &BTreeMap<String, KData>,
    cache: &BTreeMap<String, Vec<f32>>,
    tokens: &[u32],
    past: usize,
    threads: i64,
) -> BTreeMap<String, Vec<f32>> {
    let toks: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let pos: Vec<i32> = (past..past + tokens.len()).map(|p| p as i32).collect();
    let mut inputs: BTreeMap<String, KBufData> = BTreeMap::new();
    for (name, d) in params {
        inputs.insert(name.clone(), d.view_ro());
    }
    for b in &p.buffers {
        let archc_compiler::kernel::BufferKind::Input(io) = &b.kind else {
            continue;
        };
        let view = match io {
            Io::Tokens => KBufData::I32Ro(&toks),
            Io::Positions => KBufData::I32Ro(&pos),
            io => KBufData::F32Ro(cache.get(&io.to_string()).map_or(&[][..], |v| v.as_slice())),
        };
        inputs.insert(b.name.clone(), view);
    }
    let out = run_program(p, inputs, tokens.len() as i64, past as i64, threads)
        .unwrap_or_else(|e| panic!("{}: kernel program fails: {e}", p.name));
    out.into_iter().map(|(k, v)| (k, v.to_f32())).collect()
}

/// One forward step through the graph interpreter.
fn run_graph(
    g: &Graph,
    w: &Weights,
    cache: &BTreeMap<String, Vec<f32>>,
    tokens: &[u32],
    past: usize,
) -> BTreeMap<String, Vec<f32>> {
    let mut inputs = BTreeMap::new();
    let seq = tokens.len();
    inputs.insert(
        Io::Tokens,
        Tensor::new(vec![seq], tokens.iter().map(|&t| t as f32).collect()),
    );
    inputs.insert(
        Io::Positions,
        Tensor::new(vec![seq], (past..past + seq).map(|p| p as f32).collect()),
    );
    for (id, io) in g.inputs() {
        if io.is_carried() {
            let shape = g
                .node(id)
                .ty
                .shape
                .iter()
                .map(|d| d.eval(seq, past))
                .collect();
            let data = cache.get(&io.to_string()).cloned().unwrap_or_default();
            inputs.insert(io.clone(), Tensor::new(shape, data));
        }
    }
    interp::run(g, w, &inputs, Bindings { seq, past })
        .unwrap_or_else(|e| panic!("graph interpreter fails: {e}"))
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.data))
        .collect()
}

/// Lowered and optimized prefill and decode graphs with their kernel programs.
fn compile(s: &Spec) -> Result<(Graph, Graph, Program, Program), KernelError> {
    let (pre, dec) = testing::lower_both(s);
    let (pre, dec) = (optimize(&pre), optimize(&dec));
    verify(&pre).expect("prefill verifies");
    verify(&dec).expect("decode verifies");
    let pp = program(&pre)?;
    let dp = program(&dec)?;
    verify_program(&pp).unwrap_or_else(|e| panic!("prefill program: {e}"));
    verify_program(&dp).unwrap_or_else(|e| panic!("decode program: {e}"));
    Ok((pre, dec, pp, dp))
}

/// Runs a prefill of 5 tokens, two decode steps and a prefill of the rest of an 11-token
/// prompt after the cache through both interpreters (the kernels on one and on two threads,
/// which must agree exactly); returns the largest [`scaled_diff`] of any output.
fn differential(s: &Spec, bf16: bool) -> Result<f32, KernelError> {
    let mut s = s.clone();
    if bf16 {
        s.dtype = DType::Bf16;
    }
    let (pre, dec, pp, dp) = compile(&s)?;
    let w = Weights::new(&[&pre, &dec], bf16);
    let params: BTreeMap<String, KData> = pp
        .buffers
        .iter()
        .chain(&dp.buffers)
        .filter(|b| b.kind == archc_compiler::kernel::BufferKind::Param)
        .map(|b| {
            let name = b.name.trim_start_matches('@');
            (b.name.clone(), w.data(name))
        })
        .collect();
    let only = |p: &Program| -> BTreeMap<String, KData> {
        params
            .iter()
            .filter(|(n, _)| p.param(n.trim_start_matches('@')).is_some())
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect()
    };
    let (pparams, dparams) = (only(&pp), only(&dp));
    let steps: [(&[u32], bool); 4] = [
        (&PROMPT[..5], true),
        (&PROMPT[5..6], false),
        (&PROMPT[6..7], false),
        (&PROMPT[7..11], true),
    ];
    let mut kcache: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut gcache = kcache.clone();
    let mut past = 0;
    let mut worst = 0.0f32;
    for (tokens, prefill) in steps {
        let (g, p, params) = if prefill {
            (&pre, &pp, &pparams)
        } else {
            (&dec, &dp, &dparams)
        };
        let want = run_graph(g, &w, &gcache, tokens, past);
        let got = run_kernels(p, params, &kcache, tokens, past, 1);
        let got2 = run_kernels(p, params, &kcache, tokens, past, 2);
        assert_eq!(got, got2, "{}: one and two threads differ", p.name);
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{}: outputs differ",
            p.name
        );
        let logits = &want["logits"];
        assert!(logits.iter().all(|x| x.is_finite()));
        assert!(max_abs(logits) > 1e-2, "logits are all near zero");
        for (name, v) in &want {
            worst = worst.max(scaled_diff(v, &got[name]));
        }
        past += tokens.len();
        for (name, v) in got {
            if name.starts_with("cache.") {
                kcache.insert(name, v);
            }
        }
        for (name, v) in want {
            if name.starts_with("cache.") {
                gcache.insert(name, v);
            }
        }
    }
    Ok(worst)
}

fn assert_matches(name: &str, s: &Spec, bf16: bool) {
    let worst = differential(s, bf16).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: max scaled difference {worst:e}");
    assert!(
        worst <= 1e-5,
        "{name}: kernels differ from the graph by {worst}"
    );
}

#[test]
fn llama_kernels_match_the_graph() {
    assert_matches("llama", &llama(), false);
}

#[test]
fn llama_bf16_kernels_match_the_graph() {
    assert_matches("llama bf16", &llama(), true);
}

#[test]
fn gpt2_kernels_match_the_graph() {
    assert_matches("gpt2", &gpt2(), false);
}

#[test]
fn bert_post_ln_kernels_match_the_graph() {
    assert_matches("bert", &bert(), false);
}

#[test]
fn gemma_kernels_match_the_graph() {
    assert_matches("gemma", &gemma(), false);
}

#[test]
fn qwen3_next_and_olmo_kernels_match_the_graph() {
    assert_matches(
        "qwen3-next/olmo",
        &wide(testing::qwen3_next_olmo(swiglu())),
        false,
    );
}

#[test]
fn llama4_attention_kernels_match_the_graph() {
    assert_matches(
        "llama4 attention",
        &wide(testing::llama4_attention(swiglu())),
        false,
    );
}

#[test]
fn sinks_and_softcap_kernels_match_the_graph() {
    let relu = mlp(Activation::Relu, false, true);
    assert_matches("sinks/softcap", &wide(testing::sinks_softcap(relu)), false);
}

#[test]
fn mla_kernels_match_the_graph() {
    assert_matches("mla", &wide(testing::mla(swiglu())), false);
}

#[test]
fn moe_kernels_match_the_graph() {
    assert_matches("moe", &wide(testing::moe_routers()), false);
}

// ---------------------------------------------------------------------------------------
// Structure and text.

#[test]
fn layers_share_their_kernels() {
    let (_, _, pp, dp) = compile(&llama()).expect("compiles");
    for p in [&pp, &dp] {
        // Two identical layers: every kernel of layer 1 is one of layer 0's.
        assert!(p.launches.len() > p.kernels.len());
        for k in &p.kernels {
            assert!(
                k.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.name.starts_with(|c: char| c.is_ascii_digit()),
                "`{}` is not a C identifier",
                k.name
            );
        }
    }
    let again = compile(&llama()).expect("compiles");
    assert_eq!(
        pp.to_string(),
        again.2.to_string(),
        "output is not deterministic"
    );
}

#[test]
fn f8_parameters_are_read_in_place() {
    let mut s = llama();
    s.dtype = DType::F8;
    let g = optimize(&lower(&s, Mode::Decode).expect("lowers"));
    let p = program(&g).unwrap_or_else(|e| panic!("{e}"));
    verify_program(&p).unwrap_or_else(|e| panic!("{e}"));
    // Every parameter keeps its stored f8; nothing the kernels compute is f8.
    for b in &p.buffers {
        use archc_compiler::kernel::{BufferKind, Elem};
        let f8 = b.elem == Elem::F8;
        assert_eq!(f8, b.kind == BufferKind::Param, "buffer `{}`", b.name);
    }
}

fn snapshot(name: &str, s: &Spec, mode: Mode) {
    let g = optimize(&lower(s, mode).expect("lowers"));
    let text = match program(&g) {
        Ok(p) => p.to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kernelize");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn kernel_text_of_tiny_models() {
    let mut one = llama();
    one.schedule = vec![0];
    one.layers = 1;
    snapshot("tiny-llama-decode", &one, Mode::Decode);
    let mut g = gpt2();
    g.schedule = vec![0];
    g.layers = 1;
    snapshot("tiny-gpt2-prefill", &g, Mode::Prefill);
    let mut gm = gemma();
    gm.schedule = vec![0];
    gm.layers = 1;
    snapshot("tiny-gemma-prefill", &gm, Mode::Prefill);
}

#[test]
fn out_of_range_token_ids_read_a_row_of_the_table() {
    // The kernel interpreter faults on any out-of-bounds access, so running at all shows
    // that the gather clamps; the result is the row of the nearest valid id.
    let (_, dec, _, dp) = compile(&llama()).expect("compiles");
    let w = Weights::new(&[&dec], false);
    let params: BTreeMap<String, KData> = dp
        .buffers
        .iter()
        .filter(|b| b.kind == archc_compiler::kernel::BufferKind::Param)
        .map(|b| (b.name.clone(), w.data(b.name.trim_start_matches('@'))))
        .collect();
    let cache = BTreeMap::new();
    let high = run_kernels(&dp, &params, &cache, &[100_000], 0, 2);
    let last = run_kernels(&dp, &params, &cache, &[96], 0, 2);
    assert_eq!(high["logits"], last["logits"]);
    let neg = run_kernels(&dp, &params, &cache, &[u32::MAX], 0, 2);
    let zero = run_kernels(&dp, &params, &cache, &[0], 0, 2);
    assert_eq!(neg["logits"], zero["logits"], "id -1 reads row 0");
}

#[test]
fn outputs_that_compute_nothing_are_copied() {
    use archc_compiler::ir::DType as IrDType;
    use archc_compiler::ir::{Dim, Node, NodeId, Op, Output, Type};
    // `a` is an input returned as is, `r` a reshape of it, and `logits` a computed node
    // also returned as `t`.
    let mut g = Graph::new("copies", Mode::Prefill);
    let ty = Type::new(vec![Dim::SEQ, Dim::c(4)], IrDType::F32);
    g.nodes.push(Node {
        op: Op::Input { io: Io::value("a") },
        inputs: vec![],
        ty: ty.clone(),
    });
    g.nodes.push(Node {
        op: Op::Reshape {
            shape: vec![Dim::SEQ, Dim::c(2), Dim::c(2)],
        },
        inputs: vec![archc_compiler::ir::Value::Node(NodeId(0))],
        ty: Type::new(vec![Dim::SEQ, Dim::c(2), Dim::c(2)], IrDType::F32),
    });
    g.nodes.push(Node {
        op: Op::Unary(archc_compiler::ir::UnaryOp::Scale(2.0)),
        inputs: vec![archc_compiler::ir::Value::Node(NodeId(0))],
        ty,
    });
    for (name, node) in [("logits", 2), ("a", 0), ("r", 1), ("t", 2)] {
        g.outputs.push(Output {
            io: name.parse().expect("an output name"),
            node: NodeId(node),
        });
    }
    verify(&g).expect("verifies");
    let p = program(&g).expect("lowers");
    verify_program(&p).expect("program verifies");
    let a: Vec<f32> = (0..8).map(|x| x as f32).collect();
    let mut inputs = BTreeMap::new();
    inputs.insert("a".to_string(), KBufData::F32Ro(&a));
    let out = run_program(&p, inputs, 2, 0, 2).expect("runs");
    let twice: Vec<f32> = a.iter().map(|x| 2.0 * x).collect();
    assert_eq!(out["a"], KData::F32(a.clone()));
    assert_eq!(out["r"], KData::F32(a.clone()));
    assert_eq!(out["logits"], KData::F32(twice.clone()));
    assert_eq!(out["t"], KData::F32(twice));
    let text = p.to_string();
    assert!(text.contains("buffer logits: f32[seq, 4] output"), "{text}");
    assert_eq!(text.matches("launch copy_").count(), 3, "{text}");
}
