//! Model files as the commands that run models (`logits`, `run`, `bench`) and `import`
//! open them: GGUF detection, the Spec of a GGUF file, and binding a checkpoint's weights.

use crate::failure::Failure;
use archc_runtime::bind::{bind, bind_gguf, BoundWeights};
use archc_runtime::weights::gguf::GgufFile;
use archc_runtime::weights::Checkpoint;
use archc_spec::Spec;
use std::path::Path;

/// Whether a path names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The Spec of an opened `.gguf` file at `path`, imported from its metadata and tensor
/// names.
pub fn gguf_spec_of(file: &GgufFile, path: &Path) -> Result<Spec, Failure> {
    let shown = path.display().to_string();
    Ok(archc_spec::import::gguf::from_gguf_metadata(
        file.metadata(),
        &file.names(),
        &shown,
    )?)
}

/// The Spec of the `.gguf` file at `path`.
pub fn gguf_spec(path: &Path) -> Result<Spec, Failure> {
    let file = GgufFile::open(path)?;
    gguf_spec_of(&file, path)
}

/// Binds the weights of an HF model directory or a `.gguf` file to `spec`; errors name
/// the model.
pub fn load_weights(spec: &Spec, model: &Path) -> Result<BoundWeights, Failure> {
    let shown = model.display();
    let named = |e: &dyn std::fmt::Display| Failure::new(format!("{shown}: {e}"));
    if is_gguf(model) {
        let file = GgufFile::open(model)?;
        return bind_gguf(spec, file).map_err(|e| named(&e));
    }
    let checkpoint = Checkpoint::open(model)?;
    let weights = bind(spec, checkpoint).map_err(|e| named(&e))?;
    print_notes(&weights, model);
    Ok(weights)
}

/// Prints what binding left unread on purpose, on stderr: `note: MODEL: ...`.
pub fn print_notes(weights: &BoundWeights, model: &Path) {
    for n in weights.notes() {
        eprintln!("note: {}: {n}", model.display());
    }
}
