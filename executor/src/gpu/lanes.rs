//! The lanes a schedule runs on ([`Lanes`]): a stream per lane (compute, the two copy streams,
//! and a host stream whose work runs through cuLaunchHostFunc), the schedule's events, and the
//! pinned host copies of the tensors that live off the GPU, with every access to those copies:
//! copies to and from device buffers on the copy lanes, and host work on the host lane.
//!
//! Soundness of the host copies: host memory is read and written by the copy engines and by host
//! functions on a driver thread, while the runner goes on issuing. No two of those accesses may
//! overlap when one writes. [`Lanes::new`] refuses a schedule in which two accesses of one host
//! copy, one a write, are not ordered by its lanes and events (`models::order`); the accesses
//! happen only through the methods below, which issue the schedule's copies, host work,
//! records and waits in the schedule's order, each once per step ([`Lanes::begin_step`],
//! [`Lanes::end_step`], which waits for every lane); host work sees the host copies of its op's
//! tensors through a [`HostAccess`], which hands out each written copy once; and the buffers
//! are freed only after every lane is done (dropping [`Lanes`] waits for them).

use super::{DeviceBuffer, Gpu, GpuError, PinnedBuffer, Result};
use crate::host::bf16::{as_bf16, as_bf16_mut, bf16};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};
use models::order::check_host_copies;
use models::schedule::{Action, Lane, Schedule};
use models::{Program, TensorId};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;

/// How host work uses a host copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One host copy a host function may use.
struct Entry {
    tensor: TensorId,
    ptr: *mut u8,
    bytes: usize,
    access: Access,
    taken: bool,
}

/// The host copies one host function uses, as [`Lanes::host_run`] gave them.
struct Entries(Vec<Entry>);

// SAFETY: the pointers are to pinned buffers that `Lanes` owns and frees only after every lane
// (the host lane's functions included) is done; the entries move to the one driver thread that
// runs the function.
unsafe impl Send for Entries {}

/// The host copies of one op's tensors, for its host work: read-only those it reads, writable
/// (each handed out once) those it writes.
pub struct HostAccess<'a> {
    entries: Vec<Entry>,
    _copies: std::marker::PhantomData<&'a mut [u8]>,
}

impl<'a> HostAccess<'a> {
    fn entry(&mut self, t: TensorId, access: Access, align: usize) -> std::result::Result<&mut Entry, String> {
        let e = self.entries.iter_mut().find(|e| e.tensor == t).ok_or_else(|| format!("tensor #{} is not the op's", t.0))?;
        if e.access != access {
            return Err(format!("tensor #{} is not {:?} by the op", t.0, access));
        }
        // Pinned allocations are page aligned; a misaligned copy is a bug in this module.
        assert!((e.ptr as usize).is_multiple_of(align) && e.bytes.is_multiple_of(align), "host copy not aligned to {align}");
        Ok(e)
    }

    /// A copy the op reads, as bf16.
    pub fn bf16(&mut self, t: TensorId) -> std::result::Result<&'a [bf16], String> {
        let e = self.entry(t, Access::Read, 2)?;
        // SAFETY: a live pinned copy (see `Entries`); the op only reads it, and no access that
        // writes it overlaps this host function (the module comment).
        Ok(as_bf16(unsafe { std::slice::from_raw_parts(e.ptr as *const u16, e.bytes / 2) }))
    }

    /// A copy the op reads, as f32.
    pub fn f32(&mut self, t: TensorId) -> std::result::Result<&'a [f32], String> {
        let e = self.entry(t, Access::Read, 4)?;
        // SAFETY: as `bf16`.
        Ok(unsafe { std::slice::from_raw_parts(e.ptr as *const f32, e.bytes / 4) })
    }

    /// Takes a copy the op writes (once), as bf16.
    pub fn bf16_mut(&mut self, t: TensorId) -> std::result::Result<&'a mut [bf16], String> {
        let e = self.take(t, 2)?;
        // SAFETY: as `bf16`, and no other access of this copy overlaps this host function at
        // all; `take` hands the slice out once.
        Ok(as_bf16_mut(unsafe { std::slice::from_raw_parts_mut(e.0 as *mut u16, e.1 / 2) }))
    }

    /// Takes a copy the op writes (once), as f32.
    pub fn f32_mut(&mut self, t: TensorId) -> std::result::Result<&'a mut [f32], String> {
        let e = self.take(t, 4)?;
        // SAFETY: as `bf16_mut`.
        Ok(unsafe { std::slice::from_raw_parts_mut(e.0 as *mut f32, e.1 / 4) })
    }

    fn take(&mut self, t: TensorId, align: usize) -> std::result::Result<(*mut u8, usize), String> {
        let e = self.entry(t, Access::Write, align)?;
        if e.taken {
            return Err(format!("tensor #{} was taken already", t.0));
        }
        e.taken = true;
        Ok((e.ptr, e.bytes))
    }
}

