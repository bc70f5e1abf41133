//! NVRTC straight to a CUBIN (machine code for the device's architecture), so a cached kernel
//! loads without the driver compiling PTX again.

use super::{GpuError, Result};
use cudarc::nvrtc::{result, sys};
use std::ffi::{CStr, CString};

/// NVRTC's version, "major.minor".
pub fn version() -> Result<String> {
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: nvrtcVersion writes two ints through valid pointers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| GpuError::Invalid(format!("nvrtcVersion: {e}")))?;
    Ok(format!("{major}.{minor}"))
}

/// Compiles `src` (named `file` in messages) with `options` (which must name a real
/// architecture, `--gpu-architecture=sm_XY`) and returns the CUBIN.
pub fn compile_cubin(file: &'static str, src: &str, options: &[String]) -> Result<Vec<u8>> {
    let fail = |message: String| GpuError::Compile { file, message };
    let c_src = CString::new(src).map_err(|_| fail("the source holds a NUL byte".into()))?;
    let c_name = CString::new(file).map_err(|_| fail("the name holds a NUL byte".into()))?;
    let prog = result::create_program(&c_src, Some(&c_name)).map_err(|e| fail(e.to_string()))?;
    /// Destroys the program on every path.
    struct Program(sys::nvrtcProgram);
    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: created by nvrtcCreateProgram above and destroyed once, here.
            if let Err(e) = unsafe { result::destroy_program(self.0) } {
                tracing::warn!("nvrtcDestroyProgram: {e}");
            }
        }
    }
    let prog = Program(prog);
    // SAFETY: a live program; the options are NUL-free strings (CString::new in cudarc).
    if let Err(e) = unsafe { result::compile_program(prog.0, options) } {
        // SAFETY: a live program whose compile ran.
        let log = unsafe { result::get_program_log(prog.0) }.ok().map(|l| {
            // SAFETY: NVRTC's log is NUL-terminated.
            unsafe { CStr::from_ptr(l.as_ptr()) }.to_string_lossy().into_owned()
        });
        return Err(fail(format!("{e}: {}", log.unwrap_or_default())));
    }
    let mut size = 0usize;
    // SAFETY: a compiled program; `size` is a valid out pointer.
    unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }.result().map_err(|e| fail(format!("nvrtcGetCUBINSize: {e}")))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` holds the `size` bytes NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut std::ffi::c_char) }
        .result()
        .map_err(|e| fail(format!("nvrtcGetCUBIN: {e}")))?;
    Ok(cubin)
}

/// Reads NVRTC's libraries (as mapped into this process, and the builtins beside them) from
/// start to end once, before a compile: a first compile on a machine whose disk cache is cold
/// otherwise faults the compiler's pages in one at a time (5.7 s of 6.7 s for attention.cu on
/// the H200 machine), where one sequential read takes a fraction of that.
pub fn read_ahead() {
    let t0 = std::time::Instant::now();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<std::path::PathBuf> =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.contains("libnvrtc")).map(std::path::PathBuf::from).collect();
    if let Some(dir) = libs.first().and_then(|p| p.parent()).map(|d| d.to_path_buf()) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            libs.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc-builtins.so"))),
            );
        }
    }
    libs.sort();
    libs.dedup();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 8 << 20];
    for lib in &libs {
        if let Ok(mut f) = std::fs::File::open(lib) {
            use std::io::Read;
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
        }
    }
    tracing::debug!("read {} MiB of NVRTC's libraries ahead in {:.3} s", bytes >> 20, t0.elapsed().as_secs_f64());
}
