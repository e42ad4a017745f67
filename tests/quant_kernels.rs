//! Quantised weights read in place: the kernels `kernel::lower::program_with` generates
//! for block-quantised parameters, against the reference dequantisation.
//!
//! - Kernel IR interpreter, every block format, random blocks: the gather kernel decodes
//!   a table bit for bit as `runtime::quant::dequantize` does, and the matmul equals an
//!   f32 matmul over the dequantised weights within 1e-5 of the sum of |terms|.
//! - End to end: tiny GGUF Llamas of every format through the CPU executor with compiled
//!   kernels, against the graph interpreter on the dequantised weights, prefill and
//!   decode, with the quantised parameters bound as raw blocks (no converted bytes).
//!
//! Fixtures: `tests/data/gguf/tiny_llama/q8_0.gguf` and `tests/data/gguf/tiny_quant/`,
//! written by `tools/reference/make_gguf_fixtures.py`.

use archc_compiler::ir::{DType, Dim, Graph, Mode as GraphMode, Node, NodeId, Op, Output, Param};
use archc_compiler::ir::{Io, ParamId, Type, Value};
use archc_compiler::kernel::interp::{run_program, KBufData};
use archc_compiler::kernel::lower::{program_with, BlockFormat, Lowering, ParamFormat};
use archc_compiler::kernel::{BufferKind, Elem};
use archc_runtime::bind::bind_gguf;
use archc_runtime::exec::cpu::{self, CpuModel, Engine, Phase};
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::quant::{dequantize, GgmlType};
use archc_runtime::weights::gguf::GgufFile;
use archc_spec::import::gguf::from_gguf_metadata;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf")
}

fn ggml(fmt: BlockFormat) -> GgmlType {
    match fmt {
        BlockFormat::Q4_0 => GgmlType::Q4_0,
        BlockFormat::Q4_1 => GgmlType::Q4_1,
        BlockFormat::Q5_0 => GgmlType::Q5_0,
        BlockFormat::Q5_1 => GgmlType::Q5_1,
        BlockFormat::Q8_0 => GgmlType::Q8_0,
        BlockFormat::Q2K => GgmlType::Q2K,
        BlockFormat::Q3K => GgmlType::Q3K,
        BlockFormat::Q4K => GgmlType::Q4K,
        BlockFormat::Q5K => GgmlType::Q5K,
        BlockFormat::Q6K => GgmlType::Q6K,
        BlockFormat::Iq4Nl => GgmlType::Iq4Nl,
        BlockFormat::Iq4Xs => GgmlType::Iq4Xs,
        BlockFormat::Mxfp4 => GgmlType::Mxfp4,
        BlockFormat::F8E4m3 => GgmlType::F8E4m3,
    }
}

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `rows` rows of `width` elements as random blocks. With `wild`, scale fields are any
/// finite f16 (subnormals, negatives, large values); otherwise small positive ones.
fn random_blocks(
    rng: &mut Rng,
    fmt: BlockFormat,
    rows: usize,
    width: usize,
    wild: bool,
) -> Vec<u8> {
    let (bl, bb) = (fmt.block_len() as usize, fmt.block_bytes() as usize);
    let n = rows * width / bl;
    let mut bytes: Vec<u8> = (0..n * bb).map(|_| rng.byte()).collect();
    for b in 0..n {
        for &at in fmt.f16_fields() {
            let at = at as usize;
            let bits: u16 = if wild {
                let bits = (rng.next() >> 48) as u16;
                // Exponent all ones is inf or NaN: clear one exponent bit.
                if (bits >> 10) & 0x1f == 0x1f {
                    bits & !0x4000
                } else {
                    bits
                }
            } else {
                // 2^-9 .. 2^-6 with a random mantissa.
                (((6 + (rng.next() % 4)) as u16) << 10) | ((rng.next() >> 54) as u16)
            };
            bytes[b * bb + at..b * bb + at + 2].copy_from_slice(&bits.to_le_bytes());
        }
        let block = &mut bytes[b * bb..(b + 1) * bb];
        match fmt {
            // An f32 scale: any finite value within 2^±100 (binding's bound), or 2^-9..2^-6.
            BlockFormat::F8E4m3 => {
                let scale = if wild {
                    let e = (rng.next() % 200) as i32 - 100;
                    rng.unit() * 2f32.powi(e)
                } else {
                    2f32.powi(-9 + (rng.next() % 4) as i32) * (1.0 + rng.unit().abs())
                };
                block[..4].copy_from_slice(&scale.to_le_bytes());
                // The e4m3 NaN codes, which binding refuses, become the largest finite.
                for q in &mut block[4..] {
                    if *q & 0x7f == 0x7f {
                        *q &= 0xfe;
                    }
                }
            }
            // E8M0: any exponent but the NaN code, or 2^-6..2^-3 (as 2^(e - 128)).
            BlockFormat::Mxfp4 => {
                block[0] = if wild {
                    block[0] % 200
                } else {
                    122 + (rng.next() % 4) as u8
                };
            }
            _ => {}
        }
    }
    bytes
}

