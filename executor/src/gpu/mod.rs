//! Everything that touches CUDA, and all of the executor's `unsafe`: the context and its three
//! streams (compute, host-to-device, device-to-host), timing events, the stream-ordered memory
//! pool (`cuMemAllocAsync` on the device's default pool, release threshold at the maximum so
//! freed memory stays reserved), pinned host memory, NVRTC compilation of `executor/kernels/*.cu`
//! (carried in the binary with `include_str!`), kernel launches, and cuBLASLt bf16 matrix
//! products with fp32 accumulation.
//!
//! Device memory is owned by RAII values ([`DeviceBuffer`], [`PinnedBuffer`]); every CUDA call's
//! result is checked and turned into a [`GpuError`].

use cudarc::cublaslt::result as ltr;
use cudarc::cublaslt::result::CublasError;
use cudarc::cublaslt::sys as lts;
use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

pub mod lanes;
pub use lanes::HostView;

/// What can go wrong on the GPU side.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    #[error("cuBLASLt: {0}")]
    Blas(#[from] CublasError),
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
        self.ctx.bind_to_thread()?;
        // SAFETY: plain cuMemHostAlloc; freed in Drop.
        let ptr = unsafe { result::malloc_host(bytes.max(1), 0) }? as *mut u8;
        Ok(PinnedBuffer { ptr, bytes })
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

    /// Copies host bytes into device memory, ordered on `stream`, and waits for it.
    pub fn upload(&self, stream: &CudaStream, dst: u64, src: &[u8]) -> Result<()> {
        // SAFETY: `src` stays borrowed until the synchronize below returns.
        unsafe { result::memcpy_htod_async(dst, src, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }

    /// Copies device bytes to the host, ordered on `stream`, and waits for it.
    pub fn download(&self, stream: &CudaStream, dst: &mut [u8], src: u64) -> Result<()> {
        // SAFETY: `dst` stays borrowed until the synchronize below returns.
        unsafe { result::memcpy_dtoh_async(dst, src, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }

    /// Asynchronous copy from pinned host memory to the device.
    pub fn upload_pinned_async(&self, stream: &CudaStream, dst: u64, src: &PinnedBuffer, bytes: usize) -> Result<()> {
        if bytes > src.bytes {
            return Err(GpuError::Invalid(format!("copy of {bytes} bytes from a pinned buffer of {}", src.bytes)));
        }
        // SAFETY: pinned memory that outlives the copy as long as the caller keeps it (the
        // executor keeps its staging buffers for the whole run and synchronises before reuse).
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.ptr as *const c_void, bytes, stream.cu_stream()) }.result()?;
        Ok(())
    }

    /// Asynchronous copy from the device to pinned host memory.
    pub fn download_pinned_async(&self, stream: &CudaStream, dst: &mut PinnedBuffer, src: u64, bytes: usize) -> Result<()> {
        if bytes > dst.bytes {
            return Err(GpuError::Invalid(format!("copy of {bytes} bytes into a pinned buffer of {}", dst.bytes)));
        }
        // SAFETY: as above.
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst.ptr as *mut c_void, src, bytes, stream.cu_stream()) }.result()?;
        Ok(())
    }

    /// Device-to-device copy on `stream`.
    pub fn copy_d2d(&self, stream: &CudaStream, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: both ranges are live allocations of at least `bytes` (callers check).
        unsafe { result::memcpy_dtod_async(dst, src, bytes, stream.cu_stream()) }?;
        Ok(())
    }

    /// Sets `bytes` bytes to zero on `stream`.
    pub fn zero(&self, stream: &CudaStream, dst: u64, bytes: usize) -> Result<()> {
        // SAFETY: a live allocation of at least `bytes`.
        unsafe { result::memset_d8_async(dst, 0, bytes, stream.cu_stream()) }?;
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
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
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

/// Page-locked host memory.
pub struct PinnedBuffer {
    ptr: *mut u8,
    bytes: usize,
}

impl PinnedBuffer {
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
    pub fn as_mut_u16s(&mut self) -> &mut [u16] {
        // SAFETY: cuMemHostAlloc returns page-aligned memory; uniquely borrowed.
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

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc.
        if let Err(e) = unsafe { result::free_host(self.ptr as *mut c_void) } {
            tracing::warn!("cuMemFreeHost failed: {e}");
        }
    }
}

/// The kernel sources, carried in the binary.
pub const KERNEL_FILES: &[(&str, &str)] = &[
    ("encoder.cu", include_str!("../../kernels/encoder.cu")),
    ("layernorm.cu", include_str!("../../kernels/layernorm.cu")),
    ("bias.cu", include_str!("../../kernels/bias.cu")),
    ("gelu.cu", include_str!("../../kernels/gelu.cu")),
    ("crossentropy.cu", include_str!("../../kernels/crossentropy.cu")),
    ("adamw.cu", include_str!("../../kernels/adamw.cu")),
    ("misc.cu", include_str!("../../kernels/misc.cu")),
    ("attention.cu", include_str!("../../kernels/attention.cu")),
    ("attention_materialized.cu", include_str!("../../kernels/attention_materialized.cu")),
];

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer.
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

/// The compiled kernels.
pub struct Kernels {
    _modules: Vec<Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
}

impl Kernels {
    /// Compiles `files` (name, source) with NVRTC (C++17, sm_XY of the device, the CUDA include
    /// path) and loads every `extern "C" __global__` function named in `wanted`.
    pub fn compile(gpu: &Gpu, files: &[(&'static str, &'static str)], wanted: &[(&'static str, &str)]) -> Result<Kernels> {
        let (major, minor) = gpu.compute_capability()?;
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        let mut modules = Vec::new();
        let mut functions = HashMap::new();
        for (file, src) in files {
            let names: Vec<&str> = wanted.iter().filter(|(f, _)| f == file).map(|(_, n)| *n).collect();
            if names.is_empty() {
                continue;
            }
            let opts = CompileOptions {
                arch: Some(arch),
                include_paths: vec!["/usr/local/cuda/include".into()],
                options: vec!["-std=c++17".into()],
                name: Some(file.to_string()),
                ..Default::default()
            };
            let ptx = compile_ptx_with_opts(src, opts).map_err(|e| GpuError::Compile { file, message: e.to_string() })?;
            let module = gpu.ctx.load_module(ptx)?;
            for n in names {
                let f = module.load_function(n).map_err(|e| GpuError::Invalid(format!("loading {n} from {file}: {e}")))?;
                functions.insert(n.to_string(), f);
            }
            modules.push(module);
        }
        Ok(Kernels { _modules: modules, functions })
    }

    fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| GpuError::NoKernel(name.to_string()))
    }

    /// Sets a kernel's maximum dynamic shared memory (needed above 48 KiB).
    pub fn set_max_dynamic_smem(&self, name: &str, bytes: u32) -> Result<()> {
        self.func(name)?.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)?;
        Ok(())
    }

    /// Launches `name` on `stream` with `args` by value.
    pub fn launch(&self, stream: &CudaStream, name: &str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        let f = self.func(name)?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Err(GpuError::Invalid(format!("{name}: empty grid {grid:?}")));
        }
        let mut b = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(p) => b.arg(p),
                Arg::I(i) => b.arg(i),
                Arg::L(l) => b.arg(l),
                Arg::F(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem };
        // SAFETY: argument types and counts follow executor/kernels/README.md exactly (the
        // caller passes them in the contract's order); pointers are live device allocations.
        unsafe { b.launch(cfg) }.map_err(|e| GpuError::Invalid(format!("launching {name}: {e}")))?;
        Ok(())
    }
}

