// Modulated graph convolution (forward and backward), CUDA. Same contract and per-element
// epilogue math as the CPU kernel (csrc/ops.cpp, common/mgcn_math.h); reference:
// diffupose/ops/mgcn.py::mgcn_ref. For x [B, J, Cin] viewed as R = B*J flat rows:
//
//   H   = x @ [w0 | w1]                                   [R, 2*Cout]: H0 own, H1 neighbour half
//   pre = a_jj * m_j * H0_j + sum_{k != j} a_jk * m_k * H1_k + bias     (per sample, per channel)
//   out = act(pre * (1 + scale) + shift) + residual
//
// Forward: one cuBLAS GEMM for both halves of w (batched over the halves, fp32/fp64 math pinned:
// never TF32), then `mgcn_fwd_epilogue_kernel` (aggregation over
// the joints of a sample + bias + epilogue, one write of out and pre).
// Backward: the same GEMM recomputes H (only pre is saved); `mgcn_bwd_agg_kernel` writes
// dH = [m * dG0, m * dG1] and per-block partial sums of dbias, dm, da, dscale_shift; then
// dx = dH @ [w0 | w1]^T and [dw0 | dw1] = x^T @ dH are cuBLAS GEMMs (same precision), and the partials are reduced
// with at::sum. No atomics anywhere: every sum has a fixed order, so the results are
// deterministic (bit-identical run to run).
//
// Precision: everything is computed in the accumulation type acc_t (fp32, fp64 for fp64 x):
// half x is converted to fp32 for the GEMMs, fp32 parameters are never rounded to x's dtype.
// Only out, pre and the returned gradients are rounded, to their contract dtypes.
//
// CUDA graphs: the kernels run on the current stream, temporaries come from the caching
// allocator (at::empty), there is no host synchronisation and no device query.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "common/mgcn_math.h"
#include "mgcn_check.h"

