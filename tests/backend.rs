//! Differential tests of the kernel backends on every fixture under `tests/data/fixtures/`:
//! the CPU executor running kernel programs against the reference graph interpreter and
//! against HF's recorded logits, decode against prefill, one thread against two, and the
//! bf16-weight path (the fixture's weights rounded to bf16 in a temporary directory).
//!
//! Each engine runs the same checks: `llvm` (native code) and `kernel-interp` (the kernel
//! IR interpreter, which checks every access). One test per fixture and engine, so a
//! failure names both; the numbers each check measured are printed (`--nocapture`).

#[macro_use]
mod common;

use archc_runtime::bind::BoundWeights;
use archc_runtime::exec::cpu::{
    f32_to_bf16, CpuModel, Engine, KvState, LlvmOptions, Logits, Options, Origin, Phase, Precision,
};
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::npy;
use archc_runtime::weights::{decode_f32, Checkpoint};
use archc_spec::{DType, Spec};
use common::{check, fixture, fixture_root, load, read_logits, std_dev};
use std::path::Path;

/// Largest allowed |a - b| between two fp32 computations of the same logits.
const TOLERANCE: f32 = 1e-4;
/// One thread against two: the parallel split only changes which thread computes a row.
const THREADS_TOLERANCE: f32 = 1e-6;
/// bf16 weights against the fp32 logits, in units of the fp32 logits' standard deviation.
///
/// Rounding every weight to 8 significant bits moves a logit by 1-4% of the spread, except
/// where it flips a router's top-k choice: then one token's logits move by up to 2.4 std
/// (deepseek_v3_noqlora), 1.0 (glm4_moe), 0.2 (qwen3_moe_nonorm). So the maximum is not a
/// useful bound; the typical token is. Measured over all fixtures: the median over tokens
/// of the token's largest difference is at most 0.077 std (dense models at most 0.029), the
/// mean difference at most 0.050 std (dense at most 0.008). The bounds leave room above
/// those, and a wrong kernel moves most logits by the order of one std. (The bf16 kernels
/// themselves are checked to 1e-4 against the graph interpreter on the same bf16 weights.)
const BF16_MEDIAN_TOKEN_MAX: f64 = 0.15;
const BF16_MEAN: f64 = 0.1;
/// bf16 activations, LLVM against the kernel interpreter (median token max, mean), in
/// logit std: the engines differ only in summation order, which matters where a sum lands
/// near a bf16 rounding boundary and the next activation rounds to a neighbouring value;
/// measured over all fixtures: median token max at most 0.0078 (deepseek_v3_noqlora; 0.0043
/// smollm3, below 5e-5 elsewhere), mean at most 0.0020, largest single difference 0.016.
const BF16_ENGINES: (f64, f64) = (0.02, 0.005);

fn model<'w>(
    case: &str,
    spec: &Spec,
    w: &'w BoundWeights,
    engine: Engine,
    threads: usize,
) -> CpuModel<'w> {
    CpuModel::from_spec_options(spec, w, engine, threads, &code_cache(), &Options::default())
        .unwrap_or_else(|e| panic!("{case}: {} cannot load the model: {e}", engine.as_str()))
}

/// Compiled kernels are cached under the build directory, shared by the tests (the cache
/// writes entries atomically) and kept between runs.
fn code_cache() -> LlvmOptions {
    LlvmOptions {
        cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("archc-code-cache")),
        cc: None,
    }
}

fn prefill(case: &str, m: &mut CpuModel<'_>, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    m.run(Phase::Prefill, &mut cache, tokens)
        .unwrap_or_else(|e| panic!("{case}: prefill failed: {e}"))
}

/// Every token through the decode program, the first included.
fn decode(case: &str, m: &mut CpuModel<'_>, tokens: &[u32]) -> Vec<f32> {
    let mut cache: KvState = m.new_cache();
    let mut out = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        out.extend(
            m.run(Phase::Decode, &mut cache, &[t])
                .unwrap_or_else(|e| panic!("{case}: decode of token {i} failed: {e}")),
        );
    }
    out
}

