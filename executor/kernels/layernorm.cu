// layernorm.cu: layer norm forward and backward (eps 1e-5), rows of C bf16 values.
//
// layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* w,
//                   const bf16* b, int N, int C)
//   reads x (N x C), w, b (C); writes out = (x - mean) * rstd * w + b (bf16), mean[N], rstd[N]
//   (fp32; rstd = 1/sqrt(var + 1e-5), biased variance). grid ceil(N/8), block 256: a warp per row.
//
// layernorm_backward_dx(bf16* dx, const bf16* dy, const bf16* x, const float* mean,
//                       const float* rstd, const bf16* w, int N, int C, int accumulate)
// layernorm_backward_dx_f32dy(... const float* dy ...)   (same, dy in fp32: the final norm)
//   g = dy * w, xhat = (x - mean) * rstd,
//   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)); accumulate != 0: dx += that
//   (read-modify-write of the bf16 dx, e.g. the residual gradient dres), else dx = that.
//   grid ceil(N/8), block 256: a warp per row.
//
// layernorm_backward_dwdb_partial(float* partials, const bf16* dy, const bf16* x,
//                                 const float* mean, const float* rstd, int N, int C)
// layernorm_backward_dwdb_partial_f32dy(... const float* dy ...)
//   grid (ceil(C/64), S), block 256. Split s sums rows [s*ceil(N/S), (s+1)*ceil(N/S)) and writes
//   partials[s*2C + c] = sum dy*xhat (dweight), partials[s*2C + C + c] = sum dy (dbias), fp32.
//
// layernorm_backward_dwdb_reduce(bf16* dw, bf16* db, const float* partials, int S, int C)
//   dw[c] = sum_s partials[s*2C + c], db[c] = sum_s partials[s*2C + C + c], in s order (written,
//   not accumulated). grid ceil(C/256), block 256.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ void load8(const bf16 *p, float *f) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v = __bfloat1622float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}
__device__ __forceinline__ void load8(const float *p, float *f) {
    float4 a = *reinterpret_cast<const float4 *>(p);
    float4 b = *reinterpret_cast<const float4 *>(p + 4);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
    f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
__device__ __forceinline__ void store8(bf16 *p, const float *f) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(float v) { return v; }

extern "C" __global__ void layernorm_forward(bf16 *out, float *mean, float *rstd, const bf16 *x,
                                             const bf16 *w, const bf16 *b, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *xr = x + (long long)row * C;
    float s = 0.f;
    for (int c = lane * 8; c < C; c += 256) {
        float f[8];
        load8(xr + c, f);
#pragma unroll
        for (int i = 0; i < 8; i++) s += f[i];
    }
    float m = warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane * 8; c < C; c += 256) {
        float f[8];
        load8(xr + c, f);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float d = f[i] - m;
            v += d * d;
        }
    }
    float r = rsqrtf(warp_sum(v) / C + 1e-5f);
    bf16 *orow = out + (long long)row * C;
    for (int c = lane * 8; c < C; c += 256) {
        float f[8], fw[8], fb[8];
        load8(xr + c, f);
        load8(w + c, fw);
        load8(b + c, fb);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = (f[i] - m) * r * fw[i] + fb[i];
        store8(orow + c, f);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

template <typename DY>
__device__ void ln_bwd_dx(bf16 *dx, const DY *dy, const bf16 *x, const float *mean,
                          const float *rstd, const bf16 *w, int N, int C, int accumulate) {
    int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *xr = x + (long long)row * C;
    const DY *dyr = dy + (long long)row * C;
    bf16 *dxr = dx + (long long)row * C;
    float m = mean[row], r = rstd[row];
    float s1 = 0.f, s2 = 0.f;
    for (int c = lane * 8; c < C; c += 256) {
        float fx[8], fd[8], fw[8];
        load8(xr + c, fx);
        load8(dyr + c, fd);
        load8(w + c, fw);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float g = fd[i] * fw[i];
            s1 += g;
            s2 += g * (fx[i] - m) * r;
        }
    }
    s1 = warp_sum(s1) / C;
    s2 = warp_sum(s2) / C;
    for (int c = lane * 8; c < C; c += 256) {
        float fx[8], fd[8], fw[8], o[8];
        load8(xr + c, fx);
        load8(dyr + c, fd);
        load8(w + c, fw);
        if (accumulate) load8(dxr + c, o);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float g = fd[i] * fw[i];
            float v = r * (g - s1 - (fx[i] - m) * r * s2);
            o[i] = accumulate ? o[i] + v : v;
        }
        store8(dxr + c, o);
    }
}

