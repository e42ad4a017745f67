//! The kernel IR's matmul tile (`Stmt::Tile`): what it computes (the kernel interpreter
//! against a plain Rust reference and against its own expansion into loops), what every
//! target makes of it (LLVM for the host and a fixed CPU, PTX, Cranelift), and the
//! verifier's rules.

use archc_compiler::codegen::llvm::{compile_kernels_with, Options, Target};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{run_kernel, KBufData};
use archc_compiler::kernel::tile::expand_tiles;
use archc_compiler::kernel::verify::verify_kernel;
use archc_compiler::kernel::{Access, Elem, Kernel, LoopKind, Stmt, Tile, TileOut, TileRef, Ty};

/// Deterministic values in [-1, 1), exactly representable in bf16.
fn values(n: usize, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .wrapping_mul(0x2545_f491_4f6c_dd1d);
            let x = ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            f32::from_bits(x.to_bits() & 0xffff_0000)
        })
        .collect()
}

fn bf16_bits(x: &[f32]) -> Vec<u16> {
    x.iter().map(|v| (v.to_bits() >> 16) as u16).collect()
}

/// `out[r * n + c] = Σ_k a[r * kd + k] · w[c * kd + k]` for `m` rows and `n` columns,
/// parallel over column pairs, each a `rows × 2` tile of sums stored by the kernel;
/// `a` is f32 and `w` is `welem`.
fn rows_kernel(m: i64, n: i64, kd: i64, welem: Elem) -> Kernel {
    let mut k = Kernel::new("tile_rows");
    let a = k.buf("a", Elem::F32, Access::Read);
    let w = k.buf("w", welem, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let cp = k.var("cp", Ty::I64);
    let sums: Vec<_> = (0..m * 2).map(|_| k.var("acc", Ty::F32)).collect();
    let tile = Tile {
        start: i(0),
        end: i(kd),
        lanes: 1,
        rows: (0..m)
            .map(|r| TileRef {
                buf: a,
                base: i(r * kd),
            })
            .collect(),
        cols: (0..2)
            .map(|c| TileRef {
                buf: w,
                base: mul(add(mul(var(cp), i(2)), i(c)), i(kd)),
            })
            .collect(),
        out: TileOut::Sums(sums.clone()),
    };
    let mut body = vec![Stmt::Tile(Box::new(tile))];
    for r in 0..m {
        for c in 0..2 {
            body.push(Stmt::Store {
                buf: out,
                index: add(add(mul(i(r), i(n)), mul(var(cp), i(2))), i(c)),
                value: var(sums[(r * 2 + c) as usize]),
            });
        }
    }
    k.body = vec![Stmt::Loop {
        var: cp,
        start: i(0),
        end: i(n / 2),
        step: 1,
        kind: LoopKind::Parallel,
        body,
    }];
    k
}

/// The tokens-in-lanes form: `groups` groups of 16 rows packed as `[k/2][16][2]` in `x`
/// (bf16), `n` bf16 weight rows, sums stored as `out[(g * n + c) * 16 + l]`; parallel over
/// columns.
fn lanes_kernel(groups: i64, n: i64, kd: i64) -> Kernel {
    let mut k = Kernel::new("tile_lanes");
    let x = k.buf("x", Elem::Bf16, Access::Read);
    let w = k.buf("w", Elem::Bf16, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let c = k.var("c", Ty::I64);
    let tile = Tile {
        start: i(0),
        end: i(kd),
        lanes: 16,
        rows: (0..groups)
            .map(|g| TileRef {
                buf: x,
                base: i(g * 16 * kd),
            })
            .collect(),
        cols: vec![TileRef {
            buf: w,
            base: mul(var(c), i(kd)),
        }],
        out: TileOut::Store {
            buf: out,
            bases: (0..groups)
                .map(|g| mul(add(mul(i(g), i(n)), var(c)), i(16)))
                .collect(),
        },
    };
    k.body = vec![Stmt::Loop {
        var: c,
        start: i(0),
        end: i(n),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Tile(Box::new(tile))],
    }];
    k
}

fn run_interp(k: &Kernel, bufs: &mut [KBufData]) {
    run_kernel(k, bufs, 1, 0, 0, 1).unwrap_or_else(|e| panic!("{}: {e}", k.name));
}

/// Runs `k` compiled for the host with one pointer per buffer.
fn run_native(k: &Kernel, ptrs: &[*mut u8]) {
    let prog = compile_kernels_with(
        std::slice::from_ref(k),
        &Target::host(),
        &Options::no_cache(),
    )
    .expect("compiles");
    // SAFETY: every buffer is as large as the kernel indexes at these sizes.
    unsafe { prog.call(0, ptrs, [1, 0], 0, 1) };
}

/// Runs `k` compiled by the Cranelift tier with one pointer per buffer.
fn run_clif(k: &Kernel, ptrs: &[*mut u8]) {
    let prog = archc_compiler::codegen::clif::compile(std::slice::from_ref(k)).expect("compiles");
    // SAFETY: every buffer is as large as the kernel indexes at these sizes.
    unsafe { prog.call(0, ptrs, [1, 0], 0, 1) };
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn row_tiles_compute_their_dot_products_on_every_engine() {
    for (welem, kd) in [(Elem::F32, 37), (Elem::Bf16, 64), (Elem::Bf16, 71)] {
        let (m, n) = (3i64, 6i64);
        let k = rows_kernel(m, n, kd, welem);
        verify_kernel(&k).expect("verifies");
        let a = values((m * kd) as usize, 1);
        let w = values((n * kd) as usize, 2);
        let want: Vec<f32> = (0..m)
            .flat_map(|r| {
                let (a, w) = (&a, &w);
                (0..n).map(move |c| {
                    (0..kd)
                        .map(|j| a[(r * kd + j) as usize] * w[(c * kd + j) as usize])
                        .sum::<f32>()
                })
            })
            .collect();
        let wb = bf16_bits(&w);
        let mut out = vec![f32::NAN; (m * n) as usize];
        let wview = match welem {
            Elem::Bf16 => KBufData::Bf16Ro(&wb),
            _ => KBufData::F32Ro(&w),
        };
        run_interp(
            &k,
            &mut [KBufData::F32Ro(&a), wview, KBufData::F32(&mut out)],
        );
        assert!(
            close(&out, &want, 1e-5),
            "interp {welem:?} k={kd}: {out:?} vs {want:?}"
        );
        // The expansion into loops computes the same thing.
        let mut again = vec![f32::NAN; (m * n) as usize];
        let wview = match welem {
            Elem::Bf16 => KBufData::Bf16Ro(&wb),
            _ => KBufData::F32Ro(&w),
        };
        run_interp(
            &expand_tiles(&k),
            &mut [KBufData::F32Ro(&a), wview, KBufData::F32(&mut again)],
        );
        assert!(close(&again, &out, 1e-5), "expansion {welem:?}");
        let mut native = vec![f32::NAN; (m * n) as usize];
        let wptr = match welem {
            Elem::Bf16 => wb.as_ptr() as *mut u8,
            _ => w.as_ptr() as *mut u8,
        };
        run_native(
            &k,
            &[a.as_ptr() as *mut u8, wptr, native.as_mut_ptr().cast()],
        );
        assert!(close(&native, &want, 1e-5), "llvm {welem:?} k={kd}");
        // Cranelift lowers this tile itself, four elements a step and a scalar remainder.
        let mut clif = vec![f32::NAN; (m * n) as usize];
        run_clif(&k, &[a.as_ptr() as *mut u8, wptr, clif.as_mut_ptr().cast()]);
        assert!(close(&clif, &want, 1e-5), "cranelift {welem:?} k={kd}");
    }
}

#[test]
fn lanes_tiles_compute_outer_products_on_every_engine() {
    let (groups, n, kd) = (2i64, 3i64, 40i64);
    let k = lanes_kernel(groups, n, kd);
    verify_kernel(&k).expect("verifies");
    // Rows r = (g, l): element kk at g*16*kd + (kk/2)*32 + 2l + kk%2.
    let rows = values((groups * 16 * kd) as usize, 3);
    let mut packed = vec![0f32; rows.len()];
    for g in 0..groups {
        for l in 0..16 {
            for kk in 0..kd {
                let src = ((g * 16 + l) * kd + kk) as usize;
                let dst = (g * 16 * kd + (kk / 2) * 32 + 2 * l + kk % 2) as usize;
                packed[dst] = rows[src];
            }
        }
    }
    let w = values((n * kd) as usize, 4);
    let mut want = vec![0f32; (groups * n * 16) as usize];
    for g in 0..groups {
        for c in 0..n {
            for l in 0..16 {
                want[((g * n + c) * 16 + l) as usize] = (0..kd)
                    .map(|j| rows[((g * 16 + l) * kd + j) as usize] * w[(c * kd + j) as usize])
                    .sum();
            }
        }
    }
    let (xb, wb) = (bf16_bits(&packed), bf16_bits(&w));
    let mut out = vec![f32::NAN; want.len()];
    run_interp(
        &k,
        &mut [
            KBufData::Bf16Ro(&xb),
            KBufData::Bf16Ro(&wb),
            KBufData::F32(&mut out),
        ],
    );
    assert!(close(&out, &want, 1e-5), "interp");
    let mut native = vec![f32::NAN; want.len()];
    run_native(
        &k,
        &[
            xb.as_ptr() as *mut u8,
            wb.as_ptr() as *mut u8,
            native.as_mut_ptr().cast(),
        ],
    );
    assert!(close(&native, &want, 1e-5), "llvm");
    // Cranelift lowers a lanes tile with f32x4 pairs of lanes.
    let mut clif = vec![f32::NAN; want.len()];
    run_clif(
        &k,
        &[
            xb.as_ptr() as *mut u8,
            wb.as_ptr() as *mut u8,
            clif.as_mut_ptr().cast(),
        ],
    );
    assert!(close(&clif, &want, 1e-5), "cranelift");
    let ptx =
        archc_compiler::codegen::ptx::emit_kernel(0, &k, archc_compiler::codegen::ptx::Sm::Sm90)
            .expect("PTX");
    assert!(ptx.ptx.contains(".entry"), "no kernel entry");
}

#[test]
fn the_text_form_shows_the_tile() {
    let text = lanes_kernel(1, 2, 8).to_string();
    assert!(
        text.contains("tile 0..8 lanes 16 {\n      rows x[0]\n      cols w[c_0 * 8]\n      store out[((0 * 2) + c_0) * 16]\n"),
        "{text}"
    );
    let text = rows_kernel(1, 2, 5, Elem::F32).to_string();
    assert!(text.contains("      sums acc_1, acc_2\n"), "{text}");
}

#[test]
fn the_verifier_knows_the_rules_of_tiles() {
    let check = |edit: &dyn Fn(&mut Tile), want: &str| {
        let mut k = lanes_kernel(1, 2, 8);
        let Stmt::Loop { body, .. } = &mut k.body[0] else {
            panic!("a loop")
        };
        let Stmt::Tile(t) = &mut body[0] else {
            panic!("a tile")
        };
        edit(t);
        let e = verify_kernel(&k).expect_err("refused");
        assert!(e.message.contains(want), "{} (wanted `{want}`)", e.message);
    };
    check(&|t| t.lanes = 3, "3 lanes; a tile has a power of two");
    check(&|t| t.end = i(7), "the end must be an even constant");
    check(&|t| t.end = seq(), "the end must be an even constant");
    check(&|t| t.cols.clear(), "at least one row and one column");
    check(
        &|t| {
            if let TileOut::Store { bases, .. } = &mut t.out {
                bases.push(i(0));
            }
        },
        "2 store bases for 1 row groups and 1 columns",
    );
    check(
        &|t| t.out = TileOut::Sums(Vec::new()),
        "a tile with lanes stores its sums",
    );
    let mut k = rows_kernel(1, 2, 4, Elem::F32);
    let Stmt::Loop { body, .. } = &mut k.body[0] else {
        panic!("a loop")
    };
    let Stmt::Tile(t) = &mut body[0] else {
        panic!("a tile")
    };
    if let TileOut::Sums(v) = &mut t.out {
        v.pop();
    }
    let e = verify_kernel(&k).expect_err("refused");
    assert!(
        e.message.contains("1 sums for 1 rows and 2 columns"),
        "{}",
        e.message
    );
    // A tile storing outside the parallel loop would race between threads.
    let mut k = lanes_kernel(1, 2, 8);
    let Stmt::Loop { body, .. } = k.body.remove(0) else {
        panic!("a loop")
    };
    let Stmt::Tile(mut t) = body.into_iter().next().expect("tile") else {
        panic!("a tile")
    };
    t.cols[0].base = i(0);
    if let TileOut::Store { bases, .. } = &mut t.out {
        bases[0] = i(0);
    }
    k.body = vec![Stmt::Tile(t)];
    // Without a parallel loop the store is fine; with one elsewhere it is not.
    verify_kernel(&k).expect("a kernel without a parallel loop may store anywhere");
    let c = k.var("c2", Ty::I64);
    k.body.push(Stmt::Loop {
        var: c,
        start: i(0),
        end: i(1),
        step: 1,
        kind: LoopKind::Parallel,
        body: Vec::new(),
    });
    let e = verify_kernel(&k).expect_err("refused");
    assert!(
        e.message.contains("outside the parallel loop"),
        "{}",
        e.message
    );
}

#[test]
fn tiles_read_back_from_their_text() {
    use archc_compiler::kernel::parse_kernel;
    for k in [
        rows_kernel(3, 6, 37, Elem::Bf16),
        rows_kernel(1, 2, 5, Elem::F32),
        lanes_kernel(2, 3, 40),
    ] {
        assert!(k.has_compact_vars(), "{}", k.name);
        let text = k.to_string();
        assert_eq!(parse_kernel(&text).as_ref(), Ok(&k), "{text}");
    }
    // Where the text goes wrong, the error says where.
    let bad = "kernel t(a: f32 read, out: f32 write) {\n  tile 0..4 {\n    rows a[0]\n    cols a[0]\n    keep acc_0\n  }\n}\n";
    let e = parse_kernel(bad).expect_err("`keep` is not an output");
    assert_eq!(e.to_string(), "5:5: expected `sums` or `store`");
}
