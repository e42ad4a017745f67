//! The canonical tensor list against real HF checkpoints: for every case under
//! `tests/data/hf_names/` (written by `tools/reference/hf_names.py`), import its
//! `config.json`, list `tensors()` and check that the HF bindings use every tensor of
//! `hf_tensors.json` exactly once with consistent shapes. The binding table of each case
//! is snapshotted next to it as `tensors.snap`.

use archc_spec::tensors::{tensors, Source, TensorSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_names");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn read_stored(dir: &Path) -> BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(dir.join("hf_tensors.json")).expect("hf_tensors.json");
    serde_json::from_str(&text).expect("hf_tensors.json is a map of name to shape")
}

/// The canonical shape `source` produces from the stored tensors, or why it cannot.
fn built_shape(source: &Source, stored: &BTreeMap<String, Vec<u64>>) -> Result<Vec<u64>, String> {
    let get = |n: &str| {
        stored
            .get(n)
            .cloned()
            .ok_or_else(|| format!("`{n}` is not in the checkpoint"))
    };
    let swap_last = |mut s: Vec<u64>| {
        let r = s.len();
        if r >= 2 {
            s.swap(r - 1, r - 2);
        }
        s
    };
    match source {
        Source::Plain { name } => get(name),
        Source::Transposed { name } => get(name).map(swap_last),
        Source::Slice {
            name,
            axis,
            start,
            len,
            stride,
            transpose,
        } => {
            let mut s = get(name)?;
            let dim = *s
                .get(*axis)
                .ok_or_else(|| format!("`{name}` has no axis {axis}"))?;
            if *len == 0 || start + (len - 1) * stride >= dim {
                return Err(format!(
                    "slice {start}+{len}x{stride} out of `{name}` axis {axis} of {dim}"
                ));
            }
            s[*axis] = *len;
            Ok(if *transpose { swap_last(s) } else { s })
        }
        Source::Stack { .. } => {
            let names = source.names();
            let first = get(&names[0])?;
            for n in &names[1..] {
                if get(n)? != first {
                    return Err(format!("`{n}` differs in shape from `{}`", names[0]));
                }
            }
            let mut s = vec![names.len() as u64];
            s.extend(first);
            Ok(s)
        }
    }
}

/// Every problem binding `list` to `stored`: unbound or misshapen tensors, stored
/// tensors used by no canonical tensor, or covered other than exactly once.
fn binding_problems(list: &[TensorSpec], stored: &BTreeMap<String, Vec<u64>>) -> Vec<String> {
    let mut problems = Vec::new();
    // Elements of each stored tensor the bindings cover, and the slices taken of it.
    let mut covered: BTreeMap<String, u64> = BTreeMap::new();
    let mut slices: BTreeMap<String, Vec<(usize, u64)>> = BTreeMap::new();
    for t in list {
        let Some(src) = &t.hf else {
            problems.push(format!("{} has no HF binding", t.name));
            continue;
        };
        match built_shape(src, stored) {
            Ok(shape) if shape == t.shape => {}
            Ok(shape) => problems.push(format!(
                "{}: expected shape {:?}, the binding builds {:?}",
                t.name, t.shape, shape
            )),
            Err(e) => problems.push(format!("{}: {e}", t.name)),
        }
        let names = src.names();
        let per_name = t.numel() / names.len().max(1) as u64;
        for n in names {
            *covered.entry(n.clone()).or_default() += per_name;
            if let Source::Slice {
                axis, start, name, ..
            } = src
            {
                let taken = slices.entry(name.clone()).or_default();
                if taken.contains(&(*axis, *start)) {
                    problems.push(format!("{}: slice of `{name}` taken twice", t.name));
                }
                taken.push((*axis, *start));
            }
        }
    }
    for (name, shape) in stored {
        let numel: u64 = shape.iter().product();
        match covered.get(name) {
            None => problems.push(format!(
                "`{name}` {shape:?} is bound by no canonical tensor"
            )),
            Some(&n) if n != numel => problems.push(format!(
                "`{name}` {shape:?}: bindings cover {n} of its {numel} elements"
            )),
            Some(_) => {}
        }
    }
    problems
}

fn describe(src: &Option<Source>) -> String {
    match src {
        None => "-".to_string(),
        Some(Source::Plain { name }) => name.clone(),
        Some(Source::Transposed { name }) => format!("{name} (transposed)"),
        Some(Source::Slice {
            name,
            axis,
            start,
            len,
            stride,
            transpose,
        }) => format!(
            "{name} [axis {axis}: {start}, +{len}, step {stride}]{}",
            if *transpose { " (transposed)" } else { "" }
        ),
        Some(Source::Stack { template, count }) => format!("stack {count} x {template}"),
    }
}

#[test]
fn hf_bindings_use_every_checkpoint_tensor_exactly_once() {
    let dirs = cases();
    assert!(
        dirs.len() >= 18,
        "expected a case per family, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in dirs {
        let case = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let config = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
        let spec = match archc_spec::import::from_config_json(&config, &case) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{case}: import failed: {e}"));
                continue;
            }
        };
        let list = tensors(&spec);
        let stored = read_stored(&dir);
        for p in binding_problems(&list, &stored) {
            failures.push(format!("{case}: {p}"));
        }

        let width = list.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let mut text = String::new();
        for t in &list {
            text += &format!(
                "{:<width$}  {:<16}  {:<15}  {}\n",
                t.name,
                format!("{:?}", t.shape),
                t.role.as_str(),
                describe(&t.hf)
            );
        }
        insta::with_settings!({
            snapshot_path => dir.clone(),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!("tensors", text);
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
