//! The IR parsers against the printers: every example spec and every tiny test model, in
//! prefill and decode, reads back from its text as the same lowered graph, fused graph and
//! kernel program; hand-built IR covers what lowering does not produce (every literal and
//! operator form, shared buffer names, every attribute of every op); malformed text gives
//! the errors snapshotted in `tests/data/roundtrip/`; and truncated or mutated text and
//! deeply nested text give errors, never a panic or a stack overflow.
//!
//! Bless with `INSTA_UPDATE=always cargo test -p archc-compiler --test roundtrip`, then
//! read the snapshots.

use archc_compiler::ir::{self, parse, Graph, Io, Op, UnaryOp};
use archc_compiler::kernel::lower::{program, program_with, KernelOptions, Lowering, Schedule};
use archc_compiler::kernel::{parse_kernel, parse_program, Expr, Program, Stmt};
use archc_compiler::passes::optimize;
use archc_compiler::testing;
use archc_compiler::{lower, Mode};
use archc_spec::{Activation, Spec};
use std::path::{Path, PathBuf};

mod ir_corpus;
use ir_corpus::{graphs, kernels, programs};

fn examples() -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("the examples directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            (stem.into_owned(), p)
        })
        .collect();
    out.sort();
    out
}

/// `parse(print(g)) == g`, with the text in the message when it fails.
fn graph_round_trips(what: &str, g: &Graph) {
    let text = g.to_string();
    match parse(&text) {
        Ok(back) => assert!(back == *g, "{what}: {}", first_graph_difference(g, &back)),
        Err(e) => panic!("{what}: {e}\n{}", line_of(&text, e.line)),
    }
}

/// Where two graphs first differ, for a failure message that names the node.
fn first_graph_difference(want: &Graph, got: &Graph) -> String {
    if let Some(i) =
        (0..want.nodes.len().max(got.nodes.len())).find(|&i| want.nodes.get(i) != got.nodes.get(i))
    {
        return format!(
            "node %{i} reads back as {:?}, not {:?}",
            got.nodes.get(i),
            want.nodes.get(i)
        );
    }
    format!(
        "the header, params, outputs or labels differ: {:?} / {:?} / {:?} / {:?}",
        (&got.name, got.mode),
        got.params == want.params,
        got.outputs == want.outputs,
        got.labels == want.labels
    )
}

/// Where two programs first differ, for a failure message.
fn first_program_difference(want: &Program, got: &Program) -> String {
    if let Some(i) = (0..want.buffers.len().max(got.buffers.len()))
        .find(|&i| want.buffers.get(i) != got.buffers.get(i))
    {
        return format!(
            "buffer {i} reads back as {:?}, not {:?}",
            got.buffers.get(i),
            want.buffers.get(i)
        );
    }
    if let Some(i) = (0..want.launches.len().max(got.launches.len()))
        .find(|&i| want.launches.get(i) != got.launches.get(i))
    {
        return format!(
            "launch {i} reads back as {:?}, not {:?}",
            got.launches.get(i),
            want.launches.get(i)
        );
    }
    match (0..want.kernels.len()).find(|&i| want.kernels.get(i) != got.kernels.get(i)) {
        Some(i) => format!("kernel {i} `{}` differs", want.kernels[i].name),
        None => "the name or the kernel count differs".to_string(),
    }
}

/// `parse_program(print(p)) == p`, and every kernel on its own through `parse_kernel`.
fn program_round_trips(what: &str, p: &Program) {
    let text = p.to_string();
    match parse_program(&text) {
        Ok(back) => assert!(back == *p, "{what}: {}", first_program_difference(p, &back)),
        Err(e) => panic!("{what}: {e}\n{}", line_of(&text, e.line)),
    }
    for k in &p.kernels {
        let text = k.to_string();
        match parse_kernel(&text) {
            Ok(back) => assert!(back == *k, "{what}: kernel `{}` read back differs", k.name),
            Err(e) => panic!(
                "{what}, kernel `{}`: {e}\n{}",
                k.name,
                line_of(&text, e.line)
            ),
        }
    }
}

fn line_of(text: &str, line: usize) -> &str {
    text.lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("<past the end>")
}

