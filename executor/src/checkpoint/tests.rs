use super::*;
use crate::init::{init_params, Rng};
use models::config::{Attention, Precision};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A small config: 2 layers of 64, vocabulary 500 padded to 512 in 4 output chunks.
fn small(tied: bool) -> GptConfig {
    GptConfig {
        name: if tied { "small-tied".into() } else { "small-untied".into() },
        layers: 2,
        hidden: 64,
        heads: 4,
        vocab: 500,
        padded_vocab: 512,
        max_seq: 32,
        batch: 2,
        seq: 16,
        tied_embeddings: tied,
        attention: Attention::Fused,
        precision: Precision::default(),
        output_chunks: 4,
    }
}

/// Initial weights with a made-up optimizer state (nothing zero), so every byte is checked.
fn params(cfg: &GptConfig, seed: u64) -> (Inventory, Vec<OwnerInit>) {
    let inv = Inventory::build(cfg);
    let mut ps = init_params(&inv, cfg.layers, seed);
    let mut rng = Rng::new(seed + 100);
    for p in &mut ps {
        for x in &mut p.optimizer {
            *x = rng.normal() as f32;
        }
    }
    (inv, ps)
}

fn state(cfg: &GptConfig) -> TrainerState {
    let data = DataPosition { source: "test data".into(), seed: 3, epoch: 1, shard: 2, offset: 4097, file: "train_000002.bin".into() };
    let mut s = TrainerState::new(120, 7, &cfg.name, "digest-abc", data);
    s.extra = serde_json::json!({"lr": 3e-4});
    s
}

