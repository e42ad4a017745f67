//! Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, HF
//! `tokenizer_config.json`) rendered with minijinja the way HF transformers renders it, and a
//! `Conversation` that accumulates turns.
//!
//! HF compiles templates with `trim_blocks` and `lstrip_blocks`, provides `raise_exception`
//! and `strftime_now`, and a `tojson` that writes Python's `json.dumps` format (`", "` and
//! `": "` separators, no HTML escaping, non-ASCII kept); this module does the same, and
//! accepts the Python string methods (`.strip()`, `.startswith()`, ...) templates call.
//!
//! A template is untrusted code, so every render is bounded (`bounds.rs`): in instructions
//! (fuel), recursion, the size of each value it builds and the bytes it builds and writes
//! in all. It runs as `rewrite.rs` rewrites its compiled instructions, which sends every
//! operator and output that could grow without limit through the bounded functions.

mod bounds;
mod consts;
#[cfg(test)]
mod limit_tests;
mod rewrite;

use std::collections::BTreeMap;
use std::fmt;

use minijinja::machinery::{self, Vm};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::tokenize::Tokenizer;

pub use bounds::{
    MAX_LIST_ITEMS, MAX_MEASURE_STEPS, MAX_RENDER_BYTES, MAX_TEMPLATE_BYTES, MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH, TEMPLATE_FUEL, TEMPLATE_RECURSION_LIMIT,
};

/// A chat-template error: which step failed, with minijinja's account of where and why
/// (its error and the chain of causes under it).
#[derive(Debug)]
pub enum ChatError {
    /// The template's source is longer than [`MAX_TEMPLATE_BYTES`].
    TooLarge { bytes: usize },
    /// The template's source does not compile.
    Compile(Error),
    /// The compiled template cannot be found in its environment.
    Load(Error),
    /// Rendering failed: a `raise_exception` of the template, an undefined value, a type
    /// error.
    Render(Error),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (step, e) = match self {
            ChatError::TooLarge { bytes } => {
                return write!(
                    f,
                    "the chat template is {bytes} bytes, over the bound of {MAX_TEMPLATE_BYTES}"
                )
            }
            ChatError::Compile(e) => ("compiling the chat template", e),
            ChatError::Load(e) => ("loading the chat template", e),
            ChatError::Render(e) => ("rendering the chat template", e),
        };
        write!(f, "{step}: {e}")?;
        // minijinja's own message leaves out its causes (a `tojson` serde error, say).
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for ChatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChatError::Compile(e) | ChatError::Load(e) | ChatError::Render(e) => Some(e),
            ChatError::TooLarge { .. } => None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compile `source`. `bos_token`/`eos_token` are the strings the template sees under
    /// those names (empty when the model has none).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(ChatError::TooLarge {
                bytes: source.len(),
            });
        }
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(bounds::format);
        env.set_unknown_method_callback(bounds::unknown_method);
        env.add_function(rewrite::CONCAT, bounds::concat);
        env.add_function(rewrite::ADD, bounds::add);
        env.add_function(rewrite::MUL, bounds::mul);
        env.add_function(rewrite::CHECKED, bounds::checked);
        for name in bounds::GUARDED_FILTERS {
            env.add_filter(name, bounds::guarded_filter(name));
        }
        consts::check(source, TEMPLATE_NAME).map_err(ChatError::Compile)?;
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME.to_owned(), source.to_owned())
            .map_err(ChatError::Compile)?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template a tokenizer carries, with its BOS/EOS texts; `None` when it has none.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Option<Self>, ChatError> {
        tokenizer
            .chat_template()
            .map(|source| {
                Self::new(
                    source,
                    tokenizer.bos_text().unwrap_or(""),
                    tokenizer.eos_text().unwrap_or(""),
                )
            })
            .transpose()
    }

    /// Render `messages`; `add_generation_prompt` appends the opening of an assistant turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_context(Value::from_serialize(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        }))
    }

    /// Render with `root` as the template's variables, within the bounds.
    fn render_context(&self, root: Value) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatError::Load)?;
        let compiled = machinery::get_compiled_template(&template);
        let instructions = rewrite::rewrite(&compiled.instructions);
        let blocks: BTreeMap<_, _> = compiled
            .blocks
            .iter()
            .map(|(name, block)| (*name, rewrite::rewrite(block)))
            .collect();
        let mut text = String::new();
        let _account = bounds::RenderGuard::enter();
        Vm::new(&self.env)
            .eval(
                &instructions,
                root,
                &blocks,
                &mut machinery::make_string_output(&mut text),
                compiled.initial_auto_escape,
            )
            .map_err(ChatError::Render)?;
        if text.len() > MAX_VALUE_BYTES {
            return Err(ChatError::Render(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the rendered prompt is {} bytes, over the bound of {MAX_VALUE_BYTES}",
                    text.len()
                ),
            )));
        }
        Ok(text)
    }
}

