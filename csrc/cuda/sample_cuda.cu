// The whole sampler as one op, CUDA: the kernel of diffupose::sample on CUDA tensors.
// Contract: csrc/ops.cpp; reference: diffupose/ops/sample.py::sample_ref; the CPU kernel
// (csrc/sample_cpu.cpp) computes the same function. WRITTEN AND COMPILED WITHOUT A GPU: nothing
// here has run yet; tests/ops/test_sample_gpu.py and bench/gpu_check.sh (stage sample_gpu) are
// its first check.
//
// Shape of the work. A CTA owns a tile of whole samples (one hypothesis of one frame: J rows;
// with flip also its mirrored twin, rows [ns, 2 ns) of the tile as diffusion.denoise batches
// them) and runs it through EVERY step of the sampler in one launch (a persistent loop: the
// step coefficients ride in the kernel's parameters, at most kMaxStepsPerLaunch per launch;
// DDPM's T steps are a few launches that hand the state x over through `hyp`):
//
//   x_T = philox noise                                                      xs   [ns, J, 3]  smem
//   per step: ha   = act(conv_in([x_t | y]))                                ha   [Rp, d]     smem fp32
//             per block b: hb = act(conv1_b(ha) * (1 + scale) + shift)      hb   [Rp, d]     smem
//                          ha = act(conv2_b(hb)) + ha
//             eps  = conv_out(ha)[:, :3]  (flip: averaged with the twin)    eps  [Rp, 3]     smem
//             xs   = sampler_update(xs, eps, z)
//   end: root centring (optional) and x -> hyp; a second kernel per frame: mean, spread.
//
// Rp = the tile's rows (nq * J, nq = ns or 2 ns with flip) rounded up to 16; ha keeps the
// residual stream in fp32. A graph convolution runs in output-channel chunks of kChunk: the
// GEMM H = A @ [w0 | w1][:, chunk] into H [2, Rp, kChunk] (smem), then the J x J aggregation,
// bias and epilogue of the chunk straight into the destination buffer (never the GEMM's source,
// so a chunk's writes cannot race the next chunk's reads). Weights stay in global memory (a few
// hundred KB: L2-resident after the first CTAs), read through the read-only cache.
//
// Precision, chosen by y's dtype (diffupose/ops/sample.py passes y in the activation dtype):
// - float32 y: every GEMM in fp32 FMA (SIMT): the contract's tolerance against the reference
//   (1e-4) holds, as on the CPU.
// - float16 / bfloat16 y (with d % 16 == 0): the hidden layers' GEMMs on tensor cores (wmma
//   16x16x16, fp16 inputs, fp32 accumulation): A from a half shadow of ha (and hb stored in
//   half), w from a half copy made once per call; the input layer (5 channels), the out layer
//   (3 eps channels), the aggregation, epilogue, sampler update and the residual stream stay fp32.
//   fp16 (10-bit mantissa) is at least as precise as bf16, so the error against fp64 stays at or
//   below PyTorch's own in the requested dtype (the half rule: at most ~2x).
//
// Noise: common/philox.h, keyed by the sample's global element index (counters
// offset + e for x_T, offset + (i + 1) * stride + e at step i), read from rng_state on the device:
// the same numbers as the CPU op and sampler_step, fresh on every replay of a captured graph.
//
// Capture: no host sync, no host-made tensor (perm and coefs are kernel parameters, rng_state is
// read in the kernel); temporaries from the caching allocator. The one exception to "no
// cudaFuncSetAttribute in a launch": the tile needs more than the default 48 KiB of shared memory,
// so the kernel's limit is raised once per device and kernel, the first time it is launched (the
// engine's warm-up call, before any capture).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "sample_check.h"
#include "common/activation.h"
#include "common/philox.h"
#include "common/sampler_math.h"

