//! `archc draw` and `archc report`: the SVG of every example and of side-by-side figures
//! is snapshotted in `tests/data/figures/`, every figure is readable by its own metrics (no
//! text outside its box, no two texts overlapping, none below 12 px), the marks fall on
//! what differs and only there, and the command line writes SVG, PNG and HTML from every
//! kind of model file, refusing what it cannot draw with a clear error and no file.
//! `tests/figures_browser.rs` checks the same readability in Chromium with real fonts.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test figures`, then look at the figures.

use archc_spec::figure::{
    self,
    scene::{Item, Tone},
};
use archc_spec::Spec;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> Spec {
    let path = root().join("examples").join(format!("{name}.arch"));
    let src = std::fs::read_to_string(&path).expect("example is readable");
    archc_spec::validate::check_source(name, &src).expect("example checks")
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".arch")?.to_string())
        })
        .collect();
    names.sort();
    names
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => root().join("tests/data/figures"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// The figure of `specs` is readable by its own metrics and the same on every call.
fn readable_svg(specs: &[Spec]) -> String {
    let scene = figure::scene(specs);
    let problems = scene.problems();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(problems.is_empty(), "{names:?}: {problems:#?}");
    assert!(scene.texts().count() >= 15, "{names:?}: too few texts");
    let svg = figure::svg(specs);
    assert_eq!(
        svg,
        figure::svg(specs),
        "{names:?}: the SVG is not deterministic"
    );
    svg
}

#[test]
fn every_example_draws_readably() {
    let names = examples();
    assert!(names.len() >= 19, "examples/ lost files: {names:?}");
    for name in names {
        let svg = readable_svg(&[example(&name)]);
        snapshot(&name, &svg);
    }
}

/// The figure the README shows, and one of three models of different kinds.
#[test]
fn side_by_side_figures_draw_readably() {
    let pairs: [(&str, &[&str]); 2] = [
        (
            "deepseek-v3-beside-llama-4-maverick",
            &["deepseek-v3", "llama-4-maverick"],
        ),
        (
            "gemma-qwen3next-gptoss",
            &["gemma-3-27b", "qwen3-next-80b-a3b", "gpt-oss-20b"],
        ),
    ];
    for (name, models) in pairs {
        let specs: Vec<Spec> = models.iter().map(|m| example(m)).collect();
        snapshot(name, &readable_svg(&specs));
    }
    // The README's figure is this snapshot, byte for byte.
    let readme_figure = root().join("examples/figures/deepseek-v3-beside-llama-4-maverick.svg");
    let committed = std::fs::read_to_string(&readme_figure).expect("README figure exists");
    let specs = [example("deepseek-v3"), example("llama-4-maverick")];
    assert!(
        committed == figure::svg(&specs),
        "regenerate {}: archc draw examples/deepseek-v3.arch examples/llama-4-maverick.arch -o {}",
        readme_figure.display(),
        readme_figure.display()
    );
}

/// Which boxes of a figure carry the difference outline, by the first line of their text.
fn marked(specs: &[Spec]) -> Vec<String> {
    let mut out: Vec<String> = figure::scene(specs)
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Text(b) if b.differs && b.tone == Tone::Panel => Some("panel".to_string()),
            Item::Text(b) if b.differs => Some(b.lines[0].text.clone()),
            Item::Frame { differs: true, .. } => Some("layer strip".to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn marks_fall_on_what_differs_and_only_there() {
    let llama = example("llama-3.2-1b");
    assert!(
        marked(std::slice::from_ref(&llama)).is_empty(),
        "one model has no marks"
    );
    assert!(marked(&[llama.clone(), llama.clone()]).is_empty());

    // A sliding window on every layer: only the attention boxes differ.
    let mut windowed = llama.clone();
    for b in &mut windowed.blocks {
        if let archc_spec::Mixer::Attention(a) = &mut b.mixer {
            a.window = Some(512);
        }
    }
    assert_eq!(
        marked(&[llama.clone(), windowed]),
        ["Grouped-query attention"]
    );

    // A wider MLP: the feed-forward boxes and the parameter counts.
    let mut wide = llama.clone();
    for b in &mut wide.blocks {
        if let archc_spec::Ffn::Mlp(m) = &mut b.ffn {
            m.hidden *= 2;
        }
    }
    assert_eq!(
        marked(&[llama.clone(), wide.clone()]),
        ["Feed-forward, SwiGLU", "panel"]
    );
    let panel_bold: Vec<String> = figure::scene(&[llama.clone(), wide])
        .texts()
        .flat_map(|b| b.lines.iter().filter(|l| l.bold && l.size < 14.0))
        .map(|l| l.text.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert!(
        panel_bold
            .iter()
            .all(|w| w == "parameters" || w == "active"),
        "{panel_bold:?}"
    );

    // The norm's epsilon, the head's tying and the layer schedule.
    let mut other = llama.clone();
    other.blocks[0].norm.eps = 1e-6;
    other.tied = false;
    let marks = marked(&[llama.clone(), other]);
    assert!(marks.iter().any(|m| m.starts_with("RMSNorm")), "{marks:?}");
    assert!(marks.contains(&"Output head".to_string()), "{marks:?}");
    assert!(!marks.iter().any(|m| m.contains("attention")), "{marks:?}");
    let qwen = example("qwen3-next-80b-a3b");
    assert!(marked(&[qwen.clone(), llama]).contains(&"layer strip".to_string()));
}

/// What each box says, for the features that set the examples apart.
#[test]
fn boxes_name_each_distinctive_feature() {
    let text = |name: &str| -> String {
        figure::scene(&[example(name)])
            .texts()
            .flat_map(|b| b.lines.iter().map(|l| l.text.clone()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cases: [(&str, &[&str]); 9] = [
        (
            "deepseek-v3",
            &[
                "Multi-head latent attention",
                "q rank 1,536, kv rank 512",
                "YaRN ×40 from 4,096",
                "256 experts, 8 per token",
                "1 shared expert, width 2,048",
                "groups 4 of 8",
                "dense × 3",
                "first 3",
            ],
        ),
        (
            "llama-4-maverick",
            &[
                "chunked, 8,192 per chunk",
                "NoPE: no rotary positions",
                "query temperature",
                "every 4 from 3",
                "weights the input",
            ],
        ),
        (
            "gemma-3-27b",
            &[
                "sliding window 1,024",
                "post RMSNorm (1 + w)",
                "QK-norm per head",
                "scaled by 73.3212",
                "all but every 6 from 5",
                "tied to the embedding",
            ],
        ),
        (
            "gpt-oss-20b",
            &["attention sinks", "clamped SwiGLU", "bias on q, k, v, o"],
        ),
        (
            "qwen3-next-80b-a3b",
            &[
                "Gated DeltaNet",
                "short conv, width 4",
                "output gate",
                "64 of 256 dims",
                "linear state",
            ],
        ),
        ("kimi-linear-48b-a3b", &["Kimi Delta Attention"]),
        (
            "gpt2",
            &[
                "Multi-head attention",
                "learned positions",
                "LayerNorm",
                "GELU (tanh)",
                "with bias",
            ],
        ),
        ("olmo-2-7b", &["QK-norm, whole projection"]),
        (
            "llama-3.2-1b",
            &[
                "Grouped-query attention",
                "32 heads : 8 KV (4:1)",
                "Llama 3 scaling ×32 from 8,192",
            ],
        ),
    ];
    for (name, wants) in cases {
        let t = text(name);
        for want in wants {
            assert!(t.contains(want), "{name}: no `{want}` in\n{t}");
        }
    }
}

fn archc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("archc runs")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn draw_writes_svg_and_png_from_every_kind_of_model_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = |f: &str| dir.path().join(f).display().to_string();
    // .arch, config.json, a model directory and a GGUF file (metadata only).
    for (model, file) in [
        ("examples/qwen3-0.6b.arch", "a.svg"),
        ("tests/data/configs/gpt2/config.json", "b.svg"),
        ("tests/data/configs/gpt2", "c.svg"),
        ("tests/data/gguf/smollm2_meta.gguf", "d.svg"),
    ] {
        let o = archc(&["draw", model, "-o", &out(file)]);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let svg = std::fs::read_to_string(out(file)).expect("written");
        assert!(
            svg.starts_with("<svg ") && svg.ends_with("</svg>\n"),
            "{model}"
        );
    }
    // Without -o the SVG goes to stdout, the same bytes.
    let o = archc(&["draw", "examples/qwen3-0.6b.arch"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(out("a.svg")).expect("written"));

    let o = archc(&[
        "draw",
        "examples/gpt2.arch",
        "examples/qwen3-0.6b.arch",
        "-o",
        &out("f.png"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(out("f.png")).expect("written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The header's size is the figure's at the default scale of 2.
    let scene = figure::scene(&[example("gpt2"), example("qwen3-0.6b")]);
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    assert_eq!(width, (scene.w * 2.0).ceil() as u32);
    // Most of the image is white paper, but not all of it: something was drawn.
    assert!(png.len() > 20_000, "{} bytes", png.len());
}

#[test]
fn draw_refuses_what_it_cannot_draw_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |f: &str| dir.path().join(f).display().to_string();
    let o = archc(&["draw", "examples/gpt2.arch", "-o", &path("x.jpg")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("must end in .svg or .png"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&path("x.jpg")).exists());

    // An invalid spec: its diagnostics, exit 1; a missing file: exit 2.
    std::fs::write(path("bad.arch"), "model \"m\" { vocab = 10 }\n").expect("write");
    let o = archc(&["draw", &path("bad.arch"), "-o", &path("bad.svg")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!Path::new(&path("bad.svg")).exists());
    let o = archc(&["draw", &path("missing.arch")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.arch"), "{}", stderr(&o));

    // More layers than a strip can show.
    let src = std::fs::read_to_string(root().join("examples/llama-3.2-1b.arch")).expect("read");
    let deep = src.replace("layers  = 16", "layers  = 2000");
    assert_ne!(
        deep, src,
        "the example's layer line changed; update this test"
    );
    std::fs::write(path("deep.arch"), deep).expect("write");
    let o = archc(&["draw", &path("deep.arch"), "-o", &path("deep.svg")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2000 layers; figures draw at most 1024"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&path("deep.svg")).exists());

    // A PNG too large to allocate is refused before rendering.
    let o = archc(&[
        "draw",
        "examples/gpt2.arch",
        "--scale",
        "100",
        "-o",
        &path("big.png"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!Path::new(&path("big.png")).exists());

    // A full disk on standard output is an error, not a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let o = Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(["draw", "examples/gpt2.arch"])
        .current_dir(root())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .expect("archc runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write to stdout"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn report_is_one_self_contained_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report.html");
    let o = archc(&[
        "report",
        "examples/deepseek-v3.arch",
        "examples/kimi-k2.arch",
        "-o",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(&out).expect("written");
    let specs = [example("deepseek-v3"), example("kimi-k2")];
    assert!(page.contains(&figure::svg(&specs)), "the figure is inline");
    for want in [
        "<h2>Statistics</h2>",
        "KV cache per token",
        "FLOPs per token",
        "Architecture, side by side",
    ] {
        assert!(page.contains(want), "no `{want}`");
    }
    // The rows that differ are marked; DeepSeek-V3 and Kimi K2 differ in heads and experts.
    assert!(page.contains("<tr class=\"differs\"><td>experts</td><td>256</td><td>384</td></tr>"));
    assert!(page.contains("<tr><td>layers</td><td>61</td><td>61</td></tr>"));
    // Nothing is fetched: no scripts, links, images or remote references.
    for banned in [
        "<script",
        "<link",
        "<img",
        "http://www.w3.org/1999",
        "https://",
    ] {
        assert!(!page.contains(banned), "the page contains `{banned}`");
    }
    // The tables, with the figure (snapshotted above) left out.
    let tables = figure::report::html(&specs).replace(&figure::svg(&specs), "[figure]\n");
    snapshot("report-deepseek-v3-kimi-k2", &tables);
}

/// A model's name is text from a file: it is escaped wherever it lands, and a long one
/// wraps instead of running out of its box.
#[test]
fn names_are_escaped_and_wrapped() {
    let mut spec = example("gpt2");
    spec.name = "<script>alert('x')</script> & \"friends\" with a very long name indeed".into();
    spec.blocks[0].name = "<b>".into();
    let svg = readable_svg(std::slice::from_ref(&spec));
    assert!(
        !svg.contains("<script") && !svg.contains("<b>"),
        "unescaped name"
    );
    assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;"));
    let page = figure::report::html(std::slice::from_ref(&spec));
    assert!(
        !page.contains("<script") && !page.contains("<b>"),
        "unescaped name in the page"
    );
}
