//! The build image: everything an executable or library made by `archc build` knows
//! about its model besides the machine code. `archc build` serialises it into the object
//! beside the kernels (`archc_image`); the ahead-of-time runtime reads it back at start.
//!
//! It holds the spec the programs were compiled from, where the weights were found, the
//! stored format of every parameter the kernels decode, the target and the CPU features
//! the code needs, and four programs as documents (`ProgramDoc`): prefill and decode for
//! generation (last position's logits, `--precision`), and prefill and decode for
//! `logits` (every position, f32 activations, what `archc logits` runs). Each program
//! lists, per kernel, its index in the linked kernel table (equal kernels are linked
//! once).

use archc_compiler::kernel::program::ProgramDoc;
use archc_spec::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `format` field of every build image.
pub const FORMAT: &str = "archc-build";
/// The layout version; a runtime refuses any other.
pub const VERSION: u32 = 1;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildImage {
    pub format: String,
    pub version: u32,
    /// The archc version that built it; the runtime linked in must be the same.
    pub archc: String,
    pub target: TargetDoc,
    /// x86 CPU features the machine code uses (as `is_x86_feature_detected!` names
    /// them), checked at start so that a machine without them gets an error, not
    /// `SIGILL`.
    pub needs: Vec<String>,
    pub weights: WeightsDoc,
    /// The model the programs compute.
    pub spec: Spec,
    /// `bf16` or `f32`: the activations of the generation programs.
    pub precision: String,
    /// Per parameter the kernels read as quantised blocks, the block format's name.
    pub formats: BTreeMap<String, String>,
    /// `[prefill, decode]` of generation.
    pub generate: [ProgramEntry; 2],
    /// `[prefill, decode]` of `logits` (every position, f32).
    pub logits: [ProgramEntry; 2],
    /// The number of functions in the linked kernel table.
    pub kernels: usize,
}

/// Where code runs: an LLVM triple, CPU and feature string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDoc {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// How the weights are stored and where they were at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsDoc {
    pub kind: WeightsKind,
    /// The path given at build time (absolute): the default when the executable is
    /// run without `--weights` and carries no embedded weights.
    pub path: String,
    /// Where the spec came from, and so what a weights file given at run time is
    /// checked against.
    pub spec_from: SpecFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsKind {
    /// A llama.cpp `.gguf` file (weights, tokenizer and template in one file).
    Gguf,
    /// An HF model directory (safetensors, `tokenizer.json`, `tokenizer_config.json`).
    HfDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecFrom {
    /// Imported from the GGUF metadata: weights given at run time must import to the
    /// same spec.
    Gguf,
    /// Imported from the directory's `config.json`: the same check.
    HfConfig,
    /// A `.arch` file: weights given at run time are checked tensor by tensor only.
    Arch,
}

/// One program: its document and, per kernel, the index of its function in the
/// linked kernel table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramEntry {
    pub doc: ProgramDoc,
    pub table: Vec<usize>,
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build image: {}", self.0)
    }
}

impl std::error::Error for ImageError {}

impl BuildImage {
    /// The image as bytes (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an image, refusing another format, version or archc version, and tables
    /// that do not fit `kernels` linked functions.
    pub fn from_bytes(bytes: &[u8], kernels: usize) -> Result<BuildImage, ImageError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
            archc: String,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| ImageError(format!("not an image: {e}")))?;
        if head.format != FORMAT || head.version != VERSION {
            return Err(ImageError(format!(
                "`{}` version {}; this runtime reads `{FORMAT}` version {VERSION}",
                head.format, head.version
            )));
        }
        if head.archc != env!("CARGO_PKG_VERSION") {
            return Err(ImageError(format!(
                "built by archc {}, linked with the runtime of archc {}",
                head.archc,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let image: BuildImage =
            serde_json::from_slice(bytes).map_err(|e| ImageError(format!("not an image: {e}")))?;
        if image.kernels != kernels {
            return Err(ImageError(format!(
                "{} kernels in the image, {kernels} linked",
                image.kernels
            )));
        }
        for (what, e) in image.entries() {
            if e.table.len() != e.doc.kernels.len() {
                return Err(ImageError(format!(
                    "{what}: {} table entries for {} kernels",
                    e.table.len(),
                    e.doc.kernels.len()
                )));
            }
            if let Some(&i) = e.table.iter().find(|&&i| i >= kernels) {
                return Err(ImageError(format!(
                    "{what}: kernel {i} is outside the table of {kernels}"
                )));
            }
        }
        Ok(image)
    }

    /// The four programs with their names.
    pub fn entries(&self) -> [(&'static str, &ProgramEntry); 4] {
        [
            ("generation prefill", &self.generate[0]),
            ("generation decode", &self.generate[1]),
            ("logits prefill", &self.logits[0]),
            ("logits decode", &self.logits[1]),
        ]
    }
}

/// The x86 features an LLVM CPU and feature string enable, among those the runtime can
/// check (`+avx512f,...` entries, plus the CPU's own for the fixed CPUs `archc build`
/// offers).
pub fn x86_needs(cpu: &str, features: &str) -> Vec<String> {
    const V3: &[&str] = &[
        "avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe",
    ];
    const V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
    const ZEN4: &[&str] = &["avx512bf16", "avx512vnni", "avx512vbmi", "avx512ifma"];
    let mut out: Vec<&str> = match cpu {
        "x86-64-v3" => V3.to_vec(),
        "x86-64-v4" => [V3, V4].concat(),
        "znver4" | "znver5" => [V3, V4, ZEN4].concat(),
        _ => Vec::new(),
    };
    for f in features.split(',') {
        if let Some(name) = f.strip_prefix('+') {
            if CHECKABLE.contains(&name) {
                out.push(name);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out.into_iter().map(str::to_string).collect()
}

/// The features `missing_features` can test on this machine.
const CHECKABLE: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "bmi1",
    "bmi2",
    "f16c",
    "lzcnt",
    "movbe",
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512bf16",
    "avx512vnni",
    "avx512vbmi",
    "avx512ifma",
];

/// Of `needs`, the features this machine lacks.
pub fn missing_features(needs: &[String]) -> Vec<String> {
    needs.iter().filter(|f| !has_feature(f)).cloned().collect()
}

#[cfg(target_arch = "x86_64")]
fn has_feature(f: &str) -> bool {
    match f {
        "avx" => std::arch::is_x86_feature_detected!("avx"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "bmi1" => std::arch::is_x86_feature_detected!("bmi1"),
        "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "lzcnt" => std::arch::is_x86_feature_detected!("lzcnt"),
        "movbe" => std::arch::is_x86_feature_detected!("movbe"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512cd" => std::arch::is_x86_feature_detected!("avx512cd"),
        "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
        "avx512ifma" => std::arch::is_x86_feature_detected!("avx512ifma"),
        // Only checkable names are recorded; anything else is not ours to refuse.
        _ => true,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn has_feature(_: &str) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_cpus_and_feature_strings_name_what_they_need() {
        let v3 = x86_needs("x86-64-v3", "");
        assert!(v3.contains(&"avx2".to_string()) && !v3.contains(&"avx512f".to_string()));
        let z4 = x86_needs("znver4", "");
        assert!(z4.contains(&"avx512bf16".to_string()));
        let host = x86_needs("znver4", "+avx512f,-avx512fp16,+sse4.2,+avx2");
        assert!(host.contains(&"avx512f".to_string()));
        assert!(!host.iter().any(|f| f == "avx512fp16" || f == "sse4.2"));
        assert!(missing_features(&["not-a-feature".to_string()]).is_empty());
    }
}