/// Element type of a matrix in a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatType {
    Bf16,
    F32,
}

impl MatType {
    fn cuda(self) -> lts::cudaDataType {
        match self {
            MatType::Bf16 => lts::cudaDataType::CUDA_R_16BF,
            MatType::F32 => lts::cudaDataType::CUDA_R_32F,
        }
    }
}

/// One product in cuBLAS's column-major terms: `D (m x n) = op(A) op(B) [+ C] [+ bias (m)]`,
/// A and B bf16, C and D of `out` type, fp32 accumulation. `c` (when given) is added with
/// beta = 1; `bias` is a bf16 vector of m added to every column.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a: u64,
    pub lda: i64,
    pub b: u64,
    pub ldb: i64,
    pub c: Option<u64>,
    pub d: u64,
    pub ldd: i64,
    pub out: MatType,
    pub bias: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    m: u64,
    n: u64,
    k: u64,
    ta: bool,
    tb: bool,
    lda: i64,
    ldb: i64,
    ldd: i64,
    out: MatType,
    bias: bool,
    /// Alignment in bytes (power of two, at most 256) of A, B, C, D: the heuristic assumes
    /// 256 unless told, and an algorithm chosen for 256 may refuse less.
    align: [u32; 4],
}

fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u64 << ptr.trailing_zeros().min(8)) as u32
    }
}

struct Plan {
    desc: lts::cublasLtMatmulDesc_t,
    a: lts::cublasLtMatrixLayout_t,
    b: lts::cublasLtMatrixLayout_t,
    d: lts::cublasLtMatrixLayout_t,
    algo: lts::cublasLtMatmulAlgo_t,
}

/// cuBLASLt with its workspace (the inventory's `matmul_workspace`) and a plan per shape.
pub struct Lt {
    handle: lts::cublasLtHandle_t,
    workspace: u64,
    workspace_bytes: usize,
    plans: RefCell<HashMap<PlanKey, Plan>>,
}

impl Lt {
    /// `workspace` must stay allocated as long as this value is used.
    pub fn new(workspace: &DeviceBuffer) -> Result<Lt> {
        Ok(Lt {
            handle: ltr::create_handle()?,
            workspace: workspace.ptr(),
            workspace_bytes: workspace.bytes() as usize,
            plans: RefCell::new(HashMap::new()),
        })
    }