/// Writes the fixture's checkpoint with every tensor rounded to bf16 (nearest even) and
/// its config next to it.
fn write_bf16_copy(case: &str, from: &Path, to: &Path) {
    let ck = Checkpoint::open(from).unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for name in ck.names() {
        let view = ck.get(name).unwrap_or_else(|e| panic!("{case}: {e}"));
        let values = decode_f32(view.dtype, view.bytes)
            .unwrap_or_else(|| panic!("{case}: tensor {name} is not a float tensor"));
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "BF16", "shape": view.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header)).expect("json");
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(to.join("model.safetensors"), file).expect("write bf16 checkpoint");
    std::fs::copy(from.join("config.json"), to.join("config.json")).expect("copy config");
}

fn check_case(case: &str, engine: Engine) {
    let f = fixture(case);
    let case = &format!("{case} ({})", engine.as_str());
    let w = load(case, &f.spec, &f.dir);
    let reference = logits(&f.spec, &w, &f.tokens, Mode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: graph interpreter failed: {e}"));

    let mut one = model(case, &f.spec, &w, engine, 1);
    let ours = prefill(case, &mut one, &f.tokens);
    check(
        case,
        "prefill vs graph interpreter",
        &ours,
        &reference,
        f.vocab,
        TOLERANCE,
    );
    check(case, "prefill vs HF", &ours, &f.hf, f.vocab, TOLERANCE);
    let decoded = decode(case, &mut one, &f.tokens);
    check(
        case,
        "decode vs prefill",
        &decoded,
        &ours,
        f.vocab,
        TOLERANCE,
    );
    let hf_decode = read_logits(case, &f.dir, "decode_logits.npy", f.tokens.len(), f.vocab);
    check(
        case,
        "decode vs HF decode",
        &decoded,
        &hf_decode,
        f.vocab,
        TOLERANCE,
    );
    let stats = one.param_stats();
    assert_eq!(
        stats.converted, 0,
        "{case}: f32 weights must be used in place: {stats:?}"
    );

    let mut two = model(case, &f.spec, &w, engine, 2);
    let ours2 = prefill(case, &mut two, &f.tokens);
    if engine == Engine::Cranelift {
        // The Cranelift tier computes what the kernel interpreter computes, operation for
        // operation outside the matmul tiles (whose sums it reassociates in four lanes),
        // and its threads split the work without changing a sum's order.
        let interp = prefill(
            case,
            &mut model(case, &f.spec, &w, Engine::KernelInterp, 1),
            &f.tokens,
        );
        check(
            case,
            "prefill vs kernel interpreter",
            &ours,
            &interp,
            f.vocab,
            1e-5,
        );
        assert!(
            bits(&ours2) == bits(&ours),
            "{case}: 2 threads give other bits than 1"
        );
    }
    check(
        case,
        "prefill, 2 threads vs 1",
        &ours2,
        &ours,
        f.vocab,
        THREADS_TOLERANCE,
    );
    let decoded2 = decode(case, &mut two, &f.tokens);
    check(
        case,
        "decode, 2 threads vs 1",
        &decoded2,
        &decoded,
        f.vocab,
        THREADS_TOLERANCE,
    );

    // bf16 weights: same weights in both paths, then against the fp32 logits.
    let tmp = tempfile::tempdir().expect("temp dir");
    write_bf16_copy(case, &f.dir, tmp.path());
    let mut spec16 = f.spec.clone();
    spec16.dtype = DType::Bf16;
    let w16 = load(case, &spec16, tmp.path());
    let reference16 = logits(&spec16, &w16, &f.tokens, Mode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: graph interpreter (bf16) failed: {e}"));
    let mut m16 = model(case, &spec16, &w16, engine, 2);
    let ours16 = prefill(case, &mut m16, &f.tokens);
    let stats = m16.param_stats();
    assert_eq!(
        stats.converted, 0,
        "{case}: bf16 weights must be read as bf16: {stats:?}"
    );
    check(
        case,
        "bf16 prefill vs graph interpreter (bf16)",
        &ours16,
        &reference16,
        f.vocab,
        TOLERANCE,
    );
    let decoded16 = decode(case, &mut m16, &f.tokens);
    check(
        case,
        "bf16 decode vs bf16 prefill",
        &decoded16,
        &ours16,
        f.vocab,
        TOLERANCE,
    );
    check_bf16(case, &ours16, &ours, f.tokens.len(), f.vocab);

    // bf16 activations (`Precision::Bf16`): LLVM against the kernel interpreter running the
    // same program, then against f32 activations on the same bf16 weights.
    let mut act16_model = bf16_model(case, &spec16, &w16, engine);
    let act16 = prefill(case, &mut act16_model, &f.tokens);
    // Decode rounds its one row the same way, so it follows the prefill as closely as
    // the two engines follow each other; except MLA, whose decode multiplies the latent
    // cache by absorbed weights, so it rounds other tensors than the prefill does
    // (measured: median token max 0.015-0.031 std, mean 0.004-0.042, one router flip).
    // The two MLA fixtures are the deepseek_v3 cases.
    let act16_decoded = decode(case, &mut act16_model, &f.tokens);
    let absorbed = case.starts_with("deepseek_v3_");
    close_in_std(
        case,
        "bf16 activations, decode vs prefill",
        (&act16_decoded, &act16),
        (f.tokens.len(), f.vocab),
        if absorbed {
            (BF16_MEDIAN_TOKEN_MAX, BF16_MEAN)
        } else {
            BF16_ENGINES
        },
    );
    if engine != Engine::KernelInterp {
        let interp16 = prefill(
            case,
            &mut bf16_model(case, &spec16, &w16, Engine::KernelInterp),
            &f.tokens,
        );
        // Not to 1e-4: an activation within 1e-6 of a bf16 rounding boundary rounds to
        // neighbouring bf16 values in the two engines, a 2^-8 relative step. Each
        // kernel is checked tightly on equal inputs in compiler/tests/kernel_gemm.rs.
        close_in_std(
            case,
            "bf16 activations, compiled vs kernel interpreter",
            (&act16, &interp16),
            (f.tokens.len(), f.vocab),
            BF16_ENGINES,
        );
    }
    // Measured: median token max at most 0.017 std on dense and MoE fixtures, 0.088 where
    // rounding flips a router's choice (deepseek_v3_noqlora); mean at most 0.050.
    close_in_std(
        case,
        "bf16 vs f32 activations (bf16 weights)",
        (&act16, &ours16),
        (f.tokens.len(), f.vocab),
        (BF16_MEDIAN_TOKEN_MAX, BF16_MEAN),
    );
}

/// A model whose prefill rounds activations to bf16 before its bf16-weight matmuls.
/// The bits of every value, so that equal means identical, NaNs included.
fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn bf16_model<'w>(case: &str, spec: &Spec, w: &'w BoundWeights, engine: Engine) -> CpuModel<'w> {
    let options = Options {
        precision: Precision::Bf16,
        ..Options::default()
    };
    CpuModel::from_spec_options(spec, w, engine, 2, &code_cache(), &options)
        .unwrap_or_else(|e| panic!("{case}: {} (bf16 activations): {e}", engine.as_str()))
}

