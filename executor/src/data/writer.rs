//! Text files to llm.c token shards: what `offplan tokenize` runs.
//!
//! Each input file is one document: GPT-2's BPE (tiktoken's `r50k_base`, ordinary text: a
//! literal "<|endoftext|>" in a file is text, not the special token) with EOT (50256) before
//! every document, as the shipped corpus is tokenised. Files are read in pieces of about
//! [`TokenizeOptions::chunk_bytes`] cut where the pre-tokenizer always cuts (at a single space
//! or newline between two printable ASCII characters), so the tokens are exactly those of the
//! whole file while memory stays bounded; pieces are encoded in parallel (rayon). A file with no
//! such place (say, no spaces at all) is read whole.
//!
//! Validation split: the first `val_fraction` of the input bytes (files in the order given; the
//! cut moved to the next such place) goes to `val_*.bin`, the rest to `train_*.bin`; each
//! stream starts with EOT. Shards of at most `shard_tokens` tokens are written into a
//! temporary folder and moved into `--out` only when all are written (each file fsynced): a
//! failure leaves `--out` as it was.

use super::{EOT, HEADER_BYTES, SHARD_MAGIC, SHARD_VERSION};
use rayon::prelude::*;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The llm.c header of a shard of `tokens` tokens.
pub fn shard_header(tokens: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&SHARD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&SHARD_VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&(tokens as i32).to_le_bytes());
    h
}

/// Writes one llm.c shard holding `tokens` (to a temporary name, renamed over `path`).
pub fn write_shard(path: &Path, tokens: &[u16]) -> std::io::Result<()> {
    if tokens.len() > i32::MAX as usize {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an llm.c shard holds at most 2^31 - 1 tokens"));
    }
    let mut bytes = shard_header(tokens.len() as u64);
    bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    models::io::write_atomic(path, &bytes)
}

/// One shard written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardInfo {
    pub name: String,
    pub tokens: u64,
}

struct OpenShard {
    file: BufWriter<File>,
    name: String,
    tokens: u64,
}

/// Streams tokens into `DIR/{prefix}_000000.bin`, `_000001`, ... of at most `shard_tokens`
/// tokens each (the header's count is written when a shard is closed; each is fsynced).
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    shard_tokens: u64,
    open: Option<OpenShard>,
    done: Vec<ShardInfo>,
}

impl ShardWriter {
    pub fn new(dir: &Path, prefix: &str, shard_tokens: u64) -> ShardWriter {
        let shard_tokens = shard_tokens.clamp(1, i32::MAX as u64);
        ShardWriter { dir: dir.to_path_buf(), prefix: prefix.into(), shard_tokens, open: None, done: Vec::new() }
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.done.iter().map(|s| s.tokens).sum::<u64>() + self.open.as_ref().map_or(0, |o| o.tokens)
    }

    pub fn push(&mut self, mut tokens: &[u32]) -> std::io::Result<()> {
        while !tokens.is_empty() {
            if self.open.is_none() {
                let name = format!("{}_{:06}.bin", self.prefix, self.done.len());
                let mut file = BufWriter::with_capacity(1 << 20, File::create(self.dir.join(&name))?);
                file.write_all(&shard_header(0))?;
                self.open = Some(OpenShard { file, name, tokens: 0 });
            }
            let shard = self.open.as_mut().expect("opened above");
            let n = (self.shard_tokens - shard.tokens).min(tokens.len() as u64) as usize;
            let mut bytes = Vec::with_capacity(2 * n);
            for &t in &tokens[..n] {
                let t = u16::try_from(t)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("token {t} does not fit a uint16 shard")))?;
                bytes.extend(t.to_le_bytes());
            }
            shard.file.write_all(&bytes)?;
            shard.tokens += n as u64;
            tokens = &tokens[n..];
            if shard.tokens == self.shard_tokens {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some(mut s) = self.open.take() {
            s.file.seek(SeekFrom::Start(0))?;
            s.file.write_all(&shard_header(s.tokens))?;
            let file = s.file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            self.done.push(ShardInfo { name: s.name, tokens: s.tokens });
        }
        Ok(())
    }

