//! Text to token ids and back, for GGUF metadata (`gpt2` BPE and `llama` SentencePiece) and HF
//! `tokenizer.json` directories, with llama.cpp's semantics for special tokens and detokenization.
//!
//! The BPE merging itself is done by the `tokenizers` crate. What this module adds around it is
//! what llama.cpp does and `tokenizer.json` does not describe for GGUF files: the pre-tokenizer
//! regexes named by `tokenizer.ggml.pre`, the splitting of text at special tokens (longest token
//! first), BOS/EOS insertion as `tokenizer.ggml.add_bos_token` says, per-token byte pieces for
//! detokenization and streaming, and the end-of-generation token set.

mod decode;
mod error;
mod gguf;
mod hf;
pub use hf::{ReadFile, MAX_TOKENIZER_FILE_BYTES, MAX_TOKEN_ID, VOCAB_GAP_ALLOWANCE};
mod partition;

use std::collections::BTreeSet;
use std::fmt;

pub use decode::Decoder;
pub use error::{MetadataOrigin, TokenizeError};
pub use gguf::{TokenizerMetadata, MAX_SPM_MERGES, MAX_SPM_MERGE_BYTES};

pub type Result<T> = std::result::Result<T, TokenizeError>;

/// What a token is, as GGUF's `tokenizer.ggml.token_type` says (llama.cpp's token attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenAttr {
    Normal,
    Unknown,
    /// Control tokens (`<|im_start|>`, `<s>`): matched in text only when special tokens are
    /// parsed, and rendered by detokenization only when asked.
    Control,
    /// Added tokens that are always matched in text and always rendered.
    UserDefined,
    Unused,
    /// SentencePiece byte-fallback tokens `<0xXX>`.
    Byte,
    Undefined,
}

impl TokenAttr {
    /// The attribute for a GGUF token type (1 normal, 2 unknown, 3 control, 4 user defined,
    /// 5 unused, 6 byte); anything else is undefined, as in llama.cpp.
    pub fn from_gguf_type(ty: i64) -> Self {
        match ty {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Whether the token is hidden from detokenized text unless special tokens are rendered.
    pub fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// Which algorithm turns a text fragment into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE with merges (`tokenizer.ggml.model = gpt2`).
    Bpe,
    /// SentencePiece BPE with scores, `▁` for spaces and byte fallback (`tokenizer.ggml.model = llama`).
    Spm,
    /// A `tokenizer.json` pipeline run as HF defines it.
    HfJson,
}

/// The special token ids a model declares; `None` where it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn (`<|im_end|>`, `<|eot_id|>`): from metadata, else found by its text as llama.cpp does.
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
}

/// How a normal token's text maps to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceStyle {
    /// GPT-2 byte-to-unicode characters.
    ByteLevel,
    /// `▁` stands for a space; `<0xXX>` tokens are bytes.
    Metaspace,
    /// The token text is the text.
    Raw,
}