/// The bf16-weight logits against the fp32 ones: typical token and mean, relative to std.
fn check_bf16(case: &str, bf16: &[f32], fp32: &[f32], rows: usize, vocab: usize) {
    close_in_std(
        case,
        "bf16 vs fp32 weights",
        (bf16, fp32),
        (rows, vocab),
        (BF16_MEDIAN_TOKEN_MAX, BF16_MEAN),
    );
}

/// `got` against `want` (`[rows, vocab]` logits) in units of `want`'s standard deviation:
/// the median over tokens of the token's largest difference and the mean difference must
/// stay within `bounds`.
fn close_in_std(
    case: &str,
    what: &str,
    (bf16, fp32): (&[f32], &[f32]),
    (rows, vocab): (usize, usize),
    (median_bound, mean_bound): (f64, f64),
) {
    let sd = std_dev(fp32);
    let mean = bf16
        .iter()
        .zip(fp32)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / fp32.len() as f64
        / sd;
    let mut row_max: Vec<f64> = (0..rows)
        .map(|r| {
            (0..vocab)
                .map(|v| f64::from((bf16[r * vocab + v] - fp32[r * vocab + v]).abs()))
                .fold(0.0, f64::max)
                / sd
        })
        .collect();
    row_max.sort_by(f64::total_cmp);
    let (median, max) = (row_max[rows / 2], row_max[rows - 1]);
    eprintln!(
        "{case}: {what}, in logit std ({sd:.3}): median token max {median:.4}, mean {mean:.4}, max {max:.4}"
    );
    assert!(
        bf16.iter().all(|x| x.is_finite()),
        "{case}: {what}: logits are not all finite"
    );
    assert!(
        median <= median_bound && mean <= mean_bound,
        "{case}: {what}: the logits moved too far: median token max {median:.4} std \
         (bound {median_bound}), mean {mean:.4} std (bound {mean_bound})"
    );
}

