// Fused modulated graph convolution, CPU: the kernels of diffupose::mgcn_fwd / mgcn_bwd.
// Contract: csrc/ops.cpp; reference: diffupose/ops/mgcn.py::mgcn_ref; epilogue math shared
// with CUDA: common/mgcn_math.h. For x [B, J, Cin] viewed as R = B*J rows:
//
//   H0 = x @ w0, H1 = x @ w1                                        [R, Cout] each (GEMMs)
//   pre = diag(a) * (m * H0) + offdiag(a) @ (m * H1) + bias         per sample  [J, Cout]
//   out = act(pre * (1 + scale) + shift) + residual
//
// One GEMM gives both halves: H = x @ [w0 | w1] [R, 2 Cout] (a row's H0 then its H1; the
// concatenated weights are a [Cin, 2 Cout] copy per call, 128 KB at 128 -> 128, made by rows on
// the calling thread), one
// multi-threaded BLAS call; at::parallel_for over the samples then does the J x J aggregation,
// bias and epilogue, one write of out (and of pre when training).
// Inference goes in chunks of about kChunkRows rows, each chunk's H consumed while it is in cache.
// Training (save_pre) returns H as the op's third output, so the backward does not compute it
// again (a quarter of a training layer's GEMM FLOPs; the cost is H's memory, 2 Cout floats a row
// per layer, until the backward). It runs one parallel region over fixed groups of samples, each
// thread running its groups' GEMMs single-threaded (group_samples; a batch-wide threaded GEMM,
// set_mgcn_group_gemm(false), was 1.02-1.08x slower per step at B = 256 on an idle 2-core VM;
// one single-threaded GEMM per thread-tile was 1.5x slower for inference at B = 20, which keeps
// the threaded GEMM).
//
// Backward: H as kept (recomputed when the caller passes it empty), then per tile of kTileSamples
// samples: dpre through the epilogue (pre not read where the epilogue is the identity), dH0 =
// m * a_jj dpre, dH1 = m * offdiag(a)^T dpre into dH and the tile's partial sums of dm, da,
// dbias, dscale_shift in its own slot. Tiles are fixed sample ranges and the slots are summed in
// order afterwards, so the result does not depend on the thread count. Then two GEMMs (per group,
// in the same region, with the group GEMMs; dH then is one group's rows in a per-thread scratch
// that stays in cache, else the whole batch's [R, 2 Cout]):
// dx = dH @ [w0 | w1]^T and d[w0 | w1] = x^T @ dH.
//
// Precision: everything accumulates in opmath (fp32 for fp16/bf16/fp32, fp64 for fp64); half
// inputs are widened once, so the only roundings are the final stores.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>  // _mm_stream_ps: baseline x86-64, no run-time dispatch needed
#endif

#include "common/mgcn_math.h"
#include "cpu/flush_denormals.h"
#include "cpu/mgcn_rows.h"
#include "cpu/norm_act_impl.h"
#include "cpu/parallel_claim.h"
#include "mgcn_check.h"
#define DP_ROWS_NS base
#define DP_ROWS_ISA "base"
#define DP_ROWS_FACTORY mgcn_rows_base
#include "cpu/mgcn_rows_impl.h"

namespace diffupose {

// ---------------------------------------------------------------------------------------------
// instruction-set dispatch of the inner loops: aggregation and epilogue rows (cpu/mgcn_rows.h)
// ---------------------------------------------------------------------------------------------
// The factories mgcn_rows_avx2() / mgcn_rows_avx512() are themselves compiled for their
// instruction set (building the table may already use its registers), so they are called in one
// place only, rows_for(), and only after cpu_has() says the CPU runs that set. cpu_has() also
// honours a cap (set_cpu_isa_limit in a test, DIFFUPOSE_CPU_ISA_MAX=avx2 for a whole run), so a
// machine with AVX-512 can check that an AVX2-only CPU never reaches AVX-512 code
// (tests/ops/test_cpu_isa.py counts the factory calls).
namespace {
enum class Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr const char* kIsaNames[] = {"base", "avx2", "avx512"};

bool parse_isa(const std::string& name, Isa* out) {
  for (int i = 0; i < 3; ++i)
    if (name == kIsaNames[i]) {
      *out = static_cast<Isa>(i);
      return true;
    }
  return false;
}

Isa cpu_best_isa() {  // what the hardware reports; baseline code only
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

Isa& isa_limit() {  // the cap of a test; DIFFUPOSE_CPU_ISA_MAX, else the hardware's best
  static Isa limit = [] {
    Isa cap = cpu_best_isa();
    const char* env = std::getenv("DIFFUPOSE_CPU_ISA_MAX");
    if (env != nullptr && parse_isa(env, &cap)) cap = std::min(cap, cpu_best_isa());
    return cap;
  }();
  return limit;
}

bool cpu_has(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(std::min(cpu_best_isa(), isa_limit())); }

int64_t g_factory_calls[3] = {0, 0, 0};  // per instruction set, for the test above

// The only caller of the factories.
bool rows_for(Isa isa, MgcnRows* out) {
  if (!cpu_has(isa)) return false;
  ++g_factory_calls[static_cast<int>(isa)];
  switch (isa) {
#if defined(__x86_64__)
    case Isa::kAvx512: *out = mgcn_rows_avx512(); return true;
    case Isa::kAvx2: *out = mgcn_rows_avx2(); return true;
#endif
    default: *out = mgcn_rows_base(); return true;
  }
}

MgcnRows best_rows() {
  MgcnRows r;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2})
    if (rows_for(isa, &r)) return r;
  rows_for(Isa::kBase, &r);
  return r;
}

MgcnRows& rows_slot() {
  static MgcnRows r = best_rows();
  return r;
}
}  // namespace

