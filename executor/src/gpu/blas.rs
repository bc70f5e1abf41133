//! cuBLASLt bf16 matrix products with fp32 accumulation: one handle, a plan (descriptors and
//! the heuristic's algorithm) per shape and alignment, made on first use, and the step's
//! workspace tensor given to every product.

use super::{DeviceBuffer, GpuError, Result};
use crate::kernels::{MatType, Product};
use cudarc::cublaslt::result as ltr;
use cudarc::cublaslt::sys as lts;
use cudarc::driver::CudaStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

/// Sets one attribute of a matmul descriptor to `value`.
///
/// # Safety
/// `desc` is a live descriptor and `T` is the type cuBLASLt documents for `attr` (its size is
/// passed along).
unsafe fn desc_attr<T>(desc: lts::cublasLtMatmulDesc_t, attr: lts::cublasLtMatmulDescAttributes_t, value: &T) -> Result<()> {
    // SAFETY: the caller's guarantee; `value` is borrowed for the call.
    unsafe { ltr::set_matmul_desc_attribute(desc, attr, value as *const T as *const c_void, std::mem::size_of::<T>()) }?;
    Ok(())
}

fn cuda_type(t: MatType) -> lts::cudaDataType {
    match t {
        MatType::Bf16 => lts::cudaDataType::CUDA_R_16BF,
        MatType::F32 => lts::cudaDataType::CUDA_R_32F,
    }
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

/// A matmul descriptor, destroyed when dropped.
struct Desc(lts::cublasLtMatmulDesc_t);
/// A matrix layout, destroyed when dropped.
struct Layout(lts::cublasLtMatrixLayout_t);
/// A matmul preference, destroyed when dropped.
struct Pref(lts::cublasLtMatmulPreference_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: made by create_matmul_desc and destroyed only here.
        if let Err(e) = unsafe { ltr::destroy_matmul_desc(self.0) } {
            tracing::warn!("cublasLtMatmulDescDestroy failed: {e}");
        }
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: made by create_matrix_layout and destroyed only here.
        if let Err(e) = unsafe { ltr::destroy_matrix_layout(self.0) } {
            tracing::warn!("cublasLtMatrixLayoutDestroy failed: {e}");
        }
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: made by create_matmul_pref and destroyed only here.
        if let Err(e) = unsafe { ltr::destroy_matmul_pref(self.0) } {
            tracing::warn!("cublasLtMatmulPreferenceDestroy failed: {e}");
        }
    }
}

/// What one shape's products need: descriptors and the heuristic's algorithm.
struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: lts::cublasLtMatmulAlgo_t,
}

/// cuBLASLt and a plan per shape; the workspace (the inventory's `matmul_workspace`) is given
/// to each product.
pub struct Lt {
    handle: lts::cublasLtHandle_t,
    workspace_bytes: usize,
    plans: RefCell<HashMap<PlanKey, Plan>>,
}

impl Lt {
    /// A handle whose products may use `workspace_bytes` of workspace (each product is given
    /// a workspace of at least that size).
    pub fn new(workspace_bytes: u64) -> Result<Lt> {
        Ok(Lt { handle: ltr::create_handle()?, workspace_bytes: workspace_bytes as usize, plans: RefCell::new(HashMap::new()) })
    }

