//! Statistics of real models against the parameter counts HF reports for them, and
//! snapshots of `archc stats` output for the `.arch` files under `tests/data/stats/`.

use archc_spec::stats::{stats, thousands, Options};
use archc_spec::tensors::{params, tensors};
use archc_spec::*;

/// Builders for hand-written Specs: sizes are what the published configs say.
mod build {
    use archc_spec::*;

    pub fn rms(eps: f64) -> Norm {
        Norm {
            kind: NormKind::RmsNorm,
            eps,
            bias: false,
            plus_one: false,
        }
    }

    pub fn rope(theta: f64, dims: u64) -> Rope {
        Rope {
            theta,
            dims,
            pairing: Pairing::Half,
            scaling: RopeScaling::None,
        }
    }

    pub fn attn(heads: u64, kv_heads: u64, head_dim: u64) -> Attention {
        Attention {
            heads,
            kv_heads,
            head_dim,
            v_head_dim: head_dim,
            mla: None,
            bias: AttnBias::default(),
            qk_norm: QkNorm::None,
            causal: true,
            window: None,
            chunk: None,
            sinks: false,
            softcap: None,
            scale: None,
            gate: false,
            temperature: None,
            rope: Some(rope(10_000.0, head_dim)),
        }
    }

    pub fn mla(
        heads: u64,
        q_rank: Option<u64>,
        kv_rank: u64,
        nope: u64,
        rope_dim: u64,
        v: u64,
    ) -> Attention {
        Attention {
            v_head_dim: v,
            mla: Some(Mla {
                q_rank,
                kv_rank,
                nope_dim: nope,
                rope_dim,
                v_dim: v,
            }),
            rope: Some(rope(10_000.0, rope_dim)),
            ..attn(heads, heads, nope + rope_dim)
        }
    }

    pub fn mlp(hidden: u64) -> Ffn {
        Ffn::Mlp(Mlp {
            hidden,
            act: Activation::Silu,
            gated: true,
            bias: false,
        })
    }

    pub fn router() -> Router {
        Router {
            score: RouterScore::Softmax,
            topk_first: false,
            renormalize: true,
            scale: 1.0,
            correction_bias: false,
            groups: None,
            bias: false,
            weight_input: false,
        }
    }

    pub fn moe(experts: u64, top_k: u64, hidden: u64) -> Moe {
        Moe {
            experts,
            top_k,
            hidden,
            act: Activation::Silu,
            gated: true,
            bias: false,
            shared: None,
            router: router(),
        }
    }

    pub fn block(name: &str, mixer: Mixer, ffn: Ffn) -> Block {
        Block {
            name: name.to_string(),
            placement: Placement::Pre,
            norm: rms(1e-6),
            mixer,
            ffn,
        }
    }

    /// A model of `blocks`, layer `i` running `blocks[schedule[i]]`.
    pub fn model(
        name: &str,
        family: Family,
        vocab: u64,
        hidden: u64,
        tied: bool,
        blocks: Vec<Block>,
        schedule: Vec<usize>,
    ) -> Spec {
        Spec {
            name: name.to_string(),
            family,
            vocab,
            hidden,
            layers: schedule.len() as u64,
            context: 4096,
            dtype: DType::Bf16,
            tied,
            embed_scale: None,
            learned_positions: None,
            token_types: None,
            embed_norm: None,
            final_norm: Some(rms(1e-6)),
            logit_softcap: None,
            mtp: 0,
            blocks,
            schedule,
        }
    }

    pub fn llama_3_1_8b() -> Spec {
        let b = block("default", Mixer::Attention(attn(32, 8, 128)), mlp(14_336));
        model(
            "llama-3.1-8b",
            Family::Llama,
            128_256,
            4096,
            false,
            vec![b],
            vec![0; 32],
        )
    }

    pub fn qwen3_0_6b() -> Spec {
        let mut a = attn(16, 8, 128);
        a.qk_norm = QkNorm::PerHead(rms(1e-6));
        let b = block("default", Mixer::Attention(a), mlp(3072));
        model(
            "qwen3-0.6b",
            Family::Qwen3,
            151_936,
            1024,
            true,
            vec![b],
            vec![0; 28],
        )
    }

    pub fn qwen3_235b_a22b() -> Spec {
        let mut a = attn(64, 4, 128);
        a.qk_norm = QkNorm::PerHead(rms(1e-6));
        let b = block("default", Mixer::Attention(a), Ffn::Moe(moe(128, 8, 1536)));
        model(
            "qwen3-235b-a22b",
            Family::Qwen3Moe,
            151_936,
            4096,
            false,
            vec![b],
            vec![0; 94],
        )
    }

    pub fn deepseek_v3() -> Spec {
        let a = mla(128, Some(1536), 512, 128, 64, 128);
        let mut m = moe(256, 8, 2048);
        m.shared = Some(SharedExperts {
            count: 1,
            hidden: 2048,
            gate: false,
        });
        m.router.score = RouterScore::Sigmoid;
        m.router.correction_bias = true;
        m.router.groups = Some(RouterGroups { count: 8, keep: 4 });
        m.router.scale = 2.5;
        let dense = block("dense", Mixer::Attention(a.clone()), mlp(18_432));
        let sparse = block("moe", Mixer::Attention(a), Ffn::Moe(m));
        let mut schedule = vec![0; 3];
        schedule.extend(vec![1; 58]);
        let mut s = model(
            "deepseek-v3",
            Family::DeepseekV3,
            129_280,
            7168,
            false,
            vec![dense, sparse],
            schedule,
        );
        s.dtype = DType::F8;
        s
    }

