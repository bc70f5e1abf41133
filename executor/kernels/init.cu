// init.cu: initial parameters from a counter-based generator, so every element's value depends
// only on (key, its index in the owner) and not on where or in what pieces it is made.
//
// init_params(bf16* weights, float* master, long long n, long long first, long long key,
//             float mean, float std)
//   for i < n, c = first + i: v = std == 0 ? mean : mean + std * z(key, c);
//   weights[i] = bf16_rn(v); master[i] = float(weights[i]).   grid ceil(n/256), block 256
//   z: a standard normal by Box-Muller from the two halves of h = mix(key + (c + 1) * G),
//   mix the SplitMix64 finaliser, G = 0x9E3779B97F4A7C15: u1 = ((h >> 40) + 1) / 2^24 in (0, 1],
//   u2 = (h & 0xFFFFFF) / 2^24, z = sqrt(-2 ln u1) * cos(2 pi u2), in f32.
//   (executor/src/init.rs mirrors it on the host for tests.)
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

extern "C" __global__ void init_params(bf16 *weights, float *master, long long n, long long first,
                                       long long key, float mean, float std) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = mean;
        if (std != 0.0f) {
            unsigned long long c = (unsigned long long)(first + i);
            unsigned long long h =
                mix64((unsigned long long)key + (c + 1ULL) * 0x9E3779B97F4A7C15ULL);
            float u1 = (float)((h >> 40) + 1ULL) * (1.0f / 16777216.0f);
            float u2 = (float)(h & 0xFFFFFFULL) * (1.0f / 16777216.0f);
            float z = sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
            v = mean + std * z;
        }
        bf16 w = __float2bfloat16_rn(v);
        weights[i] = w;
        master[i] = __bfloat162float(w);
    }
}
