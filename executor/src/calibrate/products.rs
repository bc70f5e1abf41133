//! The cuBLASLt products of one training step ([`step_gemms`], in the layouts [`crate::ops`]
//! issues them), and their timing on random bf16 data.

use crate::kernels::{GemmLayout, MatType};
use models::program::WorkClass;
use models::{GptConfig, Program};
use serde::Serialize;

/// One cuBLASLt product of the step: its layout, what else it takes, and how many times one step
/// runs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GemmShape {
    pub name: String,
    pub layout: GemmLayout,
    /// A bf16 bias vector of m is added (cuBLASLt's epilogue).
    pub bias: bool,
    /// C is given (beta = 1): a residual (another buffer) or an accumulation into D.
    pub with_c: bool,
    /// C is D itself (accumulation).
    pub c_is_d: bool,
    pub per_step: u64,
}

impl GemmShape {
    /// The linear layer: out (rows, o) = inp (rows, i) W^T [+ bias] [+ residual].
    pub fn linear(name: &str, rows: u64, i: u64, o: u64, bias: bool, residual: bool, per_step: u64) -> GemmShape {
        GemmShape { name: name.into(), layout: GemmLayout::linear(rows, i, o), bias, with_c: residual, c_is_d: false, per_step }
    }

    /// The input gradient: dx (rows, i) [+]= dy (rows, o) W.
    pub fn dx(name: &str, rows: u64, i: u64, o: u64, out: MatType, accumulate: bool, per_step: u64) -> GemmShape {
        GemmShape {
            name: name.into(),
            layout: GemmLayout::dx(rows, i, o, out),
            bias: false,
            with_c: accumulate,
            c_is_d: accumulate,
            per_step,
        }
    }

    /// The weight gradient: dW (o, i) = dy^T (o, rows) x (rows, i).
    pub fn dw(name: &str, rows: u64, i: u64, o: u64, per_step: u64) -> GemmShape {
        GemmShape { name: name.into(), layout: GemmLayout::dw(rows, i, o), bias: false, with_c: false, c_is_d: false, per_step }
    }

    /// FLOPs of one call.
    pub fn flops(&self) -> f64 {
        self.layout.flops()
    }
}

/// Every distinct product of one training step of `cfg`, as the step issues them, with its count
/// per step. Their FLOPs sum to the step program's `Matmul` FLOPs, and they are the products
/// [`crate::ops`] issues (both tested).
pub fn step_gemms(cfg: &GptConfig) -> Vec<GemmShape> {
    let n = cfg.tokens();
    let c = cfg.hidden as u64;
    let l = cfg.layers as u64;
    let k = cfg.output_chunks as u64;
    let vc = cfg.padded_vocab as u64 / k;
    use MatType::*;
    let mut v = vec![
        GemmShape::linear("qkv", n, c, 3 * c, true, false, l),
        GemmShape::linear("attproj", n, c, c, true, true, l),
        GemmShape::linear("fc", n, c, 4 * c, true, false, l),
        GemmShape::linear("fcproj", n, 4 * c, c, true, true, l),
        // the forward of every chunk, and again in its backward when chunked (recompute)
        GemmShape::linear("out", n, c, vc, false, false, if k > 1 { 2 * k } else { k }),
        // the last chunk (first in backward) starts dlnf, the others add to it
        GemmShape::dx("out_dx", n, c, vc, F32, false, 1),
    ];
    if k > 1 {
        v.push(GemmShape::dx("out_dx_acc", n, c, vc, F32, true, k - 1));
    }
    v.extend([
        GemmShape::dw("out_dw", n, c, vc, k),
        GemmShape::dx("fcproj_dx", n, 4 * c, c, Bf16, false, l),
        GemmShape::dw("fcproj_dw", n, 4 * c, c, l),
        GemmShape::dx("fc_dx", n, c, 4 * c, Bf16, false, l),
        GemmShape::dw("fc_dw", n, c, 4 * c, l),
        GemmShape::dx("attproj_dx", n, c, c, Bf16, false, l),
        GemmShape::dw("attproj_dw", n, c, c, l),
        GemmShape::dx("qkv_dx", n, c, 3 * c, Bf16, false, l),
        GemmShape::dw("qkv_dw", n, c, 3 * c, l),
    ]);
    v
}

