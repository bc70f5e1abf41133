//! End-to-end tests of the training setup (`--setup FILE`, `--lr`, `--warmup`, ...): plan writes
//! it into the schedule and says it with its sources; simulate and `run SCHEDULE` read it from
//! there; bad values get exit 2, a message naming the field, and nothing written.

use std::path::Path;

mod common;
use common::{config, offplan, scratch_dir, text, H100};

fn plan_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["plan", "--model", "models/configs/gpt2-tiny.ron", "--hardware", H100, "--budget", "8GiB", "--out", out];
    a.extend_from_slice(extra);
    a
}

fn load(dir: &Path) -> models::Schedule {
    models::Schedule::load(&dir.join("schedule.ron")).unwrap()
}

#[test]
fn plan_carries_the_setup_flags_over_the_file_over_the_defaults() {
    let dir = scratch_dir("setup-plan");
    let file = dir.join("setup.ron");
    std::fs::write(&file, "TrainingSetup(lr: 3e-4, warmup: 7, weight_decay: 0.05)").unwrap();
    let out = dir.join("p");
    let o = offplan(&plan_args(out.to_str().unwrap(), &["--setup", file.to_str().unwrap(), "--lr", "1e-3", "--beta2", "0.99"]));
    assert!(o.status.success(), "{}", text(&o));
    let s = load(&out).setup;
    assert_eq!((s.lr, s.min_lr, s.beta1, s.beta2, s.weight_decay), (1e-3, 1e-4, 0.9, 0.99, 0.05));
    assert_eq!(s.warmup, models::training::Warmup::Steps(7));
    let f = file.display().to_string();
    assert_eq!(s.sources.lr, models::training::Source::Flag("--lr".into()));
    assert_eq!(s.sources.warmup, models::training::Source::File(f.clone()));
    // stdout and summary.md say each value and where it came from.
    let t = text(&o);
    for want in ["peak lr", "1e-3", "--lr", "7 steps", &f, "a tenth of the peak lr", "GPT-3"] {
        assert!(t.contains(want), "stdout lacks {want}:\n{t}");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Training setup") && md.contains("| peak lr | 1e-3 | --lr |") && md.contains(&f), "{md}");

    // Absent both: GPT-3's values for the size (gpt2-tiny is nearest the 125M row).
    let out2 = dir.join("d");
    let o = offplan(&plan_args(out2.to_str().unwrap(), &[]));
    assert!(o.status.success(), "{}", text(&o));
    let d = load(&out2).setup;
    assert_eq!((d.lr, d.warmup), (6e-4, models::training::Warmup::TenthOfRun));
    assert!(text(&o).contains("Table 2.1, the 125M row"), "{}", text(&o));
    // The setup changes no placement (both clip, by default).
    assert_eq!(load(&out).decisions, load(&out2).decisions);
    assert_eq!(load(&out).actions, load(&out2).actions);

    // simulate reads it from the schedule, in text and JSON.
    let o = offplan(&["simulate", out.join("schedule.ron").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("training setup") && text(&o).contains("--lr"), "{}", text(&o));
    let o = offplan(&["simulate", out.join("schedule.ron").to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["setup"]["lr"], 1e-3);
    assert_eq!(v["setup"]["warmup"]["Steps"], 7);
}

/// GPT-3's clip of 1.0 by default plans the clipped step (the scale made on the host, every
/// update after it); `--grad-clip 0` the unclipped one; simulate checks each against the
/// program its setup builds.
#[test]
fn clipping_is_planned_by_default_and_turned_off_with_zero() {
    let dir = scratch_dir("setup-clip");
    let (on, off) = (dir.join("on"), dir.join("off"));
    let o = offplan(&plan_args(on.to_str().unwrap(), &[]));
    assert!(o.status.success(), "{}", text(&o));
    // The plan says what clipping costs it: the best unclipped plan under the same budget.
    assert!(text(&o).contains("the best unclipped plan under the same budget takes"), "{}", text(&o));
    let o = offplan(&plan_args(off.to_str().unwrap(), &["--grad-clip", "0"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("the best unclipped plan"), "{}", text(&o));
    let (a, b) = (load(&on), load(&off));
    assert_eq!((a.setup.grad_clip, b.setup.grad_clip), (1.0, 0.0));
    let cfg = models::GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(config("gpt2-tiny"))).unwrap();
    let clipped = models::Program::for_setup(&cfg, &a.setup);
    let scale = clipped.clip_scale_op().expect("a clipped program").id;
    assert!(a.actions.contains(&models::schedule::Action::HostRun(scale)), "the scale is host work");
    assert_eq!(models::Program::for_setup(&cfg, &b.setup).clipping, models::program::Clipping::Off);
    assert_ne!(a.inventory_digest, b.inventory_digest, "two programs");
    for d in [&on, &off] {
        let o = offplan(&["simulate", d.join("schedule.ron").to_str().unwrap()]);
        assert!(o.status.success() && text(&o).contains("grad clip"), "{}", text(&o));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_setup_is_gpt3_125m_written_out() {
    let spec = models::SetupSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/setups/gpt3-125m.ron")).unwrap();
    let cfg = models::GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(config("gpt3-125m"))).unwrap();
    let path = Path::new("gpt3-125m.ron");
    let s = models::TrainingSetup::resolve(&cfg, Some((path, &spec)), &models::SetupSpec::default()).unwrap();
    let d = models::TrainingSetup::gpt3(&cfg);
    assert_eq!((s.lr, s.beta1, s.beta2, s.eps, s.weight_decay), (d.lr, d.beta1, d.beta2, d.eps, d.weight_decay));
    // The file's 6.0e-5 and a tenth of 6.0e-4 in f64 differ in the last bit.
    assert!((s.min_lr - d.min_lr).abs() < 1e-18, "{} vs {}", s.min_lr, d.min_lr);
    assert_eq!(s.warmup, models::training::Warmup::Steps(10));
}

#[test]
fn bad_setups_name_the_field_exit_2_and_write_nothing() {
    let dir = scratch_dir("setup-bad");
    let unknown = dir.join("unknown.ron");
    std::fs::write(&unknown, "TrainingSetup(learning_rate: 3e-4)").unwrap();
    let big = dir.join("big.ron");
    std::fs::write(&big, "TrainingSetup(lr: 2.0)").unwrap();
    let (u, b) = (unknown.to_str().unwrap().to_string(), big.to_str().unwrap().to_string());
    let tiny = config("gpt2-tiny");
    // A schedule whose warmup is 10 steps, for runs that are shorter.
    let sched_dir = dir.join("w10");
    let o = offplan(&plan_args(sched_dir.to_str().unwrap(), &["--warmup", "10"]));
    assert!(o.status.success(), "{}", text(&o));
    let sched = sched_dir.join("schedule.ron").to_str().unwrap().to_string();

    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        ("lr 0", vec!["--lr", "0"], 2, "lr 0 (from --lr) must be a learning rate in (0, 1)"),
        ("lr negative", vec!["--lr", "-1e-3"], 2, "(from --lr)"),
        ("lr 1", vec!["--lr", "1"], 2, "(from --lr)"),
        ("lr NaN", vec!["--lr", "NaN"], 2, "(from --lr)"),
        ("floor above the peak", vec!["--lr", "1e-4", "--min-lr", "1e-3"], 2, "min_lr 0.001 (from --min-lr) must be from 0 to the peak"),
        ("negative floor", vec!["--min-lr=-1"], 2, "min_lr -1"),
        ("beta1 1", vec!["--beta1", "1"], 2, "beta1 1 (from --beta1) must be in [0, 1)"),
        ("beta2 negative", vec!["--beta2", "-0.5"], 2, "beta2 -0.5"),
        ("eps 0", vec!["--eps", "0"], 2, "eps 0 (from --eps) must be positive"),
        ("negative weight decay", vec!["--weight-decay", "-0.1"], 2, "weight_decay -0.1"),
        ("a negative clip", vec!["--grad-clip", "-1"], 2, "grad_clip -1 (from --grad-clip) must be 0 (no clipping) or a positive norm"),
        ("an infinite clip", vec!["--grad-clip", "inf"], 2, "grad_clip inf"),
        ("a negative warmup", vec!["--warmup", "-1"], 2, "--warmup"),
        ("no micro-batch", vec!["--micro-batches", "0"], 2, "micro_batches 0 (from --micro-batches) must be at least 1"),
        ("a negative count of micro-batches", vec!["--micro-batches", "-2"], 2, "--micro-batches"),
        ("lr 2 in a file", vec!["--setup", &b], 2, "big.ron) must be a learning rate"),
        ("an unknown field in a file", vec!["--setup", &u], 1, "learning_rate"),
        ("a missing file", vec!["--setup", "no-such-setup.ron"], 1, "cannot read"),
    ];
    let mut wrong = Vec::new();
    for (i, (what, flags, code, says)) in cases.iter().enumerate() {
        for cmd in ["plan", "sweep", "run"] {
            let out = dir.join(format!("{cmd}{i}"));
            let o = match cmd {
                "plan" => offplan(&plan_args(out.to_str().unwrap(), flags)),
                "sweep" => {
                    let mut a = vec!["sweep", "--model", &tiny, "--hardware", H100, "--points", "1", "--out", out.to_str().unwrap()];
                    a.extend_from_slice(flags);
                    offplan(&a)
                }
                _ => {
                    let mut a = vec!["run", "--model", &tiny, "--steps", "20", "--out", out.to_str().unwrap()];
                    a.extend_from_slice(flags);
                    offplan(&a)
                }
            };
            let t = text(&o);
            if o.status.code() != Some(*code) || !t.contains(says) || out.exists() {
                wrong.push(format!("{cmd} {what}: exit {:?} (want {code}), wrote {}: {}", o.status.code(), out.exists(), t.trim()));
            }
        }
    }
    // Runs too short for the warmup: --model with its flag, a schedule with its own.
    let out = dir.join("short");
    let o = offplan(&["run", "--model", &tiny, "--warmup", "20", "--steps", "10", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if o.status.code() != Some(2) || !t.contains("warmup 20 steps (from --warmup) is longer than the run of 10 steps") || out.exists() {
        wrong.push(format!("run --warmup 20 --steps 10: exit {:?}: {}", o.status.code(), t.trim()));
    }
    let o = offplan(&["run", &sched, "--steps", "5", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if o.status.code() != Some(2) || !t.contains("training setup") || !t.contains("warmup 10 steps") || out.exists() {
        wrong.push(format!("run SCHEDULE --steps 5: exit {:?}: {}", o.status.code(), t.trim()));
    }
    // A schedule carries its setup: flags are refused with where to give them.
    let o = offplan(&["run", &sched, "--lr", "1e-3", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if o.status.code() != Some(2) || !t.contains("a schedule carries its training setup") || out.exists() {
        wrong.push(format!("run SCHEDULE --lr: exit {:?}: {}", o.status.code(), t.trim()));
    }
    // The executor does not accumulate yet: a run of several micro-batches is refused before
    // any device opens, by flag and by schedule.
    let o = offplan(&["run", "--model", &tiny, "--micro-batches", "2", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if o.status.code() != Some(2) || !t.contains("--micro-batches 2: the planner and simulator price gradient accumulation") || out.exists()
    {
        wrong.push(format!("run --micro-batches 2: exit {:?}: {}", o.status.code(), t.trim()));
    }
    let acc = dir.join("k2");
    let o = offplan(&plan_args(acc.to_str().unwrap(), &["--micro-batches", "2"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = offplan(&["run", acc.join("schedule.ron").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if o.status.code() != Some(2) || !t.contains("2 micro-batches per step") || out.exists() {
        wrong.push(format!("run SCHEDULE of 2 micro-batches: exit {:?}: {}", o.status.code(), t.trim()));
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
}

/// `--micro-batches K` plans K passes into one set of gradients: the schedule carries K, simulate
/// reads it back, and the plan says the tokens per step.
#[test]
fn micro_batches_are_planned_and_simulated_from_the_schedule() {
    let dir = scratch_dir("setup-micro");
    let out = dir.join("k4");
    let o = offplan(&plan_args(out.to_str().unwrap(), &["--micro-batches", "4"]));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    let s = load(&out);
    assert_eq!(s.setup.micro_batches, 4);
    let cfg = models::GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(config("gpt2-tiny"))).unwrap();
    let tokens = 4 * cfg.tokens();
    assert!(t.contains(&format!("4 micro-batches of batch {} x seq {}: {tokens} tokens per step", cfg.batch, cfg.seq)), "{t}");
    assert!(t.contains("micro-batches 4") && t.contains("MFU"), "{t}");
    let o = offplan(&["simulate", out.join("schedule.ron").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("micro-batches 4"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
