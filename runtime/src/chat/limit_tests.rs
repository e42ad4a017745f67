//! Tests of the chat-template bounds: templates that would run without end or grow a value
//! past any memory fail with a render error, and real templates render as before.

use super::*;

fn render(source: &str) -> Result<String, ChatError> {
    let msgs = [
        Message::new("system", "Be brief."),
        Message::new("user", "  hi  "),
        Message::new("assistant", "Hello."),
    ];
    ChatTemplate::new(source, "<s>", "</s>")?.render(&msgs, true)
}

/// The render error of `source`, as text; fails the test when it renders.
fn refused(source: &str) -> String {
    match render(source) {
        Ok(text) => panic!("rendered {} bytes instead of failing", text.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn nested_loops_run_out_of_fuel() {
    let err =
        refused("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    assert!(err.contains("fuel"), "{err}");
}

/// A loop's `set` ends with its iteration, so values that carry over live in a namespace.
#[test]
fn string_doubling_by_tilde_is_refused() {
    let err = refused(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s|length }}",
    );
    assert!(err.contains("string made by `~`"), "{err}");
    assert!(err.contains(&MAX_VALUE_BYTES.to_string()), "{err}");
}

#[test]
fn string_doubling_by_plus_is_refused() {
    let err = refused(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}\
         {% endfor %}",
    );
    assert!(err.contains("string made by `+`"), "{err}");
}

#[test]
fn list_doubling_by_plus_is_refused() {
    let err = refused(
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}\
         {% endfor %}{{ ns.l|length }}",
    );
    assert!(err.contains("list"), "{err}");
    assert!(err.contains("over the bound"), "{err}");
}

/// The counts are variables: minijinja computes operators on constants when it compiles.
#[test]
fn repetition_by_star_is_bounded() {
    let err = refused("{% set n = 20000000 %}{{ ('x' * n)|length }}");
    assert!(err.contains("string made by `*`"), "{err}");
    let err = refused("{% set n = 2000000 %}{{ ([1] * n)|length }}");
    assert!(err.contains("list made by `*`"), "{err}");
    let err = refused("{% set n = 1000000000000000000 %}{% for x in [] * n %}{% endfor %}");
    assert!(err.contains("list made by `*`"), "{err}");
}

#[test]
fn doubling_through_filters_and_methods_is_refused() {
    for body in [
        "{% set ns.s = [ns.s, ns.s]|join %}",
        "{% set ns.s = ns.s|replace('x', 'xx') %}",
        "{% set ns.s = ns.s.replace('x', 'xx') %}",
        "{% set ns.s = '%s%s'|format(ns.s, ns.s) %}",
        "{% set ns.s = '{}{}'.format(ns.s, ns.s) %}",
        "{% set ns.s = [ns.s, ns.s]|string %}",
        "{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}",
    ] {
        let source = format!(
            "{{% set ns = namespace(s='x') %}}{{% for i in range(40) %}}{body}{{% endfor %}}"
        );
        let err = refused(&source);
        assert!(err.contains("bound"), "{body}: {err}");
    }
}

#[test]
fn doubling_through_macros_is_refused() {
    let err = refused(
        "{% macro d(n) %}{% if n %}{% set h = d(n - 1) %}{{ h }}{{ h }}\
         {% else %}{{ 'x' * 100000 }}{% endif %}{% endmacro %}{{ d(12)|length }}",
    );
    assert!(err.contains("bound"), "{err}");
}

#[test]
fn multiplying_filter_arguments_are_bounded() {
    for source in [
        "{{ [[1]]|tojson(indent=1000000000000) }}",
        "{{ 'a\nb'|indent(1000000000000) }}",
        "{{ 'a\nb'|indent(width=1000000000000) }}",
        "{{ [1]|batch(1000000000000, 0)|list|length }}",
        "{{ [1]|slice(1000000000000, 0)|list|length }}",
        "{{ '%1000000000s'|format('x') }}",
        "{% set s = 'x' * 5000 %}{{ s.replace('', s)|length }}",
    ] {
        let err = refused(source);
        assert!(err.contains("bound"), "{source}: {err}");
    }
}

#[test]
fn total_output_is_bounded() {
    let err = refused("{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}");
    assert!(err.contains("in all"), "{err}");
}

/// minijinja computes operators on constants when it compiles, before a render's bounds.
#[test]
fn oversized_constants_are_refused_before_compiling() {
    for source in [
        "{{ ('x' * 9000000) ~ ('x' * 9000000) }}",
        "{% if false %}{{ f(('ab' * 5000000) + ('ab' * 5000000)) }}{% endif %}",
        "{{ 'x' * 5000 * 5000 }}",
    ] {
        let err = ChatTemplate::new(source, "", "").unwrap_err().to_string();
        assert!(
            err.contains("a constant expression would be"),
            "{source}: {err}"
        );
    }
    assert!(ChatTemplate::new("{{ 'x' * 1000 ~ 2 ** 8 }}", "", "").is_ok());
}

