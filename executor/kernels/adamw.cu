// adamw.cu: AdamW over one flat parameter range (one view, or consecutive views sharing a
// weight decay), PyTorch AdamW semantics (decoupled decay, bias correction, no amsgrad):
//   p = master * (1 - lr*wd); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps);
//   master = p; weights = bf16(p).
//
// adamw_update(bf16* weights, float* master, float* m, float* v, const bf16* grads, long long n,
//              float lr, float beta1, float beta2, float eps, float weight_decay, int step)
//   reads grads (bf16) and master/m/v (fp32), writes master/m/v and weights. step >= 1.
//   grid ceil(n/256) (or fewer: the kernel strides over the grid), block 256.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

extern "C" __global__ void adamw_update(bf16 *weights, float *master, float *m, float *v,
                                        const bf16 *grads, long long n, float lr, float beta1,
                                        float beta2, float eps, float weight_decay, int step) {
    float bc1 = 1.f - powf(beta1, (float)step);
    float bc2 = 1.f - powf(beta2, (float)step);
    float step_size = lr / bc1;
    float bc2_sqrt = sqrtf(bc2);
    float decay = 1.f - lr * weight_decay;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = __bfloat162float(grads[i]);
        float p = master[i] * decay;
        float mi = beta1 * m[i] + (1.f - beta1) * g;
        float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        p -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        m[i] = mi;
        v[i] = vi;
        master[i] = p;
        weights[i] = __float2bfloat16_rn(p);
    }
}
