//! The host probes, with nothing on the GPU: a large host copy on all threads of the rayon pool
//! and on one (`host_memory_bandwidth`), and host AdamW on pageable memory (printed beside the
//! pinned rate `shared_memory` measures).

use super::Timed;
use serde::Serialize;

/// The host's memory as /proc/meminfo gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HostMemory {
    pub total: u64,
    pub available: u64,
}

impl HostMemory {
    /// Reads /proc/meminfo; None where it cannot be read.
    pub fn read() -> Option<HostMemory> {
        HostMemory::parse(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }

    /// `MemTotal` and `MemAvailable` of a /proc/meminfo text (kB).
    pub fn parse(text: &str) -> Option<HostMemory> {
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        };
        Some(HostMemory { total: field("MemTotal:")?, available: field("MemAvailable:")? })
    }

    /// What a run may pin: the memory available less room for the system and the run's own
    /// process (its data, checkpoints, the planner): an eighth of the total, at least 8 GiB.
    pub fn pinnable(&self) -> u64 {
        let room = (self.total / 8).max(8 << 30);
        self.available.min(self.total).saturating_sub(room)
    }
}

/// What the host probes measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostRates {
    /// Host copy on all threads, bytes read + written.
    pub host_copy: Timed,
    /// Host copy on one thread, bytes read + written.
    pub host_copy_one_thread: Timed,
    /// Host AdamW on pageable memory: amount = parameters.
    pub host_adam: Timed,
    pub host_threads: usize,
}

#[cfg(any(feature = "cuda", test))]
pub(super) use imp::{host_ops, host_ops_rate, measure, HostBuf};

#[cfg(any(feature = "cuda", test))]
mod imp {
    use super::HostRates;
    use crate::calibrate::ops::OpKernel;
    use crate::calibrate::{bad, size_label, Options, Timed};
    use crate::host::bf16::{bf16, f32_to_bf16};
    use crate::ExecError;
    use models::inventory::Owner;
    use models::program::OpKind;
    use models::Program;
    use rayon::prelude::*;
    use std::time::Instant;

    /// `host_copy_bytes` copied on all threads and on one, `repeats` times each after a first
    /// touch; then host AdamW over `host_adam_params` pageable parameters.
    pub fn measure(opts: &Options) -> Result<HostRates, ExecError> {
        let host_threads = rayon::current_num_threads();
        tracing::info!(
            "host: copies of {} and AdamW over {} M parameters on {host_threads} threads ...",
            size_label(opts.host_copy_bytes as u64),
            opts.host_adam_params >> 20
        );
        let hb = opts.host_copy_bytes;
        let hsrc = vec![1u8; hb];
        let mut hdst = vec![0u8; hb];
        let par_copy = |dst: &mut [u8]| dst.par_chunks_mut(1 << 20).zip(hsrc.par_chunks(1 << 20)).for_each(|(d, s)| d.copy_from_slice(s));
        par_copy(&mut hdst); // first touch
        let (mut hp, mut h1) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeats {
            let t0 = Instant::now();
            par_copy(&mut hdst);
            hp.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            hdst.copy_from_slice(std::hint::black_box(&hsrc));
            h1.push(t0.elapsed().as_secs_f64());
        }
        if hdst[hb - 1] != 1 {
            return Err(bad("the host copy did not copy".into()));
        }
        drop((hsrc, hdst));
        let label = size_label(hb as u64);
        let host_copy = Timed::median_of(format!("host copy of {label}, {host_threads} threads"), 2.0 * hb as f64, &hp, "host copy", 0)?;
        let host_copy_one_thread = Timed::median_of(format!("host copy of {label}, 1 thread"), 2.0 * hb as f64, &h1, "host copy", 0)?;

        let n = opts.host_adam_params;
        let mut w = vec![f32_to_bf16(0.01); n];
        let g = vec![f32_to_bf16(1e-3); n];
        let mut opt = vec![0.0f32; 3 * n];
        opt[..n].par_chunks_mut(1 << 16).for_each(|c| c.fill(0.01));
        let views = vec![models::inventory::View { name: "calibration".into(), shape: vec![n as u64], offset: 0 }];
        let h = crate::host::AdamW::default();
        crate::host::adamw_owner(&mut w, &g, &mut opt, &views, &h, 1, 1.0).map_err(|e| bad(e.to_string()))?; // warm-up, first touch
        let mut ad = Vec::new();
        for r in 0..opts.repeats {
            let t0 = Instant::now();
            crate::host::adamw_owner(&mut w, &g, &mut opt, &views, &h, 2 + r as u32, 1.0).map_err(|e| bad(e.to_string()))?;
            ad.push(t0.elapsed().as_secs_f64());
        }
        if !opt[..n].iter().step_by(4096).all(|x| x.is_finite() && *x < 0.01) {
            return Err(bad("host AdamW left non-finite or unchanged master weights".into()));
        }
        let host_adam =
            Timed::median_of(format!("host AdamW, {} M params, {host_threads} threads", n >> 20), n as f64, &ad, "host AdamW", 0)?;
        drop((w, g, opt));
        Ok(HostRates { host_copy, host_copy_one_thread, host_adam, host_threads })
    }

