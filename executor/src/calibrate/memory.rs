//! The device memory probes: what the context holds at the start ([`device`]), what one small
//! allocation really takes (`alloc_granularity`), the pool's reservation unit and what pinning
//! host memory takes on the device (`pool_reserve_granularity`, `pinned_device_fraction`), and
//! the memory in use once everything has run (`fixed_overhead`).

use super::MIB;
use serde::Serialize;

/// The device, and its memory in use before anything was allocated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceMemory {
    pub name: String,
    pub driver: String,
    pub compute_capability: (i32, i32),
    pub total: u64,
    /// Device memory in use right after the context was created.
    pub used_at_start: u64,
}

/// Device memory in use after kernels, cuBLASLt and every product and kernel ran once, and
/// what the pool held reserved of it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InUse {
    pub device_used_after: u64,
    pub pool_reserved_after: u64,
}

/// What the small-allocation probe saw in the pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocProbe {
    pub allocations: u64,
    /// USED_MEM_CURRENT growth per 1-byte allocation.
    pub used_per_alloc: u64,
    /// RESERVED_MEM_CURRENT growth for all of them (the pool's reservation chunk).
    pub reserved_growth: u64,
    /// Smallest distance between two of the allocations' addresses (0 when unknown).
    pub pointer_spacing: u64,
}

impl AllocProbe {
    /// What one allocation takes: the address spacing when it looks like one (1 B to 1 MiB),
    /// else the USED growth, at least 1.
    pub fn granularity(&self) -> u64 {
        if (1..=MIB).contains(&self.pointer_spacing) {
            self.pointer_spacing
        } else {
            self.used_per_alloc.max(1)
        }
    }
}

/// What one large allocation reserved, and what pinning host memory took on the device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReserveProbe {
    /// Bytes of one allocation (not a multiple of any likely reservation unit).
    pub requested: u64,
    /// RESERVED_MEM_CURRENT with it allocated (nothing else is).
    pub reserved: u64,
    /// Pinned host bytes, and the device memory in use that pinning them added.
    pub pinned: u64,
    pub pinned_device: u64,
    /// Seconds the host took to pin them as a run pins (`Gpu::pinned_many`: a huge-page
    /// mapping made on every thread, then registered).
    pub pin_seconds: f64,
    /// Seconds to pin them by `cuMemHostAlloc` (the driver makes and locks every page).
    pub one_piece_seconds: f64,
}

impl ReserveProbe {
    /// The pool's reservation unit: the smallest power of two from 2 MiB whose multiple of the
    /// request is what it reserved (0 when none up to 1 GiB fits).
    pub fn granularity(&self) -> u64 {
        (21..=30).map(|k| 1u64 << k).find(|g| self.requested.div_ceil(*g) * g == self.reserved).unwrap_or(0)
    }

    /// Device bytes per pinned host byte.
    pub fn pinned_fraction(&self) -> f64 {
        if self.pinned == 0 {
            0.0
        } else {
            self.pinned_device as f64 / self.pinned as f64
        }
    }
}

#[cfg(feature = "cuda")]
pub(super) use gpu::{device, in_use, large_allocation, small_allocations};

#[cfg(feature = "cuda")]
mod gpu {
    use super::{AllocProbe, DeviceMemory, InUse, ReserveProbe};
    use crate::calibrate::timing::R;
    use crate::calibrate::{bad, mib, size_label, GIB, MIB};
    use crate::gpu::{DeviceBuffer, Gpu};

    pub fn device(gpu: &Gpu) -> R<DeviceMemory> {
        let info = gpu.info()?;
        let used_at_start = info.used();
        let (major, minor) = info.compute_capability;
        tracing::info!(
            "device: {} (sm_{major}{minor}, driver {}), {:.1} GiB, {:.0} MiB in use",
            info.name,
            info.driver,
            info.total as f64 / GIB as f64,
            mib(used_at_start)
        );
        Ok(DeviceMemory {
            name: info.name,
            driver: info.driver,
            compute_capability: info.compute_capability,
            total: info.total,
            used_at_start,
        })
    }

