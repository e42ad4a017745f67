//! `archc stats`: parameter counts, weight and KV-cache sizes and FLOPs of a `.arch` model.

use crate::failure::Failure;
use archc_spec::stats::{stats, Options};
use archc_spec::DType;
use std::path::PathBuf;
use std::process::ExitCode;

/// How every number is defined; printed under `archc stats --help`.
const DEFINITIONS: &str = "\
Definitions:
  parameters        every tensor of the model; a tied head counted once; a router's
                    correction bias is a buffer, not a parameter (as HF counts)
  active            total minus, in every MoE layer, the routed experts a token does
                    not run: (experts - top_k) x per-expert parameters
  weights           every stored tensor at the model dtype
  kv cache          per token: kv_heads x (head_dim + v_head_dim) values per attention
                    layer, kv_rank + rope_dim for MLA; at the context, sliding-window
                    and chunked layers hold at most window / chunk tokens
  linear state      fixed per-sequence state of linear-attention layers: the last
                    (kernel - 1) conv inputs per channel plus the recurrent matrices
  flops per token   one decode step of the token at position context - 1, the rest
                    cached, a multiply-add counted as 2: 2 x every active matrix
                    parameter (the output head included, also when tied; embedding
                    lookups, norms, biases excluded); plus per attention layer
                    2 x heads x (head_dim + v_head_dim) x L with L = min(context, window
                    or chunk) keys (MLA, absorbed: 2 x heads x (2 x kv_rank + rope_dim)
                    x L); plus per linear-attention layer 6 x heads x k_dim x v_dim";

#[derive(Debug, clap::Args)]
#[command(after_help = DEFINITIONS)]
pub struct Args {
    /// The .arch file; with several, one summary line per model.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Context length for the KV cache and the FLOPs (default: the model's context).
    #[arg(long, value_name = "N")]
    pub context: Option<u64>,
    /// Dtype of the KV cache and the linear-attention state.
    #[arg(long, value_name = "DTYPE", default_value = "bf16", value_parser = parse_dtype)]
    pub kv_dtype: DType,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "bf16" => Ok(DType::Bf16),
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        "f8" => Ok(DType::F8),
        _ => Err(format!("expected one of bf16, f16, f32, f8; found `{s}`")),
    }
}

pub fn run(args: Args) -> ExitCode {
    if args.files.len() > 1 {
        return run_summary(&args);
    }
    let name = args.files[0].display().to_string();
    let src = match crate::io::read_arch(&args.files[0]) {
        Ok(s) => s,
        Err(f) => return f.exit("stats"),
    };
    match report(&name, &src, args.context, args.kv_dtype, args.json) {
        Ok(out) => match crate::io::print(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => f.exit("stats"),
        },
        Err(f) => {
            // The message is complete (rendered diagnostics, or an `error:` line).
            eprint!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The report for the `.arch` source `src`; on failure its diagnostics rendered (exit 1).
pub fn report(
    name: &str,
    src: &str,
    context: Option<u64>,
    kv_dtype: DType,
    json: bool,
) -> Result<String, Failure> {
    let spec = archc_spec::validate::check_source(name, src)
        .map_err(|diags| Failure::invalid(archc_spec::diagnostics::render(name, src, &diags)))?;
    if context == Some(0) {
        return Err(Failure::invalid("error: --context must be at least 1\n"));
    }
    let opts = Options {
        context: context.unwrap_or(spec.context),
        kv_dtype,
    };
    let s = stats(&spec, opts);
    Ok(if json {
        let mut text = serde_json::to_string_pretty(&s.to_json()).unwrap_or_default();
        text.push('\n');
        text
    } else {
        s.render()
    })
}

/// Several files: a summary table (or a JSON array), every file's errors reported.
fn run_summary(args: &Args) -> ExitCode {
    let mut all = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for path in &args.files {
        let name = path.display().to_string();
        let src = match crate::io::read_arch(path) {
            Ok(s) => s,
            Err(f) if f.code == 1 => {
                code = ExitCode::from(1);
                continue;
            }
            Err(f) => return f.exit("stats"),
        };
        match archc_spec::validate::check_source(&name, &src) {
            Ok(spec) => {
                let opts = Options {
                    context: args.context.unwrap_or(spec.context).max(1),
                    kv_dtype: args.kv_dtype,
                };
                all.push(stats(&spec, opts));
            }
            Err(diags) => {
                eprint!("{}", archc_spec::diagnostics::render(&name, &src, &diags));
                code = ExitCode::from(1);
            }
        }
    }
    let text = if args.json {
        let list: Vec<_> = all.iter().map(|s| s.to_json()).collect();
        let mut text = serde_json::to_string_pretty(&list).unwrap_or_default();
        text.push('\n');
        text
    } else {
        archc_spec::stats::render_summary(&all)
    };
    match crate::io::print(&text) {
        Ok(()) => code,
        Err(f) => f.exit("stats"),
    }
}