    /// Closes the last shard; the shards written, in order.
    pub fn finish(mut self) -> std::io::Result<Vec<ShardInfo>> {
        self.close()?;
        Ok(self.done)
    }
}

/// What [`tokenize_files`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizeOptions {
    /// Share of the input (bytes, from the start) that goes to the validation shards, in [0, 1).
    pub val_fraction: f64,
    /// Tokens per shard at most (llm.c's FineWeb shards hold 100M), 1 to 2^31 - 1.
    pub shard_tokens: u64,
    /// Bytes of text per piece the tokenizer is given (pieces are encoded in parallel).
    pub chunk_bytes: usize,
}

impl Default for TokenizeOptions {
    fn default() -> Self {
        TokenizeOptions { val_fraction: 0.1, shard_tokens: 100_000_000, chunk_bytes: 1 << 20 }
    }
}

/// Reported after each group of pieces and after each file.
#[derive(Clone, Debug)]
pub struct TokenizeProgress<'a> {
    pub file: &'a Path,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Tokens so far (train and validation, EOT included).
    pub tokens: u64,
    /// The file is done (its tokens are in `file_tokens`).
    pub file_done: bool,
    pub file_tokens: u64,
}

/// What [`tokenize_files`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenizeSummary {
    pub out: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub train: Vec<ShardInfo>,
    pub val: Vec<ShardInfo>,
}

impl TokenizeSummary {
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.tokens).sum()
    }
    pub fn val_tokens(&self) -> u64 {
        self.val.iter().map(|s| s.tokens).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("{0}")]
    Options(String),
    #[error("cannot read {}: {error}", path.display())]
    Input { path: PathBuf, error: std::io::Error },
    #[error("{} is not UTF-8 text (an invalid byte at offset {offset}): give UTF-8 text files", path.display())]
    NotUtf8 { path: PathBuf, offset: u64 },
    #[error("{} exists and is not a folder: give a folder for the shards", path.display())]
    OutNotDir { path: PathBuf },
    #[error("{} already holds token shards ({name}, ...): remove them or choose another folder", path.display())]
    OutHasShards { path: PathBuf, name: String },
    #[error(
        "cannot write {}: {error}{}; nothing was left in the output folder",
        path.display(),
        if error.kind() == std::io::ErrorKind::StorageFull { " (the disk is full: free space or write elsewhere)" } else { "" }
    )]
    Output { path: PathBuf, error: std::io::Error },
    #[error("the {files} input file(s) hold no text: nothing to tokenize")]
    NoText { files: usize },
    #[error("the validation split took all of the input ({val_tokens} tokens), leaving no training tokens: lower the validation fraction or give more text")]
    NoTrain { val_tokens: u64 },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// A printable ASCII character (neither whitespace nor a control nor a non-ASCII byte).