const MgcnRows& mgcn_rows() { return rows_slot(); }

// Testing hook (diffupose._C.set_cpu_isa): run the kernels with a narrower instruction set than
// the CPU has, so each compiled version is tested on a machine that can run it. Returns false
// (and changes nothing, calls nothing compiled for it) for a set the CPU lacks or an unknown name.
bool set_mgcn_cpu_isa(const std::string& name) {
  Isa isa;
  MgcnRows want;
  if (!parse_isa(name, &isa) || !rows_for(isa, &want)) return false;
  rows_slot() = want;
  return true;
}

// Testing hook (diffupose._C.set_cpu_isa_limit): behave as a CPU whose widest instruction set is
// `name` (never wider than the hardware's); the rows in use fall back to the best under the cap.
bool set_mgcn_cpu_isa_limit(const std::string& name) {
  Isa isa;
  if (!parse_isa(name, &isa)) return false;
  isa_limit() = std::min(isa, cpu_best_isa());
  rows_slot() = best_rows();
  return true;
}

std::vector<int64_t> mgcn_cpu_isa_factory_calls() {
  return std::vector<int64_t>(g_factory_calls, g_factory_calls + 3);
}

std::string mgcn_cpu_isa() { return mgcn_rows().isa; }

// Whether training runs its GEMMs per group of samples inside one parallel region (default) or as
// one threaded BLAS call beside the aggregation's region (diffupose._C.set_mgcn_group_gemm, for
// the A/B benchmark: bench/train_throughput.py's cpu/one-gemm row).
bool& group_gemm_flag() {
  static bool on = true;
  return on;
}
bool set_mgcn_group_gemm(bool on) {
  const bool was = group_gemm_flag();
  group_gemm_flag() = on;
  return was;
}

namespace {

constexpr int64_t kChunkRows = 1024;  // rows of x per GEMM: H0 + H1 of a chunk ~ 2 MB at Cout 256
constexpr int64_t kTileSamples = 4;   // samples per partial-sum slot in the backward

int64_t samples_per_chunk(int64_t J) {
  const int64_t s = std::max<int64_t>(1, kChunkRows / std::max<int64_t>(J, 1));
  return std::max(kTileSamples, s / kTileSamples * kTileSamples);  // whole tiles (backward)
}

// Training's group GEMMs (mgcn_fwd_cpu_impl, mgcn_bwd_cpu): samples per group, whole backward
// tiles, about kGroupRows rows (a group's H ~ 0.5 MB at Cout 128: it stays in a core's L2 between
// its GEMM and its aggregation), at most kMaxGroups groups (the backward keeps one partial dw per
// group). Fixed by B and J alone, so results do not depend on the thread count.
constexpr int64_t kGroupRows = 512;
constexpr int64_t kMaxGroups = 64;
int64_t group_samples(int64_t B, int64_t J) {
  const int64_t by_rows = std::max<int64_t>(1, kGroupRows / std::max<int64_t>(J, 1));
  const int64_t g = std::max(by_rows, (B + kMaxGroups - 1) / kMaxGroups);
  return (g + kTileSamples - 1) / kTileSamples * kTileSamples;
}
int64_t group_count(int64_t B, int64_t J) { return (B + group_samples(B, J) - 1) / group_samples(B, J); }

// A sample's scale-shift widened: scale1 = 1 + scale, shift.
template <typename T, typename xt>
void load_scale_shift(T* scale1, T* shift, const xt* ss, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    scale1[c] = T(1) + static_cast<T>(ss[c]);
    shift[c] = static_cast<T>(ss[C + c]);
  }
}

// Parameters widened to opmath (m, a, bias: a no-op for fp32 parameters).
template <typename T>
struct Params {
  at::Tensor wcat;  // [Cin, 2 Cout] = [w0 | w1]
  at::Tensor m, a, bias;
  const T* mp;     // [J, Cout]
  const T* ap;     // [J, J]
  const T* biasp;  // [Cout] (forward only)
};