/// The step program's FLOPs of all `Matmul` ops (what the cost model divides by `matmul_flops`).
pub fn program_matmul_flops(program: &Program) -> f64 {
    program.ops.iter().filter(|o| o.work == WorkClass::Matmul).map(|o| o.flops.0).sum()
}

/// One product's median time per call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GemmRow {
    pub shape: GemmShape,
    /// On the GPU, with the stream held while the host issued the calls.
    pub seconds: f64,
    /// The host's time to issue one.
    #[serde(default)]
    pub issue_seconds: f64,
}

/// The host's time to issue one product of a step: the products' issue times weighted by how
/// often the step makes each.
pub fn product_issue(gemms: &[GemmRow]) -> f64 {
    let calls: f64 = gemms.iter().map(|g| g.shape.per_step as f64).sum();
    gemms.iter().map(|g| g.shape.per_step as f64 * g.issue_seconds).sum::<f64>() / calls.max(1.0)
}

impl GemmRow {
    pub fn flops_per_s(&self) -> f64 {
        self.shape.flops() / self.seconds
    }
}

#[cfg(feature = "cuda")]
pub(super) use gpu::measure;

#[cfg(feature = "cuda")]
mod gpu {
    use super::{GemmRow, GemmShape};
    use crate::calibrate::positive_median;
    use crate::calibrate::timing::{align256, Bench, Case, Source};
    use crate::gpu::DeviceBuffer;
    use crate::kernels::{Product, Region};
    use crate::ExecError;
    use models::config::DType;

    type R<T> = Result<T, ExecError>;

    /// The operands of `g` in `src` (A, then B, then C when it is not D, then the bias, each at
    /// a 256-byte boundary) and `d`.
    fn operands<'a>(g: &GemmShape, src: &'a DeviceBuffer, d: &'a DeviceBuffer) -> R<Product<&'a DeviceBuffer>> {
        let l = &g.layout;
        let bf16 = Region::whole(src, src.bytes(), DType::Bf16);
        let at = |offset: u64, elems: u64| bf16.slice(offset / 2, elems);
        let a = at(0, l.a_elems())?;
        let b_off = align256(2 * l.a_elems());
        let b = at(b_off, l.b_elems())?;
        let mut next = b_off + align256(2 * l.b_elems());
        let d_region = Region::whole(d, d.bytes(), l.out.dtype());
        let c = if g.c_is_d {
            Some(d_region)
        } else if g.with_c {
            let r = at(next, l.d_elems())?;
            next += align256(2 * l.d_elems());
            Some(r)
        } else {
            None
        };
        let bias = if g.bias { Some(at(next, l.m)?) } else { None };
        Ok(Product::new(*l, a, b, c, d_region, bias)?)
    }

    /// Bytes of `src` the operands of `g` take (without D).
    pub(crate) fn operand_bytes(g: &GemmShape) -> u64 {
        let l = &g.layout;
        let a = align256(2 * l.a_elems());
        let b = align256(2 * l.b_elems());
        let c = if g.with_c && !g.c_is_d { align256(2 * l.d_elems()) } else { 0 };
        let bias = if g.bias { align256(2 * l.m) } else { 0 };
        a + b + c + bias
    }