fn graphic(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Whether text may be cut before byte `p` without changing its tokens: a single space or
/// newline between printable ASCII characters. r50k's pre-tokenizer
/// (`'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`, no
/// look-behind) never joins a printable character with the whitespace after it, and starts a
/// piece at such a space or newline whatever precedes it, so both halves split as the whole did.
fn cuttable(b: &[u8], p: usize) -> bool {
    p >= 1 && p + 1 < b.len() && (b[p] == b' ' || b[p] == b'\n') && graphic(b[p - 1]) && graphic(b[p + 1])
}

/// Reads a file in pieces that end at [`cuttable`] places.
struct Chunker {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    block: usize,
}

impl Chunker {
    fn new(file: File, path: &Path, block: usize) -> Chunker {
        Chunker { file, path: path.to_path_buf(), buf: Vec::new(), start: 0, base: 0, eof: false, block }
    }

    /// Drops what was handed out and reads until `want` bytes are buffered (or the end).
    fn fill(&mut self, want: usize) -> Result<(), TokenizeError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        while !self.eof && self.buf.len() < want {
            let old = self.buf.len();
            self.buf.resize(want, 0);
            let read = loop {
                match self.file.read(&mut self.buf[old..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(TokenizeError::Input { path: self.path.clone(), error }),
                }
            };
            self.buf.truncate(old + read);
            self.eof = read == 0;
        }
        Ok(())
    }

    /// Where handing out has got to (file offset).
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The next piece and its file offset. `cut` (a file offset): the piece that covers it ends
    /// at the first cuttable place at or after it, so no piece spans it.
    fn next(&mut self, cut: Option<u64>) -> Result<Option<(u64, String)>, TokenizeError> {
        let mut want = self.block;
        loop {
            self.fill(want)?;
            let len = self.buf.len();
            if len == 0 {
                return Ok(None);
            }
            let inside = cut.filter(|&c| c > self.base && c < self.base + len as u64).map(|c| (c - self.base) as usize);
            let end = match inside {
                Some(c) => (c..len).find(|&p| cuttable(&self.buf, p)),
                None if self.eof => Some(len),
                None => (1..len).rev().find(|&p| cuttable(&self.buf, p)),
            };
            let end = match end {
                Some(e) => e,
                None if self.eof => len,
                None => {
                    want = 2 * len;
                    continue;
                }
            };
            let text = std::str::from_utf8(&self.buf[..end])
                .map_err(|e| TokenizeError::NotUtf8 { path: self.path.clone(), offset: self.base + e.valid_up_to() as u64 })?
                .to_owned();
            self.start = end;
            return Ok(Some((self.base, text)));
        }
    }
}

/// Where the shards go: straight into a new folder renamed into place, or (when `--out` exists)
/// into a temporary folder inside it whose files are moved up at the end.
struct Staging {
    out: PathBuf,
    dir: PathBuf,
    out_existed: bool,
}

impl Staging {
    fn prepare(out: &Path) -> Result<Staging, TokenizeError> {
        let pid = std::process::id();
        let staging = if out.exists() {
            if !out.is_dir() {
                return Err(TokenizeError::OutNotDir { path: out.to_path_buf() });
            }
            for e in std::fs::read_dir(out).map_err(output(out))? {
                let name = e.map_err(output(out))?.file_name().to_string_lossy().into_owned();
                if (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin") {
                    return Err(TokenizeError::OutHasShards { path: out.to_path_buf(), name });
                }
            }
            Staging { out: out.to_path_buf(), dir: out.join(format!(".offplan-tokenize.{pid}.tmp")), out_existed: true }
        } else {
            let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            // a file where a folder of the path should be
            if let Some(file) = parent.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
                return Err(TokenizeError::OutNotDir { path: file.to_path_buf() });
            }
            std::fs::create_dir_all(parent).map_err(output(parent))?;
            let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
            Staging { out: out.to_path_buf(), dir: parent.join(format!(".{name}.offplan-tokenize.{pid}.tmp")), out_existed: false }
        };
        let _ = std::fs::remove_dir_all(&staging.dir);
        std::fs::create_dir(&staging.dir).map_err(output(&staging.dir))?;
        Ok(staging)
    }

    /// Moves the shards into `out`.
    fn commit(&self) -> Result<(), TokenizeError> {
        sync_dir(&self.dir).map_err(output(&self.dir))?;
        if !self.out_existed {
            std::fs::rename(&self.dir, &self.out).map_err(output(&self.out))?;
            if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = sync_dir(parent);
            }
            return Ok(());
        }
        let mut names: Vec<_> =
            std::fs::read_dir(&self.dir).map_err(output(&self.dir))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        let mut moved = Vec::new();
        for n in names {
            if let Err(error) = std::fs::rename(self.dir.join(&n), self.out.join(&n)) {
                for m in &moved {
                    let _ = std::fs::remove_file(self.out.join(m));
                }
                return Err(TokenizeError::Output { path: self.out.join(&n), error });
            }
            moved.push(n);
        }
        let _ = std::fs::remove_dir(&self.dir);
        sync_dir(&self.out).map_err(output(&self.out))
    }

    fn abandon(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The error of writing at `path`.
fn output(path: &Path) -> impl Fn(std::io::Error) -> TokenizeError + '_ {
    move |error| TokenizeError::Output { path: path.to_path_buf(), error }
}

