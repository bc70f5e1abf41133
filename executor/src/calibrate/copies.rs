//! The copy probes: pinned copies of every size one way and both ways at once (the profile's
//! `h2d`, `d2h`, `h2d_duplex`, `d2h_duplex`), and a large device-to-device copy.

use serde::Serialize;

/// Pinned copy rates at one size (bytes per second, medians).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CopyRow {
    pub bytes: u64,
    pub h2d: f64,
    pub d2h: f64,
    pub h2d_duplex: f64,
    pub d2h_duplex: f64,
}

#[cfg(feature = "cuda")]
pub(super) use gpu::{copy_issue, device_copy, pinned, queued_latency, Buffers};

/// Copies of one MiB queued back to back, against one copy of their bytes together.
pub const QUEUED_COPIES: u64 = 16;

#[cfg(feature = "cuda")]
mod gpu {
    use super::CopyRow;
    use crate::calibrate::timing::{secs, Bench, Case, R};
    use crate::calibrate::{bad, positive_median, size_label, Timed, MIB};
    use crate::gpu::{record, DeviceBuffer, GpuError, PinnedBuffer, PinnedCopies};
    use crate::kernels::{GeluForward, Region};
    use models::config::DType;
    use rayon::prelude::*;

    /// What the copies run between: two pinned buffers of the largest copy size (the source
    /// filled with 0x3c, the destination with 0xff, which the copies back from the device's
    /// zeros must overwrite), two device buffers of the largest copy (or device copy) size, and
    /// the gate's buffer.
    pub struct Buffers {
        pub h_src: PinnedBuffer,
        pub h_dst: PinnedBuffer,
        pub dev: DeviceBuffers,
        pub max_copy: u64,
    }

    /// The device side of [`Buffers`].
    pub struct DeviceBuffers {
        /// Where the host-to-device copies go.
        pub d_a: DeviceBuffer,
        /// Zeros, where the device-to-host copies come from.
        pub d_b: DeviceBuffer,
        /// 64 MiB of zeros for the gate's GELU launches.
        gate: DeviceBuffer,
    }

    impl Buffers {
        pub fn new(b: &Bench) -> R<Buffers> {
            let (gpu, s, opts) = (b.gpu, &b.gpu.compute, b.opts);
            let max_copy = *opts.copy_sizes.last().expect("checked non-empty");
            let dev_bytes = max_copy.max(opts.device_copy_bytes);
            tracing::info!("allocating 2 x {} of pinned host memory ...", size_label(max_copy));
            let mut h_src = gpu.pinned(max_copy as usize)?;
            let mut h_dst = gpu.pinned(max_copy as usize)?;
            h_src.as_mut_slice().par_chunks_mut(1 << 20).for_each(|c| c.fill(0x3c));
            h_dst.as_mut_slice().par_chunks_mut(1 << 20).for_each(|c| c.fill(0xff));
            let d_a = gpu.alloc(s, dev_bytes)?;
            let d_b = gpu.alloc(s, dev_bytes)?;
            gpu.zero(s, &d_b)?;
            gpu.synchronize()?;
            let gate = gpu.alloc(s, 2 * GATE_ELEMS)?;
            gpu.zero(s, &gate)?;
            gpu.synchronize()?;
            Ok(Buffers { h_src, h_dst, dev: DeviceBuffers { d_a, d_b, gate }, max_copy })
        }

        /// Runs `f` with asynchronous copies between the pinned buffers and the device allowed
        /// (see [`crate::gpu::Gpu::pinned_copies`]), the device buffers at hand.
        pub fn with_copies<T>(&mut self, b: &Bench, f: impl FnOnce(&PinnedCopies<'_>, &DeviceBuffers) -> R<T>) -> R<T> {
            let dev = &self.dev;
            b.gpu.pinned_copies(&self.h_src, &mut self.h_dst, |copies| f(copies, dev))?
        }
    }

