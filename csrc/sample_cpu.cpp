// The whole sampler as one op, CPU: the kernel of diffupose::sample.
// Contract: csrc/ops.cpp; reference: diffupose/ops/sample.py::sample_ref (the model's
// GCNDenoiser + Diffusion.sample on the reference backend, then the root centring of Lifter).
//
// Why one op. Run layer by layer, a sampler call at batch 1 spends ~300 us per op call on
// Python, dispatch and thread start-up against ~30 us of GEMM per layer, and each op's own
// parallel region is a barrier that a descheduled sibling thread holds up. Here there is ONE
// parallel region per call and no barrier inside it:
//
// - Tiles of whole samples (a sample: one hypothesis of one frame, J rows; with flip, also its
//   mirrored twin). A thread claims a tile from an atomic counter and runs it through EVERY
//   layer of EVERY step and the sampler updates, so its activations stay in the thread's cache;
//   tiles are small enough (<= kTileRows rows) that a thread descheduled by another process
//   holds up at most one tile's worth of work at the end.
// - Per layer of a tile, H0 = A @ w0 and H1 = A @ w1 through the BLAS sgemm (MKL here),
//   single-threaded inside the region (measured 146 GFLOP/s at 17 rows, 170 at 51+ against 170
//   for a 2048^2 single-threaded GEMM: no own micro-kernel needed); w0 | w1 are packed side by
//   side once per model (diffupose/ops/sample.py). Then the J x J aggregation and the epilogue
//   through the graph convolution's instruction-set-dispatched row loops (cpu/mgcn_rows.h).
// - Once per tile instead of once per step: the 2D-condition part of the input layer
//   (y @ w_in[y rows], and for the mirrored twin). Once per call: 1 + scale of the FiLMs.
//   The out layer computes only the 3 eps channels (y_hat is unused while sampling).
// - Noise: the counter-based Philox of diffupose::sampler_step, keyed by the sample's global
//   element index, so the result does not depend on the tiling or the thread count and equals
//   Diffusion.sample's for the same rng_state and counter stride.
// - The aggregation (root centring, mean, spread) is O(elements) and runs after the region on
//   the calling thread.
// - A call with one tile (1 frame x 1 hypothesis) runs on the calling thread: no thread
//   start-up. (Splitting its output channels over two threads would need a barrier per layer,
//   the cost this op exists to avoid.)
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/activation.h"
#include "common/philox.h"
#include "common/sampler_math.h"
#include "cpu/flush_denormals.h"
#include "cpu/mgcn_rows.h"
#include "sample_check.h"

