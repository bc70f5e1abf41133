//! Token files on disk, memory-mapped ([`crate::mmap`]): llm.c's shards and nanoGPT's plain
//! uint16 files, several by glob.
//!
//! Order: training reads rows of T+1 consecutive tokens, shard after shard. Each pass over the
//! data (an epoch) visits the shards in an order drawn from (seed, epoch) (Fisher-Yates over
//! SplitMix64), and starts each shard at a row phase drawn from (seed, epoch, shard) in 0..=T,
//! so that two epochs do not cut the same rows; a row never straddles two shards (the tail of a
//! shard shorter than a row is skipped), a batch may (its B rows are the next B rows). The
//! [`DataPosition`] (seed, epoch, index in the epoch's order, token offset) is all the state:
//! restored with [`ShardLoader::seek`], the loader serves exactly the batches it would have.
//!
//! Validation ([`ValidationSet`]) reads its files in name order from offset 0, no shuffling,
//! and keeps the first N batches: the same batches at every evaluation.
//!
//! Checks: the llm.c header (magic, version, token count against the file size) when a shard is
//! opened; token ids against the vocabulary as each batch is read (lazily: a shard is never read
//! whole up front).

use super::{fnv1a, Batch, DataError, DataPosition, HEADER_BYTES, SHARD_MAGIC, SHARD_VERSION};
use crate::init::Rng;
use crate::mmap::MappedFile;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a token file is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardFormat {
    /// llm.c: 256 little-endian int32 (magic 20240520, version 1, token count, 0...), then the
    /// uint16 tokens. What `offplan tokenize` writes.
    #[default]
    LlmC,
    /// nanoGPT's `.bin`: little-endian uint16 tokens, nothing else.
    Raw,
}

impl ShardFormat {
    pub fn name(self) -> &'static str {
        match self {
            ShardFormat::LlmC => "llmc",
            ShardFormat::Raw => "raw",
        }
    }
}

impl std::fmt::Display for ShardFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ShardFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "llmc" | "llm.c" => Ok(ShardFormat::LlmC),
            "raw" | "u16" | "nanogpt" => Ok(ShardFormat::Raw),
            _ => {
                Err(format!("unknown token file format `{s}`: `llmc` (llm.c shards, the default) or `raw` (plain uint16, nanoGPT's .bin)"))
            }
        }
    }
}

enum Storage {
    Mapped(MappedFile),
    Memory(Vec<u8>),
}

/// One token file: its path, where the tokens start, how many.
pub struct Shard {
    path: PathBuf,
    storage: Storage,
    /// Byte offset of token 0.
    start: usize,
    tokens: u64,
}

impl Shard {
    /// Maps `path` and checks its header (llm.c) or its length (raw).
    pub fn open(path: &Path, format: ShardFormat) -> Result<Shard, DataError> {
        let map = MappedFile::open(path).map_err(|error| DataError::Read { path: path.to_path_buf(), error })?;
        let (start, tokens) = layout(path, &map, format)?;
        Ok(Shard { path: path.to_path_buf(), storage: Storage::Mapped(map), start, tokens })
    }

    /// A shard held in memory (tests, small data), named `name` in messages.
    pub fn from_tokens(name: &str, tokens: &[u16]) -> Shard {
        let bytes = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        Shard { path: PathBuf::from(name), storage: Storage::Memory(bytes), start: 0, tokens: tokens.len() as u64 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Memory(v) => v,
        }
    }

    /// Appends tokens `[first, first + len)` to `out`, each checked against `vocab`.
    pub fn read(&self, first: u64, len: usize, vocab: u32, out: &mut Vec<u32>) -> Result<(), DataError> {
        if first.saturating_add(len as u64) > self.tokens {
            let (path, n) = (self.path.display(), self.tokens);
            return Err(DataError::Position(format!("tokens {first}..{} are beyond the {n} of {path}", first + len as u64)));
        }
        let at = self.start + 2 * first as usize;
        let bytes = &self.bytes()[at..at + 2 * len];
        for (k, pair) in bytes.chunks_exact(2).enumerate() {
            let token = u16::from_le_bytes([pair[0], pair[1]]) as u32;
            if token >= vocab {
                return Err(DataError::TokenOutOfVocab { path: self.path.clone(), index: first + k as u64, token, vocab });
            }
            out.push(token);
        }
        Ok(())
    }
}

