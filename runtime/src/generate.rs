//! Text generation: prefill a prompt, then decode one token at a time with a sampler until
//! an end-of-generation token, a token limit or the context ends, timing prefill and decode
//! separately and streaming text through the tokenizer's `Decoder`.
//!
//! A `Generator` remembers which tokens its KV cache holds. When the next prompt starts
//! with exactly those tokens (a chat turn after the previous one), only the new tokens
//! are prefilled; otherwise the cache is cleared and the whole prompt runs again.

#[cfg(feature = "jit")]
use crate::bind::BoundWeights;
use crate::exec::cpu::{CpuModel, KvState, Logits, Options, Phase};
#[cfg(feature = "jit")]
use crate::exec::cpu::{Engine, LlvmOptions};
#[cfg(feature = "cuda")]
use crate::exec::cuda::{CudaKv, CudaModel, CudaOptions};
use crate::exec::ExecError;
use crate::sample::Sampler;
use crate::tokenize::{TokenizeError, Tokenizer};
use archc_compiler::driver::Driver;
use archc_compiler::interp::{Interpreter, KvCache};
use archc_compiler::{Graph, Mode};
use archc_spec::Spec;
use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

/// What a caller's callback may fail with (writing the text out, usually); generation
/// stops and returns it as [`GenerateError::Output`].
pub type OutputError = Box<dyn std::error::Error + Send + Sync>;

/// Why generation failed: a prompt the model cannot take, a failed model call (which
/// phase, how many tokens, at which position), or the caller's output.
#[derive(Debug)]
pub enum GenerateError {
    /// The prompt has no tokens.
    EmptyPrompt,
    /// The prompt does not fit in the model's context.
    PromptTooLong { tokens: usize, context: usize },
    /// Prompt token `index` is not an id of the vocabulary.
    TokenOutsideVocab { index: usize, id: u32, vocab: usize },
    /// The model returned a number of logits other than its vocabulary.
    LogitsLength {
        phase: Phase,
        position: usize,
        found: usize,
        expected: usize,
    },
    /// The model failed on `tokens` tokens after `position` cached ones.
    Model {
        phase: Phase,
        tokens: usize,
        position: usize,
        source: ExecError,
    },
    /// A generated token could not be turned into text.
    Detokenize(TokenizeError),
    /// The caller's callback failed.
    Output(OutputError),
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Prefill => "prefill",
        Phase::Decode => "decode",
    }
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerateError::EmptyPrompt => f.write_str("the prompt has no tokens"),
            GenerateError::PromptTooLong { tokens, context } => write!(
                f,
                "the prompt is {tokens} tokens, more than the model's context of {context}"
            ),
            GenerateError::TokenOutsideVocab { index, id, vocab } => write!(
                f,
                "prompt token {index} is id {id}, outside the vocabulary of {vocab}"
            ),
            GenerateError::LogitsLength {
                phase,
                position,
                found,
                expected,
            } => write!(
                f,
                "{} at position {position}: {found} logits, expected {expected}",
                phase_name(*phase)
            ),
            GenerateError::Model {
                phase,
                tokens,
                position,
                source,
            } => write!(
                f,
                "{} of {tokens} token(s) at position {position}: {source}",
                phase_name(*phase)
            ),
            GenerateError::Detokenize(e) => write!(f, "{e}"),
            GenerateError::Output(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GenerateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GenerateError::Model { source, .. } => Some(source),
            GenerateError::Detokenize(e) => Some(e),
            GenerateError::Output(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<TokenizeError> for GenerateError {
    fn from(e: TokenizeError) -> GenerateError {
        GenerateError::Detokenize(e)
    }
}

/// A model with its KV cache: what the generator drives.
pub trait Model {
    fn vocab(&self) -> usize;
    /// Runs `tokens` after the cached ones and returns the logits of the last of them
    /// (`[vocab]`); the cache grows by `tokens.len()`.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ExecError>;
    /// `forward` into `logits` (replacing its contents); a model that can fill the
    /// caller's vector without allocating overrides it, so that decoding allocates
    /// nothing per token.
    fn forward_into(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), ExecError> {
        *logits = self.forward(tokens)?;
        Ok(())
    }
    /// Forgets every cached token.
    fn reset(&mut self);
}

/// The last `vocab` values of a row-major `[seq, vocab]` block.
fn last_row(mut logits: Vec<f32>, vocab: usize) -> Result<Vec<f32>, ExecError> {
    if vocab == 0 || logits.len() < vocab || logits.len() % vocab != 0 {
        return Err(ExecError::Program(format!(
            "the model returned {} logits, not a whole number of rows of {vocab}",
            logits.len()
        )));
    }
    Ok(logits.split_off(logits.len() - vocab))
}

/// A kernel-program model on the CPU executor with its cache.
#[derive(Debug)]
pub struct CpuSession<'w> {
    model: CpuModel<'w>,
    cache: KvState,
    vocab: usize,
}

impl<'w> CpuSession<'w> {
    /// A session over a loaded model (its programs must compute the last position's
    /// logits of a prefill, or every position's, of which the last is kept), with an
    /// empty cache.
    pub fn from_model(model: CpuModel<'w>) -> CpuSession<'w> {
        let cache = model.new_cache();
        let vocab = model.vocab();
        CpuSession {
            model,
            cache,
            vocab,
        }
    }

    /// The model the session runs.
    pub fn model(&self) -> &CpuModel<'w> {
        &self.model
    }

    #[cfg(feature = "jit")]
    /// Compiles (or takes from the code cache) both programs of `spec` for `engine` and
    /// binds `weights`, with the driver's `options` except that generation reads the last
    /// position's logits only.
    pub fn new(
        spec: &Spec,
        weights: &'w BoundWeights,
        engine: Engine,
        threads: usize,
        options: &Options,
    ) -> Result<CpuSession<'w>, ExecError> {
        let options = Options {
            logits: Logits::Last,
            ..*options
        };
        let model = CpuModel::from_spec_options(
            spec,
            weights,
            engine,
            threads,
            &LlvmOptions::from_env(),
            &options,
        )?;
        let cache = model.new_cache();
        let vocab = usize::try_from(spec.vocab)
            .map_err(|_| ExecError::Program("vocabulary too large".into()))?;
        Ok(CpuSession {
            model,
            cache,
            vocab,
        })
    }
}

