// bias.cu: deterministic column sums of a (rows x n) bf16 matrix: bias gradients
// (db = sum over rows of dY), in two launches through an fp32 partials buffer (the cuBLASLt
// workspace serves: S * n * 4 bytes).
//
// colsum_partial(float* partials, const bf16* x, int rows, int n)
//   grid (ceil(n/64), S), block 256. Split s sums rows [s*ceil(rows/S), (s+1)*ceil(rows/S)):
//   partials[s*n + c] = sum_r x[r*n + c] (fp32). n may be any size (no alignment beyond 2 bytes).
//
// colsum_reduce(bf16* out, const float* partials, int S, int n, int accumulate)
//   out[c] (+)= sum_s partials[s*n + c] in s order; accumulate != 0 adds to the bf16 out.
//   grid ceil(n/256), block 256.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

extern "C" __global__ void colsum_partial(float *partials, const bf16 *x, int rows, int n) {
    __shared__ float sh[8][64 + 1];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int base = blockIdx.x * 64;
    int S = gridDim.y, s = blockIdx.y;
    int rps = (rows + S - 1) / S;
    int r0 = s * rps, r1 = min(rows, r0 + rps);
    int c0 = base + lane, c1 = base + 32 + lane;
    float a0 = 0.f, a1 = 0.f;
    for (int r = r0 + warp; r < r1; r += 8) {
        const bf16 *xr = x + (long long)r * n;
        if (c0 < n) a0 += __bfloat162float(xr[c0]);
        if (c1 < n) a1 += __bfloat162float(xr[c1]);
    }
    sh[warp][lane] = a0;
    sh[warp][lane + 32] = a1;
    __syncthreads();
    if (threadIdx.x < 64) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 8; k++) acc += sh[k][threadIdx.x];
        int c = base + threadIdx.x;
        if (c < n) partials[(long long)s * n + c] = acc;
    }
}

extern "C" __global__ void colsum_reduce(bf16 *out, const float *partials, int S, int n,
                                         int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n) return;
    float a = 0.f;
    for (int s = 0; s < S; s++) a += partials[(long long)s * n + c];
    if (accumulate) a += __bfloat162float(out[c]);
    out[c] = __float2bfloat16_rn(a);
}