    /// The host's time to issue one small pinned copy to the device (the stream held, so it
    /// never waits for the copy engine), the median over the rounds.
    pub fn copy_issue(b: &Bench, bufs: &mut Buffers) -> R<f64> {
        let (s, calls) = (&b.gpu.compute, b.opts.launches);
        let samples = bufs.with_copies(b, |copies, dev| {
            let dst = dev.d_a.range(0, 4096)?;
            let mut up = || -> R<()> { Ok(copies.upload(s, dst)?) };
            up()?;
            (0..b.opts.repeats).map(|_| Ok(b.time_gated(calls, "copy issue", &mut up)?.host)).collect::<R<Vec<f64>>>()
        })?;
        positive_median(&samples, "copy issue")
    }

    /// bf16 values of the gate's buffer.
    const GATE_ELEMS: u64 = 32 * MIB;

    /// Every copy size, one way and both ways at once, after a warm-up round of every size; then
    /// checks the bytes arrived.
    pub fn pinned(b: &Bench, bufs: &mut Buffers) -> R<Vec<CopyRow>> {
        let (gpu, s, opts) = (b.gpu, &b.gpu.compute, b.opts);
        // The gate that holds both copy streams until both copies are enqueued: a few GELU
        // launches in place over 64 MiB of zeros on the compute stream (about 0.3 ms on an H100),
        // then an event both copy streams wait for.
        let gate = gpu.timing_event()?;
        let samples = bufs.with_copies(b, |copies, dev| {
            let (d_a, d_b) = (&dev.d_a, &dev.d_b);
            let gate_region = Region::whole(&dev.gate, dev.gate.bytes(), DType::Bf16);
            let gelu = GeluForward { out: gate_region, inp: gate_region, n: GATE_ELEMS }.launch()?;
            let ev = || gpu.timing_event();
            let (h2d, d2h) = (&gpu.h2d, &gpu.d2h);
            let one_round = |bytes: u64| -> R<(f64, f64, f64, f64)> {
                // alone, one way
                let (e0, e1) = (ev()?, ev()?);
                record(&e0, h2d)?;
                copies.upload(h2d, d_a.range(0, bytes)?)?;
                record(&e1, h2d)?;
                let t_h2d = secs(&e0, &e1, "host-to-device copy")?;
                let (e0, e1) = (ev()?, ev()?);
                record(&e0, d2h)?;
                copies.download(d2h, d_b.range(0, bytes)?)?;
                record(&e1, d2h)?;
                let t_d2h = secs(&e0, &e1, "device-to-host copy")?;
                // both at once, behind a gate on the compute stream
                for _ in 0..8 {
                    b.kernels.launch(s, &gelu, Ok)?;
                }
                record(&gate, s)?;
                h2d.wait(&gate).map_err(GpuError::from)?;
                d2h.wait(&gate).map_err(GpuError::from)?;
                let (a0, a1, b0, b1) = (ev()?, ev()?, ev()?, ev()?);
                record(&a0, h2d)?;
                record(&b0, d2h)?;
                copies.upload(h2d, d_a.range(0, bytes)?)?;
                copies.download(d2h, d_b.range(0, bytes)?)?;
                record(&a1, h2d)?;
                record(&b1, d2h)?;
                let t_hd = secs(&a0, &a1, "host-to-device copy (duplex)")?;
                let t_dh = secs(&b0, &b1, "device-to-host copy (duplex)")?;
                Ok((t_h2d, t_d2h, t_hd, t_dh))
            };
            for &size in &opts.copy_sizes {
                one_round(size)?; // warm-up
            }
            let mut samples = vec![Vec::new(); opts.copy_sizes.len()];
            for _ in 0..opts.repeats {
                for (i, &size) in opts.copy_sizes.iter().enumerate() {
                    samples[i].push(one_round(size)?);
                }
            }
            Ok(samples)
        })?;
        let mut copies = Vec::new();
        for (&size, xs) in opts.copy_sizes.iter().zip(&samples) {
            let col = |f: fn(&(f64, f64, f64, f64)) -> f64| xs.iter().map(f).collect::<Vec<f64>>();
            let what = size_label(size);
            let rate = |v: Vec<f64>, dir: &str| -> R<f64> { Ok(size as f64 / positive_median(&v, &format!("{dir} copy of {what}"))?) };
            copies.push(CopyRow {
                bytes: size,
                h2d: rate(col(|x| x.0), "host-to-device")?,
                d2h: rate(col(|x| x.1), "device-to-host")?,
                h2d_duplex: rate(col(|x| x.2), "duplex host-to-device")?,
                d2h_duplex: rate(col(|x| x.3), "duplex device-to-host")?,
            });
        }
        let back = bufs.h_dst.as_slice();
        if back[..16].iter().chain(&back[back.len() - 16..]).any(|&x| x != 0) {
            return Err(bad("the device-to-host copies did not bring back the device's zeros".into()));
        }
        let mut probe = vec![0u8; 16];
        gpu.download(s, &mut probe, bufs.dev.d_a.range(bufs.max_copy - 16, 16)?)?;
        if probe.iter().any(|&x| x != 0x3c) {
            return Err(bad("the host-to-device copies did not bring the host's bytes".into()));
        }
        Ok(copies)
    }

