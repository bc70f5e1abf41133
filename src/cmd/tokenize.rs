//! `offplan tokenize`: text files to llm.c token shards (GPT-2 BPE, EOT between documents) for
//! `offplan run --data`: `train_000000.bin`, ... and `val_000000.bin`, ... in `--out`, all or
//! nothing (written to a temporary folder, moved in at the end). A progress bar on a terminal,
//! a line per file otherwise.

use executor::data::{tokenize_files, TokenizeOptions, TokenizeProgress};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// UTF-8 text files, each one document.
    #[arg(value_name = "TEXT_FILES", required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Folder for the shards (created if missing; an existing one must hold no shards).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Share of the input (from its start) for the validation shards, in [0, 1).
    #[arg(long, value_name = "F", default_value_t = 0.1, value_parser = fraction)]
    pub val_fraction: f64,
    /// Tokens per shard at most.
    #[arg(long, value_name = "N", default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    pub shard_tokens: u64,
}

fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is outside [0, 1): the validation share must leave some training data"))
    }
}

fn size(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = TokenizeOptions { val_fraction: args.val_fraction, shard_tokens: args.shard_tokens, ..TokenizeOptions::default() };
    let terminal = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut progress = |p: &TokenizeProgress| {
        if terminal {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(p.bytes_total);
                b.set_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                b
            });
            b.set_position(p.bytes_done);
            b.set_message(format!("{} tokens", p.tokens));
        } else if p.file_done {
            println!("{}: {} tokens", p.file.display(), p.file_tokens);
        }
    };
    let started = std::time::Instant::now();
    let result = tokenize_files(&args.inputs, &args.out, &opts, &mut progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let s = result?;
    let shards = |n: usize| if n == 1 { "1 shard".to_string() } else { format!("{n} shards") };
    println!(
        "wrote {}: train {} ({} tokens), val {} ({} tokens), from {} file(s), {} of text, in {:.1} s",
        s.out.display(),
        shards(s.train.len()),
        s.train_tokens(),
        shards(s.val.len()),
        s.val_tokens(),
        s.files,
        size(s.bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