namespace diffupose {
namespace {

constexpr int kThreads = 256;            // 8 warps per CTA
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 64;               // output channels per GEMM chunk
constexpr int kTileRows = 64;            // rows a tile aims for (flip twins included)
constexpr int kMaxRowsPerThread = kTileRows / (kThreads / (2 * kChunk));  // fp32 GEMM accumulators
constexpr int kMaxJ = 64;
constexpr int kMaxBlocks = 16;
constexpr int kMaxLayers = 2 + 2 * kMaxBlocks;
constexpr int kMaxStepsPerLaunch = 32;
constexpr int kCoefs = static_cast<int>(kSampleCoefs);

// One packed graph convolution: w [cin, 2 cout] = [w0 | w1], m [J, cout], a [J, J], bias [cout];
// wh: w in half (tensor-core path, hidden layers only), else nullptr.
struct ConvP {
  const float* w;
  const float* m;
  const float* a;
  const float* bias;
  const __half* wh;
};

// Everything a launch needs, by value (kernel parameters: no host-made device tensor).
struct Params {
  int J, N, d, nb, M, ns, twins, act, root, Rp;
  int s_begin, s_count;  // the steps of this launch
  bool first, last, center;
  int64_t stride;
  const float* y;     // [B, J, 2]
  const float* film;  // [S, nb, 2, d]
  const int64_t* rng;
  float* hyp;  // [M, J, 3]: the state between launches, the result after the last
  ConvP conv[kMaxLayers];  // input, (conv1, conv2) per block, out
  int perm[kMaxJ];
  SamplerCoefs coefs[kMaxStepsPerLaunch];
};

static_assert(sizeof(Params) <= 4096, "the kernel parameters must fit the 4 KiB of a launch");

// Shared-memory carve-up of one tile; all offsets in bytes, 128-aligned (wmma wants 256-bit).
struct Smem {
  size_t ha, hb, ah, H, xs, eps, total;
};
__host__ __device__ inline size_t align128(size_t v) { return (v + 127) & ~size_t(127); }
__host__ __device__ inline Smem smem_layout(int Rp, int d, int ns, bool tc) {
  Smem s;
  size_t o = 0;
  s.ha = o;
  o = align128(o + sizeof(float) * Rp * d);
  s.hb = o;
  o = align128(o + (tc ? sizeof(__half) : sizeof(float)) * Rp * d);
  s.ah = o;
  o = align128(o + (tc ? sizeof(__half) * Rp * d : 0));
  s.H = o;
  o = align128(o + sizeof(float) * 2 * Rp * kChunk);
  s.xs = o;
  o = align128(o + sizeof(float) * ns * kMaxJ * 3);
  s.eps = o;
  o = align128(o + sizeof(float) * Rp * 3);
  s.total = o;
  return s;
}

// ---------------------------------------------------------------------------------------------
// the GEMM of one chunk: H[h][r][c] = sum_k A[r][k] * w[k][h * cout + c0 + c], h = 0 (own), 1
// ---------------------------------------------------------------------------------------------
// fp32 FMA. Thread t: column cc = t % (2 kChunk) of [H0 chunk | H1 chunk], rows rg, rg + G, ...
// (G = kThreads / (2 kChunk) row groups): a warp reads one row of A (a shared-memory broadcast)
// and 32 consecutive weights (coalesced), each weight reused over the thread's rows.
__device__ void gemm_chunk_f32(const float* __restrict__ A, const float* __restrict__ w, int cin, int cout, int R,
                               int c0, int nc, float* __restrict__ H, int Rp) {
  constexpr int G = kThreads / (2 * kChunk);
  const int cc = threadIdx.x % (2 * kChunk), rg = threadIdx.x / (2 * kChunk);
  const int h = cc / kChunk, c = cc % kChunk;
  if (c >= nc) return;
  float acc[kMaxRowsPerThread];
#pragma unroll
  for (int i = 0; i < kMaxRowsPerThread; ++i) acc[i] = 0.0f;
  const float* wc = w + h * cout + c0 + c;
  for (int k = 0; k < cin; ++k) {
    const float wv = __ldg(wc + static_cast<int64_t>(k) * 2 * cout);
#pragma unroll
    for (int i = 0; i < kMaxRowsPerThread; ++i) {
      const int r = rg + G * i;
      if (r < R) acc[i] = fmaf(A[r * cin + k], wv, acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kMaxRowsPerThread; ++i) {
    const int r = rg + G * i;
    if (r < R) H[(h * Rp + r) * kChunk + c] = acc[i];
  }
}

// Tensor cores: wmma 16x16x16, fp16 A [Rp, cin] (shared) and w [cin, 2 cout] (global half copy),
// fp32 accumulation. Warp w takes the 16x16 output tiles w, w + kWarps, ... of [2, Rp, nc].
// cin, cout, c0, nc are multiples of 16 (checked on the host); padding rows of A are zero.
__device__ void gemm_chunk_tc(const __half* __restrict__ A, const __half* __restrict__ w, int cin, int cout, int c0,
                              int nc, float* __restrict__ H, int Rp) {
  using namespace nvcuda;
  const int warp = threadIdx.x / 32;
  const int rt = Rp / 16, ct = nc / 16, tiles = 2 * rt * ct;
  for (int t = warp; t < tiles; t += kWarps) {
    const int h = t / (rt * ct), rem = t % (rt * ct), r = rem / ct, c = rem % ct;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    const __half* a_tile = A + r * 16 * cin;
    const __half* w_tile = w + h * cout + c0 + c * 16;
    for (int k = 0; k < cin; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
      wmma::load_matrix_sync(fa, a_tile + k, cin);
      wmma::load_matrix_sync(fb, w_tile + static_cast<int64_t>(k) * 2 * cout, 2 * cout);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(H + (h * Rp + r * 16) * kChunk + c * 16, acc, kChunk, wmma::mem_row_major);
  }
}

// The input layer's GEMM (cin 5: x_t's 3 channels, y's 2), fp32, from the sampler state and y:
// row q * J + j of the tile is sample q's joint j, or for a twin (q >= ns_t) the mirror of sample
// q - ns_t: its joint perm[j], x negated.
__device__ void gemm_chunk_input(const Params& p, const float* __restrict__ xs, int s0, int ns_t, int R, int c0,
                                 int nc, float* __restrict__ H) {
  const int J = p.J, d = p.d;
  const float* w = p.conv[0].w;
  for (int idx = threadIdx.x; idx < R * 2 * nc; idx += blockDim.x) {
    const int r = idx / (2 * nc), hc = idx % (2 * nc), h = hc / nc, c = hc % nc;
    const int q = r / J, j = r % J;
    const bool twin = q >= ns_t;
    const int k = twin ? q - ns_t : q, jj = twin ? p.perm[j] : j;
    const float sx = twin ? -1.0f : 1.0f;
    const float* xr = xs + (k * J + jj) * 3;
    const float* yr = p.y + (static_cast<int64_t>(s0 + k) / p.N * J + jj) * 2;
    const float in[5] = {sx * xr[0], xr[1], xr[2], sx * __ldg(yr), __ldg(yr + 1)};
    const float* wc = w + h * d + c0 + c;
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < 5; ++i) acc = fmaf(in[i], __ldg(wc + i * 2 * d), acc);
    H[(h * p.Rp + r) * kChunk + c] = acc;
  }
}

// The out layer's GEMM (cout 3, the eps channels), fp32 from ha.
__device__ void gemm_out(const Params& p, const float* __restrict__ ha, int R, float* __restrict__ H) {
  const int d = p.d;
  const float* w = p.conv[1 + 2 * p.nb].w;  // [d, 6]
  for (int idx = threadIdx.x; idx < R * 6; idx += blockDim.x) {
    const int r = idx / 6, hc = idx % 6, h = hc / 3, c = hc % 3;
    const float* a = ha + r * d;
    float acc = 0.0f;
    for (int k = 0; k < d; ++k) acc = fmaf(a[k], __ldg(w + k * 6 + hc), acc);
    H[(h * p.Rp + r) * kChunk + c] = acc;
  }
}

// Where the epilogue of a chunk goes.
enum class Dest { kHa, kHaResidual, kHb, kEps };

// Aggregation + bias + epilogue of a chunk, for every valid row r = q * J + j:
//   pre = a_jj m_j H0_r + sum_{k != j} a_jk m_k H1_{q J + k} + bias
//   u   = act(pre * (1 + scale) + shift)   (the FiLM of conv1 only)
// then ha = u | ha += u (the block's skip) | hb = u | eps = u, with ah / hb the half copies.
template <bool TC>
__device__ void agg_epilogue(const ConvP& L, int J, int cout, int R, int c0, int nc, const float* __restrict__ H,
                             int Rp, const float* film_ss, int act, Dest dest, float* __restrict__ ha,
                             void* __restrict__ hb, __half* __restrict__ ah, float* __restrict__ eps, int d) {
  for (int idx = threadIdx.x; idx < R * nc; idx += blockDim.x) {
    const int r = idx / nc, c = idx % nc, cg = c0 + c;
    const int j = r % J, q0 = r - j;
    const float* a = L.a + j * J;
    float pre = __ldg(a + j) * __ldg(L.m + j * cout + cg) * H[r * kChunk + c] + __ldg(L.bias + cg);
    const float* h1 = H + (Rp + q0) * kChunk + c;
    for (int k = 0; k < J; ++k)
      if (k != j) pre = fmaf(__ldg(a + k) * __ldg(L.m + k * cout + cg), h1[k * kChunk], pre);
    float u = pre;
    if (film_ss != nullptr) u = pre * (1.0f + __ldg(film_ss + cg)) + __ldg(film_ss + d + cg);
    u = act_fwd(u, act);
    switch (dest) {
      case Dest::kHa:
      case Dest::kHaResidual: {
        float& o = ha[r * d + cg];
        o = dest == Dest::kHaResidual ? o + u : u;
        if (TC) ah[r * d + cg] = __float2half_rn(o);
        break;
      }
      case Dest::kHb:
        if (TC)
          static_cast<__half*>(hb)[r * d + cg] = __float2half_rn(u);
        else
          static_cast<float*>(hb)[r * d + cg] = u;
        break;
      case Dest::kEps:
        eps[r * 3 + cg] = u;
        break;
    }
  }
}

// One hidden graph convolution (cin = cout = d) of the tile, chunk by chunk.
template <bool TC>
__device__ void hidden_conv(const Params& p, const ConvP& L, const void* src, int R, float* H, const float* film_ss,
                            Dest dest, float* ha, void* hb, __half* ah) {
  const int d = p.d;
  for (int c0 = 0; c0 < d; c0 += kChunk) {
    const int nc = min(kChunk, d - c0);
    if (TC)
      gemm_chunk_tc(static_cast<const __half*>(src), L.wh, d, d, c0, nc, H, p.Rp);
    else
      gemm_chunk_f32(static_cast<const float*>(src), L.w, d, d, R, c0, nc, H, p.Rp);
    __syncthreads();
    agg_epilogue<TC>(L, p.J, d, R, c0, nc, H, p.Rp, film_ss, p.act, dest, ha, hb, ah, nullptr, d);
    __syncthreads();
  }
}

// grid: one CTA per tile of p.ns samples (the last one ragged); block: kThreads; dynamic shared
// memory: smem_layout(Rp, d, ns, TC).total.
template <bool TC>
__global__ void __launch_bounds__(kThreads) sample_tile_kernel(const __grid_constant__ Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Smem L = smem_layout(p.Rp, p.d, p.ns, TC);
  float* ha = reinterpret_cast<float*>(smem + L.ha);
  void* hb = smem + L.hb;
  __half* ah = reinterpret_cast<__half*>(smem + L.ah);
  float* H = reinterpret_cast<float*>(smem + L.H);
  float* xs = reinterpret_cast<float*>(smem + L.xs);
  float* eps = reinterpret_cast<float*>(smem + L.eps);

  const int J = p.J, d = p.d;
  const int s0 = blockIdx.x * p.ns, ns_t = min(p.ns, p.M - s0);
  const int R = ns_t * p.twins * J, E = ns_t * J * 3;
  const uint64_t e0 = static_cast<uint64_t>(s0) * J * 3;  // the tile's first element: its noise counters
  const uint64_t seed = static_cast<uint64_t>(p.rng[0]), offset = static_cast<uint64_t>(p.rng[1]);

  // the GEMM sources' padding rows stay zero (wmma reads whole 16-row tiles)
  if (TC) {
    for (int i = threadIdx.x; i < p.Rp * d; i += blockDim.x) {
      ah[i] = __float2half_rn(0.0f);
      static_cast<__half*>(hb)[i] = __float2half_rn(0.0f);
    }
  }
  for (int i = threadIdx.x; i < E; i += blockDim.x)
    xs[i] = p.first ? philox_normal(seed, offset + e0 + i) : p.hyp[e0 + i];  // x_T ~ N(0, I), or the state
  __syncthreads();

  const void* src_ha = TC ? static_cast<const void*>(ah) : static_cast<const void*>(ha);
  for (int si = 0; si < p.s_count; ++si) {
    const int st = p.s_begin + si;
    // input layer: [x_t | y] (5 channels) -> ha
    for (int c0 = 0; c0 < d; c0 += kChunk) {
      const int nc = min(kChunk, d - c0);
      gemm_chunk_input(p, xs, s0, ns_t, R, c0, nc, H);
      __syncthreads();
      agg_epilogue<TC>(p.conv[0], J, d, R, c0, nc, H, p.Rp, nullptr, p.act, Dest::kHa, ha, hb, ah, nullptr, d);
      __syncthreads();
    }
    // residual blocks: hb = conv1(ha) with the step's FiLM; ha += conv2(hb)
    for (int b = 0; b < p.nb; ++b) {
      const float* film_ss = p.film + (static_cast<int64_t>(st) * p.nb + b) * 2 * d;
      hidden_conv<TC>(p, p.conv[1 + 2 * b], src_ha, R, H, film_ss, Dest::kHb, ha, hb, ah);
      hidden_conv<TC>(p, p.conv[2 + 2 * b], hb, R, H, nullptr, Dest::kHaResidual, ha, hb, ah);
    }
    // out layer: the eps channels, no activation
    gemm_out(p, ha, R, H);
    __syncthreads();
    agg_epilogue<TC>(p.conv[1 + 2 * p.nb], J, 3, R, 0, 3, H, p.Rp, nullptr, kActNone, Dest::kEps, ha, hb, ah, eps,
                     d);
    __syncthreads();
    // the flip average (the twin's prediction mirrored back), then the sampler update
    const SamplerCoefs c = p.coefs[si];
    const uint64_t base = offset + static_cast<uint64_t>(st + 1) * static_cast<uint64_t>(p.stride) + e0;
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
      float e = eps[i];
      if (p.twins == 2) {
        const int k = i / (J * 3), j = (i / 3) % J, ch = i % 3;
        const float t = eps[((ns_t + k) * J + p.perm[j]) * 3 + ch];
        e = 0.5f * (ch == 0 ? e - t : e + t);
      }
      const float z = c.sigma != 0.0f ? philox_normal(seed, base + i) : 0.0f;
      xs[i] = sampler_update(xs[i], e, z, c);
    }
    __syncthreads();
  }
  // root centring after the last step (every sample is whole in this tile), then the state out
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    float v = xs[i];
    if (p.last && p.center) v -= xs[(i / (J * 3) * J + p.root) * 3 + i % 3];
    p.hyp[e0 + i] = v;
  }
}

// Per frame: mean over the N hypotheses and the per-joint spread sqrt(mean_n |x - mean|^2).
// hyp [B, N, J * 3], mean [B, J * 3], spread [B, J]; thread k < J * 3 owns element k.
__global__ void sample_aggregate_kernel(const float* __restrict__ hyp, float* __restrict__ mean,
                                        float* __restrict__ spread, int N, int J) {
  extern __shared__ float sq[];  // [J * 3]
  const int64_t f = blockIdx.x;
  const int JD = J * 3, k = threadIdx.x;
  if (k < JD) {
    const float* h = hyp + f * N * JD + k;
    float s = 0.0f;
    for (int n = 0; n < N; ++n) s += h[static_cast<int64_t>(n) * JD];
    const float mu = s / static_cast<float>(N);
    mean[f * JD + k] = mu;
    float s2 = 0.0f;
    for (int n = 0; n < N; ++n) {
      const float v = h[static_cast<int64_t>(n) * JD] - mu;
      s2 += v * v;
    }
    sq[k] = s2;
  }
  __syncthreads();
  if (k < J) spread[f * J + k] = sqrtf((sq[k * 3] + sq[k * 3 + 1] + sq[k * 3 + 2]) / static_cast<float>(N));
}

// The tensor-core path's half copies of the hidden layers' w, one launch for all of them:
// src[l] [n_l] fp32 -> dst + off[l].
struct HalfCopies {
  const float* src[kMaxLayers];
  int64_t off[kMaxLayers + 1];
  int n;
};
__global__ void weights_to_half_kernel(const __grid_constant__ HalfCopies hc, __half* __restrict__ dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= hc.off[hc.n]) return;
  int l = 0;
  while (i >= hc.off[l + 1]) ++l;
  dst[i] = __float2half_rn(hc.src[l][i - hc.off[l]]);
}

// The shared-memory opt-in of a kernel on a device, done once (see the file comment).
template <bool TC>
size_t max_dynamic_smem(int device) {
  static std::mutex mu;
  static std::vector<int> optin;
  const std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(optin.size()) <= device) optin.resize(device + 1, -1);
  if (optin[device] < 0) {
    int v = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    C10_CUDA_CHECK(cudaFuncSetAttribute(sample_tile_kernel<TC>, cudaFuncAttributeMaxDynamicSharedMemorySize, v));
    optin[device] = v;
  }
  return static_cast<size_t>(optin[device]);
}

