//! End-to-end tests of `offplan tokenize`: shards a run can read, and bad input that exits with
//! the README's codes and leaves nothing in --out.

use executor::data::{ShardFormat, ShardSet, CORPUS};
use std::path::{Path, PathBuf};

mod common;
use common::{offplan, scratch_dir, text};

fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("executor/corpus");
    CORPUS.iter().map(|(name, _)| dir.join(name)).collect()
}

fn args<'a>(files: &'a [PathBuf], rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["tokenize"];
    v.extend(files.iter().map(|p| p.to_str().unwrap()));
    v.extend(rest);
    v
}

fn tokens(pattern: &Path) -> Vec<u32> {
    ShardSet::open(pattern.to_str().unwrap(), ShardFormat::LlmC).unwrap().read_all(50257).unwrap()
}

#[test]
fn tokenize_writes_shards_of_the_corpus() {
    let dir = scratch_dir("tokenize-ok");
    let out = dir.join("shards");
    let files = corpus_files();
    let o = offplan(&args(&files, &["--out", out.to_str().unwrap(), "--shard-tokens", "5000", "--val-fraction", "0.1"]));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("GPL-3.txt: ") && t.contains("wrote ") && t.contains("train "), "{t}");
    let train = tokens(&out.join("train_*.bin"));
    let val = tokens(&out.join("val_*.bin"));
    // The same tokens as the shipped corpus (EOT + document each), val first.
    let want = executor::data::tokenize_corpus().unwrap();
    let mut joined = val.clone();
    joined.extend(&train[1..]); // the train stream's own EOT at the cut
    assert_eq!(joined, want);
    assert!((val.len() as f64 / want.len() as f64 - 0.1).abs() < 0.03, "{} of {}", val.len(), want.len());
    let shards = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(shards, train.len().div_ceil(5000) + val.len().div_ceil(5000), "shards of 5000 tokens");
    // A run reads them (batches of the shards, in the seeded order).
    let mut l = executor::data::ShardLoader::open(out.join("train_*.bin").to_str().unwrap(), ShardFormat::LlmC, 4, 64, 50257, 0).unwrap();
    assert_eq!(l.next_batch().unwrap().inputs.len(), 256);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenize_bad_input_exits_1_and_leaves_nothing() {
    let dir = scratch_dir("tokenize-bad");
    let out = dir.join("out");
    let outs = out.to_str().unwrap();
    let missing = dir.join("missing.txt");
    let o = offplan(&args(std::slice::from_ref(&missing), &["--out", outs]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("missing.txt"), "{}", text(&o));
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = offplan(&args(std::slice::from_ref(&empty), &["--out", outs]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no text"), "{}", text(&o));
    // --out below a file cannot be made
    let files = corpus_files();
    let below = empty.join("out");
    let o = offplan(&args(&files[..1], &["--out", below.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("empty.txt exists and is not a folder"), "{}", text(&o));
    assert!(!out.exists());
    let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, vec!["empty.txt"], "no temporary folder left");
    // An --out that already holds shards is refused and kept as it was.
    let o = offplan(&args(&files[..2], &["--out", outs]));
    assert!(o.status.success(), "{}", text(&o));
    let before = tokens(&out.join("train_*.bin"));
    let o = offplan(&args(&files[2..3], &["--out", outs]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already holds token shards"), "{}", text(&o));
    assert_eq!(tokens(&out.join("train_*.bin")), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenize_bad_usage_exits_2() {
    let dir = scratch_dir("tokenize-usage");
    let out = dir.join("out");
    let outs = out.to_str().unwrap();
    let files = corpus_files();
    for bad in [
        args(&files[..1], &["--out", outs, "--val-fraction", "1.5"]),
        args(&files[..1], &["--out", outs, "--val-fraction", "half"]),
        args(&files[..1], &["--out", outs, "--shard-tokens", "0"]),
        args(&files[..1], &[]),
        args(&[], &["--out", outs]),
    ] {
        let o = offplan(&bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
    }
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
