//! GPT-2 style initial weights from a seed: matrices normal(0, 0.02), the residual projections
//! (attproj_w, fcproj_w) normal(0, 0.02 / sqrt(2L)), biases 0, layer-norm weights 1. The
//! optimizer state starts as master = the bf16 weights exactly (as fp32), m = v = 0.
//!
//! Each element's value depends only on its owner's key and its index in the owner (a
//! counter-based generator, `executor/kernels/init.cu`), so the executor makes it on the GPU
//! wherever the schedule places the owner, in any pieces, and every schedule starts from the
//! same bits. [`init_owner`] is the same formula on the host (for tests and host-only tools;
//! its libm may differ from the GPU's in the last bit of a float before bf16 rounding).

use half::bf16;
use models::inventory::{Inventory, Owner, View};

/// SplitMix64: small, fast, and the same numbers everywhere (data shuffling, test inputs).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator's key of the `index`-th owner of `Inventory::owners()` under `seed`.
pub fn owner_key(seed: u64, index: usize) -> u64 {
    seed ^ 0xA076_1D64_78BD_642F_u64.wrapping_mul(index as u64 + 1)
}

/// The standard normal of element `counter` under `key`, as `init.cu` computes it.
pub fn normal_at(key: u64, counter: u64) -> f32 {
    let h = mix64(key.wrapping_add(counter.wrapping_add(1).wrapping_mul(GOLDEN)));
    let u1 = ((h >> 40) + 1) as f32 * (1.0 / 16_777_216.0);
    let u2 = (h & 0xFF_FFFF) as f32 * (1.0 / 16_777_216.0);
    (-2.0 * u1.ln()).sqrt() * (6.283_185_5_f32 * u2).cos()
}

/// How a view starts: `mean + std * z` (z standard normal; `std` 0: the constant `mean`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewInit {
    pub mean: f32,
    pub std: f32,
}

/// The initial values of a parameter view of a config with `layers` layers.
pub fn view_init(view: &View, layers: u32) -> ViewInit {
    let name = view.name.as_str();
    let (mean, std) = if name.starts_with("ln") && name.ends_with("_w") {
        (1.0, 0.0)
    } else if name.ends_with("_b") {
        (0.0, 0.0)
    } else if name == "attproj_w" || name == "fcproj_w" {
        (0.0, 0.02 / (2.0 * layers as f64).sqrt())
    } else {
        (0.0, 0.02)
    };
    ViewInit { mean, std: std as f32 }
}

/// Initial parameters of one owner: the bf16 weights and the fp32 optimizer state
/// `[master | m | v]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerInit {
    pub owner: Owner,
    pub weights: Vec<bf16>,
    pub optimizer: Vec<f32>,
}

/// Initial weights of every owner, in inventory order, from `seed` (made in parallel).
pub fn init_params(inv: &Inventory, layers: u32, seed: u64) -> Vec<OwnerInit> {
    use rayon::prelude::*;
    inv.owners().into_par_iter().enumerate().map(|(i, owner)| init_owner(inv, layers, seed, i, owner)).collect()
}

/// The initial weights of `owner`, the `index`-th of `Inventory::owners()`, on the host.
pub fn init_owner(inv: &Inventory, layers: u32, seed: u64, index: usize, owner: Owner) -> OwnerInit {
    let p = inv.params(owner);
    let views = &inv.tensor(p.weights).views;
    let n = p.params as usize;
    let key = owner_key(seed, index);
    let mut weights = vec![bf16::ZERO; n];
    for v in views {
        let init = view_init(v, layers);
        for (c, w) in (v.offset..v.offset + v.elems()).zip(&mut weights[v.offset as usize..(v.offset + v.elems()) as usize]) {
            let x = if init.std == 0.0 { init.mean } else { init.mean + init.std * normal_at(key, c) };
            *w = bf16::from_f32(x);
        }
    }
    let mut optimizer = vec![0.0f32; 3 * n];
    for (m, w) in optimizer[..n].iter_mut().zip(&weights) {
        *m = w.to_f32();
    }
    OwnerInit { owner, weights, optimizer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::GptConfig;

    #[test]
    fn gpt2_style_statistics_and_master_equals_weights() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        let cfg = GptConfig::load(&dir).unwrap();
        let inv = Inventory::build(&cfg);
        let ps = init_params(&inv, cfg.layers, 7);
        assert_eq!(ps.len(), inv.owners().len());
        let again = init_params(&inv, cfg.layers, 7);
        for (p, q) in ps.iter().zip(&again) {
            assert_eq!(p.weights, q.weights, "deterministic");
            let n = p.weights.len();
            assert!(p.optimizer[n..].iter().all(|&x| x == 0.0));
            for (m, w) in p.optimizer[..n].iter().zip(&p.weights) {
                assert_eq!(*m, w.to_f32());
            }
        }
        let l0 = ps.iter().find(|p| p.owner == Owner::Layer(0)).unwrap();
        let views = &inv.tensor(inv.params(Owner::Layer(0)).weights).views;
        let get = |name: &str| {
            let v = views.iter().find(|v| v.name == name).unwrap();
            l0.weights[v.offset as usize..(v.offset + v.elems()) as usize].iter().map(|x| x.to_f64()).collect::<Vec<_>>()
        };
        assert!(get("ln1_w").iter().all(|&x| x == 1.0));
        assert!(get("qkv_b").iter().all(|&x| x == 0.0));
        let std = |xs: Vec<f64>| (xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64).sqrt();
        let s = std(get("qkv_w"));
        assert!((s - 0.02).abs() < 0.002, "qkv_w std {s}");
        let s = std(get("fcproj_w"));
        let want = 0.02 / (2.0 * cfg.layers as f64).sqrt();
        assert!((s - want).abs() < 0.1 * want, "fcproj_w std {s} want {want}");
    }
}