    /// Every product: calls per sample found one by one (D zeroed first: an accumulating product
    /// needs finite values in it; its output checked), then timed side by side over the rounds.
    pub fn measure(b: &Bench, src: &Source, gemms: Vec<GemmShape>) -> R<Vec<GemmRow>> {
        let (gpu, s) = (b.gpu, &b.gpu.compute);
        let d_bytes = gemms.iter().map(|g| g.layout.d_bytes()).max().unwrap_or(0);
        let dbuf = gpu.alloc(s, d_bytes)?;
        gpu.zero(s, &dbuf)?;
        let calls: Vec<Product<&DeviceBuffer>> = gemms.iter().map(|g| operands(g, &src.buf, &dbuf)).collect::<R<_>>()?;
        tracing::info!("timing {} products of one {} step ...", gemms.len(), b.program.config.name);
        let run = |p: &Product<&DeviceBuffer>| -> R<()> { Ok(b.lt.matmul(s, p, Ok, &b.workspace)?) };
        let mut iters = Vec::new();
        for (g, call) in gemms.iter().zip(&calls) {
            gpu.zero(s, &dbuf)?;
            iters.push(b.calibrate_iters(&g.name, &mut || run(call))?);
            gpu.synchronize()?;
            b.check_finite(&dbuf, g.layout.d_bytes(), g.layout.out, &g.name)?;
        }
        let mut cases: Vec<Case> = gemms
            .iter()
            .zip(&calls)
            .zip(&iters)
            .map(|((g, call), it)| (g.name.as_str(), *it, Box::new(move || run(call)) as Box<_>))
            .collect();
        let samples = b.side_by_side_gated(&mut cases, &mut || Ok(()))?;
        drop(cases);
        drop(calls);
        let rows = gemms
            .into_iter()
            .zip(&samples)
            .map(|(g, xs)| {
                let gpu: Vec<f64> = xs.iter().map(|x| x.gpu).collect();
                let host: Vec<f64> = xs.iter().map(|x| x.host).collect();
                Ok(GemmRow { seconds: positive_median(&gpu, &g.name)?, issue_seconds: positive_median(&host, &g.name)?, shape: g })
            })
            .collect();
        drop(dbuf);
        rows
    }
}

