//! Host memory that host work and the copy engines share: host AdamW on pinned memory (where
//! the executor keeps host copies) timed alone, then while pinned copies run one way and both
//! ways. The profile's `host_sharing` is the fraction of its speed alone each kept; the
//! simulator applies it while host work runs beside copies. The H100 machine showed the sharing
//! is uneven (device-to-host copies kept their speed, host-to-device copies and AdamW did not),
//! so it is a table, not one shared rate.

use super::report::gb;
use super::{CopyRow, Timed};
use models::cost::HOST_ADAM_BYTES_PER_PARAM;
use models::hardware::{HostSharing, Shares};
use serde::Serialize;

/// Which copies ran beside host AdamW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Copies {
    HostToDevice,
    DeviceToHost,
    Both,
}

impl Copies {
    pub const ALL: [Copies; 3] = [Copies::HostToDevice, Copies::DeviceToHost, Copies::Both];

    pub fn h2d(self) -> bool {
        self != Copies::DeviceToHost
    }

    pub fn d2h(self) -> bool {
        self != Copies::HostToDevice
    }

    pub fn label(self) -> &'static str {
        match self {
            Copies::HostToDevice => "H2D",
            Copies::DeviceToHost => "D2H",
            Copies::Both => "H2D+D2H",
        }
    }
}

/// Rates host AdamW and the copies reached while running at the same time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharedRow {
    pub copies: Copies,
    /// Parameters per second (median over the AdamW passes that ran wholly inside the copies).
    pub adam: f64,
    /// Copy rates over the same window, bytes per second (0 for an idle direction).
    pub h2d: f64,
    pub d2h: f64,
    /// AdamW passes the median is over.
    pub passes: usize,
}

impl SharedRow {
    /// Host memory bytes per second all of them moved together.
    pub fn traffic(&self) -> f64 {
        self.adam * HOST_ADAM_BYTES_PER_PARAM as f64 + self.h2d + self.d2h
    }
}

/// Host AdamW alone on pinned memory, and beside each kind of copy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharedMemory {
    /// Host AdamW on pinned memory, nothing else running: amount = parameters.
    pub adam_alone: Timed,
    /// The same parameters in [`SMALL_CALLS`] calls over separate slices, one after another
    /// (as the executor updates one layer at a time): amount = parameters per call, seconds
    /// per call.
    pub adam_small: Timed,
    pub rows: Vec<SharedRow>,
}

/// Calls the small-call AdamW sample splits its parameters into.
pub const SMALL_CALLS: usize = 64;

/// Speeds of one row relative to each part running alone (1 = no slowdown).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slowdown {
    pub adam: f64,
    pub h2d: Option<f64>,
    pub d2h: Option<f64>,
}

impl SharedMemory {
    /// The profile's `host_sharing`: each row's slowdowns, at most 1 (a copy a little faster
    /// beside host work than alone is timing noise). None unless all three rows were measured.
    pub fn sharing(&self, alone: &CopyRow) -> Option<HostSharing> {
        let slow = self.slowdowns(alone);
        let shares = |c: Copies| {
            slow.iter().find(|(k, _)| *k == c).map(|(_, s)| Shares {
                host: s.adam.min(1.0),
                h2d: s.h2d.unwrap_or(1.0).min(1.0),
                d2h: s.d2h.unwrap_or(1.0).min(1.0),
            })
        };
        Some(HostSharing {
            beside_h2d: shares(Copies::HostToDevice)?,
            beside_d2h: shares(Copies::DeviceToHost)?,
            beside_both: shares(Copies::Both)?,
        })
    }

    /// Time one host AdamW call takes beyond its parameters at the large-call rate (thread
    /// wake-up, the split into tasks): the profile's `host_adam_call_overhead`, at least 0.
    pub fn call_overhead(&self) -> f64 {
        (self.adam_small.seconds - self.adam_small.amount / self.adam_alone.rate()).max(0.0)
    }

