// attention_materialized.cu: causal attention with the probabilities materialised
// (B, NH, T, T) bf16, for small configs (the gpt2-tiny test model). Plain fp32 CUDA cores.
// qkv (B,T,3C): q | k | v, head h at columns h*D; out/dout (B,T,C); D <= 256. scale = 1/sqrt(D).
//
// attention_materialized_forward(bf16* out, bf16* att, const bf16* qkv, int B, int T, int NH,
//                                int D, float scale)
//   att[b,h,t,j] = softmax_j(scale q_t.k_j) for j <= t, 0 for j > t (bf16, every element
//   written); out[b,t,h*D+d] = sum_j att[b,h,t,j] * v_j[d] (with the bf16 probabilities).
//   grid (T, B*NH), block 128, dynamic shared memory T*4 bytes.
//
// attention_materialized_backward_dq(bf16* dqkv, bf16* datt, const bf16* dout, const bf16* qkv,
//                                    const bf16* att, int B, int T, int NH, int D, float scale)
//   dP_tj = dout_t . v_j; datt[b,h,t,j] = dS_tj = P_tj (dP_tj - sum_j' P_tj' dP_tj') for j <= t,
//   0 above the diagonal (bf16); dq_t = scale * sum_j dS_tj k_j (with the bf16 dS) into the q
//   part of dqkv. grid (T, B*NH), block 128, dynamic shared memory T*4 bytes.
//
// attention_materialized_backward_dkdv(bf16* dqkv, const bf16* datt, const bf16* dout,
//                                      const bf16* qkv, const bf16* att, int B, int T, int NH,
//                                      int D, float scale)
//   for key j: dk_j = scale * sum_{t>=j} datt[t,j] q_t, dv_j = sum_{t>=j} att[t,j] dout_t, into
//   the k and v parts of dqkv. Runs after _dq (reads its datt). grid (T, B*NH), block 128.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ float block_reduce(float v, bool is_max) {
    __shared__ float red[32];
    __shared__ float result;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float r = red[0];
        for (int i = 1; i < (int)(blockDim.x >> 5); i++) r = is_max ? fmaxf(r, red[i]) : r + red[i];
        result = r;
    }
    __syncthreads();
    return result;
}

extern "C" __global__ void attention_materialized_forward(bf16 *out, bf16 *att, const bf16 *qkv,
                                                          int B, int T, int NH, int D,
                                                          float scale) {
    extern __shared__ float p[];  // [T]
    __shared__ float q[256];
    int t = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    int C = NH * D;
    const bf16 *base = qkv + (long long)b * T * 3 * C + h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) q[d] = __bfloat162float(base[(long long)t * 3 * C + d]);
    __syncthreads();
    float mx = -3.0e38f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        const bf16 *k = base + (long long)j * 3 * C + C;
        float s = 0.f;
        for (int d = 0; d < D; d++) s += q[d] * __bfloat162float(k[d]);
        s *= scale;
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_reduce(mx, true);
    float sum = 0.f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float e = __expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, false);
    float inv = 1.f / sum;
    bf16 *arow = att + ((long long)bh * T + t) * T;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        bf16 v = __float2bfloat16_rn(j <= t ? p[j] * inv : 0.f);
        arow[j] = v;
        if (j <= t) p[j] = __bfloat162float(v);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float y = 0.f;
        for (int j = 0; j <= t; j++) y += p[j] * __bfloat162float(base[(long long)j * 3 * C + 2 * C + d]);
        out[((long long)b * T + t) * C + h * D + d] = __float2bfloat16_rn(y);
    }
}

extern "C" __global__ void attention_materialized_backward_dq(bf16 *dqkv, bf16 *datt,
                                                              const bf16 *dout, const bf16 *qkv,
                                                              const bf16 *att, int B, int T,
                                                              int NH, int D, float scale) {
    extern __shared__ float ds[];  // [T]
    __shared__ float dO[256];
    int t = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    int C = NH * D;
    const bf16 *base = qkv + (long long)b * T * 3 * C + h * D;
    const bf16 *arow = att + ((long long)bh * T + t) * T;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        dO[d] = __bfloat162float(dout[((long long)b * T + t) * C + h * D + d]);
    __syncthreads();
    float acc = 0.f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        const bf16 *v = base + (long long)j * 3 * C + 2 * C;
        float s = 0.f;
        for (int d = 0; d < D; d++) s += dO[d] * __bfloat162float(v[d]);
        ds[j] = s;
        acc += s * __bfloat162float(arow[j]);
    }
    acc = block_reduce(acc, false);
    bf16 *drow = datt + ((long long)bh * T + t) * T;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float v = j <= t ? __bfloat162float(arow[j]) * (ds[j] - acc) : 0.f;
        bf16 r = __float2bfloat16_rn(v);
        drow[j] = r;
        if (j <= t) ds[j] = __bfloat162float(r);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float y = 0.f;
        for (int j = 0; j <= t; j++) y += ds[j] * __bfloat162float(base[(long long)j * 3 * C + C + d]);
        dqkv[((long long)b * T + t) * 3 * C + h * D + d] = __float2bfloat16_rn(y * scale);
    }
}

extern "C" __global__ void attention_materialized_backward_dkdv(bf16 *dqkv, const bf16 *datt,
                                                                const bf16 *dout, const bf16 *qkv,
                                                                const bf16 *att, int B, int T,
                                                                int NH, int D, float scale) {
    int j = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    int C = NH * D;
    const bf16 *base = qkv + (long long)b * T * 3 * C + h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float dk = 0.f, dv = 0.f;
        for (int t = j; t < T; t++) {
            long long a = ((long long)bh * T + t) * T + j;
            dk += __bfloat162float(datt[a]) * __bfloat162float(base[(long long)t * 3 * C + d]);
            dv += __bfloat162float(att[a]) * __bfloat162float(dout[((long long)b * T + t) * C + h * D + d]);
        }
        bf16 *row = dqkv + ((long long)b * T + j) * 3 * C + h * D;
        row[C + d] = __float2bfloat16_rn(dk * scale);
        row[2 * C + d] = __float2bfloat16_rn(dv);
    }
}