namespace diffupose {
namespace {

constexpr int64_t kTileRows = 128;  // rows of a tile (flip twins included): its buffers ~0.8 MB at d 256
constexpr int64_t kCoefs = kSampleCoefs;

// One packed graph convolution: w [cin, 2 cout] = [w0 | w1], m [J, cout], a [J, J], bias [cout].
struct Conv {
  const float *w, *m, *a, *bias;
  int64_t cin, cout;
};

// Everything the tiles read (shared, read-only) and where they write.
struct Job {
  int64_t N, J, d, nb, S;
  const float* y;  // [B, J, 2]
  Conv inp, out;   // inp: cin 5 (x_t rows 0-2, y rows 3-4); out: cout 3 (eps only)
  std::vector<Conv> c1, c2;
  std::vector<float> scale1, shift;  // [S, nb, d] each: 1 + scale, shift
  std::vector<SamplerCoefs> coefs;   // [S]
  const int64_t* perm;               // [J] the flip's joint permutation, nullptr without flip
  uint64_t seed, offset;
  int64_t stride;  // noise counters per step
  int act;
  float* hyp;  // [M, J, 3]
};

// Scratch of one thread, for tiles of up to `rows` rows.
struct Scratch {
  std::vector<float> x, eps, hy, ha, hb, h0, h1, pre, g1, u;
  Scratch(const Job& p, int64_t rows)
      : x(rows * 3), eps(rows * 3), hy(rows * 2 * p.d), ha(rows * p.d), hb(rows * p.d), h0(rows * p.d),
        h1(rows * p.d), pre(p.J * p.d), g1(p.J * p.d), u(p.d) {}
};

// The BLAS GEMM, single-threaded inside the region. ATen's float cpublas::gemm is not exported
// from libtorch (undefined symbol at import), so this is what it calls: the Fortran sgemm_ that
// libtorch carries (MKL here), found at run time (ATen's fallback gemm_stub is not linkable
// either); a torch without one gets plain loops (correct, slower). MKL is told to stay on the calling thread (also when a lone tile
// runs outside any parallel region, where it would otherwise spread every small GEMM over all
// cores with a barrier each).
using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
// Every exported spelling of mkl_set_num_threads_local is the Fortran entry: the count by pointer.
using MklThreadsFn = int (*)(const int*);
struct Blas {
  SgemmFn sgemm = nullptr;
  MklThreadsFn mkl_local_threads = nullptr;
};
const Blas& blas() {
  static const Blas b = [] {
    Blas r;
    r.sgemm = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
    r.mkl_local_threads = reinterpret_cast<MklThreadsFn>(dlsym(RTLD_DEFAULT, "mkl_set_num_threads_local"));
    return r;
  }();
  return b;
}

// The state of a worker thread for the op's duration, restored after: one BLAS thread (MKL's
// thread-local setting) and denormals flushed to zero (cpu/flush_denormals.h says why).
struct WorkerState {
  int blas_threads = 0;
  const ScopedFlushDenormals ftz;
  WorkerState() {
    const int one = 1;
    if (blas().mkl_local_threads) blas_threads = blas().mkl_local_threads(&one);
  }
  ~WorkerState() {
    if (blas().mkl_local_threads) blas().mkl_local_threads(&blas_threads);  // 0: back to the global setting
  }
};

// Column-major C [m, n] = A [m, k] B [k, n] (lda, ldb, ldc leading dimensions).
void gemm_colmajor(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                   int64_t ldc) {
  if (const SgemmFn f = blas().sgemm) {
    const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
    const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
    const float one = 1.0f, zero = 0.0f;
    f("N", "N", &mi, &ni, &ki, &one, a, &la, b, &lb, &zero, c, &lc);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {  // no BLAS in this torch: plain loops (column j of C)
    float* cj = c + j * ldc;
    for (int64_t i = 0; i < m; ++i) cj[i] = 0.0f;
    for (int64_t l = 0; l < k; ++l) {
      const float blj = b[j * ldb + l];
      const float* al = a + l * lda;
      for (int64_t i = 0; i < m; ++i) cj[i] += al[i] * blj;
    }
  }
}

// H0 = A @ w0, H1 = A @ w1 for R rows A [R, cin], row-major (BLAS sees the transposes: column-major
// H^T [C, R] = w^T [C, cin] A^T [cin, R], w^T read in place from the packed [w0 | w1] with ld 2C).
void gemm_halves(const Conv& L, const float* A, int64_t R, float* H0, float* H1) {
  const int64_t C = L.cout;
  gemm_colmajor(C, R, L.cin, L.w, 2 * C, A, L.cin, H0, C);
  gemm_colmajor(C, R, L.cin, L.w + C, 2 * C, A, L.cin, H1, C);
}

// Aggregation + epilogue of `nq` samples from their H0, H1 [nq, J, C]:
// out = act(pre * scale1 + shift) (+ out itself when `residual`: the block's skip, in place).
void conv_rows(const Conv& L, const float* H0, const float* H1, int64_t nq, int64_t J, const float* scale1,
               const float* shift, int act, bool residual, float* out, Scratch& w) {
  const RowsOf<float>& rows = rows_of<float>();
  const int64_t C = L.cout;
  for (int64_t q = 0; q < nq; ++q) {
    rows.agg_fwd(w.pre.data(), w.g1.data(), H0 + q * J * C, H1 + q * J * C, L.m, L.a, L.bias, J, C);
    for (int64_t j = 0; j < J; ++j) {
      rows.fwd(w.u.data(), w.pre.data() + j * C, scale1, shift, C, act);
      float* o = out + (q * J + j) * C;
      if (residual)
        for (int64_t c = 0; c < C; ++c) o[c] += w.u[c];
      else
        for (int64_t c = 0; c < C; ++c) o[c] = w.u[c];
    }
  }
}

// Joint j of sample row q of a tile of ns samples: rows [0, ns) are the samples, [ns, 2 ns) their
// mirrored twins (joint perm[j], x negated), as diffusion.denoise batches them.
struct Src {
  int64_t k, j;
  float sx;
};
inline Src source(const Job& p, int64_t ns, int64_t q, int64_t j) {
  return q < ns ? Src{q, j, 1.0f} : Src{q - ns, p.perm[j], -1.0f};
}

// Samples [s0, s0 + ns) through every step; writes their rows of p.hyp.
void run_tile(const Job& p, int64_t s0, int64_t ns, Scratch& w) {
  const int64_t J = p.J, d = p.d, d2 = 2 * d;
  const int64_t nq = p.perm ? 2 * ns : ns, R = nq * J, E = ns * J * 3;
  const uint64_t e0 = static_cast<uint64_t>(s0 * J * 3);  // the tile's first element: its noise counters
  float* x = w.x.data();
  for (int64_t i = 0; i < E; ++i) x[i] = philox_normal(p.seed, p.offset + e0 + i);  // x_T ~ N(0, I)

  // the 2D condition's part of the input layer, y @ w_in[3:5], once for all steps
  const float* wy0 = p.inp.w + 3 * d2;
  const float* wy1 = p.inp.w + 4 * d2;
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t j = 0; j < J; ++j) {
      const Src s = source(p, ns, q, j);
      const float* yr = p.y + ((s0 + s.k) / p.N * J + s.j) * 2;
      const float y0 = s.sx * yr[0], y1 = yr[1];
      float* hr = w.hy.data() + (q * J + j) * d2;
      for (int64_t c = 0; c < d2; ++c) hr[c] = y0 * wy0[c] + y1 * wy1[c];
    }

  const float* wx0 = p.inp.w;
  const float* wx1 = p.inp.w + d2;
  const float* wx2 = p.inp.w + 2 * d2;
  for (int64_t st = 0; st < p.S; ++st) {
    // input layer: x_t @ w_in[0:3] + the precomputed y part, split into H0 | H1
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t j = 0; j < J; ++j) {
        const Src s = source(p, ns, q, j);
        const float* xr = x + (s.k * J + s.j) * 3;
        const float a0 = s.sx * xr[0], a1 = xr[1], a2 = xr[2];
        const float* hr = w.hy.data() + (q * J + j) * d2;
        float* o0 = w.h0.data() + (q * J + j) * d;
        float* o1 = w.h1.data() + (q * J + j) * d;
        for (int64_t c = 0; c < d; ++c) o0[c] = hr[c] + a0 * wx0[c] + a1 * wx1[c] + a2 * wx2[c];
        for (int64_t c = 0; c < d; ++c)
          o1[c] = hr[d + c] + a0 * wx0[d + c] + a1 * wx1[d + c] + a2 * wx2[d + c];
      }
    conv_rows(p.inp, w.h0.data(), w.h1.data(), nq, J, nullptr, nullptr, p.act, false, w.ha.data(), w);
    // residual blocks: hb = conv1(ha) with the step's scale-shift; ha = conv2(hb) + ha
    for (int64_t b = 0; b < p.nb; ++b) {
      const int64_t fo = (st * p.nb + b) * d;
      gemm_halves(p.c1[b], w.ha.data(), R, w.h0.data(), w.h1.data());
      conv_rows(p.c1[b], w.h0.data(), w.h1.data(), nq, J, p.scale1.data() + fo, p.shift.data() + fo, p.act, false,
                w.hb.data(), w);
      gemm_halves(p.c2[b], w.hb.data(), R, w.h0.data(), w.h1.data());
      conv_rows(p.c2[b], w.h0.data(), w.h1.data(), nq, J, nullptr, nullptr, p.act, true, w.ha.data(), w);
    }
    // out layer, eps channels only, no activation
    gemm_halves(p.out, w.ha.data(), R, w.h0.data(), w.h1.data());
    float* eps = w.eps.data();
    conv_rows(p.out, w.h0.data(), w.h1.data(), nq, J, nullptr, nullptr, kActNone, false, eps, w);
    if (p.perm)  // the average with the mirrored prediction, mirrored back
      for (int64_t k = 0; k < ns; ++k)
        for (int64_t j = 0; j < J; ++j) {
          float* e = eps + (k * J + j) * 3;
          const float* t = eps + ((ns + k) * J + p.perm[j]) * 3;
          e[0] = 0.5f * (e[0] - t[0]);
          e[1] = 0.5f * (e[1] + t[1]);
          e[2] = 0.5f * (e[2] + t[2]);
        }
    // the sampler update, with this step's noise counters
    const SamplerCoefs& c = p.coefs[st];
    const uint64_t base = p.offset + static_cast<uint64_t>((st + 1) * p.stride) + e0;
    if (c.sigma != 0.0f)
      for (int64_t i = 0; i < E; ++i) x[i] = sampler_update(x[i], eps[i], philox_normal(p.seed, base + i), c);
    else
      for (int64_t i = 0; i < E; ++i) x[i] = sampler_update(x[i], eps[i], 0.0f, c);
  }
  std::copy(x, x + E, p.hyp + e0);
}

// Root centring (optional), then per frame the mean over the N hypotheses and the per-joint
// spread sqrt(mean_n |x - mean|^2), as Lifter and sampler_step's last step define them.
void aggregate(float* hyp, float* mean, float* spread, int64_t B, int64_t N, int64_t J, bool center, int64_t root) {
  const int64_t per = J * 3;
  for (int64_t f = 0; f < B; ++f) {
    float* h = hyp + f * N * per;
    float* mu = mean + f * per;
    if (center)
      for (int64_t n = 0; n < N; ++n) {
        float* hn = h + n * per;
        const float r0 = hn[root * 3], r1 = hn[root * 3 + 1], r2 = hn[root * 3 + 2];
        for (int64_t j = 0; j < J; ++j) {
          hn[j * 3] -= r0;
          hn[j * 3 + 1] -= r1;
          hn[j * 3 + 2] -= r2;
        }
      }
    for (int64_t k = 0; k < per; ++k) {
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n) s += h[n * per + k];
      mu[k] = s / static_cast<float>(N);
    }
    for (int64_t j = 0; j < J; ++j) {
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < 3; ++c) {
          const float v = h[n * per + j * 3 + c] - mu[j * 3 + c];
          s += v * v;
        }
      spread[f * J + j] = std::sqrt(s / static_cast<float>(N));
    }
  }
}

