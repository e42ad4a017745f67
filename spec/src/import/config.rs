//! Typed, error-reporting access to the keys of an HF config object.
//!
//! Every accessor names the key by its full path (`text_config.rope_scaling.factor`) and
//! the file in its errors. A key set to `null` counts as absent, as it does for HF.

use serde_json::{Map, Value};

use super::ImportError;
use crate::validate::{MAX_LAYERS, MAX_SIZE};

/// A JSON object of a config (the top level or a nested dict), with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Config<'a> {
    map: &'a Map<String, Value>,
    file: &'a str,
    /// Path of this object inside the file, with a trailing dot (`""` at the top level).
    prefix: String,
    /// The enclosing multimodal config, whose keys a text config may inherit.
    parent: Option<&'a Map<String, Value>>,
}

/// A short description of a JSON value's type for error messages.
pub(crate) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl<'a> Config<'a> {
    pub fn root(map: &'a Map<String, Value>, file: &'a str) -> Self {
        Config {
            map,
            file,
            prefix: String::new(),
            parent: None,
        }
    }

    pub fn file(&self) -> &'a str {
        self.file
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The key is present and set to `null` (which some keys use to switch a feature off).
    pub fn raw_is_null(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(Value::is_null)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn missing(&self, key: &str) -> ImportError {
        ImportError::MissingKey {
            file: self.file.to_string(),
            key: self.path(key),
        }
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> ImportError {
        ImportError::WrongType {
            file: self.file.to_string(),
            key: self.path(key),
            expected,
            found: kind(found),
        }
    }

    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            file: self.file.to_string(),
            key: self.path(key),
            message: message.into(),
        }
    }

    fn as_u64(&self, key: &str, v: &Value) -> Result<u64, ImportError> {
        const EXPECTED: &str = "a non-negative integer";
        // Some configs write sizes as floats (`4096.0`); accept those that are whole.
        let n = match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => n,
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => f as u64,
            _ => return Err(self.wrong(key, EXPECTED, v)),
        };
        // Every integer archc reads from a config is a size; the cap keeps later
        // products (and the allocations sized by them) sane.
        if n > MAX_SIZE {
            return Err(self.invalid(
                key,
                format!("{n} is more than the largest supported size, {MAX_SIZE} (2^32)"),
            ));
        }
        Ok(n)
    }

    /// The number of layers under `key`: required, between 1 and `MAX_LAYERS`, checked
    /// before any per-layer list is built from it.
    pub fn req_layers(&self, key: &str) -> Result<u64, ImportError> {
        let n = self.req_u64(key)?;
        if n == 0 || n > MAX_LAYERS {
            return Err(self.invalid(
                key,
                format!("{n} layers is outside the supported range 1..={MAX_LAYERS}"),
            ));
        }
        Ok(n)
    }

    pub fn req_u64(&self, key: &str) -> Result<u64, ImportError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        self.as_u64(key, v)
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ImportError> {
        self.get(key).map(|v| self.as_u64(key, v)).transpose()
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, ImportError> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    /// The first of several alias keys that is present.
    pub fn opt_u64_any(&self, keys: &[&str]) -> Result<Option<u64>, ImportError> {
        for key in keys {
            if let Some(v) = self.opt_u64(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The first present alias, or a missing-key error naming the first (canonical) one.
    pub fn req_u64_any(&self, keys: &[&str]) -> Result<u64, ImportError> {
        self.opt_u64_any(keys)?.ok_or_else(|| self.missing(keys[0]))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    pub fn req_f64(&self, key: &str) -> Result<f64, ImportError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, ImportError> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ImportError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, ImportError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str, ImportError> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    fn opt_list(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<&'a Vec<Value>>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => Err(self.wrong(key, expected, v)),
        }
    }

    pub fn opt_u64_list(&self, key: &str) -> Result<Option<Vec<u64>>, ImportError> {
        const EXPECTED: &str = "a list of non-negative integers";
        let Some(items) = self.opt_list(key, EXPECTED)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| self.wrong(key, EXPECTED, v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn opt_str_list(&self, key: &str) -> Result<Option<Vec<String>>, ImportError> {
        const EXPECTED: &str = "a list of strings";
        let Some(items) = self.opt_list(key, EXPECTED)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(key, EXPECTED, v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A nested object such as `rope_scaling`; absent or `null` is `None`.
    pub fn opt_object(&self, key: &str) -> Result<Option<Config<'a>>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Config {
                map,
                file: self.file,
                prefix: format!("{}{key}.", self.prefix),
                parent: self.parent,
            })),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    /// The `text_config` of a multimodal config; it inherits the top-level tie flag.
    pub fn text_config(&self) -> Result<Config<'a>, ImportError> {
        let mut text = self
            .opt_object("text_config")?
            .ok_or_else(|| self.missing("text_config"))?;
        text.parent = Some(self.map);
        Ok(text)
    }

    /// The enclosing multimodal config of a `text_config`.
    pub fn outer(&self) -> Option<Config<'a>> {
        self.parent.map(|parent| Config::root(parent, self.file))
    }

    /// `tie_word_embeddings`, falling back to the enclosing multimodal config's value and
    /// then to the family's default.
    pub fn tied_or(&self, default: bool) -> Result<bool, ImportError> {
        if let Some(v) = self.opt_bool("tie_word_embeddings")? {
            return Ok(v);
        }
        if let Some(outer) = self.outer() {
            if let Some(v) = outer.opt_bool("tie_word_embeddings")? {
                return Ok(v);
            }
        }
        Ok(default)
    }
}