    /// Each row's rates as fractions of the same work alone (`alone`: the copy rates measured
    /// without host work at the largest size; duplex rates for the row with both directions).
    pub fn slowdowns(&self, alone: &CopyRow) -> Vec<(Copies, Slowdown)> {
        let adam = self.adam_alone.rate();
        self.rows
            .iter()
            .map(|r| {
                let both = r.copies == Copies::Both;
                let (h, d) = if both { (alone.h2d_duplex, alone.d2h_duplex) } else { (alone.h2d, alone.d2h) };
                let s = Slowdown { adam: r.adam / adam, h2d: r.copies.h2d().then(|| r.h2d / h), d2h: r.copies.d2h().then(|| r.d2h / d) };
                (r.copies, s)
            })
            .collect()
    }

    /// Things that look wrong: a part faster beside host work than alone by more than noise.
    pub fn warnings(&self, alone: &CopyRow) -> Vec<String> {
        let mut w = Vec::new();
        for (c, s) in self.slowdowns(alone) {
            for (part, v) in [("host AdamW", Some(s.adam)), ("H2D", s.h2d), ("D2H", s.d2h)] {
                if let Some(v) = v.filter(|v| *v > 1.1) {
                    w.push(format!(
                        "beside {} copies {part} ran at {:.0}% of its speed alone: the timing is suspect",
                        c.label(),
                        100.0 * v
                    ));
                }
            }
        }
        w
    }

    /// The table of the measurement.
    pub fn report(&self, alone: &CopyRow) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "host AdamW on pinned memory beside pinned copies ({}: {:.3} G params/s = {:.1} GB/s of host memory alone)",
            self.adam_alone.what,
            self.adam_alone.rate() / 1e9,
            gb(self.adam_alone.rate() * HOST_ADAM_BYTES_PER_PARAM as f64)
        );
        let _ = writeln!(
            s,
            "  {}: {:.4} ms per call, {:.1} us over the large-call rate (host_adam_call_overhead)",
            self.adam_small.what,
            self.adam_small.seconds * 1e3,
            self.call_overhead() * 1e6
        );
        let _ = writeln!(s, "  copies     AdamW G params/s (speed)   H2D GB/s (speed)   D2H GB/s (speed)   host memory GB/s  passes");
        let slow = self.slowdowns(alone);
        for (r, (_, sd)) in self.rows.iter().zip(&slow) {
            let pct = |x: Option<f64>| x.map(|x| format!("({:>3.0}%)", 100.0 * x)).unwrap_or_else(|| "      ".into());
            let _ = writeln!(
                s,
                "  {:<8} {:>10.3} {}        {:>8.2} {}    {:>8.2} {}   {:>12.1}  {:>6}",
                r.copies.label(),
                r.adam / 1e9,
                pct(Some(sd.adam)),
                gb(r.h2d),
                pct(sd.h2d),
                gb(r.d2h),
                pct(sd.d2h),
                gb(r.traffic()),
                r.passes
            );
        }
        if let Some(h) = self.sharing(alone) {
            let f = |x: Shares| format!("host {:.2}, H2D {:.2}, D2H {:.2}", x.host, x.h2d, x.d2h);
            let _ = writeln!(
                s,
                "  host_sharing: beside H2D ({}); beside D2H ({}); beside both ({})",
                f(h.beside_h2d),
                f(h.beside_d2h),
                f(h.beside_both)
            );
        }
        s
    }
}

/// The measurement on the GPU.
#[cfg(feature = "cuda")]
pub(super) mod gpu {
    use super::{Copies, SharedMemory, SharedRow, SMALL_CALLS};
    use crate::calibrate::copies::{Buffers, CopyRow};
    use crate::calibrate::timing::{Bench, R};
    use crate::calibrate::{bad, median, Timed};
    use crate::gpu::{elapsed_ms, record, DeviceBuffer, Gpu, GpuError, PinnedBuffer, PinnedCopies};
    use crate::host::bf16::{as_bf16, as_bf16_mut, f32_to_bf16};
    use crate::host::AdamW;
    use cudarc::driver::{CudaEvent, CudaStream};
    use rayon::prelude::*;
    use std::time::Instant;

