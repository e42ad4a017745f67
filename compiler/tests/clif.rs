//! The Cranelift tier (`codegen::clif`): hand-built kernels of every operation and element
//! type give the kernel interpreter's bits exactly, on 1, 2 and 3 threads; every kernel of
//! every example compiles, under the CPU options `run` and `logits` use; and the CLIF text
//! is what gets compiled.

mod common;

use archc_compiler::codegen::clif;
use archc_compiler::driver::{self, Driver, Options, Precision};
use archc_compiler::kernel::interp::KData;
use archc_compiler::kernel::Elem;
use archc_compiler::Mode;
use common::*;
use std::path::Path;

#[test]
fn compiled_kernels_give_the_kernel_interpreters_bits() {
    let (mathk, _) = math();
    let ks = vec![
        row_sum(),
        matmul_bf16(67, 37),
        convert("f32_to_bf16", Elem::F32, Elem::Bf16),
        convert("f32_to_f16", Elem::F32, Elem::F16),
        convert("f16_to_f32", Elem::F16, Elem::F32),
        gather(),
        select_if(),
        reverse_rows("rev_heap", 100_000, Elem::F32),
        mathk,
    ];
    let prog = clif::compile(&ks).expect("Cranelift compiles the kernels");
    assert_eq!(prog.kernels().len(), ks.len());
    let poison = |n: usize| Some(KData::F32(vec![f32::NAN; n]));
    let f32s = |n: usize, seed: u64| Some(KData::F32(values(n, seed, -2.0, 2.0)));
    for threads in [1i64, 2, 3] {
        // Bit for bit: the tier computes operation for operation what the interpreter does.
        let run = |i: usize, bufs: &[Option<KData>], seq: usize| {
            check_against_interpreter(&prog, i, &ks[i], bufs, seq as i64, threads, 0.0)
        };
        run(
            0,
            &[Some(KData::F32(values(5000, 10, 0.0, 1.0))), poison(5)],
            5,
        );
        run(
            1,
            &[
                Some(KData::F32(values(3 * 67, 11, 0.0, 1.0))),
                Some(bf16s(values(37 * 67, 12, 0.0, 1.0))),
                poison(3 * 37),
            ],
            3,
        );
        run(2, &[f32s(999, 13), Some(KData::Bf16(vec![0; 999]))], 999);
        run(
            3,
            &[
                Some(KData::F32(values(999, 14, -70000.0, 70000.0))),
                Some(KData::F16(vec![0; 999])),
            ],
            999,
        );
        run(
            4,
            &[Some(KData::F16((0..=u16::MAX).collect())), poison(65536)],
            65536,
        );
        run(
            5,
            &[
                f32s(16, 15),
                Some(KData::I32(vec![-4, 11, 0, -1, 5])),
                poison(5),
            ],
            5,
        );
        let d: Vec<i32> = (0..64)
            .map(|v| (v % 7) - 3)
            .map(|v| if v == 0 { 5 } else { v })
            .collect();
        run(
            6,
            &[
                f32s(64, 16),
                Some(KData::I32(d)),
                poison(64),
                poison(64),
                Some(KData::I32(vec![0; 128])),
            ],
            64,
        );
        run(7, &[f32s(7 * 16, 17), poison(7 * 16), None], 7);
        let n = 1000;
        let (_, names) = math();
        run(
            8,
            &[
                f32s(n, 18),
                Some(KData::F32(values(n, 19, -3.0, 3.0))),
                poison(names.len() * n),
            ],
            n,
        );
    }
}

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

/// Every kernel of every example compiles, in both modes, for the options `run` uses
/// (bf16 activations, last-position logits) and those `logits` uses (f32, all positions).
/// Examples whose kernels do not exist yet (linear attention) fail before code generation,
/// at the program stage, for every backend alike.
#[test]
fn every_kernel_of_every_example_compiles() {
    let mut compiled = 0;
    for path in examples() {
        let src = std::fs::read_to_string(&path).expect("readable");
        let name = path.display().to_string();
        let spec = archc_spec::validate::check_source(&name, &src).expect("example checks");
        for options in [
            Options::generation(),
            Options {
                precision: Precision::F32,
                ..Options::default()
            },
        ] {
            let driver = Driver::for_spec(&spec, options);
            for mode in [Mode::Prefill, Mode::Decode] {
                let program = match driver.program(mode) {
                    Ok(p) => p,
                    Err(e) => {
                        assert_eq!(e.stage(), driver::Stage::Program, "{name}: {e}");
                        continue;
                    }
                };
                let code = driver::clif(&program).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(code.kernels().len(), program.kernels.len(), "{name}");
                compiled += program.kernels.len();
            }
        }
    }
    assert!(compiled > 1000, "only {compiled} kernels compiled");
}

/// The text is the CLIF that is compiled: one function per kernel, in order, with the
/// kernel calling convention and only the helpers the kernel calls.
#[test]
fn clif_text_is_one_function_per_kernel() {
    let (mathk, _) = math();
    let ks = vec![
        row_sum(),
        convert("f16_to_f32", Elem::F16, Elem::F32),
        mathk,
    ];
    let text = clif::emit_clif(&ks).expect("text");
    assert_eq!(
        text.matches("\nfunction ").count() + usize::from(text.starts_with("function ")),
        3,
        "{text}"
    );
    assert!(
        text.contains("; kernel 0: row_sum\nfunction %archc_k0_row_sum("),
        "{text}"
    );
    assert!(text.contains("(i64, i64, i64, i64) system_v"), "{text}");
    // The conversion kernel imports the f16 helper and nothing else.
    let second = text.split("; kernel ").nth(2).expect("second kernel");
    assert!(second.contains("%archc_f16_to_f32"), "{second}");
    assert!(!second.contains("%archc_expf"), "{second}");
}
