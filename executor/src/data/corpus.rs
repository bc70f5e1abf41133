//! The default training data: the corpus shipped in `executor/corpus/` (verbatim copies of
//! free-software license texts, see its README), tokenised with the GPT-2 BPE (tiktoken's
//! `r50k_base`, ranks bundled in the `tiktoken-rs` crate: no network at run time), served as
//! batches of B x (T+1) consecutive tokens: inputs are the first T of each row, targets the last T.

use super::{Batch, DataError, DataPosition, EOT};

/// The corpus files, carried in the binary (name, text).
pub const CORPUS: &[(&str, &str)] = &[
    ("Apache-2.0.txt", include_str!("../../corpus/Apache-2.0.txt")),
    ("Artistic.txt", include_str!("../../corpus/Artistic.txt")),
    ("BSD.txt", include_str!("../../corpus/BSD.txt")),
    ("CC0-1.0.txt", include_str!("../../corpus/CC0-1.0.txt")),
    ("GFDL-1.3.txt", include_str!("../../corpus/GFDL-1.3.txt")),
    ("GPL-2.txt", include_str!("../../corpus/GPL-2.txt")),
    ("GPL-3.txt", include_str!("../../corpus/GPL-3.txt")),
    ("LGPL-2.1.txt", include_str!("../../corpus/LGPL-2.1.txt")),
    ("LGPL-3.txt", include_str!("../../corpus/LGPL-3.txt")),
    ("MPL-2.0.txt", include_str!("../../corpus/MPL-2.0.txt")),
];

/// Tokenises every corpus document with r50k_base, documents separated by EOT.
pub fn tokenize_corpus() -> Result<Vec<u32>, DataError> {
    let bpe = tiktoken_rs::r50k_base().map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let mut out = Vec::new();
    for (_, text) in CORPUS {
        out.push(EOT);
        out.extend(bpe.encode_ordinary(text));
    }
    Ok(out)
}

/// Consecutive, non-overlapping windows of B x (T+1) tokens over a token stream, wrapping
/// around at the end (deterministic: step i always gets the same batch).
pub struct Batches {
    tokens: Vec<u32>,
    batch: u32,
    seq: u32,
    pos: usize,
    epoch: u64,
}

impl Batches {
    pub fn new(tokens: Vec<u32>, batch: u32, seq: u32, vocab: u32) -> Result<Batches, DataError> {
        let need = batch as usize * (seq as usize + 1);
        if tokens.len() < need {
            return Err(DataError::TooSmall { have: tokens.len(), need, batch, seq });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(DataError::Vocab { token: t, vocab });
        }
        Ok(Batches { tokens, batch, seq, pos: 0, epoch: 0 })
    }

    pub fn len_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The next batch: row r is tokens[p .. p+T+1] with p advancing by T+1 per row.
    pub fn next_batch(&mut self) -> Batch {
        let (b, t) = (self.batch as usize, self.seq as usize);
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            if self.pos + t + 1 > self.tokens.len() {
                self.pos = 0;
                self.epoch += 1;
            }
            let row = &self.tokens[self.pos..self.pos + t + 1];
            inputs.extend(row[..t].iter().map(|&x| x as i32));
            targets.extend(row[1..].iter().map(|&x| x as i32));
            self.pos += t + 1;
        }
        Batch { inputs, targets }
    }

    fn source(&self) -> String {
        format!("shipped corpus, {} tokens", self.tokens.len())
    }

    /// Where the next batch starts (the corpus is read in order; no seed).
    pub fn position(&self) -> DataPosition {
        DataPosition { source: self.source(), seed: 0, epoch: self.epoch, shard: 0, offset: self.pos as u64, file: "shipped corpus".into() }
    }

    /// Continues from a position [`Batches::position`] gave on the same corpus.
    pub fn seek(&mut self, pos: &DataPosition) -> Result<(), DataError> {
        if pos.source != self.source() {
            return Err(DataError::Position(format!("it was saved on {}, this run reads {}", pos.source, self.source())));
        }
        if pos.shard != 0 || pos.offset > self.tokens.len() as u64 {
            return Err(DataError::Position(format!("offset {} in shard {} is outside the corpus", pos.offset, pos.shard)));
        }
        self.pos = pos.offset as usize;
        self.epoch = pos.epoch;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_tokenises_into_gpt2_ids() {
        let toks = tokenize_corpus().unwrap();
        assert!(toks.len() > 30_000, "{} tokens", toks.len());
        assert!(toks.iter().all(|&t| t < 50257));
        let bpe = tiktoken_rs::r50k_base().unwrap();
        // " License" and "GNU" are common GPT-2 tokens; decoding round-trips.
        let ids = bpe.encode_ordinary("GNU General Public License");
        assert_eq!(bpe.decode(&ids).unwrap(), "GNU General Public License");
    }

    #[test]
    fn batches_shift_targets_by_one_and_wrap() {
        let toks: Vec<u32> = (0..50).collect();
        let mut b = Batches::new(toks, 2, 4, 100).unwrap();
        let x = b.next_batch();
        assert_eq!(x.inputs, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(x.targets, vec![1, 2, 3, 4, 6, 7, 8, 9]);
        for _ in 0..10 {
            let y = b.next_batch();
            assert_eq!(y.inputs.len(), 8);
            for r in 0..2 {
                for i in 0..3 {
                    assert_eq!(y.inputs[r * 4 + i + 1], y.targets[r * 4 + i]);
                }
            }
        }
        assert!(Batches::new((0..5).collect(), 2, 4, 100).is_err());
        assert!(Batches::new(vec![7; 20], 1, 4, 5).is_err());
    }

    #[test]
    fn position_restores_the_same_batches() {
        let toks: Vec<u32> = (0..50).collect();
        let mut a = Batches::new(toks.clone(), 2, 4, 100).unwrap();
        for _ in 0..7 {
            a.next_batch();
        }
        let pos = a.position();
        assert!(pos.epoch > 0, "wrapped");
        let next: Vec<_> = (0..5).map(|_| a.next_batch()).collect();
        let mut b = Batches::new(toks, 2, 4, 100).unwrap();
        b.seek(&pos).unwrap();
        assert_eq!((0..5).map(|_| b.next_batch()).collect::<Vec<_>>(), next);
        let mut other = Batches::new((0..60).collect(), 2, 4, 100).unwrap();
        assert!(other.seek(&pos).unwrap_err().to_string().contains("60 tokens"));
    }
}
