//! The kernels compiled with NVRTC, and their launches: [`Kernels::for_config`] compiles what a
//! step of a config launches ([`KernelSet`]) and raises the dynamic shared memory limits it
//! needs once; [`Kernels::launch`] runs a [`Launch`] after checking it against its kernel's
//! parameters and every region against its buffer.

use super::{DeviceBuffer, Gpu, GpuError, Result};
use crate::kernel_cache::KernelCache;
use crate::kernels::{Arg, Kernel, KernelSet, Launch, KERNEL_SOURCES};
use crate::startup::KernelStats;
use cudarc::driver::{sys, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// The compiled kernels of one [`KernelSet`].
pub struct Kernels {
    _modules: Vec<Arc<CudaModule>>,
    /// By [`Kernel::slot`]: the kernel loaded there (with its head size) and its function.
    functions: Vec<Option<(Kernel, CudaFunction)>>,
    stats: KernelStats,
}

impl Kernels {
    /// Compiles every kernel of `set` and sets their shared memory limits.
    pub fn for_set(gpu: &Gpu, set: &KernelSet) -> Result<Kernels> {
        let t0 = std::time::Instant::now();
        let mut kernels = Kernels::compile(gpu, set, KernelCache::user_default().as_ref())?;
        kernels.stats.seconds = t0.elapsed().as_secs_f64();
        let st = kernels.stats;
        tracing::info!("{} kernel files compiled with NVRTC, {} read from the cache, in {:.2} s", st.compiled, st.cached, st.seconds);
        for (k, bytes) in &set.smem_limits {
            kernels
                .function(*k)?
                .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, *bytes as i32)?;
        }
        Ok(kernels)
    }

    /// How the kernels were made.
    pub fn stats(&self) -> KernelStats {
        self.stats
    }

    /// Compiles the files of `set`'s kernels with NVRTC (C++17, sm_XY of the device, the CUDA
    /// include path) to machine code, or reads it from `cache`, and loads the kernels.
    fn compile(gpu: &Gpu, set: &KernelSet, cache: Option<&KernelCache>) -> Result<Kernels> {
        let (major, minor) = gpu.compute_capability()?;
        let options =
            vec![format!("--gpu-architecture=sm_{major}{minor}"), "-I/usr/local/cuda/include".to_string(), "-std=c++17".to_string()];
        let t0 = std::time::Instant::now();
        let (nvrtc, driver) = (super::nvrtc::version()?, gpu.driver_version()?);
        tracing::debug!("NVRTC {nvrtc} loaded in {:.3} s", t0.elapsed().as_secs_f64());
        let mut stats = KernelStats::default();
        let files: Vec<(&'static str, &'static str, Vec<Kernel>)> = KERNEL_SOURCES
            .iter()
            .map(|(file, src)| (*file, *src, set.kernels.iter().copied().filter(|k| k.file() == *file).collect::<Vec<_>>()))
            .filter(|(_, _, here)| !here.is_empty())
            .collect();
        // Machine code from the cache where it loads; the rest compiled by NVRTC on a thread each.
        let mut images: Vec<Option<Arc<CudaModule>>> = Vec::new();
        let mut paths = Vec::new();
        for (file, src, _) in &files {
            let path = cache.map(|c| c.path(file, src, &options, &nvrtc, &driver));
            images.push(path.as_deref().and_then(KernelCache::read).and_then(|bin| gpu.ctx.load_module(Ptx::from_binary(bin)).ok()));
            paths.push(path);
        }
        let compiled: Vec<(usize, Result<Vec<u8>>)> = std::thread::scope(|scope| -> Result<_> {
            let jobs: Vec<_> = (0..files.len())
                .filter(|&i| images[i].is_none())
                .map(|i| {
                    let (file, src, _) = files[i];
                    let options = &options;
                    scope.spawn(move || {
                        let t = std::time::Instant::now();
                        let r = super::nvrtc::compile_cubin(file, src, options);
                        tracing::debug!("compiled {file} in {:.3} s", t.elapsed().as_secs_f64());
                        (i, r)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().map_err(|_| GpuError::Invalid("an NVRTC thread panicked".into()))).collect()
        })?;
        stats.cached = images.iter().filter(|m| m.is_some()).count() as u32;
        for (i, cubin) in compiled {
            let cubin = cubin?;
            if let Some(p) = &paths[i] {
                KernelCache::write(p, &cubin);
            }
            images[i] = Some(gpu.ctx.load_module(Ptx::from_binary(cubin))?);
            stats.compiled += 1;
        }
        let mut modules = Vec::new();
        let mut functions: Vec<Option<(Kernel, CudaFunction)>> = (0..Kernel::SLOTS).map(|_| None).collect();
        for ((file, _, here), module) in files.iter().zip(images) {
            let module = module.expect("every file is loaded or compiled above");
            for &k in here {
                let name = k.name();
                let f = module.load_function(&name).map_err(|e| GpuError::Invalid(format!("loading {name} from {file}: {e}")))?;
                functions[k.slot()] = Some((k, f));
            }
            modules.push(module);
        }
        Ok(Kernels { _modules: modules, functions, stats })
    }

    fn function(&self, k: Kernel) -> Result<&CudaFunction> {
        match &self.functions[k.slot()] {
            Some((loaded, f)) if *loaded == k => Ok(f),
            _ => Err(GpuError::NoKernel(k.name())),
        }
    }

    /// Launches `l` on `stream`, each region's buffer given by `resolve`. Checks the arguments
    /// against the kernel's parameters and every region against its live buffer first.
    pub fn launch<'r, B: Copy>(&self, stream: &CudaStream, l: &Launch<B>, resolve: impl Fn(B) -> Result<&'r DeviceBuffer>) -> Result<()> {
        l.check().map_err(GpuError::Invalid)?;
        let f = self.function(l.kernel)?;
        /// An argument's value, as the kernel takes it.
        enum Value {
            P(u64),
            I(i32),
            L(i64),
            F(f32),
        }
        let mut values = Vec::with_capacity(l.args.len());
        for a in &l.args {
            values.push(match *a {
                Arg::Buf(r) => Value::P(resolve(r.buf)?.range(r.offset, r.bytes)?.ptr()),
                Arg::I32(x) => Value::I(x),
                Arg::I64(x) => Value::L(x),
                Arg::F32(x) => Value::F(x),
            });
        }
        let mut b = stream.launch_builder(f);
        for v in &values {
            match v {
                Value::P(p) => b.arg(p),
                Value::I(i) => b.arg(i),
                Value::L(x) => b.arg(x),
                Value::F(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig { grid_dim: l.grid, block_dim: (l.block, 1, 1), shared_mem_bytes: l.smem };
        // SAFETY: the arguments match the kernel's parameters in count and type (checked against
        // `Kernel::params`, the contract of executor/kernels/README.md); every pointer is inside
        // a live buffer and spans what the kernel touches for the sizes it is given (the
        // launchers of crate::kernels narrow each region to that, checked against the buffer
        // above); the geometry and shared memory are the launcher's, whose limit was raised at
        // set-up when above the default.
        unsafe { b.launch(cfg) }.map_err(|e| GpuError::Invalid(format!("launching {}: {e}", l.kernel.name())))?;
        Ok(())
    }
}
