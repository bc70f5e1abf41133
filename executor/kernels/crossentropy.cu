// crossentropy.cu: cross-entropy over vocabulary chunks with online statistics.
// stats is (3, N) fp32: stats[0*N + r] running max, stats[1*N + r] running sum of
// exp(logit - max), stats[2*N + r] the target's logit. Columns with vocabulary id >= V (padding)
// are excluded everywhere.
//
// ce_stats_update(float* stats, const bf16* logits, const int* targets, int N, int Vc,
//                 int v_begin, int V, int first)
//   reads one chunk's logits (N x Vc, ids v_begin + c); merges the chunk's (max, sumexp) into
//   stats (first != 0: overwrites instead) and stores the target logit if the row's target lies
//   in this chunk (first != 0 and not in the chunk: stores 0). grid N, block 256. Vc % 8 == 0.
//
// ce_loss(float* losses, const float* stats, int N)
//   losses[r] = log(sum) + max - target_logit. grid ceil(N/256), block 256.
//
// ce_backward(bf16* logits, const float* stats, const int* targets, int N, int Vc, int v_begin,
//             int V, float scale)
//   in place: logits[r, c] = (exp(logit - max) / sum - (v_begin + c == target)) * scale, and 0
//   for padded ids >= V. scale = 1/N for the mean loss. grid N, block 256. Vc % 8 == 0.
//
// sum_f32(float* out, const float* x, int n, float scale)
//   out[0] = scale * sum x (fixed-order tree: deterministic). grid 1, block 1024.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;
#define NEG_INF (__int_as_float(0xff800000))

__device__ __forceinline__ void ms_merge(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == NEG_INF) {
        m = mn;
        s = 0.f;
        return;
    }
    s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
    m = mn;
}

extern "C" __global__ void ce_stats_update(float *stats, const bf16 *logits, const int *targets,
                                           int N, int Vc, int v_begin, int V, int first) {
    __shared__ float sm[32], ss[32];
    int r = blockIdx.x;
    const bf16 *row = logits + (long long)r * Vc;
    int valid = min(Vc, V - v_begin);  // columns c < valid are real vocabulary ids
    float m = NEG_INF, s = 0.f;
    for (int c = threadIdx.x * 8; c < valid; c += blockDim.x * 8) {
        uint4 u = *reinterpret_cast<const uint4 *>(row + c);
        const bf16 *h = reinterpret_cast<const bf16 *>(&u);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            if (c + i < valid) {
                float x = __bfloat162float(h[i]);
                if (x > m) {
                    s = s * __expf(m - x) + 1.f;
                    m = x;
                } else {
                    s += __expf(x - m);
                }
            }
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        m = sm[0];
        s = ss[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) ms_merge(m, s, sm[w], ss[w]);
        if (!first) ms_merge(m, s, stats[r], stats[N + r]);
        stats[r] = m;
        stats[N + r] = s;
        int t = targets[r] - v_begin;
        if (t >= 0 && t < Vc) stats[2 * N + r] = __bfloat162float(row[t]);
        else if (first) stats[2 * N + r] = 0.f;
    }
}

extern "C" __global__ void ce_loss(float *losses, const float *stats, int N) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= N) return;
    losses[r] = logf(stats[N + r]) + stats[r] - stats[2 * N + r];
}

extern "C" __global__ void ce_backward(bf16 *logits, const float *stats, const int *targets, int N,
                                       int Vc, int v_begin, int V, float scale) {
    int r = blockIdx.x;
    bf16 *row = logits + (long long)r * Vc;
    float m = stats[r];
    float inv = 1.f / stats[N + r];
    int t = targets[r] - v_begin;
    int valid = min(Vc, V - v_begin);
    for (int c = threadIdx.x * 8; c < Vc; c += blockDim.x * 8) {
        uint4 u = *reinterpret_cast<const uint4 *>(row + c);
        bf16 *h = reinterpret_cast<bf16 *>(&u);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int cc = c + i;
            float g = 0.f;
            if (cc < valid) {
                float p = __expf(__bfloat162float(h[i]) - m) * inv;
                g = (p - (cc == t ? 1.f : 0.f)) * scale;
            }
            h[i] = __float2bfloat16_rn(g);
        }
        *reinterpret_cast<uint4 *>(row + c) = u;
    }
}

extern "C" __global__ void sum_f32(float *out, const float *x, int n, float scale) {
    __shared__ float sh[1024];
    float a = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) a += x[i];
    sh[threadIdx.x] = a;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = sh[0] * scale;
}