template <typename T>
Params<T> widen(const at::Tensor& w, const at::Tensor& m, const at::Tensor& a, const at::Tensor* bias,
                at::ScalarType op) {
  Params<T> p;
  // [w0 | w1] by rows on this thread: at::cat split its 128 KB over the OpenMP team and took
  // 60-70 us a call (a wake-up of the sibling thread), twice per layer and step
  const int64_t cin = w.size(1), cout = w.size(2);
  p.wcat = at::empty({cin, 2 * cout}, w.options().dtype(op));
  if (w.scalar_type() == op && w.is_contiguous()) {
    const T* src = w.template data_ptr<T>();
    T* dst = p.wcat.template data_ptr<T>();
    for (int64_t i = 0; i < cin; ++i)
      for (int64_t half = 0; half < 2; ++half)
        std::memcpy(dst + (i * 2 + half) * cout, src + (half * cin + i) * cout, cout * sizeof(T));
  } else {
    p.wcat.narrow(1, 0, cout).copy_(w[0]);
    p.wcat.narrow(1, cout, cout).copy_(w[1]);
  }
  p.m = m.to(op).contiguous();
  p.a = a.to(op).contiguous();
  p.mp = p.m.template data_ptr<T>();
  p.ap = p.a.template data_ptr<T>();
  p.biasp = nullptr;
  if (bias != nullptr) {
    p.bias = bias->to(op).contiguous();
    p.biasp = p.bias.template data_ptr<T>();
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------
// Scratch of one thread.
template <typename T>
struct FwdScratch {
  std::vector<T> prej, g1, u, sc1, sh;  // prej, g1 [J, Cout]: pre and m * H1 of a sample; the rest [Cout]
  FwdScratch(int64_t J, int64_t C) : prej(J * C), g1(J * C), u(C), sc1(C), sh(C) {}
};

// One sample: h [J, 2 Cout] its rows of H; out, pre (nullable), res (nullable) [J, Cout]; stats
// (nullable: mgcn_norm_fwd) [2, Cout] += the sum and the sum of squares of out's rows as stored.
template <typename T, typename xt>
void fwd_sample(const Params<T>& p, const T* h, bool has_ss, const xt* res, xt* out, xt* pre, int64_t J,
                int64_t Cout, int act, FwdScratch<T>& w, double* stats) {
  rows_of<T>().agg_fwd(w.prej.data(), w.g1.data(), h, h + Cout, 2 * Cout, p.mp, p.ap, p.biasp, J, Cout);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t o = j * Cout;
    const T* row = w.prej.data() + o;
    if (pre)
      for (int64_t c = 0; c < Cout; ++c) pre[o + c] = static_cast<xt>(row[c]);
    const T* u = row;  // the epilogue's result: pre itself where it is the identity (before a batch norm)
    if (act != kActNone || has_ss) {
      rows_of<T>().fwd(w.u.data(), row, has_ss ? w.sc1.data() : nullptr, w.sh.data(), Cout, act);
      u = w.u.data();
    }
    if (res)
      for (int64_t c = 0; c < Cout; ++c) out[o + c] = static_cast<xt>(u[c] + static_cast<T>(res[o + c]));
    else
      for (int64_t c = 0; c < Cout; ++c) out[o + c] = static_cast<xt>(u[c]);
    if (stats) {  // the batch norm's statistics of the row as stored (rounded, for half outputs)
      if constexpr (std::is_same_v<T, xt>) {
        rows_of<T>().norm_stats(stats, stats + Cout, out + o, Cout);
      } else {
        for (int64_t c = 0; c < Cout; ++c) w.u[c] = static_cast<T>(out[o + c]);
        rows_of<T>().norm_stats(stats, stats + Cout, w.u.data(), Cout);
      }
    }
  }
}

// Samples [s0, s1) of a chunk whose H rows start at hp (sample b0 + s at hp + s JH).
template <typename T, typename xt>
void fwd_samples(const Params<T>& p, const T* hp, int64_t b0, int64_t s0, int64_t s1, const xt* ss, int64_t ss_rows,
                 const xt* res, xt* out, xt* pre, int64_t J, int64_t Cout, int act, FwdScratch<T>& w,
                 double* stats = nullptr) {
  const int64_t JC = J * Cout, JH = 2 * JC;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t b = b0 + s;
    if (ss_rows && (ss_rows > 1 || s == s0))  // a broadcast row: once per range
      load_scale_shift(w.sc1.data(), w.sh.data(), ss + (ss_rows == 1 ? 0 : b) * 2 * Cout, Cout);
    fwd_sample<T, xt>(p, hp + s * JH, ss_rows > 0, res ? res + b * JC : nullptr, out + b * JC,
                      pre ? pre + b * JC : nullptr, J, Cout, act, w, stats);
  }
}

// dst[0, n) = src[0, n) with non-temporal stores where the CPU has them (SSE2, every x86-64): dst
// is H kept for the backward, read again only after the whole forward and most of the backward
// (35 MB a step at d 128, batch 256: more than the cache), so its lines need not be read into the
// cache before they are written. The GEMM wrote straight into it before, and MKL's first pass over
// C (sgemm_mscale, 6.4% of a training step) paid that read from memory.
void stream_copy(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  _mm_sfence();  // the streamed lines are visible before anything after the region reads them
#endif
  for (; i < n; ++i) dst[i] = src[i];
}
// GEMM outputs that go through a thread's scratch and stream_copy (float; double tests write directly)
template <typename T>
constexpr bool kStreamOut = std::is_same_v<T, float>;