#[test]
fn oversized_template_is_refused() {
    let source = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    let err = ChatTemplate::new(&source, "", "").unwrap_err().to_string();
    assert!(
        err.contains(&format!("{} bytes", MAX_TEMPLATE_BYTES + 1)),
        "{err}"
    );
}

/// The environment templates rendered in before the bounds: minijinja's own `~`, `+`,
/// `*` and output.
fn unbounded(source: &str) -> String {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_template("t", source).unwrap();
    let msgs = [
        Message::new("system", "Be brief."),
        Message::new("user", "  hi  "),
        Message::new("assistant", "Hello."),
    ];
    // `tojson` counts its text, so it needs a render's account.
    let _account = bounds::RenderGuard::enter();
    env.get_template("t")
        .unwrap()
        .render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => "<s>",
            eos_token => "</s>",
        })
        .unwrap()
}

#[test]
fn bounded_rendering_matches_minijinja() {
    let source = r#"{{ bos_token }}
{%- set ns = namespace(n=0, s='') -%}
{%- for m in messages -%}
{%- set ns.n = ns.n + 1 -%}
{%- set ns.s = ns.s ~ m.role[0] -%}
[{{ loop.index }}/{{ loop.length }}] {{ m.role | upper }}: {{ m.content.strip() }}{{ '!' if m.role.startswith('u') else '.' }}
{% if loop.index == 2 %}{% continue %}{% endif %}
  {% if m.role == 'assistant' %}
    {{- eos_token }}
  {% endif %}
{%- endfor %}
{{ ns.n }} {{ ns.s }} {{ 1 + 2 }} {{ 1.5 + 1 }} {{ 2 * 3 }} {{ 'ab' * 3 }} {{ 3 * 'c' }}
{{ [1, 2] + [3] }} {{ ([0] * 3) | length }} {{ ([0, 1] * 2) }} {{ 'a' ~ none ~ 1 ~ [1, 'b'] ~ {'k': 'v'} }}
{{ none }}|{{ undefined_thing }}|{{ true }}|{{ 7 // 2 }}|{{ -3 }}
{% macro greet(name, punct='!') %}Hi {{ name ~ punct }}{% endmacro %}{{ greet('x') }} {{ greet('y', '?') | upper }}
{% set block %}captured {{ messages | length }}{% endset %}{{ block | replace('captured', 'got') }}
{% filter upper %}shout {{ 'it' }}{% endfilter %}
{{ messages | map(attribute='role') | join(', ') }} {{ [3, 1, 2] | sort | list }} {{ {'b': 1, 'a': [2]} | tojson }}
{{ range(3) | list }} {{ '%s-%d' | format('a', 3) }} {{ '{}:{}'.format('k', 2) }} {{ 'a b'.split() }}
{{ 'l1\nl2' | indent(2) }} {{ [1, 2, 3] | batch(2, 0) | list }} {{ ', '.join(['p', 'q']) }}
{%- for x in [[1, [2]], [3]] recursive %}<{{ x if x is number else loop(x) }}>{% endfor %}
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#;
    let expected = unbounded(source);
    assert_eq!(render(source).unwrap(), expected);
    assert!(expected.contains("[1/3] SYSTEM: Be brief."), "{expected}");
}

/// SmolLM2's template, from the committed metadata extract, renders each conversation of
/// the tokenizer suite exactly as its snapshot records.
#[test]
fn smollm2_template_renders_its_snapshots() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tokenize");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("smollm2_tokenizer.json")).unwrap())
            .unwrap();
    let source = meta["tokenizer.chat_template"].as_str().unwrap();
    let template = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>").unwrap();
    let mut checked = 0;
    for name in [
        "chat_single",
        "chat_system",
        "chat_multiturn_system",
        "chat_transcript",
    ] {
        let input: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let messages: Vec<Message> = serde_json::from_value(input["messages"].clone()).unwrap();
        let add = input["add_generation_prompt"].as_bool().unwrap_or(true);
        let snap = std::fs::read_to_string(dir.join(format!("{name}.snap"))).unwrap();
        // The snapshot is a header between `---` lines, the rendering, then `\n---\n` ids.
        let body = snap.splitn(3, "---\n").nth(2).unwrap();
        let rendered = &body[..body.rfind("\n---\n").unwrap()];
        assert_eq!(template.render(&messages, add).unwrap(), rendered, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}
