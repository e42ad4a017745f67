//! The text front end shared by `archc run` and the executables `archc build` makes: the
//! generation options (one clap definition, so both accept the same flags with the same
//! defaults), prompts through the chat template, streamed text or one JSON object, and
//! the speed line. Both print exactly the same things for the same model and settings.

use crate::chat::{ChatTemplate, Conversation, Message};
use crate::generate::{Generation, Generator, Limits, Model, OutputError};
use crate::sample::{Sampler, SamplerConfig};
use crate::tokenize::Tokenizer;
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};

/// The options of a generation: what to send and how to sample and show the reply.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Generate one reply to (or, with --raw, one continuation of) this text.
    #[arg(long, conflicts_with = "chat")]
    pub prompt: Option<String>,
    /// An interactive conversation: one user turn per line of stdin, until EOF.
    #[arg(long)]
    pub chat: bool,
    /// The system message of the conversation (chat template only).
    #[arg(long, conflicts_with = "raw")]
    pub system: Option<String>,
    /// Plain completion of --prompt: no chat template.
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// The most tokens to generate (per turn with --chat).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding (always the most likely token).
    #[arg(long, default_value_t = 0.8, allow_hyphen_values = true)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens; 0 for all.
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities sum to P.
    #[arg(long, default_value_t = 0.95, allow_hyphen_values = true)]
    pub top_p: f32,
    /// Seed of the sampler: the same seed, settings and prompt give the same text.
    /// Default: taken from the clock (and reported with --json).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object on stdout at the end instead of streaming the text:
    /// `tokens` (generated ids, without the end-of-generation token), `text`,
    /// `prefill_tok_s`, `decode_tok_s`, and `prefill_tokens`, `decode_tokens`, `stop`
    /// (`eog`, `max_tokens` or `context`), `seed`, `load_s` (opening, binding and compiling the
    /// model) and `first_token_s` (loading plus the prefill: the time to the first
    /// token). Needs --prompt.
    #[arg(long, conflicts_with = "chat")]
    pub json: bool,
}

/// Why the front end failed; the message is what the command prints. (Not an `Error`
/// itself, so that every typed error converts into it with `?`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontError(pub String);

impl fmt::Display for FrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for FrontError {
    fn from(e: E) -> FrontError {
        FrontError(e.to_string())
    }
}

impl GenerateArgs {
    /// Checks the combinations clap cannot: `--json` and `--raw` need `--prompt`.
    pub fn check(&self) -> Result<(), FrontError> {
        if self.json && self.prompt.is_none() {
            return Err(FrontError("--json needs --prompt TEXT".into()));
        }
        if self.raw && self.prompt.is_none() {
            return Err(FrontError("--raw needs --prompt TEXT".into()));
        }
        Ok(())
    }

    /// The seed: `--seed`, else one from the clock.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
    }

    /// The sampler of these options with `seed`.
    pub fn sampler(&self, seed: u64) -> Result<Sampler, FrontError> {
        Ok(Sampler::new(SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
        })?)
    }

    /// The chat template to use: the tokenizer's, unless `--raw`. `model` names the
    /// model in errors.
    pub fn template(
        &self,
        tokenizer: &Tokenizer,
        model: &str,
    ) -> Result<Option<ChatTemplate>, FrontError> {
        let template = if self.raw {
            None
        } else {
            ChatTemplate::from_tokenizer(tokenizer)
                .map_err(|e| FrontError(format!("{model}: chat template: {e}")))?
        };
        if template.is_none() && !self.raw && self.system.is_some() {
            return Err(FrontError(format!(
                "{model} has no chat template, so --system has no place to go"
            )));
        }
        Ok(template)
    }
}

/// One generation job: the options, the tokenizer and template, the limits, and when
/// the model started to load (the time to the first token counts from there).
#[derive(Debug)]
pub struct Job<'a> {
    pub args: &'a GenerateArgs,
    pub started: std::time::Instant,
    pub tokenizer: &'a Tokenizer,
    pub template: Option<&'a ChatTemplate>,
    pub limits: &'a Limits,
    pub seed: u64,
}