impl Model for CpuSession<'_> {
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ExecError> {
        // One token runs the decode program, whose kernels are specialised for seq = 1.
        let phase = if tokens.len() == 1 {
            Phase::Decode
        } else {
            Phase::Prefill
        };
        let logits = self.model.run(phase, &mut self.cache, tokens)?;
        last_row(logits, self.vocab)
    }

    fn forward_into(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), ExecError> {
        let phase = if tokens.len() == 1 {
            Phase::Decode
        } else {
            Phase::Prefill
        };
        self.model
            .run_into(phase, &mut self.cache, tokens, logits)?;
        // The prefill program computes the last position only; keep just that row should
        // it return more (without reallocating).
        let n = logits.len();
        if self.vocab == 0 || n < self.vocab || n % self.vocab != 0 {
            return Err(ExecError::Program(format!(
                "the model returned {n} logits, not a whole number of rows of {}",
                self.vocab
            )));
        }
        logits.drain(..n - self.vocab);
        Ok(())
    }

    fn reset(&mut self) {
        self.cache.clear();
    }
}

#[cfg(feature = "cuda")]
/// A kernel-program model on a CUDA device with its cache.
#[derive(Debug)]
pub struct CudaSession {
    model: CudaModel,
    cache: CudaKv,
    vocab: usize,
}

#[cfg(feature = "cuda")]
impl CudaSession {
    /// Builds both programs of `spec`, uploads `weights` and loads them on device `ordinal`.
    /// The prefill computes the last position's logits only (all that generation reads);
    /// `ARCHC_CUDA_GRAPH=1` makes each decode step one CUDA graph replay.
    pub fn new(
        spec: &Spec,
        weights: &BoundWeights,
        ordinal: usize,
    ) -> Result<CudaSession, ExecError> {
        let options = CudaOptions {
            logits: Logits::Last,
            ..CudaOptions::default()
        };
        let model = CudaModel::from_spec_with(spec, weights, ordinal, options)?;
        let cache = model.new_cache();
        let vocab = usize::try_from(spec.vocab)
            .map_err(|_| ExecError::Program("vocabulary too large".into()))?;
        Ok(CudaSession {
            model,
            cache,
            vocab,
        })
    }
}