    /// The first pool allocations of the process: 16 of one byte each.
    pub fn small_allocations(gpu: &Gpu) -> R<AllocProbe> {
        gpu.synchronize()?;
        let before = gpu.pool_stats()?;
        const N: u64 = 16;
        let bufs: Vec<DeviceBuffer> = (0..N).map(|_| gpu.alloc(&gpu.compute, 1)).collect::<Result<_, _>>()?;
        gpu.synchronize()?;
        let after = gpu.pool_stats()?;
        let mut ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr()).collect();
        ptrs.sort_unstable();
        let spacing = ptrs.windows(2).map(|w| w[1] - w[0]).filter(|x| *x > 0).min().unwrap_or(0);
        drop(bufs);
        gpu.synchronize()?;
        let alloc = AllocProbe {
            allocations: N,
            used_per_alloc: after.used_current.saturating_sub(before.used_current) / N,
            reserved_growth: after.reserved_current.saturating_sub(before.reserved_current),
            pointer_spacing: spacing,
        };
        tracing::info!(
            "pool: {N} 1-byte allocations use {} B each, reserve {} in all",
            alloc.used_per_alloc,
            size_label(alloc.reserved_growth),
            N = alloc.allocations
        );
        Ok(alloc)
    }

    /// One large allocation (an arena) alone in the pool, then 4 GiB of pinned host memory.
    pub fn large_allocation(gpu: &Gpu) -> R<ReserveProbe> {
        gpu.synchronize()?;
        let requested = 1000 * MIB + 1;
        let big = gpu.alloc(&gpu.compute, requested)?;
        gpu.synchronize()?;
        // Absolute, not growth: the pool may keep (and then give up) the chunk of the small
        // allocations above, which made the growth 992 MiB for 1024 MiB reserved on the H100.
        let reserved = gpu.pool_stats()?.reserved_current;
        drop(big);
        gpu.synchronize()?;
        let (free_before, _) = gpu.mem_info()?;
        let pinned = 4096 * MIB;
        let t = std::time::Instant::now();
        let host = crate::gpu::PinnedBuffer::new(&gpu.ctx, pinned as usize)?;
        let one_piece_seconds = t.elapsed().as_secs_f64();
        let (free_after, _) = gpu.mem_info()?;
        drop(host);
        // As a run pins: a huge-page mapping made on every thread, then registered.
        let t = std::time::Instant::now();
        let pieces = gpu.pinned_many(&[pinned as usize])?;
        let pin_seconds = t.elapsed().as_secs_f64();
        drop(pieces);
        let reserve = ReserveProbe {
            requested,
            reserved,
            pinned,
            pinned_device: free_before.saturating_sub(free_after),
            pin_seconds,
            one_piece_seconds,
        };
        tracing::info!(
            "pinning {} of host memory took {:.2} s as runs pin (huge pages, registered), {:.2} s by cuMemHostAlloc",
            size_label(pinned),
            pin_seconds,
            one_piece_seconds
        );
        tracing::info!(
            "pool: one allocation of {} reserves {}; {} pinned on the host take {} on the device",
            size_label(reserve.requested),
            size_label(reserve.reserved),
            size_label(reserve.pinned),
            size_label(reserve.pinned_device)
        );
        Ok(reserve)
    }

    /// Device memory in use once every module has been loaded and every library path has run.
    pub fn in_use(gpu: &Gpu, device: &DeviceMemory) -> R<InUse> {
        gpu.synchronize()?;
        let (free1, _) = gpu.mem_info()?;
        let device_used_after = device.total.saturating_sub(free1);
        let pool_reserved_after = gpu.pool_stats()?.reserved_current;
        tracing::info!(
            "device memory: {:.1} MiB in use, {:.1} MiB of it reserved by the pool",
            mib(device_used_after),
            mib(pool_reserved_after)
        );
        if pool_reserved_after > device_used_after {
            return Err(bad(format!("the pool reserves {pool_reserved_after} B but only {device_used_after} B of the device is in use")));
        }
        Ok(InUse { device_used_after, pool_reserved_after })
    }
}
