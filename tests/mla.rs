//! Multi-head latent attention keeps only its compressed latent in the KV cache: for every
//! MLA model (the DeepSeek V3 and Kimi K2 examples, the tiny tests/data/mla/*.arch), the
//! cache inputs are one `cache.{i}.kv` of `[past, kv_rank + rope_dim]` per layer — the size
//! `archc stats` reports — and the decode graph, before and after the passes, never holds
//! more than one latent row per cached token (so no `[past, heads, dim]` key or value),
//! attending with the absorbed up-projections as a parameter of the (flash) attention op.
//! The fused decode graph and the MLA flash-attention kernel of each tiny model are
//! snapshotted.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test mla`, then read the snapshots.

use archc_compiler::ir::{Dim, Graph, MlaAttn, Op};
use archc_compiler::kernel::lower::program;
use archc_compiler::{lower, passes, verify, Mode};
use archc_spec::{Mixer, Spec};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Spec {
    let src = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    archc_spec::validate::check_source(&path.display().to_string(), &src)
        .unwrap_or_else(|e| panic!("{} does not check: {e:?}", path.display()))
}

fn tiny_specs() -> Vec<PathBuf> {
    let dir = root().join("tests/data/mla");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

fn mla_specs() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("examples/deepseek-v3.arch"),
        root().join("examples/kimi-k2.arch"),
    ];
    files.extend(tiny_specs());
    files
}

/// The MLA parameters of every layer (all layers of these models use MLA).
fn layer_mla(spec: &Spec) -> Vec<archc_spec::Mla> {
    (0..spec.layers as usize)
        .map(|l| match &spec.block(l).mixer {
            Mixer::Attention(a) => a.mla.expect("an MLA layer"),
            _ => panic!("layer {l} is not attention"),
        })
        .collect()
}

/// Numbers per cached token of a dim list: the product of the constant dims when some dim
/// grows with `past`, else `None`.
fn per_past_token(shape: &[Dim]) -> Option<u64> {
    shape
        .iter()
        .any(|d| d.past > 0)
        .then(|| shape.iter().filter_map(|d| d.as_const()).product())
}

/// Cache inputs are exactly `cache.{i}.kv : [past, kv_rank + rope_dim]`, one per layer.
fn check_cache_inputs(name: &str, g: &Graph, mla: &[archc_spec::Mla]) {
    let caches: Vec<(String, Vec<Dim>)> = g
        .inputs()
        .filter(|(_, n)| n.is_carried())
        .map(|(id, n)| (n.to_string(), g.node(id).ty.shape.clone()))
        .collect();
    let want: Vec<(String, Vec<Dim>)> = mla
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("cache.{i}.kv"),
                vec![Dim::PAST, Dim::c(m.kv_rank + m.rope_dim)],
            )
        })
        .collect();
    assert_eq!(caches, want, "{name} {:?}: cache inputs", g.mode);
    for (n, _) in &want {
        let io = n.parse().expect("an output name");
        assert!(g.output(&io).is_some(), "{name}: `{n}` is not returned");
    }
}

/// No value of the decode graph holds more numbers per cached token than one latent row.
fn check_no_expansion(name: &str, g: &Graph, mla: &[archc_spec::Mla], heads: u64) {
    let widest = mla
        .iter()
        .map(|m| m.kv_rank + m.rope_dim)
        .max()
        .unwrap_or(0);
    for (i, n) in g.nodes.iter().enumerate() {
        let shape = &n.ty.shape;
        if let Some(k) = per_past_token(shape) {
            assert!(
                k <= widest,
                "{name}: %{i} ({}) holds {k} numbers per cached token, more than a latent row of {widest}",
                n.ty
            );
        }
        let per_head_kv = shape.len() == 3 && shape[0].past > 0 && shape[1] == Dim::c(heads);
        assert!(
            !per_head_kv,
            "{name}: %{i} is a per-head key or value {}",
            n.ty
        );
    }
}

#[test]
fn decode_attends_over_the_latent_cache_only() {
    for path in mla_specs() {
        let name = path.display().to_string();
        let spec = load(&path);
        let mla = layer_mla(&spec);
        let heads = match &spec.block(0).mixer {
            Mixer::Attention(a) => a.heads,
            _ => unreachable!("checked by layer_mla"),
        };
        assert!(heads > 1, "{name}: the shape check needs several heads");
        for mode in [Mode::Prefill, Mode::Decode] {
            let g = lower(&spec, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
            verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_cache_inputs(&name, &g, &mla);
        }
        let dec = lower(&spec, Mode::Decode).expect("lowered above");
        let fused = passes::optimize(&dec);
        verify(&fused).unwrap_or_else(|e| panic!("{name} after the passes: {e}"));
        check_no_expansion(&name, &dec, &mla, heads);
        check_no_expansion(&format!("{name} (fused)"), &fused, &mla, heads);

        // One absorbed attention per layer, before the passes plain, after them flash.
        let want: Vec<MlaAttn> = mla
            .iter()
            .map(|m| MlaAttn {
                rank: m.kv_rank,
                nope: m.nope_dim,
                v: m.v_dim,
            })
            .collect();
        let plain: Vec<MlaAttn> = dec
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Attention(a) => Some(a.mla.expect("decode attention is absorbed")),
                _ => None,
            })
            .collect();
        assert_eq!(plain, want, "{name}: absorbed attention ops");
        let flash: Vec<MlaAttn> = fused
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::FlashAttention(f) => Some(f.attn.mla.expect("decode flash is absorbed")),
                Op::Attention(_) => panic!("{name}: an attention was left unfused"),
                _ => None,
            })
            .collect();
        assert_eq!(flash, want, "{name}: fused absorbed attention ops");
    }
}

/// The cache the graphs keep per token is what `archc stats` reports.
#[test]
fn cache_size_matches_stats() {
    for path in mla_specs() {
        let spec = load(&path);
        let stats = archc_spec::stats::stats(&spec, archc_spec::stats::Options::for_spec(&spec));
        let g = lower(&spec, Mode::Decode).expect("lowers");
        let numbers: u64 = g
            .inputs()
            .filter(|(_, n)| n.is_carried())
            .filter_map(|(id, _)| per_past_token(&g.node(id).ty.shape))
            .sum();
        let bytes = match stats.kv_dtype {
            archc_spec::DType::F32 => 4,
            archc_spec::DType::F16 | archc_spec::DType::Bf16 => 2,
            archc_spec::DType::F8 => 1,
        };
        assert_eq!(
            numbers * bytes,
            stats.kv_bytes_per_token,
            "{}: cache numbers per token",
            path.display()
        );
    }
}

#[test]
fn fused_decode_graph_and_kernel_snapshots() {
    for path in tiny_specs() {
        let spec = load(&path);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let dec = lower(&spec, Mode::Decode).expect("lowers");
        let fused = passes::optimize(&dec);
        let p = program(&fused).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kernels: Vec<String> = p
            .kernels
            .iter()
            .filter(|k| k.name.starts_with("flash_attention"))
            .map(|k| k.to_string())
            .collect();
        assert!(!kernels.is_empty(), "{name}: no flash attention kernel");
        let text = format!(
            "## fused decode graph\n{fused}\n## flash attention kernels\n{}",
            kernels.join("\n")
        );
        insta::with_settings!({snapshot_path => root().join("tests/data/mla"), prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, text);
        });
    }
}