/// Host work of one `HostRun`: runs on a driver thread with its op's host copies; must not
/// call CUDA.
pub type HostJob = Box<dyn for<'a> FnOnce(HostAccess<'a>) + Send + 'static>;

/// The boxed function a stream runs (cuLaunchHostFunc's user data).
type HostWork = Box<dyn FnOnce() + Send + 'static>;

/// The host function every `launch_host` enqueues: runs the boxed work once.
///
/// # Safety
/// `data` is a pointer `launch_host` made with `Box::into_raw` from a `Box<HostWork>`, passed to
/// this function exactly once (the driver calls a host function once).
unsafe extern "C" fn run_host_work(data: *mut c_void) {
    // SAFETY: `data` is the `Box<HostWork>` leaked by `launch_host` below, called exactly once.
    let work: Box<HostWork> = unsafe { Box::from_raw(data as *mut HostWork) };
    // A panic must not unwind into the driver: report it; the runner's error sink (set by the
    // work itself) or the missing result tells the step it failed.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        tracing::error!("host work on a stream panicked");
    }
}

/// Enqueues `work` on `stream`: it runs on a driver thread once the stream's earlier work is
/// done, and the stream's later work waits for it.
fn launch_host(gpu: &Gpu, stream: &CudaStream, work: HostWork) -> Result<()> {
    gpu.ctx.bind_to_thread()?;
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

/// Whether the order of an action matters to the host copies (it accesses one, or orders lanes).
fn orders_host_copies(a: &Action) -> bool {
    matches!(a, Action::Prefetch(_) | Action::Evict(_) | Action::HostRun(_) | Action::Record(..) | Action::Wait(..))
}

/// The lanes of one schedule run, its events and its pinned host copies.
pub struct Lanes<'s> {
    gpu: &'s Gpu,
    program: &'s Program,
    actions: &'s [Action],
    /// By lane: compute, H2D, D2H, host.
    streams: [Arc<CudaStream>; 4],
    events: Vec<CudaEvent>,
    copies: Vec<Option<PinnedBuffer>>,
    pinned_bytes: u64,
    /// The next action of the step being issued; None between steps.
    next: Cell<Option<usize>>,
}

/// The pinned host copies of a schedule's off-GPU tensors (`Schedule::pinned_tensors`), made
/// apart from the lanes so that a run can pin them on another thread while it compiles and
/// allocates.
pub struct HostCopies {
    copies: Vec<(TensorId, PinnedBuffer)>,
}

impl HostCopies {
    /// Refuses a schedule whose host copies race, then pins every copy (in parallel).
    pub fn pin(ctx: &Arc<CudaContext>, program: &Program, schedule: &Schedule) -> Result<HostCopies> {
        check_host_copies(program, &schedule.actions).map_err(|e| GpuError::Invalid(format!("the schedule cannot run: {e}")))?;
        let want = schedule.pinned_tensors(program);
        let sizes: Vec<usize> = want.iter().map(|t| program.inventory.tensor(*t).bytes.0 as usize).collect();
        Ok(HostCopies { copies: want.into_iter().zip(PinnedBuffer::many(ctx, &sizes)?).collect() })
    }

