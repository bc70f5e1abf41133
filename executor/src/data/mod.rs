//! Training data, served as batches of B rows of T+1 consecutive tokens (inputs are the first T
//! of each row, targets the last T):
//! - [`corpus`]: the licence texts shipped in `executor/corpus/`, tokenised at start-up (the
//!   default: works with no data at all);
//! - [`shards`]: token files on disk, memory-mapped: llm.c's shards (a header of 256
//!   little-endian int32: magic 20240520, version 1, token count; then the uint16 tokens) or
//!   nanoGPT's plain uint16 `.bin`, several by glob, in an order drawn from a seed, with a
//!   [`DataPosition`] that a checkpoint saves and `--resume` restores exactly; and a fixed
//!   validation set;
//! - [`writer`]: text files to llm.c shards (GPT-2 BPE), what `offplan tokenize` runs.
//!
//! Token ids are checked against the model's vocabulary batch by batch as they are read (a
//! shard larger than host memory is never read whole up front); the error names the file and
//! the token's position.

pub mod corpus;
pub mod shards;
pub mod writer;

pub use corpus::{tokenize_corpus, Batches, CORPUS};
pub use shards::{Shard, ShardFormat, ShardLoader, ShardSet, ValidationSet};
pub use writer::{tokenize_files, write_shard, ShardWriter, TokenizeError, TokenizeOptions, TokenizeProgress, TokenizeSummary};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// GPT-2's end-of-text token, put between documents.
pub const EOT: u32 = 50256;

/// llm.c's shard header: 256 little-endian int32, the first three magic, version, token count.
pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const HEADER_BYTES: usize = 256 * 4;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the corpus has {have} tokens; one batch of {batch} x ({seq} + 1) needs {need}")]
    TooSmall { have: usize, need: usize, batch: u32, seq: u32 },
    #[error("token {token} is outside the model's vocabulary of {vocab}")]
    Vocab { token: u32, vocab: u32 },
    #[error("cannot read {}: {error} (check the path and that the file is readable)", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("`{pattern}` is not a valid glob pattern: {message}")]
    BadPattern { pattern: String, message: String },
    #[error(
        "no file matches `{pattern}`: check the path (quote a pattern so that the shell does not expand it); `offplan tokenize` makes shards from text files"
    )]
    NoMatch { pattern: String },
    #[error(
        "{}: not an llm.c token shard (its magic number is {found}, not 20240520); make shards with `offplan tokenize`, or read a plain uint16 token file (nanoGPT's train.bin) with the raw format",
        path.display()
    )]
    WrongMagic { path: PathBuf, found: i32 },
    #[error(
        "{}: llm.c shard version {found}; offplan reads version 1 (uint16 GPT-2 tokens) only{}",
        path.display(),
        if *found == 2 { " (version 2 holds uint32 tokens, llama 3's)" } else { "" }
    )]
    WrongVersion { path: PathBuf, found: i32 },
    #[error("{}: {have} bytes, shorter than llm.c's 1024-byte header: the file is truncated or not a shard", path.display())]
    ShortHeader { path: PathBuf, have: u64 },
    #[error("{}: its header gives a token count of {count}: the header is damaged; make the shard again", path.display())]
    BadCount { path: PathBuf, count: i32 },
    #[error(
        "{}: truncated: its header promises {tokens} tokens ({need} bytes with the header) but the file has {have} bytes (an interrupted copy or write?); copy or make it again",
        path.display()
    )]
    Truncated { path: PathBuf, tokens: u64, need: u64, have: u64 },
    #[error("{}: {extra} bytes follow the {tokens} tokens its header promises: not a whole llm.c shard; make it again", path.display())]
    Trailing { path: PathBuf, tokens: u64, extra: u64 },
    #[error("{}: {bytes} bytes is not a whole number of uint16 tokens: truncated, or not a raw token file", path.display())]
    OddLength { path: PathBuf, bytes: u64 },
    #[error(
        "{}: token {token} at position {index} is outside the model's vocabulary of {vocab} (ids 0 to {}): the file was made with another tokenizer or is damaged",
        path.display(),
        vocab - 1
    )]
    TokenOutOfVocab { path: PathBuf, index: u64, token: u32, vocab: u32 },
    #[error("{what} holds {rows} rows of {seq} + 1 tokens; one batch needs {batch} rows: give more data or a smaller batch or sequence")]
    NotEnoughData { what: String, rows: u64, batch: u32, seq: u32 },
    #[error("the saved data position does not fit this data: {0}")]
    Position(String),
}

/// One batch: inputs and targets, each B*T i32, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
}

/// Where a training data stream is: enough to serve, after a restore, exactly the batches that
/// would have come next. Saved in a checkpoint's `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// The data it is a position in: the shard set's fingerprint (file names, token counts,
    /// format) or the shipped corpus; a restore into other data is refused.
    pub source: String,
    /// The seed the shard order is drawn from.
    pub seed: u64,
    /// Passes over the data completed.
    pub epoch: u64,
    /// Index into this epoch's shard order (0 for the corpus).
    pub shard: u32,
    /// Token offset, in that shard, of the next row.
    pub offset: u64,
    /// The file that index names (for people; not needed to restore).
    pub file: String,
}

/// The training stream `offplan run` reads: the shipped corpus or token shards.
pub enum TrainData {
    Corpus(Batches),
    Shards(ShardLoader),
}

impl TrainData {
    /// The files matching `pattern` (`--data`), or with none the shipped corpus, served as
    /// batches of `batch` x (`seq` + 1) tokens checked against `vocab`; shards in the order
    /// drawn from `seed`.
    pub fn open(pattern: Option<&str>, format: ShardFormat, batch: u32, seq: u32, vocab: u32, seed: u64) -> Result<TrainData, DataError> {
        Ok(match pattern {
            Some(p) => TrainData::Shards(ShardLoader::open(p, format, batch, seq, vocab, seed)?),
            None => TrainData::Corpus(Batches::new(tokenize_corpus()?, batch, seq, vocab)?),
        })
    }

    /// The next batch; an error for a token outside the vocabulary in it.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        match self {
            TrainData::Corpus(b) => Ok(b.next_batch()),
            TrainData::Shards(s) => s.next_batch(),
        }
    }
    pub fn position(&self) -> DataPosition {
        match self {
            TrainData::Corpus(b) => b.position(),
            TrainData::Shards(s) => s.position(),
        }
    }
    /// Continues from `pos` (saved by [`TrainData::position`] on the same data).
    pub fn seek(&mut self, pos: &DataPosition) -> Result<(), DataError> {
        match self {
            TrainData::Corpus(b) => b.seek(pos),
            TrainData::Shards(s) => s.seek(pos),
        }
    }
    /// Tokens in the whole stream.
    pub fn len_tokens(&self) -> u64 {
        match self {
            TrainData::Corpus(b) => b.len_tokens() as u64,
            TrainData::Shards(s) => s.set().tokens(),
        }
    }
    /// One line for the console: what is read.
    pub fn describe(&self) -> String {
        match self {
            TrainData::Corpus(b) => format!("the shipped corpus ({} tokens)", b.len_tokens()),
            TrainData::Shards(s) => s.set().describe(),
        }
    }
}

/// FNV-1a, 64 bits: a stable fingerprint of small metadata (not a cryptographic digest).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // a separator, so that ("ab", "c") and ("a", "bc") differ
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
