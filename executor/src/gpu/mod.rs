//! Everything that touches CUDA, and all of the executor's `unsafe`: the context and its three
//! streams (compute, host-to-device, device-to-host), timing events, the stream-ordered memory
//! pool (`cuMemAllocAsync` on the device's default pool, release threshold at the maximum so
//! freed memory stays reserved), pinned host memory and copies to and from it, NVRTC
//! compilation and launches of the kernels ([`launch`]), cuBLASLt bf16 matrix products with fp32
//! accumulation ([`blas`]), and the lanes a schedule runs on ([`lanes`]).
//!
//! Memory is owned by RAII values ([`DeviceBuffer`], [`PinnedBuffer`]); every CUDA call's result
//! is checked and turned into a [`GpuError`]. No safe function takes a raw address: device memory
//! is named by a buffer or a checked [`DeviceRange`] of one, kernel arguments by the regions of
//! [`crate::kernels`], and an asynchronous copy into or out of host memory happens only where
//! the host memory cannot be touched before the copy is done ([`Gpu::pinned_copies`], the lanes).
//!
//! What the types do not check is the order of work on the device: a buffer freed (the free is
//! ordered on a stream) while another stream still uses it, or two streams writing one buffer at
//! once, corrupt device memory, not host memory. The step orders its own work on one stream; a
//! schedule's lanes are ordered by its events, which the simulator checks before a schedule runs.

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, DriverError};
use std::ffi::c_void;
use std::sync::Arc;

pub mod blas;
pub mod lanes;
pub mod launch;
mod nvrtc;

pub use blas::Lt;
pub use launch::{KernelImages, Kernels, Target};

/// What can go wrong on the GPU side.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    #[error("cuBLASLt: {0}")]
    Blas(#[from] cudarc::cublaslt::result::CublasError),
    #[error("NVRTC could not compile {file}: {message}")]
    Compile { file: &'static str, message: String },
    #[error("kernel {0} is not in any compiled file")]
    NoKernel(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// Whether the CUDA driver library can be loaded at all (no panics when it cannot).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// The device: context, streams, the default memory pool.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub compute: Arc<CudaStream>,
    pub h2d: Arc<CudaStream>,
    pub d2h: Arc<CudaStream>,
    pool: sys::CUmemoryPool,
}

/// What [`Gpu::info`] tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// "major.minor".
    pub driver: String,
    pub compute_capability: (i32, i32),
    /// Device memory free and in all (cuMemGetInfo), bytes.
    pub free: u64,
    pub total: u64,
}

impl DeviceInfo {
    /// Device memory in use (total - free).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }
}

/// Pool statistics (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub used_current: u64,
    pub used_high: u64,
    pub reserved_current: u64,
    pub reserved_high: u64,
}