    /// Bytes pinned.
    pub fn bytes(&self) -> u64 {
        self.copies.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

impl<'s> Lanes<'s> {
    /// The device's three streams and a new host stream, the host copies (pinned for this
    /// schedule by [`HostCopies::pin`]) and the schedule's events.
    pub fn new(gpu: &'s Gpu, program: &'s Program, schedule: &'s Schedule, host: HostCopies) -> Result<Lanes<'s>> {
        check_host_copies(program, &schedule.actions).map_err(|e| GpuError::Invalid(format!("the schedule cannot run: {e}")))?;
        let streams = [gpu.compute.clone(), gpu.h2d.clone(), gpu.d2h.clone(), gpu.ctx.new_stream()?];
        let inv = &program.inventory;
        let mut copies: Vec<Option<PinnedBuffer>> = (0..inv.tensors.len()).map(|_| None).collect();
        let pinned_bytes = host.bytes();
        let want = schedule.pinned_tensors(program);
        if want.len() != host.copies.len() {
            return Err(GpuError::Invalid("the host copies were pinned for another schedule".into()));
        }
        for (t, buf) in host.copies {
            let need = inv.tensor(t).bytes.0;
            if buf.len() as u64 != need || !want.contains(&t) {
                return Err(GpuError::Invalid(format!("the host copies were pinned for another schedule ({})", inv.tensor(t).name)));
            }
            copies[t.index()] = Some(buf);
        }
        let n_events = schedule
            .actions
            .iter()
            .filter_map(|a| if let Action::Record(e, _) = a { Some(e.0 as usize + 1) } else { None })
            .max()
            .unwrap_or(0);
        let events = (0..n_events).map(|_| gpu.sync_event()).collect::<Result<_>>()?;
        Ok(Lanes { gpu, program, actions: &schedule.actions, streams, events, copies, pinned_bytes, next: Cell::new(None) })
    }

    /// The stream of `lane`.
    pub fn stream(&self, lane: Lane) -> &Arc<CudaStream> {
        &self.streams[lane.index()]
    }

    /// Bytes of the pinned host copies.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }

    /// Whether `t` has a host copy.
    pub fn has_copy(&self, t: TensorId) -> bool {
        self.copies[t.index()].is_some()
    }

    /// The host copy of `t`, to read between steps (nothing writes the copies then).
    pub fn copy(&self, t: TensorId) -> Result<&[u8]> {
        if self.next.get().is_some() {
            return Err(GpuError::Invalid("host copies are read between steps, not during one".into()));
        }
        let name = &self.program.inventory.tensor(t).name;
        Ok(self.copies[t.index()].as_ref().ok_or_else(|| GpuError::Invalid(format!("{name} has no host copy")))?.as_slice())
    }

    /// The host copy of `t`, to write into between steps (nothing uses the copies then).
    pub fn copy_mut(&mut self, t: TensorId) -> Result<&mut [u8]> {
        if self.next.get().is_some() {
            return Err(GpuError::Invalid("host copies are written between steps, not during one".into()));
        }
        let name = &self.program.inventory.tensor(t).name;
        Ok(self.copies[t.index()].as_mut().ok_or_else(|| GpuError::Invalid(format!("{name} has no host copy")))?.as_mut_slice())
    }

    /// Starts issuing a step's actions.
    pub fn begin_step(&self) -> Result<()> {
        if self.next.get().is_some() {
            return Err(GpuError::Invalid("a step began before the last one ended".into()));
        }
        self.next.set(Some(0));
        Ok(())
    }

    /// Every action that orders the host copies was issued: waits for every lane, in
    /// `Lane::ALL` order.
    pub fn end_step(&self) -> Result<()> {
        self.advance(self.actions.len())?;
        for s in &self.streams {
            s.synchronize()?;
        }
        self.next.set(None);
        Ok(())
    }

    /// Moves the step to action `i`: an error unless the step has begun and every action before
    /// `i` that orders the host copies has been issued.
    fn advance(&self, i: usize) -> Result<()> {
        let next = self.next.get().ok_or_else(|| GpuError::Invalid(format!("action {i} issued outside a step")))?;
        if i < next {
            return Err(GpuError::Invalid(format!("action {i} issued after action {}", next - 1)));
        }
        if let Some(skipped) = (next..i).find(|&j| orders_host_copies(&self.actions[j])) {
            return Err(GpuError::Invalid(format!("action {i} issued before action {skipped}")));
        }
        self.next.set(Some(i + 1));
        Ok(())
    }

    fn copy_of(&self, t: TensorId) -> Result<&PinnedBuffer> {
        self.copies[t.index()]
            .as_ref()
            .ok_or_else(|| GpuError::Invalid(format!("{} has no host copy", self.program.inventory.tensor(t).name)))
    }

    fn action(&self, i: usize) -> Result<Action> {
        self.actions.get(i).cloned().ok_or_else(|| GpuError::Invalid(format!("the schedule has no action {i}")))
    }

    /// Issues action `i`, a `Prefetch`: its tensor's host copy into `dst` on the H2D lane.
    pub fn prefetch(&self, i: usize, dst: &DeviceBuffer) -> Result<()> {
        let Action::Prefetch(t) = self.action(i)? else {
            return Err(GpuError::Invalid(format!("action {i} is not a prefetch")));
        };
        let host = self.copy_for(i, t, dst)?;
        // SAFETY: `dst` is a live allocation of that many bytes (checked); the source is a host
        // copy no access that writes it overlaps, alive until every lane is done (the module
        // comment).
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst.ptr, host.ptr as *const c_void, host.len(), self.stream(Lane::HostToDevice).cu_stream()) }
            .result()?;
        Ok(())
    }

    /// Issues action `i`, an `Evict`: `src` into its tensor's host copy on the D2H lane.
    pub fn evict(&self, i: usize, src: &DeviceBuffer) -> Result<()> {
        let Action::Evict(t) = self.action(i)? else {
            return Err(GpuError::Invalid(format!("action {i} is not an evict")));
        };
        let host = self.copy_for(i, t, src)?;
        // SAFETY: as `prefetch`; no other access of the host copy overlaps this write.
        unsafe { sys::cuMemcpyDtoHAsync_v2(host.ptr as *mut c_void, src.ptr, host.len(), self.stream(Lane::DeviceToHost).cu_stream()) }
            .result()?;
        Ok(())
    }

    /// The host copy of `t` for a copy to or from `device` (of the same size) at action `i`,
    /// which is then issued.
    fn copy_for(&self, i: usize, t: TensorId, device: &DeviceBuffer) -> Result<&PinnedBuffer> {
        let host = self.copy_of(t)?;
        if host.len() as u64 != device.bytes() {
            return Err(GpuError::Invalid(format!(
                "a copy between a host copy of {} bytes and a device buffer of {}",
                host.len(),
                device.bytes()
            )));
        }
        self.advance(i)?;
        Ok(host)
    }

    /// Issues action `i`, a `HostRun`, on the host lane: `job` gets the host copies of `uses`,
    /// which must be tensors the op reads (`Read`) or writes (`Write`), each with a host copy.
    pub fn host_run(&self, i: usize, uses: &[(TensorId, Access)], job: HostJob) -> Result<()> {
        let Action::HostRun(o) = self.action(i)? else {
            return Err(GpuError::Invalid(format!("action {i} is not host work")));
        };
        let op = self.program.op(o);
        let mut entries = Vec::with_capacity(uses.len());
        for &(t, access) in uses {
            let name = &self.program.inventory.tensor(t).name;
            let allowed = match access {
                Access::Read => op.reads.contains(&t) && !op.writes.contains(&t) && !op.allocs.contains(&t),
                Access::Write => op.writes.contains(&t) || op.allocs.contains(&t),
            };
            if !allowed || uses.iter().filter(|(u, _)| *u == t).count() > 1 {
                return Err(GpuError::Invalid(format!("{}: host work cannot use {name} as {access:?}", op.name)));
            }
            let buf = self.copy_of(t)?;
            entries.push(Entry { tensor: t, ptr: buf.ptr, bytes: buf.len(), access, taken: false });
        }
        self.advance(i)?;
        let entries = Entries(entries);
        launch_host(
            self.gpu,
            self.stream(Lane::Host),
            Box::new(move || {
                let entries = entries;
                job(HostAccess { entries: entries.0, _copies: std::marker::PhantomData })
            }),
        )
    }

    /// Issues action `i`, a `Record`.
    pub fn record(&self, i: usize) -> Result<()> {
        let Action::Record(e, lane) = self.action(i)? else {
            return Err(GpuError::Invalid(format!("action {i} is not a record")));
        };
        self.advance(i)?;
        self.events[e.0 as usize].record(self.stream(lane))?;
        Ok(())
    }

    /// Issues action `i`, a `Wait`.
    pub fn wait(&self, i: usize) -> Result<()> {
        let Action::Wait(e, lane) = self.action(i)? else {
            return Err(GpuError::Invalid(format!("action {i} is not a wait")));
        };
        let ev = self.events.get(e.0 as usize).ok_or_else(|| GpuError::Invalid(format!("event {} is never recorded", e.0)))?;
        self.advance(i)?;
        self.stream(lane).wait(ev)?;
        Ok(())
    }
}

impl Drop for Lanes<'_> {
    fn drop(&mut self) {
        // The copies and host work may still run (a step that failed halfway): wait for them
        // before the host copies are freed.
        for s in &self.streams {
            if let Err(e) = s.synchronize() {
                tracing::warn!("waiting for a lane before freeing the host copies: {e}");
            }
        }
    }
}

impl Gpu {
    /// Enqueues a host function that does nothing on `stream`: calibrate times what a host
    /// lane's hop costs the streams that wait on it.
    pub fn host_noop(&self, stream: &CudaStream) -> Result<()> {
        launch_host(self, stream, Box::new(|| {}))
    }

    /// An event for ordering lanes (timing disabled: cheaper to record and wait on).
    pub fn sync_event(&self) -> Result<CudaEvent> {
        Ok(self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?)
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