fn same_bits(a: &[OwnerInit], b: &[OwnerInit]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.owner, y.owner);
        assert!(x.weights.iter().zip(&y.weights).all(|(p, q)| p.to_bits() == q.to_bits()), "{} weights", x.owner);
        assert!(x.optimizer.iter().zip(&y.optimizer).all(|(p, q)| p.to_bits() == q.to_bits()), "{} optimizer", x.owner);
        assert_eq!((x.weights.len(), x.optimizer.len()), (y.weights.len(), y.optimizer.len()));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn training_state_round_trips_bit_for_bit_tied_and_untied() {
    for cfg in [small(true), small(false), hf::tests::config("gpt2-tiny")] {
        let (inv, ps) = params(&cfg, 1);
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ckpt");
        let info = write_checkpoint(&dir, &cfg, &inv, &ps, Some(&state(&cfg))).unwrap();
        assert_eq!(entries(&dir), vec!["config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]);
        assert_eq!(entries(d.path()), vec!["ckpt"], "no temporary left");
        assert!(info.bytes > 14 * cfg.param_count(), "{} bytes: bf16 weights + fp32 master, m, v", info.bytes);
        let c = Checkpoint::open_resume(&dir, &cfg, &inv, "digest-abc").unwrap();
        assert_eq!(c.state(), Some(&state(&cfg)));
        same_bits(&c.owners().unwrap(), &ps);
    }
}

#[test]
fn weights_only_for_init_from_pad_with_zeros_and_restart_the_optimizer() {
    for tied in [true, false] {
        let cfg = small(tied);
        let (inv, ps) = params(&cfg, 2);
        let d = tempfile::tempdir().unwrap();
        write_checkpoint(d.path(), &cfg, &inv, &ps, None).unwrap();
        assert_eq!(entries(d.path()), vec!["config.json", "model.safetensors"]);
        let e = Checkpoint::open_resume(d.path(), &cfg, &inv, "x").err().unwrap();
        assert!(matches!(e, CheckpointError::NotResumable { .. }) && e.to_string().contains("--init-from"), "{e}");
        let got = Checkpoint::open_weights(d.path(), &cfg, &inv).unwrap().owners().unwrap();
        for (g, p) in got.iter().zip(&ps) {
            let n = g.weights.len();
            assert!(g.optimizer[n..].iter().all(|&x| x == 0.0), "m = v = 0");
            assert!(g.optimizer[..n].iter().zip(&g.weights).all(|(m, w)| *m == w.to_f32()), "master = weights");
            // every row but the padded vocabulary rows (the last 12 of the last chunk, or of wte)
            // the padded rows 500..512: the last 12 of the last chunk (and, untied, inside wte,
            // which the embedding holds before wpe)
            let pad = if g.owner == Owner::OutputChunk(3) { 12 * 64 } else { 0 };
            if g.owner == Owner::Embedding && !tied {
                let (rows, c) = (500 * 64, 512 * 64);
                assert_eq!(g.weights[..rows], p.weights[..rows]);
                assert!(g.weights[rows..c].iter().all(|x| x.to_f32() == 0.0));
                assert_eq!(g.weights[c..], p.weights[c..]);
                continue;
            }
            assert_eq!(g.weights[..n - pad], p.weights[..n - pad], "{}", g.owner);
            assert!(g.weights[n - pad..].iter().all(|x| x.to_f32() == 0.0));
        }
    }
}

/// A tensor of a safetensors file: name, dtype, shape, bytes.
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

/// Reads a safetensors file's tensors.
fn read_tensors(path: &Path) -> Vec<Raw> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_tensors(path: &Path, tensors: &[Raw]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn bf16_of(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
}

#[test]
fn the_file_holds_hf_names_in_hf_orientation() {
    let cfg = small(false);
    let (inv, ps) = params(&cfg, 3);
    let d = tempfile::tempdir().unwrap();
    write_checkpoint(d.path(), &cfg, &inv, &ps, None).unwrap();
    let st = std::fs::read(d.path().join(WEIGHTS_FILE)).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&st).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt", "transformers checks this");
    let t = read_tensors(&d.path().join(WEIGHTS_FILE));
    assert_eq!(t.len(), 4 + 12 * 2 + 1);
    assert!(t.iter().all(|x| x.1 == Dtype::BF16));
    let get = |name: &str| t.iter().find(|x| x.0 == name).unwrap_or_else(|| panic!("{name}"));
    let view = |owner: Owner, name: &str| {
        let p = ps.iter().find(|p| p.owner == owner).unwrap();
        let v = inv.tensor(inv.params(owner).weights).views.iter().find(|v| v.name == name).unwrap().clone();
        (p.weights[v.offset as usize..(v.offset + v.elems()) as usize].iter().map(|x| x.to_f32()).collect::<Vec<_>>(), v.shape)
    };
    // c_attn: HF (C, 3C) = offplan qkv_w (3C, C) transposed
    let (qkv, s) = view(Owner::Layer(1), "qkv_w");
    let (_, _, shape, bytes) = get("transformer.h.1.attn.c_attn.weight");
    assert_eq!((shape.clone(), s.clone()), (vec![64, 192], vec![192, 64]));
    let hf = bf16_of(bytes);
    for (i, j) in [(0, 0), (3, 170), (63, 191), (10, 5)] {
        assert_eq!(hf[i * 192 + j], qkv[j * 64 + i]);
    }
    let (fcproj, _) = view(Owner::Layer(0), "fcproj_w"); // (C, 4C)
    let hf = bf16_of(&get("transformer.h.0.mlp.c_proj.weight").3); // (4C, C)
    assert_eq!(hf[200 * 64 + 7], fcproj[7 * 256 + 200]);
    let (b, _) = view(Owner::Layer(0), "ln2_b");
    assert_eq!(bf16_of(&get("transformer.h.0.ln_2.bias").3), b);
    // lm_head: the 4 chunks' rows stacked, the first 500 of 512
    let head = bf16_of(&get("lm_head.weight").3);
    assert_eq!(head.len(), 500 * 64);
    let (c1, _) = view(Owner::OutputChunk(1), "w");
    assert_eq!(head[128 * 64..256 * 64], c1[..]);
    let (wte, _) = view(Owner::Embedding, "wte");
    assert_eq!(bf16_of(&get("transformer.wte.weight").3), wte[..500 * 64]);
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(
        (c["n_layer"].as_u64(), c["tie_word_embeddings"].as_bool(), c["offplan"]["name"].as_str()),
        (Some(2), Some(false), Some("small-untied"))
    );
}

#[test]
fn reads_checkpoints_transformers_wrote_in_fp32_fp16_without_prefix() {
    let cfg = small(true);
    let (inv, ps) = params(&cfg, 4);
    let d = tempfile::tempdir().unwrap();
    let ours = d.path().join("ours");
    write_checkpoint(&ours, &cfg, &inv, &ps, None).unwrap();
    let want = Checkpoint::open_weights(&ours, &cfg, &inv).unwrap().owners().unwrap();
    let tensors = read_tensors(&ours.join(WEIGHTS_FILE));
    // As the hub's original conversion: fp32, no `transformer.` prefix, causal-mask buffers,
    // no config.json, and a tied lm_head stored too.
    let hub = d.path().join("hub");
    std::fs::create_dir(&hub).unwrap();
    let mut f32s: Vec<_> = tensors
        .iter()
        .map(|(n, _, s, b)| {
            let v: Vec<u8> = bf16_of(b).iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.strip_prefix("transformer.").unwrap().to_string(), Dtype::F32, s.clone(), v)
        })
        .collect();
    for l in 0..2 {
        f32s.push((format!("h.{l}.attn.bias"), Dtype::F32, vec![1, 1, 32, 32], vec![0; 4 * 32 * 32]));
    }
    let wte = f32s.iter().find(|t| t.0 == "wte.weight").unwrap().clone();
    f32s.push(("lm_head.weight".into(), Dtype::F32, wte.2.clone(), wte.3.clone()));
    write_tensors(&hub.join(WEIGHTS_FILE), &f32s);
    same_bits(&Checkpoint::open_weights(&hub, &cfg, &inv).unwrap().owners().unwrap(), &want);
    // fp16, prefixed, as `model.half().save_pretrained()`: close (fp16 has fewer exponent bits
    // but more mantissa than bf16: these values convert back exactly or within 1 bf16 ulp)
    let f16s: Vec<_> = tensors
        .iter()
        .map(|(n, _, s, b)| {
            let v: Vec<u8> = bf16_of(b).iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect();
            (n.clone(), Dtype::F16, s.clone(), v)
        })
        .collect();
    let half = d.path().join("half");
    std::fs::create_dir(&half).unwrap();
    write_tensors(&half.join(WEIGHTS_FILE), &f16s);
    let got = Checkpoint::open_weights(&half, &cfg, &inv).unwrap().owners().unwrap();
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.weights.iter().zip(&w.weights) {
            let (a, b) = (a.to_f32(), b.to_f32());
            assert!((a - b).abs() <= 1e-2 * b.abs().max(6e-5), "{a} {b}");
        }
    }
}