/// A tokenizer: encode text to ids, decode ids to text, and know which ids end generation.
pub struct Tokenizer {
    kind: TokenizerKind,
    /// The `tokenizers` pipeline. For GGUF kinds it holds only the pre-tokenizer and the BPE
    /// model, and is run on the text between special tokens; for HF it is the whole pipeline.
    inner: tokenizers::Tokenizer,
    /// HF only: the same pipeline with special added tokens left unmatched.
    inner_plain: Option<tokenizers::Tokenizer>,
    tokens: Vec<String>,
    attrs: Vec<TokenAttr>,
    /// The bytes each token detokenizes to when special tokens are rendered.
    pieces: Vec<Vec<u8>>,
    /// Ids matched in text before BPE, longest text first (llama.cpp's special-token cache).
    partition_order: Vec<u32>,
    special: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.tokens.len())
            .field("special", &self.special)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .field("clean_spaces", &self.clean_spaces)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Build from GGUF tokenizer metadata (see [`TokenizerMetadata`]).
    pub fn from_gguf_metadata(meta: &TokenizerMetadata) -> Result<Self> {
        gguf::build(meta)
    }

    /// Build from an open GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(file: &crate::weights::gguf::GgufFile) -> Result<Self> {
        let meta =
            TokenizerMetadata::from_gguf(file.metadata()).map_err(|e| e.in_file(file.path()))?;
        gguf::build(&meta).map_err(|e| e.in_file(file.path()))
    }

    /// Build from an HF model directory: `tokenizer.json`, plus `tokenizer_config.json`
    /// (special tokens, chat template) and `generation_config.json` (EOS ids) when present.
    pub fn from_hf_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        hf::build(dir.as_ref())
    }

    /// `from_hf_dir` over the files `read` gives by name (`tokenizer.json`, ...: `None`
    /// for an absent one), e.g. files embedded in an executable; `dir` names them in
    /// errors.
    pub fn from_hf_files(dir: &std::path::Path, read: ReadFile<'_>) -> Result<Self> {
        hf::build_with(dir, read)
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn special_ids(&self) -> &SpecialIds {
        &self.special
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The chat template the model carries (GGUF `tokenizer.chat_template` or
    /// `tokenizer_config.json`'s `chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text of a token as stored in the vocabulary (byte-level or `▁` form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text).or_else(|| {
            self.tokens
                .iter()
                .position(|t| t == text)
                .and_then(|i| u32::try_from(i).ok())
        })
    }

    /// The ids that end generation: EOS, EOT, EOM and the end-of-turn tokens llama.cpp
    /// recognizes by their text.
    pub fn eog_ids(&self) -> &BTreeSet<u32> {
        &self.eog
    }

    /// Whether sampling `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Encode `text`. `add_special` adds BOS/EOS as the model's metadata says;
    /// `parse_special` matches control tokens written in the text (`<|im_start|>`) as
    /// single ids instead of tokenizing their characters. User-defined tokens are always
    /// matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        if self.kind == TokenizerKind::HfJson {
            let pipeline = match (&self.inner_plain, parse_special) {
                (Some(plain), false) => plain,
                _ => &self.inner,
            };
            let encoding = pipeline
                .encode(text, add_special)
                .map_err(TokenizeError::Encode)?;
            return Ok(encoding.get_ids().to_vec());
        }

        let fragments = partition::split(
            text,
            &self.partition_order,
            &self.tokens,
            &self.attrs,
            parse_special,
        );
        let mut out = Vec::new();
        if add_special && self.add_bos {
            let bos = self
                .special
                .bos
                .ok_or(TokenizeError::MissingSpecial { token: "BOS" })?;
            out.push(bos);
        }
        // SentencePiece prefixes a space to text that starts the input or follows a special token.
        let mut prev_special = true;
        for fragment in fragments {
            match fragment {
                partition::Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                partition::Fragment::Text(range) => {
                    let piece = &text[range];
                    match self.kind {
                        TokenizerKind::Spm => {
                            let mut escaped = String::with_capacity(piece.len() + 3);
                            if self.add_space_prefix && prev_special {
                                escaped.push('\u{2581}');
                            }
                            escaped.push_str(&piece.replace(' ', "\u{2581}"));
                            self.encode_fragment(&escaped, &mut out)?;
                        }
                        _ => self.encode_fragment(piece, &mut out)?,
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            let eos = self
                .special
                .eos
                .ok_or(TokenizeError::MissingSpecial { token: "EOS" })?;
            out.push(eos);
        }
        Ok(out)
    }

    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|source| TokenizeError::Bpe {
                bytes: text.len(),
                source,
            })?;
        out.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// The bytes token `id` detokenizes to. Control and unknown tokens give nothing unless
    /// `render_special`. Errors on an id outside the vocabulary.
    pub fn token_piece(&self, id: u32, render_special: bool) -> Result<&[u8]> {
        let i = id as usize;
        let (Some(attr), Some(piece)) = (self.attrs.get(i), self.pieces.get(i)) else {
            return Err(TokenizeError::IdOutsideVocab {
                id,
                vocab: self.tokens.len(),
            });
        };
        if !render_special && attr.is_special() {
            return Ok(&[]);
        }
        Ok(piece)
    }

    /// Detokenize to bytes as llama.cpp's `llama_detokenize` does: `remove_special` drops a
    /// leading BOS and trailing EOS that `encode` would have added; `render_special` writes
    /// control tokens' text.
    pub fn decode_bytes(
        &self,
        ids: &[u32],
        remove_special: bool,
        render_special: bool,
    ) -> Result<Vec<u8>> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), self.special.bos) {
                if first == bos {
                    remove_space = false;
                    ids = &ids[1..];
                }
            }
        }
        if remove_special && self.add_eos {
            if let (Some(&last), Some(eos)) = (ids.last(), self.special.eos) {
                if last == eos {
                    ids = &ids[..ids.len() - 1];
                }
            }
        }
        let mut out = Vec::new();
        for &id in ids {
            let piece = self.token_piece(id, render_special)?;
            let piece = if remove_space {
                piece.strip_prefix(b" ").unwrap_or(piece)
            } else {
                piece
            };
            remove_space = false;
            out.extend_from_slice(piece);
        }
        if self.clean_spaces {
            out = decode::clean_spaces(&out);
        }
        Ok(out)
    }

    /// [`Self::decode_bytes`] as text; invalid UTF-8 becomes U+FFFD.
    pub fn decode(
        &self,
        ids: &[u32],
        remove_special: bool,
        render_special: bool,
    ) -> Result<String> {
        let bytes = self.decode_bytes(ids, remove_special, render_special)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A streaming decoder that yields complete UTF-8 text as ids arrive.
    pub fn decoder(&self, render_special: bool) -> Decoder<'_> {
        Decoder::new(self, render_special)
    }

    /// The text of the BOS token, for chat templates' `bos_token`.
    pub fn bos_text(&self) -> Option<&str> {
        self.special.bos.and_then(|id| self.token_text(id))
    }

    /// The text of the EOS token, for chat templates' `eos_token`.
    pub fn eos_text(&self) -> Option<&str> {
        self.special.eos.and_then(|id| self.token_text(id))
    }
}

