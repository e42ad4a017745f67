//! A field the language accepts changes the computation or is refused: here, attention
//! temperature tuning, which lowering applies to NoPE layers only, is an error (located in
//! `.arch` text, by path in `check_spec`) wherever it would be ignored; and `check_spec`
//! refuses the other fields lowering would ignore (MLA's gate, QK-norm and split k/v bias;
//! a router's selection bias, groups and softmax renormalisation after `topk_first`; YaRN's
//! `mscale` and `mscale_all_dim` where they set nothing; a norm's field of the other kind),
//! which `compiler/tests/fields` checks in `.arch` text.

use archc_spec::diagnostics::{render, Diagnostic};
use archc_spec::validate::{check_source, check_spec};
use archc_spec::{Ffn, Mixer, QkNorm, RopeScaling, RouterGroups, Spec, Temperature};

const MODEL: &str = "model \"m\" {\n  vocab = 1000\n  hidden = 64\n  layers = 2\n}\n";

fn errors(src: &str) -> Vec<Diagnostic> {
    match check_source("t.arch", src) {
        Ok(_) => panic!("expected errors, the file checks clean:\n{src}"),
        Err(d) => d,
    }
}

/// Asserts one error about temperature with RoPE, at the `temperature` key of `src` (the
/// `n`-th from 0), and returns its rendering.
fn assert_refused(src: &str, n: usize) -> String {
    let d = errors(src);
    let shown = render("t.arch", src, &d);
    assert_eq!(d.len(), 1, "{shown}");
    assert_eq!(
        d[0].message, "`temperature` applies only to NoPE layers, and this attention has RoPE",
        "{shown}"
    );
    let at = src
        .match_indices("temperature")
        .nth(n)
        .map(|(i, _)| i)
        .expect("temperature is in the text");
    assert_eq!(d[0].primary.span.start, at, "{shown}");
    let line = src[..at].matches('\n').count() + 1;
    let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert!(
        shown.starts_with(&format!("t.arch:{line}:{col}: error:")),
        "{shown}"
    );
    shown
}

#[test]
fn temperature_with_default_rope_is_refused() {
    let src = format!(
        "{MODEL}block {{\n  attention {{\n    heads = 4\n    \
         temperature {{ floor_scale = 8192, attn_scale = 0.1 }}\n  }}\n  \
         mlp {{ hidden = 128 }}\n}}\n"
    );
    let shown = assert_refused(&src, 0);
    assert!(shown.contains("unless it says `rope = none`"), "{shown}");
}

#[test]
fn temperature_with_given_rope_is_refused() {
    let src = format!(
        "{MODEL}block {{\n  attention {{\n    heads = 4\n    rope {{ theta = 1e6 }}\n    \
         temperature {{ floor_scale = 8192, attn_scale = 0.1 }}\n  }}\n  \
         mlp {{ hidden = 128 }}\n}}\n"
    );
    let shown = assert_refused(&src, 0);
    assert!(shown.contains("RoPE given here"), "{shown}");
}

#[test]
fn temperature_inherited_by_a_rope_layer_is_refused() {
    // The parent is a NoPE layer with temperature; the child turns RoPE back on.
    let src = format!(
        "{MODEL}block nope {{\n  attention {{\n    heads = 4\n    rope = none\n    \
         temperature {{ floor_scale = 8192, attn_scale = 0.1 }}\n  }}\n  \
         mlp {{ hidden = 128 }}\n}}\n\
         block roped : nope {{\n  attention.rope {{ theta = 1e6 }}\n}}\n\
         schedule {{ repeat [nope, roped] }}\n"
    );
    assert_refused(&src, 0);
}

#[test]
fn temperature_on_nope_layers_is_kept() {
    let src = format!(
        "{MODEL}block {{\n  attention {{\n    heads = 4\n    rope = none\n    \
         temperature {{ floor_scale = 8192, attn_scale = 0.1 }}\n  }}\n  \
         mlp {{ hidden = 128 }}\n}}\n"
    );
    let spec =
        check_source("t.arch", &src).unwrap_or_else(|d| panic!("{}", render("t.arch", &src, &d)));
    let Mixer::Attention(a) = &spec.blocks[0].mixer else {
        panic!("an attention block");
    };
    assert_eq!(
        a.temperature,
        Some(Temperature {
            floor_scale: 8192.0,
            attn_scale: 0.1
        })
    );
    assert!(a.rope.is_none());
}

