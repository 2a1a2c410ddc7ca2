// A parallel region whose threads claim work items first come, first served.
// Why: at::parallel_for splits a range statically, so a region ends when its slowest thread is
// done; under GOMP_SPINCOUNT=1000 (diffupose/__init__.py) the sibling thread has usually gone to
// sleep during the Python between two ops and joins a region 30-60 us late (a futex wake on this
// VM), or a whole time slice late when another process holds its core. Claimed items let the
// threads that are running take the late one's share. Results stay independent of the thread
// count and of who ran what: callers give each item its own outputs and partial sums, summed in
// item order afterwards (sum_parts).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace diffupose {

// Runs body(next) once on each thread of the team (one region); next() returns 0, 1, ..., n - 1
// across all threads, then values >= n: `for (int64_t i; (i = next()) < n;)`. Per-thread scratch
// goes at the top of body. Nested in another region, body runs once and takes every item.
template <typename Body>
void parallel_claim(int64_t n, const Body& body) {
  if (n <= 0) return;
  std::atomic<int64_t> counter{0};
  const auto next = [&counter]() { return counter.fetch_add(1, std::memory_order_relaxed); };
  const int64_t team = std::min<int64_t>(at::get_num_threads(), n);
  at::parallel_for(0, team, 1, [&](int64_t, int64_t) { body(next); });
}

// dst[0, n) = the sum of `parts` rows of n values, `stride` apart in src, in row order (0 when
// there are none): the fixed order in which the items' partial sums are combined.
template <typename T>
void sum_parts(T* dst, const T* src, int64_t parts, int64_t stride, int64_t n) {
  std::fill(dst, dst + n, T(0));
  for (int64_t q = 0; q < parts; ++q)
    for (int64_t c = 0; c < n; ++c) dst[c] += src[q * stride + c];
}

}  // namespace diffupose