    /// A host ops' buffer of bf16 values: pinned as a run keeps its host copies (huge pages from
    /// 64 MiB up, which a gather and a zeroing pass run up to twice as fast on as on the heap's
    /// pages), or on the heap where no GPU is open (tests).
    pub enum HostBuf {
        #[cfg(test)]
        Heap(Vec<bf16>),
        #[cfg(feature = "cuda")]
        Pinned(crate::gpu::PinnedBuffer),
    }

    /// How a host op's buffers are made: [`HostBuf::heap`], or pinned by an open GPU.
    pub type MakeBuf<'a> = &'a dyn Fn(usize) -> Result<HostBuf, ExecError>;

    impl HostBuf {
        /// `n` values on the heap.
        #[cfg(test)]
        pub fn heap(n: usize) -> Result<HostBuf, ExecError> {
            Ok(HostBuf::Heap(vec![bf16::ZERO; n]))
        }

        /// `n` values of pinned memory made the way a run makes its host copies.
        #[cfg(feature = "cuda")]
        pub fn pinned(gpu: &crate::gpu::Gpu, n: usize) -> Result<HostBuf, ExecError> {
            Ok(HostBuf::Pinned(gpu.pinned(2 * n)?))
        }

        /// `n` values of `value`, made by `make`.
        fn filled(make: MakeBuf, n: usize, value: f32) -> Result<HostBuf, ExecError> {
            let mut b = make(n)?;
            b.par_chunks_mut(1 << 16).for_each(|c| c.fill(f32_to_bf16(value)));
            Ok(b)
        }
    }

    impl std::ops::Deref for HostBuf {
        type Target = [bf16];
        fn deref(&self) -> &[bf16] {
            match self {
                #[cfg(test)]
                HostBuf::Heap(v) => v,
                #[cfg(feature = "cuda")]
                HostBuf::Pinned(p) => crate::host::bf16::as_bf16(p.as_u16s()),
            }
        }
    }

    impl std::ops::DerefMut for HostBuf {
        fn deref_mut(&mut self) -> &mut [bf16] {
            match self {
                #[cfg(test)]
                HostBuf::Heap(v) => v,
                #[cfg(feature = "cuda")]
                HostBuf::Pinned(p) => crate::host::bf16::as_bf16_mut(p.as_mut_u16s()),
            }
        }
    }