extern "C" __global__ void layernorm_backward_dx(bf16 *dx, const bf16 *dy, const bf16 *x,
                                                 const float *mean, const float *rstd,
                                                 const bf16 *w, int N, int C, int accumulate) {
    ln_bwd_dx<bf16>(dx, dy, x, mean, rstd, w, N, C, accumulate);
}
extern "C" __global__ void layernorm_backward_dx_f32dy(bf16 *dx, const float *dy, const bf16 *x,
                                                       const float *mean, const float *rstd,
                                                       const bf16 *w, int N, int C,
                                                       int accumulate) {
    ln_bwd_dx<float>(dx, dy, x, mean, rstd, w, N, C, accumulate);
}

// Columns [blockIdx.x*64, +64): lane owns columns base+lane and base+32+lane; 8 warps stride rows.
template <typename DY>
__device__ void ln_bwd_dwdb_partial(float *partials, const DY *dy, const bf16 *x,
                                    const float *mean, const float *rstd, int N, int C) {
    __shared__ float sh[2][8][64 + 1];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int base = blockIdx.x * 64;
    int S = gridDim.y, s = blockIdx.y;
    int rps = (N + S - 1) / S;
    int r0 = s * rps, r1 = min(N, r0 + rps);
    int c0 = base + lane, c1 = base + 32 + lane;
    float dw0 = 0.f, dw1 = 0.f, db0 = 0.f, db1 = 0.f;
    for (int r = r0 + warp; r < r1; r += 8) {
        float m = mean[r], rs = rstd[r];
        const DY *dyr = dy + (long long)r * C;
        const bf16 *xr = x + (long long)r * C;
        if (c0 < C) {
            float d = to_f(dyr[c0]);
            dw0 += d * (to_f(xr[c0]) - m) * rs;
            db0 += d;
        }
        if (c1 < C) {
            float d = to_f(dyr[c1]);
            dw1 += d * (to_f(xr[c1]) - m) * rs;
            db1 += d;
        }
    }
    sh[0][warp][lane] = dw0;
    sh[0][warp][lane + 32] = dw1;
    sh[1][warp][lane] = db0;
    sh[1][warp][lane + 32] = db1;
    __syncthreads();
    if (threadIdx.x < 128) {
        int which = threadIdx.x >> 6, col = threadIdx.x & 63;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 8; k++) acc += sh[which][k][col];
        int c = base + col;
        if (c < C) partials[(long long)s * 2 * C + which * C + c] = acc;
    }
}

extern "C" __global__ void layernorm_backward_dwdb_partial(float *partials, const bf16 *dy,
                                                           const bf16 *x, const float *mean,
                                                           const float *rstd, int N, int C) {
    ln_bwd_dwdb_partial<bf16>(partials, dy, x, mean, rstd, N, C);
}
extern "C" __global__ void layernorm_backward_dwdb_partial_f32dy(float *partials, const float *dy,
                                                                 const bf16 *x, const float *mean,
                                                                 const float *rstd, int N, int C) {
    ln_bwd_dwdb_partial<float>(partials, dy, x, mean, rstd, N, C);
}

extern "C" __global__ void layernorm_backward_dwdb_reduce(bf16 *dw, bf16 *db,
                                                          const float *partials, int S, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float a = 0.f, b = 0.f;
    for (int s = 0; s < S; s++) {
        a += partials[(long long)s * 2 * C + c];
        b += partials[(long long)s * 2 * C + C + c];
    }
    dw[c] = __float2bfloat16_rn(a);
    db[c] = __float2bfloat16_rn(b);
}