// keep: H of the whole batch [B*J, 2 Cout] to write (training), or undefined (inference: chunks).
// Training with group GEMMs (group_gemm_flag()): one parallel region over fixed groups of samples,
// each thread runs its groups' GEMMs itself (BLAS called inside the region runs single-threaded)
// and aggregates them while their H is in its cache: one fork-join per op instead of BLAS's own
// and ours, no threaded BLAS waiting at barriers for a descheduled sibling.
// stats (mgcn_norm_fwd; always by groups): [groups, 2, Cout] doubles, group g's sums of out's rows
// and of their squares (fwd_sample), for the batch norm after the convolution.
template <typename xt>
void mgcn_fwd_cpu_impl(const at::Tensor& xw, const Params<at::opmath_type<xt>>& p, const xt* ss, int64_t ss_rows,
                       const xt* res, xt* out, xt* pre, at::Tensor keep, int64_t B, int64_t J, int64_t Cout, int act,
                       double* stats = nullptr) {
  using T = at::opmath_type<xt>;
  if (keep.defined() && (group_gemm_flag() || stats)) {
    const int64_t G = group_samples(B, J), groups = group_count(B, J);
    // float: each group's GEMM into the thread's own scratch (hot in its L2 for the aggregation),
    // then streamed to keep; double (tests, gradcheck): straight into keep
    parallel_claim(groups, [&](const auto& next) {
      const ScopedFlushDenormals ftz;
      FwdScratch<T> w(J, Cout);
      at::Tensor hs = kStreamOut<T> ? at::empty({std::min(G, B) * J, 2 * Cout}, keep.options()) : at::Tensor();
      for (int64_t g; (g = next()) < groups;) {
        const int64_t b0 = g * G, nb = std::min(G, B - b0);
        at::Tensor hk = keep.narrow(0, b0 * J, nb * J), hc = kStreamOut<T> ? hs.narrow(0, 0, nb * J) : hk;
        at::mm_out(hc, xw.narrow(0, b0 * J, nb * J), p.wcat);
        double* st = stats ? stats + g * 2 * Cout : nullptr;
        if (st) std::fill(st, st + 2 * Cout, 0.0);
        fwd_samples<T, xt>(p, hc.data_ptr<T>(), b0, 0, nb, ss, ss_rows, res, out, pre, J, Cout, act, w, st);
        if constexpr (kStreamOut<T>) stream_copy(hk.data_ptr<float>(), hc.data_ptr<float>(), nb * J * 2 * Cout);
      }
    });
    return;
  }
  const int64_t spc = keep.defined() ? B : std::min(B, samples_per_chunk(J));
  const at::Tensor H = keep.defined() ? keep : at::empty({spc * J, 2 * Cout}, p.wcat.options());
  for (int64_t b0 = 0; b0 < B; b0 += spc) {
    const int64_t nb = std::min(spc, B - b0);
    at::Tensor hc = H.narrow(0, 0, nb * J);
    at::mm_out(hc, xw.narrow(0, b0 * J, nb * J), p.wcat);
    const T* hp = hc.data_ptr<T>();
    at::parallel_for(0, nb, 1, [&](int64_t s0, int64_t s1) {
      const ScopedFlushDenormals ftz;  // the silu rows' denormals (cpu/flush_denormals.h)
      FwdScratch<T> w(J, Cout);
      fwd_samples<T, xt>(p, hp, b0, s0, s1, ss, ss_rows, res, out, pre, J, Cout, act, w);
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mgcn_fwd_cpu(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_,
                                                const at::Tensor& a_, const at::Tensor& bias_,
                                                const c10::optional<at::Tensor>& scale_shift,
                                                const c10::optional<at::Tensor>& residual, int64_t act, bool save_pre) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  check_mgcn_fwd_args(d, x_, bias_, residual);
  // The ATen calls below are internals of the kernel: detached inputs keep autograd out of them,
  // also on the worker threads of at::parallel_for (grad mode is thread-local).
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach(), bias = bias_.detach();
  const at::Tensor x = x_.detach().contiguous();
  at::Tensor out = at::empty({d.B, d.J, d.Cout}, x.options());
  at::Tensor pre = save_pre ? at::empty({d.B, d.J, d.Cout}, x.options()) : at::empty({0}, x.options());
  const at::ScalarType opt = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // opmath
  at::Tensor h = save_pre ? at::empty({d.B * d.J, 2 * d.Cout}, x.options().dtype(opt)) : at::empty({0}, x.options());
  if (d.B == 0) return {out, pre, h};
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->detach().contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_fwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const Params<T> p = widen<T>(w, m, a, &bias, op);
    const at::Tensor xw = x.view({d.B * d.J, d.Cin}).to(op);
    mgcn_fwd_cpu_impl<scalar_t>(xw, p, d.ss_rows ? ss.data_ptr<scalar_t>() : nullptr, d.ss_rows,
                                res.defined() ? res.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                                save_pre ? pre.data_ptr<scalar_t>() : nullptr, save_pre ? h : at::Tensor(), d.B, d.J,
                                d.Cout, static_cast<int>(act));
  });
  return {out, pre, h};
}

// ---------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------
// Partial sums of one tile of kTileSamples samples (one slot per tile, summed in order later).
template <typename T>
struct BwdSlot {
  T* dm;   // [J, Cout]
  T* da;   // [J, J]
  T* db;   // [Cout]
  T* dss;  // [2, Cout] when scale_shift is broadcast (1 row), else nullptr
};

template <typename T>
struct BwdScratch {
  std::vector<T> dpre, g1, pv, u, sc1, sh;  // dpre, g1 [J, Cout]; the rest [Cout]
  std::vector<T> da_lanes;                  // [J * J, kDaLanes], zero between tiles (agg_bwd_flush)
  BwdScratch(int64_t J, int64_t C)
      : dpre(J * C), g1(J * C), pv(C), u(C), sc1(C), sh(C), da_lanes(J * J * kDaLanes, T(0)) {}
};

// mgcn_norm_bwd: the gradient reaching the convolution's out is the batch norm's dpre, made from
// the norm's dy and its input (the convolution's out) as each sample's rows are loaded
// (norm_act_impl::NormDpre), not in a pass of its own. Null for the plain op.
template <typename T, typename xt>
struct DpreOfNorm {
  const T* dy;       // [B, J, Cout] opmath
  const xt* normin;  // [B, J, Cout]
  const norm_act_impl::NormDpre<T>* coefs;
};

// One sample. h: its rows of H [J, 2 Cout] (h_next: the next sample's, prefetched; nullable);
// g, pre: of grad_out and pre [J, Cout] (dy, nin instead of g when dn: the norm's rows of the
// sample); dh: its rows of the output dH [J, 2 Cout]; dsc: where its dscale_shift [2, Cout]
// accumulates (nullable).
template <typename T, typename xt>
void bwd_sample(const Params<T>& p, const T* h, const T* h_next, const xt* g, const xt* pre, bool has_ss, T* dsc,
                T* dh, const BwdSlot<T>& slot, int64_t J, int64_t Cout, int act, BwdScratch<T>& w,
                const DpreOfNorm<T, xt>* dn, const T* dy, const xt* nin) {
  // dpre through the epilogue; dscale_shift and dbias
  for (int64_t j = 0; j < J; ++j) {
    const int64_t o = j * Cout;
    T* dz = w.dpre.data() + o;  // dz first, dpre = dz * (1 + scale) in place below
    if (dn) {
      dn->coefs->row(dz, dy + o, norm_act_impl::opmath_row<T, xt>(nin + o, w.pv.data(), Cout), Cout);
    } else {
      for (int64_t c = 0; c < Cout; ++c) dz[c] = static_cast<T>(g[o + c]);
    }
    if (act != kActNone || has_ss) {  // pre is read only where the epilogue is not the identity
      for (int64_t c = 0; c < Cout; ++c) w.pv[c] = static_cast<T>(pre[o + c]);
      rows_of<T>().bwd(dz, w.u.data(), w.pv.data(), has_ss ? w.sc1.data() : nullptr, w.sh.data(), Cout, act);
    }
    if (dsc)
      for (int64_t c = 0; c < Cout; ++c) {
        dsc[c] += dz[c] * w.pv[c];
        dsc[Cout + c] += dz[c];
        dz[c] *= w.sc1[c];
      }
    for (int64_t c = 0; c < Cout; ++c) slot.db[c] += dz[c];
  }
  rows_of<T>().agg_bwd(dh, dh + Cout, 2 * Cout, slot.dm, w.da_lanes.data(), w.g1.data(), w.dpre.data(), h, h + Cout,
                       p.mp, p.ap, J, Cout, h_next, h_next ? 2 * J * Cout : 0);
}

// The backward's body for one dtype (mgcn_bwd_cpu; mgcn_norm_bwd_cpu with dn). g: grad_out
// (unused with dn), pre: the saved pre (empty where the epilogue is the identity and not read).
template <typename xt>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mgcn_bwd_typed(
    const MgcnDims& d, const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& m,
    const at::Tensor& a, const at::Tensor& pre, const at::Tensor& h_, const at::Tensor& ss, int64_t act,
    const DpreOfNorm<at::opmath_type<xt>, xt>* dn) {
  using T = at::opmath_type<xt>;
  const int64_t B = d.B, J = d.J, Cout = d.Cout, JC = J * Cout, JH = 2 * JC;
  at::Tensor dx, dw, dm, da, dbias, dss;
  const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
  const auto o = x.options().dtype(op);
  const Params<T> p = widen<T>(w, m, a, nullptr, op);
  const at::Tensor xw = x.view({B * J, d.Cin}).to(op);
  // H as the forward kept it, else computed again (one GEMM)
  const at::Tensor H = h_.numel() > 0 ? h_.detach().to(op).contiguous() : at::mm(xw, p.wcat);
  const int64_t tiles = (B + kTileSamples - 1) / kTileSamples;
  // per-tile slots, zeroed: [tiles, J*Cout + J*J + Cout + 2*Cout]
  const int64_t slot_len = JC + J * J + Cout + (d.ss_rows == 1 ? 2 * Cout : 0);
  // zeroed by their tiles inside the parallel region below (an at::zeros would be one more
  // fork-join, where a descheduled sibling thread costs a whole time slice)
  at::Tensor slots = at::empty({tiles, slot_len}, o);
  at::Tensor dssb = d.ss_rows > 1 ? at::empty({B, 2, Cout}, o) : at::Tensor();
  T* slotp = slots.data_ptr<T>();
  const xt* gp = dn ? nullptr : g.data_ptr<xt>();
  const xt* prep = pre.numel() ? pre.data_ptr<xt>() : nullptr;
  const xt* ssp = d.ss_rows ? ss.data_ptr<xt>() : nullptr;
  const T* hp = H.data_ptr<T>();
  T* dssbp = dssb.defined() ? dssb.data_ptr<T>() : nullptr;
  // tiles [t0, t1); sample b's dH rows at dh + (b - b_dh) JH (dH itself, or a group's scratch)
  auto tiles_of = [&](int64_t t0, int64_t t1, BwdScratch<T>& sc, T* dh, int64_t b_dh) {
    for (int64_t t = t0; t < t1; ++t) {
      T* base = slotp + t * slot_len;
      std::fill(base, base + slot_len, T(0));
      const BwdSlot<T> slot{base, base + JC, base + JC + J * J,
                            d.ss_rows == 1 ? base + JC + J * J + Cout : nullptr};
      const int64_t s_begin = t * kTileSamples, s_end = std::min(B, s_begin + kTileSamples);
      if (dssbp) std::fill(dssbp + s_begin * 2 * Cout, dssbp + s_end * 2 * Cout, T(0));
      for (int64_t b = s_begin; b < s_end; ++b) {
        if (d.ss_rows && (d.ss_rows > 1 || b == s_begin))
          load_scale_shift(sc.sc1.data(), sc.sh.data(), ssp + (d.ss_rows == 1 ? 0 : b) * 2 * Cout, Cout);
        T* dsc = d.ss_rows == 1 ? slot.dss : (d.ss_rows ? dssbp + b * 2 * Cout : nullptr);
        bwd_sample<T, xt>(p, hp + b * JH, b + 1 < B ? hp + (b + 1) * JH : nullptr, gp + b * JC, prep + b * JC,
                          d.ss_rows > 0, dsc, dh + (b - b_dh) * JH, slot, J, Cout, static_cast<int>(act), sc, dn,
                          dn ? dn->dy + b * JC : nullptr, dn ? dn->normin + b * JC : nullptr);
      }
      rows_of<T>().agg_bwd_flush(slot.da, sc.da_lanes.data(), J);
    }
  };
  at::Tensor dxw;       // [B*J, Cin] opmath
  at::Tensor dw_parts;  // [parts, Cin, 2 Cout]: d[w0 | w1]'s per-group partials, or itself as one part
  if (group_gemm_flag()) {
    // per group (mgcn_fwd_cpu_impl's groups): its tiles, then dx of its rows and its partial
    // d[w0 | w1], in its thread, while its dH is in cache; the partials summed in group order
    const int64_t G = group_samples(B, J), groups = group_count(B, J);
    dxw = at::empty({B * J, d.Cin}, o);
    at::Tensor dwg = at::empty({groups, d.Cin, 2 * Cout}, o);
    const at::Tensor wt = p.wcat.t();
    parallel_claim(groups, [&](const auto& next) {
      const ScopedFlushDenormals ftz;
      BwdScratch<T> sc(J, Cout);
      // the group's dH [G J, 2 Cout], reused by the thread's groups: it lives from the tiles to
      // the two GEMMs only, so it stays in the core's cache (~0.5 MB at Cout 128) and never
      // goes to memory (a batch-wide dH was 2 B J Cout floats written and read back per layer)
      at::Tensor dHs = at::empty({std::min(G, B) * J, 2 * Cout}, o);
      at::Tensor dxs = kStreamOut<T> ? at::empty({std::min(G, B) * J, d.Cin}, o) : at::Tensor();
      for (int64_t g; (g = next()) < groups;) {
        const int64_t b0 = g * G, nb = std::min(G, B - b0);
        tiles_of(b0 / kTileSamples, (b0 + nb + kTileSamples - 1) / kTileSamples, sc, dHs.data_ptr<T>(), b0);
        const at::Tensor dHg = dHs.narrow(0, 0, nb * J);
        at::Tensor dxk = dxw.narrow(0, b0 * J, nb * J), dxg = kStreamOut<T> ? dxs.narrow(0, 0, nb * J) : dxk;
        at::Tensor dwgg = dwg.select(0, g);
        at::mm_out(dxg, dHg, wt);
        at::mm_out(dwgg, xw.narrow(0, b0 * J, nb * J).t(), dHg);
        if constexpr (kStreamOut<T>) stream_copy(dxk.data_ptr<float>(), dxg.data_ptr<float>(), nb * J * d.Cin);
      }
    });
    dw_parts = dwg;  // summed in group order below
  } else {
    at::Tensor dH = at::empty({B * J, 2 * Cout}, o);
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      const ScopedFlushDenormals ftz;
      BwdScratch<T> sc(J, Cout);
      tiles_of(t0, t1, sc, dH.data_ptr<T>(), 0);
    });
    dxw = at::mm(dH, p.wcat.t());
    dw_parts = at::mm(xw.t(), dH).unsqueeze(0);  // d[w0 | w1] itself: one part
  }
  // The ordered sums in one region (ATen sums and a permuted copy were three): the slots over the
  // tiles, and d[w0 | w1] [Cin, 2 Cout] over its parts, each row's halves put straight into dw's
  // [2, Cin, Cout] layout.
  at::Tensor tot = at::empty({slot_len}, o), dwt = at::empty({2, d.Cin, Cout}, o);
  constexpr int64_t kCols = 512;  // slot columns per item
  const int64_t Cin = d.Cin, dw_n = 2 * Cout, slot_items = (slot_len + kCols - 1) / kCols, items = slot_items + Cin;
  const T* partp = dw_parts.data_ptr<T>();
  T *totp = tot.data_ptr<T>(), *dwp = dwt.data_ptr<T>();
  parallel_claim(items, [&](const auto& next) {
    std::vector<T> row(dw_n);
    for (int64_t it; (it = next()) < items;) {
      if (it < slot_items) {
        const int64_t c0 = it * kCols;
        sum_parts(totp + c0, slotp + c0, tiles, slot_len, std::min(kCols, slot_len - c0));
      } else {  // row i of d[w0 | w1]
        const int64_t i = it - slot_items;
        sum_parts(row.data(), partp + i * dw_n, dw_parts.size(0), Cin * dw_n, dw_n);
        std::copy(row.begin(), row.begin() + Cout, dwp + i * Cout);
        std::copy(row.begin() + Cout, row.end(), dwp + (Cin + i) * Cout);
      }
    }
  });
  dw = dwt.to(w.scalar_type());
  dx = dxw.view({B, J, d.Cin}).to(x.scalar_type());
  dm = tot.narrow(0, 0, JC).view({J, Cout}).to(m.scalar_type());
  da = tot.narrow(0, JC, J * J).view({J, J}).to(a.scalar_type());
  dbias = tot.narrow(0, JC + J * J, Cout).to(w.scalar_type());
  if (d.ss_rows == 1) dss = tot.narrow(0, JC + J * J + Cout, 2 * Cout).view({1, 2, Cout}).to(ss.scalar_type());
  else if (d.ss_rows > 1) dss = dssb.to(ss.scalar_type());
  else if (ss.defined()) dss = at::zeros_like(ss);  // an empty batch's empty scale_shift
  else dss = at::empty({0}, x.options());
  return {dx, dw, dm, da, dbias, dss};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mgcn_bwd_cpu(
    const at::Tensor& grad_out_, const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_, const at::Tensor& a_,
    const at::Tensor& pre_, const at::Tensor& h_, const c10::optional<at::Tensor>& scale_shift, int64_t act) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  check_mgcn_bwd_args(d, grad_out_, pre_, h_);
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach();  // see mgcn_fwd_cpu
  const at::Tensor x = x_.detach().contiguous(), g = grad_out_.detach().to(x.scalar_type()).contiguous(),
                   pre = pre_.detach().to(x.scalar_type()).contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> r;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_bwd_cpu", [&] {
    r = mgcn_bwd_typed<scalar_t>(d, g, x, w, m, a, pre, h_, ss, act, nullptr);
  });
  return r;
}