#[cfg(feature = "cuda")]
impl Model for CudaSession {
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ExecError> {
        let phase = if tokens.len() == 1 {
            Phase::Decode
        } else {
            Phase::Prefill
        };
        let logits = self.model.run(phase, &mut self.cache, tokens)?;
        last_row(logits, self.vocab)
    }

    fn reset(&mut self) {
        self.cache.clear();
    }
}

/// The prefill and decode graphs of a spec, which the reference interpreter borrows. The
/// prefill computes the last position's logits only (`Logits::Last`): generation reads
/// nothing else.
#[derive(Debug)]
pub struct Graphs {
    pub prefill: Graph,
    pub decode: Graph,
}

impl Graphs {
    pub fn lower(spec: &Spec) -> Result<Graphs, ExecError> {
        // The graph stage of the driver, the last position's logits only.
        let last = Options {
            logits: Logits::Last,
            ..Options::default()
        };
        let driver = Driver::for_spec(spec, last);
        Ok(Graphs {
            prefill: driver.graph(Mode::Prefill)?,
            decode: driver.graph(Mode::Decode)?,
        })
    }
}

/// The reference graph interpreter with its cache.
#[derive(Debug)]
pub struct InterpSession<'a> {
    interp: Interpreter<'a>,
    cache: KvCache,
}

impl<'a> InterpSession<'a> {
    pub fn new(
        graphs: &'a Graphs,
        weights: &'a dyn archc_compiler::interp::WeightSource,
    ) -> Result<InterpSession<'a>, ExecError> {
        let interp = Interpreter::new(&graphs.prefill, &graphs.decode, weights)
            .map_err(|e| ExecError::Interp(e.to_string()))?;
        let cache = interp.new_cache();
        Ok(InterpSession { interp, cache })
    }
}

impl Model for InterpSession<'_> {
    fn vocab(&self) -> usize {
        self.interp.vocab()
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ExecError> {
        let logits = if let [t] = tokens {
            self.interp.decode(&mut self.cache, *t)
        } else {
            self.interp.prefill(&mut self.cache, tokens)
        }
        .map_err(|e| ExecError::Interp(e.to_string()))?;
        last_row(logits, self.interp.vocab())
    }

    fn reset(&mut self) {
        self.cache = self.interp.new_cache();
    }
}

/// When generation stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Tokens that end generation (not included in the output).
    pub stop: BTreeSet<u32>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this end-of-generation token.
    EndOfGeneration(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The cache reached the model's context length.
    Context,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration(_) => "eog",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Context => "context",
        }
    }
}

/// Tokens run through one phase and the time they took (model calls and sampling).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub tokens: usize,
    pub time: Duration,
}

impl Timing {
    /// Tokens per second; 0 when nothing ran.
    pub fn tok_per_s(&self) -> f64 {
        let s = self.time.as_secs_f64();
        if self.tokens == 0 || s == 0.0 {
            0.0
        } else {
            self.tokens as f64 / s
        }
    }
}

/// One generation's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids, without the end-of-generation token.
    pub tokens: Vec<u32>,
    /// Their text (empty from [`Generator::generate`], which has no tokenizer).
    pub text: String,
    pub stop: StopReason,
    /// Prompt tokens that ran (fewer than the prompt when the cache held its start).
    pub prefill: Timing,
    /// Tokens that ran one by one after the prompt.
    pub decode: Timing,
}

/// Drives a model: prompt in, sampled tokens out.
#[derive(Debug)]
pub struct Generator<M> {
    model: M,
    context: usize,
    cached: Vec<u32>,
}

impl<M: Model> Generator<M> {
    /// A generator for `model`, whose positions stop at `context` tokens.
    pub fn new(model: M, context: usize) -> Generator<M> {
        Generator {
            model,
            context,
            cached: Vec::new(),
        }
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// The tokens the KV cache holds, in order.
    pub fn cached(&self) -> &[u32] {
        &self.cached
    }

    /// Clears the cache; the next prompt runs in full.
    pub fn reset(&mut self) {
        self.model.reset();
        self.cached.clear();
    }

    /// Generates after `prompt`, calling `on_token` with every id as it is chosen; an
    /// error from `on_token` stops generation and is returned as
    /// [`GenerateError::Output`].
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        limits: &Limits,
        on_token: &mut dyn FnMut(u32) -> Result<(), OutputError>,
    ) -> Result<Generation, GenerateError> {
        self.generate_with(prompt, sampler, limits, &mut |t| {
            on_token(t).map_err(GenerateError::Output)
        })
    }