    /// Host AdamW over `n` parameters in pinned memory.
    struct PinnedAdam {
        w: PinnedBuffer,
        g: PinnedBuffer,
        opt: PinnedBuffer,
        n: usize,
        step: u32,
    }

    impl PinnedAdam {
        fn new(gpu: &Gpu, n: usize) -> R<PinnedAdam> {
            let mut w = gpu.pinned(2 * n)?;
            let mut g = gpu.pinned(2 * n)?;
            let mut opt = gpu.pinned(12 * n)?;
            let (w0, g0) = (f32_to_bf16(0.01).to_bits(), f32_to_bf16(1e-3).to_bits());
            w.as_mut_u16s().par_chunks_mut(1 << 16).for_each(|c| c.fill(w0));
            g.as_mut_u16s().par_chunks_mut(1 << 16).for_each(|c| c.fill(g0));
            let o = opt.as_mut_f32s();
            o[..n].par_chunks_mut(1 << 16).for_each(|c| c.fill(0.01));
            o[n..].par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
            Ok(PinnedAdam { w, g, opt, n, step: 0 })
        }

        /// One pass over all parameters; its seconds.
        fn pass(&mut self) -> R<f64> {
            self.split_pass(1)
        }

        /// The parameters in `calls` calls over separate slices (weights, gradients and a
        /// `[master | m | v]` block of their own each); seconds per call.
        fn split_pass(&mut self, calls: usize) -> R<f64> {
            self.step += 1;
            let m = self.n / calls;
            let views = vec![models::inventory::View { name: "calibration".into(), shape: vec![m as u64], offset: 0 }];
            let (w, g, opt) = (self.w.as_mut_u16s(), self.g.as_mut_u16s(), self.opt.as_mut_f32s());
            let t0 = Instant::now();
            for i in 0..calls {
                crate::host::adamw_owner(
                    as_bf16_mut(&mut w[i * m..(i + 1) * m]),
                    as_bf16(&g[i * m..(i + 1) * m]),
                    &mut opt[3 * i * m..3 * (i + 1) * m],
                    &views,
                    &AdamW::default(),
                    self.step,
                    1.0,
                )
                .map_err(|e| bad(e.to_string()))?;
            }
            Ok(t0.elapsed().as_secs_f64() / calls as f64)
        }

        fn check(&self) -> R<()> {
            let master = &self.opt.as_f32s()[..self.n];
            if master.iter().step_by(4096).all(|x| x.is_finite() && *x < 0.01) {
                Ok(())
            } else {
                Err(bad("host AdamW on pinned memory left non-finite or unchanged master weights".into()))
            }
        }
    }

    /// The copies beside host AdamW: from the pinned source into `d_dst`, and from `d_src` into
    /// the pinned destination, `bytes` each.
    struct CopyBuffers<'c, 'a> {
        copies: &'c PinnedCopies<'a>,
        d_dst: &'a DeviceBuffer,
        d_src: &'a DeviceBuffer,
        bytes: u64,
        /// Rates alone at `bytes`, to size the copy queues.
        h2d_rate: f64,
        d2h_rate: f64,
    }

    /// The median of `repeats` timings of `f` (seconds) after one untimed warm-up call.
    fn warm_median(repeats: usize, what: &str, mut f: impl FnMut() -> R<f64>) -> R<f64> {
        f()?;
        let times = (0..repeats).map(|_| f()).collect::<R<Vec<f64>>>()?;
        median(&times).ok_or_else(|| bad(format!("{what} took no finite time")))
    }

