//! The one table between offplan's parameter views (models/src/inventory.rs) and Hugging Face
//! GPT-2's tensors (`GPT2LMHeadModel.state_dict()`), used both to write a checkpoint and to read
//! one. Shapes and offsets come from the inventory; this module only adds the names and the
//! orientation:
//!
//! ```text
//! offplan view                 Hugging Face tensor                          HF shape
//! embedding.wpe  (T_max, C)    transformer.wpe.weight                       (n_positions, C)
//! embedding.wte  (Vp, C)       transformer.wte.weight  (untied; V rows)     (V, C)
//! chunk{c}.w     (Vp/k, C)     stacked: transformer.wte.weight (tied) or
//!                              lm_head.weight (untied); V rows              (V, C)
//! layer{i}.ln1_w, ln1_b        transformer.h.{i}.ln_1.weight, .bias         (C)
//! layer{i}.qkv_w (3C, C)       transformer.h.{i}.attn.c_attn.weight         (C, 3C)  transposed
//! layer{i}.qkv_b               transformer.h.{i}.attn.c_attn.bias           (3C)
//! layer{i}.attproj_w (C, C)    transformer.h.{i}.attn.c_proj.weight         (C, C)   transposed
//! layer{i}.attproj_b           transformer.h.{i}.attn.c_proj.bias           (C)
//! layer{i}.ln2_w, ln2_b        transformer.h.{i}.ln_2.weight, .bias         (C)
//! layer{i}.fc_w (4C, C)        transformer.h.{i}.mlp.c_fc.weight            (C, 4C)  transposed
//! layer{i}.fc_b                transformer.h.{i}.mlp.c_fc.bias              (4C)
//! layer{i}.fcproj_w (C, 4C)    transformer.h.{i}.mlp.c_proj.weight          (4C, C)  transposed
//! layer{i}.fcproj_b            transformer.h.{i}.mlp.c_proj.bias            (C)
//! final_norm.lnf_w, lnf_b      transformer.ln_f.weight, .bias               (C)
//! ```
//! offplan keeps matrices as `nn.Linear` does, (out, in) with y = x W^T + b (the PyTorch
//! reference, gpt_reference.py, reads them so); HF GPT-2's `Conv1D` keeps (in, out) with
//! y = x W + b, hence the transposes. Q, K, V are stacked the same way on both sides (the
//! first C outputs are Q, head after head). The padded vocabulary rows (V..Vp) are not in the
//! HF file: `vocab_size` is the tokenizer's V, so transformers' softmax runs over the same
//! logits as offplan's loss.

use super::CheckpointError;
use models::inventory::{Inventory, Owner, View};
use models::GptConfig;

/// A transformer layer's views: (offplan view, HF name after `transformer.h.{i}.`, transposed).
pub const LAYER_NAMES: [(&str, &str, bool); 12] = [
    ("ln1_w", "ln_1.weight", false),
    ("ln1_b", "ln_1.bias", false),
    ("qkv_w", "attn.c_attn.weight", true),
    ("qkv_b", "attn.c_attn.bias", false),
    ("attproj_w", "attn.c_proj.weight", true),
    ("attproj_b", "attn.c_proj.bias", false),
    ("ln2_w", "ln_2.weight", false),
    ("ln2_b", "ln_2.bias", false),
    ("fc_w", "mlp.c_fc.weight", true),
    ("fc_b", "mlp.c_fc.bias", false),
    ("fcproj_w", "mlp.c_proj.weight", true),
    ("fcproj_b", "mlp.c_proj.bias", false),
];
/// The final layer norm's views.
pub const FINAL_NORM_NAMES: [(&str, &str); 2] = [("lnf_w", "transformer.ln_f.weight"), ("lnf_b", "transformer.ln_f.bias")];
pub const WPE: &str = "transformer.wpe.weight";
pub const WTE: &str = "transformer.wte.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// How a Hugging Face tensor is laid out against its offplan views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One view, element for element.
    Same,
    /// One (out, in) view, stored (in, out).
    Transposed,
    /// A vocabulary table: the views' rows stacked (the output chunks in order, or the
    /// embedding's wte), `padded` rows in all, of which the HF file keeps the first V.
    Rows { padded: u64 },
}

/// One Hugging Face GPT-2 tensor and the offplan views it is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfTensor {
    pub name: String,
    /// Its shape in `model.safetensors`.
    pub shape: Vec<u64>,
    pub layout: Layout,
    /// The views, each in its owner's flat buffer (one, except for a stacked vocabulary table).
    pub pieces: Vec<(Owner, View)>,
}

