//! A built model at run time: the build image read back, the weights found (given at
//! run time, embedded in the executable, or where they were at build time), checked
//! against what the kernels were compiled for, and CPU models over the linked kernels.

use super::embed;
use super::image::{missing_features, BuildImage, ProgramEntry, SpecFrom, WeightsKind};
use crate::bind::{bind, bind_gguf, BoundWeights};
use crate::exec::cpu::{CpuModel, Kernels, Linked};
use crate::exec::ExecError;
use crate::tokenize::Tokenizer;
use crate::weights::gguf::GgufFile;
use crate::weights::Checkpoint;
use archc_compiler::codegen::KernelFn;
use archc_compiler::interp::WeightSource;
use archc_compiler::kernel::BufferKind;
use archc_spec::Spec;
use std::path::PathBuf;

/// Which pair of programs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programs {
    /// Generation: the last position's logits of a prefill, `--precision` activations.
    Generate,
    /// `logits`: every position, f32 activations (what `archc logits` computes).
    Logits,
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsAt {
    /// A path given at run time (`--weights`, `archc_model_open`).
    Given(PathBuf),
    /// Embedded in the executable, or else the build-time path.
    Default,
}

/// A built model, ready to make CPU models.
#[derive(Debug)]
pub struct AotModel {
    image: BuildImage,
    fns: Vec<KernelFn>,
    weights: BoundWeights,
    /// Loaded when asked for (generation); `logits` and the C API take token ids.
    tokenizer: Option<Tokenizer>,
    /// The weights as shown in messages.
    shown: String,
}

impl AotModel {
    /// Reads `image` (the bytes `archc build` linked in) over the linked kernel table
    /// `fns`, and opens the weights, with their tokenizer when `tokenizer` is set.
    pub fn open(
        image: &[u8],
        fns: &[KernelFn],
        at: &WeightsAt,
        tokenizer: bool,
    ) -> Result<AotModel, String> {
        let image = BuildImage::from_bytes(image, fns.len()).map_err(|e| e.to_string())?;
        let missing = missing_features(&image.needs);
        if !missing.is_empty() {
            return Err(format!(
                "this build's code is for `{}` CPUs (target `{}`); this machine lacks {}; rebuild with `archc build --target host` on it",
                image.target.cpu,
                image.target.triple,
                missing.join(", ")
            ));
        }
        let (weights, tokenizer, shown) = open_weights(&image, at, tokenizer)?;
        check_formats(&image, &weights, &shown)?;
        Ok(AotModel {
            image,
            fns: fns.to_vec(),
            weights,
            tokenizer,
            shown,
        })
    }

    pub fn image(&self) -> &BuildImage {
        &self.image
    }

    pub fn spec(&self) -> &Spec {
        &self.image.spec
    }

    /// The tokenizer, when the model was opened with it.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn weights(&self) -> &BoundWeights {
        &self.weights
    }

    /// The weights' path (or `<exe> (embedded)`), for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A CPU model of one pair of programs over these weights, on `threads` threads.
    pub fn cpu_model(&self, which: Programs, threads: usize) -> Result<CpuModel<'_>, ExecError> {
        let [prefill, decode] = match which {
            Programs::Generate => &self.image.generate,
            Programs::Logits => &self.image.logits,
        };
        let vocab = usize::try_from(self.image.spec.vocab)
            .map_err(|_| ExecError::Program("vocabulary too large".into()))?;
        CpuModel::from_docs(
            (prefill.doc.clone(), self.kernels(prefill)?),
            (decode.doc.clone(), self.kernels(decode)?),
            &self.weights,
            vocab,
            threads,
        )
    }

    fn kernels(&self, entry: &ProgramEntry) -> Result<Box<dyn Kernels>, ExecError> {
        let fns = entry.table.iter().map(|&i| self.fns[i]).collect();
        Ok(Box::new(Linked::new(fns, entry.doc.kernels.len())?))
    }
}