/// A graph computing `table[ids]` (gather) and `x @ w^T` (matmul) over `[rows, width]`
/// parameters named `table` and `w`, with `seq` symbolic. The mode picks the matmul's
/// shape: decoding rows into a tile per column block (prefill) or in the dot product.
fn gather_and_matmul(rows: u64, width: u64, mode: GraphMode) -> Graph {
    let mut g = Graph::new("quant", mode);
    for name in ["table", "w"] {
        g.params.push(Param {
            name: name.into(),
            shape: vec![rows, width],
            dtype: DType::F32,
        });
    }
    let node = |op: Op, inputs: Vec<Value>, shape: Vec<Dim>, dtype: DType| Node {
        op,
        inputs,
        ty: Type::new(shape, dtype),
    };
    g.nodes.push(node(
        Op::Input { io: Io::Tokens },
        vec![],
        vec![Dim::SEQ],
        DType::I32,
    ));
    g.nodes.push(node(
        Op::Gather,
        vec![Value::Param(ParamId(0)), Value::Node(NodeId(0))],
        vec![Dim::SEQ, Dim::c(width)],
        DType::F32,
    ));
    g.nodes.push(node(
        Op::Input { io: Io::value("x") },
        vec![],
        vec![Dim::SEQ, Dim::c(width)],
        DType::F32,
    ));
    g.nodes.push(node(
        Op::MatMul,
        vec![Value::Node(NodeId(2)), Value::Param(ParamId(1))],
        vec![Dim::SEQ, Dim::c(rows)],
        DType::F32,
    ));
    g.outputs.push(Output {
        io: Io::value("rows"),
        node: NodeId(1),
    });
    g.outputs.push(Output {
        io: Io::value("y"),
        node: NodeId(3),
    });
    g
}

#[test]
fn kernels_decode_every_block_format_like_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (fmt, mode) in BlockFormat::ALL
        .into_iter()
        .flat_map(|f| [(f, GraphMode::Prefill), (f, GraphMode::Decode)])
    {
        let (rows, width) = (5usize, 2 * fmt.block_len() as usize);
        let graph = gather_and_matmul(rows as u64, width as u64, mode);
        let program = program_with(
            &graph,
            &Lowering::with_formats(&|_| Some(ParamFormat::Block(fmt))),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));
        for name in ["table", "w"] {
            let b = &program.buffers[program.param(name).expect("param")];
            assert_eq!(
                (b.kind.clone(), b.elem),
                (BufferKind::Param, Elem::U8),
                "{name}"
            );
        }
        // Every block a different random pattern; the table's scales are wild.
        let table = random_blocks(&mut rng, fmt, rows, width, true);
        let w = random_blocks(&mut rng, fmt, rows, width, false);
        let seq = 3;
        let ids: Vec<i32> = vec![4, 0, 2];
        let x: Vec<f32> = (0..seq * width).map(|_| rng.unit()).collect();
        let mut inputs = BTreeMap::new();
        inputs.insert("@table".to_string(), KBufData::U8Ro(&table));
        inputs.insert("@w".to_string(), KBufData::U8Ro(&w));
        inputs.insert("tokens".to_string(), KBufData::I32Ro(&ids));
        inputs.insert("x".to_string(), KBufData::F32Ro(&x));
        let out = run_program(&program, inputs, seq as i64, 0, 2)
            .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));

        let reference = dequantize(ggml(fmt), &table).expect("whole blocks");
        let got = out["rows"].to_f32();
        for (t, &id) in ids.iter().enumerate() {
            let want = &reference[id as usize * width..(id as usize + 1) * width];
            let row = &got[t * width..(t + 1) * width];
            let differ = (0..width)
                .filter(|&e| row[e].to_bits() != want[e].to_bits())
                .count();
            assert_eq!(
                differ,
                0,
                "{}: row {id}: {differ} values differ",
                fmt.name()
            );
        }

        let wf = dequantize(ggml(fmt), &w).expect("whole blocks");
        let y = out["y"].to_f32();
        for t in 0..seq {
            for r in 0..rows {
                let terms =
                    (0..width).map(|e| f64::from(x[t * width + e]) * f64::from(wf[r * width + e]));
                let (sum, mag) = terms.fold((0.0, 0.0), |(s, m), v| (s + v, m + v.abs()));
                let got = f64::from(y[t * rows + r]);
                assert!(
                    (got - sum).abs() <= 1e-5 * mag,
                    "{} {mode:?}: y[{t}, {r}] = {got}, f32 matmul of the dequantised weights {sum} (sum |terms| {mag})",
                    fmt.name()
                );
            }
        }
    }
}

