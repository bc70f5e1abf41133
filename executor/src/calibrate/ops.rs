//! Every GPU op of layer 0 (and the final layer norm's), launched as the step launches it, each
//! timed alone with the stream held: what a kernel costs the GPU beyond its bytes and FLOPs at
//! the calibrated rates, at the step's size and at a small one.

use models::program::{Op, WorkClass};
use serde::Serialize;

/// One op's calls, timed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpKernel {
    /// The op's family (`Ln1`, `QkvBwd`, ...).
    pub kind: String,
    pub work: WorkClass,
    pub flops: f64,
    pub bytes: u64,
    pub launches: u32,
    pub products: u32,
    /// Median seconds of one call of the op's launches.
    pub seconds: f64,
}

impl OpKernel {
    pub fn of(op: &Op, seconds: f64) -> OpKernel {
        OpKernel {
            kind: op.kind.family().to_string(),
            work: op.work,
            flops: op.flops.0,
            bytes: op.bytes.0,
            launches: op.launches,
            products: op.products,
            seconds,
        }
    }

    /// Its roofline time at the rates given (FLOP/s of products and of attention, bytes/s).
    pub fn roofline(&self, matmul: f64, attention: f64, bandwidth: f64) -> f64 {
        let arithmetic = match self.work {
            WorkClass::Matmul => self.flops / matmul,
            WorkClass::Attention => self.flops / attention,
            WorkClass::Memory => 0.0,
        };
        arithmetic.max(self.bytes as f64 / bandwidth)
    }

    /// Seconds per launch beyond the roofline.
    pub fn beyond_per_launch(&self, matmul: f64, attention: f64, bandwidth: f64) -> f64 {
        (self.seconds - self.roofline(matmul, attention, bandwidth)) / self.launches.max(1) as f64
    }
}

/// The ops' calls in step order against the sum of each op alone: (the sum alone, the time
/// in order beyond it per launch, which may come out negative where the spread hides it).
pub fn in_order_beyond_alone(alone: &[OpKernel], in_order: f64) -> (f64, f64) {
    let launches: u32 = alone.iter().map(|k| k.launches).sum();
    let sum: f64 = alone.iter().map(|k| k.seconds).sum();
    (sum, if launches == 0 { 0.0 } else { (in_order - sum) / launches as f64 })
}

/// What a kernel costs beyond itself when it follows a different kernel, as a step runs them:
/// [`in_order_beyond_alone`] per launch, at least 0.
pub fn sequence_overhead(alone: &[OpKernel], in_order: f64) -> f64 {
    in_order_beyond_alone(alone, in_order).1.max(0.0)
}

/// The host's issuing of layer 0's ops in step order (each launch after a different one, as a
/// step issues them), with the GPU held: seconds per sequence, and its kernel launches and
/// products. A kernel launched after itself issues faster (the step's launches ran 1.1-1.4x
/// the back-to-back cost on the H200, device run 31).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InOrderIssue {
    pub seconds: f64,
    pub kernels: u32,
    pub products: u32,
}

impl InOrderIssue {
    /// The sequence's issue time over what the back-to-back costs (seconds per kernel launch and
    /// per product) make of it: the factor the step's issuing runs at beyond them.
    pub fn factor(&self, kernel: f64, product: f64) -> Option<f64> {
        let back_to_back = self.kernels as f64 * kernel + self.products as f64 * product;
        let f = self.seconds / back_to_back;
        (back_to_back > 0.0 && f.is_finite() && f > 0.0).then_some(f)
    }
}

#[cfg(feature = "cuda")]
pub(super) use gpu::{every_op, in_order_issue};

#[cfg(feature = "cuda")]
mod gpu {
    use super::{InOrderIssue, OpKernel};
    use crate::calibrate::timing::{Bench, Source, Tensors, R};
    use crate::calibrate::{bad, positive_median, step_tokens};
    use crate::ops::Call;
    use models::program::{Op, OpKind};
    use models::TensorId;

    /// Layer 0's ops (its gradient norm in a clipped program), the final layer norm, the
    /// embedding and the loss with their backwards (the output layer's products are the
    /// products' probe).
    fn timed_here(kind: OpKind) -> bool {
        kind.layer() == Some(0) || matches!(kind, OpKind::LnF | OpKind::LnFBwd | OpKind::Embed | OpKind::EmbedBwd | OpKind::Loss)
    }