macro_rules! backend_cases {
    ($($case:ident),* $(,)?) => {
        mod llvm {
            $(
                #[test]
                fn $case() {
                    super::check_case(stringify!($case), super::Engine::Llvm);
                }
            )*
        }

        mod cranelift {
            $(
                #[test]
                fn $case() {
                    super::check_case(stringify!($case), super::Engine::Cranelift);
                }
            )*
        }

        mod kernel_interp {
            $(
                #[test]
                fn $case() {
                    super::check_case(stringify!($case), super::Engine::KernelInterp);
                }
            )*
        }

        /// Every fixture directory has a case above, and every case has its directory.
        #[test]
        fn every_fixture_has_a_case() {
            common::assert_every_fixture_listed(
                &[$(stringify!($case)),*],
                "tests/backend.rs",
            );
        }
    };
}

with_compiled_fixtures!(backend_cases);

/// A prefill built for the last position's logits returns exactly the last row of the
/// full prefill's logits, and decoding after it gives exactly what decoding after the full
/// prefill gives (the caches are the same): the `last_row` before the head changes which
/// rows the head computes, not how.
fn check_last_logits(case: &str, engine: Engine) {
    let f = fixture(case);
    let case = &format!("{case} ({})", engine.as_str());
    let w = load(case, &f.spec, &f.dir);
    let mut all = model(case, &f.spec, &w, engine, 2);
    let options = Options {
        logits: Logits::Last,
        ..Options::default()
    };
    let mut last = CpuModel::from_spec_options(&f.spec, &w, engine, 2, &code_cache(), &options)
        .unwrap_or_else(|e| panic!("{case}: cannot load the last-position model: {e}"));
    let (head, tail) = f.tokens.split_at(f.tokens.len() - 2);
    let mut cache_all = all.new_cache();
    let full = all
        .run(Phase::Prefill, &mut cache_all, head)
        .unwrap_or_else(|e| panic!("{case}: prefill failed: {e}"));
    let mut cache_last = last.new_cache();
    let one = last
        .run(Phase::Prefill, &mut cache_last, head)
        .unwrap_or_else(|e| panic!("{case}: last-position prefill failed: {e}"));
    assert_eq!(
        full.len(),
        head.len() * f.vocab,
        "{case}: full prefill rows"
    );
    assert_eq!(
        one.len(),
        f.vocab,
        "{case}: a last-position prefill returns one row"
    );
    same_row(
        case,
        "a prefill",
        &one,
        &full[full.len() - f.vocab..],
        engine,
    );
    for (i, &t) in tail.iter().enumerate() {
        let a = all
            .run(Phase::Decode, &mut cache_all, &[t])
            .unwrap_or_else(|e| panic!("{case}: decode {i} after the full prefill: {e}"));
        let b = last
            .run(Phase::Decode, &mut cache_last, &[t])
            .unwrap_or_else(|e| panic!("{case}: decode {i} after the last-position prefill: {e}"));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len(),
            "{case}: decode {i} differs after a last-position prefill"
        );
    }
    // A second prompt that continues the cache: prefill after `past` tokens, last row only.
    let more = &f.tokens[..2];
    let full = all
        .run(Phase::Prefill, &mut cache_all, more)
        .unwrap_or_else(|e| panic!("{case}: second prefill failed: {e}"));
    let one = last
        .run(Phase::Prefill, &mut cache_last, more)
        .unwrap_or_else(|e| panic!("{case}: second last-position prefill failed: {e}"));
    assert_eq!(one.len(), f.vocab, "{case}: one row after a cached prefix");
    let want = &full[full.len() - f.vocab..];
    same_row(case, "a prefill after a cached prefix", &one, want, engine);
}

/// The last-position logits against the full prefill's last row: bit for bit through the
/// kernel IR interpreter (the same arithmetic in the same order). Native code runs the
/// head of a one-row prefill with the matrix-vector schedule the compiler picks for a
/// constant single row, whose vector reduction order differs from the multi-row tile's,
/// so there the rows agree to rounding (measured: 2.4e-7 at most).
fn same_row(case: &str, what: &str, one: &[f32], want: &[f32], engine: Engine) {
    if engine == Engine::KernelInterp {
        assert!(
            one.iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case}: last-position logits of {what} differ from the full last row"
        );
    } else {
        check(
            case,
            &format!("last-position logits of {what} vs the full last row"),
            one,
            want,
            want.len(),
            THREADS_TOLERANCE,
        );
    }
}

