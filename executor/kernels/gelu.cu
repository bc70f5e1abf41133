// gelu.cu: GELU, tanh approximation: gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//
// gelu_forward(bf16* out, const bf16* inp, long long n)
//   out[i] = gelu(inp[i]) (fp32 math, one bf16 rounding). n % 8 == 0 (n = B*T*4C).
//   grid ceil(n/8 / 256), block 256: 8 elements (16 bytes) per thread.
//
// gelu_backward(bf16* dinout, const bf16* inp, long long n)
//   dinout[i] = dinout[i] * gelu'(inp[i]) in place (dfch). Same launch shape.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)

extern "C" __global__ void gelu_forward(bf16 *out, const bf16 *inp, long long n) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    uint4 u = *reinterpret_cast<const uint4 *>(inp + i);
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 x = __bfloat1622float2(h[k]);
        float y0 = 0.5f * x.x * (1.f + tanhf(GELU_K * (x.x + 0.044715f * x.x * x.x * x.x)));
        float y1 = 0.5f * x.y * (1.f + tanhf(GELU_K * (x.y + 0.044715f * x.y * x.y * x.y)));
        h[k] = __floats2bfloat162_rn(y0, y1);
    }
    *reinterpret_cast<uint4 *>(out + i) = u;
}

__device__ __forceinline__ float gelu_grad(float x) {
    float x3 = x * x * x;
    float t = tanhf(GELU_K * (x + 0.044715f * x3));
    float sech2 = 1.f - t * t;
    return 0.5f * (1.f + t) + 0.5f * x * sech2 * GELU_K * (1.f + 3.f * 0.044715f * x * x);
}

extern "C" __global__ void gelu_backward(bf16 *dinout, const bf16 *inp, long long n) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    uint4 u = *reinterpret_cast<const uint4 *>(inp + i);
    uint4 d = *reinterpret_cast<const uint4 *>(dinout + i);
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
    __nv_bfloat162 *g = reinterpret_cast<__nv_bfloat162 *>(&d);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 x = __bfloat1622float2(h[k]);
        float2 dy = __bfloat1622float2(g[k]);
        g[k] = __floats2bfloat162_rn(dy.x * gelu_grad(x.x), dy.y * gelu_grad(x.y));
    }
    *reinterpret_cast<uint4 *>(dinout + i) = d;
}
