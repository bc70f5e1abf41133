//! The kernels compiled with NVRTC, and their launches: [`Kernels::for_config`] compiles what a
//! step of a config launches ([`KernelSet`]) and raises the dynamic shared memory limits it
//! needs once; [`Kernels::launch`] runs a [`Launch`] after checking it against its kernel's
//! parameters and every region against its buffer.

use super::{DeviceBuffer, Gpu, GpuError, Result};
use crate::kernel_cache::KernelCache;
use crate::kernels::{Arg, Kernel, KernelSet, Launch, SpinNs, KERNEL_SOURCES};
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

/// The machine code of a [`KernelSet`]'s files, from the on-disk cache or compiled by NVRTC:
/// made without the CUDA driver, so it can run on a thread while the driver pins host memory.
pub struct KernelImages {
    set: KernelSet,
    /// Per file: its name, its kernels, its CUBIN.
    files: Vec<(&'static str, Vec<Kernel>, Vec<u8>)>,
    stats: KernelStats,
}

/// What machine code is made for: the device's compute capability and its driver's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub major: i32,
    pub minor: i32,
    pub driver: String,
}

impl Target {
    pub fn of(gpu: &Gpu) -> Result<Target> {
        let (major, minor) = gpu.compute_capability()?;
        Ok(Target { major, minor, driver: gpu.driver_version()? })
    }
}

impl KernelImages {
    /// Reads every file of `set` from `cache` where it is there; compiles the rest with NVRTC
    /// (C++17, sm_XY of the target, the CUDA include path), a thread each, and caches them.
    pub fn prepare(set: &KernelSet, target: &Target, cache: Option<&KernelCache>) -> Result<KernelImages> {
        let t0 = std::time::Instant::now();
        let options = vec![
            format!("--gpu-architecture=sm_{}{}", target.major, target.minor),
            "-I/usr/local/cuda/include".to_string(),
            "-std=c++17".to_string(),
        ];
        let nvrtc = super::nvrtc::version()?;
        tracing::debug!("NVRTC {nvrtc} loaded in {:.3} s", t0.elapsed().as_secs_f64());
        let wanted: Vec<(&'static str, &'static str, Vec<Kernel>)> = KERNEL_SOURCES
            .iter()
            .map(|(file, src)| (*file, *src, set.kernels.iter().copied().filter(|k| k.file() == *file).collect::<Vec<_>>()))
            .filter(|(_, _, here)| !here.is_empty())
            .collect();
        // Each file's options: the flash attention builds only the head size the set launches.
        let file_options: Vec<Vec<String>> = wanted
            .iter()
            .map(|(_, _, here)| {
                let mut o = options.clone();
                if let Some(Kernel::FlashForward(d)) = here.iter().find(|k| matches!(k, Kernel::FlashForward(_))) {
                    o.push(format!("-DFLASH_HEAD_SIZE={d}"));
                }
                o
            })
            .collect();
        let paths: Vec<Option<std::path::PathBuf>> = wanted
            .iter()
            .zip(&file_options)
            .map(|((file, src, _), options)| cache.map(|c| c.path(file, src, options, &nvrtc, &target.driver)))
            .collect();
        let mut images: Vec<Option<Vec<u8>>> = paths.iter().map(|p| p.as_deref().and_then(KernelCache::read)).collect();
        let mut stats = KernelStats { cached: images.iter().filter(|i| i.is_some()).count() as u32, ..KernelStats::default() };
        if images.iter().any(|i| i.is_none()) {
            super::nvrtc::read_ahead();
        }
        let compiled: Vec<(usize, Result<Vec<u8>>)> = std::thread::scope(|scope| -> Result<_> {
            let jobs: Vec<_> = (0..wanted.len())
                .filter(|&i| images[i].is_none())
                .map(|i| {
                    let (file, src, _) = &wanted[i];
                    let (file, src, options) = (*file, *src, &file_options[i]);
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
        for (i, cubin) in compiled {
            let cubin = cubin?;
            if let Some(p) = &paths[i] {
                KernelCache::write(p, &cubin);
            }
            images[i] = Some(cubin);
            stats.compiled += 1;
        }
        stats.seconds = t0.elapsed().as_secs_f64();
        let files = wanted.into_iter().zip(images).map(|((file, _, here), image)| (file, here, image.unwrap_or_default())).collect();
        Ok(KernelImages { set: set.clone(), files, stats })
    }

    pub fn stats(&self) -> KernelStats {
        self.stats
    }
}

impl Kernels {
    /// The kernels of `set`, from the cache or NVRTC, loaded, with their shared memory limits.
    pub fn for_set(gpu: &Gpu, set: &KernelSet) -> Result<Kernels> {
        let images = KernelImages::prepare(set, &Target::of(gpu)?, KernelCache::user_default().as_ref())?;
        Kernels::load(gpu, images)
    }

    /// Loads prepared machine code and sets the shared memory limits.
    pub fn load(gpu: &Gpu, images: KernelImages) -> Result<Kernels> {
        let t0 = std::time::Instant::now();
        let mut modules = Vec::new();
        let mut functions: Vec<Option<(Kernel, CudaFunction)>> = (0..Kernel::SLOTS).map(|_| None).collect();
        for (file, here, cubin) in images.files {
            let module = gpu.ctx.load_module(Ptx::from_binary(cubin)).map_err(|e| GpuError::Invalid(format!("loading {file}: {e}")))?;
            for k in here {
                let name = k.name();
                let f = module.load_function(&name).map_err(|e| GpuError::Invalid(format!("loading {name} from {file}: {e}")))?;
                functions[k.slot()] = Some((k, f));
            }
            modules.push(module);
        }
        let kernels = Kernels { _modules: modules, functions, stats: images.stats };
        for (k, bytes) in &images.set.smem_limits {
            kernels
                .function(*k)?
                .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, *bytes as i32)?;
        }
        let st = images.stats;
        tracing::info!(
            "{} kernel files compiled with NVRTC and {} read from the cache in {:.2} s, loaded in {:.2} s",
            st.compiled,
            st.cached,
            st.seconds,
            t0.elapsed().as_secs_f64()
        );
        Ok(kernels)
    }

    /// How the kernels were made.
    pub fn stats(&self) -> KernelStats {
        self.stats
    }

    fn function(&self, k: Kernel) -> Result<&CudaFunction> {
        match &self.functions[k.slot()] {
            Some((loaded, f)) if *loaded == k => Ok(f),
            _ => Err(GpuError::NoKernel(k.name())),
        }
    }

    /// Queues `spin_ns`: the stream is held `ns` nanoseconds (no buffers).
    pub fn spin(&self, stream: &CudaStream, ns: u64) -> Result<()> {
        self.launch(stream, &SpinNs { ns }.launch::<()>(), |_| Err(GpuError::Invalid("spin_ns takes no buffers".into())))
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
