// adamw.cu: AdamW over one flat parameter range (one view, or consecutive views sharing a
// weight decay), PyTorch AdamW semantics (decoupled decay, bias correction, no amsgrad):
//   p = master * (1 - lr*wd); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps);
//   master = p; weights = bf16(p).
//
// adamw_update(bf16* weights, float* master, float* m, float* v, const bf16* grads, long long n,
//              float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps,
//              float decay, float step_size, float bc2_sqrt)
//   reads grads (bf16) and master/m/v (fp32), writes master/m/v and weights. The scalars come
//   from the host (`AdamwScalars` in executor/src/kernels: decay = 1 - lr*wd, step_size =
//   lr / (1 - b1^step), bc2_sqrt = sqrt(1 - b2^step)), and every operation is an IEEE fp32
//   operation in the order written, rounded to nearest, with no fused multiply-add: host AdamW
//   (executor/src/host/adamw.rs) does the same operations, so its update is bitwise this one.
//   grid ceil(n/256) (or fewer: the kernel strides over the grid), block 256.
//
// adamw_update_clipped(... the same parameters as adamw_update ..., const float* scale)
//   the same update with the gradient clipped by the global norm: g = f32(grads[i]) * *scale
//   (one fp32 multiply, rounded to nearest; `scale` = the one-element `clip_scale` tensor,
//   min(1, max_norm / (norm + 1e-6)), made on the host by `OpKind::ClipScale` and read once per
//   thread). With *scale == 1 the update is bitwise adamw_update's (x * 1 = x). Host AdamW with
//   its `scale` argument does the same multiply. Same grid and block.
//
// Both kernels run one body (`adamw_body`), so the two cannot drift apart; adamw_update is the
// body with scale 1.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ void adamw_body(bf16 *weights, float *master, float *m, float *v,
                                           const bf16 *grads, long long n, float beta1,
                                           float one_minus_beta1, float beta2,
                                           float one_minus_beta2, float eps, float decay,
                                           float step_size, float bc2_sqrt, float scale) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = __fmul_rn(__bfloat162float(grads[i]), scale);
        float p = __fmul_rn(master[i], decay);
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_minus_beta1, g));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p = __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, mi), denom));
        m[i] = mi;
        v[i] = vi;
        master[i] = p;
        weights[i] = __float2bfloat16_rn(p);
    }
}

extern "C" __global__ void adamw_update(bf16 *weights, float *master, float *m, float *v,
                                        const bf16 *grads, long long n, float beta1,
                                        float one_minus_beta1, float beta2, float one_minus_beta2,
                                        float eps, float decay, float step_size, float bc2_sqrt) {
    adamw_body(weights, master, m, v, grads, n, beta1, one_minus_beta1, beta2, one_minus_beta2,
               eps, decay, step_size, bc2_sqrt, 1.0f);
}

extern "C" __global__ void adamw_update_clipped(bf16 *weights, float *master, float *m, float *v,
                                                const bf16 *grads, long long n, float beta1,
                                                float one_minus_beta1, float beta2,
                                                float one_minus_beta2, float eps, float decay,
                                                float step_size, float bc2_sqrt,
                                                const float *scale) {
    const float s = *scale;
    adamw_body(weights, master, m, v, grads, n, beta1, one_minus_beta1, beta2, one_minus_beta2,
               eps, decay, step_size, bc2_sqrt, s);
}