void check_conv(const at::Tensor* t, int64_t J, int64_t cin, int64_t cout, int64_t layer, const at::Device& dev) {
  const char* what[4] = {"w", "m", "a", "bias"};
  const std::vector<std::vector<int64_t>> want = {{cin, 2 * cout}, {J, cout}, {J, J}, {cout}};
  for (int i = 0; i < 4; ++i) {
    TORCH_CHECK(t[i].device() == dev && t[i].scalar_type() == at::kFloat && t[i].is_contiguous(),
                "sample: weights[", 4 * layer + i, "] (layer ", layer, " ", what[i],
                ") must be a contiguous float32 tensor on ", dev, ": pack them with diffupose.ops.sample");
    TORCH_CHECK(t[i].sizes() == at::IntArrayRef(want[i]), "sample: layer ", layer, " ", what[i], " must be ",
                at::IntArrayRef(want[i]), ", got ", t[i].sizes());
  }
}

template <bool TC>
void launch_tiles(Params& p, int64_t tiles, size_t smem, const std::vector<SamplerCoefs>& coefs, int64_t S,
                  cudaStream_t stream) {
  for (int64_t s = 0; s < S; s += kMaxStepsPerLaunch) {
    p.s_begin = static_cast<int>(s);
    p.s_count = static_cast<int>(std::min<int64_t>(kMaxStepsPerLaunch, S - s));
    p.first = s == 0;
    p.last = s + p.s_count == S;
    for (int i = 0; i < p.s_count; ++i) p.coefs[i] = coefs[s + i];
    sample_tile_kernel<TC><<<static_cast<unsigned>(tiles), kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cuda(const at::Tensor& y_, at::TensorList weights,
                                                           const at::Tensor& film_, c10::ArrayRef<double> coefs,
                                                           const at::Tensor& rng_state, int64_t n_hyp,
                                                           int64_t counter_stride, c10::ArrayRef<int64_t> flip_perm,
                                                           int64_t act, int64_t root, bool center_root) {
  // the checks of sample_cpu.cpp (sample_check.h), plus this kernel's limits
  const SampleDims dims = check_sample_args(y_, weights, film_, coefs, rng_state, n_hyp, counter_stride, flip_perm,
                                            act, root);
  const int64_t B = dims.B, J = dims.J, nb = dims.nb, S = dims.S, d = dims.d, M = dims.M;
  TORCH_CHECK(J <= kMaxJ, "sample: the CUDA kernel takes at most ", kMaxJ, " joints, got ", J);
  TORCH_CHECK(nb <= kMaxBlocks, "sample: the CUDA kernel takes at most ", kMaxBlocks, " blocks, got ", nb);
  const at::Device dev = y_.device();
  check_conv(&weights[0], J, 5, d, 0, dev);
  for (int64_t l = 1; l <= 2 * nb; ++l) check_conv(&weights[4 * l], J, d, d, l, dev);
  check_conv(&weights[4 * (1 + 2 * nb)], J, d, 3, 1 + 2 * nb, dev);

  const c10::cuda::CUDAGuard guard(dev);
  const auto f32 = y_.options().dtype(at::kFloat);
  at::Tensor hyp = at::empty({M, J, 3}, f32), mean = at::empty({B, J, 3}, f32), spread = at::empty({B, J}, f32);
  if (M == 0) return {hyp.view({B, n_hyp, J, 3}), mean, spread};
  // half or bf16 y asks for the activation dtype's precision: the tensor cores (file comment)
  const bool tc = (y_.scalar_type() == at::kHalf || y_.scalar_type() == at::kBFloat16) && d % 16 == 0;
  const at::Tensor y = y_.detach().to(at::kFloat).contiguous();
  const at::Tensor film = film_.detach().to(at::kFloat).contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  Params p{};
  p.J = static_cast<int>(J), p.N = static_cast<int>(n_hyp), p.d = static_cast<int>(d), p.nb = static_cast<int>(nb);
  p.M = static_cast<int>(M);
  p.twins = flip_perm.empty() ? 1 : 2;
  p.act = static_cast<int>(act), p.root = static_cast<int>(root), p.center = center_root;
  p.stride = counter_stride;
  p.y = y.data_ptr<float>(), p.film = film.data_ptr<float>(), p.rng = rng_state.data_ptr<int64_t>();
  p.hyp = hyp.data_ptr<float>();
  for (int64_t j = 0; j < static_cast<int64_t>(flip_perm.size()); ++j) p.perm[j] = static_cast<int>(flip_perm[j]);
  const int64_t layers = 2 + 2 * nb;
  for (int64_t l = 0; l < layers; ++l)
    p.conv[l] = {weights[4 * l].data_ptr<float>(), weights[4 * l + 1].data_ptr<float>(),
                 weights[4 * l + 2].data_ptr<float>(), weights[4 * l + 3].data_ptr<float>(), nullptr};
  at::Tensor wh;  // the hidden layers' w in half, for the tensor cores
  if (tc && nb > 0) {
    HalfCopies hc{};
    hc.n = static_cast<int>(2 * nb);
    for (int l = 0; l < hc.n; ++l) {
      hc.src[l] = weights[4 * (l + 1)].data_ptr<float>();
      hc.off[l + 1] = hc.off[l] + d * 2 * d;  // a multiple of 256 elements: every copy stays 512-byte aligned
    }
    wh = at::empty({hc.off[hc.n]}, y_.options().dtype(at::kHalf));
    const int64_t n = hc.off[hc.n];
    weights_to_half_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
        hc, reinterpret_cast<__half*>(wh.data_ptr<at::Half>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    for (int l = 0; l < hc.n; ++l) p.conv[l + 1].wh = reinterpret_cast<const __half*>(wh.data_ptr<at::Half>()) + hc.off[l];
  }

  // tile: whole samples (with their twins), up to kTileRows rows, fewer if shared memory is short
  TORCH_CHECK(p.twins * J <= kTileRows, "sample: the CUDA kernel's tile takes at most ", kTileRows,
              " rows per sample (with its flip twin), got ", p.twins * J);
  const size_t limit = tc ? max_dynamic_smem<true>(dev.index()) : max_dynamic_smem<false>(dev.index());
  int64_t ns = std::max<int64_t>(1, std::min<int64_t>(M, kTileRows / (J * p.twins)));
  const auto rows_of = [&](int64_t n) { return static_cast<int>((n * p.twins * J + 15) / 16 * 16); };
  while (ns > 1 && smem_layout(rows_of(ns), p.d, static_cast<int>(ns), tc).total > limit) --ns;
  p.ns = static_cast<int>(ns);
  p.Rp = rows_of(ns);  // <= kTileRows: ns * twins * J <= kTileRows, a multiple of 16
  const size_t smem = smem_layout(p.Rp, p.d, p.ns, tc).total;
  TORCH_CHECK(smem <= limit, "sample: d_model ", d, " needs ", smem, " bytes of shared memory per tile, this GPU has ",
              limit);
  const int64_t tiles = (M + ns - 1) / ns;
  std::vector<SamplerCoefs> cs;
  for (int64_t s = 0; s < S; ++s) {
    const double* c = coefs.data() + s * kCoefs;
    cs.push_back({static_cast<float>(c[0]), static_cast<float>(c[1]), static_cast<float>(c[2]),
                  static_cast<float>(c[3]), static_cast<float>(c[4]), static_cast<float>(c[5])});
  }
  if (tc)
    launch_tiles<true>(p, tiles, smem, cs, S, stream);
  else
    launch_tiles<false>(p, tiles, smem, cs, S, stream);
  const int threads = std::max(32, static_cast<int>((J * 3 + 31) / 32 * 32));
  sample_aggregate_kernel<<<static_cast<unsigned>(B), threads, J * 3 * sizeof(float), stream>>>(
      p.hyp, mean.data_ptr<float>(), spread.data_ptr<float>(), p.N, p.J);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {hyp.view({B, n_hyp, J, 3}), mean, spread};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CUDA, m) { m.impl("sample", &sample_cuda); }

}  // namespace diffupose