namespace diffupose {
namespace {

// A block owns kTileC output channels (one per lane of a warp, so global accesses along the
// channels coalesce) of `spb` whole samples (a sample's J joints never straddle blocks: the
// aggregation mixes all joints of a sample). kWarps warps share the rows of the tile.
constexpr int kTileC = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kTileC * kWarps;
// Rows (samples * joints) a block aims for: spb = max(1, kTargetRows / J) samples per block.
constexpr int kTargetRows = 64;
// Backward shared-memory rows are padded by one element: the da pass reads one element from each
// of 32 consecutive rows per warp; a stride of kTileC would put them all in the same bank.
constexpr int kLd = kTileC + 1;
// Dynamic shared memory stays within the default 48 KiB per block: opting in to more needs
// cudaFuncSetAttribute and a per-device limit query, which we avoid (see the file comment).
constexpr size_t kSmemBudget = 48 * 1024;

// Largest J whose tiles fit the budget (the backward needs the most: two [rows, kLd] tiles and a
// [kWarps, kTileC] reduction buffer; rows = J once J >= kTargetRows). 182 for fp32, 89 for fp64.
template <typename acc_t>
constexpr int64_t max_joints() {
  return static_cast<int64_t>((kSmemBudget - kWarps * kTileC * sizeof(acc_t)) / (2 * kLd * sizeof(acc_t)));
}

inline int samples_per_block(int64_t J) { return static_cast<int>(std::max<int64_t>(1, kTargetRows / J)); }

// Sum over the 32 lanes of a warp, in a fixed tree order (deterministic); lane 0 holds the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kTileC / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// ------------------------------------------------------------------------------------------------
// kernels
// ------------------------------------------------------------------------------------------------
// Aggregation over the joints + bias + epilogue.
//   H [R, 2*Cout] acc_t (H0 = x @ w0 in columns [0, Cout), H1 = x @ w1 in [Cout, 2*Cout));
//   m [J, Cout], a [J, J], bias [Cout]: acc_t; ss [1 or B, 2, Cout] (nullptr: none; ss_stride 0
//   when one row broadcasts, else 2*Cout); res [R, Cout] (nullptr: none); out, pre [R, Cout]
//   (pre nullptr unless save_pre): scalar_t.
// Grid (ceil(B / spb), ceil(Cout / kTileC)), block (kTileC, kWarps); dynamic shared memory
// spb * J * kTileC acc_t (the modulated neighbour values m * H1 of every row of the tile).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    mgcn_fwd_epilogue_kernel(const acc_t* __restrict__ H, const acc_t* __restrict__ m, const acc_t* __restrict__ a,
                             const acc_t* __restrict__ bias, const scalar_t* __restrict__ ss, int64_t ss_stride,
                             const scalar_t* __restrict__ res, scalar_t* __restrict__ out,
                             scalar_t* __restrict__ pre_out, int64_t B, int J, int64_t Cout, int spb, int act) {
  // unsigned char + align: a templated `extern __shared__ acc_t[]` would be redeclared per type
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  acc_t* s_mh1 = reinterpret_cast<acc_t*>(smem_raw);  // [spb * J, kTileC]

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * spb;  // first sample of the tile
  const int ns = static_cast<int>(B - b0 < spb ? B - b0 : spb);  // the last tile may be partial
  const int rows = ns * J;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kTileC + tx;
  const bool c_ok = c < Cout;
  const int64_t ld_h = 2 * Cout;

  // 1. m_k * H1_k of every row of the tile: each is used by the J - 1 other joints of its sample.
  //    Rows r of the tile are the flat rows b0 * J + r (the samples are consecutive).
  for (int r = ty; r < rows; r += kWarps) {
    const int j = r % J;
    const int64_t row = b0 * J + r;
    s_mh1[r * kTileC + tx] = c_ok ? m[j * Cout + c] * H[row * ld_h + Cout + c] : acc_t(0);
  }
  __syncthreads();
  if (!c_ok) return;  // no barrier below

  // 2. pre and the epilogue, one row per warp at a time (a[j, *] is warp-uniform: broadcast loads)
  for (int r = ty; r < rows; r += kWarps) {
    const int s = r / J, j = r - s * J;
    const int64_t b = b0 + s;
    const int64_t row = b0 * J + r;
    const acc_t* a_j = a + static_cast<int64_t>(j) * J;
    const acc_t* mh1_s = s_mh1 + s * J * kTileC + tx;  // column tx of sample s's rows
    acc_t agg = 0;
    for (int k = 0; k < J; ++k)
      if (k != j) agg += a_j[k] * mh1_s[k * kTileC];  // the own joint goes through w0, not w1
    const acc_t pre = a_j[j] * (m[j * Cout + c] * H[row * ld_h + c]) + agg + bias[c];
    acc_t scale = 0, shift = 0;
    if (ss != nullptr) {
      scale = static_cast<acc_t>(ss[b * ss_stride + c]);
      shift = static_cast<acc_t>(ss[b * ss_stride + Cout + c]);
    }
    acc_t u = mgcn_epilogue_fwd<acc_t>(pre, scale, shift, act);
    const int64_t e = row * Cout + c;
    if (res != nullptr) u += static_cast<acc_t>(res[e]);
    out[e] = static_cast<scalar_t>(u);
    if (pre_out != nullptr) pre_out[e] = static_cast<scalar_t>(pre);
  }
}

// Backward of the aggregation and the epilogue, for the tile of the forward (spb whole samples x
// kTileC channels). With dpre = dL/dpre, dG0_j = a_jj dpre_j, dG1_k = sum_{j != k} a_jk dpre_j:
//   dH[row] = [m_j * dG0_j, m_j * dG1_j]                       (dL/dH0, dL/dH1; for the GEMMs)
//   dm_j    = sum_b dG0_j * H0_j + dG1_j * H1_j
//   da_jk   = sum_{b, c} dpre_j * m_k * H1_k  (j != k),   da_jj = sum_{b, c} dpre_j * m_j * H0_j
//   dbias   = sum_{b, j} dpre;  dscale_b = sum_j dz * pre,  dshift_b = sum_j dz
// Inputs: g (grad_out), pre [R, Cout] scalar_t; H [R, 2*Cout], m [J, Cout], a [J, J] acc_t;
// ss as in the forward. Outputs, for grid (P, Q) = (ceil(B / spb), ceil(Cout / kTileC)), all acc_t
// and every element written exactly once: dH [R, 2*Cout]; dss [B, 2, Cout] (per-sample sums, only
// with ss); dbias_part [P, Cout]; dm_part [P, J, Cout]; da_part [P, Q, J, J].
// Block (kTileC, kWarps); dynamic shared memory 2 * spb * J * kLd acc_t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    mgcn_bwd_agg_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ pre,
                        const acc_t* __restrict__ H, const acc_t* __restrict__ m, const acc_t* __restrict__ a,
                        const scalar_t* __restrict__ ss, int64_t ss_stride, acc_t* __restrict__ dH,
                        acc_t* __restrict__ dss, acc_t* __restrict__ dbias_part, acc_t* __restrict__ dm_part,
                        acc_t* __restrict__ da_part, int64_t B, int J, int64_t Cout, int spb, int act) {
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  acc_t* s_dpre = reinterpret_cast<acc_t*>(smem_raw);  // [spb * J, kLd] dL/dpre
  acc_t* s_mh1 = s_dpre + spb * J * kLd;               // [spb * J, kLd] m * H1
  __shared__ acc_t s_red[kWarps][kTileC];              // dbias: one partial per warp

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t p = blockIdx.x;
  const int64_t q = blockIdx.y;
  const int64_t b0 = p * spb;
  const int ns = static_cast<int>(B - b0 < spb ? B - b0 : spb);  // the last tile may be partial
  const int64_t c = q * kTileC + tx;
  const bool c_ok = c < Cout;
  const int64_t ld_h = 2 * Cout;
  // out-of-range channels keep zeros in shared memory, so the da sums need no channel mask

  // A. Epilogue backward, one sample per warp at a time: the warp runs over the sample's J rows,
  //    so dscale / dshift of (sample, channel) are sums in registers, in joint order.
  for (int s = ty; s < ns; s += kWarps) {
    const int64_t b = b0 + s;
    acc_t scale = 0, shift = 0;
    if (ss != nullptr && c_ok) {
      scale = static_cast<acc_t>(ss[b * ss_stride + c]);
      shift = static_cast<acc_t>(ss[b * ss_stride + Cout + c]);
    }
    acc_t dscale = 0, dshift = 0;
    for (int j = 0; j < J; ++j) {
      const int r = s * J + j;
      const int64_t row = b * J + j;
      acc_t dpre = 0, mh1 = 0;
      if (c_ok) {
        const int64_t e = row * Cout + c;
        const acc_t pre_v = static_cast<acc_t>(pre[e]);
        const MgcnEpilogueGrad<acc_t> gr = mgcn_epilogue_bwd<acc_t>(static_cast<acc_t>(g[e]), pre_v, scale, shift, act);
        dpre = gr.dpre;
        dscale += gr.dz * pre_v;
        dshift += gr.dz;
        mh1 = m[j * Cout + c] * H[row * ld_h + Cout + c];
      }
      s_dpre[r * kLd + tx] = dpre;
      s_mh1[r * kLd + tx] = mh1;
    }
    if (ss != nullptr && c_ok) {
      dss[b * 2 * Cout + c] = dscale;
      dss[b * 2 * Cout + Cout + c] = dshift;
    }
  }
  __syncthreads();

  // B. dH, dm, da's diagonal and dbias, one joint per warp at a time: the warp runs over the
  //    tile's samples, so dm_j of its channels is a sum in registers, in sample order.
  acc_t dbias = 0;
  for (int j = ty; j < J; j += kWarps) {  // warp-uniform: every lane reaches warp_sum
    const acc_t a_jj = a[static_cast<int64_t>(j) * J + j];
    const acc_t m_j = c_ok ? m[j * Cout + c] : acc_t(0);
    acc_t dm = 0, dd = 0;
    for (int s = 0; s < ns; ++s) {
      const acc_t* dpre_s = s_dpre + s * J * kLd + tx;  // column tx of sample s's rows
      const acc_t dpre = dpre_s[j * kLd];
      acc_t dg1 = 0;  // dG1_j = sum_{k != j} a_kj dpre_k: a^T, as j is the source joint here
      for (int k = 0; k < J; ++k)
        if (k != j) dg1 += a[static_cast<int64_t>(k) * J + j] * dpre_s[k * kLd];
      const acc_t dg0 = a_jj * dpre;
      dbias += dpre;
      if (c_ok) {
        const int64_t row = (b0 + s) * J + j;
        const acc_t h0 = H[row * ld_h + c], h1 = H[row * ld_h + Cout + c];
        dH[row * ld_h + c] = m_j * dg0;
        dH[row * ld_h + Cout + c] = m_j * dg1;
        dm += dg0 * h0 + dg1 * h1;
        dd += dpre * m_j * h0;
      }
    }
    if (c_ok) dm_part[(p * J + j) * Cout + c] = dm;
    dd = warp_sum(dd);  // over the tile's channels (zeros beyond Cout)
    if (tx == 0) da_part[((p * gridDim.y + q) * J + j) * J + j] = dd;
  }
  s_red[ty][tx] = dbias;
  __syncthreads();
  if (ty == 0 && c_ok) {
    acc_t sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += s_red[w][tx];
    dbias_part[p * Cout + c] = sum;
  }

  // C. da's off-diagonal: one (j, k) pair per thread, sum over the tile's samples and channels of
  //    dpre_j * (m * H1)_k. Consecutive threads take consecutive k: rows kLd apart, distinct banks.
  const int tid = ty * kTileC + tx;
  for (int idx = tid; idx < J * J; idx += kThreads) {
    const int j = idx / J, k = idx - j * J;
    if (j == k) continue;  // written in B
    acc_t acc = 0;
    for (int s = 0; s < ns; ++s) {
      const acc_t* dp = s_dpre + (s * J + j) * kLd;
      const acc_t* mh = s_mh1 + (s * J + k) * kLd;
#pragma unroll 8
      for (int cc = 0; cc < kTileC; ++cc) acc += dp[cc] * mh[cc];
    }
    da_part[((p * gridDim.y + q) * J + j) * J + k] = acc;
  }
}

