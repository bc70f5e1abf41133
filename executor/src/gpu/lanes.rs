//! What running a schedule needs beyond one compute stream: a stream per lane, events to order
//! lanes, host work enqueued on a stream (cuLaunchHostFunc), copies between device buffers and
//! raw views of pinned host memory, and frees ordered on any lane.
//!
//! Soundness of [`HostView`]: a view is a raw (address, length) of a [`PinnedBuffer`]. The
//! runner keeps every buffer alive until all streams are synchronised, and the schedule's
//! events order every access to a tensor's host copy (copy engines and host functions), which
//! the simulator's race check verifies before a schedule runs. Under those two conditions no
//! two accesses to a view overlap in time, so handing out slices from it is sound.

use super::{DeviceBuffer, Gpu, GpuError, PinnedBuffer, Result};
use cudarc::driver::{sys, CudaEvent, CudaStream};
use std::ffi::c_void;
use std::sync::Arc;

/// A raw view of a pinned host buffer, `Send` so host work on another thread can use it.
#[derive(Clone, Copy, Debug)]
pub struct HostView {
    ptr: usize,
    bytes: usize,
}

impl PinnedBuffer {
    /// A view of the whole buffer (see the module comment for when using it is sound).
    pub fn view(&self) -> HostView {
        HostView { ptr: self.ptr as usize, bytes: self.bytes }
    }
}

impl HostView {
    pub fn len(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
    fn check_align(&self, align: usize) {
        // Pinned allocations are page aligned; a misaligned view is a bug in this module.
        assert!(self.ptr.is_multiple_of(align) && self.bytes.is_multiple_of(align), "host view not aligned to {align}");
    }
    /// The bytes, read-only.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: module comment: the buffer is alive and no write overlaps this read.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.bytes) }
    }
    /// The bytes, writable.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: module comment: the buffer is alive and this is the only access now.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.bytes) }
    }
    /// As 16-bit words (bf16 bits), read-only.
    pub fn u16s(&self) -> &[u16] {
        self.check_align(2);
        // SAFETY: as `bytes`, and aligned (checked).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u16, self.bytes / 2) }
    }
    #[allow(clippy::mut_from_ref)]
    pub fn u16s_mut(&self) -> &mut [u16] {
        self.check_align(2);
        // SAFETY: as `bytes_mut`, and aligned (checked).
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u16, self.bytes / 2) }
    }
    #[allow(clippy::mut_from_ref)]
    pub fn f32s_mut(&self) -> &mut [f32] {
        self.check_align(4);
        // SAFETY: as `bytes_mut`, and aligned (checked).
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, self.bytes / 4) }
    }
}

/// The boxed host work a stream runs (cuLaunchHostFunc's user data).
type HostWork = Box<dyn FnOnce() + Send + 'static>;

unsafe extern "C" fn run_host_work(data: *mut c_void) {
    // SAFETY: `data` is the `Box<HostWork>` leaked by `launch_host` below, called exactly once.
    let work: Box<HostWork> = unsafe { Box::from_raw(data as *mut HostWork) };
    // A panic must not unwind into the driver: report it; the runner's error sink (set by the
    // work itself) or the missing result tells the step it failed.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        tracing::error!("host work on a stream panicked");
    }
}

impl Gpu {
    /// A new stream of this context (the host lane's).
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        Ok(self.ctx.new_stream()?)
    }

    /// An event for ordering lanes (timing disabled: cheaper to record and wait on).
    pub fn sync_event(&self) -> Result<CudaEvent> {
        Ok(self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?)
    }

    /// Enqueues `work` on `stream`: it runs on a driver thread once the stream's earlier work
    /// is done, and the stream's later work waits for it. `work` must not call CUDA.
    pub fn launch_host(&self, stream: &CudaStream, work: HostWork) -> Result<()> {
        self.ctx.bind_to_thread()?;
        let data = Box::into_raw(Box::new(work)) as *mut c_void;
        // SAFETY: `run_host_work` takes ownership of `data` exactly once when the stream runs it.
        let r = unsafe { sys::cuLaunchHostFunc(stream.cu_stream(), Some(run_host_work), data) }.result();
        if let Err(e) = r {
            // Not enqueued: take the box back so it is freed.
            // SAFETY: the driver did not take `data`.
            drop(unsafe { Box::from_raw(data as *mut HostWork) });
            return Err(e.into());
        }
        Ok(())
    }

    /// Copies `bytes` from a pinned view to device memory, ordered on `stream`.
    pub fn copy_view_to_device(&self, stream: &CudaStream, dst: &DeviceBuffer, src: HostView) -> Result<()> {
        let n = src.bytes.min(dst.bytes as usize);
        if src.bytes != dst.bytes as usize {
            return Err(GpuError::Invalid(format!("host copy of {} bytes into a device buffer of {}", src.bytes, dst.bytes)));
        }
        // SAFETY: `dst` is a live allocation of `n` bytes; `src` is pinned memory kept alive
        // until the streams are synchronised (module comment).
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst.ptr, src.ptr as *const c_void, n, stream.cu_stream()) }.result()?;
        Ok(())
    }

    /// Copies a device buffer into a pinned view, ordered on `stream`.
    pub fn copy_device_to_view(&self, stream: &CudaStream, dst: HostView, src: &DeviceBuffer) -> Result<()> {
        if dst.bytes != src.bytes as usize {
            return Err(GpuError::Invalid(format!("device copy of {} bytes into a host buffer of {}", src.bytes, dst.bytes)));
        }
        // SAFETY: as above.
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst.ptr as *mut c_void, src.ptr, dst.bytes, stream.cu_stream()) }.result()?;
        Ok(())
    }
}

impl DeviceBuffer {
    /// Gives the memory back ordered on `stream` instead of the stream it was taken on.
    /// (A range of an arena frees nothing.)
    pub fn free_on(mut self, stream: &Arc<CudaStream>) {
        if let super::Backing::Pool(s) = &mut self.backing {
            *s = stream.clone();
        }
        drop(self);
    }
}