    /// [`Self::generate`] with a callback whose errors are already generation errors.
    fn generate_with(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        limits: &Limits,
        on_token: &mut dyn FnMut(u32) -> Result<(), GenerateError>,
    ) -> Result<Generation, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() > self.context {
            return Err(GenerateError::PromptTooLong {
                tokens: prompt.len(),
                context: self.context,
            });
        }
        let vocab = self.model.vocab();
        if let Some((index, &id)) = prompt
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(GenerateError::TokenOutsideVocab { index, id, vocab });
        }
        let mut out = Generation {
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::MaxTokens,
            prefill: Timing::default(),
            decode: Timing::default(),
        };
        if limits.max_tokens == 0 {
            return Ok(out);
        }

        // Reuse the cache when it holds a strict prefix of the prompt.
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let start = if common == self.cached.len() && common < prompt.len() {
            common
        } else {
            self.reset();
            0
        };
        let feed = &prompt[start..];
        let t0 = Instant::now();
        // One logits vector for the whole generation, refilled at every step.
        let mut logits = Vec::new();
        self.forward(feed, Phase::Prefill, &mut logits)?;
        let mut token = sampler.sample(&logits);
        out.prefill = Timing {
            tokens: feed.len(),
            time: t0.elapsed(),
        };
        loop {
            if limits.stop.contains(&token) {
                out.stop = StopReason::EndOfGeneration(token);
                break;
            }
            out.tokens.push(token);
            on_token(token)?;
            if out.tokens.len() >= limits.max_tokens {
                out.stop = StopReason::MaxTokens;
                break;
            }
            if self.cached.len() >= self.context {
                out.stop = StopReason::Context;
                break;
            }
            let t = Instant::now();
            self.forward(&[token], Phase::Decode, &mut logits)?;
            token = sampler.sample(&logits);
            out.decode.tokens += 1;
            out.decode.time += t.elapsed();
        }
        Ok(out)
    }

    /// [`Self::generate`] with the text streamed: `on_text` receives each piece of
    /// complete UTF-8 as it forms (special tokens are not rendered).
    pub fn generate_text(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        limits: &Limits,
        tokenizer: &Tokenizer,
        on_text: &mut dyn FnMut(&str) -> Result<(), OutputError>,
    ) -> Result<Generation, GenerateError> {
        let mut decoder = tokenizer.decoder(false);
        let mut text = String::new();
        let mut on_token = |id: u32| -> Result<(), GenerateError> {
            let piece = decoder.push(id)?;
            if !piece.is_empty() {
                text.push_str(&piece);
                on_text(&piece).map_err(GenerateError::Output)?;
            }
            Ok(())
        };
        let mut out = self.generate_with(prompt, sampler, limits, &mut on_token)?;
        let rest = decoder.finish();
        if !rest.is_empty() {
            text.push_str(&rest);
            on_text(&rest).map_err(GenerateError::Output)?;
        }
        out.text = text;
        Ok(out)
    }

    /// Runs `tokens` and records them as cached; a failure clears the cache, whose
    /// contents are then unknown.
    fn forward(
        &mut self,
        tokens: &[u32],
        phase: Phase,
        logits: &mut Vec<f32>,
    ) -> Result<(), GenerateError> {
        let position = self.cached.len();
        match self.model.forward_into(tokens, logits) {
            Ok(()) if logits.len() == self.model.vocab() => {
                self.cached.extend_from_slice(tokens);
                Ok(())
            }
            Ok(()) => {
                self.reset();
                Err(GenerateError::LogitsLength {
                    phase,
                    position,
                    found: logits.len(),
                    expected: self.model.vocab(),
                })
            }
            Err(e) => {
                self.reset();
                Err(GenerateError::Model {
                    phase,
                    tokens: tokens.len(),
                    position,
                    source: e,
                })
            }
        }
    }
}