#[test]
fn every_example_round_trips_at_every_stage() {
    let files = examples();
    assert!(files.len() >= 20, "examples are missing");
    let files_len = files.len();
    let mut programs = 0;
    for (name, path) in files {
        let src = std::fs::read_to_string(&path).expect("example is readable");
        let spec = archc_spec::validate::check_source(&name, &src)
            .unwrap_or_else(|_| panic!("{name} is a valid spec"));
        for mode in [Mode::Prefill, Mode::Decode] {
            let what = format!("{name} {}", mode.as_str());
            let g = lower(&spec, mode).unwrap_or_else(|e| panic!("{what} lowers: {e}"));
            graph_round_trips(&what, &g);
            let fused = optimize(&g);
            graph_round_trips(&format!("{what} fused"), &fused);
            let p =
                program(&fused).unwrap_or_else(|e| panic!("{what}: kernel lowering fails: {e}"));
            program_round_trips(&what, &p);
            programs += 1;
        }
    }
    assert_eq!(programs, 2 * files_len, "a program is missing");
}

/// Every tiny model of `archc_compiler::testing`.
fn tiny_models() -> Vec<(&'static str, Spec)> {
    let ffn = testing::swiglu(48);
    vec![
        ("llama", testing::llama(ffn.clone())),
        (
            "gpt2",
            testing::gpt2(testing::mlp(64, Activation::Gelu, false, true)),
        ),
        (
            "bert",
            testing::bert(testing::mlp(64, Activation::Relu, false, true)),
        ),
        (
            "gemma",
            testing::gemma(testing::mlp(48, Activation::GeluTanh, true, false)),
        ),
        ("qwen3_next_olmo", testing::qwen3_next_olmo(ffn.clone())),
        ("llama4", testing::llama4_attention(ffn.clone())),
        ("sinks_softcap", testing::sinks_softcap(ffn.clone())),
        ("mla", testing::mla(ffn)),
        ("moe_routers", testing::moe_routers()),
    ]
}

/// Every tiny model, both modes, the CPU and GPU schedules, every combination of kernel
/// options: the graphs and
/// programs read back exactly, and printing what was read gives the same text.
#[test]
fn every_tiny_model_round_trips_with_every_kernel_option() {
    for (name, spec) in tiny_models() {
        let (pre, dec) = testing::lower_both(&spec);
        for g in [pre, dec] {
            let what = format!("{name} {}", g.mode.as_str());
            graph_round_trips(&what, &g);
            let fused = optimize(&g);
            graph_round_trips(&format!("{what} fused"), &fused);
            for (device, schedule) in [("cpu", Schedule::cpu()), ("gpu", Schedule::gpu())] {
                for bf16_activations in [false, true] {
                    for append_in_place in [false, true] {
                        let opts = KernelOptions {
                            bf16_activations,
                            append_in_place,
                        };
                        let lowering = Lowering {
                            options: opts,
                            schedule,
                            ..Lowering::default()
                        };
                        let p = program_with(&fused, &lowering)
                            .unwrap_or_else(|e| panic!("{what} {device} {opts:?}: {e}"));
                        program_round_trips(&format!("{what} {device} {opts:?}"), &p);
                    }
                }
            }
        }
    }
}

/// The printed IR of one tiny model with in-place appends: graph, fused graph and program.
fn sample_texts() -> Vec<String> {
    let (pre, _) = testing::lower_both(&testing::gpt2(testing::mlp(
        64,
        Activation::Gelu,
        false,
        true,
    )));
    let fused = optimize(&pre);
    let opts = KernelOptions {
        bf16_activations: false,
        append_in_place: true,
    };
    let lowering = Lowering {
        options: opts,
        ..Lowering::default()
    };
    let p = program_with(&fused, &lowering).expect("gpt2 lowers to kernels");
    vec![pre.to_string(), fused.to_string(), p.to_string()]
}

/// Reads `text` with the parser of its kind. Whatever the bytes, the answer is an error
/// that points into the text, or an IR whose text reads back to itself.
fn check_any_bytes(text: &str) {
    let lines = text.lines().count() + 1;
    let in_text = |e: &ir::ParseError| {
        assert!(
            e.line >= 1 && e.line <= lines && e.col >= 1,
            "{e} is outside the text"
        );
    };
    if text.trim_start().starts_with("graph") {
        match parse(text) {
            Ok(g) => assert_eq!(parse(&g.to_string()).as_ref(), Ok(&g)),
            Err(e) => in_text(&e),
        }
    } else {
        match parse_program(text) {
            Ok(p) => assert_eq!(parse_program(&p.to_string()).as_ref(), Ok(&p)),
            Err(e) => in_text(&e),
        }
    }
}

