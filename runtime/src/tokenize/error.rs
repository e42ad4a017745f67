//! Why a tokenizer could not be built or could not encode or decode: one variant per kind
//! of failure, each with the file, metadata key, token or id it concerns.

use std::fmt;
use std::path::PathBuf;

/// Where tokenizer metadata was read from, as its errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataOrigin {
    /// A GGUF file's metadata.
    Gguf,
    /// A JSON object of GGUF keys (a metadata extract).
    Json,
}

impl fmt::Display for MetadataOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetadataOrigin::Gguf => "GGUF metadata",
            MetadataOrigin::Json => "tokenizer metadata",
        })
    }
}

/// A tokenizer error: what failed, with the context needed to find the cause.
#[derive(Debug)]
pub enum TokenizeError {
    /// A metadata key holds a value of the wrong type.
    KeyType {
        origin: MetadataOrigin,
        key: String,
        expected: &'static str,
        /// The value found, described or shortened.
        found: String,
    },
    /// A key every tokenizer needs is absent.
    MissingKey {
        origin: MetadataOrigin,
        key: &'static str,
    },
    /// The JSON metadata is not an object.
    NotAnObject,
    /// `tokenizer.ggml.tokens` is empty.
    EmptyVocab,
    /// A per-token array does not have one entry per token.
    PerTokenCount {
        key: &'static str,
        found: usize,
        expected: usize,
    },
    /// `tokenizer.ggml.model` names a model this module does not implement.
    UnsupportedModel { model: String },
    /// `tokenizer.ggml.pre` names pre-tokenizer regexes this module does not know.
    UnsupportedPre { pre: String },
    /// A tokenizer model lacks a key it cannot do without.
    ModelNeedsKey {
        model: &'static str,
        key: &'static str,
    },
    /// A merge is not two tokens separated by a space.
    BadMerge { index: usize, merge: String },
    /// The BPE model could not be built from the vocabulary and merges.
    BuildBpe(tokenizers::Error),
    /// A pre-tokenizer regex does not compile.
    PreRegex {
        regex: &'static str,
        source: tokenizers::Error,
    },
    /// A file of an HF tokenizer cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file of an HF tokenizer does not parse.
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `tokenizer.json` cannot be loaded as a pipeline.
    Load {
        path: PathBuf,
        source: tokenizers::Error,
    },
    /// The pipeline of `tokenizer.json` fails on an empty text (asked to learn whether it
    /// adds BOS and EOS).
    Probe {
        path: PathBuf,
        source: tokenizers::Error,
    },
    /// The `tokenizer.json` pipeline failed to encode.
    Encode(tokenizers::Error),
    /// BPE failed on a fragment of the text (of this many bytes).
    Bpe {
        bytes: usize,
        source: tokenizers::Error,
    },
    /// The model adds a special token (`BOS`, `EOS`) whose id it does not declare.
    MissingSpecial { token: &'static str },
    /// An id outside the vocabulary.
    IdOutsideVocab { id: u32, vocab: usize },
    /// A `tokenizer.json` token has an id past the bound its table may have: at most
    /// `MAX_TOKEN_ID`, and below twice the number of tokens plus an allowance for gaps.
    TokenIdTooLarge {
        path: PathBuf,
        token: String,
        id: u32,
        tokens: usize,
        limit: usize,
    },
    /// More tokens than a tokenizer may have.
    TooManyTokens { found: usize, max: usize },
    /// SentencePiece merges would take more memory than the bound.
    TooManySpmMerges { max_merges: usize, max_bytes: usize },
    /// A chat template is present but cannot be used.
    ChatTemplate { path: PathBuf, problem: String },
    /// The `post_processor` of `tokenizer.json` would add tokens it does not define, or
    /// ids outside the vocabulary.
    PostProcessor { path: PathBuf, problem: String },
    /// The tokenizer of the file at `path` is wrong.
    InFile {
        path: PathBuf,
        error: Box<TokenizeError>,
    },
}

impl fmt::Display for TokenizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizeError::KeyType {
                origin,
                key,
                expected,
                found,
            } => write!(f, "{origin} key `{key}`: expected {expected}, found {found}"),
            TokenizeError::MissingKey { origin, key } => write!(f, "{origin} lacks `{key}`"),
            TokenizeError::NotAnObject => {
                f.write_str("tokenizer metadata: expected a JSON object")
            }
            TokenizeError::EmptyVocab => {
                f.write_str("tokenizer metadata has an empty `tokenizer.ggml.tokens`")
            }
            TokenizeError::PerTokenCount {
                key,
                found,
                expected,
            } => write!(
                f,
                "`{key}` has {found} entries, expected one per token ({expected})"
            ),
            TokenizeError::UnsupportedModel { model } => write!(
                f,
                "unsupported tokenizer model `tokenizer.ggml.model = {model}`; expected gpt2 or llama"
            ),
            TokenizeError::UnsupportedPre { pre } => write!(
                f,
                "unsupported pre-tokenizer `tokenizer.ggml.pre = {pre}`; supported: default, \
                 llama3 (and aliases), dbrx, smaug-bpe, qwen2, stablelm2, smollm, command-r, \
                 starcoder, refact, codeshell, exaone, minerva, gpt-2, phi-2, mpt, olmo, jais, falcon"
            ),
            TokenizeError::ModelNeedsKey { model, key } => {
                write!(f, "a {model} tokenizer needs `{key}`")
            }
            TokenizeError::BadMerge { index, merge } => write!(
                f,
                "`tokenizer.ggml.merges[{index}]` = {merge:?} is not two tokens separated by a space"
            ),
            TokenizeError::BuildBpe(e) => write!(f, "building the BPE model failed: {e}"),
            TokenizeError::PreRegex { regex, source } => {
                write!(f, "pre-tokenizer regex {regex:?}: {source}")
            }
            TokenizeError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            TokenizeError::Parse { path, source } => {
                write!(f, "parsing {}: {source}", path.display())
            }
            TokenizeError::Load { path, source } => {
                write!(f, "loading {}: {source}", path.display())
            }
            TokenizeError::Probe { path, source } => write!(
                f,
                "{}: encoding an empty text failed: {source}",
                path.display()
            ),
            TokenizeError::Encode(e) => write!(f, "tokenizer.json encode failed: {e}"),
            TokenizeError::Bpe { bytes, source } => {
                write!(f, "BPE failed on a {bytes}-byte text fragment: {source}")
            }
            TokenizeError::MissingSpecial { token } => write!(
                f,
                "the model asks for a {token} token but declares no {token} id"
            ),
            TokenizeError::IdOutsideVocab { id, vocab } => {
                write!(f, "token id {id} is outside the vocabulary (size {vocab})")
            }
            TokenizeError::TokenIdTooLarge {
                path,
                token,
                id,
                tokens,
                limit,
            } => write!(
                f,
                "{}: token {token:?} has id {id}, but ids of a vocabulary of {tokens} tokens \
                 must be below {limit}",
                path.display()
            ),
            TokenizeError::TooManyTokens { found, max } => write!(
                f,
                "`tokenizer.ggml.tokens` has {found} tokens, more than the bound of {max}"
            ),
            TokenizeError::TooManySpmMerges {
                max_merges,
                max_bytes,
            } => write!(
                f,
                "the SentencePiece vocabulary makes more than {max_merges} merges or {max_bytes} \
                 bytes of them (tokens too long or too many)"
            ),
            TokenizeError::PostProcessor { path, problem } => {
                write!(f, "{}: `post_processor`: {problem}", path.display())
            }
            TokenizeError::ChatTemplate { path, problem } => {
                write!(f, "{}: chat template {problem}", path.display())
            }
            TokenizeError::InFile { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for TokenizeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenizeError::BuildBpe(e) | TokenizeError::Encode(e) => Some(e.as_ref()),
            TokenizeError::PreRegex { source, .. }
            | TokenizeError::Load { source, .. }
            | TokenizeError::Probe { source, .. }
            | TokenizeError::Bpe { source, .. } => Some(source.as_ref()),
            TokenizeError::Read { source, .. } => Some(source),
            TokenizeError::Parse { source, .. } => Some(source),
            TokenizeError::InFile { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl TokenizeError {
    /// This error as the problem of the file at `path`.
    pub(crate) fn in_file(self, path: &std::path::Path) -> TokenizeError {
        TokenizeError::InFile {
            path: path.to_path_buf(),
            error: Box::new(self),
        }
    }
}