/// Token texts llama.cpp treats as end of generation (from its vocabulary loader).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp takes for the end-of-turn id when metadata names none, in the
/// order this module prefers them (llama.cpp scans a hash map, so its pick among several
/// is not specified).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle tokens llama.cpp finds by text and adds to the end-of-generation set.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Fill in EOT by text when missing, and compute the EOG set; tokens found by text become
/// control tokens, as llama.cpp forces them to be.
pub(crate) fn finish_special(
    tokens: &[String],
    attrs: &mut [TokenAttr],
    special: &mut SpecialIds,
) -> BTreeSet<u32> {
    let find = |text: &str| {
        tokens
            .iter()
            .position(|t| t == text)
            .and_then(|i| u32::try_from(i).ok())
    };
    let mut by_text = Vec::new();
    if special.eot.is_none() {
        special.eot = EOT_TEXTS.iter().find_map(|t| find(t));
        by_text.extend(special.eot);
    }
    let mut eog = BTreeSet::new();
    for text in EOG_TEXTS {
        if let Some(id) = find(text) {
            eog.insert(id);
            by_text.push(id);
        }
    }
    // Fill-in-the-middle pad/repo/separator tokens end generation too in llama.cpp.
    for texts in [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS] {
        if let Some(id) = texts.iter().find_map(|t| find(t)) {
            eog.insert(id);
            by_text.push(id);
        }
    }
    for id in [special.eos, special.eot, special.eom]
        .into_iter()
        .flatten()
    {
        eog.insert(id);
    }
    for id in by_text {
        if let Some(attr) = attrs.get_mut(id as usize) {
            *attr = TokenAttr::Control;
        }
    }
    eog.retain(|&id| (id as usize) < tokens.len());
    eog
}
