//! Fuzz target: any bytes as a safetensors file must open or fail with an error, never
//! panic; every view of a file that opened lies inside it, decodes, and binding a small
//! model against it succeeds or names its problems. Run with `tools/fuzz.sh`.
#![no_main]

use archc_runtime::bind::bind;
use archc_runtime::weights::{Checkpoint, SafetensorsFile};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// A two-layer Llama whose tensor names a mutated fixture header may still contain.
const MODEL: &str = r#"
model "fuzz" {
  family = llama
  vocab = 16
  hidden = 8
  layers = 2
}
block {
  attention { heads = 2 }
  mlp { hidden = 16 }
}
"#;

fn spec() -> &'static archc_spec::Spec {
    static SPEC: OnceLock<archc_spec::Spec> = OnceLock::new();
    SPEC.get_or_init(
        || match archc_spec::validate::check_source("fuzz.arch", MODEL) {
            Ok(spec) => spec,
            Err(diags) => panic!("the fuzz model is invalid: {diags:?}"),
        },
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SafetensorsFile::from_bytes(Path::new("fuzz.safetensors"), data.to_vec()) else {
        return;
    };
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in &names {
        let (Some(info), Ok(view)) = (file.info(name), file.get(name)) else {
            continue;
        };
        let numel: usize = view.shape.iter().product();
        assert_eq!(numel * info.dtype.size(), view.bytes.len(), "{name}");
        if let Some(values) = view.to_f32() {
            assert_eq!(values.len(), numel, "{name}");
        }
    }
    if let Err(e) = bind(spec(), Checkpoint::from_file(file)) {
        assert!(!e.problems.is_empty());
    }
});
