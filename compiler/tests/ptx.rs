//! PTX code generation: snapshots of every example spec's kernels for `sm_90` (manifest
//! and PTX), determinism, the plan of hand-built kernels (warp or thread mode, which
//! vector loops a warp shares, launch grids), errors, and `ptxas` on every emitted file
//! for `sm_90` and `sm_80` with register and spill counts.
//!
//! Bless with `INSTA_UPDATE=always cargo test -p archc-compiler --test ptx`, then read the
//! snapshots in `tests/data/ptx/`. The ptxas tests need `ptxas`: `export
//! ARCHC_PTXAS="$(tools/ptxas.sh)"` installs it from PyPI (or put it on PATH). Without it
//! they print why they were skipped, and fail when `CI=true`.

use archc_compiler::codegen::ptx::{
    self, emit_kernel, emit_kernels, manifest, plan::plan, LaunchShape, Mode, PtxKernel, Sm,
};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::{lower::program, Program};
use archc_compiler::kernel::{Access, Elem, Kernel, LoopKind, Stmt, Ty, UnOp};
use archc_compiler::passes::optimize;
use archc_compiler::{lower, Mode as GraphMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ptx")
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every example spec, by file stem, sorted.
fn examples() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(examples_dir())
        .expect("the examples directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .map(|p| {
            let stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (stem, p)
        })
        .collect();
    out.sort();
    out
}

/// The kernel program of an example in a mode, or why the kernel lowering cannot make
/// one yet (some mixers and weight formats are not lowered so far).
fn example_program(path: &Path, mode: GraphMode) -> Result<Program, String> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).expect("example is readable");
    let spec = archc_spec::validate::check_source(&name, &src)
        .unwrap_or_else(|_| panic!("{name} is a valid spec"));
    let graph = lower(&spec, mode).map_err(|e| format!("graph lowering: {e}"))?;
    program(&optimize(&graph)).map_err(|e| e.to_string())
}

/// The examples that have a kernel program in `mode`, and a line for each that has not.
fn example_programs(mode: GraphMode) -> (Vec<(String, Program)>, String) {
    let mut ok = Vec::new();
    let mut missing = String::new();
    for (stem, path) in examples() {
        match example_program(&path, mode) {
            Ok(p) => ok.push((stem, p)),
            Err(e) => missing.push_str(&format!("{stem}: {e}\n")),
        }
    }
    (ok, missing)
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => data_dir(),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// The manifest, then each kernel's PTX under a header line naming its file.
fn render(program_name: &str, kernels: &[PtxKernel]) -> String {
    let mut s = manifest(program_name, kernels);
    for k in kernels {
        s.push_str(&format!("\n//// {}\n", k.file_name()));
        s.push_str(&k.ptx);
    }
    s
}

// ---------------------------------------------------------------- snapshots

#[test]
fn examples_sm90() {
    let (programs, missing) = example_programs(GraphMode::Prefill);
    assert!(programs.len() >= 10, "the examples are found");
    // Which examples the kernel lowering cannot handle yet, and why.
    snapshot("no_kernels", &missing);
    for (stem, p) in &programs {
        let kernels = emit_kernels(&p.kernels, Sm::Sm90)
            .unwrap_or_else(|e| panic!("{stem}: PTX generation failed: {e}"));
        snapshot(stem, &render(&p.name, &kernels));
    }
}

#[test]
fn ptx_is_deterministic() {
    let (programs, _) = example_programs(GraphMode::Decode);
    let (_, p) = &programs[0];
    let a = render(&p.name, &emit_kernels(&p.kernels, Sm::Sm90).expect("emits"));
    let b = render(&p.name, &emit_kernels(&p.kernels, Sm::Sm90).expect("emits"));
    assert_eq!(a, b);
}

// ---------------------------------------------------------------- plans

/// `out[r] = sum_j x[r*n + j] * w[j]`: one warp per row, the sum shuffled.
fn row_dot(n: i64) -> Kernel {
    let mut k = Kernel::new("row_dot");
    let x = k.buf("x", Elem::F32, Access::Read);
    let w = k.buf("w", Elem::Bf16, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let r = k.var("r", Ty::I64);
    let j = k.var("j", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    let big = k.var("big", Ty::F32);
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::Local {
                var: acc,
                init: f(1.0),
            },
            Stmt::Local {
                var: big,
                init: f(-1e30),
            },
            Stmt::Loop {
                var: j,
                start: i(0),
                end: i(n),
                step: 1,
                kind: LoopKind::Vector(8),
                body: vec![
                    Stmt::Set {
                        var: acc,
                        value: add(
                            var(acc),
                            mul(load(x, add(mul(var(r), i(n)), var(j))), load(w, var(j))),
                        ),
                    },
                    Stmt::Set {
                        var: big,
                        value: bin(
                            archc_compiler::kernel::BinOp::Max,
                            load(w, var(j)),
                            var(big),
                        ),
                    },
                ],
            },
            Stmt::Store {
                buf: out,
                index: var(r),
                value: add(var(acc), var(big)),
            },
        ],
    }];
    k
}