/// The kernel IR of the gather and the matmul over `[2, block_len]` weights of every
/// format, prefill then decode, snapshotted: the decoding is code to read, so its text
/// is reviewed. The text reads back to the same program.
#[test]
fn kernel_text_of_every_block_format() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant");
    for fmt in BlockFormat::ALL {
        let mut text = String::new();
        for mode in [GraphMode::Prefill, GraphMode::Decode] {
            let graph = gather_and_matmul(2, fmt.block_len(), mode);
            let program = program_with(
                &graph,
                &Lowering::with_formats(&|_| Some(ParamFormat::Block(fmt))),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));
            let printed = program.to_string();
            assert_eq!(
                archc_compiler::kernel::parse_program(&printed).as_ref(),
                Ok(&program),
                "{} {mode:?}: the kernel text does not read back",
                fmt.name()
            );
            text.push_str(&printed);
            text.push('\n');
        }
        let name = fmt.name().to_lowercase();
        insta::with_settings!({snapshot_path => &dir, prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, text);
        });
    }
}

#[test]
fn readers_that_cannot_decode_keep_the_graph_dtype() {
    // A row width that is not whole blocks cannot be quantised: the program is unchanged.
    let graph = gather_and_matmul(4, 48, GraphMode::Prefill);
    let plain = archc_compiler::kernel::lower::program(&graph).expect("program");
    let with = program_with(
        &graph,
        &Lowering::with_formats(&|_| Some(ParamFormat::Block(BlockFormat::Q8_0))),
    )
    .expect("program");
    assert_eq!(with, plain);
}

