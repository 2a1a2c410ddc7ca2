// The inner loops (per-sample aggregation, epilogue rows) of the CPU graph convolution (csrc/mgcn_cpu.cpp), compiled once per
// instruction set: this header is included by mgcn_cpu.cpp (baseline x86-64 / any CPU) and by
// cpu/mgcn_rows_avx2.cpp and cpu/mgcn_rows_avx512.cpp under `#pragma GCC target`, each time in
// its own namespace DP_ROWS_NS; mgcn_cpu.cpp picks one at run time (cpu/mgcn_rows.h).
// Only plain loops on float/double here, and no std containers or torch headers: an inline
// function of a shared header compiled with AVX-512 could otherwise be the copy the linker keeps
// for every caller (and crash on a CPU without it).
// (no include guard: included once per instruction set)
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/activation.h"
#include "cpu/mgcn_rows.h"

#ifndef DP_ROWS_NS
#error "define DP_ROWS_NS, DP_ROWS_ISA and DP_ROWS_FACTORY before including cpu/mgcn_rows_impl.h"
#endif

namespace diffupose {
namespace DP_ROWS_NS {

// exp for the row loops: a Cephes-style polynomial (max relative error 8e-8 in float, like
// libm's) that gcc vectorizes (no libm call in the loop; -fno-trapping-math in setup.py lets the
// clamps if-convert); the scalar expf of StdExp made silu the most expensive part of the
// epilogue. fp64 keeps std::exp.
struct RowExp {
  float operator()(float v) const {
    v = v < -87.0f ? -87.0f : v;  // conditional moves, not std::min/max: keeps the loop branch-free
    v = v > 88.0f ? 88.0f : v;
    // n = round(v / ln2) by the 1.5 * 2^23 trick (exact for |v / ln2| < 2^22): pure float ops
    const float kRound = 12582912.0f;
    const float nf = (v * 1.44269504088896341f + kRound) - kRound;
    const float r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;  // v - n ln2, ln2 in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(nf) + 127) << 23;  // 2^n
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return y * scale;
  }
  double operator()(double v) const { return std::exp(v); }
};

// The epilogue over a row of C channels, in place: u = pre * scale1 + shift (scale1 = 1 + scale),
// then act. One loop per activation so that each is a straight, vectorizable loop.
template <typename T>
void epilogue_row_fwd(T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act) {
  if (scale1)
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c] * scale1[c] + shift[c];
  else
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c];
  if (act == kActRelu)
    for (int64_t c = 0; c < C; ++c) u[c] = act_fwd<T>(u[c], kActRelu);
  else if (act == kActSilu)
    for (int64_t c = 0; c < C; ++c) u[c] = act_fwd<T>(u[c], kActSilu, RowExp{});
}

// dz = g * act'(u) over a row, in place in g (u as in epilogue_row_fwd, in `u`).
template <typename T>
void epilogue_row_bwd(T* g, T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act) {
  if (act == kActNone) return;
  if (scale1)
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c] * scale1[c] + shift[c];
  else
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c];
  if (act == kActRelu)
    for (int64_t c = 0; c < C; ++c) g[c] *= act_bwd<T>(u[c], kActRelu);
  else
    for (int64_t c = 0; c < C; ++c) g[c] *= act_bwd<T>(u[c], kActSilu, RowExp{});
}

#ifndef DP_ROWS_VW  // floats per vector register and the sampler GEMM's rows per block (see below)
#define DP_ROWS_VW 4
#define DP_ROWS_MR 6
#endif

// The J x J loops (aggregate_fwd, aggregate_bwd) go per block of channels, kR vector registers
// wide: a block's accumulators stay in registers across the joints (one load per FMA, one store
// per block) where a loop over all C channels per joint pair read and wrote its row for every
// pair. Channels past the last whole block take plain loops.
template <typename T>
struct AggVec {
  static constexpr int kBytes = DP_ROWS_VW * sizeof(float);  // one vector register
  typedef T V __attribute__((vector_size(kBytes)));
  typedef T Vu __attribute__((vector_size(kBytes), aligned(alignof(T)), may_alias));  // unaligned
  static constexpr int kN = kBytes / sizeof(T);  // elements per register (<= kDaLanes)
  static constexpr int kR = 4;                   // registers per block
  static constexpr int64_t kBlock = kN * kR;
  static V load(const T* p) { return *reinterpret_cast<const Vu*>(p); }
  static void store(T* p, V v) { *reinterpret_cast<Vu*>(p) = v; }
  static_assert(kN <= kDaLanes, "a pair's da lanes hold one register");
};

