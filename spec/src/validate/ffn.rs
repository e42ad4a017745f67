//! The feed-forward section of a block: the activation, a plain or gated MLP, or a mixture
//! of experts with its router, shared experts and groups.

use super::eval::{word_of, Diags, Sect};
use super::model::{section, size_or, unknown_tag, value_span, ACTS};
use super::tree::{NodeValue, Table};
use crate::diagnostics::Diagnostic;
use crate::spec::*;

fn activation(s: &Sect, d: &mut Diags) -> Option<Activation> {
    let Some(node) = s.get("act") else {
        return Some(Activation::Silu);
    };
    let (w, body) = match &node.value {
        NodeValue::Leaf(v) => (word_of(v, "act", ACTS, d)?.0, None),
        NodeValue::Tagged { tag, body, .. } if tag.name == "clamped_swiglu" => {
            (tag.name.clone(), Some(body))
        }
        NodeValue::Tagged { tag, .. } => {
            d.push(unknown_tag(tag, "act", ACTS).note("only `clamped_swiglu` takes a body"));
            return None;
        }
        NodeValue::Table(t) => {
            d.push(Diagnostic::error(t.span, "`act` needs a kind").label("no kind given"));
            return None;
        }
    };
    Some(match w.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" => Activation::Silu,
        _ => {
            let (alpha, limit) = match body {
                Some(t) => {
                    let b = s.child(t, "`clamped_swiglu`");
                    b.check_keys(&["alpha", "limit"], d);
                    (b.f64_or("alpha", 1.702, d), b.positive_or("limit", 7.0, d))
                }
                None => (1.702, 7.0),
            };
            Activation::ClampedSwiglu { alpha, limit }
        }
    })
}

fn gated(s: &Sect, act: Option<Activation>, d: &mut Diags) -> bool {
    let gated = s.bool_or("gated", true, d);
    if !gated && matches!(act, Some(Activation::ClampedSwiglu { .. })) {
        d.push(
            Diagnostic::error(value_span(s, "gated"), "`clamped_swiglu` is always gated")
                .label("cannot be `false` with `clamped_swiglu`"),
        );
    }
    gated
}

pub(super) fn mlp(s: &Sect, d: &mut Diags) -> Option<Mlp> {
    s.check_keys(&["hidden", "act", "gated", "bias"], d);
    let hidden = s.req_size("hidden", d);
    let act = activation(s, d);
    let gated = gated(s, act, d);
    let bias = s.bool_or("bias", false, d);
    Some(Mlp {
        hidden: hidden?,
        act: act?,
        gated,
        bias,
    })
}