impl HfTensor {
    /// Columns of a 2-D tensor (C for the tables), 1 for vectors.
    pub fn cols(&self) -> u64 {
        if self.shape.len() == 2 {
            self.shape[1]
        } else {
            1
        }
    }
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Every tensor of `cfg`'s Hugging Face GPT-2 checkpoint, in inventory order (embedding,
/// layers, final norm, output layer). Tied configs: 4 + 12 L tensors (148 for 12 layers);
/// untied: one more (`lm_head.weight`).
pub fn gpt2_tensors(cfg: &GptConfig, inv: &Inventory) -> Result<Vec<HfTensor>, CheckpointError> {
    let unmapped = |owner: Owner, v: &View| CheckpointError::Unmapped(format!("{owner}.{}", v.name));
    let (vocab, padded) = (cfg.vocab as u64, cfg.padded_vocab as u64);
    let mut out = Vec::new();
    let mut head = Vec::new();
    for owner in inv.owners() {
        for v in &inv.tensor(inv.params(owner).weights).views {
            let one = |name: String, shape: Vec<u64>, layout: Layout| HfTensor { name, shape, layout, pieces: vec![(owner, v.clone())] };
            match owner {
                Owner::Embedding if v.name == "wpe" => out.push(one(WPE.into(), v.shape.clone(), Layout::Same)),
                Owner::Embedding if v.name == "wte" && !cfg.tied_embeddings => {
                    out.push(one(WTE.into(), vec![vocab, v.shape[1]], Layout::Rows { padded }))
                }
                Owner::Layer(l) => {
                    let &(_, name, transposed) = LAYER_NAMES.iter().find(|(n, _, _)| *n == v.name).ok_or_else(|| unmapped(owner, v))?;
                    let name = format!("transformer.h.{l}.{name}");
                    if transposed {
                        out.push(one(name, vec![v.shape[1], v.shape[0]], Layout::Transposed));
                    } else {
                        out.push(one(name, v.shape.clone(), Layout::Same));
                    }
                }
                Owner::FinalNorm => {
                    let &(_, name) = FINAL_NORM_NAMES.iter().find(|(n, _)| *n == v.name).ok_or_else(|| unmapped(owner, v))?;
                    out.push(one(name.into(), v.shape.clone(), Layout::Same));
                }
                Owner::OutputChunk(_) if v.name == "w" => head.push((owner, v.clone())),
                _ => return Err(unmapped(owner, v)),
            }
        }
    }
    let rows: u64 = head.iter().map(|(_, v)| v.shape[0]).sum();
    if rows != padded || vocab > padded {
        return Err(CheckpointError::Unmapped(format!("the output chunks hold {rows} rows, the config {padded} (vocab {vocab})")));
    }
    let name = if cfg.tied_embeddings { WTE } else { LM_HEAD };
    out.push(HfTensor { name: name.into(), shape: vec![vocab, cfg.hidden as u64], layout: Layout::Rows { padded }, pieces: head });
    Ok(out)
}

/// `config.json` of a `transformers.GPT2Config` for `cfg` (and, under `offplan`, the config
/// itself). No dropout, as offplan trains; GELU with the tanh approximation (`gelu_new`);
/// bf16 weights (`torch_dtype`).
pub fn hf_config(cfg: &GptConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab,
        "n_positions": cfg.max_seq,
        "n_ctx": cfg.max_seq,
        "n_embd": cfg.hidden,
        "n_layer": cfg.layers,
        "n_head": cfg.heads,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "use_cache": true,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": cfg.tied_embeddings,
        "torch_dtype": "bfloat16",
        "offplan": cfg,
    })
}