macro_rules! last_logits_cases {
    ($($case:ident),* $(,)?) => {
        mod last_logits {
            $(
                #[test]
                fn $case() {
                    super::check_last_logits(stringify!($case), super::Engine::Llvm);
                }
            )*
            #[test]
            fn llama_kernel_interp() {
                super::check_last_logits("llama", super::Engine::KernelInterp);
            }
            #[test]
            fn gpt2_kernel_interp() {
                super::check_last_logits("gpt2", super::Engine::KernelInterp);
            }
            #[test]
            fn deepseek_v3_qlora_kernel_interp() {
                super::check_last_logits("deepseek_v3_qlora", super::Engine::KernelInterp);
            }
        }
    };
}

// Dense with RMSNorm, LayerNorm and learned positions, sandwich norms with an embedding
// scale, MLA, and MoE with sinks.
last_logits_cases!(llama, qwen3, gpt2, gemma3_text, deepseek_v3_qlora, gpt_oss);

/// A second load of the same model takes the machine code from the disk cache, and runs
/// the same.
#[test]
fn compiled_kernels_come_from_the_disk_cache_the_second_time() {
    let case = "llama";
    let f = fixture(case);
    let w = load(case, &f.spec, &f.dir);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = LlvmOptions {
        cache: Some(dir.path().to_path_buf()),
        cc: None,
    };
    let mut first =
        CpuModel::from_spec_options(&f.spec, &w, Engine::Llvm, 2, &options, &Options::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(first.origins(), [Some(Origin::Built), Some(Origin::Built)]);
    let mut second =
        CpuModel::from_spec_options(&f.spec, &w, Engine::Llvm, 2, &options, &Options::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(second.origins(), [Some(Origin::Cache), Some(Origin::Cache)]);
    let a = prefill(case, &mut first, &f.tokens);
    let b = prefill(case, &mut second, &f.tokens);
    assert_eq!(a, b, "cached code computes other logits");
}

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/backend");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// A spec that declares f8 weights over an f32 checkpoint is refused, naming the tensor.
#[test]
fn f8_spec_over_f32_weights_is_refused() {
    let case = "llama";
    let f = fixture(case);
    let mut spec = f.spec.clone();
    spec.dtype = DType::F8;
    let checkpoint = archc_runtime::weights::Checkpoint::open(&f.dir).expect("checkpoint");
    let err = archc_runtime::bind::bind(&spec, checkpoint)
        .expect_err("f32 checkpoint weights cannot be supplied as f8");
    snapshot("f8_spec_over_f32_weights", &err.to_string());
}

/// `archc logits` with the default backend (llvm) on two threads, the kernel interpreter
/// and the graph interpreter write the same logits; `--threads 0` is refused.
#[test]
fn logits_cli_backends_agree() {
    let dir = fixture_root().join("llama");
    let out = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str], file: &str| {
        let path = out.path().join(file);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
            .args([
                "logits",
                dir.to_str().expect("utf-8 path"),
                "--tokens",
                "5,17,99,3",
            ])
            .arg("--out")
            .arg(&path)
            .args(extra)
            .env("ARCHC_CACHE_DIR", code_cache().cache.expect("a cache dir"))
            .output()
            .expect("archc runs");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            path,
        )
    };
    let read = |p: &Path| npy::read(p).unwrap_or_else(|e| panic!("{e}")).data;
    let (code, err, llvm) = run(&["--threads", "2"], "llvm.npy");
    assert_eq!(code, Some(0), "{err}");
    let (code, err, kinterp) = run(&["--backend", "kernel-interp", "--mode", "decode"], "k.npy");
    assert_eq!(code, Some(0), "{err}");
    let (code, err, interp) = run(&["--backend", "interp"], "interp.npy");
    assert_eq!(code, Some(0), "{err}");
    let (llvm, kinterp, interp) = (read(&llvm), read(&kinterp), read(&interp));
    assert_eq!(llvm.len(), 4 * 128);
    check("cli", "llvm vs interp", &llvm, &interp, 128, TOLERANCE);
    check(
        "cli",
        "kernel-interp decode vs interp",
        &kinterp,
        &interp,
        128,
        TOLERANCE,
    );
    let (code, err, _) = run(&["--threads", "0"], "none.npy");
    assert_eq!(code, Some(2));
    assert_eq!(err.trim(), "archc logits: --threads must be at least 1");
}