/// Opens the weights the image describes, at `at`.
fn open_weights(
    image: &BuildImage,
    at: &WeightsAt,
    tokenizer: bool,
) -> Result<(BoundWeights, Option<Tokenizer>, String), String> {
    let spec = &image.spec;
    if let WeightsAt::Default = at {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        if let Some(index) = embed::read_index(&exe)? {
            let shown = format!("{} (embedded weights)", exe.display());
            let file = |name: &str| {
                index
                    .iter()
                    .find(|e| e.name == name)
                    .ok_or_else(|| format!("{shown}: no embedded `{name}`"))
            };
            return match image.weights.kind {
                WeightsKind::Gguf => {
                    let e = file("model.gguf")?;
                    let gguf = GgufFile::open_at(&exe, e.offset, e.len)
                        .map_err(|e| format!("{shown}: {e}"))?;
                    from_gguf(image, gguf, shown, tokenizer)
                }
                WeightsKind::HfDir => from_embedded_dir(image, &exe, &index, shown, tokenizer),
            };
        }
    }
    let path = match at {
        WeightsAt::Given(p) => p.clone(),
        WeightsAt::Default => PathBuf::from(&image.weights.path),
    };
    let shown = path.display().to_string();
    match image.weights.kind {
        WeightsKind::Gguf => {
            let gguf = GgufFile::open(&path).map_err(|e| e.to_string())?;
            from_gguf(image, gguf, shown, tokenizer)
        }
        WeightsKind::HfDir => {
            if !path.is_dir() {
                return Err(format!(
                    "{shown}: not a model directory (this build runs HF checkpoints)"
                ));
            }
            if image.weights.spec_from == SpecFrom::HfConfig {
                let theirs =
                    archc_spec::import::from_path(&path).map_err(|e| format!("{shown}: {e}"))?;
                same_spec(spec, &theirs, &shown)?;
            }
            let tokenizer = tokenizer
                .then(|| Tokenizer::from_hf_dir(&path))
                .transpose()
                .map_err(|e| format!("{shown}: tokenizer: {e}"))?;
            let checkpoint = Checkpoint::open(&path).map_err(|e| e.to_string())?;
            let weights = bind(spec, checkpoint).map_err(|e| format!("{shown}: {e}"))?;
            Ok((weights, tokenizer, shown))
        }
    }
}

/// The largest embedded text file (config, tokenizer) read into memory.
const MAX_TEXT_FILE: u64 = 256 << 20;

/// An HF directory embedded as `hf/NAME` files: shards mapped in place, the config and
/// tokenizer files read.
fn from_embedded_dir(
    image: &BuildImage,
    exe: &std::path::Path,
    index: &[embed::Embedded],
    shown: String,
    tokenizer: bool,
) -> Result<(BoundWeights, Option<Tokenizer>, String), String> {
    let read = |name: &str| -> std::io::Result<Option<String>> {
        let Some(e) = index.iter().find(|e| e.name == format!("hf/{name}")) else {
            return Ok(None);
        };
        if e.len > MAX_TEXT_FILE {
            return Err(std::io::Error::other(format!("{} bytes", e.len)));
        }
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(exe)?;
        f.seek(std::io::SeekFrom::Start(e.offset))?;
        let mut bytes = vec![0u8; e.len as usize];
        f.read_exact(&mut bytes)?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| std::io::Error::other("not UTF-8"))
    };
    let dir = std::path::Path::new(&shown);
    if image.weights.spec_from == SpecFrom::HfConfig {
        let text = read("config.json")
            .map_err(|e| format!("{shown}: config.json: {e}"))?
            .ok_or_else(|| format!("{shown}: no embedded config.json"))?;
        let theirs = archc_spec::import::from_config_json(&text, &shown)
            .map_err(|e| format!("{shown}: {e}"))?;
        same_spec(&image.spec, &theirs, &shown)?;
    }
    let mut files = Vec::new();
    for e in index.iter().filter(|e| e.name.ends_with(".safetensors")) {
        let f = crate::weights::safetensors::SafetensorsFile::open_at(exe, e.offset, e.len)
            .map_err(|err| format!("{shown}: {}: {err}", e.name))?;
        files.push(f);
    }
    let checkpoint = Checkpoint::from_open_files(files).map_err(|e| format!("{shown}: {e}"))?;
    let tokenizer = tokenizer
        .then(|| Tokenizer::from_hf_files(dir, &read))
        .transpose()
        .map_err(|e| format!("{shown}: tokenizer: {e}"))?;
    let weights = bind(&image.spec, checkpoint).map_err(|e| format!("{shown}: {e}"))?;
    Ok((weights, tokenizer, shown))
}

