//! `offplan export megatron`: every flag it writes is one of Megatron-LM's argument parser
//! (`tests/data/megatron-lm-flags.txt`, checked there), what each preset becomes, the file it
//! writes, and bad input.

use std::collections::BTreeSet;
use std::path::Path;

mod common;
use common::{config, offplan, scratch_dir, text, H100};

/// The parser's flags this exporter may write, and the names that are not flags there.
fn megatron_flags() -> (BTreeSet<String>, BTreeSet<String>) {
    let list = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/megatron-lm-flags.txt")).unwrap();
    let lines = list.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let (absent, present): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.starts_with('!'));
    (present.iter().map(|s| s.to_string()).collect(), absent.iter().map(|s| s[1..].to_string()).collect())
}

/// The flags of an export's command line (its lines before the notes).
fn flags_of(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with("  --")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
}

fn value<'a>(out: &'a str, flag: &str) -> Option<&'a str> {
    out.lines().find(|l| l.split_whitespace().next() == Some(flag)).map(|l| l.split_whitespace().nth(1).unwrap_or(""))
}

/// Plans gpt3-125m with `strategy` on the H100 profile and exports it.
fn export_strategy(dir: &Path, strategy: &str) -> String {
    let plan = dir.join(strategy.replace([',', '='], "-"));
    let o = offplan(&[
        "plan",
        "--model",
        &config("gpt3-125m"),
        "--hardware",
        H100,
        "--budget",
        "40GiB",
        "--strategy",
        strategy,
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = offplan(&["export", "megatron", plan.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn every_flag_written_is_megatrons_and_each_preset_says_what_it_can() {
    let (known, not_flags) = megatron_flags();
    assert!(known.contains("--recompute-num-layers") && not_flags.contains("--cpu-offloading-weights"));
    let dir = scratch_dir("export-megatron");
    for strategy in ["recompute-all", "offload-all,host-optimizer", "stream-weights,cpu-embedding", "streamed-optimizer"] {
        let out = export_strategy(&dir, strategy);
        let flags = flags_of(&out);
        assert!(flags.len() > 20, "{strategy}:\n{out}");
        for f in &flags {
            assert!(known.contains(f) && !not_flags.contains(f), "{strategy}: {f} is not a flag of Megatron-LM's parser");
        }
        assert!(out.contains("the exported configuration:"), "{strategy}:\n{out}");
        // 40 GiB holds gpt3-125m whole: the fastest knobs are none, and no plan beats that.
        assert!(out.contains("The fastest setting of Megatron-LM's knobs") && out.contains("(no knob needed)"), "{strategy}:\n{out}");
        match strategy {
            "recompute-all" => {
                assert_eq!(value(&out, "--recompute-num-layers"), Some("12"), "{out}");
                assert!(out.contains("Everything the plan decides is said"), "{out}");
                assert!(out.contains("the exported step is +0.0%"), "the same decisions, the same step:\n{out}");
            }
            "offload-all,host-optimizer" => {
                assert_eq!(value(&out, "--cpu-offloading-num-layers"), Some("11"), "{out}");
                assert_eq!(value(&out, "--optimizer-offload-fraction"), Some("1.0000"), "{out}");
                assert!(out.contains("the last stays on the GPU"), "{out}");
            }
            "stream-weights,cpu-embedding" => {
                assert!(out.contains("no weight offloading") && out.contains("no CPU embedding"), "{out}");
            }
            _ => assert!(out.contains("streams it to the GPU for each update"), "{out}"),
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_file_written_is_what_was_printed_and_bad_input_is_refused() {
    let dir = scratch_dir("export-megatron-file");
    let plan = dir.join("plan");
    let o = offplan(&["plan", "--model", &config("gpt2-tiny"), "--hardware", H100, "--budget", "1GiB", "--out", plan.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let file = dir.join("megatron.sh");
    let o = offplan(&["export", "megatron", plan.join("schedule.ron").to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&file).unwrap(), o.stdout);
    // No plan there: an error naming the path, exit 1, nothing written.
    let missing = dir.join("nowhere");
    let out2 = dir.join("never.sh");
    let o = offplan(&["export", "megatron", missing.to_str().unwrap(), "--out", out2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nowhere"), "{}", text(&o));
    assert!(!out2.exists());
    // A target offplan does not export to: bad usage.
    let o = offplan(&["export", "deepspeed", plan.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}