impl Gpu {
    /// Opens device 0. Fails with [`GpuError::NoDevice`] when no driver or no device is there.
    pub fn new() -> Result<Gpu> {
        if !driver_present() {
            return Err(GpuError::NoDevice("the CUDA driver library (libcuda.so) was not found".into()));
        }
        result::init().map_err(|e| GpuError::NoDevice(format!("cuInit failed: {e}")))?;
        let n = result::device::get_count().map_err(|e| GpuError::NoDevice(format!("cuDeviceGetCount failed: {e}")))?;
        if n < 1 {
            return Err(GpuError::NoDevice("the driver reports no devices".into()));
        }
        let ctx = CudaContext::new(0)?;
        if !ctx.has_async_alloc() {
            return Err(GpuError::Invalid("the device has no stream-ordered allocator (cuMemAllocAsync)".into()));
        }
        let compute = ctx.new_stream()?;
        let h2d = ctx.new_stream()?;
        let d2h = ctx.new_stream()?;
        // SAFETY: a valid device handle of the current context.
        let pool = unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }?;
        let gpu = Gpu { ctx, compute, h2d, d2h, pool };
        let mut threshold: u64 = u64::MAX;
        gpu.set_pool_attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut threshold)?;
        Ok(gpu)
    }

    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// Driver version as "major.minor" (e.g. 13.0).
    pub fn driver_version(&self) -> Result<String> {
        let mut v: i32 = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut v) }.result()?;
        Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        Ok(self.ctx.compute_capability()?)
    }

    /// The device's name, driver, compute capability and memory now.
    pub fn info(&self) -> Result<DeviceInfo> {
        let (name, driver, compute_capability) = (self.name()?, self.driver_version()?, self.compute_capability()?);
        let (free, total) = self.mem_info()?;
        Ok(DeviceInfo { name, driver, compute_capability, free, total })
    }

    /// (free, total) device memory (cuMemGetInfo).
    pub fn mem_info(&self) -> Result<(u64, u64)> {
        let (free, total) = self.ctx.mem_get_info()?;
        Ok((free as u64, total as u64))
    }

    fn set_pool_attr(&self, attr: sys::CUmemPool_attribute, v: &mut u64) -> Result<()> {
        // SAFETY: the attributes used here are all cuuint64_t.
        unsafe { result::mem_pool::set_attribute(self.pool, attr, v as *mut u64 as *mut c_void) }?;
        Ok(())
    }

    fn pool_attr(&self, attr: sys::CUmemPool_attribute) -> Result<u64> {
        let mut v: u64 = 0;
        // SAFETY: the attributes used here are all cuuint64_t.
        unsafe { result::mem_pool::get_attribute(self.pool, attr, &mut v as *mut u64 as *mut c_void) }?;
        Ok(v)
    }

    pub fn pool_stats(&self) -> Result<PoolStats> {
        use sys::CUmemPool_attribute::*;
        Ok(PoolStats {
            used_current: self.pool_attr(CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            used_high: self.pool_attr(CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
            reserved_current: self.pool_attr(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            reserved_high: self.pool_attr(CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        })
    }

    /// Resets the pool's high-water marks to the current values.
    pub fn reset_pool_highs(&self) -> Result<()> {
        use sys::CUmemPool_attribute::*;
        let mut zero = 0u64;
        self.set_pool_attr(CU_MEMPOOL_ATTR_USED_MEM_HIGH, &mut zero)?;
        let mut zero = 0u64;
        self.set_pool_attr(CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &mut zero)?;
        Ok(())
    }

    /// Gives the pool's unused reserved memory back to the device (after start-up scratch), so
    /// that what the step reserves is what the step uses.
    pub fn trim_pool(&self) -> Result<()> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the device's default pool, which lives as long as the context; trimming only
        // releases memory no allocation holds.
        unsafe { sys::cuMemPoolTrimTo(self.pool, 0) }.result()?;
        Ok(())
    }

    /// Allocates `bytes` from the default pool, ordered on `stream`.
    pub fn alloc(&self, stream: &Arc<CudaStream>, bytes: u64) -> Result<DeviceBuffer> {
        self.ctx.bind_to_thread()?;
        let n = bytes.max(1) as usize;
        // SAFETY: a live stream of this context; the memory is uninitialised and only used
        // through raw pointers by kernels on the compute stream.
        let ptr = unsafe { result::malloc_async(stream.cu_stream(), n) }?;
        Ok(DeviceBuffer { ptr, bytes, backing: Backing::Pool(stream.clone()) })
    }

    /// Page-locked host memory of `bytes`.
    pub fn pinned(&self, bytes: usize) -> Result<PinnedBuffer> {
        PinnedBuffer::pin(&self.ctx, bytes)
    }

    /// Page-locked host buffers of these sizes, pinned in parallel (the kernel zeroes and locks
    /// pages on every thread at once), in the order given.
    pub fn pinned_many(&self, sizes: &[usize]) -> Result<Vec<PinnedBuffer>> {
        PinnedBuffer::many(&self.ctx, sizes)
    }

    /// A timing event (timing enabled).
    pub fn timing_event(&self) -> Result<CudaEvent> {
        Ok(self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.compute.synchronize()?;
        self.h2d.synchronize()?;
        self.d2h.synchronize()?;
        Ok(())
    }

    /// Copies `src` into `dst` (of the same length), ordered on `stream`, and waits for it.
    pub fn upload<'a>(&self, stream: &CudaStream, dst: impl Into<DeviceRange<'a>>, src: &[u8]) -> Result<()> {
        let dst = dst.into();
        same_length("upload", src.len() as u64, dst.bytes)?;
        // SAFETY: `dst` is a live range of `src.len()` bytes (checked); `src` stays borrowed
        // until the synchronize below returns.
        unsafe { result::memcpy_htod_async(dst.ptr(), src, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }

    /// Copies `src` into `dst` (of the same length), ordered on `stream`, and waits for it.
    pub fn download<'a>(&self, stream: &CudaStream, dst: &mut [u8], src: impl Into<DeviceRange<'a>>) -> Result<()> {
        let src = src.into();
        same_length("download", src.bytes, dst.len() as u64)?;
        // SAFETY: as `upload`, the other way.
        unsafe { result::memcpy_dtoh_async(dst, src.ptr(), stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }

    /// Device-to-device copy of `src` into `dst` (of the same length), ordered on `stream`.
    pub fn copy_d2d<'a, 'b>(&self, stream: &CudaStream, dst: impl Into<DeviceRange<'a>>, src: impl Into<DeviceRange<'b>>) -> Result<()> {
        let (dst, src) = (dst.into(), src.into());
        same_length("device copy", src.bytes, dst.bytes)?;
        // SAFETY: both are live ranges of that many bytes (checked).
        unsafe { result::memcpy_dtod_async(dst.ptr(), src.ptr(), dst.bytes as usize, stream.cu_stream()) }?;
        Ok(())
    }

    /// Sets every byte of `dst` to zero, ordered on `stream`.
    pub fn zero<'a>(&self, stream: &CudaStream, dst: impl Into<DeviceRange<'a>>) -> Result<()> {
        let dst = dst.into();
        // SAFETY: a live range of that many bytes.
        unsafe { result::memset_d8_async(dst.ptr(), 0, dst.bytes as usize, stream.cu_stream()) }?;
        Ok(())
    }

    /// Runs `f` with asynchronous copies between the pinned buffers `src` (read by the device)
    /// and `dst` (written by it) and the device allowed ([`PinnedCopies`]); waits for all three
    /// streams before it returns (also when `f` panics), so no copy outlives the borrows of the
    /// host buffers, and device buffers the copies use outlive the call.
    pub fn pinned_copies<'a, R>(
        &'a self,
        src: &'a PinnedBuffer,
        dst: &'a mut PinnedBuffer,
        f: impl FnOnce(&PinnedCopies<'a>) -> R,
    ) -> Result<R> {
        /// Waits for the streams if `f` unwinds.
        struct Wait<'g>(&'g Gpu);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                if let Err(e) = self.0.synchronize() {
                    tracing::warn!("waiting for the streams after pinned copies: {e}");
                }
            }
        }
        let copies = PinnedCopies { src, dst_ptr: dst.ptr, dst_bytes: dst.bytes, _dst: std::marker::PhantomData };
        let wait = Wait(self);
        let r = f(&copies);
        std::mem::forget(wait);
        self.synchronize()?;
        Ok(r)
    }
}

fn same_length(what: &str, from: u64, to: u64) -> Result<()> {
    if from == to {
        Ok(())
    } else {
        Err(GpuError::Invalid(format!("{what} of {from} bytes into {to}")))
    }
}

/// Asynchronous copies between two pinned buffers and device memory, while
/// [`Gpu::pinned_copies`] runs: the host buffers stay borrowed (untouchable by the host) until
/// every stream has finished.
pub struct PinnedCopies<'a> {
    src: &'a PinnedBuffer,
    dst_ptr: *mut u8,
    dst_bytes: usize,
    _dst: std::marker::PhantomData<&'a mut PinnedBuffer>,
}