// The J x J aggregation of one sample, forward: pre [J, C] = diag(a) m H0 + offdiag(a) (m H1) + bias;
// g1 [J, C] scratch (m * H1). h0, h1 [J, C] with row stride ldh (2 C when they are the two halves
// of one GEMM's [H0 | H1] rows); m [J, C]; a [J, J]; bias [C].
template <typename T>
void aggregate_fwd(T* pre, T* g1, const T* h0, const T* h1, int64_t ldh, const T* m, const T* a, const T* bias,
                   int64_t J, int64_t C) {
  for (int64_t j = 0; j < J; ++j)
    for (int64_t c = 0; c < C; ++c) g1[j * C + c] = m[j * C + c] * h1[j * ldh + c];
  using A = AggVec<T>;
  using V = typename A::V;
  constexpr int kN = A::kN, kR = A::kR;
  const int64_t whole = C / A::kBlock * A::kBlock;
  for (int64_t c0 = 0; c0 < whole; c0 += A::kBlock)
    for (int64_t j = 0; j < J; ++j) {
      const T ajj = a[j * J + j];
      const T *mj = m + j * C + c0, *h0j = h0 + j * ldh + c0;
      V acc[kR];
#pragma GCC unroll 8
      for (int q = 0; q < kR; ++q)
        acc[q] = A::load(bias + c0 + q * kN) + ajj * A::load(mj + q * kN) * A::load(h0j + q * kN);
      for (int64_t k = 0; k < J; ++k) {
        if (k == j) continue;  // the own joint goes through w0, not w1
        const T ajk = a[j * J + k];
        const T* gk = g1 + k * C + c0;
#pragma GCC unroll 8
        for (int q = 0; q < kR; ++q) acc[q] += ajk * A::load(gk + q * kN);
      }
#pragma GCC unroll 8
      for (int q = 0; q < kR; ++q) A::store(pre + j * C + c0 + q * kN, acc[q]);
    }
  for (int64_t j = 0; j < J && whole < C; ++j) {  // the channels past the whole blocks
    const T ajj = a[j * J + j];
    T* row = pre + j * C;
    for (int64_t c = whole; c < C; ++c) row[c] = bias[c] + ajj * m[j * C + c] * h0[j * ldh + c];
    for (int64_t k = 0; k < J; ++k) {
      if (k == j) continue;
      const T ajk = a[j * J + k];
      for (int64_t c = whole; c < C; ++c) row[c] += ajk * g1[k * C + c];
    }
  }
}

// Backward of the aggregation of one sample from dpre [J, C]: writes dh0, dh1 (the gradients of
// H0 = x w0, H1 = x w1; row stride ldh, as h0, h1), accumulates dm [J, C] and da's lanes (below);
// g1 [J, C] scratch.
//   self:       dG0_j = a_jj dpre_j;  dH0_j = m_j dG0_j;  dm_j += dG0_j H0_j;  da_jj += <dpre_j, m_j H0_j>
//   neighbours: dG1_k = sum_{j != k} a_jk dpre_j;  dH1_k = m_k dG1_k;  dm_k += dG1_k H1_k;
//               da_jk += <dpre_j, m_k H1_k>
// pf, pf_len: memory to prefetch meanwhile (the next sample's H rows; nullable).
// da's J x J dot products accumulate per lane, da_lanes [J * J, kDaLanes]: the whole blocks put
// pair (j, k)'s channel c in lane c % kN (one register), the channels past them in lanes 0.. in
// order (a fixed assignment either way), and aggregate_bwd_flush sums the lanes once per tile.
// A horizontal sum per pair and sample (an `omp simd` reduction, which gcc finishes with 16
// dependent scalar adds) was ~40% of this function.
template <typename T>
inline void dot_lanes(T* lanes, const T* x, const T* y, int64_t C) {
  T acc[kDaLanes];
  for (int i = 0; i < kDaLanes; ++i) acc[i] = lanes[i];
  int64_t c = 0;
  for (; c + kDaLanes <= C; c += kDaLanes)
    for (int i = 0; i < kDaLanes; ++i) acc[i] += x[c + i] * y[c + i];
  for (int i = 0; c < C; ++c, ++i) acc[i] += x[c] * y[c];
  for (int i = 0; i < kDaLanes; ++i) lanes[i] = acc[i];
}