/// `src` (rows x cols, row-major) transposed, in blocks that stay in cache.
pub(crate) fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(src.len(), rows * cols, "transpose: {} elements for {rows} x {cols}", src.len());
    let Some(&first) = src.first() else { return Vec::new() };
    let mut dst = vec![first; src.len()];
    const B: usize = 32;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for i in i0..(i0 + B).min(rows) {
                for j in j0..(j0 + B).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
    dst
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;

    pub(crate) fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"))).unwrap()
    }

    fn check_covers_every_view(cfg: &GptConfig, table: &[HfTensor]) {
        let inv = Inventory::build(cfg);
        let names: HashSet<_> = table.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), table.len(), "unique names");
        let mut seen = HashSet::new();
        for t in table {
            for (o, v) in &t.pieces {
                assert!(seen.insert((*o, v.name.clone())), "{o}.{} twice", v.name);
            }
            let view_elems: u64 = t.pieces.iter().map(|(_, v)| v.elems()).sum();
            match t.layout {
                Layout::Rows { padded } => assert_eq!(view_elems, padded * t.cols()),
                _ => assert_eq!(view_elems, t.elems(), "{}", t.name),
            }
        }
        let views: usize = inv.owners().iter().map(|o| inv.tensor(inv.params(*o).weights).views.len()).sum();
        assert_eq!(seen.len(), views, "every view in exactly one tensor");
        // The HF file holds every allocated parameter but the padded vocabulary rows.
        let hf: u64 = table.iter().map(HfTensor::elems).sum();
        let tables = if cfg.tied_embeddings { 1 } else { 2 };
        assert_eq!(hf + tables * (cfg.padded_vocab - cfg.vocab) as u64 * cfg.hidden as u64, inv.param_count());
        assert_eq!(hf, cfg.param_count());
    }

    #[test]
    fn gpt2_124m_has_gpt2_s_148_tensors_and_shapes() {
        let cfg = config("gpt2-124m");
        let t = gpt2_tensors(&cfg, &Inventory::build(&cfg)).unwrap();
        assert_eq!(t.len(), 148);
        check_covers_every_view(&cfg, &t);
        let shape = |n: &str| t.iter().find(|x| x.name == n).unwrap_or_else(|| panic!("{n}")).shape.clone();
        assert_eq!(shape("transformer.wte.weight"), vec![50257, 768]);
        assert_eq!(shape("transformer.wpe.weight"), vec![1024, 768]);
        assert_eq!(shape("transformer.h.0.ln_1.weight"), vec![768]);
        assert_eq!(shape("transformer.h.11.attn.c_attn.weight"), vec![768, 2304]);
        assert_eq!(shape("transformer.h.11.attn.c_attn.bias"), vec![2304]);
        assert_eq!(shape("transformer.h.3.attn.c_proj.weight"), vec![768, 768]);
        assert_eq!(shape("transformer.h.3.mlp.c_fc.weight"), vec![768, 3072]);
        assert_eq!(shape("transformer.h.3.mlp.c_proj.weight"), vec![3072, 768]);
        assert_eq!(shape("transformer.ln_f.bias"), vec![768]);
        assert!(!t.iter().any(|x| x.name == "lm_head.weight"), "tied: no lm_head");
        let wte = t.iter().find(|x| x.name == WTE).unwrap();
        assert_eq!(wte.pieces.len(), 1, "gpt2-124m has one output chunk");
        assert_eq!(wte.layout, Layout::Rows { padded: 50304 });
    }

    #[test]
    fn untied_gpt3_125m_adds_lm_head_from_its_four_chunks() {
        let cfg = config("gpt3-125m");
        let t = gpt2_tensors(&cfg, &Inventory::build(&cfg)).unwrap();
        assert_eq!(t.len(), 149);
        check_covers_every_view(&cfg, &t);
        let head = t.iter().find(|x| x.name == LM_HEAD).unwrap();
        assert_eq!(head.shape, vec![50257, 768]);
        assert_eq!(head.pieces.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..4).map(Owner::OutputChunk).collect::<Vec<_>>());
        let wte = t.iter().find(|x| x.name == WTE).unwrap();
        assert_eq!(wte.pieces[0].0, Owner::Embedding);
        assert_eq!(wte.shape, vec![50257, 768]);
        assert_eq!(t.iter().find(|x| x.name == WPE).unwrap().shape, vec![2048, 768]);
        // every shipped config maps
        for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs")).unwrap() {
            let cfg = GptConfig::load(&e.unwrap().path()).unwrap();
            let t = gpt2_tensors(&cfg, &Inventory::build(&cfg)).unwrap();
            assert_eq!(t.len() as u32, 4 + 12 * cfg.layers + u32::from(!cfg.tied_embeddings), "{}", cfg.name);
        }
    }

    #[test]
    fn config_json_has_what_transformers_needs() {
        let c = hf_config(&config("gpt2-124m"));
        assert_eq!(c["model_type"], "gpt2");
        assert_eq!(c["architectures"][0], "GPT2LMHeadModel");
        assert_eq!((c["n_embd"].as_u64(), c["n_layer"].as_u64(), c["n_head"].as_u64()), (Some(768), Some(12), Some(12)));
        assert_eq!((c["n_positions"].as_u64(), c["n_ctx"].as_u64(), c["vocab_size"].as_u64()), (Some(1024), Some(1024), Some(50257)));
        assert_eq!(c["activation_function"], "gelu_new");
        assert_eq!(c["tie_word_embeddings"], true);
        assert_eq!(c["torch_dtype"], "bfloat16");
        assert_eq!(c["layer_norm_epsilon"].as_f64(), Some(1e-5));
        assert_eq!(hf_config(&config("gpt3-125m"))["tie_word_embeddings"], false);
    }

    #[test]
    fn transpose_is_a_transpose() {
        let src: Vec<u32> = (0..35 * 70).collect();
        let t = transpose(&src, 35, 70);
        for i in 0..35 {
            for j in 0..70 {
                assert_eq!(t[j * 35 + i], src[i * 70 + j]);
            }
        }
        assert_eq!(transpose(&t, 70, 35), src);
        assert!(transpose::<u8>(&[], 0, 5).is_empty());
    }
}
