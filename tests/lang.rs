//! The language front end: the `Spec` of every `tests/data/lang/*.arch` and of every
//! `examples/*.arch` (snapshotted as JSON), fmt snapshots (`tests/data/fmt/*.arch`),
//! the fmt properties (idempotent, same `Spec`), `to_arch` round trips, and robustness
//! against truncated and mutated input.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test lang`, then read the snapshots.

use archc_spec::diagnostics::render;
use archc_spec::validate::check_source;
use archc_spec::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.arch` files of a directory, sorted by name.
fn arch_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check_ok(path: &Path) -> Spec {
    let src = read(path);
    let name = path.display().to_string();
    check_source(&name, &src)
        .unwrap_or_else(|d| panic!("{name} does not check:\n{}", render(&name, &src, &d)))
}

fn snapshot(dir: &Path, name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => dir,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// The `Spec` as pretty JSON, with the schedule on one line so it stays readable.
fn spec_text(spec: &Spec) -> String {
    let mut value = serde_json::to_value(spec).expect("a Spec serializes");
    let schedule: Vec<String> = spec.schedule.iter().map(|i| i.to_string()).collect();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("schedule");
    }
    let json = serde_json::to_string_pretty(&value).expect("JSON value prints");
    format!("{json}\nschedule: [{}]\n", schedule.join(", "))
}

fn example_files() -> Vec<PathBuf> {
    arch_files(&root().join("examples"))
}

fn lang_files() -> Vec<PathBuf> {
    arch_files(&root().join("tests/data/lang"))
}

#[test]
fn lang_specs() {
    let dir = root().join("tests/data/lang");
    let files = lang_files();
    assert!(
        files.len() >= 10,
        "expected the lang suite in {}",
        dir.display()
    );
    for path in files {
        snapshot(&dir, &stem(&path), &spec_text(&check_ok(&path)));
    }
}

#[test]
fn example_specs() {
    let dir = root().join("tests/data/lang/examples");
    for path in example_files() {
        snapshot(&dir, &stem(&path), &spec_text(&check_ok(&path)));
    }
}

#[test]
fn fmt_snapshots() {
    let dir = root().join("tests/data/fmt");
    let files = arch_files(&dir);
    assert!(!files.is_empty());
    for path in files {
        let src = read(&path);
        let out = fmt::format_source(&src)
            .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), render("input", &src, &d)));
        snapshot(&dir, &stem(&path), &out);
    }
}

/// fmt is idempotent and keeps the meaning: over every example, lang and fmt input.
#[test]
fn fmt_properties() {
    let mut files = example_files();
    files.extend(lang_files());
    files.extend(arch_files(&root().join("tests/data/fmt")));
    for path in files {
        let src = read(&path);
        let name = path.display().to_string();
        let once = fmt::format_source(&src).unwrap_or_else(|_| panic!("{name} does not parse"));
        let twice = fmt::format_source(&once).unwrap_or_else(|d| {
            panic!(
                "fmt of {name} does not parse:\n{}",
                render(&name, &once, &d)
            )
        });
        assert_eq!(once, twice, "fmt is not idempotent on {name}");
        // Comments survive: the formatted text has the same comment lines.
        let comments = |s: &str| s.matches('#').count();
        assert_eq!(
            comments(&src),
            comments(&once),
            "fmt lost a comment in {name}"
        );
        match (check_source(&name, &src), check_source(&name, &once)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "fmt changed the Spec of {name}"),
            (Err(_), Err(_)) => {}
            _ => panic!("fmt changed whether {name} is valid"),
        }
    }
}

fn assert_round_trip(spec: &Spec, what: &str) {
    let text = print::to_arch(spec);
    let back = check_source(what, &text).unwrap_or_else(|d| {
        panic!(
            "to_arch of {what} does not check:\n{}\n{text}",
            render(what, &text, &d)
        )
    });
    assert_eq!(
        &back, spec,
        "to_arch of {what} reads back differently:\n{text}"
    );
    // The printed text is already formatted canonically... or at least fmt-stable.
    let formatted = fmt::format_source(&text).expect("printed text parses");
    assert_eq!(check_source(what, &formatted).ok().as_ref(), Some(spec));
}

#[test]
fn to_arch_round_trips_examples() {
    let mut files = example_files();
    files.extend(lang_files());
    for path in files {
        assert_round_trip(&check_ok(&path), &path.display().to_string());
    }
}

/// `to_arch` of a few examples, to see what `archc import` writes.
#[test]
fn to_arch_snapshots() {
    let dir = root().join("tests/data/lang/print");
    for name in ["inherit", "hybrid"] {
        let path = root().join("tests/data/lang").join(format!("{name}.arch"));
        snapshot(&dir, name, &print::to_arch(&check_ok(&path)));
    }
}

fn base_attention() -> Attention {
    Attention {
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        v_head_dim: 64,
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
        rope: Some(Rope {
            theta: 10_000.0,
            dims: 64,
            pairing: Pairing::Half,
            scaling: RopeScaling::None,
        }),
    }
}

fn rms(eps: f64) -> Norm {
    Norm {
        kind: NormKind::RmsNorm,
        eps,
        bias: false,
        plus_one: false,
    }
}

fn block(name: &str, mixer: Mixer, ffn: Ffn) -> Block {
    Block {
        name: name.to_string(),
        placement: Placement::Pre,
        norm: rms(1e-6),
        mixer,
        ffn,
    }
}

fn mlp(hidden: u64) -> Ffn {
    Ffn::Mlp(Mlp {
        hidden,
        act: Activation::Silu,
        gated: true,
        bias: false,
    })
}

fn spec(blocks: Vec<Block>, schedule: Vec<usize>) -> Spec {
    Spec {
        name: "hand-built".to_string(),
        family: Family::Qwen3Next,
        vocab: 1000,
        hidden: 512,
        layers: schedule.len() as u64,
        context: 8192,
        dtype: DType::F32,
        tied: false,
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

/// Hand-built specs with every feature the Spec can express.
#[test]
fn to_arch_round_trips_every_feature() {
    let mut cases: Vec<(&str, Spec)> = Vec::new();

    let mut a = base_attention();
    a.mla = Some(Mla {
        q_rank: Some(96),
        kv_rank: 64,
        nope_dim: 32,
        rope_dim: 16,
        v_dim: 24,
    });
    a.kv_heads = 8;
    a.head_dim = 48;
    a.v_head_dim = 24;
    a.rope = Some(Rope {
        theta: 10_000.0,
        dims: 16,
        pairing: Pairing::Interleaved,
        scaling: RopeScaling::Yarn {
            factor: 40.0,
            original_context: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
            attention_factor: Some(0.9),
            truncate: false,
        },
    });
    let mut mla_no_q = a.clone();
    if let Some(m) = &mut mla_no_q.mla {
        m.q_rank = None;
    }
    cases.push((
        "mla",
        spec(
            vec![
                block("a", Mixer::Attention(a), mlp(1024)),
                block("b", Mixer::Attention(mla_no_q), mlp(1024)),
            ],
            vec![0, 1, 1, 0],
        ),
    ));

    let mut l3 = base_attention();
    l3.rope = Some(Rope {
        theta: 500_000.0,
        dims: 32,
        pairing: Pairing::Half,
        scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192,
        },
    });
    l3.bias = AttnBias {
        q: true,
        k: true,
        v: true,
        o: false,
    };
    l3.qk_norm = QkNorm::PerHead(rms(1e-6));
    l3.sinks = true;
    l3.gate = true;
    l3.window = Some(128);
    l3.softcap = Some(50.0);
    l3.scale = Some(0.0625);
    let mut nope = base_attention();
    nope.rope = None;
    nope.chunk = Some(8192);
    nope.temperature = Some(Temperature {
        floor_scale: 8192.0,
        attn_scale: 0.1,
    });
    nope.qk_norm = QkNorm::L2 { eps: 1e-5 };
    nope.causal = false;
    let mut linear = base_attention();
    linear.rope = Some(Rope {
        theta: 10_000.0,
        dims: 64,
        pairing: Pairing::Half,
        scaling: RopeScaling::Linear { factor: 2.0 },
    });
    linear.qk_norm = QkNorm::Full(Norm {
        kind: NormKind::LayerNorm,
        eps: 1e-5,
        bias: false,
        plus_one: false,
    });
    linear.head_dim = 80;
    linear.v_head_dim = 80;
    if let Some(r) = linear.rope.as_mut() {
        r.dims = 40;
    }
    cases.push((
        "attention-options",
        spec(
            vec![
                block("rope", Mixer::Attention(l3), mlp(100)),
                block("nope", Mixer::Attention(nope), mlp(100)),
                block("linear", Mixer::Attention(linear), mlp(200)),
            ],
            vec![0, 0, 0, 1, 2, 0, 0, 0, 1, 2],
        ),
    ));

    let moe = |router: Router, shared: Option<SharedExperts>, act: Activation| {
        Ffn::Moe(Moe {
            experts: 64,
            top_k: 6,
            hidden: 128,
            act,
            gated: true,
            bias: true,
            shared,
            router,
        })
    };
    // With `topk_first` a selection bias, groups and a softmax renormalisation would do
    // nothing (and are refused), so each router sets the fields that apply to it.
    let r1 = Router {
        score: RouterScore::Sigmoid,
        topk_first: false,
        renormalize: true,
        scale: 2.5,
        correction_bias: true,
        groups: Some(RouterGroups { count: 8, keep: 4 }),
        bias: true,
        weight_input: true,
    };
    let r2 = Router {
        score: RouterScore::Softmax,
        topk_first: true,
        renormalize: false,
        scale: 1.0,
        correction_bias: false,
        groups: None,
        bias: false,
        weight_input: false,
    };
    let shared = Some(SharedExperts {
        count: 2,
        hidden: 256,
        gate: true,
    });
    let gdn = Mixer::GatedDeltaNet(GatedDeltaNet {
        k_heads: 16,
        v_heads: 32,
        k_head_dim: 128,
        v_head_dim: 128,
        conv: 4,
    });
    let kda = Mixer::KimiDelta(KimiDelta {
        heads: 32,
        head_dim: 128,
        conv: 3,
    });
    let mut gated_attn = base_attention();
    gated_attn.gate = true;
    gated_attn.qk_norm = QkNorm::PerHead(Norm {
        kind: NormKind::RmsNorm,
        eps: 1e-6,
        bias: false,
        plus_one: true,
    });
    let mut hybrid = spec(
        vec![
            block(
                "linear",
                gdn,
                moe(
                    r1,
                    shared,
                    Activation::ClampedSwiglu {
                        alpha: 1.702,
                        limit: 7.0,
                    },
                ),
            ),
            block("kimi", kda, moe(r2, None, Activation::Gelu)),
            block(
                "full",
                Mixer::Attention(gated_attn),
                moe(
                    r2,
                    None,
                    Activation::ClampedSwiglu {
                        alpha: 1.5,
                        limit: 10.0,
                    },
                ),
            ),
        ],
        vec![0, 0, 0, 2, 0, 0, 0, 2, 1],
    );
    hybrid.blocks[1].placement = Placement::Sandwich;
    hybrid.blocks[1].norm = Norm {
        kind: NormKind::LayerNorm,
        eps: 1e-12,
        bias: true,
        plus_one: false,
    };
    cases.push(("hybrid-moe", hybrid));

    let mut bert = spec(
        vec![block(
            "default",
            Mixer::Attention(base_attention()),
            Ffn::Mlp(Mlp {
                hidden: 2048,
                act: Activation::GeluTanh,
                gated: false,
                bias: true,
            }),
        )],
        vec![0; 4],
    );
    bert.blocks[0].placement = Placement::PostLn;
    bert.learned_positions = Some(1024);
    bert.context = 512;
    bert.token_types = Some(2);
    bert.embed_norm = Some(Norm {
        kind: NormKind::LayerNorm,
        eps: 1e-12,
        bias: true,
        plus_one: false,
    });
    bert.final_norm = None;
    bert.embed_scale = Some(22.627416997969522);
    bert.logit_softcap = Some(30.0);
    bert.tied = true;
    bert.family = Family::Gpt2;
    bert.dtype = DType::F16;
    cases.push(("bert-like", bert));

    for (name, s) in &cases {
        assert_round_trip(s, name);
    }
}

/// Every prefix of one example, every 7th prefix of the others, and many byte
/// mutations of each: parsing and validation never panic.
#[test]
fn robust_to_truncation_and_mutation() {
    let mut files = example_files();
    files.extend(lang_files());
    let run = |bytes: &[u8]| {
        let src = String::from_utf8_lossy(bytes).into_owned();
        let result = std::panic::catch_unwind(|| {
            let r = check_source("x.arch", &src);
            if let Err(d) = &r {
                let _ = render("x.arch", &src, d);
            }
            if let Ok(f) = archc_spec::parse::parse(&src) {
                let _ = fmt::format_file(&f);
            }
        });
        assert!(result.is_ok(), "panic on input:\n{src}");
    };
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}[]()=,.#\"\n _-+*/:0123456789eaxlayersfirst";
    for (k, path) in files.iter().enumerate() {
        let src = read(path).into_bytes();
        let step = if k == 0 { 1 } else { 7 };
        for end in (0..=src.len()).step_by(step) {
            run(&src[..end]);
        }
        for _ in 0..200 {
            let mut m = src.clone();
            let edits = 1 + next() % 3;
            for _ in 0..edits {
                if m.is_empty() {
                    break;
                }
                let at = (next() % m.len() as u64) as usize;
                match next() % 3 {
                    0 => {
                        m.remove(at);
                    }
                    1 => m.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
                    _ => m[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                }
            }
            run(&m);
        }
    }
}