// ---------------------------------------------------------------------------------------------
// the convolution with a training batch norm after it: diffupose::mgcn_norm_fwd / _bwd
// ---------------------------------------------------------------------------------------------
// A training layer with a batch norm ran mgcn_fwd (act none) then norm_act_fwd: four regions and
// five passes over [B, J, C] forward (out and pre written alike, two passes of statistics, the
// epilogue), and in the backward norm_act's two passes plus the convolution's. Fused: the
// statistics accumulate in the convolution's group region while each row is in cache (in double,
// per group, summed in group order: one pass without cancellation, independent of the thread
// count), the normalisation and epilogue follow in one region (cpu/norm_act_impl.h); backward, the
// norm's first pass, then the convolution's backward loads dpre from the norm's dy and input as it
// goes (DpreOfNorm) instead of a pass writing it. pre (the norm's input) is saved once.
void check_norm_params(const MgcnDims& d, const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta) {
  for (const at::Tensor* t : {&gamma, &beta})
    TORCH_CHECK(t->dim() == 1 && t->size(0) == d.Cout && t->is_floating_point() && t->device() == x.device(),
                "mgcn_norm: gamma and beta must be [", d.Cout, "] floats on ", x.device(), ", got ", t->sizes());
  TORCH_CHECK(d.B * d.J > 1, "mgcn_norm: a batch norm in training needs more than one row per channel, got ",
              x.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mgcn_norm_fwd_cpu(
    const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_, const at::Tensor& a_, const at::Tensor& bias_,
    const at::Tensor& gamma, const at::Tensor& beta, const c10::optional<at::Tensor>& scale_shift,
    const c10::optional<at::Tensor>& residual, int64_t act, double eps) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  check_mgcn_fwd_args(d, x_, bias_, residual);
  check_norm_params(d, x_, gamma, beta);
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach(), bias = bias_.detach();  // see mgcn_fwd_cpu
  const at::Tensor x = x_.detach().contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->detach().contiguous() : at::Tensor();
  const int64_t B = d.B, J = d.J, Cout = d.Cout;
  at::Tensor pre = at::empty({B, J, Cout}, x.options()), out = at::empty_like(pre), mean, var;
  const at::ScalarType opt = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // opmath
  at::Tensor h = at::empty({B * J, 2 * Cout}, x.options().dtype(opt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_norm_fwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    using xt = scalar_t;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const Params<T> p = widen<T>(w, m, a, &bias, op);
    const at::Tensor xw = x.view({B * J, d.Cin}).to(op);
    const int64_t groups = group_count(B, J);
    at::Tensor stats = at::empty({groups, 2, Cout}, x.options().dtype(at::kDouble));  // zeroed per group
    mgcn_fwd_cpu_impl<xt>(xw, p, nullptr, 0, nullptr, pre.data_ptr<xt>(), nullptr, h, B, J, Cout, kActNone,
                          stats.data_ptr<double>());
    std::vector<double> tot(2 * Cout);
    sum_parts(tot.data(), stats.data_ptr<double>(), groups, 2 * Cout, 2 * Cout);  // in group order
    mean = at::empty({Cout}, x.options().dtype(op));
    var = at::empty({Cout}, x.options().dtype(op));
    T *mp = mean.data_ptr<T>(), *vp = var.data_ptr<T>();
    const double n = static_cast<double>(B * J);
    for (int64_t c = 0; c < Cout; ++c) {
      const double mu = tot[c] / n;
      mp[c] = static_cast<T>(mu);
      vp[c] = static_cast<T>(std::max(tot[Cout + c] / n - mu * mu, 0.0));
    }
    const norm_act_impl::NormMap<T> nm = norm_act_impl::norm_map<T>(mean, var, gamma, beta, eps, op);
    norm_act_impl::norm_apply<T, xt>(pre.data_ptr<xt>(), nm.k.data_ptr<T>(), nm.c0.data_ptr<T>(),
                                     d.ss_rows ? ss.data_ptr<xt>() : nullptr, d.ss_rows,
                                     res.defined() ? res.data_ptr<xt>() : nullptr, out.data_ptr<xt>(), B, J, Cout,
                                     static_cast<int>(act));
  });
  return {out, pre, h, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
mgcn_norm_bwd_cpu(const at::Tensor& grad_out_, const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_,
                  const at::Tensor& a_, const at::Tensor& pre_, const at::Tensor& h_, const at::Tensor& gamma,
                  const at::Tensor& beta, const at::Tensor& mean_, const at::Tensor& var_,
                  const c10::optional<at::Tensor>& scale_shift, int64_t act, double eps) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  check_mgcn_bwd_args(d, grad_out_, pre_, h_);
  check_norm_params(d, x_, gamma, beta);
  TORCH_CHECK(mean_.dim() == 1 && mean_.size(0) == d.Cout && var_.dim() == 1 && var_.size(0) == d.Cout,
              "mgcn_norm_bwd: mean and var must be [", d.Cout, "]");
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach();
  const at::Tensor x = x_.detach().contiguous(), g = grad_out_.detach().to(x.scalar_type()).contiguous(),
                   pre = pre_.detach().to(x.scalar_type()).contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  const int64_t B = d.B, J = d.J, Cout = d.Cout;
  at::Tensor dx, dw, dm, da, dbias, dgamma, dbeta, dss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_norm_bwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    using xt = scalar_t;
    namespace na = norm_act_impl;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const at::Tensor mean = mean_.detach().to(op).contiguous();
    const T* mu = mean.data_ptr<T>();
    const na::NormMap<T> nm = na::norm_map<T>(mean, var_.detach(), gamma, beta, eps, op);
    const na::NormDy<T> nd = na::norm_dy<T, xt>(g.data_ptr<xt>(), pre.data_ptr<xt>(), nm, mu,
                                                d.ss_rows ? ss.data_ptr<xt>() : nullptr, d.ss_rows, B, J, Cout,
                                                static_cast<int>(act), x.options().dtype(op));
    const na::NormDpre<T> dp = na::norm_dpre_coefs<T>(nm, mu, nd.tot, gamma, B * J, op);
    const DpreOfNorm<T, xt> dn{nd.dy.data_ptr<T>(), pre.data_ptr<xt>(), &dp};
    MgcnDims conv = d;
    conv.ss_rows = 0;  // the convolution's own epilogue is the identity: its pre is not read
    std::tie(dx, dw, dm, da, dbias, std::ignore) =
        mgcn_bwd_typed<xt>(conv, g, x, w, m, a, at::Tensor(), h_, at::Tensor(), kActNone, &dn);
    std::tie(dgamma, dbeta, dss) = na::norm_param_grads<T>(nd, Cout, gamma, beta, ss, d.ss_rows, x.options());
  });
  return {dx, dw, dm, da, dbias, dgamma, dbeta, dss};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) {
  m.impl("mgcn_fwd", &mgcn_fwd_cpu);
  m.impl("mgcn_bwd", &mgcn_bwd_cpu);
  m.impl("mgcn_norm_fwd", &mgcn_norm_fwd_cpu);
  m.impl("mgcn_norm_bwd", &mgcn_norm_bwd_cpu);
}

}  // namespace diffupose
