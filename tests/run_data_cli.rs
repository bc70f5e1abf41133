//! End-to-end tests of `offplan run`'s data and checkpoint flags (`--data`, `--save`,
//! `--save-every`, `--weights-only`, `--resume`, `--init-from`): bad input gets the README's
//! exit code and a message naming what is wrong, checked before any device is opened, so these
//! hold on a machine without a GPU; and, where there is a GPU, a run saved at a step and resumed
//! from it gives the uninterrupted run's losses bit for bit (skipped, with a message, without).

use executor::checkpoint::{write_checkpoint, TrainerState};
use executor::data::{write_shard, DataPosition};
use models::{GptConfig, Program};
use reports::record::Record;
use std::path::{Path, PathBuf};

mod common;
use common::{config, offplan, plan_tiny, scratch_dir, text};

const EXIT_NO_GPU: i32 = 4;

/// The program `run --model gpt2-tiny` trains (GPT-3's setup: clipped).
fn tiny() -> Program {
    let cfg = GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/configs/gpt2-tiny.ron")).unwrap();
    Program::for_setup(&cfg, &models::TrainingSetup::gpt3(&cfg))
}

/// `run --model gpt2-tiny --steps 2 --out OUT` and `extra`.
fn run_tiny(out: &Path, extra: &[&str]) -> std::process::Output {
    let tiny = config("gpt2-tiny");
    let mut args = vec!["run", "--model", tiny.as_str(), "--steps", "2", "--out", out.to_str().unwrap()];
    args.extend(extra);
    offplan(&args)
}

/// Good llm.c shards of GPT-2 ids (the shipped corpus' tokens) in `dir`: `train_*.bin`.
fn good_shards(dir: &Path) -> String {
    let toks: Vec<u16> = executor::data::tokenize_corpus().unwrap().iter().map(|&t| t as u16).collect();
    let half = toks.len() / 2;
    write_shard(&dir.join("train_000000.bin"), &toks[..half]).unwrap();
    write_shard(&dir.join("train_000001.bin"), &toks[half..]).unwrap();
    dir.join("train_*.bin").to_str().unwrap().to_string()
}

/// A resumable checkpoint of gpt2-tiny (the seed's initial state) saved as by `config_name`.
fn tiny_checkpoint(dir: &Path, config_name: &str, weights_only: bool) -> PathBuf {
    let p = tiny();
    let owners = executor::init::init_params(&p.inventory, p.config.layers, 3);
    let pos = DataPosition { source: "x".into(), seed: 0, epoch: 0, shard: 0, offset: 0, file: String::new() };
    let state = TrainerState::new(5, 3, config_name, &models::digest::program_digest(&p), pos);
    write_checkpoint(dir, &p.config, &p.inventory, &owners, (!weights_only).then_some(&state)).unwrap();
    dir.to_path_buf()
}