    /// Host AdamW over `host_adam_params` pinned parameters alone (`repeats` passes after a
    /// warm-up), then beside each kind of copy of the largest size (`largest`: their rates
    /// alone), then in small calls.
    pub fn measure(b: &Bench, bufs: &mut Buffers, largest: &CopyRow) -> R<SharedMemory> {
        let (params, repeats, threads) = (b.opts.host_adam_params, b.opts.repeats, rayon::current_num_threads());
        tracing::info!("host AdamW over {} M parameters in pinned memory, alone and beside pinned copies ...", params >> 20);
        let bytes = bufs.max_copy;
        bufs.with_copies(b, |copies, dev| {
            let bufs = CopyBuffers { copies, d_dst: &dev.d_a, d_src: &dev.d_b, bytes, h2d_rate: largest.h2d, d2h_rate: largest.d2h };
            let gpu = b.gpu;
            let mut adam = PinnedAdam::new(gpu, params)?;
            let alone_s = warm_median(repeats, "host AdamW on pinned memory", || adam.pass())?;
            let mut rows = Vec::new();
            for copies in Copies::ALL {
                rows.push(beside(gpu, &bufs, &mut adam, copies, alone_s)?);
            }
            adam.check()?;
            let calls = SMALL_CALLS.min(params);
            let small_s = warm_median(repeats, "host AdamW in small calls", || adam.split_pass(calls))?;
            Ok(SharedMemory {
                adam_alone: Timed {
                    what: format!("host AdamW, {} M params in pinned memory, {threads} threads", params >> 20),
                    amount: params as f64,
                    seconds: alone_s,
                    launches: 0,
                },
                adam_small: Timed {
                    what: format!("host AdamW, {calls} calls of {:.2} M params", (params / calls) as f64 / (1 << 20) as f64),
                    amount: (params / calls) as f64,
                    seconds: small_s,
                    launches: 0,
                },
                rows,
            })
        })
    }