/// fsync of a folder (its entries), where the platform allows it.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Tokenises `inputs` into llm.c shards in `out` (see the module doc); `progress` is called as
/// it goes. All or nothing: on an error, `out` is left as it was.
pub fn tokenize_files(
    inputs: &[PathBuf],
    out: &Path,
    opts: &TokenizeOptions,
    progress: &mut dyn FnMut(&TokenizeProgress),
) -> Result<TokenizeSummary, TokenizeError> {
    let f = opts.val_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(TokenizeError::Options(format!("the validation fraction {f} is outside [0, 1)")));
    }
    if opts.shard_tokens == 0 || opts.shard_tokens > i32::MAX as u64 {
        return Err(TokenizeError::Options(format!("{} tokens per shard: give 1 to 2147483647", opts.shard_tokens)));
    }
    if inputs.is_empty() {
        return Err(TokenizeError::Options("no input files".into()));
    }
    let mut files = Vec::with_capacity(inputs.len());
    for p in inputs {
        let input = |error| TokenizeError::Input { path: p.clone(), error };
        let file = File::open(p).map_err(input)?;
        let meta = file.metadata().map_err(input)?;
        if meta.is_dir() {
            return Err(input(std::io::Error::other("it is a folder; give the text files in it")));
        }
        files.push((file, meta.len()));
    }
    let bpe = tiktoken_rs::r50k_base().map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
    let staging = Staging::prepare(out)?;
    match write_all(inputs, files, &staging.dir, opts, &bpe, progress).and_then(|s| staging.commit().map(|()| s)) {
        Ok((train, val, bytes)) => Ok(TokenizeSummary { out: out.to_path_buf(), files: inputs.len(), bytes, train, val }),
        Err(e) => {
            staging.abandon();
            Err(e)
        }
    }
}

type Written = (Vec<ShardInfo>, Vec<ShardInfo>, u64);

