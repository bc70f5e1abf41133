// grad_norm.cu: partial sums of squares of one owner's bf16 gradient, for clipping by the global
// norm (`OpKind::GradNorm(owner)`; the host sums every owner's partials in f64 for the norm and
// the clip scale, `OpKind::ClipScale`).
//
// grad_norm_partials(const bf16* g, long long n, float* partials)
//   partials holds 512 words: 256 fp32 partial sums of squares, then 256 uint32 checksums.
//   partials[b] (b < 256) = the sum of g[i]^2 over block b's range, in this exact order:
//     per = ceil(n / 256); block b covers [b*per, min(n, (b+1)*per)) (empty ranges give 0.0f);
//     thread t: acc = 0; for i = start + t; i < end; i += 256: x = f32(g[i]); acc = acc + x*x;
//     s[t] = acc; for stride = 128, 64, ..., 1: s[t] = s[t] + s[t + stride] for t < stride;
//     partials[b] = s[0].
//   Every operation is an IEEE fp32 operation, rounded to nearest, with no fused multiply-add
//   (explicit __fmul_rn / __fadd_rn): host::grad_norm_partials (executor/src/host/norm.rs) does
//   the same operations in the same order, so its partials are bitwise these (for any input
//   without NaN; a NaN gives NaN on both, maybe with another payload).
//   partials[256 + b] (as uint32) = the exact checksum of block b's range: the wrapping sum of
//     (bits(g[i]) + 1) * (uint32(i) * 2654435761 + 0x9E3779B9) over its elements (uint32
//     arithmetic modulo 2^32, so the order does not matter): any change of a gradient's bits
//     changes it (but for a 2^-32 chance), which the norm's rounding need not show.
//   grid exactly 256 (GRAD_NORM_PARTIALS of models/src/inventory.rs), block exactly 256: the
//   order above is the contract, so the launch shape is fixed whatever n is (0 included).
//   64-bit indices: n may exceed 2^31.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

#define GRAD_NORM_BLOCKS 256
#define GRAD_NORM_THREADS 256

extern "C" __global__ void __launch_bounds__(GRAD_NORM_THREADS)
    grad_norm_partials(const bf16 *g, long long n, float *partials) {
    __shared__ float s[GRAD_NORM_THREADS];
    __shared__ unsigned int h[GRAD_NORM_THREADS];
    const int t = threadIdx.x;
    const long long per = (n + GRAD_NORM_BLOCKS - 1) / GRAD_NORM_BLOCKS;
    long long start = (long long)blockIdx.x * per;
    long long end = start + per;
    if (end > n) end = n;
    float acc = 0.0f;
    unsigned int sum = 0u;
    // Unrolling keeps the loads in flight; the sum stays one serial chain in index order.
#pragma unroll 8
    for (long long i = start + t; i < end; i += GRAD_NORM_THREADS) {
        bf16 v = g[i];
        float x = __bfloat162float(v);
        acc = __fadd_rn(acc, __fmul_rn(x, x));
        unsigned int bits = (unsigned int)__bfloat16_as_ushort(v);
        sum += (bits + 1u) * ((unsigned int)i * 2654435761u + 0x9E3779B9u);
    }
    s[t] = acc;
    h[t] = sum;
    __syncthreads();
#pragma unroll
    for (int stride = GRAD_NORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (t < stride) {
            s[t] = __fadd_rn(s[t], s[t + stride]);
            h[t] += h[t + stride];
        }
        __syncthreads();
    }
    if (t == 0) {
        partials[blockIdx.x] = s[0];
        partials[GRAD_NORM_BLOCKS + blockIdx.x] = __uint_as_float(h[0]);
    }
}