#[test]
fn checkpoints_of_another_model_are_refused_with_the_reason() {
    let cfg = small(true);
    let (inv, ps) = params(&cfg, 5);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ck");
    write_checkpoint(&dir, &cfg, &inv, &ps, Some(&state(&cfg))).unwrap();
    let err = |c: &GptConfig| Checkpoint::open_weights(&dir, c, &Inventory::build(c)).err().unwrap().to_string();
    // another config: config.json says why
    let mut deeper = small(true);
    deeper.layers = 3;
    let e = err(&deeper);
    assert!(e.contains("another model") && e.contains("n_layer 2"), "{e}");
    let e = err(&small(false));
    assert!(e.contains("tie_word_embeddings"), "{e}");
    // without config.json the tensors say it
    std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    assert!(err(&deeper).contains("2 transformer layers"), "{}", err(&deeper));
    assert!(err(&small(false)).contains("no lm_head.weight"), "{}", err(&small(false)));
    let mut wider = small(true);
    wider.hidden = 128;
    assert!(err(&wider).contains("shape"), "{}", err(&wider));
    // resume: another config name, another program
    let e = Checkpoint::open_resume(&dir, &cfg, &inv, "another-digest").err().unwrap();
    assert!(matches!(e, CheckpointError::OtherProgram { .. }), "{e}");
    let mut renamed = small(true);
    renamed.name = "other".into();
    let e = Checkpoint::open_resume(&dir, &renamed, &Inventory::build(&renamed), "digest-abc").err().unwrap();
    assert!(matches!(e, CheckpointError::OtherConfigName { .. }) && e.to_string().contains("small-tied"), "{e}");
    // damaged files: a tensor missing, the wrong shape, the wrong dtype, one too many
    let all = read_tensors(&dir.join(WEIGHTS_FILE));
    let variant = |f: &dyn Fn(&mut Vec<Raw>)| {
        let mut t = all.clone();
        f(&mut t);
        write_tensors(&dir.join(WEIGHTS_FILE), &t);
        Checkpoint::open_weights(&dir, &cfg, &inv).err().unwrap()
    };
    let e = variant(&|t| t.retain(|x| x.0 != "transformer.h.1.mlp.c_fc.bias"));
    assert!(matches!(&e, CheckpointError::Missing { name, .. } if name == "transformer.h.1.mlp.c_fc.bias"), "{e}");
    let e = variant(&|t| {
        let x = t.iter_mut().find(|x| x.0 == "transformer.h.0.attn.c_attn.weight").unwrap();
        x.2 = vec![192, 64];
    });
    assert!(matches!(e, CheckpointError::Shape { .. }) && e.to_string().contains("[64, 192]"), "{e}");
    let e = variant(&|t| {
        let x = t.iter_mut().find(|x| x.0 == "transformer.ln_f.weight").unwrap();
        x.1 = Dtype::I16;
    });
    assert!(matches!(e, CheckpointError::DType { .. }), "{e}");
    let e = variant(&|t| t.push(("score.weight".into(), Dtype::BF16, vec![2], vec![0; 4])));
    assert!(matches!(e, CheckpointError::Unexpected { .. }) && e.to_string().contains("score.weight"), "{e}");
    std::fs::write(dir.join(WEIGHTS_FILE), b"not safetensors").unwrap();
    let e = Checkpoint::open_weights(&dir, &cfg, &inv).err().unwrap();
    assert!(matches!(e, CheckpointError::Format { .. }), "{e}");
    let e = Checkpoint::open_weights(&d.path().join("nothing"), &cfg, &inv).err().unwrap();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
}