    fn plan(&self, key: PlanKey) -> Result<()> {
        if self.plans.borrow().contains_key(&key) {
            return Ok(());
        }
        use lts::cublasLtMatmulDescAttributes_t::*;
        let desc = Desc(ltr::create_matmul_desc(lts::cublasComputeType_t::CUBLAS_COMPUTE_32F, lts::cudaDataType::CUDA_R_32F)?);
        let op = |t: bool| {
            if t {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (ta, tb) = (op(key.ta), op(key.tb));
        // SAFETY: each value is of the type and size cuBLASLt documents for its attribute.
        unsafe {
            desc_attr(desc.0, CUBLASLT_MATMUL_DESC_TRANSA, &ta)?;
            desc_attr(desc.0, CUBLASLT_MATMUL_DESC_TRANSB, &tb)?;
            if key.bias {
                desc_attr(desc.0, CUBLASLT_MATMUL_DESC_EPILOGUE, &lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS)?;
                desc_attr(desc.0, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &lts::cudaDataType::CUDA_R_16BF)?;
            }
        }
        let (ar, ac) = if key.ta { (key.k, key.m) } else { (key.m, key.k) };
        let (br, bc) = if key.tb { (key.n, key.k) } else { (key.k, key.n) };
        let a = Layout(ltr::create_matrix_layout(lts::cudaDataType::CUDA_R_16BF, ar, ac, key.lda)?);
        let b = Layout(ltr::create_matrix_layout(lts::cudaDataType::CUDA_R_16BF, br, bc, key.ldb)?);
        let d = Layout(ltr::create_matrix_layout(cuda_type(key.out), key.m, key.n, key.ldd)?);
        let pref = Pref(ltr::create_matmul_pref()?);
        let ws = self.workspace_bytes as u64;
        // SAFETY: as above; all descriptors are live.
        let heur = unsafe {
            ltr::set_matmul_pref_attribute(
                pref.0,
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
                ltr::set_matmul_pref_attribute(pref.0, attr, &al as *const u32 as *const c_void, 4)?;
            }
            ltr::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, d.0, d.0, pref.0)
        };
        drop(pref);
        let heur = heur.map_err(|e| GpuError::Invalid(format!("no cuBLASLt algorithm for {key:?}: {e}")))?;
        self.plans.borrow_mut().insert(key, Plan { desc, a, b, d, algo: heur.algo });
        Ok(())
    }

    /// Enqueues `p` on `stream`, each operand's buffer given by `resolve`, with `workspace`.
    /// Every operand is checked against its live buffer first.
    pub fn matmul<'r, B: Copy>(
        &self,
        stream: &CudaStream,
        p: &Product<B>,
        resolve: impl Fn(B) -> Result<&'r DeviceBuffer>,
        workspace: &DeviceBuffer,
    ) -> Result<()> {
        if (workspace.bytes() as usize) < self.workspace_bytes {
            return Err(GpuError::Invalid(format!("a cuBLASLt workspace of {} bytes, {} needed", workspace.bytes(), self.workspace_bytes)));
        }
        let ptr = |r: crate::kernels::Region<B>| -> Result<u64> { Ok(resolve(r.buf)?.range(r.offset, r.bytes)?.ptr()) };
        let (a, b, d) = (ptr(p.a)?, ptr(p.b)?, ptr(p.d)?);
        let c = p.c.map(ptr).transpose()?;
        let bias = p.bias.map(ptr).transpose()?;
        let g = &p.layout;
        let align = [alignment(a), alignment(b), alignment(c.unwrap_or(d)), alignment(d)];
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
            bias: bias.is_some(),
            align,
        };
        self.plan(key)?;
        let plans = self.plans.borrow();
        let plan = &plans[&key];
        let alpha: f32 = 1.0;
        let beta: f32 = if c.is_some() { 1.0 } else { 0.0 };
        let c = c.unwrap_or(d);
        // SAFETY: every operand is inside a live buffer and spans what the plan's layouts
        // describe (`Product::new` narrowed each region to its layout's elements, checked
        // against the buffer above); the workspace is a live buffer of at least the size the
        // plans were made for (checked above).
        unsafe {
            if let Some(bias) = bias {
                desc_attr(plan.desc.0, lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
            }
            ltr::matmul(
                self.handle,
                plan.desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                a as *const c_void,
                plan.a.0,
                b as *const c_void,
                plan.b.0,
                c as *const c_void,
                plan.d.0,
                d as *mut c_void,
                plan.d.0,
                &plan.algo,
                workspace.ptr() as *mut c_void,
                self.workspace_bytes,
                stream.cu_stream() as lts::cudaStream_t,
            )?;
        }
        Ok(())
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // The plans' descriptors first, then the handle.
        self.plans.borrow_mut().clear();
        // SAFETY: created in `new` and destroyed only here.
        if let Err(e) = unsafe { ltr::destroy_handle(self.handle) } {
            tracing::warn!("cublasLtDestroy failed: {e}");
        }
    }
}