/// Where the tokens of a file start and how many there are; checks the llm.c header.
fn layout(path: &Path, bytes: &[u8], format: ShardFormat) -> Result<(usize, u64), DataError> {
    let have = bytes.len() as u64;
    let path = || path.to_path_buf();
    match format {
        ShardFormat::Raw => {
            if !have.is_multiple_of(2) {
                return Err(DataError::OddLength { path: path(), bytes: have });
            }
            Ok((0, have / 2))
        }
        ShardFormat::LlmC => {
            if bytes.len() < HEADER_BYTES {
                return Err(DataError::ShortHeader { path: path(), have });
            }
            let int = |i: usize| i32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
            if int(0) != SHARD_MAGIC {
                return Err(DataError::WrongMagic { path: path(), found: int(0) });
            }
            if int(1) != SHARD_VERSION {
                return Err(DataError::WrongVersion { path: path(), found: int(1) });
            }
            let count = int(2);
            if count < 0 {
                return Err(DataError::BadCount { path: path(), count });
            }
            let tokens = count as u64;
            let need = HEADER_BYTES as u64 + 2 * tokens;
            if have < need {
                return Err(DataError::Truncated { path: path(), tokens, need, have });
            }
            if have > need {
                return Err(DataError::Trailing { path: path(), tokens, extra: have - need });
            }
            Ok((HEADER_BYTES, tokens))
        }
    }
}

/// Token files read as one stream, in file-name order (the order before any shuffling).
pub struct ShardSet {
    what: String,
    format: ShardFormat,
    shards: Vec<Shard>,
    fingerprint: String,
}

