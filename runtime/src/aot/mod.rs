//! The ahead-of-time runtime: what an executable or C library made by `archc build`
//! runs. The kernels are machine code linked in beside it (a table of functions, see
//! `archc_compiler::codegen::llvm::emit_linkable_object`), the model is described by the
//! build image linked with them (`image`), and the weights are memory-mapped from a path
//! or from the executable itself (`embed`). The executor, tokenizer, sampler and chat
//! template are the runtime's own; nothing here compiles code.
//!
//! `image`, `embed`, `model` and `cli` are plain library code, built and tested with the
//! rest of the crate. `linked` (the crate's `aot` feature) is the part that names the
//! symbols of the object `archc build` links in, and so exists only in the static
//! library built for it: the C entry point of executables and the C API of libraries.

pub mod cli;
pub mod embed;
pub mod image;
#[cfg(feature = "aot")]
mod linked;
pub mod model;

/// The C header of libraries built with `archc build --lib` (`OUT.h`): the API
/// reference, in its comments.
pub const HEADER: &str = include_str!("capi.h");

/// The functions of the C API, as the header declares them (the library exports these
/// and nothing else).
pub const API: &[&str] = &[
    "archc_last_error",
    "archc_model_open",
    "archc_model_vocab",
    "archc_model_free",
    "archc_session_new",
    "archc_session_prefill",
    "archc_session_decode",
    "archc_session_logits",
    "archc_session_position",
    "archc_session_reset",
    "archc_session_free",
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_declares_every_api_function_and_nothing_else() {
        let declared: Vec<&str> = super::HEADER
            .lines()
            .filter(|l| !l.starts_with([' ', '#', '/']) && l.contains('('))
            .filter_map(|l| l.split('(').next()?.rsplit([' ', '*']).next())
            .collect();
        assert_eq!(declared, super::API);
    }
}