pub(super) fn moe(s: &Sect, d: &mut Diags) -> Option<Moe> {
    s.check_keys(
        &[
            "experts", "top_k", "hidden", "act", "gated", "bias", "shared", "router",
        ],
        d,
    );
    let experts = s.req_size("experts", d);
    let top_k = s.req_size("top_k", d);
    let hidden = s.req_size("hidden", d);
    let act = activation(s, d);
    let gated = gated(s, act, d);
    let bias = s.bool_or("bias", false, d);
    let shared_given = s
        .get("shared")
        .is_some_and(|n| matches!(n.value, NodeValue::Table(_)));
    let shared = section(s, "shared", d).and_then(|sh| {
        sh.check_keys(&["count", "hidden", "gate"], d);
        let count = size_or(&sh, "count", 1, d);
        let hidden = sh.req_size("hidden", d);
        let gate = sh.bool_or("gate", false, d);
        Some(SharedExperts {
            count: count?,
            hidden: hidden?,
            gate,
        })
    });
    let router_table;
    let r = match section(s, "router", d) {
        Some(r) => r,
        None => {
            router_table = Table::new(s.table.span);
            s.child(&router_table, "`router`")
        }
    };
    r.check_keys(
        &[
            "score",
            "topk_first",
            "renormalize",
            "scale",
            "correction_bias",
            "groups",
            "bias",
            "weight_input",
        ],
        d,
    );
    let score = match r.word("score", &["softmax", "sigmoid"], d) {
        Some((w, _)) if w == "sigmoid" => RouterScore::Sigmoid,
        _ => RouterScore::Softmax,
    };
    let groups_given = r
        .get("groups")
        .is_some_and(|n| matches!(n.value, NodeValue::Table(_)));
    let groups = section(&r, "groups", d).and_then(|g| {
        g.check_keys(&["count", "keep"], d);
        let count = g.req_size("count", d);
        let keep = g.req_size("keep", d);
        if let (Some(c), Some(k)) = (count, keep) {
            if k > c {
                d.push(
                    Diagnostic::error(value_span(&g, "keep"), format!("keep ({k}) is more than the number of groups ({c})"))
                        .label("more than `count`"),
                );
            }
            if let Some(e) = experts {
                if e % c != 0 {
                    d.push(
                        Diagnostic::error(value_span(&g, "count"), format!("{c} groups do not divide {e} experts"))
                            .label("must divide `experts`"),
                    );
                } else if let Some(t) = top_k {
                    if k <= c && t > k * (e / c) {
                        d.push(
                            Diagnostic::error(value_span(s, "top_k"), format!("top_k ({t}) is more than the {} experts of the {k} kept groups", k * (e / c)))
                                .label("cannot pick this many experts")
                                .secondary(value_span(&g, "keep"), "groups kept here"),
                        );
                    }
                }
            }
        }
        Some(RouterGroups {
            count: count?,
            keep: keep?,
        })
    });
    if let (Some(t), Some(e)) = (top_k, experts) {
        if t > e {
            d.push(
                Diagnostic::error(
                    value_span(s, "top_k"),
                    format!("top_k ({t}) is more than the number of experts ({e})"),
                )
                .label("more than `experts`"),
            );
        }
    }
    let router = Router {
        score,
        topk_first: r.bool_or("topk_first", false, d),
        renormalize: r.bool_or("renormalize", false, d),
        scale: r.positive_or("scale", 1.0, d),
        correction_bias: r.bool_or("correction_bias", false, d),
        groups,
        bias: r.bool_or("bias", false, d),
        weight_input: r.bool_or("weight_input", false, d),
    };
    if router.topk_first {
        ignored_after_topk_first(&r, &router, d);
    }
    if (shared_given && shared.is_none()) || (groups_given && groups.is_none()) {
        return None;
    }
    Some(Moe {
        experts: experts?,
        top_k: top_k?,
        hidden: hidden?,
        act: act?,
        gated,
        bias,
        shared,
        router,
    })
}

/// With `topk_first` the router picks experts by their raw logits and scores only those:
/// a selection bias or group limit never takes part, and a softmax over the chosen logits
/// already sums to one. Each such field would be accepted and do nothing, so it is refused.
fn ignored_after_topk_first(r: &Sect, router: &Router, d: &mut Diags) {
    let first_at = value_span(r, "topk_first");
    let mut refuse = |key: &str, message: &str, hint: &str| {
        d.push(
            Diagnostic::error(value_span(r, key), message.to_string())
                .label("would be ignored with `topk_first`")
                .secondary(first_at, "experts are picked by their raw logits here")
                .hint(hint.to_string()),
        );
    };
    if router.correction_bias {
        refuse(
            "correction_bias",
            "`correction_bias` does not apply with `topk_first`: it biases a selection by scores",
            "remove `correction_bias`, or `topk_first`",
        );
    }
    if router.groups.is_some() {
        refuse(
            "groups",
            "`groups` does not apply with `topk_first`: groups limit a selection by scores",
            "remove `groups`, or `topk_first`",
        );
    }
    if router.renormalize && router.score == RouterScore::Softmax {
        refuse(
            "renormalize",
            "`renormalize` does nothing with `topk_first` and `softmax`: the softmax of the chosen logits already sums to one",
            "remove `renormalize`",
        );
    }
}