impl<'a> PinnedCopies<'a> {
    /// Copies the first `dst.bytes()` bytes of the source buffer into `dst`, ordered on `stream`.
    pub fn upload(&self, stream: &CudaStream, dst: DeviceRange<'a>) -> Result<()> {
        if dst.bytes > self.src.bytes as u64 {
            return Err(GpuError::Invalid(format!("copy of {} bytes from a pinned buffer of {}", dst.bytes, self.src.bytes)));
        }
        // SAFETY: the source is pinned memory borrowed until every stream is done (the scope);
        // `dst` is a live range of that many bytes.
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst.ptr(), self.src.ptr as *const c_void, dst.bytes as usize, stream.cu_stream()) }.result()?;
        Ok(())
    }

    /// Copies `src` into the first `src.bytes()` bytes of the destination buffer, ordered on
    /// `stream`.
    pub fn download(&self, stream: &CudaStream, src: DeviceRange<'a>) -> Result<()> {
        if src.bytes > self.dst_bytes as u64 {
            return Err(GpuError::Invalid(format!("copy of {} bytes into a pinned buffer of {}", src.bytes, self.dst_bytes)));
        }
        // SAFETY: the destination is pinned memory borrowed mutably until every stream is done
        // (the scope), and nothing on the host reads or writes it meanwhile; `src` is a live
        // range of that many bytes.
        unsafe { sys::cuMemcpyDtoHAsync_v2(self.dst_ptr as *mut c_void, src.ptr(), src.bytes as usize, stream.cu_stream()) }.result()?;
        Ok(())
    }
}

/// Device memory: an allocation of the stream-ordered pool, freed (stream-ordered) when
/// dropped, or a range of such an allocation (an arena) that holds the arena alive.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: u64,
    backing: Backing,
}

enum Backing {
    /// Its own pool allocation, freed on this stream.
    Pool(Arc<CudaStream>),
    /// Bytes of an arena, which it keeps alive; nothing of its own to free.
    Arena { _arena: Arc<DeviceBuffer> },
}