    /// The CPU embedding's host ops of `program` (its gather, its backward's rows and its table's
    /// zeroing apart, and, clipped, its gradient's partial norms), each run `repeats` times after
    /// a first touch by the executor's own host code at the program's shapes, on the shipped
    /// corpus's tokens, in buffers made by `make`; the medians. None of them for a tied embedding
    /// (which never runs on the host).
    pub fn host_ops(program: &Program, repeats: usize, make: MakeBuf) -> Result<Vec<OpKernel>, ExecError> {
        let cfg = &program.config;
        if cfg.tied_embeddings {
            return Ok(Vec::new());
        }
        let inv = &program.inventory;
        let emb = inv.embedding;
        let (b, t, c, vp, max_seq) =
            (cfg.batch as usize, cfg.seq as usize, cfg.hidden as usize, cfg.padded_vocab as usize, cfg.max_seq as usize);
        let views = &inv.tensor(emb.weights).views;
        let range = |name: &str| crate::host::view_range(views, name).ok_or_else(|| bad(format!("the embedding has no view {name}")));
        let (wte, wpe) = (range("wte")?, range("wpe")?);
        let weights = HostBuf::filled(make, inv.tensor(emb.weights).bytes.0 as usize / 2, 0.02)?;
        let mut grads = HostBuf::filled(make, inv.tensor(emb.grads).bytes.0 as usize / 2, 0.0)?;
        let tokens = crate::calibrate::step_tokens(b * t, cfg.vocab, 0)?;
        let mut out = HostBuf::filled(make, b * t * c, 0.0)?;
        let dres = HostBuf::filled(make, b * t * c, 1e-3)?;
        let mut partials = vec![0.0f32; models::inventory::GRAD_NORM_WORDS as usize];
        let mut scratch = crate::host::WteScratch::with_capacity(b * t);
        let host = |e: crate::host::HostError| bad(e.to_string());
        let op = |kind: OpKind| program.find(kind).ok_or_else(|| bad(format!("the program has no {kind:?} op")));
        let mut rows = Vec::new();
        let embed = op(OpKind::Embed)?;
        let s = timed(repeats, &embed.name, &mut || {
            crate::host::embedding_forward(&mut out, &tokens, &weights[wte.clone()], 0, vp, &weights[wpe.clone()], t, c).map_err(host)
        })?;
        rows.push(OpKernel::of(embed, s));
        // The backward in its two passes, each at its own bytes: the step's rows, then the
        // table's zeroing (the same at both sizes, so its fit is a rate alone).
        let backward = op(OpKind::EmbedBwd)?;
        let zero_bytes = models::program::embed_table_zero_bytes(cfg);
        let s = timed(repeats, &backward.name, &mut || {
            let (dwte, dwpe) = crate::host::two_ranges(&mut grads, wte.clone(), wpe.clone())
                .ok_or_else(|| bad("the token and position tables overlap".into()))?;
            crate::host::embedding_backward_rows(dwte, dwpe, &dres, &tokens, vp, b, t, c, max_seq, &mut scratch).map_err(host)
        })?;
        rows.push(OpKernel { bytes: backward.bytes.0 - zero_bytes.0, ..OpKernel::of(backward, s) });
        let s = timed(repeats, "the token table's zeroing", &mut || {
            crate::host::zero_table(std::hint::black_box(&mut grads[wte.clone()]));
            Ok(())
        })?;
        rows.push(OpKernel { kind: models::hardware::EMBED_ZERO.to_string(), bytes: zero_bytes.0, ..OpKernel::of(backward, s) });
        if let Some(norm) = program.find(OpKind::GradNorm(Owner::Embedding)) {
            let s = timed(repeats, &norm.name, &mut || {
                crate::host::grad_norm_partials(std::hint::black_box(&grads), &mut partials).map_err(host)
            })?;
            rows.push(OpKernel::of(norm, s));
        }
        Ok(rows)
    }

    /// Bytes of the host ops' probe: the CPU embedding's gradient norm over 32 M bf16 values.
    const HOST_OPS_PROBE_VALUES: usize = 32 << 20;