// ------------------------------------------------------------------------------------------------
// launchers
// ------------------------------------------------------------------------------------------------
// Row-major C = op(A) @ op(B) for `batch` matrices `sa`, `sb`, `sc` elements apart (op = transpose
// where ta / tb: A is then stored [k, m], B [n, k]), through cuBLAS in T's own precision:
// COMPUTE_32F_PEDANTIC never uses TF32, whatever torch.backends.cuda.matmul.allow_tf32 (or
// set_float32_matmul_precision) says: the op's contract is fp32 accumulation of fp32 products, and
// at::matmul would follow the global switch. cuBLAS is column-major, so it computes C^T = op(B)^T op(A)^T.
template <typename T>
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, int64_t sa, const T* B,
             int64_t ldb, int64_t sb, T* C, int64_t ldc, int64_t sc, int64_t batch, T beta) {
  if (m == 0 || n == 0 || batch == 0) return;
  TORCH_CHECK(k > 0, "mgcn (cuda): internal GEMM with k = 0");  // callers handle empty reductions
  constexpr bool f64 = std::is_same<T, double>::value;
  const T alpha = T(1);
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream, graph-safe workspace
  TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
      static_cast<int>(k), &alpha, B, f64 ? CUDA_R_64F : CUDA_R_32F, static_cast<int>(ldb), sb, A,
      f64 ? CUDA_R_64F : CUDA_R_32F, static_cast<int>(lda), sa, &beta, C, f64 ? CUDA_R_64F : CUDA_R_32F,
      static_cast<int>(ldc), sc, static_cast<int>(batch), f64 ? CUBLAS_COMPUTE_64F_PEDANTIC : CUBLAS_COMPUTE_32F_PEDANTIC,
      CUBLAS_GEMM_DEFAULT));
}

