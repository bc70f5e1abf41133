//! Bad input, as a new user and a hostile tester would give it: every command refuses it with
//! the exit code the README lists (1 error, 2 bad usage, 3 no plan fits) and a message that
//! says what is wrong, never a panic (101) or a hang, and leaves nothing behind in `--out`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{config, offplan, plan_tiny, scratch_dir, text, H100};

/// A copy of a shipped file with `from` replaced by `to` (which must occur).
fn edited(dir: &Path, name: &str, shipped: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped)).unwrap();
    assert!(text.contains(from), "{shipped} has no `{from}`");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p.to_string_lossy().into_owned()
}

struct Case {
    what: &'static str,
    args: Vec<String>,
    code: i32,
    says: &'static str,
    /// A path that must not exist afterwards.
    no_out: Option<PathBuf>,
}

fn case(what: &'static str, args: &[&str], code: i32, says: &'static str) -> Case {
    Case { what, args: args.iter().map(|s| s.to_string()).collect(), code, says, no_out: None }
}

/// A plan of gpt2-tiny written by `offplan plan`, for the commands that read schedules.
fn tiny_plan(dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    let o = plan_tiny("8GiB", &out);
    assert!(o.status.success(), "{}", text(&o));
    out.join("schedule.ron")
}

#[test]
fn every_bad_input_gets_its_exit_code_and_a_message() {
    let dir = scratch_dir("bad-inputs");
    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let fresh = |name: &str| dir.join(name);
    let tiny = config("gpt2-tiny");
    let m124 = config("gpt2-124m");
    // Configs.
    let syntax = edited(&dir, "syntax.ron", &config("gpt2-124m"), "layers: 12,", "layers: 12");
    let unknown_field = edited(&dir, "unknown.ron", &config("gpt2-124m"), "heads: 12,", "heads: 12,\n    head_dim: 64,");
    let heads = edited(&dir, "heads.ron", &config("gpt2-124m"), "heads: 12,", "heads: 10,");
    let huge = edited(&dir, "huge.ron", &config("gpt2-124m"), "layers: 12,", "layers: 10000,");
    let wide = edited(&dir, "wide.ron", &config("gpt2-124m"), "hidden: 768,", "hidden: 131072,");
    let padded = edited(&dir, "padded.ron", &config("gpt2-124m"), "padded_vocab: 50304,", "padded_vocab: 50000,");
    let chunks = edited(&dir, "chunks.ron", &config("gpt2-124m"), "output_chunks: 1,", "output_chunks: 5,");
    let zero = edited(&dir, "zero.ron", &config("gpt2-124m"), "batch: 8,", "batch: 0,");
    // Hardware profiles.
    let no_memory = edited(&dir, "no-memory.ron", H100, "    memory: \"81079MiB\",\n", "");
    let inf = edited(&dir, "inf.ron", H100, "launch_overhead: 3.2931840419769285e-6,", "launch_overhead: inf,");
    let tiny_rate = edited(&dir, "tiny-rate.ron", H100, "matmul_flops: 694647373374085.3,", "matmul_flops: 1e-300,");
    let negative = edited(&dir, "negative.ron", H100, "h2d: 55127461853.03808,", "h2d: -5.0,");
    let overhead = edited(&dir, "overhead.ron", H100, "fixed_overhead: \"558694400\",", "fixed_overhead: \"100GiB\",");
    let pinnable = edited(&dir, "pinnable.ron", H100, "host_pinnable: Some(\"110976MiB\"),", "host_pinnable: Some(\"200GiB\"),");
    let bare = edited(&dir, "bare.ron", H100, "host_memory: Some(\"125GiB\"),", "host_memory: \"125GiB\",");
    let slack = edited(&dir, "slack.ron", H100, "pool_slack_fraction: 0.004,", "pool_slack_fraction: 2.0,");
    // Schedules.
    let schedule = tiny_plan(&dir);
    let s = schedule.to_str().unwrap().to_string();
    let sched_text = std::fs::read_to_string(&schedule).unwrap();
    let hand_edited = d("hand-edited.ron");
    let i = sched_text.find("step_time: ").unwrap() + "step_time: ".len();
    std::fs::write(&hand_edited, format!("{}9{}", &sched_text[..i], &sched_text[i..])).unwrap();
    let old_format = d("old-format.ron");
    std::fs::write(&old_format, sched_text.replacen("format_version: 3", "format_version: 2", 1)).unwrap();
    let a_file = d("a-file");
    std::fs::write(&a_file, "not a folder").unwrap();
    let empty = fresh("empty-records");
    std::fs::create_dir_all(&empty).unwrap();

    let plan = |budget: &'static str| -> Vec<&'static str> {
        vec!["plan", "--model", "M", "--hardware", H100, "--budget", budget, "--out", "OUT"]
    };
    let mut cases = vec![
        // inspect: configs and shape flags.
        case("a missing config", &["inspect", "--model", &d("missing.ron")], 1, "cannot read"),
        case("a config with a syntax error", &["inspect", "--model", &syntax], 1, "syntax.ron:"),
        case("an unknown config field", &["inspect", "--model", &unknown_field], 1, "remove the field"),
        case("heads that do not divide hidden", &["inspect", "--model", &heads], 1, "not divisible by heads"),
        case("ten thousand layers", &["inspect", "--model", &huge], 1, "at most 512"),
        case("a hidden size past the limit", &["inspect", "--model", &wide], 1, "at most 65536"),
        case("a padded vocabulary below the vocabulary", &["inspect", "--model", &padded], 1, "padding may only add rows"),
        case("output chunks that do not divide the padded vocabulary", &["inspect", "--model", &chunks], 1, "1, 2, 3, 4, 6, 8, 12"),
        case("a zero micro-batch in the config", &["inspect", "--model", &zero], 1, "`batch` is 0"),
        case("--batch 0", &["inspect", "--model", &m124, "--batch", "0"], 2, "`batch` is 0"),
        case("--seq past max_seq", &["inspect", "--model", &m124, "--seq", "99999"], 2, "exceeds max_seq"),
        case("--output-chunks 5", &["inspect", "--model", &m124, "--output-chunks", "5"], 2, "does not divide"),
        case("no --model", &["inspect"], 2, "--model"),
        case("an unknown command", &["plan-all"], 2, "unrecognized subcommand"),
        case("an unknown flag", &["inspect", "--model", &m124, "--layers", "4"], 2, "--layers"),
        // plan: profiles.
        case(
            "a profile without memory",
            &["plan", "--model", &tiny, "--hardware", &no_memory, "--budget", "8GiB", "--out", "OUT"],
            1,
            "models/hardware/",
        ),
        case(
            "launch_overhead: inf",
            &["plan", "--model", &tiny, "--hardware", &inf, "--budget", "8GiB", "--out", "OUT"],
            1,
            "launch_overhead",
        ),
        case(
            "matmul_flops: 1e-300",
            &["plan", "--model", &tiny, "--hardware", &tiny_rate, "--budget", "8GiB", "--out", "OUT"],
            1,
            "matmul_flops",
        ),
        case("a negative copy rate", &["plan", "--model", &tiny, "--hardware", &negative, "--budget", "8GiB", "--out", "OUT"], 1, "h2d"),
        case(
            "a fixed overhead above the card",
            &["plan", "--model", &tiny, "--hardware", &overhead, "--budget", "8GiB", "--out", "OUT"],
            1,
            "fixed_overhead",
        ),
        case(
            "pinnable above the host",
            &["plan", "--model", &tiny, "--hardware", &pinnable, "--budget", "8GiB", "--out", "OUT"],
            1,
            "exceeds `host_memory`",
        ),
        case(
            "an optional field without Some",
            &["plan", "--model", &tiny, "--hardware", &bare, "--budget", "8GiB", "--out", "OUT"],
            1,
            "Some(",
        ),
        case(
            "a slack fraction of 2",
            &["plan", "--model", &tiny, "--hardware", &slack, "--budget", "8GiB", "--out", "OUT"],
            1,
            "pool_slack_fraction",
        ),
        case(
            "a missing profile",
            &["plan", "--model", &tiny, "--hardware", &d("nope.ron"), "--budget", "8GiB", "--out", "OUT"],
            1,
            "cannot read",
        ),
    ];
    // plan: budgets and solver flags, each on gpt2-124m unless said.
    let plan_cases: Vec<(&'static str, Vec<&str>, i32, &'static str)> = vec![
        ("--budget without a unit", plan("24"), 2, "give a unit"),
        ("--budget of 10^29 GiB", plan("100000000000000000000000000000GiB"), 2, "more than 4 EiB"),
        ("--budget that is not a size", plan("24 bananas"), 2, "is not a size"),
        ("--budget above the card", plan("200GiB"), 2, "at most 79.179 GiB"),
        ("--budget below the floor", plan("1GiB"), 3, "below the"),
        ("--time-limit=-5", [plan("8GiB"), vec!["--time-limit=-5"]].concat(), 2, "--time-limit"),
        ("--time-limit NaN", [plan("8GiB"), vec!["--time-limit", "NaN"]].concat(), 2, "--time-limit"),
        ("--gap=-1", [plan("8GiB"), vec!["--gap=-1"]].concat(), 2, "--gap"),
        ("--gap 1.5", [plan("8GiB"), vec!["--gap", "1.5"]].concat(), 2, "--gap"),
        ("--effort 0", [plan("8GiB"), vec!["--effort", "0"]].concat(), 2, "--effort"),
        ("an unknown strategy", [plan("8GiB"), vec!["--strategy", "offload-some"]].concat(), 2, "offload-first=N"),
        ("offload-first past the layers", [plan("8GiB"), vec!["--strategy", "offload-first=999"]].concat(), 2, "has 12 layers"),
        ("a CPU embedding on a tied model", [plan("8GiB"), vec!["--strategy", "cpu-embedding"]].concat(), 2, "untied"),
        ("keep-all in too little memory", [plan("2GiB"), vec!["--strategy", "keep-all"]].concat(), 3, "needs"),
        ("--host-memory 0", [plan("8GiB"), vec!["--host-memory", "0B"]].concat(), 2, "--host-memory"),
    ];
    for (what, args, code, says) in plan_cases {
        let out = fresh(&format!("out-{}", cases.len()));
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "M" {
                    m124.clone()
                } else if *a == "OUT" {
                    out.to_string_lossy().into_owned()
                } else {
                    a.to_string()
                }
            })
            .collect();
        cases.push(Case { what, args, code, says, no_out: Some(out) });
    }
    let out = fresh("out-175b");
    cases.push(Case {
        what: "gpt3-175b at 76 GiB on a 125 GiB host",
        args: ["plan", "--model", &config("gpt3-175b"), "--hardware", H100, "--budget", "76GiB", "--out", out.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        code: 3,
        says: "125 GiB of host memory",
        no_out: Some(out),
    });
    cases.extend([
        case(
            "--out that is a file",
            &["plan", "--model", &tiny, "--hardware", H100, "--budget", "8GiB", "--out", &a_file],
            1,
            "not a folder",
        ),
        case(
            "--out where nothing can be written",
            &["plan", "--model", &tiny, "--hardware", H100, "--budget", "8GiB", "--out", "/proc/offplan-out"],
            1,
            "cannot write there",
        ),
        // sweep.
        case(
            "--to below --from",
            &["sweep", "--model", &tiny, "--hardware", H100, "--out", &d("sw1"), "--from", "8GiB", "--to", "4GiB"],
            2,
            "below --from",
        ),
        case("--points 0", &["sweep", "--model", &tiny, "--hardware", H100, "--out", &d("sw2"), "--points", "0"], 2, "--points"),
        case("--points 100000", &["sweep", "--model", &tiny, "--hardware", H100, "--out", &d("sw3"), "--points", "100000"], 2, "--points"),
        case(
            "--to above the card",
            &["sweep", "--model", &tiny, "--hardware", H100, "--out", &d("sw4"), "--to", "500GiB"],
            2,
            "device memory",
        ),
        case(
            "a sweep where nothing fits",
            &["sweep", "--model", &m124, "--hardware", H100, "--out", &d("sw5"), "--from", "100MiB", "--to", "200MiB", "--points", "2"],
            3,
            "nothing to chart",
        ),
        // simulate and explain.
        case("simulate a missing file", &["simulate", &d("none.ron")], 1, "cannot read"),
        case("simulate a config", &["simulate", &m124], 1, "is not a schedule"),
        case("simulate a hand-edited schedule", &["simulate", &hand_edited], 1, "checksum"),
        case("simulate an old format", &["simulate", &old_format], 1, "format 2"),
        case("explain an unknown block", &["explain", &s, "layer99.weights"], 2, "no block"),
        case("explain a hand-edited schedule", &["explain", &hand_edited, "layer0.weights"], 1, "checksum"),
        // run (checked before any GPU is touched), report, calibrate.
        case("run --steps 0", &["run", &s, "--steps", "0", "--out", &d("r1")], 2, "--steps"),
        case("run --lr -1", &["run", "--model", &tiny, "--lr=-1", "--out", &d("r2")], 2, "lr -1 (from --lr)"),
        case("run a hand-edited schedule", &["run", &hand_edited, "--out", &d("r3")], 1, "checksum"),
        case("run into a file", &["run", &s, "--out", &a_file], 1, "not a folder"),
        case("report an empty folder", &["report", empty.to_str().unwrap(), "--out", &d("rep")], 1, "no run records"),
        case("calibrate into a folder", &["calibrate", "--out", dir.to_str().unwrap()], 1, "is a folder"),
    ]);
    for name in ["sw1", "sw2", "sw3", "sw4", "sw5", "r1", "r2", "r3", "rep"] {
        let i = cases.iter().position(|c| c.args.iter().any(|a| a.ends_with(name))).unwrap();
        cases[i].no_out = Some(fresh(name));
    }
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(|s| s.as_str()).collect();
        let t0 = Instant::now();
        let o = offplan(&args);
        let took = t0.elapsed();
        let t = text(&o);
        let ok_code = o.status.code() == Some(c.code);
        let ok_text = t.contains(c.says);
        let ok_out = c.no_out.as_ref().is_none_or(|p| !p.exists());
        if !(ok_code && ok_text && ok_out && took < Duration::from_secs(20)) {
            wrong.push(format!(
                "{}: exit {:?} (want {}), {:.1} s, out left: {}\n  {}",
                c.what,
                o.status.code(),
                c.code,
                took.as_secs_f64(),
                !ok_out,
                t.trim()
            ));
        }
    }
    // The file --out named is untouched.
    assert_eq!(std::fs::read_to_string(&a_file).unwrap(), "not a folder");
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}