/// A small deterministic generator (xorshift), so that the mutations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn truncated_and_mutated_text_gives_errors_not_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut errors, mut mutations) = (0, 0);
    for text in sample_texts() {
        let bytes = text.as_bytes();
        // Truncations: every line end and a spread of points inside lines.
        for cut in (0..bytes.len()).step_by(97).chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .step_by(7),
        ) {
            check_any_bytes(&String::from_utf8_lossy(&bytes[..cut]));
        }
        // Byte mutations: replace, insert or delete one to three bytes, some with bytes that
        // matter to the grammar.
        const SPECIAL: &[u8] = b" \n%@#_-(){}[],:=.;$!\"\\0123456789e";
        for _ in 0..1500 {
            let mut m = bytes.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(m.len());
                let b = if rng.below(2) == 0 {
                    SPECIAL[rng.below(SPECIAL.len())]
                } else {
                    rng.next() as u8
                };
                match rng.below(3) {
                    0 => m[at] = b,
                    1 => m.insert(at, b),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            let t = String::from_utf8_lossy(&m);
            if parse_any(&t).is_err() {
                errors += 1;
            }
            check_any_bytes(&t);
            mutations += 1;
        }
    }
    // Nearly every mutation breaks the text (96% when this was written); if far fewer
    // did, the parsers accept what they should not.
    assert!(
        errors * 10 > mutations * 8,
        "only {errors} of {mutations} mutations are errors"
    );
}

fn parse_any(text: &str) -> Result<(), ir::ParseError> {
    if text.trim_start().starts_with("graph") {
        parse(text).map(|_| ())
    } else {
        parse_program(text).map(|_| ())
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let n = 100_000;
    let deep_parens = format!(
        "kernel k(out: f32 write) {{\n  out[0] = {}1.0{}\n}}\n",
        "(".repeat(n),
        ")".repeat(n)
    );
    let deep_negation = format!(
        "kernel k(out: f32 write) {{\n  out[0] = {}1.0\n}}\n",
        "-".repeat(n)
    );
    let deep_calls = format!(
        "kernel k(out: f32 write) {{\n  out[0] = {}1.0{}\n}}\n",
        "exp(".repeat(n),
        ")".repeat(n)
    );
    let deep_loops = format!(
        "kernel k(out: f32 write) {{\n{}{}}}\n",
        "if true {\n".repeat(n),
        "}\n".repeat(n)
    );
    for text in [deep_parens, deep_negation, deep_calls, deep_loops] {
        let e = parse_kernel(&text).expect_err("too deep");
        assert!(e.message.contains("nested more than"), "{e}");
    }
}

#[test]
fn names_and_unusual_graphs_round_trip() {
    for g in graphs() {
        graph_round_trips(&g.name.clone(), &g);
    }
}

#[test]
fn hand_built_kernels_and_programs_round_trip() {
    for k in kernels() {
        let text = k.to_string();
        match parse_kernel(&text) {
            Ok(back) => assert!(back == k, "kernel `{}` read back differs:\n{text}", k.name),
            Err(e) => panic!("kernel `{}`: {e}\n{text}", k.name),
        }
    }
    for p in programs() {
        program_round_trips(&p.name.clone(), &p);
    }
}

#[test]
fn text_that_reads_back_prints_the_same() {
    // The direction the other tests do not take: text a person writes in the printed form
    // reads, prints identically, and its ids are what the text says.
    let text = GRAPH_TEXT;
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.to_string(), text);
    assert_eq!(g.output(&Io::Logits), Some(ir::NodeId(4)));
    let text = PROGRAM_TEXT;
    let p = parse_program(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.to_string(), text);
    assert_eq!(p.launches[1].bufs, vec![Some(1), Some(2), Some(3)]);
}

#[test]
fn malformed_graphs_report_where_and_what() {
    let mut out = String::new();
    for (name, text) in BAD_GRAPHS {
        let e = parse(text).expect_err(name);
        out.push_str(&format!("{name}: {e}\n"));
    }
    snapshot("malformed_graphs", &out);
}

#[test]
fn malformed_kernels_report_where_and_what() {
    let mut out = String::new();
    for (name, text) in BAD_KERNELS {
        let e = parse_kernel(text).expect_err(name);
        out.push_str(&format!("{name}: {e}\n"));
    }
    for (name, text) in BAD_PROGRAMS {
        let e = parse_program(text).expect_err(name);
        out.push_str(&format!("{name}: {e}\n"));
    }
    snapshot("malformed_kernels", &out);
}

