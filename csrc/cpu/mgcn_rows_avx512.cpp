// The inner loops of the CPU graph convolution compiled for AVX512 (see cpu/mgcn_rows.h).
// Only these loops get the target: nothing from torch is included in this file.
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define DP_ROWS_NS avx512
#define DP_ROWS_ISA "avx512"
#define DP_ROWS_FACTORY mgcn_rows_avx512
#define DP_ROWS_VW 16  // floats per vector register: a panel of the sampler's GEMM
#define DP_ROWS_MR 10  // rows per register block (2 x 10 accumulators; measured best on Zen 4)
#include "cpu/mgcn_rows_impl.h"
#endif
