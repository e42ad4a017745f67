//! The page `archc report` writes: one self-contained HTML file (no scripts, no external
//! files) with the figure of the models, their statistics and the table of every fact
//! `archc diff` compares, the differing rows marked.

use super::content::bytes;
use super::svg::escape;
use crate::diff::{self, group};
use crate::spec::Spec;
use crate::stats;
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;font-size:15px;\
margin:24px;color:#1f1f1f}h1{font-size:24px}h2{font-size:19px;margin-top:32px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:4px 10px;\
text-align:left;vertical-align:top}th{background:#f0f0f0}td.num{text-align:right;\
font-variant-numeric:tabular-nums}tr.differs td{background:#fde7ea;font-weight:bold}\
tr.section td{background:#f6f6f6;font-style:italic}.figure{overflow-x:auto}";

/// The report page of `specs`: the side-by-side figure, statistics and the facts.
pub fn html(specs: &[Spec]) -> String {
    let names: Vec<String> = specs.iter().map(|s| escape(&s.name)).collect();
    let title = names.join(" · ");
    let mut s = String::new();
    let _ = writeln!(s, "<!DOCTYPE html>");
    let _ = writeln!(s, "<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = writeln!(
        s,
        "<title>{title}</title><style>{STYLE}</style></head><body>"
    );
    let _ = writeln!(s, "<h1>{title}</h1>");
    let _ = writeln!(s, "<div class=\"figure\">");
    s.push_str(&super::svg(specs));
    let _ = writeln!(s, "</div>");
    stats_table(&mut s, specs, &names);
    facts_table(&mut s, specs, &names);
    let _ = writeln!(s, "</body></html>");
    s
}

fn header(s: &mut String, first: &str, names: &[String]) {
    let _ = write!(s, "<table><tr><th>{first}</th>");
    for n in names {
        let _ = write!(s, "<th>{n}</th>");
    }
    let _ = writeln!(s, "</tr>");
}

fn stats_table(s: &mut String, specs: &[Spec], names: &[String]) {
    let all: Vec<stats::Stats> = specs
        .iter()
        .map(|spec| stats::stats(spec, stats::Options::for_spec(spec)))
        .collect();
    type Cell = fn(&stats::Stats) -> String;
    let rows: [(&str, Cell); 11] = [
        ("parameters", |x| group(x.params_total)),
        ("active parameters", |x| group(x.params_active)),
        ("weights", |x| {
            format!("{} ({})", bytes(x.weight_bytes), x.weight_dtype.as_str())
        }),
        ("context", |x| group(x.context)),
        ("KV cache per token (bf16)", |x| bytes(x.kv_bytes_per_token)),
        ("KV cache at the context", |x| bytes(x.kv_bytes_total)),
        ("linear-attention state", |x| bytes(x.linear_state_bytes)),
        ("FLOPs per token at the context", |x| {
            group(x.flops_per_token)
        }),
        ("softmax-attention layers", |x| {
            x.attention_layers.to_string()
        }),
        ("linear-attention layers", |x| x.linear_layers.to_string()),
        ("MoE layers", |x| x.moe_layers.to_string()),
    ];
    let _ = writeln!(s, "<h2>Statistics</h2>");
    header(s, "", names);
    for (label, cell) in rows {
        let values: Vec<String> = all.iter().map(cell).collect();
        row(s, label, &values, true);
    }
    let _ = writeln!(s, "</table>");
}

fn row(s: &mut String, label: &str, values: &[String], numeric: bool) {
    let differs = values.len() > 1 && values.iter().any(|v| v != &values[0]);
    let class = if differs { " class=\"differs\"" } else { "" };
    let _ = write!(s, "<tr{class}><td>{}</td>", escape(label));
    let td = if numeric {
        "<td class=\"num\">"
    } else {
        "<td>"
    };
    for v in values {
        let _ = write!(s, "{td}{}</td>", escape(v));
    }
    let _ = writeln!(s, "</tr>");
}

fn facts_table(s: &mut String, specs: &[Spec], names: &[String]) {
    let facts: Vec<Vec<diff::Fact>> = specs
        .iter()
        .map(|spec| diff::describe(spec, Some(diff::params(spec))))
        .collect();
    let heading = if specs.len() > 1 {
        "Architecture, side by side (rows that differ in bold)"
    } else {
        "Architecture"
    };
    let _ = writeln!(s, "<h2>{heading}</h2>");
    header(s, "", names);
    let mut section = "";
    for (i, fact) in facts[0].iter().enumerate() {
        if fact.section != section {
            section = fact.section;
            let _ = writeln!(
                s,
                "<tr class=\"section\"><td colspan=\"{}\">{section}</td></tr>",
                specs.len() + 1
            );
        }
        let values: Vec<String> = facts.iter().map(|f| f[i].value.clone()).collect();
        row(s, fact.label, &values, false);
    }
    let _ = writeln!(s, "</table>");
}