    /// The host's memory-bound op rate as a run's probe and calibrate both take it: the host
    /// gradient norm over [`HOST_OPS_PROBE_VALUES`] values in a buffer made by `make`, the
    /// threads idle before each call, in bytes read per second (the median of `repeats`).
    pub fn host_ops_rate(repeats: usize, make: MakeBuf) -> Result<f64, ExecError> {
        let g = HostBuf::filled(make, HOST_OPS_PROBE_VALUES, 1e-3)?;
        let mut partials = vec![0.0f32; models::inventory::GRAD_NORM_WORDS as usize];
        let host = |e: crate::host::HostError| bad(e.to_string());
        let s = timed(repeats, "the host ops' probe", &mut || {
            crate::host::grad_norm_partials(std::hint::black_box(&g[..]), &mut partials).map_err(host)
        })?;
        Ok((2 * HOST_OPS_PROBE_VALUES) as f64 / s)
    }

    /// `run` once to touch its memory, then `repeats` times, each after the host's threads had
    /// time to go idle (as in a step, where host work waits milliseconds for the GPU): the
    /// median seconds.
    fn timed(repeats: usize, what: &str, run: &mut dyn FnMut() -> Result<(), ExecError>) -> Result<f64, ExecError> {
        run()?;
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let t0 = Instant::now();
            run()?;
            samples.push(t0.elapsed().as_secs_f64());
        }
        crate::calibrate::positive_median(&samples, what)
    }
}

#[cfg(test)]
mod meminfo_tests {
    use super::HostMemory;

    #[test]
    fn meminfo_is_read_and_leaves_room() {
        let text = "MemTotal:       131072000 kB\nMemFree:        1000 kB\nMemAvailable:   130000000 kB\n";
        let m = HostMemory::parse(text).unwrap();
        assert_eq!(m.total, 131072000 * 1024);
        assert_eq!(m.available, 130000000 * 1024);
        assert_eq!(m.pinnable(), m.available - m.total / 8);
        let small = HostMemory { total: 16 << 30, available: 15 << 30 };
        assert_eq!(small.pinnable(), 7 << 30);
        assert!(HostMemory::parse("MemTotal: x kB").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::Options;

    #[test]
    fn the_cpu_embeddings_host_ops_are_timed_at_the_programs_shapes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = models::GptConfig::load(&dir.join("../models/configs/gpt2-tiny.ron")).unwrap();
        let untied = models::GptConfig { tied_embeddings: false, ..cfg.clone() };
        let p = models::Program::build_with(&untied, models::program::Clipping::GlobalNorm);
        let rows = host_ops(&p, 2, &HostBuf::heap).unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["Embed", "EmbedBwd", "EmbedZero", "GradNorm"]);
        assert!(rows.iter().all(|r| r.seconds > 0.0 && r.bytes > 0));
        // The backward's two passes share its bytes.
        let bwd = p.find(models::program::OpKind::EmbedBwd).unwrap().bytes.0;
        assert_eq!(rows[1].bytes + rows[2].bytes, bwd);
        assert_eq!(rows[2].bytes, models::program::embed_table_zero_bytes(&untied).0);
        // Unclipped: no norm; tied: nothing runs on the host.
        assert_eq!(host_ops(&models::Program::build(&untied), 2, &HostBuf::heap).unwrap().len(), 3);
        let tied = models::GptConfig { tied_embeddings: true, ..cfg };
        assert!(host_ops(&models::Program::build(&tied), 2, &HostBuf::heap).unwrap().is_empty());
        assert!(host_ops_rate(2, &HostBuf::heap).unwrap() > 0.0);
    }

    #[test]
    fn host_rates_of_a_small_sample() {
        let opts = Options { repeats: 2, host_copy_bytes: 1 << 20, host_adam_params: 1 << 16, ..Options::quick() };
        let r = measure(&opts).unwrap();
        assert!(r.host_copy.rate() > 0.0 && r.host_copy_one_thread.rate() > 0.0 && r.host_adam.rate() > 0.0);
        assert_eq!(r.host_copy.amount, 2.0 * (1 << 20) as f64);
        assert_eq!(r.host_adam.amount, (1 << 16) as f64);
        assert_eq!(r.host_threads, rayon::current_num_threads());
    }
}