fn example(name: &str) -> Spec {
    let path = format!("{}/../examples/{name}.arch", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the example {path} is unreadable: {e}"));
    check_source(&path, &src).unwrap_or_else(|d| panic!("{}", render(&path, &src, &d)))
}

fn llama4() -> Spec {
    example("llama-4-maverick")
}

/// A change to a spec's part, and the problem `check_spec` must report for it.
type Case<T> = (&'static str, fn(&mut T));

/// Applies `change` to the first block's attention and returns what `check_spec` says.
fn attention_problems(spec: &Spec, change: impl Fn(&mut archc_spec::Attention)) -> Vec<String> {
    let mut spec = spec.clone();
    let Mixer::Attention(a) = &mut spec.blocks[0].mixer else {
        panic!("the first block has attention");
    };
    change(a);
    check_spec(&spec).err().unwrap_or_default()
}

#[test]
fn check_spec_refuses_what_mla_ignores() {
    let spec = example("deepseek-v3");
    assert_eq!(check_spec(&spec), Ok(()));
    let cases: [Case<archc_spec::Attention>; 3] = [
        (".gate: does not apply to mla", |a| a.gate = true),
        (".qk_norm: does not apply to mla", |a| {
            a.qk_norm = QkNorm::L2 { eps: 1e-6 }
        }),
        (".bias: with mla, keys and values share", |a| {
            a.bias.k = true
        }),
    ];
    for (expected, change) in cases {
        let problems = attention_problems(&spec, change);
        assert!(
            problems.len() == 1 && problems[0].contains(expected),
            "{expected}: {problems:?}"
        );
    }
}

/// DeepSeek V3's YaRN sets `mscale` and `mscale_all_dim`; change the scaling's fields.
fn yarn_problems(spec: &Spec, change: fn(&mut f64, &mut f64, &mut Option<f64>)) -> Vec<String> {
    attention_problems(spec, |a| {
        let Some(RopeScaling::Yarn {
            mscale,
            mscale_all_dim,
            attention_factor,
            ..
        }) = a.rope.as_mut().map(|r| &mut r.scaling)
        else {
            panic!("DeepSeek V3 scales RoPE with YaRN");
        };
        change(mscale, mscale_all_dim, attention_factor);
    })
}

#[test]
fn check_spec_refuses_what_yarn_and_norms_ignore() {
    let spec = example("deepseek-v3");
    let mscale = ".scaling.mscale: sets the attention factor only";
    for problems in [
        yarn_problems(&spec, |m, all, _| (*m, *all) = (0.5, 0.0)),
        yarn_problems(&spec, |m, _, factor| (*m, *factor) = (0.5, Some(1.2))),
    ] {
        assert!(
            problems.len() == 1 && problems[0].contains(mscale),
            "{problems:?}"
        );
    }
    let problems = attention_problems(&spec, |a| {
        a.scale = Some(0.1);
        if let Some(RopeScaling::Yarn {
            attention_factor, ..
        }) = a.rope.as_mut().map(|r| &mut r.scaling)
        {
            *attention_factor = Some(1.2);
        }
    });
    assert!(
        problems.len() == 1 && problems[0].contains(".scaling.mscale_all_dim: does nothing"),
        "{problems:?}"
    );
    let mut rms_with_bias = spec.clone();
    rms_with_bias.blocks[0].norm.bias = true;
    let problems = check_spec(&rms_with_bias).expect_err("an RMS norm with a bias is refused");
    assert!(
        problems.len() == 1 && problems[0].contains(": norm.bias: an RMS norm has no bias"),
        "{problems:?}"
    );
}

#[test]
fn check_spec_refuses_what_topk_first_ignores() {
    let spec = example("gpt-oss-20b");
    assert_eq!(check_spec(&spec), Ok(()));
    let cases: [Case<archc_spec::Router>; 3] = [
        (
            ".router.correction_bias: does not apply with topk_first",
            |r| r.correction_bias = true,
        ),
        (".router.groups: does not apply with topk_first", |r| {
            r.groups = Some(RouterGroups { count: 4, keep: 4 })
        }),
        (
            ".router.renormalize: does nothing with topk_first and softmax",
            |r| r.renormalize = true,
        ),
    ];
    for (expected, change) in cases {
        let mut changed = spec.clone();
        for b in &mut changed.blocks {
            if let Ffn::Moe(m) = &mut b.ffn {
                assert!(m.router.topk_first, "GPT-OSS picks experts by raw logits");
                change(&mut m.router);
            }
        }
        let problems = check_spec(&changed).expect_err(expected);
        assert!(
            !problems.is_empty() && problems.iter().all(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[test]
fn check_spec_refuses_temperature_with_rope() {
    // What `import` or a hand-built Spec could produce: the NoPE block's temperature
    // copied onto a RoPE block.
    let mut spec = llama4();
    assert_eq!(check_spec(&spec), Ok(()));
    let temperature = spec.blocks.iter().find_map(|b| match &b.mixer {
        Mixer::Attention(a) if a.rope.is_none() => a.temperature,
        _ => None,
    });
    assert!(temperature.is_some(), "the example tunes its NoPE layers");
    let (name, attention) = spec
        .blocks
        .iter_mut()
        .find_map(|b| match &mut b.mixer {
            Mixer::Attention(a) if a.rope.is_some() => Some((b.name.clone(), a)),
            _ => None,
        })
        .expect("the example has RoPE layers");
    attention.temperature = temperature;
    let problems = check_spec(&spec).expect_err("temperature with RoPE is refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("temperature: applies only to NoPE layers")
            && problems[0].contains(&name),
        "{problems:?}"
    );
}