    /// What each copy takes beyond its bytes as a lane runs them, queued one after another: 16
    /// copies of 1 MiB against one of 16 MiB, host to device and device to host (the
    /// difference is 15 latencies); the medians over the rounds.
    pub fn queued_latency(b: &Bench, bufs: &mut Buffers) -> R<(f64, f64)> {
        let gpu = b.gpu;
        let n = super::QUEUED_COPIES;
        let samples = bufs.with_copies(b, |copies, dev| {
            let ev = || gpu.timing_event();
            let (h2d, d2h) = (&gpu.h2d, &gpu.d2h);
            let round = || -> R<(f64, f64)> {
                let mut per_dir = [0.0f64; 2];
                for (i, up) in [true, false].into_iter().enumerate() {
                    let stream = if up { h2d } else { d2h };
                    let copy = |bytes: u64| -> R<()> {
                        if up {
                            Ok(copies.upload(stream, dev.d_a.range(0, bytes)?)?)
                        } else {
                            Ok(copies.download(stream, dev.d_b.range(0, bytes)?)?)
                        }
                    };
                    let (e0, e1, e2) = (ev()?, ev()?, ev()?);
                    record(&e0, stream)?;
                    for _ in 0..n {
                        copy(MIB)?;
                    }
                    record(&e1, stream)?;
                    copy(n * MIB)?;
                    record(&e2, stream)?;
                    let many = secs(&e0, &e1, "queued copies")?;
                    let one = secs(&e1, &e2, "one copy of their bytes")?;
                    per_dir[i] = ((many - one) / (n - 1) as f64).max(0.0);
                }
                Ok((per_dir[0], per_dir[1]))
            };
            round()?; // warm-up
            (0..b.opts.repeats).map(|_| round()).collect::<R<Vec<(f64, f64)>>>()
        })?;
        // A latency may be 0 (hidden behind the bytes): a median, not a positive one.
        let median = |f: fn(&(f64, f64)) -> f64| {
            crate::calibrate::median(&samples.iter().map(f).collect::<Vec<f64>>())
                .ok_or_else(|| bad("queued copies: no valid samples".into()))
        };
        Ok((median(|x| x.0)?, median(|x| x.1)?))
    }

    /// A device-to-device copy of `device_copy_bytes` (bytes read + written).
    pub fn device_copy(b: &Bench, bufs: &Buffers) -> R<Timed> {
        let (gpu, s) = (b.gpu, &b.gpu.compute);
        let dcb = b.opts.device_copy_bytes;
        let (d_a, d_b) = (&bufs.dev.d_a, &bufs.dev.d_b);
        let copy = || -> R<()> { Ok(gpu.copy_d2d(s, d_b.range(0, dcb)?, d_a.range(0, dcb)?)?) };
        let iters = b.calibrate_iters("device copy", &mut || copy())?;
        let mut cases: Vec<Case> = vec![("device copy", iters, Box::new(copy))];
        let samples = b.side_by_side(&mut cases, &mut || Ok(()))?;
        Timed::median_of(format!("device-to-device copy of {}", size_label(dcb)), 2.0 * dcb as f64, &samples[0], "device copy", 1)
    }
}
