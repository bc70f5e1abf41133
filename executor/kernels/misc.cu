// misc.cu: fills and conversion.
//
// fill_f32(float* p, long long n, float value)          p[i] = value.   grid ceil(n/256), block 256
// fill_bf16(bf16* p, long long n, float value)          p[i] = bf16(value). same
// convert_f32_to_bf16(bf16* out, const float* in, long long n)   out[i] = bf16_rn(in[i]). same
// spin_ns(long long ns)                 one thread waits ns of the global timer.  grid 1, block 1
// (grid.x may be smaller than ceil(n/256): every kernel strides over the grid.)
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

extern "C" __global__ void fill_f32(float *p, long long n, float value) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        p[i] = value;
}

extern "C" __global__ void fill_bf16(bf16 *p, long long n, float value) {
    bf16 v = __float2bfloat16_rn(value);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        p[i] = v;
}

extern "C" __global__ void convert_f32_to_bf16(bf16 *out, const float *in, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(in[i]);
}

// spin_ns(long long ns): one thread busy for `ns` nanoseconds of the GPU's global timer, so work
// queued behind it on the same stream starts that much later. A debug delay (the executor's
// slowed-lane runs), not part of any step.
extern "C" __global__ void spin_ns(long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while ((long long)(now - start) < ns);
}