/// A multi-turn conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start with a system prompt.
    pub fn with_system(system: impl Into<String>) -> Self {
        Self {
            messages: vec![Message::new("system", system)],
        }
    }

    pub fn push(&mut self, role: impl Into<String>, content: impl Into<String>) -> &mut Self {
        self.messages.push(Message::new(role, content));
        self
    }

    pub fn user(&mut self, content: impl Into<String>) -> &mut Self {
        self.push("user", content)
    }

    pub fn assistant(&mut self, content: impl Into<String>) -> &mut Self {
        self.push("assistant", content)
    }

    /// The prompt for the next assistant turn.
    pub fn prompt(&self, template: &ChatTemplate) -> Result<String, ChatError> {
        template.render(&self.messages, true)
    }

    /// The conversation as it stands, without opening a new turn.
    pub fn transcript(&self, template: &ChatTemplate) -> Result<String, ChatError> {
        template.render(&self.messages, false)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC time. Only the directives templates use are
/// supported (`%Y %m %d %H %M %S %B %b %A %a %e %j %%`); others are kept verbatim.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(secs, &format)
}

/// Format a Unix time (UTC) with a subset of C's strftime.
pub fn strftime(unix_secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Civil-from-days (proleptic Gregorian), valid for all u64 day counts we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[(days % 7) as usize];
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as HF defines it: Python `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // HF accepts these arguments too; sort_keys is honoured, the others are Python defaults.
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "tojson: value is not JSON").with_source(e)
    })?;
    let mut out = String::new();
    write_python_json(&json, indent, 0, sort_keys.unwrap_or(false), &mut out).map_err(|()| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: the text would be over the bound of {MAX_VALUE_BYTES} bytes"),
        )
    })?;
    bounds::spend_bytes(out.len())?;
    Ok(Value::from_safe_string(out))
}

/// Write `v` as Python's `json.dumps` does: `", "` and `": "` separators on one line, or
/// newlines with `indent` spaces per level and `","` at line ends when `indent` is given.
/// Fails when the text would pass [`MAX_VALUE_BYTES`].
fn write_python_json(
    v: &serde_json::Value,
    indent: Option<usize>,
    level: usize,
    sort_keys: bool,
    out: &mut String,
) -> Result<(), ()> {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| -> Result<(), ()> {
        if let Some(step) = indent {
            let pad = step.saturating_mul(level);
            if out.len().saturating_add(pad) >= MAX_VALUE_BYTES {
                return Err(());
            }
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', pad));
        }
        Ok(())
    };
    if out.len() > MAX_VALUE_BYTES {
        return Err(());
    }
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1)?;
                write_python_json(item, indent, level + 1, sort_keys, out)?;
            }
            newline(out, level)?;
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &J)> = map.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1)?;
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, level + 1, sort_keys, out)?;
            }
            newline(out, level)?;
            out.push('}');
        }
        J::Array(_) => out.push_str("[]"),
        J::Object(_) => out.push_str("{}"),
        J::Number(n) => match n.as_f64() {
            // Python writes integral floats with ".0"; serde_json keeps integers integral.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.is_finite() => {
                out.push_str(&format!("{f:.1}"))
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        assert_eq!(
            strftime(0, "%Y-%m-%d %H:%M:%S %A"),
            "1970-01-01 00:00:00 Thursday"
        );
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(
            strftime(1_709_210_096, "%d %B %Y %j %a %b"),
            "29 February 2024 060 Thu Feb"
        );
    }

    #[test]
    fn tojson_is_python_style() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}", "", "").unwrap();
        let x = serde_json::json!({"a": [1, 2.0, "<é>"], "b": {}});
        let out = t
            .render_context(Value::from_serialize(minijinja::context! { x => x }))
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, 2.0, \"<é>\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    2.0,\n    \"<é>\"\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn raise_exception_surfaces_the_message() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn python_string_methods_and_block_trimming() {
        // Expected outputs are what jinja2 renders with HF's settings.
        let src = "{% for m in messages %}\n  {{ m.content.strip() }}{% if m.role.startswith('u') %}!{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let msgs = [Message::new("user", "  hi  ")];
        assert_eq!(t.render(&msgs, false).unwrap(), "  hi!");
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content.strip() }};\n    {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&msgs, false).unwrap(), "hi;\n");
    }
}
