//! Tests of the host ops against straightforward scalar references written here.

use super::bf16::{bf16, bf16_to_f32, f32_to_bf16};
use super::*;
use models::inventory::View;

/// Small deterministic generator (xorshift64*), uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next() + 1.0) * 0.5 * n as f32) as usize).min(n - 1)
    }
    fn bf16s(&mut self, n: usize, scale: f32) -> Vec<bf16> {
        (0..n).map(|_| f32_to_bf16(self.next() * scale)).collect()
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn bits(x: &[bf16]) -> Vec<u16> {
    x.iter().map(|v| v.to_bits()).collect()
}
fn fbits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn view(name: &str, shape: &[u64], offset: u64) -> View {
    View { name: name.into(), shape: shape.to_vec(), offset }
}

/// Views tiling a tensor in order, from (name, shape).
fn views(spec: &[(&str, &[u64])]) -> (Vec<View>, usize) {
    let mut off = 0;
    let v = spec
        .iter()
        .map(|(n, s)| {
            let v = view(n, s, off);
            off += v.elems();
            v
        })
        .collect();
    (v, off as usize)
}

// ---------------------------------------------------------------- AdamW

/// PyTorch's AdamW (torch.optim.AdamW, single tensor, no amsgrad), in f64:
/// p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2;
/// p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
fn torch_adamw(p: f64, g: f64, m: f64, v: f64, h: &AdamW, wd: f64, step: i32) -> (f64, f64, f64) {
    let (lr, b1, b2, eps) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64, h.eps as f64);
    let p = p * (1.0 - lr * wd);
    let m = m + (g - m) * (1.0 - b1);
    let v = b2 * v + (1.0 - b2) * g * g;
    let bc1 = 1.0 - b1.powi(step);
    let bc2 = 1.0 - b2.powi(step);
    let p = p - lr / bc1 * m / (v.sqrt() / bc2.sqrt() + eps);
    (p, m, v)
}

