//! One plan, one number per quantity: `plan`'s stdout, summary.md, `simulate`, `simulate
//! --json`, `explain` and the pictures name the same live peak, arena, device, headroom and host
//! memory, and the same step time and parts, as printed.

mod common;
use common::{config, offplan, scratch_dir, text, H100};
use models::{Bytes, Schedule, Seconds};
use std::collections::BTreeMap;

/// The memory figures' names, then the step's, as every output prints them.
const MEMORY: [&str; 5] = ["live peak", "arena", "device", "headroom", "host memory"];
const STEP: [&str; 7] =
    ["step time", "compute busy", "waiting on H2D", "waiting on D2H", "waiting on host", "waiting on launches", "after compute"];

/// The value printed on the first text line that is `name`, two spaces or more, then a value
/// (a number and a unit): `live peak          1.389 GiB  of live tensors, ...`.
fn text_figure(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(name)?;
        if !rest.starts_with("  ") {
            return None;
        }
        let mut words = rest.split_whitespace();
        Some(format!("{} {}", words.next()?, words.next()?))
    })
}

/// The value of the first Markdown row `| name | value | ... |`.
fn markdown_figure(md: &str, name: &str) -> Option<String> {
    md.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        (cells.len() > 3 && cells[1] == name).then(|| cells[2].to_string())
    })
}

/// Every figure of one output, by name.
fn figures(what: &str, out: &str, read: fn(&str, &str) -> Option<String>) -> BTreeMap<&'static str, String> {
    MEMORY.iter().chain(&STEP).map(|n| (*n, read(out, n).unwrap_or_else(|| panic!("{what} does not name the {n}:\n{out}")))).collect()
}

/// The figures of `simulate --json`, printed as the text outputs print them.
fn json_figures(v: &serde_json::Value) -> BTreeMap<&'static str, String> {
    let bytes = |k: &str| Bytes(v["memory"][k].as_u64().unwrap_or_else(|| panic!("memory.{k} in {v}"))).to_string();
    let secs = |k: &str| Seconds(v["step"][k].as_f64().unwrap_or_else(|| panic!("step.{k} in {v}"))).to_string();
    let headroom = v["memory"]["headroom_bytes"].as_i64().expect("headroom_bytes");
    [
        ("live peak", bytes("live_peak_bytes")),
        ("arena", bytes("arena_bytes")),
        ("device", bytes("device_bytes")),
        ("headroom", Bytes(headroom.unsigned_abs()).to_string()),
        ("host memory", bytes("host_memory_bytes")),
        ("step time", secs("step_time_s")),
        ("compute busy", secs("compute_busy_s")),
        ("waiting on H2D", secs("waiting_on_h2d_s")),
        ("waiting on D2H", secs("waiting_on_d2h_s")),
        ("waiting on host", secs("waiting_on_host_s")),
        ("waiting on launches", secs("waiting_on_launches_s")),
        ("after compute", secs("after_compute_s")),
    ]
    .into_iter()
    .collect()
}

#[test]
fn every_output_names_the_same_figures() {
    let dir = scratch_dir("figures");
    let out = dir.join("plan");
    // gpt3-125m at 2 GiB offloads (pinned host memory, waits on copies and host AdamW), and its
    // live peak, arena and device figure all differ.
    let o = offplan(&["plan", "--model", &config("gpt3-125m"), "--hardware", H100, "--budget", "2GiB", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let plan_out = String::from_utf8_lossy(&o.stdout).into_owned();
    let want = figures("plan", &plan_out, text_figure);

    // The numbers are the schedule's.
    let schedule_path = out.join("schedule.ron");
    let s = Schedule::load(&schedule_path).unwrap();
    let p = &s.prediction;
    assert_eq!(want["live peak"], p.peak_allocated.to_string());
    assert_eq!(want["arena"], p.arena.expect("a laid-out arena").to_string());
    assert_eq!(want["device"], p.peak_device().to_string());
    assert_eq!(want["headroom"], (s.budget - p.peak_device()).to_string());
    assert_eq!(want["host memory"], p.pinned_host.to_string());
    assert_eq!(want["step time"], p.step_time.to_string());
    assert_eq!(want["compute busy"], p.compute_time.to_string());
    assert!(p.pinned_host > Bytes::ZERO && p.arena.unwrap() > p.peak_allocated && p.peak_device() > p.arena.unwrap() + p.fixed_overhead);
    assert_ne!(want["waiting on host"], Seconds::ZERO.to_string(), "host AdamW makes the compute lane wait");

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert_eq!(figures("summary.md", &summary, markdown_figure), want);

    let sched = schedule_path.to_str().unwrap();
    let o = offplan(&["simulate", sched]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(figures("simulate", &String::from_utf8_lossy(&o.stdout), text_figure), want);

    let o = offplan(&["simulate", sched, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json_figures(&v), want);
    // The parts add up to the step (to 1 us), and the older fields agree.
    let step = &v["step"];
    let parts: f64 =
        ["compute_busy_s", "waiting_on_h2d_s", "waiting_on_d2h_s", "waiting_on_host_s", "waiting_on_launches_s", "after_compute_s"]
            .iter()
            .map(|k| step[k].as_f64().unwrap())
            .sum();
    assert!((parts - step["step_time_s"].as_f64().unwrap()).abs() < 1e-6, "{step}");
    assert_eq!(v["peak_device_bytes"], v["memory"]["device_bytes"]);
    assert_eq!(v["peak_allocated_bytes"], v["memory"]["live_peak_bytes"]);
    assert_eq!(v["arena_bytes"], v["memory"]["arena_bytes"]);
    assert_eq!(v["pinned_host_bytes"], v["memory"]["host_memory_bytes"]);
    assert_eq!(v["step_time_s"], step["step_time_s"]);

    let o = offplan(&["explain", sched, "layer0.activations"]);
    assert!(o.status.success(), "{}", text(&o));
    let explain = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(figures("explain", &explain, text_figure), want);
    // Its table's planned row shows the same device figure and step.
    let row = explain.lines().find(|l| l.contains(" * ")).unwrap_or_else(|| panic!("no planned row:\n{explain}"));
    assert!(row.contains(&want["device"]) && row.contains(&want["step time"]) && row.contains(&want["headroom"]), "{row}");

    // The pictures: the memory chart's legend and the timeline's title.
    let memory = std::fs::read_to_string(out.join("memory.svg")).unwrap();
    for (name, label) in
        [("live peak", "live peak"), ("arena", "arena"), ("device", "device"), ("headroom", "headroom"), ("host memory", "host memory")]
    {
        let shown = format!("{label} {}", want[name]);
        assert!(memory.contains(&shown), "memory.svg lacks {shown:?}");
    }
    let timeline = std::fs::read_to_string(out.join("timeline.svg")).unwrap();
    let title = std::iter::once(format!("step time {} =", want["step time"]))
        .chain(STEP[1..].iter().map(|n| format!("{n} {}", want[*n])))
        .collect::<Vec<_>>();
    let title = format!("{} {}", title[0], title[1..].join(" + "));
    assert!(timeline.contains(&title), "timeline.svg lacks {title:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