    pub fn gpt_oss_20b() -> Spec {
        let mut a = attn(64, 8, 64);
        a.bias = AttnBias {
            q: true,
            k: true,
            v: true,
            o: true,
        };
        a.sinks = true;
        let mut m = moe(32, 4, 2880);
        m.act = Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        };
        m.bias = true;
        m.router.bias = true;
        m.router.topk_first = true;
        let mut local = a.clone();
        local.window = Some(128);
        let sliding = block("sliding", Mixer::Attention(local), Ffn::Moe(m.clone()));
        let full = block("full", Mixer::Attention(a), Ffn::Moe(m));
        let schedule = (0..24).map(|i| i % 2).collect();
        model(
            "gpt-oss-20b",
            Family::GptOss,
            201_088,
            2880,
            false,
            vec![sliding, full],
            schedule,
        )
    }
}

fn at(spec: &Spec, context: u64) -> archc_spec::stats::Stats {
    stats(
        spec,
        Options {
            context,
            kv_dtype: DType::Bf16,
        },
    )
}

#[test]
fn llama_3_1_8b_matches_hf_count() {
    let s = at(&build::llama_3_1_8b(), 8192);
    assert_eq!(s.params_total, 8_030_261_248);
    assert_eq!(s.params_active, s.params_total);
    // 32 layers x 8 KV heads x (128 + 128) values x 2 bytes.
    assert_eq!(s.kv_bytes_per_token, 32 * 8 * 256 * 2);
    assert_eq!(s.kv_bytes_total, s.kv_bytes_per_token * 8192);
}

#[test]
fn qwen3_0_6b_matches_hf_count_with_tied_head_counted_once() {
    let spec = build::qwen3_0_6b();
    let s = at(&spec, 4096);
    assert_eq!(s.params_total, 596_049_920);
    assert_eq!(params(&spec), 596_049_920);
    assert!(!tensors(&spec).iter().any(|t| t.name == "lm_head.weight"));
    // The tied head still costs a matmul.
    let head_flops = 2 * 151_936 * 1024;
    let embed = 151_936 * 1024;
    let norms: u64 = 28 * (2 * 1024 + 2 * 128) + 1024;
    let matmul = 596_049_920 - embed - norms;
    let attention = 28 * 2 * 16 * 256 * 4096;
    assert_eq!(s.flops_per_token, 2 * matmul + head_flops + attention);
}

#[test]
fn qwen3_235b_a22b_matches_hf_counts() {
    let s = at(&build::qwen3_235b_a22b(), 4096);
    assert_eq!(s.params_total, 235_093_634_560);
    assert_eq!(s.params_active, 22_190_763_520);
}

#[test]
fn deepseek_v3_matches_hf_counts_and_caches_the_latent() {
    let s = at(&build::deepseek_v3(), 4096);
    assert_eq!(s.params_total, 671_026_404_352);
    assert_eq!(s.params_active, 37_552_282_624);
    // MLA caches kv_rank + rope_dim values per layer.
    assert_eq!(s.kv_bytes_per_token, 61 * (512 + 64) * 2);
    // f8 weights, plus the 58 layers' correction biases that are not parameters.
    assert_eq!(s.weight_bytes, s.params_total + 58 * 256);
}

#[test]
fn gpt_oss_20b_matches_hf_counts_and_caps_sliding_layers() {
    let s = at(&build::gpt_oss_20b(), 131_072);
    assert_eq!(s.params_total, 20_914_757_184);
    assert_eq!(s.params_active, 4_187_440_704);
    let per_layer = 8 * 128 * 2;
    assert_eq!(s.kv_bytes_per_token, 24 * per_layer);
    assert_eq!(
        s.kv_bytes_total,
        12 * per_layer * 128 + 12 * per_layer * 131_072
    );
}

#[test]
fn breakdown_sums_to_total() {
    for spec in [
        build::llama_3_1_8b(),
        build::qwen3_0_6b(),
        build::qwen3_235b_a22b(),
        build::deepseek_v3(),
        build::gpt_oss_20b(),
    ] {
        let s = at(&spec, 1024);
        let sum: u64 = s.breakdown.iter().map(|(_, n)| n).sum();
        assert_eq!(sum, s.params_total, "{}", spec.name);
    }
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(671_026_404_352), "671,026,404,352");
}

/// `archc stats` output (table and JSON) for every `.arch` file under `tests/data/stats/`,
/// snapshotted next to it; the table at the model's context, the JSON at 8192 tokens.
#[test]
fn stats_output_snapshots() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/stats");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/stats")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let src = std::fs::read_to_string(&path).expect("readable .arch");
        let spec = match archc_spec::validate::check_source(&name, &src) {
            Ok(s) => s,
            Err(d) => panic!("{}", archc_spec::diagnostics::render(&name, &src, &d)),
        };
        let table = stats(&spec, Options::for_spec(&spec)).render();
        let json = stats(
            &spec,
            Options {
                context: 8192,
                kv_dtype: DType::Bf16,
            },
        )
        .to_json();
        let text = format!(
            "{table}\n--json --context 8192\n{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        insta::with_settings!({
            snapshot_path => dir.clone(),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, text);
        });
    }
}