    type Calls<'b> = Vec<(&'b str, Vec<Call<TensorId>>)>;

    /// Those ops, their tensors (filled as a step's: the corpus's tokens, random data) and each
    /// op's calls as the step makes them.
    fn layer_zero<'b>(b: &'b Bench, src: &Source) -> R<(Vec<&'b Op>, Tensors<'b>, Calls<'b>)> {
        let program = b.program;
        let ops: Vec<_> = program.ops.iter().filter(|o| timed_here(o.kind)).collect();
        // The calls name the products' workspace too.
        let mut ids: Vec<_> = ops.iter().flat_map(|o| o.touches()).chain([program.inventory.io.workspace]).collect();
        ids.sort();
        ids.dedup();
        let t = b.tensors(&ids)?;
        let io = &program.inventory.io;
        for id in &ids {
            let buf = t.get(*id)?;
            if *id == io.tokens || *id == io.targets {
                // The targets are the inputs one token on, as in a batch.
                let offset = usize::from(*id == io.targets);
                let ids: Vec<u8> =
                    step_tokens((buf.bytes() / 4) as usize, program.config.vocab, offset)?.iter().flat_map(|t| t.to_le_bytes()).collect();
                b.gpu.upload(&b.gpu.compute, buf.range(0, buf.bytes())?, &ids)?;
            } else {
                src.fill(b.gpu, buf)?;
            }
        }
        let calls = ops
            .iter()
            .map(|o| Ok((o.name.as_str(), b.launches.op(o, 1, &crate::host::AdamW::default()).map_err(|e| bad(e.to_string()))?)))
            .collect::<R<Vec<_>>>()?;
        Ok((ops, t, calls))
    }

    /// All the calls one after another, in step order.
    fn in_order(calls: &Calls) -> Vec<Call<TensorId>> {
        calls.iter().flat_map(|(_, c)| c.iter().cloned()).collect()
    }

    /// Times each of those ops alone (its calls between two events, the stream held), and all of
    /// them one after another in the step's order, side by side in rounds; the medians: each
    /// op's, and the sequence's.
    pub fn every_op(b: &Bench, src: &Source) -> R<(Vec<OpKernel>, f64)> {
        let (ops, t, mut calls) = layer_zero(b, src)?;
        // Each kernel after a different one, as in a step, rather than after itself.
        let in_order = in_order(&calls);
        calls.push(("layer 0 in step order", in_order));
        let samples = b.time_ops(&t, &calls, || Ok(()), &mut || Ok(()))?;
        let out = ops.iter().zip(&samples).map(|(o, s)| Ok(OpKernel::of(o, positive_median(s, &o.name)?))).collect::<R<Vec<_>>>()?;
        let sequence = positive_median(samples.last().expect("the sequence was timed"), "layer 0 in step order")?;
        drop(t);
        Ok((out, sequence))
    }

    /// The host's time to issue those ops' calls in step order with the GPU held (the median
    /// over the rounds), and the sequence's kernel launches and products.
    pub fn in_order_issue(b: &Bench, src: &Source) -> R<InOrderIssue> {
        let (_, t, calls) = layer_zero(b, src)?;
        let seq = in_order(&calls);
        let products = seq.iter().filter(|c| matches!(c, Call::Product(_))).count() as u32;
        let kernels = seq.len() as u32 - products;
        let samples = b.time_ops_gated(&t, &[("layer 0 issued in step order", seq)], || Ok(()), &mut || Ok(()))?;
        let host: Vec<f64> = samples[0].iter().map(|g| g.host).collect();
        let seconds = positive_median(&host, "layer 0 issued in step order")?;
        drop(t);
        Ok(InOrderIssue { seconds, kernels, products })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::program::OpKind;
    use models::{GptConfig, Program};
    use std::path::Path;

    #[test]
    fn the_in_order_issue_factor_is_the_sequence_over_its_back_to_back_cost() {
        let o = InOrderIssue { seconds: 130e-6, kernels: 10, products: 5 };
        // 10 x 4 us + 5 x 12 us = 100 us back to back.
        assert!((o.factor(4e-6, 12e-6).unwrap() - 1.3).abs() < 1e-12);
        assert_eq!(InOrderIssue { kernels: 0, products: 0, ..o }.factor(4e-6, 12e-6), None);
        assert_eq!(InOrderIssue { seconds: 0.0, ..o }.factor(4e-6, 12e-6), None);
    }

    #[test]
    fn time_beyond_the_roofline_is_per_launch() {
        let cfg = GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-124m.ron")).unwrap();
        let p = Program::build(&cfg);
        let op = p.find(OpKind::Ln1Bwd(0)).unwrap();
        let bw = 4e12;
        let k = OpKernel::of(op, op.bytes.0 as f64 / bw + 3.0 * 2e-6);
        assert_eq!(k.launches, 3);
        assert!((k.beyond_per_launch(1e15, 1e14, bw) - 2e-6).abs() < 1e-12);
        // Two ops of 3 + 1 launches alone, and 8 us more in order: 2 us per launch.
        let alone = [k.clone(), OpKernel::of(p.find(OpKind::Gelu(0)).unwrap(), 4e-6)];
        let sum = alone[0].seconds + alone[1].seconds;
        assert!((sequence_overhead(&alone, sum + 8e-6) - 2e-6).abs() < 1e-15);
        assert_eq!(sequence_overhead(&alone, sum - 1e-6), 0.0);
        let q = OpKernel::of(p.find(OpKind::Qkv(0)).unwrap(), 1e-3);
        assert!((q.roofline(1e12, 1e12, 1e20) - q.flops / 1e12).abs() < 1e-15);
    }
}
