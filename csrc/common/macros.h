// Shared by the CPU (.cpp) and CUDA (.cu) kernels: per-element math is written once, as
// inline host/device functions, so both backends compute the same function.
#pragma once

#if defined(__CUDACC__)
#define DP_HD __host__ __device__ __forceinline__
#else
#define DP_HD inline
#endif
