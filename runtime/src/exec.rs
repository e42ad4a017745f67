//! Running a bound model: prefill or token-by-token decode on a backend, producing logits.

use crate::bind::BoundWeights;
use archc_compiler::interp::Interpreter;
use archc_compiler::{lower, Mode as GraphMode};
use archc_spec::Spec;
use std::fmt;

/// How the tokens are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The whole sequence in one pass.
    Prefill,
    /// One token at a time, each attending to the KV cache of the earlier ones.
    Decode,
}

/// What executes the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The compiler's reference interpreter.
    Interp,
}

/// Execution failed: lowering, a missing parameter, or the interpreter itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    pub message: String,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecError {}

/// Logits of every token, row-major `[tokens.len(), spec.vocab]`.
///
/// Both graphs are lowered even for a pure prefill so that a decode-graph problem shows
/// up the same way in both modes. Decode feeds every token, the first included, through
/// the decode graph with the cache of the ones before it.
pub fn logits(
    spec: &Spec,
    weights: &BoundWeights,
    tokens: &[u32],
    mode: Mode,
    backend: Backend,
) -> Result<Vec<f32>, ExecError> {
    let Backend::Interp = backend;
    let err = |what: &str, e: &dyn fmt::Display| ExecError {
        message: format!("{what}: {e}"),
    };
    let prefill = lower(spec, GraphMode::Prefill).map_err(|e| err("lowering (prefill)", &e))?;
    let decode = lower(spec, GraphMode::Decode).map_err(|e| err("lowering (decode)", &e))?;
    let interp =
        Interpreter::new(&prefill, &decode, weights).map_err(|e| err("interpreter", &e))?;
    let mut cache = interp.new_cache();
    match mode {
        Mode::Prefill => interp
            .prefill(&mut cache, tokens)
            .map_err(|e| err("prefill", &e)),
        Mode::Decode => {
            // Reserve at most 64 MiB up front: the rows arrive one by one anyway, and the
            // product of two untrusted sizes should not decide an allocation.
            let want = tokens.len().saturating_mul(spec.vocab as usize);
            let mut out = Vec::with_capacity(want.min(1 << 24));
            for (i, &t) in tokens.iter().enumerate() {
                let row = interp
                    .decode(&mut cache, t)
                    .map_err(|e| err(&format!("decode of token {i}"), &e))?;
                out.extend_from_slice(&row);
            }
            Ok(out)
        }
    }
}