Conv conv_of(const at::Tensor* t, int64_t J, int64_t cin, int64_t cout, int64_t layer) {
  const char* what[4] = {"w", "m", "a", "bias"};
  const std::vector<std::vector<int64_t>> want = {{cin, 2 * cout}, {J, cout}, {J, J}, {cout}};
  for (int i = 0; i < 4; ++i) {
    TORCH_CHECK(t[i].device().is_cpu() && t[i].scalar_type() == at::kFloat && t[i].is_contiguous(),
                "sample: weights[", 4 * layer + i, "] (layer ", layer, " ", what[i],
                ") must be a contiguous float32 CPU tensor: pack them with diffupose.ops.sample");
    TORCH_CHECK(t[i].sizes() == at::IntArrayRef(want[i]), "sample: layer ", layer, " ", what[i], " must be ",
                at::IntArrayRef(want[i]), ", got ", t[i].sizes());
  }
  return {t[0].data_ptr<float>(), t[1].data_ptr<float>(), t[2].data_ptr<float>(), t[3].data_ptr<float>(), cin, cout};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cpu(const at::Tensor& y_, at::TensorList weights,
                                                          const at::Tensor& film_, c10::ArrayRef<double> coefs,
                                                          const at::Tensor& rng_state, int64_t n_hyp,
                                                          int64_t counter_stride, c10::ArrayRef<int64_t> flip_perm,
                                                          int64_t act, int64_t root, bool center_root) {
  const SampleDims dims = check_sample_args(y_, weights, film_, coefs, rng_state, n_hyp, counter_stride, flip_perm,
                                            act, root);
  TORCH_CHECK(y_.device().is_cpu(), "sample: y must be a CPU tensor here");
  const int64_t B = dims.B, J = dims.J, nb = dims.nb, S = dims.S, d = dims.d, M = dims.M;

  Job p;
  p.N = n_hyp, p.J = J, p.d = d, p.nb = nb, p.S = S;
  p.inp = conv_of(&weights[0], J, 5, d, 0);
  for (int64_t b = 0; b < nb; ++b) {
    p.c1.push_back(conv_of(&weights[4 * (1 + 2 * b)], J, d, d, 1 + 2 * b));
    p.c2.push_back(conv_of(&weights[4 * (2 + 2 * b)], J, d, d, 2 + 2 * b));
  }
  p.out = conv_of(&weights[4 * (1 + 2 * nb)], J, d, 3, 1 + 2 * nb);
  const at::Tensor film = film_.detach().to(at::kFloat).contiguous();
  const float* fp = film.data_ptr<float>();
  p.scale1.resize(S * nb * d);
  p.shift.resize(S * nb * d);
  for (int64_t i = 0; i < S * nb; ++i)
    for (int64_t c = 0; c < d; ++c) {
      p.scale1[i * d + c] = 1.0f + fp[i * 2 * d + c];
      p.shift[i * d + c] = fp[i * 2 * d + d + c];
    }
  for (int64_t s = 0; s < S; ++s) {
    const double* c = coefs.data() + s * kCoefs;
    p.coefs.push_back({static_cast<float>(c[0]), static_cast<float>(c[1]), static_cast<float>(c[2]),
                       static_cast<float>(c[3]), static_cast<float>(c[4]), static_cast<float>(c[5])});
  }
  p.perm = flip_perm.empty() ? nullptr : flip_perm.data();
  const int64_t* st = rng_state.data_ptr<int64_t>();
  p.seed = static_cast<uint64_t>(st[0]);
  p.offset = static_cast<uint64_t>(st[1]);
  p.stride = counter_stride;
  p.act = static_cast<int>(act);

  const auto f32 = y_.options().dtype(at::kFloat);
  at::Tensor hyp = at::empty({M, J, 3}, f32), mean = at::empty({B, J, 3}, f32), spread = at::empty({B, J}, f32);
  if (M == 0) return {hyp.view({B, n_hyp, J, 3}), mean, spread};
  const at::Tensor y = y_.detach().to(at::kFloat).contiguous();
  p.y = y.data_ptr<float>();
  p.hyp = hyp.data_ptr<float>();

  // Tiles: at most kTileRows rows, as few as balance the threads (a whole number of tiles per
  // thread where the batch allows), claimed dynamically.
  const int64_t twins = p.perm ? 2 : 1;
  const int64_t cap = std::max<int64_t>(1, kTileRows / (J * twins));
  const int64_t nt = std::max<int64_t>(1, at::get_num_threads());
  const int64_t rounds = (M + nt * cap - 1) / (nt * cap);
  const int64_t ns = std::min(cap, (M + nt * rounds - 1) / (nt * rounds));
  const int64_t tiles = (M + ns - 1) / ns;
  const int64_t workers = std::min(nt, tiles);
  std::atomic<int64_t> next{0};
  const auto work = [&](int64_t, int64_t) {
    const WorkerState state;
    Scratch w(p, ns * twins * J);
    for (int64_t t = next.fetch_add(1); t < tiles; t = next.fetch_add(1))
      run_tile(p, t * ns, std::min(ns, M - t * ns), w);
  };
  if (workers == 1)
    work(0, 1);  // on the calling thread: no thread start-up for a lone tile
  else
    at::parallel_for(0, workers, 1, work);  // one region; each worker loops over tiles
  aggregate(p.hyp, mean.data_ptr<float>(), spread.data_ptr<float>(), B, n_hyp, J, center_root, root);
  return {hyp.view({B, n_hyp, J, 3}), mean, spread};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) { m.impl("sample", &sample_cpu); }

}  // namespace diffupose