fn write_all(
    inputs: &[PathBuf],
    files: Vec<(File, u64)>,
    dir: &Path,
    opts: &TokenizeOptions,
    bpe: &tiktoken_rs::CoreBPE,
    progress: &mut dyn FnMut(&TokenizeProgress),
) -> Result<Written, TokenizeError> {
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let val_end = if opts.val_fraction > 0.0 { ((opts.val_fraction * total as f64).ceil() as u64).max(1) } else { 0 };
    let mut streams = [ShardWriter::new(dir, "val", opts.shard_tokens), ShardWriter::new(dir, "train", opts.shard_tokens)];
    let mut text_tokens = [0u64; 2];
    let group = 2 * rayon::current_num_threads().max(1);
    let (mut file_start, mut bytes_done) = (0u64, 0u64);
    for ((file, size), path) in files.into_iter().zip(inputs) {
        let cut = Some(val_end).filter(|&c| c > file_start && c < file_start + size).map(|c| c - file_start);
        let mut chunker = Chunker::new(file, path, opts.chunk_bytes.max(16));
        let (mut first, mut file_tokens) = (true, 0u64);
        loop {
            let mut pieces = Vec::with_capacity(group);
            while pieces.len() < group {
                match chunker.next(cut)? {
                    Some(p) => pieces.push(p),
                    None => break,
                }
            }
            if pieces.is_empty() {
                break;
            }
            let encoded: Vec<Vec<u32>> = pieces.par_iter().map(|(_, text)| bpe.encode_ordinary(text)).collect();
            for ((offset, _), tokens) in pieces.iter().zip(encoded) {
                let s = usize::from(file_start + offset >= val_end);
                // Every document, and each stream, starts with EOT.
                if first || streams[s].tokens() == 0 {
                    streams[s].push(&[EOT]).map_err(output(dir))?;
                    file_tokens += 1;
                }
                first = false;
                streams[s].push(&tokens).map_err(output(dir))?;
                text_tokens[s] += tokens.len() as u64;
                file_tokens += tokens.len() as u64;
            }
            let tokens = streams[0].tokens() + streams[1].tokens();
            let done = bytes_done + chunker.offset();
            progress(&TokenizeProgress { file: path, bytes_done: done, bytes_total: total, tokens, file_done: false, file_tokens });
        }
        bytes_done += chunker.offset();
        file_start += size;
        let tokens = streams[0].tokens() + streams[1].tokens();
        progress(&TokenizeProgress { file: path, bytes_done, bytes_total: total, tokens, file_done: true, file_tokens });
    }
    if text_tokens == [0, 0] {
        return Err(TokenizeError::NoText { files: inputs.len() });
    }
    if text_tokens[1] == 0 {
        return Err(TokenizeError::NoTrain { val_tokens: streams[0].tokens() });
    }
    let [val, train] = streams;
    Ok((train.finish().map_err(output(dir))?, val.finish().map_err(output(dir))?, bytes_done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ShardFormat, ShardSet, CORPUS};

    fn quiet() -> impl FnMut(&TokenizeProgress) {
        |_| {}
    }

    /// Every token of the files matching `pattern`, in name order.
    fn read_all(pattern: &Path) -> Vec<u32> {
        ShardSet::open(pattern.to_str().unwrap(), ShardFormat::LlmC).unwrap().read_all(50257).unwrap()
    }

    #[test]
    fn pieces_cut_at_safe_places_give_the_whole_text_s_tokens() {
        let bpe = tiktoken_rs::r50k_base().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut text: String = CORPUS.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("\n  \n\n x");
        text.push_str(" tail   with spaces  \n\n");
        let p = dir.path().join("all.txt");
        std::fs::write(&p, &text).unwrap();
        let whole = bpe.encode_ordinary(&text);
        for block in [16, 100, 4096] {
            let mut c = Chunker::new(File::open(&p).unwrap(), &p, block);
            let (mut toks, mut pieces, mut at) = (Vec::new(), 0, 0u64);
            while let Some((offset, piece)) = c.next(None).unwrap() {
                assert_eq!(offset, at);
                at += piece.len() as u64;
                toks.extend(bpe.encode_ordinary(&piece));
                pieces += 1;
            }
            assert_eq!(at, text.len() as u64);
            assert!(pieces > text.len() / (4 * block).max(block * 64), "block {block}: {pieces} pieces");
            assert_eq!(toks, whole, "block {block}");
        }
        // A cut lands at the first safe place at or after it.
        let mut c = Chunker::new(File::open(&p).unwrap(), &p, 1 << 20);
        let (_, first) = c.next(Some(1000)).unwrap().unwrap();
        assert!(first.len() >= 1000 && first.len() < 1100, "{}", first.len());
        assert!(cuttable(text.as_bytes(), first.len()));
    }

    #[test]
    fn invalid_utf8_is_named_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, [b'a', b'b', 0xff, b'c']).unwrap();
        let e = tokenize_files(&[p], &dir.path().join("out"), &TokenizeOptions::default(), &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::NotUtf8 { offset: 2, .. }), "{e}");
        assert!(!dir.path().join("out").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary folder left");
    }

    #[test]
    fn writes_train_and_val_shards_of_the_documents() {
        let bpe = tiktoken_rs::r50k_base().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (name, text) in &CORPUS[..3] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            inputs.push(p);
        }
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        inputs.insert(1, empty);
        let out = dir.path().join("shards");
        let opts = TokenizeOptions { val_fraction: 0.2, shard_tokens: 1000, chunk_bytes: 512 };
        let mut reports = 0;
        let s = tokenize_files(&inputs, &out, &opts, &mut |_| reports += 1).unwrap();
        assert!(reports >= 4);
        assert!(s.train.len() > 2 && !s.val.is_empty(), "{s:?}");
        assert!(s.train.iter().rev().skip(1).all(|x| x.tokens == 1000), "full shards but the last");
        let train = read_all(&out.join("train_*.bin"));
        let val = read_all(&out.join("val_*.bin"));
        assert_eq!(train.len() as u64, s.train_tokens());
        assert_eq!(val.len() as u64, s.val_tokens());
        // EOT + doc, per document (the empty one adds nothing), split into val then train.
        let mut want = Vec::new();
        for (_, text) in &CORPUS[..3] {
            want.push(EOT);
            want.extend(bpe.encode_ordinary(text));
        }
        assert_eq!(val[0], EOT);
        assert_eq!(train[0], EOT);
        let mut joined = val.clone();
        joined.extend(&train[1..]); // the EOT that starts the train stream cuts a document
        assert_eq!(joined, want);
        let share = val.len() as f64 / want.len() as f64;
        assert!((0.15..0.25).contains(&share), "{share}");
        // Only the shards are in the folder: no temporary left.
        let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| n.ends_with(".bin") && !n.starts_with('.')), "{names:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), inputs.len() + 1);
        // A second run into the same folder is refused and leaves it alone.
        let e = tokenize_files(&inputs, &out, &opts, &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::OutHasShards { .. }), "{e}");
        assert_eq!(read_all(&out.join("train_*.bin")), train);
    }

    #[test]
    fn an_existing_empty_folder_receives_the_shards_and_no_val_without_a_fraction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "hello world, hello shards").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.md"), "mine").unwrap();
        let opts = TokenizeOptions { val_fraction: 0.0, ..TokenizeOptions::default() };
        let s = tokenize_files(&[p], &out, &opts, &mut quiet()).unwrap();
        assert!(s.val.is_empty());
        assert_eq!(s.train.len(), 1);
        let mut names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["notes.md", "train_000000.bin"]);
    }

    #[test]
    fn bad_input_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        let opts = TokenizeOptions::default();
        let e = tokenize_files(std::slice::from_ref(&empty), &out, &opts, &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::NoText { files: 1 }), "{e}");
        let e = tokenize_files(&[dir.path().join("missing.txt")], &out, &opts, &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::Input { .. }) && e.to_string().contains("missing.txt"), "{e}");
        // One word and a validation share: nothing is left for training.
        let word = dir.path().join("word.txt");
        std::fs::write(&word, "word").unwrap();
        let e = tokenize_files(std::slice::from_ref(&word), &out, &opts, &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::NoTrain { .. }), "{e}");
        // --out below a file cannot be made.
        let e = tokenize_files(std::slice::from_ref(&word), &empty.join("sub/out"), &opts, &mut quiet()).unwrap_err();
        assert!(matches!(&e, TokenizeError::OutNotDir { path } if *path == empty), "{e}");
        let e = tokenize_files(std::slice::from_ref(&word), &empty, &opts, &mut quiet()).unwrap_err();
        assert!(matches!(e, TokenizeError::OutNotDir { .. }), "{e}");
        for bad in [TokenizeOptions { val_fraction: 1.0, ..opts.clone() }, TokenizeOptions { shard_tokens: 0, ..opts.clone() }] {
            assert!(matches!(tokenize_files(std::slice::from_ref(&word), &out, &bad, &mut quiet()), Err(TokenizeError::Options(_))));
        }
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