fn snapshot(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/roundtrip");
    insta::with_settings!({
        snapshot_path => dir,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn nan_literals_read_back_as_nan() {
    // NaN is not equal to itself, so the round trips above leave it out.
    let k = parse_kernel("kernel k(out: f32 write) {\n  out[0] = NaN\n  out[1] = -(NaN)\n}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let Stmt::Store {
        value: Expr::F32(x),
        ..
    } = &k.body[0]
    else {
        panic!("a store of a literal: {:?}", k.body[0]);
    };
    assert!(x.is_nan());
    assert_eq!(
        k.to_string(),
        "kernel k(out: f32 write) {\n  out[0] = NaN\n  out[1] = -(NaN)\n}\n"
    );
    let g =
        parse("graph \"n\" decode\n%0 = scale{NaN} : [] f32\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(g.nodes[0].op, Op::Unary(UnaryOp::Scale(s)) if s.is_nan()));
}

/// The graph text of `text_that_reads_back_prints_the_same`, exactly as the printer writes it.
const GRAPH_TEXT: &str = "graph \"tiny\" prefill
param @embed : [61, 32] bf16
param @norm.weight : [32] f32
# embeddings
%0 = input tokens : [seq] i32
%1 = gather @embed, %0 : [seq, 32] f32
# final norm
%2 = rmsnorm{eps=1e-5, plus_one} %1, @norm.weight : [seq, 32] f32
%3 = reshape{[seq, 4, 8]} %2 : [seq, 32] f32
%4 = matmul %2, @embed : [seq, 61] f32
# the end
output logits = %4
";

/// The program text of `text_that_reads_back_prints_the_same`.
const PROGRAM_TEXT: &str = "program tiny.prefill
buffer tokens: i32[seq] input
buffer cache.0.k: f32[past, 2] input
buffer cache.0.k: f32[past+seq, 2] append to cache.0.k
buffer %3: f32[seq, 2] temp
launch fill(%3)
launch append(cache.0.k, cache.0.k#1, %3)

kernel fill(out: f32 write) {
  parallel for i_0 in 0..seq * 2 {
    out[i_0] = -(1.0) * -1.5
  }
}

kernel append(old: f32 read, new: f32 write, rows: f32 read) {
  for i_0 in past * 2..(past + seq) * 2 {
    new[i_0] = rows[i_0 - (past * 2)]
  }
}
";

const BAD_GRAPHS: &[(&str, &str)] = &[
    ("empty", ""),
    ("no mode", "graph \"x\"\n"),
    ("unknown mode", "graph \"x\" train\n"),
    ("unterminated name", "graph \"x prefill\n"),
    ("bad escape", "graph \"x\\q\" prefill\n"),
    ("unknown op", "graph \"x\" prefill\n%0 = frobnicate : [1] f32\n"),
    ("node out of order", "graph \"x\" prefill\n%1 = input tokens : [seq] i32\n"),
    ("unknown param", "graph \"x\" prefill\n%0 = gather @embed, %0 : [seq, 4] f32\n"),
    ("symbolic param", "graph \"x\" prefill\nparam @w : [seq, 4] f32\n"),
    ("second param", "graph \"x\" prefill\nparam @w : [4] f32\nparam @w : [4] f32\n"),
    ("param after node", "graph \"x\" prefill\n%0 = input tokens : [seq] i32\nparam @w : [4] f32\n"),
    ("missing node", "graph \"x\" prefill\n%0 = relu %3 : [1] f32\n"),
    ("missing output node", "graph \"x\" prefill\n%0 = input tokens : [seq] i32\noutput logits = %9\n"),
    ("unknown dtype", "graph \"x\" prefill\n%0 = input tokens : [seq] f64\n"),
    ("unknown dim", "graph \"x\" prefill\n%0 = input tokens : [sequence] i32\n"),
    ("no type", "graph \"x\" prefill\n%0 = relu %0\n"),
    ("junk after type", "graph \"x\" prefill\n%0 = input tokens : [seq] i32 extra\n"),
    ("unknown io", "graph \"x\" prefill\n%0 = input cache.0.q : [past, 2] f32\n"),
    ("misplaced attribute", "graph \"x\" prefill\n%0 = attention{scale=0.5, sinks, causal} : [1] f32\n"),
    ("unknown rope scaling", "graph \"x\" prefill\n%0 = rope{dims=4, theta=10000, ntk(factor=2)} : [1] f32\n"),
    ("yarn without truncate", "graph \"x\" prefill\n%0 = rope{dims=4, theta=1, yarn(factor=2, original=8, beta=32/1)} : [1] f32\n"),
    ("bias of a missing part", "graph \"x\" prefill\n%0 = linear{parts=2, bias=0+2} : [1] f32\n"),
    ("bias parts out of order", "graph \"x\" prefill\n%0 = linear{parts=3, bias=1+0} : [1] f32\n"),
    ("elementwise register out of order", "graph \"x\" prefill\n%0 = elementwise{$2 = silu $1; $4 = mul $0, $2} : [1] f32\n"),
    ("not an activation", "graph \"x\" prefill\n%0 = linear{parts=1, act=tanh} : [1] f32\n"),
    ("huge axis", "graph \"x\" prefill\n%0 = slice{axis=99999999999999999999999, 0..1} : [1] f32\n"),
    ("not a number", "graph \"x\" prefill\n%0 = scale{half} : [1] f32\n"),
    ("stray line", "graph \"x\" prefill\nnode %0\n"),
];

const BAD_KERNELS: &[(&str, &str)] = &[
    ("empty", ""),
    ("no name", "kernel (x: f32 read) {\n}\n"),
    (
        "unclosed block",
        "kernel k(x: f32 read) {\n  let a_0 = 1.0\n",
    ),
    (
        "unknown buffer",
        "kernel k(x: f32 read) {\n  y[0] = 1.0\n}\n",
    ),
    (
        "skipped variable number",
        "kernel k() {\n  let a_1 = 1.0\n}\n",
    ),
    (
        "use before definition",
        "kernel k() {\n  let a_0 = 1.0\n  let b_1 = c_2 + 1.0\n}\n",
    ),
    (
        "use in its own definition",
        "kernel k() {\n  let a_0 = a_0 + 1.0\n}\n",
    ),
    (
        "renamed variable",
        "kernel k() {\n  let a_0 = 1.0\n  let b_0 = 2.0\n}\n",
    ),
    (
        "redefined with another type",
        "kernel k() {\n  let a_0 = 1.0\n  for a_0 in 0..4 {\n  }\n}\n",
    ),
    ("leading zero", "kernel k() {\n  let a_00 = 1.0\n}\n"),
    (
        "chained operators",
        "kernel k() {\n  let a_0 = 1.0 + 2.0 * 3.0\n}\n",
    ),
    ("malformed literal", "kernel k() {\n  let a_0 = 1.5x\n}\n"),
    (
        "i64 overflow",
        "kernel k() {\n  let a_0 = 9223372036854775808\n}\n",
    ),
    (
        "unknown function",
        "kernel k() {\n  let a_0 = erf(1.0)\n}\n",
    ),
    (
        "too few operands",
        "kernel k() {\n  let a_0 = min(1.0)\n}\n",
    ),
    (
        "too many operands",
        "kernel k() {\n  let a_0 = exp(1.0, 2.0)\n}\n",
    ),
    (
        "unclosed parenthesis",
        "kernel k() {\n  let a_0 = (1.0 + 2.0\n}\n",
    ),
    ("unknown access", "kernel k(x: f32 readonly) {\n}\n"),
    ("unknown element type", "kernel k(x: f64 read) {\n}\n"),
    (
        "second parameter of a name",
        "kernel k(x: f32 read, x: f32 write) {\n}\n",
    ),
    (
        "missing step",
        "kernel k() {\n  for i_0 in 0..4 step {\n  }\n}\n",
    ),
    ("missing range", "kernel k() {\n  for i_0 in 4 {\n  }\n}\n"),
    (
        "local without a type",
        "kernel k() {\n  local a_0 = 0.0\n}\n",
    ),
    ("not a variable", "kernel k() {\n  x = 1.0\n}\n"),
    (
        "statement after a brace",
        "kernel k() {\n  if true { let a_0 = 1\n  }\n}\n",
    ),
    ("two kernels", "kernel k() {\n}\nkernel j() {\n}\n"),
    (
        "missing expression",
        "kernel k(out: f32 write) {\n  out[0] =\n}\n",
    ),
];

const BAD_PROGRAMS: &[(&str, &str)] = &[
    ("no program", "buffer x: f32[4] temp\n"),
    (
        "unknown alias target",
        "program p\nbuffer %1: f32[4] alias of %9\n",
    ),
    (
        "second buffer of a name that has one",
        "program p\nbuffer x: f32[4] temp\nbuffer y: f32[4] alias of x#1\n",
    ),
    ("launch of an unknown kernel", "program p\nlaunch k()\n"),
    (
        "input not named by an io",
        "program p\nbuffer w.1: f32[4] input\n",
    ),
    (
        "unknown io",
        "program p\nbuffer w: f32[4] output cache.x.k\n",
    ),
    (
        "second kernel of a name",
        "program p\nkernel k() {\n}\n\nkernel k() {\n}\n",
    ),
    (
        "unknown buffer kind",
        "program p\nbuffer x: f32[4] scratch\n",
    ),
    ("unknown element type", "program p\nbuffer x: f64[4] temp\n"),
    ("unclosed launch", "program p\nlaunch k(x, y\n"),
    ("unknown line", "program p\nbuf x: f32[4] temp\n"),
];