impl DeviceBuffer {
    /// The device address, to look at (alignment, the spacing of allocations); nothing takes
    /// an address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `bytes` from `offset`; an error unless they lie inside the buffer.
    pub fn range(&self, offset: u64, bytes: u64) -> Result<DeviceRange<'_>> {
        if offset.checked_add(bytes).is_none_or(|end| end > self.bytes) {
            return Err(GpuError::Invalid(format!("range {offset}+{bytes} outside a device buffer of {} bytes", self.bytes)));
        }
        Ok(DeviceRange { buf: self, offset, bytes })
    }

    /// `bytes` of `arena` from `offset`: a buffer that frees nothing when dropped. Reusing a
    /// range is ordered the way the pool orders reuse: the caller hands out a range only after
    /// every use of its previous holder is ordered before (the schedule's `Free` on the compute
    /// lane, as `models::arena` plans it).
    pub fn arena_range(arena: &Arc<DeviceBuffer>, offset: u64, bytes: u64) -> Result<DeviceBuffer> {
        if offset.checked_add(bytes).is_none_or(|end| end > arena.bytes) {
            return Err(GpuError::Invalid(format!("arena range {offset}+{bytes} outside an arena of {} bytes", arena.bytes)));
        }
        Ok(DeviceBuffer { ptr: arena.ptr + offset, bytes, backing: Backing::Arena { _arena: arena.clone() } })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Backing::Pool(stream) = &self.backing {
            // SAFETY: allocated by cuMemAllocAsync; every use was enqueued on `stream` (or
            // ordered before it by events) before this free, so the free is ordered after them.
            let r = unsafe { result::free_async(self.ptr, stream.cu_stream()) };
            if let Err(e) = r {
                tracing::warn!("cuMemFreeAsync failed: {e}");
            }
        }
    }
}

/// A range of a live device buffer, checked when made ([`DeviceBuffer::range`]); a whole buffer
/// converts into one.
#[derive(Clone, Copy)]
pub struct DeviceRange<'a> {
    buf: &'a DeviceBuffer,
    offset: u64,
    bytes: u64,
}

impl DeviceRange<'_> {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The device address of its first byte (for CUDA calls inside this module).
    fn ptr(&self) -> sys::CUdeviceptr {
        self.buf.ptr + self.offset
    }
}

impl<'a> From<&'a DeviceBuffer> for DeviceRange<'a> {
    fn from(buf: &'a DeviceBuffer) -> DeviceRange<'a> {
        DeviceRange { buf, offset: 0, bytes: buf.bytes }
    }
}

/// Page-locked host memory.
pub struct PinnedBuffer {
    ptr: *mut u8,
    bytes: usize,
    backing: HostBacking,
}

/// How a pinned buffer's memory was made, so it is given back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostBacking {
    /// `cuMemHostAlloc`: the driver allocates and locks every 4 KiB page.
    Driver,
    /// An anonymous mapping of `mapped` bytes asking for 2 MiB pages, its pages made by this
    /// process on every thread, then locked with `cuMemHostRegister`.
    Registered { mapped: usize },
}

/// Buffers from this size up are made as huge-page mappings and registered.
const REGISTER_FROM: usize = 64 << 20;
const HUGE_PAGE: usize = 2 << 20;

impl PinnedBuffer {
    /// Buffers of these sizes in `ctx`, in the order given: large ones as huge-page mappings
    /// whose pages every thread makes at once, then registered with the driver one after
    /// another; small ones by `cuMemHostAlloc`.
    pub fn many(ctx: &Arc<CudaContext>, sizes: &[usize]) -> Result<Vec<PinnedBuffer>> {
        sizes.iter().map(|&b| PinnedBuffer::pin(ctx, b)).collect()
    }

    /// Page-locked host memory of `bytes`, the faster way for its size: registered huge pages
    /// from 64 MiB up, `cuMemHostAlloc` below.
    pub fn pin(ctx: &Arc<CudaContext>, bytes: usize) -> Result<PinnedBuffer> {
        if bytes >= REGISTER_FROM {
            PinnedBuffer::registered(ctx, bytes)
        } else {
            PinnedBuffer::new(ctx, bytes)
        }
    }

    /// Page-locked host memory of `bytes` in `ctx` by `cuMemHostAlloc` (callable from any thread).
    pub fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<PinnedBuffer> {
        ctx.bind_to_thread()?;
        // SAFETY: plain cuMemHostAlloc; freed in Drop.
        let ptr = unsafe { result::malloc_host(bytes.max(1), 0) }? as *mut u8;
        Ok(PinnedBuffer { ptr, bytes, backing: HostBacking::Driver })
    }

