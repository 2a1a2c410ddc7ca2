// The whole sampler as one op, CPU: the kernel of diffupose::sample.
// Contract: csrc/ops.cpp; reference: diffupose/ops/sample.py::sample_ref (the model's
// GCNDenoiser + Diffusion.sample on the reference backend, then the root centring of Lifter).
//
// Why one op. Run layer by layer, a sampler call at batch 1 spends ~300 us per op call on
// Python, dispatch and thread start-up against ~30 us of GEMM per layer, and each op's own
// parallel region is a barrier that a descheduled sibling thread holds up. Here there is ONE
// parallel region per call and, but for the small calls' teams, no barrier inside it:
//
// - Tiles of whole samples (a sample: one hypothesis of one frame, J rows; with flip, also its
//   mirrored twin). A thread claims a tile from an atomic counter and runs it through EVERY
//   layer of EVERY step and the sampler updates, so its activations stay in the thread's cache;
//   tiles are small enough (<= kTileRows rows) that a thread descheduled by another process
//   holds up at most one tile's worth of work at the end.
// - Per layer of a tile, one pass over the output channels in panels of one vector register:
//   the panel's H0 = A @ w0 and H1 = A @ w1 for all the tile's rows from a register-blocked GEMM
//   that reads the packed [w0 | w1] in place (no BLAS: MKL's sgemm reached 56-80 GFLOP/s on these
//   17-119-row shapes on one Zen 4 core, repacking w every call; this one ~110), then the J x J
//   aggregation and the epilogue of each sample while the panel is in L1 (cpu/mgcn_rows_impl.h,
//   conv_panels_fwd, dispatched by instruction set). w0 | w1 are packed side by side once per
//   model (diffupose/ops/sample.py).
// - The input layer is the same GEMM with 5 input channels: the rows [x_t | y], the y part
//   written once per tile. Once per call: 1 + scale of the FiLMs. The out layer computes only the
//   3 eps channels (y_hat is unused while sampling).
// - Noise: the counter-based Philox of diffupose::sampler_step, keyed by the sample's global
//   element index, so the result does not depend on the tiling or the thread count and equals
//   Diffusion.sample's for the same rng_state and counter stride.
// - The aggregation (root centring, mean, spread) is O(elements) and runs after the region on
//   the calling thread.
// - A small call (at most kTeamRows rows: 1 frame x up to 3 hypotheses, 1 with flip) is one
//   tile run by a team of threads that split every layer's channel panels, a barrier after each
//   layer (Team below: how a descheduled member is kept from holding up every call). 1 x 1 went
//   from 2.2 ms on one thread to 1.3-1.5 ms on two (d 256, 4 blocks, 5 steps, Zen 4).
// - Otherwise tiles are at least kRoundsMin per thread, so that a thread that loses its core
//   holds up little at the end (see the tiling in sample_cpu).
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <thread>
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
constexpr int64_t kRoundsMin = 4;   // tiles per thread at least (sample_cpu says why)
// A call of at most this many rows runs as one tile of a team (Team says why). At 1 x 10 (170
// rows) a team of two was no faster than tiles (12-17 ms either way) and waited long at 14-18 of
// 50-100 calls' barriers on an idle VM; at 1 x 1 (17 rows) it halves the time.
constexpr int64_t kTeamRows = 64;
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

// Scratch of one thread, for tiles of up to `rows` rows; the activations ha, hb [rows, d] only
// when the thread runs its tiles alone (a team's members share theirs: run_team).
struct Scratch {
  std::vector<float> x, eps, xin, ha, hb, panels;
  Scratch(const Job& p, int64_t rows, bool activations = true)
      : x(rows * 3), eps(rows * 3), xin(rows * 5), ha(activations ? rows * p.d : 0),
        hb(activations ? rows * p.d : 0), panels(conv_panels_scratch(rows, p.J)) {}
};

// Denormals flushed to zero on a worker thread for the op's duration (cpu/flush_denormals.h says why).
struct WorkerState {
  const ScopedFlushDenormals ftz;
};