#[test]
fn one_adamw_step_by_hand() {
    // step 1 from m = v = 0: m = 0.1 g, v = 0.001 g^2, m_hat = g, sqrt(v_hat) = |g|, so
    // p = p (1 - lr wd) - lr g / (|g| + eps). With p = 1, g = 0.5, lr = 1e-3, wd = 0.1:
    // p = 0.9999 - 1e-3 * 0.5 / 0.50000001 = 0.9989 (to 2e-11).
    let h = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    let mut w = vec![bf16::ZERO; 1];
    let (mut master, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
    let g = vec![f32_to_bf16(0.5)];
    adamw_range(&mut w, &mut master, &mut m, &mut v, &g, &h, h.weight_decay, 1, 1.0).unwrap();
    assert!((master[0] as f64 - 0.9989).abs() < 1e-7, "{}", master[0]);
    // m and v carry the f32 betas (the kernel takes f32 too): 1 - 0.9f32 is 0.1 (1 + 2.4e-7),
    // 1 - 0.999f32 is 0.001 (1 - 1.3e-5); the bias correction cancels it in p.
    assert!((m[0] as f64 - 0.05).abs() < 1e-6 * 0.05, "{}", m[0]);
    assert!((v[0] as f64 - 0.00025).abs() < 2e-5 * 0.00025, "{}", v[0]);
    assert_eq!(w[0], f32_to_bf16(master[0]));
    assert_eq!(w[0].to_bits(), 0x3F80); // 0.9989 rounds to 1.0 in bf16 (ulp 2^-7 below 1: 0.99219, 1.0)

    // A few values over three steps against PyTorch's formula in f64 (with the f64 betas): p
    // agrees to 1e-6 relative; m and v to the f32 rounding of 1 - beta (see above; the kernel's
    // m update is b1 m + (1-b1) g where PyTorch's is a lerp).
    let gs = [[0.5f32, -0.25, 1e-3, 3.0], [0.4, -0.3, -2e-3, 2.5], [-0.1, 0.2, 0.0, 2.0]];
    let p0 = [1.0f32, -0.5, 0.125, 2.0];
    let mut master = p0.to_vec();
    let (mut m, mut v) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let mut w = vec![bf16::ZERO; 4];
    let mut r: Vec<(f64, f64, f64)> = p0.iter().map(|p| (*p as f64, 0.0, 0.0)).collect();
    for (s, g) in gs.iter().enumerate() {
        let step = s as u32 + 1;
        let gb: Vec<bf16> = g.iter().map(|x| f32_to_bf16(*x)).collect();
        adamw_range(&mut w, &mut master, &mut m, &mut v, &gb, &h, h.weight_decay, step, 1.0).unwrap();
        for i in 0..4 {
            let (p, mm, vv) = r[i];
            r[i] = torch_adamw(p, bf16_to_f32(gb[i]) as f64, mm, vv, &h, h.weight_decay as f64, step as i32);
            let rel = |a: f32, b: f64| (a as f64 - b).abs() / b.abs().max(1e-30);
            assert!(rel(master[i], r[i].0) < 1e-6, "step {step} p[{i}] {} vs {}", master[i], r[i].0);
            assert!(rel(m[i], r[i].1) < 1e-5, "step {step} m[{i}] {} vs {}", m[i], r[i].1);
            assert!(rel(v[i], r[i].2) < 3e-5, "step {step} v[{i}] {} vs {}", v[i], r[i].2);
            assert_eq!(w[i], f32_to_bf16(master[i]));
        }
    }
}

/// The kernel's f32 arithmetic, written out per element (the reference for bitwise checks).
#[allow(clippy::too_many_arguments)]
fn kernel_reference(w: &mut [bf16], opt: &mut [f32], g: &[bf16], vs: &[View], h: &AdamW, step: u32) {
    let n = w.len();
    let bc1 = 1.0f32 - h.beta1.powf(step as f32);
    let bc2 = 1.0f32 - h.beta2.powf(step as f32);
    let step_size = h.lr / bc1;
    let bc2_sqrt = bc2.sqrt();
    for vw in vs {
        let wd = if vw.shape.len() == 2 { h.weight_decay } else { 0.0 };
        let decay = 1.0f32 - h.lr * wd;
        for i in vw.offset as usize..(vw.offset + vw.elems()) as usize {
            let gi = bf16_to_f32(g[i]);
            let mut p = opt[i] * decay;
            let mi = h.beta1 * opt[n + i] + (1.0f32 - h.beta1) * gi;
            let vi = h.beta2 * opt[2 * n + i] + (1.0f32 - h.beta2) * gi * gi;
            p -= step_size * mi / (vi.sqrt() / bc2_sqrt + h.eps);
            opt[n + i] = mi;
            opt[2 * n + i] = vi;
            opt[i] = p;
            w[i] = bf16::from_f32(p); // half's own conversion, independent of ours
        }
    }
}

fn layer_like(c: u64) -> (Vec<View>, usize) {
    views(&[
        ("ln1_w", &[c]),
        ("ln1_b", &[c]),
        ("qkv_w", &[3 * c, c]),
        ("qkv_b", &[3 * c]),
        ("attproj_w", &[c, c]),
        ("attproj_b", &[c]),
        ("ln2_w", &[c]),
        ("ln2_b", &[c]),
        ("fc_w", &[4 * c, c]),
        ("fc_b", &[4 * c]),
        ("fcproj_w", &[c, 4 * c]),
        ("fcproj_b", &[c]),
    ])
}

fn random_state(n: usize, seed: u64) -> (Vec<bf16>, Vec<f32>, Vec<bf16>) {
    let mut rng = Rng(seed);
    let master: Vec<f32> = (0..n).map(|_| rng.next() * 0.1).collect();
    let m: Vec<f32> = (0..n).map(|_| rng.next() * 1e-3).collect();
    let v: Vec<f32> = (0..n).map(|_| (rng.next() * 1e-3).powi(2)).collect();
    let mut opt = master.clone();
    opt.extend(m);
    opt.extend(v);
    let w = master.iter().map(|x| f32_to_bf16(*x)).collect();
    let g = rng.bf16s(n, 0.02);
    (w, opt, g)
}

#[test]
fn adamw_owner_is_bitwise_the_kernel_math_for_any_thread_count() {
    // C = 88: 12 views of a layer, 93,104 elements: views straddle the 32 Ki-element tasks.
    let (vs, n) = layer_like(88);
    let h = AdamW { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let (w0, opt0, g) = random_state(n, 7);

    let (mut w_ref, mut opt_ref) = (w0.clone(), opt0.clone());
    for step in 1..=3 {
        kernel_reference(&mut w_ref, &mut opt_ref, &g, &vs, &h, step);
    }
    for threads in [1, 2, 3, 8] {
        let (mut w, mut opt) = (w0.clone(), opt0.clone());
        pool(threads).install(|| {
            for step in 1..=3 {
                adamw_owner(&mut w, &g, &mut opt, &vs, &h, step, 1.0).unwrap();
            }
        });
        assert_eq!(bits(&w), bits(&w_ref), "{threads} threads: weights");
        assert_eq!(fbits(&opt), fbits(&opt_ref), "{threads} threads: master | m | v");
    }
}

#[test]
fn weight_decay_only_on_2d_views() {
    // grads, m and v zero: the Adam term is 0 / (0 + eps) = 0, so only the decay moves p.
    let (vs, n) = views(&[("w", &[3, 4]), ("b", &[4]), ("w2", &[2, 2]), ("ln", &[5])]);
    assert_eq!(view_weight_decay(&vs[0], 0.5), 0.5);
    assert_eq!(view_weight_decay(&vs[1], 0.5), 0.0);
    let h = AdamW { lr: 0.01, weight_decay: 0.5, ..AdamW::default() };
    let mut opt = vec![0.0f32; 3 * n];
    opt[..n].fill(2.0);
    let mut w = vec![f32_to_bf16(2.0); n];
    let g = vec![bf16::ZERO; n];
    adamw_owner(&mut w, &g, &mut opt, &vs, &h, 1, 1.0).unwrap();
    let decayed = 2.0f32 * (1.0 - 0.01 * 0.5);
    for vw in &vs {
        let want = if vw.shape.len() == 2 { decayed } else { 2.0 };
        for i in vw.offset as usize..(vw.offset + vw.elems()) as usize {
            assert_eq!(opt[i], want, "{} element {i}", vw.name);
            assert_eq!(w[i], f32_to_bf16(want));
        }
    }
    assert!(opt[n..].iter().all(|x| *x == 0.0));
}

#[test]
fn adamw_rejects_bad_arguments() {
    let (vs, n) = views(&[("w", &[2, 2]), ("b", &[2])]);
    let h = AdamW::default();
    let (mut w, mut opt, g) = random_state(n, 1);
    assert!(matches!(adamw_owner(&mut w, &g, &mut opt, &vs, &h, 0, 1.0), Err(HostError::Invalid { .. })));
    assert!(matches!(adamw_owner(&mut w, &g[..n - 1], &mut opt, &vs, &h, 1, 1.0), Err(HostError::Length { .. })));
    assert!(matches!(adamw_owner(&mut w, &g, &mut opt[..2 * n], &vs, &h, 1, 1.0), Err(HostError::Length { .. })));
    let gap = vec![view("w", &[2, 2], 0), view("b", &[2], 5)];
    assert!(matches!(adamw_owner(&mut w, &g, &mut opt, &gap, &h, 1, 1.0), Err(HostError::Invalid { .. })));
    assert!(matches!(adamw_owner(&mut w, &g, &mut opt, &vs[..1], &h, 1, 1.0), Err(HostError::Invalid { .. })));
}

#[test]
fn adamw_matches_the_inventory_layout() {
    // The views of a real owner (gpt2-tiny-like layer and untied embedding) tile its tensor.
    use models::{Attention, GptConfig, Inventory, Owner, Precision};
    let cfg = GptConfig {
        name: "t".into(),
        layers: 1,
        hidden: 32,
        heads: 2,
        vocab: 100,
        padded_vocab: 128,
        max_seq: 16,
        batch: 1,
        seq: 16,
        tied_embeddings: false,
        attention: Attention::Fused,
        precision: Precision::default(),
        output_chunks: 1,
    };
    let inv = Inventory::build(&cfg);
    for owner in inv.owners() {
        let p = inv.params(owner);
        let n = p.params as usize;
        let vs = &inv.tensor(p.weights).views;
        let (mut w, mut opt, g) = random_state(n, 3);
        let (mut w_ref, mut opt_ref) = (w.clone(), opt.clone());
        adamw_owner(&mut w, &g, &mut opt, vs, &AdamW::default(), 5, 1.0).unwrap();
        kernel_reference(&mut w_ref, &mut opt_ref, &g, vs, &AdamW::default(), 5);
        assert_eq!(bits(&w), bits(&w_ref), "{owner}");
        assert_eq!(fbits(&opt), fbits(&opt_ref), "{owner}");
        if owner == Owner::Embedding {
            assert!(vs.iter().all(|v| v.shape.len() == 2));
        }
    }
}

#[test]
fn adamw_with_a_clip_scale() {
    // C = 88 (views straddle the tasks), three steps.
    let (vs, n) = layer_like(88);
    let h = AdamW::default();
    let (w0, opt0, g) = random_state(n, 21);
    // Scale 1.0 is bitwise the unscaled arithmetic (kernel_reference, which has no scale).
    let (mut w_ref, mut opt_ref) = (w0.clone(), opt0.clone());
    let (mut w, mut opt) = (w0.clone(), opt0.clone());
    for step in 1..=3 {
        kernel_reference(&mut w_ref, &mut opt_ref, &g, &vs, &h, step);
        adamw_owner(&mut w, &g, &mut opt, &vs, &h, step, 1.0).unwrap();
    }
    assert_eq!(bits(&w), bits(&w_ref), "scale 1: weights");
    assert_eq!(fbits(&opt), fbits(&opt_ref), "scale 1: master | m | v");

    // Scale 0.5 on g equals scale 1.0 on g/2, which bf16 holds exactly (every value here is
    // normal; halving only lowers the exponent).
    let half: Vec<bf16> = g.iter().map(|x| f32_to_bf16(bf16_to_f32(*x) * 0.5)).collect();
    assert!(g.iter().zip(&half).all(|(a, b)| bf16_to_f32(*a) * 0.5 == bf16_to_f32(*b)), "halving is exact");
    assert!(g.iter().any(|x| bf16_to_f32(*x) != 0.0));
    for threads in [1, 3, 8] {
        let (mut wa, mut opta) = (w0.clone(), opt0.clone());
        let (mut wb, mut optb) = (w0.clone(), opt0.clone());
        pool(threads).install(|| {
            for step in 1..=3 {
                adamw_owner(&mut wa, &g, &mut opta, &vs, &h, step, 0.5).unwrap();
                adamw_owner(&mut wb, &half, &mut optb, &vs, &h, step, 1.0).unwrap();
            }
        });
        assert_eq!(bits(&wa), bits(&wb), "{threads} threads: weights");
        assert_eq!(fbits(&opta), fbits(&optb), "{threads} threads: master | m | v");
        // and the scale did something
        assert_ne!(fbits(&opta), fbits(&opt_ref));
    }
    // adamw_range the same, one view
    let k = 1000;
    let (mut wa, mut wb) = (w0[..k].to_vec(), w0[..k].to_vec());
    let (mut ma, mut mb) = (opt0[..k].to_vec(), opt0[..k].to_vec());
    let (mut m1, mut m2) = (opt0[n..n + k].to_vec(), opt0[n..n + k].to_vec());
    let (mut v1, mut v2) = (opt0[2 * n..2 * n + k].to_vec(), opt0[2 * n..2 * n + k].to_vec());
    adamw_range(&mut wa, &mut ma, &mut m1, &mut v1, &g[..k], &h, h.weight_decay, 2, 0.5).unwrap();
    adamw_range(&mut wb, &mut mb, &mut m2, &mut v2, &half[..k], &h, h.weight_decay, 2, 1.0).unwrap();
    assert_eq!((bits(&wa), fbits(&ma), fbits(&m1), fbits(&v1)), (bits(&wb), fbits(&mb), fbits(&m2), fbits(&v2)));
}

// ---------------------------------------------------------------- clipping by the global norm

/// grad_norm.cu's order written out plainly: block b over [b*per, min(n, (b+1)*per)), thread t
/// summing elements start+t, start+t+256, ... in order, then the halving tree.
fn partials_reference(g: &[bf16]) -> Vec<f32> {
    let n = g.len();
    let per = n.div_ceil(256);
    (0..256)
        .map(|b| {
            let (start, end) = (b * per, ((b + 1) * per).min(n));
            let mut s: Vec<f32> = (0..256)
                .map(|t| {
                    let mut acc = 0.0f32;
                    let mut i = start + t;
                    while i < end {
                        let x = bf16_to_f32(g[i]);
                        acc += x * x;
                        i += 256;
                    }
                    acc
                })
                .collect();
            while s.len() > 1 {
                let stride = s.len() / 2;
                s = (0..stride).map(|t| s[t] + s[t + stride]).collect();
            }
            s[0]
        })
        .collect()
}

/// The kernel's checksums written out: per block, the wrapping sum of (bits + 1) times the
/// index's multiplier.
fn checksums_reference(g: &[bf16]) -> Vec<u32> {
    let n = g.len();
    let per = n.div_ceil(256);
    (0..256)
        .map(|b| {
            let (lo, hi) = ((b * per).min(n), ((b + 1) * per).min(n));
            g[lo..hi].iter().zip(lo..).fold(0u32, |sum, (v, i)| {
                let multiplier = (i as u32).wrapping_mul(2654435761).wrapping_add(0x9E37_79B9);
                sum.wrapping_add((v.to_bits() as u32 + 1).wrapping_mul(multiplier))
            })
        })
        .collect()
}

/// bf16 values of many magnitudes (2^-20 .. 2^10), both signs, some zeros.
fn spread_bf16s(rng: &mut Rng, n: usize) -> Vec<bf16> {
    (0..n).map(|i| if i % 97 == 0 { bf16::ZERO } else { f32_to_bf16(rng.next() * 2.0f32.powi(rng.below(31) as i32 - 20)) }).collect()
}

#[test]
fn grad_norm_partials_are_the_kernels_order() {
    let mut rng = Rng(0x5eed);
    for n in [0usize, 1, 255, 256, 257, 65536 + 3, 1_000_003] {
        let g = spread_bf16s(&mut rng, n);
        let want = partials_reference(&g);
        let want_checks = checksums_reference(&g);
        for threads in [1, 3, 8] {
            let mut got = vec![f32::NAN; 512];
            pool(threads).install(|| grad_norm_partials(&g, &mut got)).unwrap();
            assert_eq!(fbits(&got[..256]), fbits(&want), "n = {n}, {threads} threads");
            assert_eq!(fbits(&got[256..]), want_checks, "n = {n}, {threads} threads: checksums");
        }
        // one changed low bit changes the step's checksum, even where the norm cannot see it
        if n > 0 {
            let mut parts = vec![0.0f32; 512];
            grad_norm_partials(&g, &mut parts).unwrap();
            let mut h = g.clone();
            h[n / 2] = bf16::from_bits(h[n / 2].to_bits() ^ 1);
            let mut other = vec![0.0f32; 512];
            grad_norm_partials(&h, &mut other).unwrap();
            assert_ne!(grad_checksum([parts.as_slice()]), grad_checksum([other.as_slice()]), "n = {n}");
        }
        // blocks past the end are exactly +0.0
        let per = n.div_ceil(256);
        for (b, p) in want.iter().enumerate() {
            if b * per >= n {
                assert_eq!(p.to_bits(), 0, "n = {n}: block {b} is empty");
            }
        }
        // the norm, against an f64 sum of squares
        let exact: f64 = g.iter().map(|x| (bf16_to_f32(*x) as f64).powi(2)).sum::<f64>().sqrt();
        let norm = global_norm([want.as_slice()]);
        if exact == 0.0 {
            assert_eq!(norm, 0.0, "n = {n}");
        } else {
            assert!((norm - exact).abs() <= 1e-6 * exact, "n = {n}: {norm} vs {exact}");
        }
    }
    // by hand: ones over 65539 elements: per = 257, blocks 0..255 hold 257 each, the last 4
    let ones = vec![f32_to_bf16(1.0); 65539];
    let mut got = vec![0.0f32; 512];
    grad_norm_partials(&ones, &mut got).unwrap();
    assert!(got[..255].iter().all(|p| *p == 257.0) && got[255] == 4.0, "{got:?}");
    assert_eq!(global_norm([got.as_slice()]), 65539f64.sqrt());
}

#[test]
fn grad_norm_partials_rejects_a_wrong_partials_length() {
    let g = vec![f32_to_bf16(1.0); 10];
    for len in [0, 256, 511, 513] {
        let mut p = vec![0.0f32; len];
        assert!(matches!(grad_norm_partials(&g, &mut p), Err(HostError::Length { expected: 512, .. })), "{len}");
    }
}

#[test]
fn global_norm_sums_every_owner_in_order() {
    let mut rng = Rng(3);
    let owners: Vec<Vec<f32>> = (0..5).map(|_| (0..256).map(|_| rng.next().abs() * 1e3).collect()).collect();
    let mut total = 0.0f64;
    for o in &owners {
        for p in o {
            total += *p as f64;
        }
    }
    let norm = global_norm(owners.iter().map(|o| o.as_slice()));
    assert_eq!(norm.to_bits(), total.sqrt().to_bits());
    assert_eq!(global_norm(std::iter::empty::<&[f32]>()), 0.0);
    // the gradients of several owners: the norm of all of them together
    let gs: Vec<Vec<bf16>> = [1000usize, 1, 70_000].iter().map(|n| spread_bf16s(&mut rng, *n)).collect();
    let parts: Vec<Vec<f32>> = gs
        .iter()
        .map(|g| {
            let mut p = vec![0.0f32; 512];
            grad_norm_partials(g, &mut p).unwrap();
            p
        })
        .collect();
    let exact: f64 = gs.iter().flatten().map(|x| (bf16_to_f32(*x) as f64).powi(2)).sum::<f64>().sqrt();
    let norm = global_norm(parts.iter().map(|p| p.as_slice()));
    assert!((norm - exact).abs() <= 1e-6 * exact, "{norm} vs {exact}");
}

#[test]
fn clip_scale_is_pytorchs_coefficient() {
    // within the limit (and at 0): exactly 1, so the update is the unclipped one
    assert_eq!(clip_scale(0.5, 1.0), 1.0);
    assert_eq!(clip_scale(0.0, 1.0), 1.0);
    assert_eq!(clip_scale(1.0 - 2e-6, 1.0), 1.0);
    // above it: max_norm / (norm + 1e-6), in f64, rounded once to f32
    assert_eq!(clip_scale(4.0, 1.0), (1.0f64 / (4.0 + 1e-6)) as f32);
    assert_eq!(clip_scale(12.5, 0.5), (0.5f64 / (12.5 + 1e-6)) as f32);
    assert!(clip_scale(4.0, 1.0) < 0.25);
    // at the limit: just below 1 (PyTorch clamps only ratios of 1 or more)
    let at = clip_scale(1.0, 1.0);
    assert!(at < 1.0 && at > 0.9999, "{at}");
    // a non-finite norm: NaN, for the caller to see
    assert!(clip_scale(f64::INFINITY, 1.0).is_nan());
    assert!(clip_scale(f64::NAN, 1.0).is_nan());
}

// ---------------------------------------------------------------- embedding

/// encoder.cu's embedding_forward as a plain loop (the kernel's arguments, one for one).
#[allow(clippy::too_many_arguments)]
fn forward_reference(out: &mut [bf16], tokens: &[i32], wte: &[bf16], v_begin: i32, v_count: usize, wpe: &[bf16], t: usize, c: usize) {
    for (n, &tok) in tokens.iter().enumerate() {
        let r = tok - v_begin;
        if r < 0 || r as usize >= v_count {
            continue;
        }
        for j in 0..c {
            let s = bf16_to_f32(wte[r as usize * c + j]) + bf16_to_f32(wpe[(n % t) * c + j]);
            out[n * c + j] = bf16::from_f32(s);
        }
    }
}

/// embedding_backward_wte as the plainest loop: for each row in range, for each position in
/// increasing order; f64 check of the sum separately.
fn wte_reference(dwte: &mut [bf16], dout: &[bf16], tokens: &[i32], v_begin: i32, v_count: usize, c: usize) {
    for row in 0..v_count {
        let tok = v_begin + row as i32;
        if !tokens.contains(&tok) {
            continue;
        }
        for j in 0..c {
            let mut s = 0.0f32;
            for (n, &tk) in tokens.iter().enumerate() {
                if tk == tok {
                    s += bf16_to_f32(dout[n * c + j]);
                }
            }
            dwte[row * c + j] = bf16::from_f32(bf16_to_f32(dwte[row * c + j]) + s);
        }
    }
}

fn wpe_reference(dwpe: &mut [bf16], dout: &[bf16], b: usize, t: usize, c: usize, max_seq: usize) {
    for p in 0..max_seq {
        for j in 0..c {
            let mut s = 0.0f32;
            if p < t {
                for bi in 0..b {
                    s += bf16_to_f32(dout[(bi * t + p) * c + j]);
                }
            }
            dwpe[p * c + j] = bf16::from_f32(s);
        }
    }
}

#[test]
fn embedding_forward_matches_the_loop_untied_and_in_tied_pieces() {
    let (b, t, c, v, max_seq) = (3, 20, 40, 64, 24);
    let n = b * t;
    let mut rng = Rng(11);
    let tokens: Vec<i32> = (0..n).map(|i| if i % 5 == 0 { 7 } else { rng.below(v) as i32 }).collect();
    let wte = rng.bf16s(v * c, 1.0);
    let wpe = rng.bf16s(max_seq * c, 0.1);

    let mut want = vec![f32_to_bf16(-9.0); n * c];
    forward_reference(&mut want, &tokens, &wte, 0, v, &wpe, t, c);
    for threads in [1, 2, 5] {
        let mut out = vec![f32_to_bf16(-9.0); n * c];
        pool(threads).install(|| embedding_forward(&mut out, &tokens, &wte, 0, v, &wpe, t, c)).unwrap();
        assert_eq!(bits(&out), bits(&want), "{threads} threads");
    }
    // tied: the table comes as k chunks, one call each; together they write every row once
    let k = 4;
    let vc = v / k;
    let mut out = vec![f32_to_bf16(-9.0); n * c];
    for i in (0..k).rev() {
        let piece = &wte[i * vc * c..(i + 1) * vc * c];
        embedding_forward(&mut out, &tokens, piece, (i * vc) as i32, vc, &wpe, t, c).unwrap();
    }
    assert_eq!(bits(&out), bits(&want));
    // a piece leaves the other rows untouched
    let mut out = vec![f32_to_bf16(-9.0); n * c];
    embedding_forward(&mut out, &tokens, &wte[..vc * c], 0, vc, &wpe, t, c).unwrap();
    for (pos, tok) in tokens.iter().enumerate() {
        let row = &out[pos * c..(pos + 1) * c];
        if (*tok as usize) < vc {
            assert_eq!(bits(row), bits(&want[pos * c..(pos + 1) * c]));
        } else {
            assert!(row.iter().all(|x| *x == f32_to_bf16(-9.0)));
        }
    }
}

#[test]
fn embedding_backward_matches_the_loops_with_repeated_tokens() {
    let (b, t, c, v, max_seq) = (4, 33, 600, 50, 40); // C > the 512-channel tile
    let n = b * t;
    let mut rng = Rng(5);
    // heavy repeats: token 3 at every third position, a handful of others, some never used
    let tokens: Vec<i32> = (0..n).map(|i| if i % 3 == 0 { 3 } else { rng.below(12) as i32 * 4 }).collect();
    let dout = rng.bf16s(n * c, 0.5);
    let dwte0 = rng.bf16s(v * c, 0.25); // the output layer's gradient already there (tied)

    let mut want = dwte0.clone();
    wte_reference(&mut want, &dout, &tokens, 0, v, c);
    let mut want_wpe = vec![bf16::ZERO; max_seq * c];
    wpe_reference(&mut want_wpe, &dout, b, t, c, max_seq);

    let mut scratch = WteScratch::default();
    for threads in [1, 2, 7] {
        for _repeat in 0..2 {
            let mut dwte = dwte0.clone();
            let mut dwpe = vec![f32_to_bf16(1.0); max_seq * c];
            pool(threads).install(|| {
                embedding_backward_wte(&mut dwte, &dout, &tokens, 0, v, c, &mut scratch).unwrap();
                embedding_backward_wpe(&mut dwpe, &dout, b, t, c, max_seq).unwrap();
            });
            assert_eq!(bits(&dwte), bits(&want), "{threads} threads: dwte");
            assert_eq!(bits(&dwpe), bits(&want_wpe), "{threads} threads: dwpe");
        }
    }
    // the sums themselves are right (f64, bf16 tolerance), and unused rows are untouched
    let mut dwte = dwte0.clone();
    embedding_backward_wte(&mut dwte, &dout, &tokens, 0, v, c, &mut scratch).unwrap();
    for row in 0..v {
        for j in 0..c {
            let s: f64 = (0..n).filter(|p| tokens[*p] == row as i32).map(|p| bf16_to_f32(dout[p * c + j]) as f64).sum();
            let got = bf16_to_f32(dwte[row * c + j]) as f64;
            let old = bf16_to_f32(dwte0[row * c + j]) as f64;
            if s == 0.0 && !tokens.contains(&(row as i32)) {
                assert_eq!(got, old);
            } else {
                assert!((got - (old + s)).abs() <= 1e-2 * (old + s).abs().max(1.0), "row {row} ch {j}: {got} vs {}", old + s);
            }
        }
    }
    // tied pieces: one call per chunk equals the whole table at once
    let k = 5;
    let vc = v / k;
    let mut pieces = dwte0.clone();
    for i in 0..k {
        let piece = &mut pieces[i * vc * c..(i + 1) * vc * c];
        embedding_backward_wte(piece, &dout, &tokens, (i * vc) as i32, vc, c, &mut scratch).unwrap();
    }
    assert_eq!(bits(&pieces), bits(&want));
}

#[test]
fn embedding_backward_is_deterministic_at_scale() {
    // many positions (the parallel sort and the recursive split both engage), few tokens
    let (n, c, v) = (20_000, 16, 300);
    let mut rng = Rng(9);
    let tokens: Vec<i32> = (0..n).map(|_| (rng.below(v) * rng.below(v) / v) as i32).collect();
    let dout = rng.bf16s(n * c, 1.0);
    let mut want = vec![bf16::ZERO; v * c];
    wte_reference(&mut want, &dout, &tokens, 0, v, c);
    let mut scratch = WteScratch::with_capacity(n);
    for threads in [1, 4] {
        let mut dwte = vec![bf16::ZERO; v * c];
        pool(threads).install(|| embedding_backward_wte(&mut dwte, &dout, &tokens, 0, v, c, &mut scratch)).unwrap();
        assert_eq!(bits(&dwte), bits(&want), "{threads} threads");
    }
}

#[test]
fn embedding_rejects_bad_shapes() {
    let wte = vec![bf16::ZERO; 8 * 4];
    let wpe = vec![bf16::ZERO; 4 * 4];
    let tokens = vec![0, 1, 2, 3, 4, 5];
    let mut out = vec![bf16::ZERO; 6 * 4];
    // N = 6 is not a multiple of T = 4
    assert!(embedding_forward(&mut out, &tokens, &wte, 0, 8, &wpe, 4, 4).is_err());
    assert!(embedding_forward(&mut out, &tokens, &wte, 0, 8, &wpe, 3, 4).is_ok());
    assert!(embedding_forward(&mut out[..20], &tokens, &wte, 0, 8, &wpe, 3, 4).is_err());
    let mut dwpe = vec![bf16::ZERO; 2 * 4];
    // T = 3 > max_seq = 2
    assert!(embedding_backward_wpe(&mut dwpe, &out, 2, 3, 4, 2).is_err());
}

#[test]
fn two_disjoint_ranges_come_out_in_the_order_asked() {
    let mut g: Vec<u32> = (0..10).collect();
    let (a, b) = two_ranges(&mut g, 6..9, 1..3).unwrap();
    assert_eq!((a.to_vec(), b.to_vec()), (vec![6, 7, 8], vec![1, 2]));
    let (a, b) = two_ranges(&mut g, 0..2, 2..10).unwrap();
    assert_eq!((a.len(), b.len()), (2, 8));
    assert!(two_ranges(&mut g, 0..5, 4..6).is_none(), "overlapping");
    assert!(two_ranges(&mut g, 0..2, 8..11).is_none(), "outside");
    let views = [View { name: "wpe".into(), shape: vec![2, 3], offset: 12 }];
    assert_eq!(view_range(&views, "wpe"), Some(12..18));
    assert_eq!(view_range(&views, "wte"), None);
}