fn import(path: &Path) -> (archc_spec::Spec, GgufFile) {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let spec = from_gguf_metadata(file.metadata(), &file.names(), &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    (spec, file)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if (x - y).is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// The tiny model's logits with compiled kernels reading raw blocks, against the graph
/// interpreter on the dequantised weights, with LLVM's code and Cranelift's. `formats`
/// says how many tensors each block type stores; the kernels of both modes decode each.
/// The tolerance is relative to the largest logit: the two differ only in f32 summation
/// order (measured: see the assertion).
fn quantised_model_matches_the_interpreter(path: &Path, formats: &[(GgmlType, usize)]) {
    let (spec, file) = import(path);
    let weights = bind_gguf(&spec, file).unwrap_or_else(|e| panic!("{e}"));
    for &(format, count) in formats {
        let quantised: Vec<&str> = weights
            .names()
            .filter(|n| weights.quantized(n).is_some_and(|q| q.ty == format))
            .collect();
        assert_eq!(quantised.len(), count, "{path:?}: {format} tensors");

        // Both programs read every quantised parameter as its raw blocks, in kernels that
        // decode them.
        for mode in [GraphMode::Prefill, GraphMode::Decode] {
            let program = cpu::driver(&spec, &weights, cpu::Options::default())
                .program(mode)
                .unwrap_or_else(|e| panic!("{e}"));
            for name in &quantised {
                let b = &program.buffers[program.param(name).expect("a param")];
                assert_eq!(b.elem, Elem::U8, "{name}");
            }
            let tag = format!("_{}_", format.name().to_lowercase());
            let decoding = program
                .kernels
                .iter()
                .filter(|k| k.name.contains(&tag))
                .count();
            assert!(
                decoding >= count.min(3),
                "{path:?} {mode:?}: {decoding} kernels named `*{tag}*`"
            );
        }
    }
    // Every matrix is quantised: 7 projections per layer, the embedding, and the head
    // unless tied.
    let blocks = weights
        .names()
        .filter(|n| weights.quantized(n).is_some_and(|q| q.ty.is_quantized()))
        .count();
    let tied = spec.tied;
    assert_eq!(
        blocks,
        7 * spec.layers as usize + 1 + usize::from(!tied),
        "{path:?}: block-quantised tensors"
    );

    let tokens: Vec<u32> = (0..9).map(|i| (i * 7 + 3) % spec.vocab as u32).collect();
    let want = logits(&spec, &weights, &tokens, Mode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{e}"));
    let scale = max_abs(&want);
    assert!(
        scale > 0.5 && scale.is_finite(),
        "{path:?}: logits up to {scale}"
    );

    for engine in [Engine::Llvm, Engine::Cranelift] {
        let mut model = CpuModel::from_spec(&spec, &weights, engine, 2)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        // Nothing is converted at bind time: quantised parameters are bound as their
        // blocks, the f32 norms as they are.
        let stats = model.param_stats();
        assert_eq!(stats.converted_bytes, 0, "{path:?}: {stats:?}");
        assert_eq!(stats.converted, 0, "{path:?}: {stats:?}");

        let mut cache = model.new_cache();
        let prefill = model
            .run(Phase::Prefill, &mut cache, &tokens)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cache = model.new_cache();
        let mut decode = Vec::new();
        for &t in &tokens {
            decode.extend(
                model
                    .run(Phase::Decode, &mut cache, &[t])
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        for (what, got) in [("prefill", &prefill), ("decode", &decode)] {
            let d = max_diff(got, &want) / scale;
            eprintln!("{path:?} {engine:?} {what}: max |native - interp| / max |logit| = {d:e}");
            assert!(
                d <= 1e-5,
                "{path:?} {engine:?} {what}: relative difference {d:e}"
            );
        }
    }
}

fn tiny(name: &str) -> PathBuf {
    data().join("tiny_quant").join(name)
}

#[test]
fn tiny_q8_0_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(
        &data().join("tiny_llama/q8_0.gguf"),
        &[(GgmlType::Q8_0, 16)],
    );
}

#[test]
fn tiny_q4_0_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q4_0.gguf"), &[(GgmlType::Q4_0, 16)]);
}

#[test]
fn tiny_q4_1_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q4_1.gguf"), &[(GgmlType::Q4_1, 16)]);
}

#[test]
fn tiny_q5_0_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q5_0.gguf"), &[(GgmlType::Q5_0, 16)]);
}

#[test]
fn tiny_q5_1_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q5_1.gguf"), &[(GgmlType::Q5_1, 16)]);
}

#[test]
fn tiny_iq4_nl_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("iq4_nl.gguf"), &[(GgmlType::Iq4Nl, 16)]);
}

#[test]
fn tiny_q4_k_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q4_k.gguf"), &[(GgmlType::Q4K, 8)]);
}

#[test]
fn tiny_q5_k_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q5_k.gguf"), &[(GgmlType::Q5K, 8)]);
}

#[test]
fn tiny_q6_k_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(&tiny("q6_k.gguf"), &[(GgmlType::Q6K, 8)]);
}

/// Q2_K, Q3_K and IQ4_XS in one model, as the mixed files llama.cpp writes (Q3_K_M,
/// IQ4_XS) mix types: the fused q/k/v and gate/up kernels decode parts of different
/// types side by side.
#[test]
fn tiny_mixed_k_llama_runs_on_its_blocks() {
    quantised_model_matches_the_interpreter(
        &tiny("mixed_k.gguf"),
        &[(GgmlType::Q2K, 2), (GgmlType::Q3K, 3), (GgmlType::Iq4Xs, 3)],
    );
}