// Threads that run one tile together (a call with fewer tiles than threads: 1 frame x 1
// hypothesis). Each member computes its share of every layer's channel panels; a barrier after
// each layer (10 per step at 4 blocks) makes the layer's output whole before the next reads it.
// The small rest (the input rows, the 3-channel out layer, the sampler update) every member
// computes itself, identically, so that nothing else needs to be shared. The panels' arithmetic
// does not depend on who computes them: a team's result is bit-identical to one thread's.
//
// A member descheduled by another process holds up the others at the next barrier (what the
// one-tile-per-thread design avoids). So the barrier spins for at most kSpinNs, then yields; two
// team calls in a row that had to wait that long (one alone happens on an idle VM too) turn
// teams off for kBackoffNs, and calls in that time run their lone tile on one thread
// (tests/ops/test_sample.py checks both give the same result; bench/fps.py --contend measures it).
constexpr int64_t kSpinNs = 100'000;
constexpr int64_t kBackoffNs = 200'000'000;
constexpr int64_t kPanelsPerMember = 4;  // fewer panels than this per thread: the barriers cost more than they save
std::atomic<int64_t> g_team_off_until{0};  // steady_clock ns
std::atomic<int64_t> g_team_slow_calls{0};  // team calls in a row that waited long
std::atomic<int64_t> g_team_calls{0}, g_team_calls_slow{0};  // totals, for the testing hook

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Team {
  int64_t size = 1;
  std::atomic<int64_t> arrived{0}, generation{0};
  std::atomic<bool> slow{false};

  void barrier() {
    if (size == 1) return;
    const int64_t g = generation.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
      arrived.store(0, std::memory_order_relaxed);
      generation.fetch_add(1, std::memory_order_release);
      return;
    }
    const int64_t t0 = now_ns();
    for (int64_t i = 0; generation.load(std::memory_order_acquire) == g; ++i) {
      if ((i & 63) != 63) {
        cpu_relax();
      } else if (slow.load(std::memory_order_relaxed) || now_ns() - t0 > kSpinNs) {
        slow.store(true, std::memory_order_relaxed);
        std::this_thread::yield();
      }
    }
  }
};

// One member's part of a tile: its slot in the team and the tile's shared activations.
struct Member {
  Team* team;
  int64_t slot;
  float *ha, *hb;  // [rows, d] each, shared by the team
};

// One graph convolution of R rows x -> out (cpu/mgcn_rows.h ConvPanels): the member's share of
// the channel panels, or all of them (`all`: the out layer, which every member computes itself).
void conv(const Conv& L, const float* x, int64_t R, int64_t J, const float* scale1, const float* shift, int act,
          bool residual, float* out, Scratch& w, const Member& me, bool all = false) {
  const MgcnRows& rows = mgcn_rows();
  const ConvPanels a{x, R, L.cin, L.w, L.m, L.a, L.bias, J, L.cout, scale1, shift, act, residual, out,
                     w.panels.data()};
  const int64_t np = (L.cout + rows.panel - 1) / rows.panel, n = all ? 1 : me.team->size, i = all ? 0 : me.slot;
  rows.conv_panels_fwd(a, i * np / n, (i + 1) * np / n);
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

// Samples [s0, s0 + ns) through every step; writes their rows of p.hyp (slot 0 of a team).
void run_tile(const Job& p, int64_t s0, int64_t ns, Scratch& w, const Member& me) {
  const int64_t J = p.J;
  const int64_t nq = p.perm ? 2 * ns : ns, R = nq * J, E = ns * J * 3;
  const uint64_t e0 = static_cast<uint64_t>(s0 * J * 3);  // the tile's first element: its noise counters
  float* x = w.x.data();
  for (int64_t i = 0; i < E; ++i) x[i] = philox_normal(p.seed, p.offset + e0 + i);  // x_T ~ N(0, I)

  // the input layer's rows [x_t | y] (mirrored for the twins); the y columns once for all steps
  float* xin = w.xin.data();
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t j = 0; j < J; ++j) {
      const Src s = source(p, ns, q, j);
      const float* yr = p.y + ((s0 + s.k) / p.N * J + s.j) * 2;
      xin[(q * J + j) * 5 + 3] = s.sx * yr[0];
      xin[(q * J + j) * 5 + 4] = yr[1];
    }
  for (int64_t st = 0; st < p.S; ++st) {
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t j = 0; j < J; ++j) {
        const Src s = source(p, ns, q, j);
        const float* xr = x + (s.k * J + s.j) * 3;
        float* r = xin + (q * J + j) * 5;
        r[0] = s.sx * xr[0];
        r[1] = xr[1];
        r[2] = xr[2];
      }
    // (a barrier after every layer that members split: its output is whole before it is read,
    // and every read of a buffer is over before the next layer writes it)
    conv(p.inp, xin, R, J, nullptr, nullptr, p.act, false, me.ha, w, me);
    me.team->barrier();
    // residual blocks: hb = conv1(ha) with the step's scale-shift; ha = conv2(hb) + ha
    for (int64_t b = 0; b < p.nb; ++b) {
      const int64_t fo = (st * p.nb + b) * p.d;
      conv(p.c1[b], me.ha, R, J, p.scale1.data() + fo, p.shift.data() + fo, p.act, false, me.hb, w, me);
      me.team->barrier();
      conv(p.c2[b], me.hb, R, J, nullptr, nullptr, p.act, true, me.ha, w, me);
      me.team->barrier();
    }
    // out layer, eps channels only, no activation; every member all of it, into its own eps
    float* eps = w.eps.data();
    conv(p.out, me.ha, R, J, nullptr, nullptr, kActNone, false, eps, w, me, true);
    if (st + 1 < p.S) me.team->barrier();  // ha is rewritten by the next step's input layer
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
  if (me.slot == 0) std::copy(x, x + E, p.hyp + e0);
}