template <typename T>
void aggregate_bwd(T* dh0, T* dh1, int64_t ldh, T* dm, T* da_lanes, T* g1, const T* dpre, const T* h0, const T* h1,
                   const T* m, const T* a, int64_t J, int64_t C, const T* pf, int64_t pf_len) {
  for (int64_t j = 0; j < J; ++j)
    for (int64_t c = 0; c < C; ++c) g1[j * C + c] = m[j * C + c] * h1[j * ldh + c];
  for (int64_t j = 0; j < J; ++j) {
    const T* dpj = dpre + j * C;
    const T* mj = m + j * C;
    const T* h0j = h0 + j * ldh;
    T* dmj = dm + j * C;
    T* dh0j = dh0 + j * ldh;
    const T ajj = a[j * J + j];
    for (int64_t c = 0; c < C; ++c) {
      const T dg0 = ajj * dpj[c];
      dh0j[c] = mj[c] * dg0;
      dmj[c] += dg0 * h0j[c];
    }
    T tmp[kDaLanes];  // da_jj's lanes: <dpre_j, m_j H0_j>
    for (int i = 0; i < kDaLanes; ++i) tmp[i] = da_lanes[(j * J + j) * kDaLanes + i];
    int64_t c = 0;
    for (; c + kDaLanes <= C; c += kDaLanes)
      for (int i = 0; i < kDaLanes; ++i) tmp[i] += dpj[c + i] * mj[c + i] * h0j[c + i];
    for (int i = 0; c < C; ++c, ++i) tmp[i] += dpj[c] * mj[c] * h0j[c];
    for (int i = 0; i < kDaLanes; ++i) da_lanes[(j * J + j) * kDaLanes + i] = tmp[i];
  }
  // per block of channels and source joint k: dG1_k's block accumulates in registers over the
  // joints j, beside the (j, k) dot products' lanes (one register per pair), g1_k's block loaded once
  using A = AggVec<T>;
  using V = typename A::V;
  constexpr int kN = A::kN, kR = A::kR;
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  const int64_t whole = C / A::kBlock * A::kBlock;
  for (int64_t k = 0; k < J; ++k) {
    if (pf)  // the next sample's H, a J-th of it per k: its first reads above missed the caches
      for (int64_t q = k * pf_len / J; q < (k + 1) * pf_len / J; q += kLine) __builtin_prefetch(pf + q);
    T* dg1k = dh1 + k * ldh;
    for (int64_t c0 = 0; c0 < whole; c0 += A::kBlock) {
      V gv[kR], acc[kR];
#pragma GCC unroll 8
      for (int q = 0; q < kR; ++q) {
        gv[q] = A::load(g1 + k * C + c0 + q * kN);
        acc[q] = V{};
      }
      for (int64_t j = 0; j < J; ++j) {
        if (j == k) continue;
        const T ajk = a[j * J + k];
        const T* dpj = dpre + j * C + c0;
        T* lanes = da_lanes + (j * J + k) * kDaLanes;
        V l = A::load(lanes);
#pragma GCC unroll 8
        for (int q = 0; q < kR; ++q) {
          const V d = A::load(dpj + q * kN);
          acc[q] += ajk * d;
          l += d * gv[q];
        }
        A::store(lanes, l);
      }
#pragma GCC unroll 8
      for (int q = 0; q < kR; ++q) A::store(dg1k + c0 + q * kN, acc[q]);
    }
    if (whole < C) {  // the channels past the whole blocks
      for (int64_t c = whole; c < C; ++c) dg1k[c] = T(0);
      for (int64_t j = 0; j < J; ++j) {
        if (j == k) continue;
        const T ajk = a[j * J + k];
        const T* dpj = dpre + j * C;
        for (int64_t c = whole; c < C; ++c) dg1k[c] += ajk * dpj[c];
        dot_lanes<T>(da_lanes + (j * J + k) * kDaLanes, dpj + whole, g1 + k * C + whole, C - whole);
      }
    }
  }
  for (int64_t k = 0; k < J; ++k) {
    T* dg1k = dh1 + k * ldh;
    const T* h1k = h1 + k * ldh;
    for (int64_t c = 0; c < C; ++c) {
      dm[k * C + c] += dg1k[c] * h1k[c];
      dg1k[c] *= m[k * C + c];
    }
  }
}