    fn plan(&self, key: PlanKey) -> Result<()> {
        if self.plans.borrow().contains_key(&key) {
            return Ok(());
        }
        use lts::cublasLtMatmulDescAttributes_t::*;
        let desc = ltr::create_matmul_desc(lts::cublasComputeType_t::CUBLAS_COMPUTE_32F, lts::cudaDataType::CUDA_R_32F)?;
        let op = |t: bool| {
            if t {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (ta, tb) = (op(key.ta), op(key.tb));
        // SAFETY: attribute buffers of the documented types and sizes.
        unsafe {
            ltr::set_matmul_desc_attribute(
                desc,
                CUBLASLT_MATMUL_DESC_TRANSA,
                &ta as *const _ as *const c_void,
                std::mem::size_of_val(&ta),
            )?;
            ltr::set_matmul_desc_attribute(
                desc,
                CUBLASLT_MATMUL_DESC_TRANSB,
                &tb as *const _ as *const c_void,
                std::mem::size_of_val(&tb),
            )?;
            if key.bias {
                let epi = lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                ltr::set_matmul_desc_attribute(
                    desc,
                    CUBLASLT_MATMUL_DESC_EPILOGUE,
                    &epi as *const _ as *const c_void,
                    std::mem::size_of_val(&epi),
                )?;
                let bt = lts::cudaDataType::CUDA_R_16BF;
                ltr::set_matmul_desc_attribute(
                    desc,
                    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    &bt as *const _ as *const c_void,
                    std::mem::size_of_val(&bt),
                )?;
            }
        }
        let (ar, ac) = if key.ta { (key.k, key.m) } else { (key.m, key.k) };
        let (br, bc) = if key.tb { (key.n, key.k) } else { (key.k, key.n) };
        let a = ltr::create_matrix_layout(lts::cudaDataType::CUDA_R_16BF, ar, ac, key.lda)?;
        let b = ltr::create_matrix_layout(lts::cudaDataType::CUDA_R_16BF, br, bc, key.ldb)?;
        let d = ltr::create_matrix_layout(key.out.cuda(), key.m, key.n, key.ldd)?;
        let pref = ltr::create_matmul_pref()?;
        let ws = self.workspace_bytes as u64;
        // SAFETY: as above; all descriptors are live.
        let heur = unsafe {
            ltr::set_matmul_pref_attribute(
                pref,
                lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )?;
            use lts::cublasLtMatmulPreferenceAttributes_t::*;
            for (attr, al) in [
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align[0]),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align[1]),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align[2]),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align[3]),
            ] {
                ltr::set_matmul_pref_attribute(pref, attr, &al as *const u32 as *const c_void, 4)?;
            }
            let h = ltr::get_matmul_algo_heuristic(self.handle, desc, a, b, d, d, pref);
            ltr::destroy_matmul_pref(pref)?;
            h
        }
        .map_err(|e| GpuError::Invalid(format!("no cuBLASLt algorithm for {key:?}: {e}")))?;
        self.plans.borrow_mut().insert(key, Plan { desc, a, b, d, algo: heur.algo });
        Ok(())
    }

    /// Enqueues one product on `stream`.
    pub fn matmul(&self, stream: &CudaStream, g: &Gemm) -> Result<()> {
        let align = [alignment(g.a), alignment(g.b), alignment(g.c.unwrap_or(g.d)), alignment(g.d)];
        let key = PlanKey {
            m: g.m,
            n: g.n,
            k: g.k,
            ta: g.trans_a,
            tb: g.trans_b,
            lda: g.lda,
            ldb: g.ldb,
            ldd: g.ldd,
            out: g.out,
            bias: g.bias.is_some(),
            align,
        };
        self.plan(key)?;
        let plans = self.plans.borrow();
        let p = &plans[&key];
        let alpha: f32 = 1.0;
        let beta: f32 = if g.c.is_some() { 1.0 } else { 0.0 };
        let c = g.c.unwrap_or(g.d);
        // SAFETY: pointers are live device allocations of the shapes described by the plan's
        // layouts (the step checks tensor sizes); the workspace is the inventory's tensor.
        unsafe {
            if let Some(bias) = g.bias {
                ltr::set_matmul_desc_attribute(
                    p.desc,
                    lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &bias as *const u64 as *const c_void,
                    8,
                )?;
            }
            ltr::matmul(
                self.handle,
                p.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.a as *const c_void,
                p.a,
                g.b as *const c_void,
                p.b,
                c as *const c_void,
                p.d,
                g.d as *mut c_void,
                p.d,
                &p.algo,
                self.workspace as *mut c_void,
                self.workspace_bytes,
                stream.cu_stream() as lts::cudaStream_t,
            )?;
        }
        Ok(())
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created here, destroyed once.
        unsafe {
            for (_, p) in self.plans.borrow_mut().drain() {
                let _ = ltr::destroy_matrix_layout(p.a);
                let _ = ltr::destroy_matrix_layout(p.b);
                let _ = ltr::destroy_matrix_layout(p.d);
                let _ = ltr::destroy_matmul_desc(p.desc);
            }
            let _ = ltr::destroy_handle(self.handle);
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