#[cfg(feature = "cuda")]
pub(super) use gpu::operand_bytes;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::AdamW;
    use crate::ops::{Call, StepLaunches};
    use std::path::Path;

    fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"))).unwrap()
    }

    /// The host's time per product of a step weights each shape by how often the step makes it,
    /// and the product count is what the program charges it for.
    #[test]
    fn product_issue_is_per_product_of_the_step() {
        let cfg = config("gpt2-124m");
        let rows: Vec<GemmRow> = step_gemms(&cfg)
            .into_iter()
            .enumerate()
            .map(|(i, shape)| GemmRow { seconds: 1e-4, issue_seconds: if i == 0 { 40e-6 } else { 10e-6 }, shape })
            .collect();
        let calls: u64 = rows.iter().map(|r| r.shape.per_step).sum();
        let want = (rows[0].shape.per_step as f64 * 40e-6 + (calls - rows[0].shape.per_step) as f64 * 10e-6) / calls as f64;
        assert!((product_issue(&rows) - want).abs() < 1e-15);
        let program = models::Program::build(&cfg);
        assert_eq!(calls, program.ops.iter().map(|o| u64::from(o.products)).sum::<u64>(), "every product of the step is timed");
    }

    #[test]
    fn step_gemms_count_the_program_matmul_flops() {
        for name in ["gpt2-tiny", "gpt2-124m", "gpt3-1.3b", "gpt3-6.7b"] {
            let base = config(name);
            for k in [1, 2, base.output_chunks] {
                let Ok(cfg) = base.with_shape(None, None, Some(k)) else {
                    continue;
                };
                let program = Program::build(&cfg);
                let ours: f64 = step_gemms(&cfg).iter().map(|g| g.per_step as f64 * g.flops()).sum();
                let theirs = program_matmul_flops(&program);
                assert!((ours - theirs).abs() <= 1e-9 * theirs, "{name} k {k}: {ours} vs {theirs}");
            }
        }
    }

    /// The products of every op of the step, by layout, bias, C and whether C is D, with their
    /// counts, are the list calibrate times.
    #[test]
    fn step_gemms_are_the_products_the_step_issues() {
        for name in ["gpt2-tiny", "gpt3-125m", "gpt3-1.3b"] {
            let base = config(name);
            for k in [1, 2, 4] {
                let cfg = base.with_shape(Some(2), Some(128), Some(k)).unwrap();
                let program = Program::build(&cfg);
                let launches = StepLaunches::new(&program).unwrap();
                let mut issued: Vec<(GemmLayout, bool, bool, bool, u64)> = Vec::new();
                for op in &program.ops {
                    for call in launches.op(op, 1, &AdamW::default()).unwrap() {
                        if let Call::Product(p) = call {
                            let key = (p.layout, p.bias.is_some(), p.c.is_some(), p.c == Some(p.d));
                            match issued.iter_mut().find(|x| (x.0, x.1, x.2, x.3) == key) {
                                Some(x) => x.4 += 1,
                                None => issued.push((key.0, key.1, key.2, key.3, 1)),
                            }
                        }
                    }
                }
                let mut ours: Vec<_> = step_gemms(&cfg).iter().map(|g| (g.layout, g.bias, g.with_c, g.c_is_d, g.per_step)).collect();
                let order = |x: &(GemmLayout, bool, bool, bool, u64)| format!("{:?}", x);
                issued.sort_by_key(order);
                ours.sort_by_key(order);
                assert_eq!(ours, issued, "{name} k {k}");
            }
        }
    }

    #[test]
    fn step_gemms_layouts_as_the_step_multiplies() {
        let cfg = config("gpt3-1.3b");
        let (n, c) = (cfg.tokens(), cfg.hidden as u64);
        let g = step_gemms(&cfg);
        let by = |name: &str| g.iter().find(|x| x.name == name).unwrap().clone();
        // linear: D (o x rows) = W^T(i x o -> o x i) x inp
        let fc = by("fc");
        let l = fc.layout;
        assert_eq!(
            (l.m, l.n, l.k, l.trans_a, l.trans_b, l.lda, l.ldb, l.ldd),
            (4 * c, n, c, true, false, c as i64, c as i64, 4 * c as i64)
        );
        assert!(fc.bias && !fc.with_c);
        assert_eq!(l.a_elems(), 4 * c * c);
        assert_eq!(l.b_elems(), n * c);
        assert_eq!(l.d_bytes(), 2 * n * 4 * c);
        let ap = by("attproj");
        assert!(ap.with_c && !ap.c_is_d);
        // dx into fp32 dlnf, accumulating for all but the first chunk
        let vc = (cfg.padded_vocab / cfg.output_chunks) as u64;
        let dx = by("out_dx");
        assert_eq!((dx.layout.m, dx.layout.n, dx.layout.k, dx.layout.out, dx.with_c, dx.per_step), (c, n, vc, MatType::F32, false, 1));
        let acc = by("out_dx_acc");
        assert!(acc.with_c && acc.c_is_d);
        assert_eq!(acc.per_step, cfg.output_chunks as u64 - 1);
        assert_eq!(dx.layout.a_elems(), vc * c);
        assert_eq!(dx.layout.b_elems(), n * vc);
        // dw: D (i x o) = x (i x rows) dy^T
        let dw = by("fc_dw").layout;
        assert_eq!(
            (dw.m, dw.n, dw.k, dw.trans_a, dw.trans_b, dw.lda, dw.ldb, dw.ldd),
            (c, 4 * c, n, false, true, c as i64, 4 * c as i64, c as i64)
        );
        assert_eq!(dw.a_elems(), c * n);
        assert_eq!(dw.b_elems(), 4 * c * n);
        // one chunk: no recompute and no accumulation
        let mut one = cfg.clone();
        one.output_chunks = 1;
        let g1 = step_gemms(&one);
        assert!(g1.iter().all(|x| x.name != "out_dx_acc"));
        assert_eq!(g1.iter().find(|x| x.name == "out").unwrap().per_step, 1);
    }
}