// H [R, 2*Cout] = x2 [R, Cin] @ [w0 | w1], one strided-batched GEMM (batch t writes columns
// [t*Cout, (t+1)*Cout)): w is read in its own [2, Cin, Cout] layout, with no packed copy.
at::Tensor gemm_xw(const at::Tensor& x2, const at::Tensor& w) {
  const int64_t R = x2.size(0), Cin = x2.size(1), Cout = w.size(2);
  at::Tensor H = at::empty({R, 2 * Cout}, x2.options());
  if (Cin == 0) return H.zero_();
  AT_DISPATCH_FLOATING_TYPES(x2.scalar_type(), "mgcn_gemm_xw", [&] {
    gemm_rm<scalar_t>(false, false, R, Cout, Cin, x2.data_ptr<scalar_t>(), Cin, 0, w.data_ptr<scalar_t>(), Cout,
                      Cin * Cout, H.data_ptr<scalar_t>(), 2 * Cout, Cout, 2, scalar_t(0));
  });
  return H;
}

void check_joints(int64_t J, at::ScalarType acc) {
  const int64_t max_j = acc == at::kDouble ? max_joints<double>() : max_joints<float>();
  TORCH_CHECK(J <= max_j, "mgcn (cuda): at most ", max_j, " joints per sample for ",
              acc == at::kDouble ? "float64" : "float32/float16/bfloat16",
              " inputs (a block keeps whole samples in shared memory), got ", J);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mgcn_fwd_cuda(const at::Tensor& x_, const at::Tensor& w, const at::Tensor& m_,
                                                 const at::Tensor& a_, const at::Tensor& bias_,
                                                 const c10::optional<at::Tensor>& scale_shift,
                                                 const c10::optional<at::Tensor>& residual, int64_t act,
                                                 bool save_pre) {
  const MgcnDims d = check_mgcn_args(x_, w, m_, a_, scale_shift, act);
  check_mgcn_fwd_args(d, x_, bias_, residual);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::ScalarType acc = x_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_joints(d.J, acc);

  const at::Tensor x = x_.contiguous();
  at::Tensor out = at::empty({d.B, d.J, d.Cout}, x.options());
  at::Tensor pre = save_pre ? at::empty({d.B, d.J, d.Cout}, x.options()) : at::empty({0}, x.options());
  if (out.numel() == 0)  // empty batch (or J / Cout = 0): nothing to launch
    return {out, pre, save_pre ? at::empty({d.B * d.J, 2 * d.Cout}, x.options().dtype(acc)) : at::empty({0}, x.options())};

  // Parameters in the accumulation dtype: tiny ([J, Cout], [J, J], [Cout]), and it spares the
  // kernels a template parameter per parameter dtype.
  const at::Tensor m = m_.to(acc).contiguous(), a = a_.to(acc).contiguous(), bias = bias_.to(acc).contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->contiguous() : at::Tensor();
  // the GEMM operands in the accumulation dtype (no-ops for fp32 x and parameters)
  const at::Tensor x2 = x.reshape({d.B * d.J, d.Cin}).to(acc), wa = w.to(acc).contiguous();
  const at::Tensor H = gemm_xw(x2, wa);  // [R, 2*Cout]: kept for the backward when training

  const int spb = samples_per_block(d.J);
  const dim3 grid(static_cast<unsigned>((d.B + spb - 1) / spb), static_cast<unsigned>((d.Cout + kTileC - 1) / kTileC));
  const dim3 block(kTileC, kWarps);
  const int64_t ss_stride = d.ss_rows > 1 ? 2 * d.Cout : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = static_cast<size_t>(spb) * d.J * kTileC * sizeof(acc_t);
    mgcn_fwd_epilogue_kernel<scalar_t, acc_t><<<grid, block, smem, stream>>>(
        H.data_ptr<acc_t>(), m.data_ptr<acc_t>(), a.data_ptr<acc_t>(), bias.data_ptr<acc_t>(),
        ss.defined() ? ss.data_ptr<scalar_t>() : nullptr, ss_stride, res.defined() ? res.data_ptr<scalar_t>() : nullptr,
        out.data_ptr<scalar_t>(), save_pre ? pre.data_ptr<scalar_t>() : nullptr, d.B, static_cast<int>(d.J), d.Cout,
        spb, static_cast<int>(act));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, pre, save_pre ? H : at::empty({0}, x.options())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mgcn_bwd_cuda(
    const at::Tensor& grad_out_, const at::Tensor& x_, const at::Tensor& w, const at::Tensor& m_, const at::Tensor& a_,
    const at::Tensor& pre_, const at::Tensor& h_, const c10::optional<at::Tensor>& scale_shift, int64_t act) {
  const MgcnDims d = check_mgcn_args(x_, w, m_, a_, scale_shift, act);
  const int64_t R = d.B * d.J;
  const bool empty = R == 0 || d.Cout == 0;  // nothing flows back; pre is legitimately empty then
  if (!empty) {
    check_mgcn_bwd_args(d, grad_out_, pre_, h_);
  } else {  // the shared check rejects an empty pre, which is all an empty batch can save
    TORCH_CHECK(grad_out_.dim() == 3 && grad_out_.size(0) == d.B && grad_out_.size(1) == d.J &&
                    grad_out_.size(2) == d.Cout,
                "mgcn_bwd: grad_out and pre must be [", d.B, ", ", d.J, ", ", d.Cout, "], got ", grad_out_.sizes());
  }
  for (const at::Tensor* t : {&grad_out_, &pre_})
    TORCH_CHECK(t->device() == x_.device(), "mgcn: all inputs must be on ", x_.device());
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::ScalarType acc = x_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_joints(d.J, acc);

  const at::Tensor x = x_.contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->contiguous() : at::Tensor();
  if (empty) {
    return {at::zeros(x.sizes(), x.options()),          at::zeros(w.sizes(), w.options()),
            at::zeros(m_.sizes(), m_.options()),        at::zeros(a_.sizes(), a_.options()),
            at::zeros({d.Cout}, w.options()),
            ss.defined() ? at::zeros(ss.sizes(), ss.options()) : at::empty({0}, x.options())};
  }

  // grad_out and pre are read as x's dtype (they are, coming from mgcn_fwd: .to is then a no-op)
  const at::Tensor g = grad_out_.to(x.scalar_type()).contiguous(), pre = pre_.to(x.scalar_type()).contiguous();
  const at::Tensor m = m_.to(acc).contiguous(), a = a_.to(acc).contiguous();
  const at::Tensor x2 = x.reshape({R, d.Cin}).to(acc), wa = w.to(acc).contiguous();
  const at::Tensor H = h_.numel() > 0 ? h_.to(acc).contiguous() : gemm_xw(x2, wa);  // [R, 2*Cout], kept or recomputed

  const int spb = samples_per_block(d.J);
  const int64_t P = (d.B + spb - 1) / spb, Q = (d.Cout + kTileC - 1) / kTileC;
  const auto f = x.options().dtype(acc);
  at::Tensor dH = at::empty({R, 2 * d.Cout}, f);
  at::Tensor dss = ss.defined() ? at::empty({d.B, 2, d.Cout}, f) : at::Tensor();
  at::Tensor dbias_part = at::empty({P, d.Cout}, f);
  at::Tensor dm_part = at::empty({P, d.J, d.Cout}, f);
  at::Tensor da_part = at::empty({P, Q, d.J, d.J}, f);

  const dim3 grid(static_cast<unsigned>(P), static_cast<unsigned>(Q));
  const dim3 block(kTileC, kWarps);
  const int64_t ss_stride = d.ss_rows > 1 ? 2 * d.Cout : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 2 * static_cast<size_t>(spb) * d.J * kLd * sizeof(acc_t);
    mgcn_bwd_agg_kernel<scalar_t, acc_t><<<grid, block, smem, stream>>>(
        g.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(), H.data_ptr<acc_t>(), m.data_ptr<acc_t>(),
        a.data_ptr<acc_t>(), ss.defined() ? ss.data_ptr<scalar_t>() : nullptr, ss_stride, dH.data_ptr<acc_t>(),
        dss.defined() ? dss.data_ptr<acc_t>() : nullptr, dbias_part.data_ptr<acc_t>(), dm_part.data_ptr<acc_t>(),
        da_part.data_ptr<acc_t>(), d.B, static_cast<int>(d.J), d.Cout, spb, static_cast<int>(act));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // H_t = x2 @ w_t  =>  dx2 = sum_t dH_t @ w_t^T [R, Cin],  dw_t = x2^T @ dH_t [Cin, Cout]
  at::Tensor dx2 = at::empty({R, d.Cin}, f);
  at::Tensor dw_acc = at::empty({2, d.Cin, d.Cout}, f);
  if (d.Cin > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc, "mgcn_bwd_gemms", [&] {
      const scalar_t* dHp = dH.data_ptr<scalar_t>();
      const scalar_t* wp = wa.data_ptr<scalar_t>();
      for (int t = 0; t < 2; ++t)  // the second term accumulates onto the first (beta = 1)
        gemm_rm<scalar_t>(false, true, R, d.Cin, d.Cout, dHp + t * d.Cout, 2 * d.Cout, 0, wp + t * d.Cin * d.Cout,
                          d.Cout, 0, dx2.data_ptr<scalar_t>(), d.Cin, 0, 1, scalar_t(t));
      gemm_rm<scalar_t>(true, false, d.Cin, d.Cout, R, x2.data_ptr<scalar_t>(), d.Cin, 0, dHp, 2 * d.Cout, d.Cout,
                        dw_acc.data_ptr<scalar_t>(), d.Cout, d.Cin * d.Cout, 2, scalar_t(0));
    });
  }
  const at::Tensor dx = dx2.view({d.B, d.J, d.Cin}).to(x.scalar_type());
  const at::Tensor dw = dw_acc.to(w.scalar_type());
  const at::Tensor dm = dm_part.sum(0).to(m_.scalar_type());
  const at::Tensor da = da_part.sum(at::IntArrayRef{0, 1}).to(a_.scalar_type());
  const at::Tensor dbias = dbias_part.sum(0).to(w.scalar_type());
  at::Tensor dss_out = at::empty({0}, x.options());
  if (ss.defined()) dss_out = (d.ss_rows == 1 ? dss.sum(0, /*keepdim=*/true) : dss).to(x.scalar_type());
  return {dx, dw, dm, da, dbias, dss_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CUDA, m) {
  m.impl("mgcn_fwd", &mgcn_fwd_cuda);
  m.impl("mgcn_bwd", &mgcn_bwd_cuda);
}

}  // namespace diffupose
