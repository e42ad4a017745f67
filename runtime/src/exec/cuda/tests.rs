//! The CUDA executor's unit tests: the shared program analysis as the executor reads it,
//! buffer sizes, shared-memory limits, and (with a device) scratch in every home.

use super::*;
use archc_compiler::ir::{Dim, Io, KvPart};
use archc_compiler::kernel::build::{i, past};
use archc_compiler::kernel::{Access, Buffer, Kernel, Launch, Stmt};

fn buffer(name: &str, kind: BufferKind) -> Buffer {
    Buffer {
        name: name.into(),
        elem: Elem::F32,
        shape: vec![Dim::c(4)],
        kind,
    }
}

/// `k(a: access_a, b: access_b)`: stores `past` (or 0) into `b`.
fn kernel(name: &str, a: Access, b: Access, with_past: bool) -> Kernel {
    let mut k = Kernel::new(name);
    k.buf("a", Elem::F32, a);
    let out = k.buf("b", Elem::F32, b);
    let value = if with_past { past() } else { i(0) };
    k.body.push(Stmt::Store {
        buf: out,
        index: i(0),
        value,
    });
    k
}

#[test]
fn the_analysis_finds_reads_before_writes_and_never_zeroes_the_cache() {
    // Launch 0 reads `acc` (never written yet, through an alias) and writes `t`;
    // launch 1 reads `t` (written: no zeroing) and reads and writes the cache output;
    // launch 2 reads the cache input and reads and writes `logits`.
    let program = Program {
        name: "p".into(),
        buffers: vec![
            buffer("acc", BufferKind::Temp),
            buffer("t", BufferKind::Temp),
            buffer("cache.0.k", BufferKind::Input(Io::kv(0, KvPart::K))),
            buffer("cache.0.k", BufferKind::Output(Io::kv(0, KvPart::K))),
            buffer("acc2", BufferKind::Alias { of: 0 }),
            buffer("logits", BufferKind::Output(Io::Logits)),
        ],
        kernels: vec![
            kernel("k0", Access::Read, Access::Write, false),
            kernel("k1", Access::Read, Access::ReadWrite, true),
        ],
        launches: vec![
            Launch {
                kernel: 0,
                bufs: vec![Some(4), Some(1)],
            },
            Launch {
                kernel: 1,
                bufs: vec![Some(1), Some(3)],
            },
            Launch {
                kernel: 1,
                bufs: vec![Some(2), Some(5)],
            },
        ],
    };
    let info = analyze(&program.doc()).expect("the contract holds");
    assert_eq!(info.roots, [0, 1, 2, 3, 0, 5]);
    // `acc` through its alias; the cache output is read first (launch 1 reads and
    // writes it) but holds the model's state, so it is never zeroed; `logits` too
    // is read before written (launch 2).
    assert_eq!(info.read_before_write, [0, 5]);
    assert_eq!(info.uses_past, [false, true]);
}

#[test]
fn buffer_sizes_follow_seq_and_past() {
    let mut b = buffer("cache.0.k", BufferKind::Input(Io::kv(0, KvPart::K)));
    b.shape = vec![Dim::PAST, Dim::c(8)];
    b.elem = Elem::Bf16;
    let p = Program {
        name: "p".into(),
        buffers: vec![b],
        kernels: vec![],
        launches: vec![],
    };
    assert_eq!(elem_bytes(&p, 0, 1, 10).expect("size"), 10 * 8 * 2);
    assert!(elem_bytes(&p, 1, 1, 10).is_err());
}

#[test]
fn no_device_is_an_error_not_a_panic() {
    let e = copy_bandwidth(usize::MAX, 1 << 20, 1).expect_err("no such device");
    assert!(
        matches!(e, CudaError::NoDriver | CudaError::NoDevice { .. }),
        "{e}"
    );
}

/// `out[r] = sum_j x[r*n + j]` for `r < 4`, after staging row `r` in `n` floats of
/// scratch: static shared memory, dynamic shared memory or global memory by `n`.
fn staged(n: i64) -> Kernel {
    use archc_compiler::kernel::build::{add, f, load, mul, var};
    use archc_compiler::kernel::{LoopKind, Ty};
    let mut k = Kernel::new("staged");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let s = k.buf("s", Elem::F32, Access::Scratch { len: n as u64 });
    let (r, j, j2, acc) = (
        k.var("r", Ty::I64),
        k.var("j", Ty::I64),
        k.var("j2", Ty::I64),
        k.var("acc", Ty::F32),
    );
    let lp = |v, body| Stmt::Loop {
        var: v,
        start: i(0),
        end: i(n),
        step: 1,
        kind: LoopKind::Vector(8),
        body,
    };
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: i(4),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![
            lp(
                j,
                vec![Stmt::Store {
                    buf: s,
                    index: var(j),
                    value: load(x, add(mul(var(r), i(n)), var(j))),
                }],
            ),
            Stmt::Local {
                var: acc,
                init: f(0.0),
            },
            lp(
                j2,
                vec![Stmt::Set {
                    var: acc,
                    value: add(var(acc), load(s, var(j2))),
                }],
            ),
            Stmt::Store {
                buf: out,
                index: var(r),
                value: var(acc),
            },
        ],
    }];
    k
}

/// A kernel whose scratch is in dynamic shared memory loads where the device allows
/// it and is refused, by name, where it does not.
#[test]
fn shared_memory_limit() {
    // 30000 floats: 120 KB, dynamic shared memory.
    let k = staged(30_000);
    let p = ptx::emit_kernel(3, &k, Sm::Sm90).expect("emits");
    assert_eq!(p.plan.launch.dynamic_shared_bytes, 120_000);
    assert!(check_shared(&p, "H200", 227 * 1024).is_ok());
    let e = check_shared(&p, "small GPU", 100 * 1024).expect_err("over the limit");
    let text = e.to_string();
    assert!(
        text.contains("kernel `staged`") && text.contains("102400"),
        "{text}"
    );
}

/// On a device: the staged sum is right with its scratch in each home (static
/// shared, dynamic shared past 48 KiB, per-warp global slices). Skipped without one.
#[test]
fn scratch_in_every_home_runs() {
    if let Err(e) = probe(0) {
        eprintln!("skipped: {e}");
        return;
    }
    for (n, home) in [
        (5_000i64, ptx::Home::Shared),
        (30_000, ptx::Home::DynamicShared),
        (200_000, ptx::Home::Global),
    ] {
        let k = staged(n);
        let planned = ptx::plan::plan(&k).expect("plans");
        assert_eq!(planned.scratch.home, home, "n = {n}");
        let mut x = buffer("x", BufferKind::Input(Io::value("x")));
        x.shape = vec![Dim::c(4 * n as u64)];
        let program = Program {
            name: format!("staged_{n}"),
            buffers: vec![x, buffer("out", BufferKind::Output(Io::value("out")))],
            kernels: vec![k],
            launches: vec![Launch {
                kernel: 0,
                bufs: vec![Some(0), Some(1), None],
            }],
        };
        // Small integers: every sum is exact in f32.
        let xs: Vec<f32> = (0..4 * n).map(|j| (j % 7) as f32).collect();
        let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let gpu = CudaProgram::new(program, 0, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
        let inputs = BTreeMap::from([("x".to_string(), bytes.as_slice())]);
        let out = gpu
            .run(&inputs, 1, 0)
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
        let got: Vec<f32> = out["out"]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want: Vec<f32> = (0..4)
            .map(|r| xs[(r * n) as usize..((r + 1) * n) as usize].iter().sum())
            .collect();
        assert_eq!(got, want, "n = {n}");
    }
}
