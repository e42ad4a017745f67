//! GPU execution through the CUDA runtime: the device probe fails cleanly without a
//! driver or device, and where a device is present, kernel programs of tiny models run
//! on it (PTX from the NVPTX backend) and match the kernel IR interpreter in prefill and
//! in a decode step after a cache. Without a device the GPU tests print that they were
//! skipped and why.

use archc_compiler::interp::{RandomWeights, WeightSource};
use archc_compiler::kernel::interp::{run_program, KBufData};
use archc_compiler::kernel::{lower::program, BufferKind, Elem, Program};
use archc_compiler::passes::optimize;
use archc_compiler::{lower, testing, Mode};
use archc_runtime::exec::cuda::{probe, CudaError, CudaProgram};
use std::collections::BTreeMap;

#[test]
fn probe_fails_cleanly_for_a_missing_device() {
    // No machine has this many devices: with or without a driver the answer is an error,
    // never a panic.
    let e = probe(usize::MAX).expect_err("no such device");
    assert!(
        matches!(e, CudaError::NoDriver | CudaError::NoDevice { .. }),
        "{e}"
    );
    assert!(!e.to_string().is_empty());
}

/// Device 0, or `None` after printing why the GPU tests are skipped.
fn device() -> Option<()> {
    match probe(0) {
        Ok(info) => {
            eprintln!("running on {} (sm {:?})", info.name, info.capability);
            Some(())
        }
        Err(e) => {
            eprintln!("skipped: GPU test needs a CUDA device: {e}");
            None
        }
    }
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(xs: &[i32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Runs `p` on the kernel interpreter and on the GPU with the same inputs and compares
/// every output.
fn check(p: Program, weights: &RandomWeights, tokens: &[u32], past: usize) {
    let toks: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let pos: Vec<i32> = (past..past + tokens.len()).map(|x| x as i32).collect();
    let mut params: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut caches: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for b in &p.buffers {
        match b.kind {
            BufferKind::Param => {
                assert_eq!(b.elem, Elem::F32, "tiny models have f32 weights");
                let w = weights
                    .get(&b.name)
                    .expect("random weights cover the graph");
                params.insert(b.name.clone(), to_f32(w.bytes));
            }
            BufferKind::Input if b.name.starts_with("cache.") => {
                let n: usize = b.shape.iter().map(|d| d.eval(tokens.len(), past)).product();
                let v = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect();
                caches.insert(b.name.clone(), v);
            }
            _ => {}
        }
    }
    // The reference: the kernel IR interpreter on one thread.
    let mut inputs: BTreeMap<String, KBufData> = BTreeMap::new();
    for (name, v) in &params {
        inputs.insert(name.clone(), KBufData::F32Ro(v));
    }
    for (name, v) in &caches {
        inputs.insert(name.clone(), KBufData::F32Ro(v));
    }
    inputs.insert("tokens".into(), KBufData::I32Ro(&toks));
    inputs.insert("positions".into(), KBufData::I32Ro(&pos));
    let want = run_program(&p, inputs, tokens.len() as i64, past as i64, 1)
        .unwrap_or_else(|e| panic!("{}: kernel interpreter: {e}", p.name));

    let param_bytes: BTreeMap<String, Vec<u8>> = params
        .iter()
        .map(|(k, v)| (k.clone(), f32_bytes(v)))
        .collect();
    let param_refs: BTreeMap<String, &[u8]> = param_bytes
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    let mut input_bytes: BTreeMap<String, Vec<u8>> = caches
        .iter()
        .map(|(k, v)| (k.clone(), f32_bytes(v)))
        .collect();
    input_bytes.insert("tokens".into(), i32_bytes(&toks));
    input_bytes.insert("positions".into(), i32_bytes(&pos));
    let input_refs: BTreeMap<String, &[u8]> = input_bytes
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    let name = p.name.clone();
    let gpu = CudaProgram::new(p, 0, &param_refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = gpu
        .run(&input_refs, tokens.len(), past)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (out, w) in &want {
        let w = w.to_f32();
        let g = to_f32(
            got.get(out)
                .unwrap_or_else(|| panic!("{name}: no output `{out}`")),
        );
        assert_eq!(w.len(), g.len(), "{name}: `{out}` length");
        let scale = testing::max_abs(&w).max(1.0);
        let diff = testing::max_abs_diff(&w, &g);
        eprintln!("{name} `{out}`: max abs diff {diff:e} (scale {scale})");
        assert!(diff <= 1e-4 * scale, "{name}: `{out}` differs by {diff}");
    }
}

#[test]
fn tiny_llama_on_the_gpu_matches_the_kernel_interpreter() {
    let Some(()) = device() else { return };
    let spec = testing::llama(testing::swiglu(100));
    let prefill = lower(&spec, Mode::Prefill).expect("lowers");
    let decode = lower(&spec, Mode::Decode).expect("lowers");
    let weights = RandomWeights::for_graphs(&[&prefill, &decode], 7);
    let tokens = &testing::PROMPT[..9];
    check(
        program(&optimize(&prefill)).expect("kernels"),
        &weights,
        tokens,
        0,
    );
    check(
        program(&optimize(&decode)).expect("kernels"),
        &weights,
        &tokens[..1],
        8,
    );
}