/// A source that fails at one owner, as a device copy might.
struct Failing<'a>(&'a [OwnerInit], Owner);

impl ParamSource for Failing<'_> {
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String> {
        if owner == self.1 {
            return Err("device copy failed".into());
        }
        self.0.weights(owner)
    }
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String> {
        self.0.optimizer(owner)
    }
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_whole_and_nothing_else() {
    let cfg = small(true);
    let (inv, ps) = params(&cfg, 6);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ck");
    write_checkpoint(&dir, &cfg, &inv, &ps, Some(&state(&cfg))).unwrap();
    let before: Vec<_> = entries(&dir).iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect();
    let (_, other) = params(&cfg, 7);
    let e = write_checkpoint(&dir, &cfg, &inv, &Failing(&other, Owner::Layer(1)), Some(&state(&cfg))).unwrap_err();
    assert!(matches!(e, CheckpointError::Source { .. }) && e.to_string().contains("layer1"), "{e}");
    let after: Vec<_> = entries(&dir).iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect();
    assert_eq!(before, after, "the previous checkpoint is whole");
    assert_eq!(entries(d.path()), vec!["ck"], "no temporary left");
    // a wrong-sized buffer is an error too
    let mut short = params(&cfg, 7).1;
    short[0].weights.pop();
    let e = write_checkpoint(&dir, &cfg, &inv, &short, None).unwrap_err();
    assert!(e.to_string().contains("elements"), "{e}");
    // replacing works, and a folder that is not a checkpoint is never replaced
    write_checkpoint(&dir, &cfg, &inv, &other, Some(&state(&cfg))).unwrap();
    same_bits(&Checkpoint::open_resume(&dir, &cfg, &inv, "digest-abc").unwrap().owners().unwrap(), &other);
    assert_eq!(entries(d.path()), vec!["ck"]);
    let mine = d.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    let e = write_checkpoint(&mine, &cfg, &inv, &other, None).unwrap_err();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
    assert_eq!(entries(&mine), vec!["notes.txt"]);
}

#[test]
fn the_saver_keeps_the_newest_and_latest_names_it() {
    let cfg = small(true);
    let (inv, ps) = params(&cfg, 8);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("run");
    std::fs::create_dir_all(root.join(".step_00000009.tmp-1")).unwrap(); // a crashed save's
    let saver = CheckpointSaver::new(&root, 2).unwrap();
    assert!(entries(&root).is_empty(), "stale temporaries cleared");
    for step in [10, 20, 30] {
        let s = TrainerState { step, ..state(&cfg) };
        saver.save(step, &cfg, &inv, &ps, Some(&s)).unwrap();
    }
    assert_eq!(entries(&root), vec!["latest", "step_00000020", "step_00000030"]);
    assert_eq!(resolve(&root).unwrap(), root.join("step_00000030"));
    let c = Checkpoint::open_resume(&root, &cfg, &inv, "digest-abc").unwrap();
    assert_eq!(c.state().unwrap().step, 30);
    assert_eq!(c.dir(), root.join("step_00000030"));
    // a resumed run saving an earlier step: the new one is latest, the later one goes
    saver.save(25, &cfg, &inv, &ps, None).unwrap();
    assert_eq!(entries(&root), vec!["latest", "step_00000020", "step_00000025"]);
    assert_eq!(std::fs::read_to_string(root.join(LATEST_FILE)).unwrap(), "step_00000025\n");
}

/// A full disk while saving: run as root with `cargo test -p executor -- --ignored full_disk`
/// (mounts a 4 MiB tmpfs).
#[test]
#[ignore]
fn full_disk_is_a_clear_error_and_leaves_the_previous_checkpoint() {
    let cfg = small(true);
    let (inv, ps) = params(&cfg, 9);
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&mnt).status().unwrap().success();
    assert!(ok, "mounting a tmpfs needs root");
    let dir = mnt.join("ck");
    let first = write_checkpoint(&dir, &cfg, &inv, &ps, None);
    let big = hf::tests::config("gpt2-tiny");
    let (binv, bps) = params(&big, 1);
    let e = write_checkpoint(&mnt.join("big"), &big, &binv, &bps, Some(&state(&big))).unwrap_err();
    let left = entries(&mnt);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    first.unwrap();
    assert!(matches!(e, CheckpointError::DiskFull { .. }) && e.to_string().contains("disk is full"), "{e}");
    assert_eq!(left, vec!["ck"], "nothing of the failed checkpoint");
}
