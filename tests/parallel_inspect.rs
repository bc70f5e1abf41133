//! `offplan inspect --tp T --pp P --dp D ...`: one rank's memory per pipeline stage, end to end,
//! against numbers worked out by hand from Korthikanti et al. 2022 and Megatron-LM's sharding.

mod common;
use common::{config, offplan, scratch_dir, text, H100};
use serde_json::Value;
use std::process::Command;

/// gpt3-175b as the paper trains it: s 2048, b 1, h 12288, a 96, L 96, at TP 8 (and t as given).
const S: u64 = 2048;
const B: u64 = 1;
const H: u64 = 12288;
const A: u64 = 96;
const T: u64 = 8;
const SBH: u64 = S * B * H;
const AS2B: u64 = A * S * S * B;

fn inspect_json(args: &[&str]) -> Value {
    let mut all = vec!["inspect", "--json"];
    all.extend_from_slice(args);
    let o = offplan(&all);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `inspect --model MODEL FLAGS` in an empty folder exits 2, says each of `says`, prints nothing
/// on stdout and writes no file.
fn assert_usage_error(model: &str, flags: &[&str], says: &[&str]) {
    // Tests run side by side in one process: each call its own folder.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = scratch_dir(&format!("parallel-bad-{}", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let mut args = vec!["inspect", "--model", model];
    args.extend_from_slice(flags);
    let o = Command::new(env!("CARGO_BIN_EXE_offplan")).args(&args).current_dir(&dir).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{flags:?}: {t}");
    for s in says {
        assert!(t.contains(s), "{flags:?} should say `{s}`: {t}");
    }
    assert!(o.stdout.is_empty(), "{flags:?} printed: {t}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{flags:?} wrote a file");
    std::fs::remove_dir_all(dir).unwrap();
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// gpt3-175b with materialised attention (the paper's assumption), in a scratch folder.
fn materialised_175b() -> String {
    let dir = scratch_dir("parallel-materialised");
    let text = std::fs::read_to_string(config("gpt3-175b")).unwrap().replace("attention: Fused", "attention: Materialized");
    let path = dir.join("gpt3-175b-materialised.ron");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The paper's per-layer bytes per rank, worked by hand: sbh(10 + 24/t + 5as/(ht)) at t 8 is
/// 23 sbh; with sequence parallelism sbh/t (34 + 5as/h) is 114 sbh / 8.
#[test]
fn gpt3_175b_activations_per_rank_match_korthikanti() {
    assert_eq!(5 * A * S / (H * T), 10);
    for (sp, paper, recompute) in [(false, 23 * SBH, 2 * SBH), (true, 114 * SBH / T, 2 * SBH / T)] {
        let mut args = vec!["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8"];
        if sp {
            args.push("--sequence-parallel");
        }
        let v = inspect_json(&args);
        let p = &v["parallel"];
        assert_eq!(p["korthikanti_layer_bytes"].as_f64().unwrap(), paper as f64, "sp {sp}");
        assert_eq!(p["korthikanti_recompute_bytes"].as_f64().unwrap(), recompute as f64);
        assert_eq!(u(&p["recompute_layer_bytes"]), recompute, "full recomputation keeps x_in");
        // Fused attention (the shipped config): the log-sum-exp, 4abs bytes split by heads,
        // stands in for the softmax output; no dropout; plus the layer norms' statistics 16sb.
        let fused = if sp { (32 * SBH + 16 * S * B + 4 * A * B * S) / T } else { 8 * SBH + 16 * S * B + (24 * SBH + 4 * A * B * S) / T };
        assert_eq!(u(&p["layer_activation_bytes"]), fused, "sp {sp}");
    }
    assert_eq!(23 * SBH, 578_813_952);
    assert_eq!(114 * SBH / T, 358_612_992);

    // Materialised attention: the paper's terms less the dropout ones, term by term.
    let model = materialised_175b();
    let dir = std::path::Path::new(&model).parent().unwrap().to_path_buf();
    for sp in [false, true] {
        let mut args = vec!["--model", model.as_str(), "--tp", "8", "--pp", "8"];
        if sp {
            args.push("--sequence-parallel");
        }
        let v = inspect_json(&args);
        let p = &v["parallel"];
        let split_if_sp = |x: u64| if sp { x / T } else { x };
        let expected = [
            ("x_in", split_if_sp(2 * SBH), "LayerNormInputs"),
            ("ln1", split_if_sp(2 * SBH), "LinearInputs"),
            ("ln1_stats", split_if_sp(8 * S * B), ""),
            ("qkv", 6 * SBH / T, "QueryKeyValue"),
            ("att", 2 * AS2B / T, "SoftmaxOutput"),
            ("atty", 2 * SBH / T, "ProjectionInput"),
            ("x_mid", split_if_sp(2 * SBH), "LayerNormInputs"),
            ("ln2", split_if_sp(2 * SBH), "LinearInputs"),
            ("ln2_stats", split_if_sp(8 * S * B), ""),
            ("fch", 8 * SBH / T, "GeluInput"),
            ("fch_gelu", 8 * SBH / T, "GeluOutput"),
        ];
        let shards = p["layer_activations"].as_array().unwrap();
        assert_eq!(shards.len(), expected.len());
        for (s, (name, bytes, term)) in shards.iter().zip(expected) {
            assert_eq!(s["tensor"], name);
            assert_eq!(u(&s["per_rank"]), bytes, "{name} sp {sp}");
            assert_eq!(s["paper"].as_str().unwrap_or(""), term, "{name}");
        }
        // The dropout terms: softmax mask as^2b and output 2as^2b (split by t), the attention and
        // MLP masks 2sbh (split by t only with sequence parallelism).
        let dropout = 3 * AS2B / T + split_if_sp(2 * SBH);
        let paper = if sp { 114 * SBH / T } else { 23 * SBH };
        let ours = paper - dropout + split_if_sp(16 * S * B);
        assert_eq!(u(&p["layer_activation_bytes"]), ours);
        assert_eq!(ours, if sp { 201_330_688 } else { 377_520_128 });
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Megatron's shards per rank at TP 8: qkv and fc (weights and biases) and the row-parallel
/// weights split by 8, their biases and the layer norms whole; 12 layers per pipeline stage; the
/// vocabulary-parallel embedding on the first, the final norm and output layer on the last.
#[test]
fn gpt3_175b_at_tp8_pp8_holds_the_hand_computed_shards_per_rank() {
    let v = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8"]);
    let p = &v["parallel"];
    assert_eq!(u(&p["ranks"]), 64);
    assert_eq!(u(&p["micro_batches"]), 8, "--micro-batches defaults to --pp");
    let (vp, n_ctx) = (50304u64, 2048u64);
    let qkv = (3 * H * H + 3 * H) / T;
    let attproj = H * H / T + H;
    let fc = (4 * H * H + 4 * H) / T;
    let fcproj = 4 * H * H / T + H;
    let norms = 4 * H;
    let layer = qkv + attproj + fc + fcproj + norms;
    assert_eq!(layer, 226_576_896);
    let embedding = vp * H / T + n_ctx * H; // wte split by vocabulary, wpe whole
    let output = vp * H / T + 2 * H; // output rows split by vocabulary, lnf whole
    let stages = p["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 8);
    for (i, s) in stages.iter().enumerate() {
        let i = i as u64;
        assert_eq!(u(&s["layers"]["start"]), 12 * i);
        assert_eq!(u(&s["layers"]["end"]), 12 * i + 12);
        let extra = match i {
            0 => embedding,
            7 => output,
            _ => 0,
        };
        let params = 12 * layer + extra;
        assert_eq!(u(&s["params_per_rank"]), params, "pipeline stage {i}");
        assert_eq!(u(&s["weight_bytes"]), 2 * params);
        assert_eq!(u(&s["grad_bytes"]), 2 * params);
        assert_eq!(u(&s["optimizer_bytes"]), 12 * params);
        assert_eq!(u(&s["micro_batches_in_flight"]), 8 - i, "1F1B: the first pipeline stage holds the most");
        let owners: Vec<&str> = s["owners"].as_array().unwrap().iter().map(|o| o["owner"].as_str().unwrap()).collect();
        assert_eq!(owners.contains(&"embedding"), i == 0);
        assert_eq!(owners.contains(&"final_norm"), i == 7);
        assert_eq!(owners.iter().filter(|o| o.starts_with("chunk")).count(), if i == 7 { 8 } else { 0 });
    }
    let first = &stages[0]["owners"][0];
    assert_eq!(first["owner"], "embedding");
    assert_eq!(u(&first["params_per_rank"]), embedding);
    assert_eq!(embedding, 102_432_768);
    let chunks: u64 = stages[7]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["owner"].as_str().unwrap().starts_with("chunk"))
        .map(|o| u(&o["params_per_rank"]))
        .sum();
    assert_eq!(chunks, vp * H / T);
    assert_eq!(u(&stages[0]["params_per_rank"]), 2_821_355_520);
    assert_eq!(u(&stages[3]["params_per_rank"]), 2_718_922_752);
    assert_eq!(u(&stages[7]["params_per_rank"]), 2_796_214_272);

    // The text table says the same.
    let o = offplan(&["inspect", "--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("TP 8 x PP 8 x DP 1 = 64 ranks") && t.contains("pipeline stage") && t.contains("2,821,355,520"), "{t}");
    assert!(t.contains("552 MiB"), "the paper's 23 sbh: {t}");
}

#[test]
fn zero_one_shards_the_optimizer_state_over_dp() {
    let off = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8", "--dp", "4"]);
    let one = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8", "--dp", "4", "--zero", "1"]);
    let params = u(&one["parallel"]["stages"][0]["params_per_rank"]);
    assert_eq!(u(&off["parallel"]["stages"][0]["optimizer_bytes"]), 12 * params);
    assert_eq!(u(&one["parallel"]["stages"][0]["optimizer_bytes"]), 12 * params / 4);
    assert_eq!(u(&one["parallel"]["ranks"]), 256);
}

/// One rank of (1, 1, 1) is the single-GPU inventory exactly, and no flag (or default flags)
/// leaves today's output as it is.
#[test]
fn one_rank_is_the_single_gpu_inventory() {
    for name in ["gpt2-124m", "gpt3-175b"] {
        let model = config(name);
        let plain = offplan(&["inspect", "--model", &model]);
        let defaults =
            offplan(&["inspect", "--model", &model, "--tp", "1", "--pp", "1", "--dp", "1", "--zero", "0", "--micro-batches", "1"]);
        assert!(plain.status.success(), "{}", text(&plain));
        assert_eq!(plain.stdout, defaults.stdout, "default flags change nothing");
        let v = inspect_json(&["--model", &model]);
        assert!(v.get("parallel").is_none(), "no parallel field without parallel flags");

        // --micro-batches 2 asks for the table; one pipeline stage holds one micro-batch.
        let v = inspect_json(&["--model", &model, "--micro-batches", "2"]);
        let s = &v["parallel"]["stages"][0];
        let class = |c: &str| u(&v["bytes_per_class"].as_array().unwrap().iter().find(|x| x[0] == c).unwrap()[1]);
        assert_eq!(u(&s["params_per_rank"]), u(&v["allocated_params"]));
        assert_eq!(u(&s["weight_bytes"]), class("Weights"));
        assert_eq!(u(&s["grad_bytes"]), class("Grads"));
        assert_eq!(u(&s["optimizer_bytes"]), class("OptimizerState"));
        assert_eq!(u(&s["micro_batches_in_flight"]), 1);
        assert_eq!(u(&s["activation_bytes_in_flight"]), class("Activations"));
        assert_eq!(u(&v["parallel"]["layer_activation_bytes"]), u(&v["activation_bytes_per_layer"]));
        assert_eq!(u(&s["head_activation_bytes"]), u(&v["head_activation_bytes"]));
    }
}

/// A bad grid exits 2 naming its flag, prints nothing on standard output and writes nothing.
#[test]
fn bad_grids_exit_2_and_name_the_flag() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model = format!("{root}/{}", config("gpt3-175b"));
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--tp", "5"], &["--tp 5", "96 attention heads", "1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96"]),
        (&["--pp", "5"], &["--pp 5", "96 layers", "1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96"]),
        (&["--sequence-parallel"], &["--sequence-parallel", "--tp"]),
        (&["--tp", "0"], &["--tp is 0"]),
        (&["--pp", "8", "--micro-batches", "0"], &["--micro-batches"]),
    ];
    for (flags, says) in cases {
        assert_usage_error(&model, flags, says);
    }
    // An unpadded vocabulary takes no tensor parallelism: the message lists what would.
    let dir = scratch_dir("parallel-vocab");
    let cfg = dir.join("odd.ron");
    let good = std::fs::read_to_string(format!("{root}/{}", config("gpt2-124m"))).unwrap();
    std::fs::write(&cfg, good.replace("padded_vocab: 50304", "padded_vocab: 50257")).unwrap();
    let o = offplan(&["inspect", "--model", cfg.to_str().unwrap(), "--tp", "2"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--tp 2") && t.contains("padded_vocab 50257") && t.contains("padded_vocab: 1"), "{t}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The shipped H100 profile as a machine of 8 nodes of 8 (issue 20's 64 H100s), in a scratch folder.
fn h100_nodes(nodes: u32) -> (std::path::PathBuf, String) {
    let dir = scratch_dir(&format!("parallel-nodes-{nodes}"));
    let text = std::fs::read_to_string(H100).unwrap();
    assert!(text.contains("nodes: 1,"));
    let path = dir.join("h100-nodes.ron");
    std::fs::write(&path, text.replace("nodes: 1,", &format!("nodes: {nodes},"))).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Each rank's collectives per pipeline stage (Shoeybi et al. 2019; gpt3-175b at TP 8, PP 8):
/// 4 TP all-reduces of 2sbh bytes per layer and micro-batch, the pipeline's activations and
/// gradients, the bubble (P - 1) / (M + P - 1); timed over the profile's interconnect.
#[test]
fn gpt3_175b_collectives_per_pipeline_stage() {
    let act = 2 * SBH;
    assert_eq!(act, 50_331_648);
    // Without --hardware: the bytes alone.
    let v = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8"]);
    let c = &v["parallel"]["communication"];
    assert_eq!(f(&c["bubble_fraction"]), 7.0 / 15.0);
    assert!(c.get("hardware").is_none() && c.get("interconnect").is_none());
    let stages = c["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 8);
    let middle = stages[3]["collectives"].as_array().unwrap();
    let tp: Vec<&Value> = middle.iter().filter(|x| x["group"] == "Tp").collect();
    assert!(tp.iter().all(|x| x["kind"] == "AllReduce" && u(&x["bytes"]) == act && u(&x["ranks"]) == 8), "{tp:?}");
    assert_eq!(tp.iter().map(|x| u(&x["calls_per_step"])).sum::<u64>(), 4 * 12 * 8, "4 per layer and micro-batch");
    let pp: Vec<&Value> = middle.iter().filter(|x| x["group"] == "Pp").collect();
    assert_eq!(pp.len(), 4);
    assert!(pp.iter().all(|x| x["kind"] == "SendRecv" && u(&x["bytes"]) == act && u(&x["calls_per_step"]) == 8));
    assert!(middle.iter().all(|x| x.get("seconds_per_step").is_none()));
    assert_eq!(u(&stages[3]["bytes_per_step"]), (4 * 12 * 8 + 4 * 8) * act);
    let last = stages[7]["collectives"].as_array().unwrap();
    let ce = last.iter().find(|x| x["what"].as_str().unwrap().starts_with("cross-entropy")).unwrap();
    assert_eq!((u(&ce["bytes"]), u(&ce["calls_per_step"])), (4 * S * B, 3 * 8), "3 fp32 per token per micro-batch");
    let o = offplan(&["inspect", "--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8"]);
    let t = text(&o);
    assert!(t.contains("bytes only") && t.contains("pipeline stages 1-6") && t.contains("7/15 = 46.7%"), "{t}");

    // Over 8 nodes of 8: TP within a node (NVLink), each pipeline stage a node of its own.
    let (dir, hw) = h100_nodes(8);
    let v = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8", "--hardware", &hw]);
    let c = &v["parallel"]["communication"];
    assert_eq!(c["hardware"], "h100-sxm");
    assert_eq!(u(&c["interconnect"]["nodes"]), 8);
    for s in c["stages"].as_array().unwrap() {
        let mut sum = 0.0;
        for x in s["collectives"].as_array().unwrap() {
            assert_eq!(x["within_node"].as_bool().unwrap(), x["group"] == "Tp", "{x}");
            sum += f(&x["seconds_per_step"]);
        }
        assert!((f(&s["seconds_per_step"]) - sum).abs() < 1e-12);
    }
    // The ring model by hand: an all-reduce of 48 MiB over 8 ranks at 370 GB/s with 3.4 us per
    // step; a transfer of 48 MiB between nodes at 50 GB/s with 10 us.
    let x = &c["stages"][3]["collectives"][0];
    let all_reduce = 2.0 * 7.0 / 8.0 * act as f64 / 370e9 + 14.0 * 3.4e-6;
    assert!((f(&x["seconds_per_call"]) - all_reduce).abs() < 1e-12, "{x}");
    assert!((f(&x["seconds_per_step"]) - 192.0 * all_reduce).abs() < 1e-9);
    let send = c["stages"][3]["collectives"].as_array().unwrap().iter().find(|x| x["kind"] == "SendRecv").unwrap();
    assert!((f(&send["seconds_per_call"]) - (act as f64 / 50e9 + 10e-6)).abs() < 1e-12, "{send}");
    let o = offplan(&["inspect", "--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--pp", "8", "--hardware", &hw]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("8 nodes of 8 GPUs") && t.contains("within a node 370 GB/s") && t.contains("54.85 ms"), "{t}");
    assert!(t.contains("1F1B bubble") && t.contains("time/step"), "{t}");
    std::fs::remove_dir_all(dir).unwrap();

    // One node: TP 8 fits it; DP and the sequence-parallel pairs show too.
    let v = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "4", "--dp", "2", "--zero", "1", "--hardware", H100]);
    let x = v["parallel"]["communication"]["stages"][0]["collectives"].as_array().unwrap().clone();
    let dp: Vec<&str> = x.iter().filter(|x| x["group"] == "Dp").map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(dp, ["ReduceScatter", "AllGather"], "ZeRO-1");
    assert!(x.iter().all(|x| x["within_node"] == true));
    let v = inspect_json(&["--model", "models/configs/gpt3-175b.ron", "--tp", "8", "--sequence-parallel", "--hardware", H100]);
    let kinds: Vec<&str> = v["parallel"]["communication"]["stages"][0]["collectives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"ReduceScatter") && kinds.contains(&"AllGather"), "{kinds:?}");
}

/// A grid above the profile's GPUs, or a profile without an interconnect, exits 2 and says why.
#[test]
fn a_grid_the_profile_cannot_hold_exits_2() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model = format!("{root}/{}", config("gpt3-175b"));
    let single = format!("{root}/{H100}");
    let rtx = format!("{root}/models/hardware/rtx-4090.ron");
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--tp", "8", "--pp", "8", "--hardware", &single], &["64 ranks", "8 GPUs", "h100-sxm", "nodes: 8"]),
        (&["--tp", "4", "--dp", "4", "--hardware", &single], &["16 ranks", "8 GPUs", "nodes: 2"]),
        (&["--tp", "2", "--hardware", &rtx], &["rtx-4090", "no `interconnect`", "cannot be timed", "leave out --hardware"]),
    ];
    for (flags, says) in cases {
        assert_usage_error(&model, flags, says);
    }
    // The same grids without --hardware, or on one GPU with it, are fine.
    assert!(offplan(&["inspect", "--model", &model, "--tp", "8", "--pp", "8"]).status.success());
    let o = offplan(&["inspect", "--model", &model, "--hardware", &rtx]);
    assert!(o.status.success(), "{}", text(&o));
}