// da [J, J] += the lanes' sums (in lane order), and the lanes zeroed for the next tile.
template <typename T>
void aggregate_bwd_flush(T* da, T* da_lanes, int64_t J) {
  for (int64_t p = 0; p < J * J; ++p) {
    T s = 0;
    for (int i = 0; i < kDaLanes; ++i) s += da_lanes[p * kDaLanes + i];
    da[p] += s;
    for (int i = 0; i < kDaLanes; ++i) da_lanes[p * kDaLanes + i] = T(0);
  }
}

// ---------------------------------------------------------------------------------------------
// The whole sampler's graph convolution (ConvPanels, cpu/mgcn_rows.h), float32
// ---------------------------------------------------------------------------------------------
// A panel is kVW output channels, one vector register: its H0 and H1 columns for all rows come
// from a register-blocked GEMM (kMR rows x one vector of H0 and one of H1: 2 kMR accumulators,
// both halves sharing every broadcast of x) reading w in place, then the aggregation and the
// epilogue of each sample consume them from L1. At 17-119 rows x 256 x 512 this runs at ~110
// GFLOP/s on one Zen 4 core with AVX-512 (MKL's sgemm: 56-80 on the same shapes, packing w each
// call), which is why the sampler does not call BLAS. kVW / kMR per instruction set: DP_ROWS_VW,
// DP_ROWS_MR (set by the file that includes this one; 4 / 6 for the baseline).
constexpr int kVW = DP_ROWS_VW;
constexpr int kMR = DP_ROWS_MR;
static_assert(kVW <= kConvPanelMax, "a panel must fit the scratch of cpu/mgcn_rows.h");
typedef float VecF __attribute__((vector_size(kVW * sizeof(float))));
typedef float VecFu __attribute__((vector_size(kVW * sizeof(float)), aligned(4), may_alias));  // unaligned