#[test]
fn bad_data_and_checkpoints_exit_with_their_codes_before_the_gpu() {
    let dir = scratch_dir("run-data-bad");
    let out = dir.join("out");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // --data: no file, not a shard, truncated, a token outside the vocabulary: exit 1.
    let missing = s(&dir.join("nothing_*.bin"));
    let garbled = dir.join("garbled.bin");
    std::fs::write(&garbled, vec![7u8; 4096]).unwrap();
    let truncated = dir.join("truncated.bin");
    write_shard(&truncated, &[1u16; 2000]).unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let vocab = dir.join("vocab.bin");
    // bad ids throughout, so the first batch (wherever the seeded order starts it) holds some
    let toks: Vec<u16> = (0..4000).map(|i| if i % 100 == 7 { 60000 } else { 10 }).collect();
    write_shard(&vocab, &toks).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--data".into(), missing], "no file matches"),
        (vec!["--data".into(), s(&garbled)], "not an llm.c token shard"),
        (vec!["--data".into(), s(&truncated)], "truncated"),
        (vec!["--data".into(), s(&vocab)], "outside the model's vocabulary"),
    ];
    // --resume / --init-from: no checkpoint, another config, another program (micro-batch),
    // a weights-only checkpoint resumed: exit 1.
    let other = tiny_checkpoint(&dir.join("other"), "gpt2-124m", false);
    let same = tiny_checkpoint(&dir.join("same"), "gpt2-tiny", false);
    let weights = tiny_checkpoint(&dir.join("weights"), "gpt2-tiny", true);
    let mut cases = cases;
    cases.extend([
        (vec!["--resume".into(), s(&dir.join("none"))], "not a checkpoint"),
        (vec!["--init-from".into(), s(&dir.join("none"))], "not a checkpoint"),
        (vec!["--resume".into(), s(&other)], "saved by a run of gpt2-124m"),
        (vec!["--resume".into(), s(&same), "--batch".into(), "2".into()], "another micro-batch"),
        (vec!["--resume".into(), s(&weights)], "cannot be resumed"),
        // a resumable checkpoint's data position is for other data
        (vec!["--resume".into(), s(&same)], "does not fit this data"),
        (vec!["--val-data".into(), s(&dir.join("nothing_*.bin"))], "no file matches"),
        (vec!["--val-data".into(), s(&vocab)], "outside the model's vocabulary"),
    ]);
    for (extra, says) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let o = run_tiny(&out, &extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: wanted `{says}` in {}", text(&o));
        assert!(!out.exists(), "{extra:?} left --out behind");
    }

    // Bad usage: exit 2.
    let save = s(&dir.join("save"));
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    for extra in [
        vec!["--save", &save, "--save-every", "0"],
        vec!["--save-every", "5"],
        vec!["--weights-only"],
        vec!["--resume", &s(&same), "--init-from", &s(&weights)],
        vec!["--resume", &s(&same), "--export", &save],
        vec!["--data-format", "raw"],
        vec!["--data", "x.bin", "--data-format", "u32"],
        vec!["--save", &s(&file)],
        vec!["--val-every", "3"],
        vec!["--val-data", &s(&vocab), "--val-every", "0"],
        vec!["--val-data", &s(&vocab), "--val-batches", "0"],
    ] {
        let o = run_tiny(&out, &extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(!out.exists());
    }
    assert!(!dir.join("save").exists(), "a refused run made its --save folder");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn losses(out: &Path) -> Vec<(u32, f64)> {
    let (_, r) = reports::record::load_dir(out).unwrap().into_iter().next().expect("a record");
    let r: Record = r;
    r.steps.iter().map(|s| (s.step, s.loss)).collect()
}

/// A run's `loss.svg`/`loss.png` beside its record, naming the validation series only when the
/// run validated.
fn assert_loss_chart(out: &Path, validated: bool) {
    let svg = std::fs::read_to_string(out.join("loss.svg")).expect("loss.svg beside the record");
    assert!(out.join("loss.png").is_file());
    assert!(svg.contains(reports::loss::TRAIN_LABEL), "{}: no training series", out.display());
    assert_eq!(svg.contains(reports::loss::VALIDATION_LABEL), validated, "{}: validation series", out.display());
}

/// With good data and flags, everything up to the device passes (exit 4 without a GPU). With a
/// GPU: 4 steps saved at 2, resumed from 2 for 2 steps, the same losses bit for bit, all on
/// the GPU and under a schedule, and under a schedule of another budget from the same
/// checkpoint; a weights-only save loads with --init-from.
#[test]
fn save_and_resume_give_the_uninterrupted_losses_or_skip() {
    let dir = scratch_dir("run-data-resume");
    let data = good_shards(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let full = dir.join("full");
    let save = dir.join("save");
    let tiny = config("gpt2-tiny");
    let run = |out: &Path, steps: &str, extra: &[&str], schedule: Option<&Path>| {
        let mut args = vec!["run".to_string()];
        match schedule {
            Some(p) => args.push(s(p)),
            None => args.extend(["--model".to_string(), tiny.clone()]),
        }
        args.extend(["--steps", steps, "--out", &s(out), "--data", &data].iter().map(|x| x.to_string()));
        args.extend(extra.iter().map(|x| x.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        offplan(&args)
    };
    let o =
        run(&full, "4", &["--save", &s(&save), "--save-every", "2", "--val-data", &data, "--val-every", "2", "--val-batches", "3"], None);
    if o.status.code() == Some(EXIT_NO_GPU) {
        eprintln!("skipped: no CUDA device ({})", text(&o).lines().last().unwrap_or(""));
        assert!(!save.exists(), "nothing saved without a device");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    assert!(o.status.success(), "{}", text(&o));
    let want = losses(&full);
    assert_eq!(want.iter().map(|l| l.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let (_, r) = reports::record::load_dir(&full).unwrap().into_iter().next().unwrap();
    let t = r.training.expect("the record's training");
    assert_eq!((t.data_pattern.as_deref(), t.data_shards), (Some(data.as_str()), 2));
    assert_eq!(t.validation.iter().map(|v| v.0).collect::<Vec<_>>(), vec![2, 4]);
    assert!(t.validation.iter().all(|v| v.1.is_finite()));
    assert_loss_chart(&full, true);
    // Validation only reads the state: the same training losses without it.
    let plain = dir.join("plain");
    let o = run(&plain, "4", &[], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(losses(&plain), want, "validation changed training");
    let at2 = save.join("step_00000002");
    assert!(at2.join("model.safetensors").is_file() && save.join("step_00000004").is_dir());

    let resumed = dir.join("resumed");
    let o = run(&resumed, "2", &["--resume", &s(&at2)], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(losses(&resumed), want[2..].to_vec(), "resumed all on the GPU");
    assert_loss_chart(&resumed, false);

    // Under schedules: weights streamed and the optimizer state on the host (host copies read
    // and written), and the planner's plan at 1 GiB (all on the device) of the same model.
    let a = dir.join("plan-a");
    let o = offplan(&[
        "plan",
        "--model",
        &tiny,
        "--hardware",
        common::H100,
        "--budget",
        "2GiB",
        "--strategy",
        "stream-weights,host-optimizer",
        "--out",
        &s(&a),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let sa = a.join("schedule.ron");
    let (full_a, save_a) = (dir.join("full-a"), dir.join("save-a"));
    let o = run(
        &full_a,
        "4",
        &["--save", &s(&save_a), "--save-every", "2", "--val-data", &data, "--val-every", "2", "--val-batches", "3"],
        Some(&sa),
    );
    assert!(o.status.success(), "{}", text(&o));
    let want_a = losses(&full_a);
    // Offload changes no bit: the schedule's losses and validation losses are the all-on-GPU
    // run's (its one extra, measured step aside).
    assert_eq!(want_a[..4], want[..], "the schedule's losses");
    let (_, ra) = reports::record::load_dir(&full_a).unwrap().into_iter().next().unwrap();
    let va = ra.training.expect("the record's training").validation;
    assert_eq!(va[..2], t.validation[..], "validation under the schedule");
    assert_eq!(va.last().map(|v| v.0), Some(5), "validated after the last (measured) step");
    assert_loss_chart(&full_a, true);
    assert!(full_a.join("memory.svg").is_file(), "a schedule run draws its memory too");
    let res_a = dir.join("res-a");
    let o = run(&res_a, "2", &["--resume", &s(&save_a.join("step_00000002"))], Some(&sa));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(losses(&res_a), want_a[2..].to_vec(), "resumed under the same schedule");

    let b = dir.join("plan-b");
    assert!(plan_tiny("1GiB", &b).status.success());
    let res_b = dir.join("res-b");
    let o = run(&res_b, "2", &["--resume", &s(&save_a.join("step_00000002"))], Some(&b.join("schedule.ron")));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(losses(&res_b), want_a[2..].to_vec(), "resumed under a schedule of another budget");

    // Weights only: a checkpoint --init-from starts from.
    let (wo, wo_out) = (dir.join("wo"), dir.join("wo-out"));
    let o = run(&wo_out, "2", &["--save", &s(&wo), "--weights-only"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!wo.join("step_00000002/optimizer.safetensors").exists());
    let o = run(&dir.join("init"), "2", &["--init-from", &s(&wo)], None);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
