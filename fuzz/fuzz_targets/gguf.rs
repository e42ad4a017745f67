//! Fuzz target: any bytes as a GGUF file must open or fail with an error naming a field,
//! never panic or allocate without bound; every tensor of a file that opened lies inside
//! it and dequantises to exactly its element count; importing its metadata and binding a
//! model to it succeed or report their problems. Run with `tools/fuzz.sh` (the corpus,
//! `fuzz/corpus/gguf/`, is seeded from `tests/data/gguf/`).
#![no_main]

use archc_runtime::bind::bind_gguf;
use archc_runtime::weights::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        assert!(t.begin <= t.end && t.end <= data.len(), "{}", t.name);
        let values = file
            .dequantize(&t.name)
            .expect("a checked tensor dequantises");
        assert_eq!(values.len(), t.numel(), "{}", t.name);
    }
    let names = file.names();
    let Ok(spec) =
        archc_spec::import::gguf::from_gguf_metadata(file.metadata(), &names, "fuzz.gguf")
    else {
        return;
    };
    // Binding dequantises every tensor, so only models of a fuzzer-sized file get there.
    if archc_spec::tensors::params(&spec) < 1 << 20 {
        if let Err(e) = bind_gguf(&spec, file) {
            assert!(!e.problems.is_empty());
        }
    }
});