fn from_gguf(
    image: &BuildImage,
    gguf: GgufFile,
    shown: String,
    tokenizer: bool,
) -> Result<(BoundWeights, Option<Tokenizer>, String), String> {
    if image.weights.spec_from == SpecFrom::Gguf {
        let theirs =
            archc_spec::import::gguf::from_gguf_metadata(gguf.metadata(), &gguf.names(), &shown)
                .map_err(|e| format!("{shown}: {e}"))?;
        same_spec(&image.spec, &theirs, &shown)?;
    }
    let tokenizer = tokenizer
        .then(|| Tokenizer::from_gguf(&gguf))
        .transpose()
        .map_err(|e| format!("{shown}: tokenizer: {e}"))?;
    let weights = bind_gguf(&image.spec, gguf).map_err(|e| format!("{shown}: {e}"))?;
    Ok((weights, tokenizer, shown))
}

/// Refuses weights whose metadata describes another model than the compiled one,
/// naming the first field that differs (the name aside).
fn same_spec(ours: &Spec, theirs: &Spec, shown: &str) -> Result<(), String> {
    // The name is a label (GGUF's `general.name`, a file name); it changes no number.
    let theirs = &Spec {
        name: ours.name.clone(),
        ..theirs.clone()
    };
    if ours == theirs {
        return Ok(());
    }
    let a = serde_json::to_value(ours).unwrap_or_default();
    let b = serde_json::to_value(theirs).unwrap_or_default();
    let null = serde_json::Value::Null;
    let (path, compiled, found) =
        first_difference(&a, &b, String::new(), &null).unwrap_or(("the spec".into(), &a, &b));
    Err(format!(
        "{shown}: these weights describe another model than the one this build compiled ({path} differs: {} here, {} compiled); build again for them",
        short(found),
        short(compiled)
    ))
}

/// The path of the first value that differs between `a` and `b`, with both values (a
/// key one side lacks is `null` there).
fn first_difference<'v>(
    a: &'v serde_json::Value,
    b: &'v serde_json::Value,
    at: String,
    null: &'v serde_json::Value,
) -> Option<(String, &'v serde_json::Value, &'v serde_json::Value)> {
    use serde_json::Value;
    let key = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .map(|(k, v)| (k, v, y.get(k).unwrap_or(null)))
            .chain(
                y.iter()
                    .filter(|(k, _)| !x.contains_key(*k))
                    .map(|(k, w)| (k, null, w)),
            )
            .find(|(_, v, w)| v != w)
            .and_then(|(k, v, w)| first_difference(v, w, key(k), null)),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (v, w))| v != w)
            .and_then(|(i, (v, w))| first_difference(v, w, format!("{at}[{i}]"), null)),
        _ if a == b => None,
        _ => Some((at, a, b)),
    }
}

/// A JSON value for a message, cut to 60 characters.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Every parameter the kernels read must be stored as they were compiled for: the same
/// block format, or floats where they read floats.
fn check_formats(image: &BuildImage, weights: &BoundWeights, shown: &str) -> Result<(), String> {
    for (_, entry) in image.entries() {
        for b in &entry.doc.buffers {
            if b.kind != BufferKind::Param {
                continue;
            }
            let name = b.name.strip_prefix('@').unwrap_or(&b.name);
            let stored = weights.blocks(name).map(|v| v.format.name());
            let compiled = image.formats.get(name).map(String::as_str);
            if stored != compiled {
                let say =
                    |f: Option<&str>| f.map_or("floats".to_string(), |f| format!("{f} blocks"));
                return Err(format!(
                    "{shown}: tensor `{name}` is stored as {}, but this build's kernels were compiled for {}; build again for these weights",
                    say(stored),
                    say(compiled)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named_with_both_values() {
        let a = serde_json::json!({"hidden": 64, "blocks": [{"rope": 1e4}, {"rope": 1e4}]});
        let b = serde_json::json!({"hidden": 64, "blocks": [{"rope": 1e4}, {"rope": 5e5}]});
        let null = serde_json::Value::Null;
        let (path, x, y) = first_difference(&a, &b, String::new(), &null).expect("differs");
        assert_eq!(
            (path.as_str(), x.to_string(), y.to_string()),
            ("blocks[1].rope", "10000.0".into(), "500000.0".into())
        );
        let c = serde_json::json!({"hidden": 64});
        let (path, x, y) = first_difference(&c, &a, String::new(), &null).expect("differs");
        assert_eq!(
            (path.as_str(), x, short(y).len() <= 60),
            ("blocks", &null, true)
        );
        assert!(first_difference(&a, &a, String::new(), &null).is_none());
    }
}