/// `out[i] = exp(x[i])` over `seq * 4` elements: no vector loop, thread mode.
fn elementwise() -> Kernel {
    let mut k = Kernel::new("elementwise");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F16, Access::Write);
    let ix = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: mul(seq(), i(4)),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: out,
            index: var(ix),
            value: un(UnOp::Exp, load(x, var(ix))),
        }],
    }];
    k
}

/// A vector loop that reads its accumulator outside the update cannot be shared.
fn prefix_sum() -> Kernel {
    let mut k = Kernel::new("prefix_sum");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let j = k.var("j", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    k.body = vec![
        Stmt::Local {
            var: acc,
            init: f(0.0),
        },
        Stmt::Loop {
            var: j,
            start: i(0),
            end: seq(),
            step: 1,
            kind: LoopKind::Vector(4),
            body: vec![
                Stmt::Set {
                    var: acc,
                    value: add(var(acc), load(x, var(j))),
                },
                Stmt::Store {
                    buf: out,
                    index: var(j),
                    value: var(acc),
                },
            ],
        },
    ];
    k
}

fn plan_text(k: &Kernel) -> String {
    let p = plan(k).expect("plans");
    let LaunchShape {
        mode,
        block,
        per_block,
        shared_bytes,
        parallel,
        ..
    } = &p.launch;
    let mut grids = BTreeMap::new();
    for seq in [1, 7, 100] {
        grids.insert(seq, p.launch.grid(seq, 0));
    }
    format!(
        "{}: {} mode, block {block}, {per_block} per block, {shared_bytes} B shared, parallel {parallel}, \
         distributed {:?}, grid by seq {grids:?}",
        k.name,
        mode.as_str(),
        p.distributed
    )
}

#[test]
fn plans_of_hand_built_kernels() {
    let text = [row_dot(300), elementwise(), prefix_sum()]
        .iter()
        .map(plan_text)
        .collect::<Vec<_>>()
        .join("\n");
    snapshot("plans", &text);
    assert_eq!(plan(&row_dot(300)).expect("plans").mode, Mode::Warp);
    assert_eq!(plan(&elementwise()).expect("plans").mode, Mode::Thread);
    assert_eq!(plan(&prefix_sum()).expect("plans").mode, Mode::Thread);
}

#[test]
fn hand_built_ptx() {
    let mut text = String::new();
    for (i, k) in [row_dot(300), elementwise()].iter().enumerate() {
        let p = emit_kernel(i, k, Sm::Sm90).expect("emits");
        text.push_str(&format!("//// {}\n{}", p.file_name(), p.ptx));
    }
    // The warp kernel shuffles and synchronises; the thread kernel does neither.
    assert!(text.contains("shfl.sync.bfly.b32"), "{text}");
    assert!(text.contains("ex2.approx"), "{text}");
    snapshot("hand_built", &text);
}

#[test]
fn errors() {
    let mut k = elementwise();
    k.buf("huge", Elem::F32, Access::Scratch { len: 1 << 20 });
    let e = emit_kernel(0, &k, Sm::Sm90).expect_err("too much scratch");
    let bad_sm = Sm::by_name("75").expect_err("unknown sm");
    snapshot("errors", &format!("{e}\n{bad_sm}"));
}

// ---------------------------------------------------------------- ptxas

/// `ptxas` from `ARCHC_PTXAS` or PATH; `None` (with the reason printed) where it is
/// missing locally. Under `CI=true` a missing ptxas fails the test.
fn ptxas() -> Option<PathBuf> {
    let candidate = std::env::var_os("ARCHC_PTXAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    let ok = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    let why = format!(
        "ptxas not found (ARCHC_PTXAS={:?}); install it with `export ARCHC_PTXAS=\"$(tools/ptxas.sh)\"`",
        std::env::var_os("ARCHC_PTXAS")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// What ptxas reports for one entry.
#[derive(Debug, Clone, Default, PartialEq)]
struct Usage {
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack: u32,
    shared: u32,
}

/// Assembles one PTX file and parses `ptxas -v`'s report.
fn assemble(ptxas: &Path, dir: &Path, k: &PtxKernel, sm: Sm) -> Usage {
    let file = dir.join(k.file_name());
    std::fs::write(&file, &k.ptx).expect("writes the PTX");
    let out = Command::new(ptxas)
        .arg(format!("-arch={}", sm.as_str()))
        .arg("-v")
        .arg("-o")
        .arg(dir.join(format!("{}.cubin", k.symbol)))
        .arg(&file)
        .output()
        .expect("ptxas runs");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ptxas -arch={} rejected {}:\n{log}",
        sm.as_str(),
        k.file_name()
    );
    let mut u = Usage::default();
    let num_before = |line: &str, unit: &str| -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if line.contains("bytes stack frame") {
            u.stack = num_before(line, "bytes stack frame").unwrap_or(0);
            u.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
            u.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            u.registers = num_before(line, "registers").unwrap_or(0);
            u.shared = num_before(line, "bytes smem").unwrap_or(0);
        }
    }
    u
}

/// Kernels on the decode and prefill critical path: spills there cost bandwidth.
fn is_hot(name: &str) -> bool {
    [
        "linear",
        "matmul",
        "flash_attention",
        "attention",
        "moe",
        "experts",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn check_ptxas(sm: Sm) {
    let Some(ptxas) = ptxas() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = String::new();
    let mut spills = Vec::new();
    for mode in [GraphMode::Prefill, GraphMode::Decode] {
        for (stem, p) in example_programs(mode).0 {
            let kernels = emit_kernels(&p.kernels, sm).expect("emits");
            for k in &kernels {
                let u = assemble(&ptxas, dir.path(), k, sm);
                report.push_str(&format!(
                    "{stem} {:?} {}: {} mode, {} registers, {} B stack, {} B spill stores, {} B spill loads, {} B smem\n",
                    mode,
                    k.symbol,
                    k.plan.mode.as_str(),
                    u.registers,
                    u.stack,
                    u.spill_stores,
                    u.spill_loads,
                    u.shared
                ));
                if is_hot(&k.name) && (u.spill_stores > 0 || u.spill_loads > 0) {
                    spills.push(format!("{stem} {mode:?} {}: {u:?}", k.symbol));
                }
            }
        }
    }
    eprintln!("ptxas -arch={}:\n{report}", sm.as_str());
    assert!(
        spills.is_empty(),
        "hot kernels spill registers:\n{}",
        spills.join("\n")
    );
}

#[test]
fn ptxas_sm90() {
    check_ptxas(Sm::Sm90);
}

#[test]
fn ptxas_sm80() {
    check_ptxas(Sm::Sm80);
}

#[test]
fn sm_names() {
    assert_eq!(Sm::by_name("90").expect("known"), Sm::Sm90);
    assert_eq!(Sm::by_name("sm_80").expect("known"), Sm::Sm80);
    assert_eq!(ptx::TRIPLE, "nvptx64-nvidia-cuda");
}