impl ShardSet {
    /// Every file matching the glob `pattern` (a plain path is a pattern matching itself),
    /// sorted by path; each opened and checked.
    pub fn open(pattern: &str, format: ShardFormat) -> Result<ShardSet, DataError> {
        let paths = glob::glob(pattern).map_err(|e| DataError::BadPattern { pattern: pattern.into(), message: e.to_string() })?;
        let mut files = Vec::new();
        let mut folders = Vec::new();
        for p in paths {
            let p = p.map_err(|e| DataError::Read { path: e.path().to_path_buf(), error: e.into() })?;
            if p.is_dir() {
                folders.push(p);
            } else {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(match folders.into_iter().next() {
                Some(dir) => DataError::Read {
                    path: dir,
                    error: std::io::Error::other("it is a folder: give a pattern for the token files in it, such as DIR/train_*.bin"),
                },
                None => DataError::NoMatch { pattern: pattern.into() },
            });
        }
        files.sort();
        let shards = files.iter().map(|p| Shard::open(p, format)).collect::<Result<Vec<_>, _>>()?;
        Ok(ShardSet::from_shards(pattern, format, shards))
    }

    /// A set of shards already opened (or made in memory), in the order given.
    pub fn from_shards(what: &str, format: ShardFormat, shards: Vec<Shard>) -> ShardSet {
        let names: Vec<String> = shards.iter().map(|s| file_name(&s.path)).collect();
        let counts: Vec<[u8; 8]> = shards.iter().map(|s| s.tokens.to_le_bytes()).collect();
        let mut parts: Vec<&[u8]> = vec![format.name().as_bytes()];
        for (n, c) in names.iter().zip(&counts) {
            parts.push(n.as_bytes());
            parts.push(c);
        }
        let tokens: u64 = shards.iter().map(|s| s.tokens).sum();
        let span = match (names.first(), names.last()) {
            (Some(a), Some(b)) if shards.len() > 1 => format!("{a} .. {b}"),
            (Some(a), _) => a.clone(),
            _ => String::new(),
        };
        let fingerprint = format!("{} {} file(s) ({span}), {tokens} tokens, fingerprint {:016x}", shards.len(), format, fnv1a(&parts));
        ShardSet { what: what.into(), format, shards, fingerprint }
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }
    pub fn format(&self) -> ShardFormat {
        self.format
    }
    /// Every token of every shard, in order, each checked below `vocab`.
    pub fn read_all(&self, vocab: u32) -> Result<Vec<u32>, DataError> {
        let mut out = Vec::new();
        for s in &self.shards {
            s.read(0, s.tokens() as usize, vocab, &mut out)?;
        }
        Ok(out)
    }

    /// Tokens in all files.
    pub fn tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.tokens).sum()
    }
    /// Names the files and their contents: what a [`DataPosition`] is a position in.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// One line for the console.
    pub fn describe(&self) -> String {
        format!("`{}`: {}", self.what, self.fingerprint)
    }
    /// Rows of `row` tokens over all files, each file cut from offset 0.
    fn rows(&self, row: u64) -> u64 {
        self.shards.iter().map(|s| s.tokens / row).sum()
    }
    fn too_small(&self, batch: u32, seq: u32) -> Result<(), DataError> {
        let rows = self.rows(seq as u64 + 1);
        if rows < batch as u64 {
            return Err(DataError::NotEnoughData { what: self.describe(), rows, batch, seq });
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// The order an epoch visits the shards in.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng::new(seed ^ 0x5851_F42D_4C95_7F2D_u64.wrapping_mul(epoch.wrapping_add(1)));
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The token offset an epoch starts shard `shard` at: a draw in 0..row, or 0 where that would
/// leave no whole row.
fn phase(seed: u64, epoch: u64, shard: u32, tokens: u64, row: u64) -> u64 {
    let mut rng = Rng::new(
        seed ^ 0x2545_F491_4F6C_DD1D_u64.wrapping_mul(epoch.wrapping_add(1)) ^ 0x9FB2_1C65_1E98_DF25_u64.wrapping_mul(shard as u64 + 1),
    );
    let p = rng.next_u64() % row;
    if p + row <= tokens {
        p
    } else {
        0
    }
}

/// Training batches over a [`ShardSet`], in the seeded order, forever (epoch after epoch).
pub struct ShardLoader {
    set: ShardSet,
    batch: u32,
    seq: u32,
    vocab: u32,
    seed: u64,
    epoch: u64,
    order: Vec<u32>,
    /// Index into `order` of the shard being read.
    cursor: usize,
    /// Token offset of the next row in that shard (it may not fit: then the next shard).
    offset: u64,
}

impl ShardLoader {
    /// Opens the files matching `pattern` and serves batches of `batch` x (`seq` + 1) tokens,
    /// ids checked against `vocab`, in the order drawn from `seed`.
    pub fn open(pattern: &str, format: ShardFormat, batch: u32, seq: u32, vocab: u32, seed: u64) -> Result<ShardLoader, DataError> {
        ShardLoader::new(ShardSet::open(pattern, format)?, batch, seq, vocab, seed)
    }

    pub fn new(set: ShardSet, batch: u32, seq: u32, vocab: u32, seed: u64) -> Result<ShardLoader, DataError> {
        set.too_small(batch, seq)?;
        let order = epoch_order(seed, 0, set.len());
        let mut l = ShardLoader { set, batch, seq, vocab, seed, epoch: 0, order, cursor: 0, offset: 0 };
        l.offset = l.start_of(l.cursor);
        Ok(l)
    }

    pub fn set(&self) -> &ShardSet {
        &self.set
    }

    fn row(&self) -> u64 {
        self.seq as u64 + 1
    }

    fn start_of(&self, cursor: usize) -> u64 {
        let s = self.order[cursor];
        phase(self.seed, self.epoch, s, self.set.shards[s as usize].tokens, self.row())
    }

    /// Moves to the next shard (and epoch) until a whole row fits at the cursor.
    fn fit(&mut self) {
        let row = self.row();
        while self.offset + row > self.set.shards[self.order[self.cursor] as usize].tokens {
            self.cursor += 1;
            if self.cursor == self.order.len() {
                self.epoch += 1;
                self.order = epoch_order(self.seed, self.epoch, self.set.len());
                self.cursor = 0;
            }
            self.offset = self.start_of(self.cursor);
        }
    }

    /// The next B rows; an error names the file and position of a token outside the vocabulary.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        let (b, t) = (self.batch as usize, self.seq as usize);
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut row = Vec::with_capacity(t + 1);
        for _ in 0..b {
            self.fit();
            row.clear();
            self.set.shards[self.order[self.cursor] as usize].read(self.offset, t + 1, self.vocab, &mut row)?;
            inputs.extend(row[..t].iter().map(|&x| x as i32));
            targets.extend(row[1..].iter().map(|&x| x as i32));
            self.offset += self.row();
        }
        Ok(Batch { inputs, targets })
    }

    /// Where the next batch starts.
    pub fn position(&self) -> DataPosition {
        DataPosition {
            source: self.set.fingerprint.clone(),
            seed: self.seed,
            epoch: self.epoch,
            shard: self.cursor as u32,
            offset: self.offset,
            file: file_name(&self.set.shards[self.order[self.cursor] as usize].path),
        }
    }

    /// Continues from `pos`, saved by [`ShardLoader::position`] over the same files (its seed
    /// replaces this loader's).
    pub fn seek(&mut self, pos: &DataPosition) -> Result<(), DataError> {
        if pos.source != self.set.fingerprint {
            return Err(DataError::Position(format!(
                "it was saved reading {}; this run reads {}: resume with the same data",
                pos.source, self.set.fingerprint
            )));
        }
        let n = self.set.len();
        if pos.shard as usize >= n {
            return Err(DataError::Position(format!("shard index {} of {n}", pos.shard)));
        }
        let order = epoch_order(pos.seed, pos.epoch, n);
        let tokens = self.set.shards[order[pos.shard as usize] as usize].tokens;
        if pos.offset > tokens {
            return Err(DataError::Position(format!("offset {} beyond the {tokens} tokens of {}", pos.offset, pos.file)));
        }
        self.seed = pos.seed;
        self.epoch = pos.epoch;
        self.order = order;
        self.cursor = pos.shard as usize;
        self.offset = pos.offset;
        Ok(())
    }
}

/// A fixed set of validation batches: the first ones of the files in name order.
pub struct ValidationSet {
    set: ShardSet,
    batch: u32,
    seq: u32,
    vocab: u32,
    /// (shard, token offset) of every row of every batch.
    rows: Vec<(u32, u64)>,
}

impl ValidationSet {
    /// The first `max_batches` batches (fewer if the files hold fewer) of the files matching
    /// `pattern`.
    pub fn open(
        pattern: &str,
        format: ShardFormat,
        batch: u32,
        seq: u32,
        vocab: u32,
        max_batches: usize,
    ) -> Result<ValidationSet, DataError> {
        ValidationSet::new(ShardSet::open(pattern, format)?, batch, seq, vocab, max_batches)
    }

    pub fn new(set: ShardSet, batch: u32, seq: u32, vocab: u32, max_batches: usize) -> Result<ValidationSet, DataError> {
        set.too_small(batch, seq)?;
        let row = seq as u64 + 1;
        let want = (set.rows(row) / batch as u64).min(max_batches as u64) * batch as u64;
        let mut rows = Vec::with_capacity(want as usize);
        'files: for (i, s) in set.shards.iter().enumerate() {
            for r in 0..s.tokens / row {
                if rows.len() as u64 == want {
                    break 'files;
                }
                rows.push((i as u32, r * row));
            }
        }
        Ok(ValidationSet { set, batch, seq, vocab, rows })
    }

    /// Batches in the set.
    pub fn len(&self) -> usize {
        self.rows.len() / self.batch as usize
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn set(&self) -> &ShardSet {
        &self.set
    }

    /// Batch `i` (< [`ValidationSet::len`]).
    pub fn batch(&self, i: usize) -> Result<Batch, DataError> {
        let (b, t) = (self.batch as usize, self.seq as usize);
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut row = Vec::with_capacity(t + 1);
        for &(s, offset) in &self.rows[i * b..(i + 1) * b] {
            row.clear();
            self.set.shards[s as usize].read(offset, t + 1, self.vocab, &mut row)?;
            inputs.extend(row[..t].iter().map(|&x| x as i32));
            targets.extend(row[1..].iter().map(|&x| x as i32));
        }
        Ok(Batch { inputs, targets })
    }

    /// Every batch, in order.
    pub fn batches(&self) -> impl Iterator<Item = Result<Batch, DataError>> + '_ {
        (0..self.len()).map(|i| self.batch(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::write_shard;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn header(magic: i32, version: i32, count: i32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..8].copy_from_slice(&version.to_le_bytes());
        h[8..12].copy_from_slice(&count.to_le_bytes());
        h
    }

    fn raw(tokens: &[u16]) -> Vec<u8> {
        tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    #[test]
    fn reads_the_llmc_header_and_tokens() {
        let d = tmp();
        let p = d.path().join("train_000000.bin");
        let toks: Vec<u16> = (0..100).collect();
        write_shard(&p, &toks).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 1024 + 200);
        assert_eq!(&bytes[..12], &header(20240520, 1, 100)[..12]);
        assert!(bytes[12..1024].iter().all(|&b| b == 0));
        let s = Shard::open(&p, ShardFormat::LlmC).unwrap();
        assert_eq!(s.tokens(), 100);
        let mut out = Vec::new();
        s.read(10, 5, 1000, &mut out).unwrap();
        assert_eq!(out, vec![10, 11, 12, 13, 14]);
        assert!(s.read(98, 5, 1000, &mut out).is_err());
    }

    #[test]
    fn raw_files_are_plain_uint16() {
        let d = tmp();
        let p = d.path().join("train.bin");
        std::fs::write(&p, raw(&[5, 6, 7])).unwrap();
        let s = Shard::open(&p, ShardFormat::Raw).unwrap();
        assert_eq!(s.tokens(), 3);
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let e = Shard::open(&p, ShardFormat::Raw).err().unwrap();
        assert!(matches!(e, DataError::OddLength { bytes: 3, .. }), "{e}");
        // An llm.c reader refuses it with a hint at the raw format.
        std::fs::write(&p, raw(&[7; 600])).unwrap();
        let e = Shard::open(&p, ShardFormat::LlmC).err().unwrap().to_string();
        assert!(e.contains("train.bin") && e.contains("magic") && e.contains("raw format"), "{e}");
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let d = tmp();
        let p = d.path().join("s.bin");
        let err = |bytes: Vec<u8>| {
            std::fs::write(&p, bytes).unwrap();
            Shard::open(&p, ShardFormat::LlmC).err().unwrap()
        };
        let mut b = header(12345, 1, 0);
        assert!(matches!(err(b.clone()), DataError::WrongMagic { found: 12345, .. }));
        b = header(20240520, 2, 0);
        let e = err(b);
        assert!(matches!(e, DataError::WrongVersion { found: 2, .. }));
        assert!(e.to_string().contains("uint32"), "{e}");
        let e = err(vec![0; 100]);
        assert!(matches!(e, DataError::ShortHeader { have: 100, .. }), "{e}");
        assert!(matches!(err(header(20240520, 1, -3)), DataError::BadCount { count: -3, .. }));
        // Truncated: 10 tokens promised, 7 present.
        let mut b = header(20240520, 1, 10);
        b.extend(raw(&[1; 7]));
        let e = err(b);
        assert!(matches!(e, DataError::Truncated { tokens: 10, need: 1044, have: 1038, .. }), "{e}");
        assert!(e.to_string().contains("s.bin") && e.to_string().contains("truncated"), "{e}");
        let mut b = header(20240520, 1, 2);
        b.extend(raw(&[1; 3]));
        assert!(matches!(err(b), DataError::Trailing { extra: 2, .. }));
        let e = Shard::open(&d.path().join("none.bin"), ShardFormat::LlmC).err().unwrap();
        assert!(matches!(e, DataError::Read { .. }) && e.to_string().contains("none.bin"), "{e}");
    }

    #[test]
    fn globs_sort_and_refuse_empty_matches() {
        let d = tmp();
        for (i, n) in [(2, 30), (0, 10), (1, 20)] {
            write_shard(&d.path().join(format!("train_{i:06}.bin")), &vec![i as u16; n]).unwrap();
        }
        write_shard(&d.path().join("val_000000.bin"), &[9; 5]).unwrap();
        let pat = d.path().join("train_*.bin");
        let set = ShardSet::open(pat.to_str().unwrap(), ShardFormat::LlmC).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.tokens(), 60);
        let counts: Vec<u64> = set.shards().iter().map(|s| s.tokens()).collect();
        assert_eq!(counts, vec![10, 20, 30], "name order");
        let pat = d.path().join("test_*.bin");
        let e = ShardSet::open(pat.to_str().unwrap(), ShardFormat::LlmC).err().unwrap();
        assert!(matches!(e, DataError::NoMatch { .. }) && e.to_string().contains("test_*.bin"), "{e}");
        let e = ShardSet::open(d.path().to_str().unwrap(), ShardFormat::LlmC).err().unwrap();
        assert!(e.to_string().contains("folder"), "{e}");
        assert!(matches!(ShardSet::open("[", ShardFormat::LlmC), Err(DataError::BadPattern { .. })));
        // One bad file spoils the set, and is named.
        std::fs::write(d.path().join("train_000003.bin"), [0u8; 10]).unwrap();
        let pat = d.path().join("train_*.bin");
        let e = ShardSet::open(pat.to_str().unwrap(), ShardFormat::LlmC).err().unwrap().to_string();
        assert!(e.contains("train_000003.bin"), "{e}");
    }

    /// Shards whose tokens say where they come from: shard s, token i holds s * 1000 + i.
    fn numbered(lens: &[u64]) -> ShardSet {
        let shards = lens
            .iter()
            .enumerate()
            .map(|(s, &n)| Shard::from_tokens(&format!("s{s}"), &(0..n).map(|i| (s as u64 * 1000 + i) as u16).collect::<Vec<_>>()));
        ShardSet::from_shards("test", ShardFormat::Raw, shards.collect())
    }

    #[test]
    fn batches_are_consecutive_rows_that_never_straddle_a_shard() {
        let (b, t) = (3u32, 7u32);
        let mut l = ShardLoader::new(numbered(&[50, 23, 8, 41]), b, t, 60000, 11).unwrap();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..40 {
            let x = l.next_batch().unwrap();
            assert_eq!(x.inputs.len(), (b * t) as usize);
            for r in 0..b as usize {
                let row: Vec<i32> = x.inputs[r * 7..(r + 1) * 7].to_vec();
                let tgt = &x.targets[r * 7..(r + 1) * 7];
                // targets are the inputs shifted by one, all from one shard, consecutive
                assert_eq!(&row[1..], &tgt[..6]);
                let shard = row[0] / 1000;
                assert!(tgt.iter().chain(&row).all(|v| v / 1000 == shard), "{row:?} {tgt:?}");
                for w in row.windows(2) {
                    assert_eq!(w[1], w[0] + 1);
                }
                *seen.entry(shard).or_insert(0) += 1;
            }
        }
        // the 8-token shard holds exactly one row of 8; every shard is read
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    #[test]
    fn the_order_depends_on_the_seed_only_and_positions_restore_exactly() {
        let lens = [40, 40, 40, 40, 40];
        let run = |seed: u64, n: usize| {
            let mut l = ShardLoader::new(numbered(&lens), 2, 4, 60000, seed).unwrap();
            (0..n).map(|_| l.next_batch().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(5, 30), run(5, 30), "deterministic");
        assert_ne!(run(5, 30), run(6, 30), "the seed changes the order");
        // The uninterrupted stream, and the position before each batch.
        let mut a = ShardLoader::new(numbered(&lens), 2, 4, 60000, 5).unwrap();
        let (mut positions, mut stream) = (Vec::new(), Vec::new());
        for _ in 0..63 {
            positions.push(a.position());
            stream.push(a.next_batch().unwrap());
        }
        // Restored (through JSON) into a loader built with another seed: the position carries
        // its own, and the next batches are those of the uninterrupted stream.
        for (step, pos) in positions.iter().enumerate().take(60) {
            let json = serde_json::to_string(pos).unwrap();
            let mut b = ShardLoader::new(numbered(&lens), 2, 4, 60000, 999).unwrap();
            b.seek(&serde_json::from_str(&json).unwrap()).unwrap();
            let got: Vec<_> = (0..3).map(|_| b.next_batch().unwrap()).collect();
            assert_eq!(got, stream[step..step + 3], "step {step}");
        }
        assert!(a.position().epoch >= 1, "ran past an epoch: {:?}", a.position());
        // An epoch covers every shard once.
        let mut l = ShardLoader::new(numbered(&lens), 1, 4, 60000, 3).unwrap();
        let mut firsts = std::collections::BTreeSet::new();
        while l.position().epoch == 0 {
            firsts.insert(l.next_batch().unwrap().inputs[0] / 1000);
        }
        assert_eq!(firsts.len(), 5);
    }

    #[test]
    fn positions_of_other_data_are_refused() {
        let mut a = ShardLoader::new(numbered(&[40, 40]), 2, 4, 60000, 1).unwrap();
        a.next_batch().unwrap();
        let pos = a.position();
        let mut b = ShardLoader::new(numbered(&[40, 41]), 2, 4, 60000, 1).unwrap();
        let e = b.seek(&pos).unwrap_err().to_string();
        assert!(e.contains("same data"), "{e}");
        let mut bad = pos.clone();
        bad.shard = 7;
        assert!(a.seek(&bad).is_err());
        bad = pos;
        bad.offset = 41;
        assert!(a.seek(&bad).is_err());
    }

    #[test]
    fn tokens_outside_the_vocabulary_are_caught_in_their_batch() {
        let d = tmp();
        let p = d.path().join("train_000000.bin");
        let mut toks = vec![1u16; 100];
        toks[57] = 50257;
        write_shard(&p, &toks).unwrap();
        // Opening does not read the tokens; the batch holding token 57 fails and names it.
        let mut l = ShardLoader::open(p.to_str().unwrap(), ShardFormat::LlmC, 2, 9, 50257, 0).unwrap();
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = l.next_batch() {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("the bad token is served within an epoch");
        assert!(matches!(e, DataError::TokenOutOfVocab { index: 57, token: 50257, vocab: 50257, .. }), "{e}");
        assert!(e.to_string().contains("train_000000.bin"), "{e}");
    }

    #[test]
    fn train_data_serves_shards_or_the_corpus_and_restores_either() {
        use crate::data::TrainData;
        let d = tmp();
        let toks: Vec<u16> = (0..2000).map(|i| (i % 50000) as u16).collect();
        write_shard(&d.path().join("train_000000.bin"), &toks).unwrap();
        write_shard(&d.path().join("train_000001.bin"), &toks[..700]).unwrap();
        let pat = d.path().join("train_*.bin");
        for pattern in [Some(pat.to_str().unwrap()), None] {
            let open = || TrainData::open(pattern, ShardFormat::LlmC, 2, 16, 50257, 4).unwrap();
            let mut a = open();
            assert!(a.describe().contains(if pattern.is_some() { "2 llmc file(s)" } else { "corpus" }), "{}", a.describe());
            for _ in 0..30 {
                a.next_batch().unwrap();
            }
            let pos = a.position();
            let mut b = open();
            b.seek(&pos).unwrap();
            for _ in 0..10 {
                assert_eq!(a.next_batch().unwrap(), b.next_batch().unwrap());
            }
        }
        assert!(TrainData::open(Some("/nonexistent/train_*.bin"), ShardFormat::LlmC, 2, 16, 50257, 4).is_err());
    }

    #[test]
    fn too_little_data_for_a_batch_is_an_error() {
        let e = ShardLoader::new(numbered(&[9, 9]), 3, 8, 60000, 0).err().unwrap();
        assert!(matches!(e, DataError::NotEnoughData { rows: 2, batch: 3, .. }), "{e}");
        assert!(ShardLoader::new(numbered(&[9, 9, 9]), 3, 8, 60000, 0).is_ok());
    }

    #[test]
    fn validation_is_the_same_first_batches_in_name_order() {
        let v = ValidationSet::new(numbered(&[20, 13, 30]), 2, 4, 60000, 3).unwrap();
        assert_eq!(v.len(), 3);
        let xs: Vec<_> = v.batches().map(|b| b.unwrap()).collect();
        assert_eq!(xs[0].inputs, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(xs[1].inputs, vec![10, 11, 12, 13, 15, 16, 17, 18]);
        assert_eq!(xs[2].inputs, vec![1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008]);
        let again: Vec<_> = v.batches().map(|b| b.unwrap()).collect();
        assert_eq!(xs, again);
        // Fewer batches than asked when the files hold fewer: 4 + 2 + 6 = 12 rows, 6 batches.
        assert_eq!(ValidationSet::new(numbered(&[20, 13, 30]), 2, 4, 60000, 100).unwrap().len(), 6);
    }
}