    /// Page-locked host memory of `bytes`: an anonymous mapping (2 MiB pages asked for with
    /// `MADV_HUGEPAGE`), every page written once from all threads (the kernel makes and zeroes
    /// it then), then locked and mapped for the device with `cuMemHostRegister`.
    pub fn registered(ctx: &Arc<CudaContext>, bytes: usize) -> Result<PinnedBuffer> {
        use rayon::prelude::*;
        let mapped = bytes.max(1).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; no memory of this process is touched.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), mapped, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(GpuError::Invalid(format!("mapping {bytes} bytes of host memory: {}", std::io::Error::last_os_error())));
        }
        let buf = PinnedBuffer { ptr: ptr as *mut u8, bytes, backing: HostBacking::Registered { mapped } };
        // SAFETY: advice on the mapping just made (a failure only means 4 KiB pages).
        unsafe { libc::madvise(ptr, mapped, libc::MADV_HUGEPAGE) };
        let base = buf.ptr as usize;
        (0..mapped / HUGE_PAGE).into_par_iter().for_each(|i| {
            // SAFETY: inside the mapping, which no one else uses yet; one write per 4 KiB page
            // makes the page (zeroed by the kernel, so the value written is zero too).
            let page = unsafe { std::slice::from_raw_parts_mut((base + i * HUGE_PAGE) as *mut u8, HUGE_PAGE) };
            for b in page.iter_mut().step_by(4096) {
                // Volatile so the write is not elided: its purpose is the page fault.
                unsafe { std::ptr::write_volatile(b, 0) };
            }
        });
        ctx.bind_to_thread()?;
        // SAFETY: `mapped` bytes of this process's memory, page-aligned, registered once and
        // unregistered in Drop before the unmapping.
        unsafe { sys::cuMemHostRegister_v2(ptr, mapped, 0) }.result()?;
        Ok(buf)
    }

    /// How the buffer's memory was made.
    pub fn backing(&self) -> HostBacking {
        self.backing
    }

    pub fn len(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `bytes` bytes of host memory owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) }
    }
    /// As 16-bit words (bf16 bits); a trailing odd byte is left out.
    pub fn as_u16s(&self) -> &[u16] {
        // SAFETY: both backings are page-aligned; shared borrow, no writer.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u16, self.bytes / 2) }
    }
    /// Mutable form of [`PinnedBuffer::as_u16s`].
    pub fn as_mut_u16s(&mut self) -> &mut [u16] {
        // SAFETY: both backings are page-aligned; uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u16, self.bytes / 2) }
    }
    /// As f32s; trailing bytes short of one are left out.
    pub fn as_f32s(&self) -> &[f32] {
        // SAFETY: page-aligned (as above); shared borrow, no writer.
        unsafe { std::slice::from_raw_parts(self.ptr as *const f32, self.bytes / 4) }
    }
    pub fn as_mut_f32s(&mut self) -> &mut [f32] {
        // SAFETY: page-aligned (as above); uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, self.bytes / 4) }
    }
}

// SAFETY: a PinnedBuffer is host memory owned by one value; cuMemFreeHost may be called from
// any thread of the process, so the buffer may be made on one thread and dropped on another.
unsafe impl Send for PinnedBuffer {}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        match self.backing {
            HostBacking::Driver => {
                // SAFETY: allocated by cuMemHostAlloc.
                if let Err(e) = unsafe { result::free_host(self.ptr as *mut c_void) } {
                    tracing::warn!("cuMemFreeHost failed: {e}");
                }
            }
            HostBacking::Registered { mapped } => {
                // SAFETY: registered in `registered`; no copy uses it once its owner drops it.
                if let Err(e) = unsafe { sys::cuMemHostUnregister(self.ptr as *mut c_void) }.result() {
                    tracing::warn!("cuMemHostUnregister failed: {e}");
                }
                // SAFETY: the mapping made in `registered`, of `mapped` bytes, unmapped once.
                if unsafe { libc::munmap(self.ptr as *mut c_void, mapped) } != 0 {
                    tracing::warn!("munmap failed: {}", std::io::Error::last_os_error());
                }
            }
        }
    }
}

/// Milliseconds between two recorded timing events (waits for the second).
pub fn elapsed_ms(start: &CudaEvent, end: &CudaEvent) -> Result<f32> {
    end.synchronize()?;
    Ok(start.elapsed_ms(end)?)
}

/// Records a timing event on `stream`.
pub fn record(ev: &CudaEvent, stream: &CudaStream) -> Result<()> {
    ev.record(stream)?;
    Ok(())
}
