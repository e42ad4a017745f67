//! `archc bench MODEL --compile-only`: the LLVM and Cranelift tiers compiling the same
//! kernel programs, side by side (`archc_runtime::bench::bench_compile`).

use super::bench::Args;
use crate::failure::Failure;
use archc_compiler::driver::Options;
use archc_runtime::bench::{bench_compile, CompileBench};
use std::process::ExitCode;

pub fn run(args: &Args) -> ExitCode {
    let spec = match super::load::spec(&args.model, "bench") {
        Ok(s) => s,
        Err(code) => return ExitCode::from(code),
    };
    let options = Options {
        precision: args.precision.precision(),
        ..Options::generation()
    };
    let result = bench_compile(&spec, options, args.repeat)
        .map_err(|e| Failure::new(e.to_string()))
        .and_then(|b| {
            let text = if args.json {
                format!("{}\n", json(&spec.name, &b))
            } else {
                table(&spec.name, &b)
            };
            crate::io::print(&text)
        });
    crate::failure::exit(result, "bench")
}

fn json(name: &str, b: &CompileBench) -> serde_json::Value {
    serde_json::json!({
        "model": name,
        "kernels": b.kernels,
        "lower_s": b.lower_s,
        "llvm_s": b.llvm_s,
        "cranelift_s": b.cranelift_s,
        "llvm_median_s": b.llvm_median(),
        "cranelift_median_s": b.cranelift_median(),
        "cranelift_over_llvm": b.ratio(),
    })
}

fn table(name: &str, b: &CompileBench) -> String {
    format!(
        "{name}: {} kernels (prefill and decode), lowering {:.3} s\n\
         compile, median of {}: LLVM {:.3} s, Cranelift {:.3} s, Cranelift/LLVM {:.3}\n",
        b.kernels,
        b.lower_s,
        b.llvm_s.len(),
        b.llvm_median(),
        b.cranelift_median(),
        b.ratio()
    )
}
