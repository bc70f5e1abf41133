// encoder.cu: token + position embedding, forward and backward.
//
// embedding_forward(bf16* out, const int* tokens, const bf16* wte, int v_begin, int v_count,
//                   const bf16* wpe, int N, int T, int C)
//   reads tokens (N = B*T), wte rows [v_begin, v_begin + v_count) given as a table of v_count
//   rows x C (the whole table untied, one output chunk tied), wpe (max_seq x C);
//   writes out[n, :] = wte[tok - v_begin, :] + wpe[n % T, :] (bf16 of the fp32 sum) for the rows
//   whose token lies in the range; other rows are left untouched (another launch writes them).
//   grid ceil(N*C/8 / 256), block 256: one thread per 8 channels (16-byte loads). C % 8 == 0.
//
// embedding_backward_wpe(bf16* dwpe, const bf16* dout, int B, int T, int C, int max_seq)
//   writes dwpe[t, c] = sum_b dout[b, t, c] (fp32 sum in b order) for t < T, 0 for T <= t < max_seq.
//   grid ceil(max_seq*C/8 / 256), block 256.
//
// embedding_backward_wte(bf16* dwte, const bf16* dout, const int* tokens, int v_begin,
//                        int v_count, int N, int C)
//   ADDS into dwte (v_count x C): for each token id v in range, dwte[v - v_begin] +=
//   sum over positions n with tokens[n] == v of dout[n] (fp32, in increasing n, then one bf16
//   rounding of old + sum). Block n owns the token of position n if n is its first occurrence,
//   so every row is updated by exactly one block: deterministic, no atomics.
//   grid N, block min(1024, roundup32(C/8)) (each thread owns up to 4 vectors of 8 channels:
//   C <= 32768).
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ void unpack8(const uint4 &u, float *f) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v = __bfloat1622float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

__device__ __forceinline__ uint4 pack8(const float *f) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return u;
}

extern "C" __global__ void embedding_forward(bf16 *out, const int *tokens, const bf16 *wte,
                                             int v_begin, int v_count, const bf16 *wpe, int N,
                                             int T, int C) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int vecs = C / 8;
    if (idx >= (long long)N * vecs) return;
    int n = (int)(idx / vecs);
    int c = (int)(idx % vecs) * 8;
    int tok = tokens[n] - v_begin;
    if (tok < 0 || tok >= v_count) return;
    int t = n % T;
    float a[8], b[8];
    unpack8(*reinterpret_cast<const uint4 *>(wte + (long long)tok * C + c), a);
    unpack8(*reinterpret_cast<const uint4 *>(wpe + (long long)t * C + c), b);
#pragma unroll
    for (int i = 0; i < 8; i++) a[i] += b[i];
    *reinterpret_cast<uint4 *>(out + (long long)n * C + c) = pack8(a);
}

extern "C" __global__ void embedding_backward_wpe(bf16 *dwpe, const bf16 *dout, int B, int T,
                                                  int C, int max_seq) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int vecs = C / 8;
    if (idx >= (long long)max_seq * vecs) return;
    int t = (int)(idx / vecs);
    int c = (int)(idx % vecs) * 8;
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.f;
    if (t < T) {
        for (int b = 0; b < B; b++) {
            float f[8];
            unpack8(*reinterpret_cast<const uint4 *>(dout + ((long long)b * T + t) * C + c), f);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] += f[i];
        }
    }
    *reinterpret_cast<uint4 *>(dwpe + (long long)t * C + c) = pack8(acc);
}

#define WTE_MAXV 4
extern "C" __global__ void embedding_backward_wte(bf16 *dwte, const bf16 *dout, const int *tokens,
                                                  int v_begin, int v_count, int N, int C) {
    __shared__ int s_dup;
    __shared__ int s_list[1024];
    __shared__ int s_count;
    int n = blockIdx.x;
    int tok = tokens[n];
    if (tok - v_begin < 0 || tok - v_begin >= v_count) return;  // uniform over the block
    // 1. Is there an earlier position with the same token? Then that block owns this row.
    if (threadIdx.x == 0) s_dup = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        if (tokens[j] == tok) s_dup = 1;  // benign: every writer writes 1
    }
    __syncthreads();
    if (s_dup) return;
    // 2. Sum dout over all positions j >= n with this token, in increasing j.
    int vecs = C / 8;
    float acc[WTE_MAXV][8];
#pragma unroll
    for (int k = 0; k < WTE_MAXV; k++)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[k][i] = 0.f;
    for (int base = n; base < N; base += blockDim.x) {
        // collect this tile's matches in increasing order (warp ballots + per-warp counts)
        __syncthreads();
        if (threadIdx.x == 0) s_count = 0;
        __syncthreads();
        int j = base + threadIdx.x;
        bool match = (j < N) && tokens[j] == tok;
        // ordered compaction: serialise by warps to keep increasing order
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
        unsigned ballot = __ballot_sync(0xffffffffu, match);
        for (int w = 0; w < nwarps; w++) {
            if (warp == w) {
                int before = __popc(ballot & ((1u << lane) - 1u));
                if (match) s_list[s_count + before] = j;
                __syncwarp();
                if (lane == 0) s_count += __popc(ballot);
            }
            __syncthreads();
        }
        int cnt = s_count;
        for (int e = 0; e < cnt; e++) {
            int jj = s_list[e];
#pragma unroll
            for (int k = 0; k < WTE_MAXV; k++) {
                int v = threadIdx.x + k * blockDim.x;
                if (v < vecs) {
                    float f[8];
                    unpack8(*reinterpret_cast<const uint4 *>(dout + (long long)jj * C + v * 8), f);
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[k][i] += f[i];
                }
            }
        }
    }
    bf16 *row = dwte + (long long)(tok - v_begin) * C;
#pragma unroll
    for (int k = 0; k < WTE_MAXV; k++) {
        int v = threadIdx.x + k * blockDim.x;
        if (v < vecs) {
            float f[8];
            uint4 *p = reinterpret_cast<uint4 *>(row + v * 8);
            unpack8(*p, f);
#pragma unroll
            for (int i = 0; i < 8; i++) f[i] += acc[k][i];
            *p = pack8(f);
        }
    }
}