// The lone tile [0, M) by a team of `size` threads (Team says why and when). The region's
// threads first form the team: if the runtime gave it fewer threads than asked (a thread then
// holds several indices), slot 0 runs the tile alone and the others leave.
void run_team(const Job& p, int64_t M, int64_t rows, int64_t size) {
  Team team;
  team.size = size;
  std::vector<float> ha(rows * p.d), hb(rows * p.d);
  std::atomic<int64_t> joined{0};
  std::atomic<bool> short_handed{false};
  at::parallel_for(0, size, 1, [&](int64_t b, int64_t e) {
    const WorkerState state;
    Scratch w(p, rows, false);
    if (e - b != 1) short_handed.store(true);
    joined.fetch_add(e - b);
    for (int64_t i = 0; joined.load() < size && !short_handed.load(); ++i)  // the indices are handed out at once
      if ((i & 63) == 63) std::this_thread::yield(); else cpu_relax();
    if (short_handed.load()) {
      if (b != 0) return;
      Team solo;
      run_tile(p, 0, M, w, Member{&solo, 0, ha.data(), hb.data()});
      return;
    }
    run_tile(p, 0, M, w, Member{&team, b, ha.data(), hb.data()});
  });
  g_team_calls.fetch_add(1);
  if (!team.slow.load()) {
    g_team_slow_calls.store(0);
    return;
  }
  g_team_calls_slow.fetch_add(1);
  if (g_team_slow_calls.fetch_add(1) + 1 >= 2) {
    g_team_slow_calls.store(0);
    g_team_off_until.store(now_ns() + kBackoffNs);
  }
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

  // Tiles: at most kTileRows rows and at least kRoundsMin per thread (where the batch has the
  // samples), so that a thread that loses its core to another process holds up only a small
  // tile at the end while the others take the rest; tile t is samples [t M / T, (t + 1) M / T),
  // so sizes differ by at most one; claimed dynamically. (At 1 frame x 10 hypotheses on 2
  // threads, 2 tiles of 5 samples took 2.0-2.3x their time alone beside one busy process; tiles of
  // 1-2 samples 1.6-1.7x at the same speed alone.)
  const int64_t twins = p.perm ? 2 : 1;
  const int64_t cap = std::max<int64_t>(1, kTileRows / (J * twins));
  const int64_t nt = std::max<int64_t>(1, at::get_num_threads());
  const int64_t rounds = std::max(kRoundsMin, (M + nt * cap - 1) / (nt * cap));
  const int64_t tiles = std::max<int64_t>(1, std::min(M, nt * rounds));
  const int64_t ns = (M + tiles - 1) / tiles;  // the largest tile
  const int64_t workers = std::min(nt, tiles);
  const int64_t rows = ns * twins * J;
  Team solo;
  std::atomic<int64_t> next{0};
  const auto work = [&](int64_t, int64_t) {
    const WorkerState state;
    Scratch w(p, rows);
    const Member me{&solo, 0, w.ha.data(), w.hb.data()};
    for (int64_t t = next.fetch_add(1); t < tiles; t = next.fetch_add(1)) {
      const int64_t s0 = t * M / tiles, s1 = (t + 1) * M / tiles;
      run_tile(p, s0, s1 - s0, w, me);
    }
  };
  const int64_t team_size = std::min(nt, d / mgcn_rows().panel / kPanelsPerMember);
  if (M * twins * J <= kTeamRows && team_size > 1 && !at::in_parallel_region() &&
      now_ns() >= g_team_off_until.load()) {
    run_team(p, M, M * twins * J, team_size);
  } else if (workers == 1) {
    work(0, 1);  // on the calling thread: no thread start-up for a lone tile
  } else {
    at::parallel_for(0, workers, 1, work);  // one region; each worker loops over tiles
  }
  aggregate(p.hyp, mean.data_ptr<float>(), spread.data_ptr<float>(), B, n_hyp, J, center_root, root);
  return {hyp.view({B, n_hyp, J, 3}), mean, spread};
}

}  // namespace

// Testing hook (diffupose._C.sample_team_calls): [team calls, of which slow].
std::vector<int64_t> sample_cpu_team_calls(bool reset) {
  std::vector<int64_t> r{g_team_calls.load(), g_team_calls_slow.load()};
  if (reset) {
    g_team_calls.store(0);
    g_team_calls_slow.store(0);
    g_team_slow_calls.store(0);
    g_team_off_until.store(0);
  }
  return r;
}

TORCH_LIBRARY_IMPL(diffupose, CPU, m) { m.impl("sample", &sample_cpu); }

}  // namespace diffupose
