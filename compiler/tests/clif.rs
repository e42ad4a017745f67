//! The Cranelift tier (`codegen::clif`): hand-built kernels of every operation and element
//! type give the kernel interpreter's bits exactly, on 1, 2 and 3 threads; every kernel of
//! every example compiles, under the CPU options `run` and `logits` use; and the CLIF text
//! is what gets compiled.

mod common;

use archc_compiler::codegen::clif;
use archc_compiler::driver::{self, Driver, Options, Precision};
use archc_compiler::kernel::Elem;
use archc_compiler::Mode;
use common::*;
use std::path::Path;

#[test]
fn compiled_kernels_give_the_kernel_interpreters_bits() {
    let ks = standard_kernels();
    let prog = clif::compile(&ks).expect("Cranelift compiles the kernels");
    assert_eq!(prog.kernels().len(), ks.len());
    // Bit for bit: outside matmul tiles the tier computes operation for operation what
    // the interpreter does.
    check_standard_kernels(&prog, &ks, 0.0);
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