    /// Queues copies that last about 10 AdamW passes alone on each busy direction, runs AdamW
    /// passes until the first direction drains, and takes each direction's rate over the copies
    /// done by then and AdamW's over the passes that ended before.
    fn beside<'a>(gpu: &'a Gpu, bufs: &CopyBuffers, adam: &mut PinnedAdam, copies: Copies, alone_s: f64) -> R<SharedRow> {
        let span = (10.0 * alone_s).max(0.2);
        let count = |rate: f64| ((span * rate / bufs.bytes as f64).ceil() as usize).clamp(4, 512);
        // `n` copies on `stream`, an event before the first and after each.
        let queue = |stream: &'a CudaStream, n: usize, copy: &dyn Fn() -> R<()>| -> R<(&'a CudaStream, Vec<CudaEvent>)> {
            let mut evs = vec![gpu.timing_event()?];
            record(&evs[0], stream)?;
            for _ in 0..n {
                copy()?;
                let e = gpu.timing_event()?;
                record(&e, stream)?;
                evs.push(e);
            }
            Ok((stream, evs))
        };
        let mut lanes: Vec<(&CudaStream, Vec<CudaEvent>)> = Vec::new();
        if copies.h2d() {
            lanes.push(queue(&gpu.h2d, count(bufs.h2d_rate), &|| Ok(bufs.copies.upload(&gpu.h2d, bufs.d_dst.range(0, bufs.bytes)?)?))?);
        }
        if copies.d2h() {
            lanes.push(queue(&gpu.d2h, count(bufs.d2h_rate), &|| Ok(bufs.copies.download(&gpu.d2h, bufs.d_src.range(0, bufs.bytes)?)?))?);
        }
        let drained = |lanes: &[(&CudaStream, Vec<CudaEvent>)]| -> R<bool> {
            for (_, evs) in lanes {
                if evs.last().expect("one event at least").try_is_complete().map_err(GpuError::from)? {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let mut passes = Vec::new();
        loop {
            let s = adam.pass()?;
            if drained(&lanes)? {
                break;
            }
            passes.push(s);
        }
        for (stream, _) in &lanes {
            stream.synchronize().map_err(GpuError::from)?;
        }
        if passes.len() < 3 {
            return Err(bad(format!(
                "the {} copies drained after {} host AdamW passes: too few to time AdamW beside them",
                copies.label(),
                passes.len()
            )));
        }
        // The window: until the first direction finished its last copy.
        let ends: Vec<f64> =
            lanes.iter().map(|(_, evs)| elapsed_ms(&evs[0], evs.last().unwrap()).map(|ms| ms as f64 / 1e3)).collect::<Result<_, _>>()?;
        let window = ends.iter().copied().fold(f64::INFINITY, f64::min);
        let mut rates = Vec::new();
        for (_, evs) in &lanes {
            let mut done = (0, 0.0);
            for (i, e) in evs.iter().enumerate().skip(1) {
                let t = elapsed_ms(&evs[0], e)? as f64 / 1e3;
                if t <= window * (1.0 + 1e-6) {
                    done = (i, t);
                }
            }
            if done.0 == 0 || done.1 <= 0.0 {
                return Err(bad(format!("no {} copy finished inside the window", copies.label())));
            }
            rates.push(done.0 as f64 * bufs.bytes as f64 / done.1);
        }
        let mut it = rates.into_iter();
        let h2d = if copies.h2d() { it.next().unwrap_or(0.0) } else { 0.0 };
        let d2h = if copies.d2h() { it.next().unwrap_or(0.0) } else { 0.0 };
        let s = median(&passes).ok_or_else(|| bad("host AdamW beside copies took no finite time".into()))?;
        Ok(SharedRow { copies, adam: adam.n as f64 / s, h2d, d2h, passes: passes.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alone() -> CopyRow {
        CopyRow { bytes: 1 << 30, h2d: 50e9, d2h: 50e9, h2d_duplex: 40e9, d2h_duplex: 50e9 }
    }

    fn shared(both: SharedRow) -> SharedMemory {
        SharedMemory {
            adam_alone: Timed { what: "adam".into(), amount: 4e9, seconds: 1.0, launches: 0 },
            adam_small: Timed { what: "adam small".into(), amount: 4e6, seconds: 1.5e-3, launches: 0 },
            rows: vec![SharedRow { copies: Copies::HostToDevice, adam: 3e9, h2d: 45e9, d2h: 0.0, passes: 9 }, both],
        }
    }

    #[test]
    fn shares_are_the_slowdowns_against_the_same_copies_alone() {
        let s = shared(SharedRow { copies: Copies::Both, adam: 2e9, h2d: 20e9, d2h: 51e9, passes: 9 });
        let sd = s.slowdowns(&alone());
        assert_eq!(sd[0].0, Copies::HostToDevice);
        assert_eq!(sd[0].1, Slowdown { adam: 0.75, h2d: Some(0.9), d2h: None });
        // both ways: against the duplex rates (40 and 50 GB/s)
        assert_eq!(sd[1].1, Slowdown { adam: 0.5, h2d: Some(0.5), d2h: Some(1.02) });
        // no D2H row: no table
        assert_eq!(s.sharing(&alone()), None);
        let mut full = s.clone();
        full.rows.insert(1, SharedRow { copies: Copies::DeviceToHost, adam: 2.8e9, h2d: 0.0, d2h: 45e9, passes: 9 });
        let h = full.sharing(&alone()).unwrap();
        assert_eq!(h.beside_h2d, Shares { host: 0.75, h2d: 0.9, d2h: 1.0 });
        assert_eq!(h.beside_d2h, Shares { host: 0.7, h2d: 1.0, d2h: 0.9 });
        // the copy 2% faster than alone is taken as full speed
        assert_eq!(h.beside_both, Shares { host: 0.5, h2d: 0.5, d2h: 1.0 });
        assert!(full.warnings(&alone()).is_empty());
        // 4e6 params at 4e9/s take 1 ms; the calls took 1.5 ms
        assert!((full.call_overhead() - 0.5e-3).abs() < 1e-12);
        assert!(full.report(&alone()).contains("beside both (host 0.50, H2D 0.50, D2H 1.00)"), "{}", full.report(&alone()));
    }

    #[test]
    fn a_part_much_faster_beside_host_work_is_reported() {
        let s = shared(SharedRow { copies: Copies::Both, adam: 2e9, h2d: 40e9, d2h: 60e9, passes: 9 });
        let w = s.warnings(&alone());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("H2D+D2H") && w[0].contains("D2H ran at 120%"), "{w:?}");
    }
}