// H0 | H1 of MR rows for one full panel: x [MR, cin] (ld cin), w0 / w1 the panel's first column of
// each half (ld ldw); h [MR, 2 kVW] (H0 columns, then H1's).
template <int MR>
inline void panel_block(const float* x, int64_t cin, const float* w0, const float* w1, int64_t ldw, float* h) {
  VecF acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = VecF{};
  for (int64_t k = 0; k < cin; ++k) {
    const VecF b0 = *reinterpret_cast<const VecFu*>(w0 + k * ldw);
    const VecF b1 = *reinterpret_cast<const VecFu*>(w1 + k * ldw);
    for (int r = 0; r < MR; ++r) {
      const float v = x[r * cin + k];
      acc0[r] += v * b0;
      acc1[r] += v * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    *reinterpret_cast<VecFu*>(h + r * 2 * kVW) = acc0[r];
    *reinterpret_cast<VecFu*>(h + r * 2 * kVW + kVW) = acc1[r];
  }
}

template <int MR>  // the rows left over after the kMR blocks: n < kMR
inline void panel_tail(int64_t n, const float* x, int64_t cin, const float* w0, const float* w1, int64_t ldw,
                       float* h) {
  if constexpr (MR > 0) {
    if (n == MR)
      panel_block<MR>(x, cin, w0, w1, ldw, h);
    else
      panel_tail<MR - 1>(n, x, cin, w0, w1, ldw, h);
  }
}

// H0 | H1 of all rows for the wc channels at w0 / w1 into h [rows, 2 kVW].
inline void panel_gemm(const ConvPanels& p, const float* w0, const float* w1, int64_t wc, float* h) {
  const int64_t ldw = 2 * p.C;
  if (wc == kVW) {
    int64_t r = 0;
    for (; r + kMR <= p.rows; r += kMR) panel_block<kMR>(p.x + r * p.cin, p.cin, w0, w1, ldw, h + r * 2 * kVW);
    panel_tail<kMR - 1>(p.rows - r, p.x + r * p.cin, p.cin, w0, w1, ldw, h + r * 2 * kVW);
    return;
  }
  for (int64_t r = 0; r < p.rows; ++r) {  // a narrow last panel (C not a multiple of kVW; the out layer's 3)
    const float* xr = p.x + r * p.cin;
    float* hr = h + r * 2 * kVW;
    for (int64_t c = 0; c < wc; ++c) {
      float s0 = 0.0f, s1 = 0.0f;
      for (int64_t k = 0; k < p.cin; ++k) {
        s0 += xr[k] * w0[k * ldw + c];
        s1 += xr[k] * w1[k * ldw + c];
      }
      hr[c] = s0;
      hr[kVW + c] = s1;
    }
  }
}

// pre [J, P] of one sample for a full panel at channel c0, from its H0 | H1 panel hq [J, 2 P]; g1 [J, P]
// scratch. Whole-vector arithmetic (the scalar loops of aggregate_fwd, 16 channels long, did not
// vectorize here: a third of the layer's time went to them).
inline void panel_aggregate_full(const ConvPanels& p, int64_t c0, const float* hq, float* g1, float* pre) {
  const int64_t J = p.J, C = p.C, P = kVW;
  for (int64_t k = 0; k < J; ++k)
    *reinterpret_cast<VecFu*>(g1 + k * P) = *reinterpret_cast<const VecFu*>(p.m + k * C + c0) *
                                            *reinterpret_cast<const VecFu*>(hq + k * 2 * P + P);
  const VecF bias = *reinterpret_cast<const VecFu*>(p.bias + c0);
  for (int64_t j = 0; j < J; ++j) {
    const float* aj = p.a + j * J;
    VecF acc = bias + aj[j] * (*reinterpret_cast<const VecFu*>(p.m + j * C + c0) *
                               *reinterpret_cast<const VecFu*>(hq + j * 2 * P));
    for (int64_t k = 0; k < j; ++k) acc += aj[k] * *reinterpret_cast<const VecFu*>(g1 + k * P);
    for (int64_t k = j + 1; k < J; ++k) acc += aj[k] * *reinterpret_cast<const VecFu*>(g1 + k * P);  // j: via w0
    *reinterpret_cast<VecFu*>(pre + j * P) = acc;
  }
}

// out rows [J, wc] (ld C) of one sample for the panel at channel c0 from its pre [J, P]: the
// epilogue of epilogue_row_fwd, with the panel's scale-shift loaded once and, for a full panel
// (Full), loops of the constant panel width (one vector) instead of a call per row.
template <int Act, bool Full>
inline void panel_epilogue_act(const ConvPanels& p, int64_t c0, int64_t wc, const float* pre, float* out) {
  const int64_t P = kVW, W = Full ? kVW : wc;
  float s1[kVW], sh[kVW];
  for (int64_t c = 0; c < W; ++c) {
    s1[c] = p.scale1 ? p.scale1[c0 + c] : 1.0f;
    sh[c] = p.shift ? p.shift[c0 + c] : 0.0f;
  }
  for (int64_t j = 0; j < p.J; ++j) {
    const float* r = pre + j * P;
    float* o = out + j * p.C;
    float u[kVW];
    for (int64_t c = 0; c < W; ++c) u[c] = act_fwd<float>(r[c] * s1[c] + sh[c], Act, RowExp{});
    if (p.residual)
      for (int64_t c = 0; c < W; ++c) o[c] += u[c];
    else
      for (int64_t c = 0; c < W; ++c) o[c] = u[c];
  }
}

template <bool Full>
inline void panel_epilogue(const ConvPanels& p, int64_t c0, int64_t wc, const float* pre, float* out) {
  if (p.act == kActSilu)
    panel_epilogue_act<kActSilu, Full>(p, c0, wc, pre, out);
  else if (p.act == kActRelu)
    panel_epilogue_act<kActRelu, Full>(p, c0, wc, pre, out);
  else
    panel_epilogue_act<kActNone, Full>(p, c0, wc, pre, out);
}

// The same for a narrow last panel of wc < P channels.
inline void panel_aggregate_narrow(const ConvPanels& p, int64_t c0, int64_t wc, const float* hq, float* g1,
                                   float* pre) {
  const int64_t J = p.J, C = p.C, P = kVW;
  for (int64_t k = 0; k < J; ++k)
    for (int64_t c = 0; c < wc; ++c) g1[k * P + c] = p.m[k * C + c0 + c] * hq[k * 2 * P + P + c];
  for (int64_t j = 0; j < J; ++j) {
    float* row = pre + j * P;
    const float ajj = p.a[j * J + j];
    for (int64_t c = 0; c < wc; ++c) row[c] = p.bias[c0 + c] + ajj * (p.m[j * C + c0 + c] * hq[j * 2 * P + c]);
    for (int64_t k = 0; k < J; ++k) {
      if (k == j) continue;
      const float ajk = p.a[j * J + k];
      for (int64_t c = 0; c < wc; ++c) row[c] += ajk * g1[k * P + c];
    }
  }
}

void conv_panels_fwd(const ConvPanels& p, int64_t p0, int64_t p1) {
  const int64_t J = p.J, C = p.C, P = kVW;
  float* h = p.scratch;              // [rows, 2 P]
  float* g1 = h + p.rows * 2 * P;    // [J, P]: m * H1 of one sample
  float* pre = g1 + J * P;           // [J, P]
  for (int64_t pi = p0; pi < p1; ++pi) {
    const int64_t c0 = pi * P, wc = C - c0 < P ? C - c0 : P;
    panel_gemm(p, p.w + c0, p.w + C + c0, wc, h);
    for (int64_t q = 0; q < p.rows / J; ++q) {  // the aggregation of each sample, as aggregate_fwd
      const float* hq = h + q * J * 2 * P;
      float* out = p.out + q * J * C + c0;
      if (wc == P) {
        panel_aggregate_full(p, c0, hq, g1, pre);
        panel_epilogue<true>(p, c0, wc, pre, out);
      } else {
        panel_aggregate_narrow(p, c0, wc, hq, g1, pre);
        panel_epilogue<false>(p, c0, wc, pre, out);
      }
    }
  }
}

// The training batch norm's rows (cpu/mgcn_rows.h, RowsOf::norm_*): straight loops to vectorize.
template <typename T>
void norm_sum_row(T* acc, const T* row, const T* centre, int64_t C) {
  if (centre)
    for (int64_t c = 0; c < C; ++c) {
      const T d = row[c] - centre[c];
      acc[c] += d * d;
    }
  else
    for (int64_t c = 0; c < C; ++c) acc[c] += row[c];
}

template <typename T>
void norm_stats_row(double* __restrict__ sum, double* __restrict__ sq, const T* __restrict__ row, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(row[c]);
    sum[c] += v;
    sq[c] += v * v;
  }
}