impl Job<'_> {
    /// Runs the job: one reply to `--prompt`, or a conversation over stdin.
    pub fn drive<M: Model>(
        &self,
        mut generator: Generator<M>,
        sampler: &mut Sampler,
    ) -> Result<(), FrontError> {
        match &self.args.prompt {
            Some(prompt) => self.once(&mut generator, sampler, prompt),
            None => self.chat(&mut generator, sampler),
        }
    }

    /// Prompt ids: the text through the chat template (with the system message), or as
    /// it is with `--raw` or for a model without a template.
    fn encode(&self, messages: Option<&[Message]>, text: &str) -> Result<Vec<u32>, FrontError> {
        match (self.template, messages) {
            (Some(t), Some(m)) => {
                let rendered = t.render(m, true)?;
                self.tokenizer
                    .encode(&rendered, true, true)
                    .map_err(|e| FrontError(format!("tokenizing the prompt: {e}")))
            }
            _ => self
                .tokenizer
                .encode(text, true, false)
                .map_err(|e| FrontError(format!("tokenizing the prompt: {e}"))),
        }
    }

    fn once<M: Model>(
        &self,
        generator: &mut Generator<M>,
        sampler: &mut Sampler,
        prompt: &str,
    ) -> Result<(), FrontError> {
        let mut conversation = match &self.args.system {
            Some(s) => Conversation::with_system(s.clone()),
            None => Conversation::new(),
        };
        conversation.user(prompt);
        let ids = self.encode(Some(&conversation.messages), prompt)?;
        let json = self.args.json;
        let mut stdout = std::io::stdout();
        let mut show = |piece: &str| -> Result<(), OutputError> {
            if json {
                return Ok(());
            }
            write_piece(&mut stdout, piece)
        };
        let g = generator.generate_text(&ids, sampler, self.limits, self.tokenizer, &mut show)?;
        // Loading (compiling, binding) ended where generation began; the first token is
        // sampled right after the prefill.
        let load_s = (self.started.elapsed())
            .saturating_sub(g.prefill.time + g.decode.time)
            .as_secs_f64();
        let mut out = std::io::stdout();
        let written = if json {
            let obj = serde_json::json!({
                "tokens": g.tokens,
                "text": g.text,
                "prefill_tok_s": g.prefill.tok_per_s(),
                "decode_tok_s": g.decode.tok_per_s(),
                "prefill_tokens": g.prefill.tokens,
                "decode_tokens": g.decode.tokens,
                "stop": g.stop.as_str(),
                "seed": self.seed,
                "load_s": load_s,
                "first_token_s": load_s + g.prefill.time.as_secs_f64(),
            });
            writeln!(out, "{obj}")
        } else {
            writeln!(out)
        };
        written
            .and_then(|()| out.flush())
            .map_err(|e| FrontError(format!("writing to stdout: {e}")))?;
        eprintln!("{}", speed_line(&g));
        Ok(())
    }

    fn chat<M: Model>(
        &self,
        generator: &mut Generator<M>,
        sampler: &mut Sampler,
    ) -> Result<(), FrontError> {
        if self.template.is_none() {
            return Err(FrontError(
                "this model has no chat template: use --prompt TEXT --raw for plain completion"
                    .into(),
            ));
        }
        let interactive = std::io::stdin().is_terminal();
        if interactive {
            eprintln!("Chatting with the model; end with Ctrl-D.");
        }
        let mut conversation = match &self.args.system {
            Some(s) => Conversation::with_system(s.clone()),
            None => Conversation::new(),
        };
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            if interactive {
                eprint!("> ");
            }
            let Some(line) = lines.next() else { break };
            let line = line.map_err(|e| FrontError(format!("reading stdin: {e}")))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            conversation.user(line);
            let ids = self.encode(Some(&conversation.messages), line)?;
            let mut stdout = std::io::stdout();
            let mut show = |piece: &str| write_piece(&mut stdout, piece);
            let g =
                generator.generate_text(&ids, sampler, self.limits, self.tokenizer, &mut show)?;
            write_piece(&mut stdout, "\n")
                .map_err(|e| FrontError(format!("writing to stdout: {e}")))?;
            eprintln!("{}", speed_line(&g));
            // The reply as generated, so that the next prompt starts with the cached tokens.
            conversation.assistant(g.text.clone());
        }
        if interactive {
            eprintln!();
        }
        Ok(())
    }
}

/// Writes a piece of generated text to stdout at once, so that it streams.
fn write_piece(stdout: &mut std::io::Stdout, piece: &str) -> Result<(), OutputError> {
    stdout
        .write_all(piece.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing to stdout: {e}").into())
}

/// `prefill: N tok, X tok/s; decode: M tok, Y tok/s`.
pub fn speed_line(g: &Generation) -> String {
    format!(
        "prefill: {} tok, {:.1} tok/s; decode: {} tok, {:.1} tok/s",
        g.prefill.tokens,
        g.prefill.tok_per_s(),
        g.decode.tokens,
        g.decode.tok_per_s()
    )
}

/// `1,2,3` → token ids, each below `vocab`, at most `context` of them (positions past the
/// context have no meaning: a learned position table has no row for them); errors name the
/// entry (`--tokens`).
pub fn parse_tokens(text: &str, vocab: u64, context: u64) -> Result<Vec<u32>, FrontError> {
    if text.trim().is_empty() {
        return Err(FrontError(
            "--tokens is empty: give at least one token id, e.g. --tokens 1,2,3".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, part) in text.split(',').enumerate() {
        let part = part.trim();
        let id: u64 = part.parse().map_err(|_| {
            FrontError(format!(
                "--tokens: entry {i} ({part:?}) is not a non-negative integer"
            ))
        })?;
        if id >= vocab {
            return Err(FrontError(format!(
                "--tokens: entry {i} is token id {id}, but the vocabulary has {vocab} tokens (ids 0..{})",
                vocab.saturating_sub(1)
            )));
        }
        let id = u32::try_from(id).map_err(|_| {
            FrontError(format!(
                "--tokens: entry {i} is token id {id}, beyond 32-bit ids"
            ))
        })?;
        if out.len() as u64 >= context {
            let n = text.split(',').count();
            return Err(FrontError(format!(
                "--tokens: {n} tokens, more than the model's context of {context}"
            )));
        }
        out.push(id);
    }
    Ok(out)
}