template <typename T>
void norm_bwd_row(T* dz, const T* pre, const T* k, const T* c0, const T* s1, T* dsc, T* db, T* dg, const T* mu,
                  const T* rstd, int64_t C) {
  if (dsc)
    for (int64_t c = 0; c < C; ++c) {
      dsc[c] += dz[c] * (pre[c] * k[c] + c0[c]);
      dsc[C + c] += dz[c];
      dz[c] *= s1[c];
    }
  for (int64_t c = 0; c < C; ++c) {
    db[c] += dz[c];
    dg[c] += dz[c] * ((pre[c] - mu[c]) * rstd[c]);
  }
}

template <typename T>
void norm_dpre_row(T* dpre, const T* dy, const T* pre, const T* mu, const T* rstd, const T* gamma, const T* dbn,
                   const T* dgn, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T xhat = (pre[c] - mu[c]) * rstd[c];
    dpre[c] = rstd[c] * gamma[c] * (dy[c] - dbn[c] - xhat * dgn[c]);
  }
}

template <typename T>
RowsOf<T> rows_table() {
  return {epilogue_row_fwd<T>, epilogue_row_bwd<T>, aggregate_fwd<T>, aggregate_bwd<T>, aggregate_bwd_flush<T>,
          norm_sum_row<T>,     norm_stats_row<T>,   norm_bwd_row<T>,     norm_dpre_row<T>};
}

}  // namespace DP_ROWS_NS

// The dispatch table of this instruction set (mgcn_rows_base(), mgcn_rows_avx2(), ...).
MgcnRows DP_ROWS_FACTORY() {
  return {DP_ROWS_NS::rows_table<float>(), DP_ROWS_NS::rows_table<double>(), DP_ROWS_NS::conv_panels_fwd,
          DP_ROWS_NS::kVW, DP_ROWS_ISA};
}
}  // namespace diffupose
