// The diffupose operator library: one schema per op. Kernels register themselves per
// dispatch key in their own files (mgcn_cpu.cpp, sampler_cpu.cpp, cuda/*.cu); the fake
// (meta) kernels and the autograd formulas are registered from Python (diffupose/ops/).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(diffupose, m) {
  // Modulated graph convolution with fused epilogue, for x [B, J, C_in]:
  //   pre = diag(a)[:, None] * (m * (x @ w[0])) + offdiag(a) @ (m * (x @ w[1])) + bias
  //   out = act(pre * (1 + scale) + shift) + residual,  (scale, shift) = scale_shift[b or 0]
  // w [2, C_in, C_out], m [J, C_out], a [J, J], bias [C_out], scale_shift [1 or B, 2, C_out],
  // residual [B, J, C_out]; act: 0 none, 1 relu, 2 silu. `pre` is written only when
  // save_pre (training), else it is an empty tensor. `h` = x @ [w[0] | w[1]] [B * J, 2 C_out] in
  // the accumulation dtype (float32, float64 for float64 x), the GEMM's output kept for the
  // backward when save_pre by the kernels that materialise it (CPU, CUDA); else empty.
  m.def("mgcn_fwd(Tensor x, Tensor w, Tensor m, Tensor a, Tensor bias, Tensor? scale_shift, "
        "Tensor? residual, int act, bool save_pre) -> (Tensor out, Tensor pre, Tensor h)");
  // Gradients of mgcn_fwd from grad_out and the saved pre and h (h empty: computed again):
  // (dx, dw, dm, da, dbias, dscale_shift); dscale_shift is empty when scale_shift is None. The
  // residual's gradient is grad_out itself.
  m.def("mgcn_bwd(Tensor grad_out, Tensor x, Tensor w, Tensor m, Tensor a, Tensor pre, Tensor h, "
        "Tensor? scale_shift, int act) -> (Tensor dx, Tensor dw, Tensor dm, Tensor da, "
        "Tensor dbias, Tensor dscale_shift)");
  // mgcn_fwd (act none, no scale_shift or residual) then norm_act_fwd on its out, as one op (a
  // training layer with a batch norm; CPU kernel only, csrc/mgcn_cpu.cpp): out as norm_act_fwd's,
  // pre = the convolution's out (the norm's input), h as mgcn_fwd keeps it, mean and var as
  // norm_act_fwd's.
  m.def("mgcn_norm_fwd(Tensor x, Tensor w, Tensor m, Tensor a, Tensor bias, Tensor gamma, Tensor beta, "
        "Tensor? scale_shift, Tensor? residual, int act, float eps) -> (Tensor out, Tensor pre, Tensor h, "
        "Tensor mean, Tensor var)");
  // Its gradients: (dx, dw, dm, da, dbias, dgamma, dbeta, dscale_shift), dscale_shift empty without
  // a scale_shift; the residual's gradient is grad_out itself.
  m.def("mgcn_norm_bwd(Tensor grad_out, Tensor x, Tensor w, Tensor m, Tensor a, Tensor pre, Tensor h, "
        "Tensor gamma, Tensor beta, Tensor mean, Tensor var, Tensor? scale_shift, int act, float eps) -> "
        "(Tensor dx, Tensor dw, Tensor dm, Tensor da, Tensor dbias, Tensor dgamma, Tensor dbeta, Tensor dscale_shift)");
  // Training-mode batch norm over the B*J rows of pre [B, J, C] with the epilogue of mgcn_fwd:
  //   out = act(((pre - mean) * rsqrt(var + eps) * gamma + beta) * (1 + scale) + shift) + residual
  // mean, var: the batch's per-channel mean and biased variance [C], in the accumulation dtype
  // (the caller updates its running statistics from them). CPU kernel only: csrc/norm_act_cpu.cpp.
  m.def("norm_act_fwd(Tensor pre, Tensor gamma, Tensor beta, Tensor? scale_shift, Tensor? residual, "
        "int act, float eps) -> (Tensor out, Tensor mean, Tensor var)");
  // Gradients of norm_act_fwd: (dpre, dgamma, dbeta, dscale_shift), dscale_shift empty without a
  // scale_shift; the residual's gradient is grad_out itself.
  m.def("norm_act_bwd(Tensor grad_out, Tensor pre, Tensor gamma, Tensor beta, Tensor mean, Tensor var, "
        "Tensor? scale_shift, int act, float eps) -> (Tensor dpre, Tensor dgamma, Tensor dbeta, Tensor dscale_shift)");
  // One DDIM/DDPM step for x [M, J, D] (M = B * n_hyp, hypotheses of a frame adjacent):
  //   x0 = clip((x - sqrt_1m_abar * eps) / sqrt_abar); eps' = (x - sqrt_abar * x0) / sqrt_1m_abar
  //   x_prev = c_x0 * x0 + c_eps * eps' + sigma * z
  // z = philox_normal(rng_state[0], rng_state[1] + counter_offset + i) for element i.
  // With aggregate, also the mean over the n_hyp hypotheses [B, J, D] and the per-joint
  // spread sqrt(mean_n |x_prev - mean|^2) [B, J]; otherwise those two are empty.
  m.def("sampler_step(Tensor x, Tensor eps, Tensor rng_state, int counter_offset, "
        "float sqrt_abar, float sqrt_1m_abar, float c_x0, float c_eps, float sigma, float clip, "
        "int n_hyp, bool aggregate) -> (Tensor x_prev, Tensor mean, Tensor spread)");
  // The whole sampler for y [B, J, 2] (diffupose/ops/sample.py packs the arguments): x_T and
  // every step's denoiser (input layer, blocks, eps channels of the out layer), the flip
  // average, the sampler update and the noise of sampler_step (counters rng_state[1] + e for
  // x_T, + (i + 1) * counter_stride + e at step i), optional root centring, the aggregation.
  // weights: per layer (input, conv1/conv2 of each block, out) w [C_in, 2 C_out] = [w0 | w1],
  // m [J, C_out], a [J, J], bias [C_out], float32 (out layer: C_out 3); film [steps, blocks, 2, d]
  // the scale-shifts; coefs 6 per step (StepCoefs); flip_perm [] or [J]. rng_state is not
  // advanced here. Returns float32 hyp [B, n_hyp, J, 3], mean [B, J, 3], spread [B, J].
  m.def("sample(Tensor y, Tensor[] weights, Tensor film, float[] coefs, Tensor rng_state, int n_hyp, "
        "int counter_stride, int[] flip_perm, int act, int root, bool center_root) "
        "-> (Tensor hyp, Tensor mean, Tensor spread)");
}

namespace diffupose {
bool set_mgcn_cpu_isa(const std::string& name);  // mgcn_cpu.cpp
bool set_mgcn_cpu_isa_limit(const std::string& name);
bool set_mgcn_group_gemm(bool on);
std::vector<int64_t> mgcn_cpu_isa_factory_calls();
std::string mgcn_cpu_isa();
std::vector<int64_t> sample_cpu_team_calls(bool reset);  // sample_cpu.cpp
}  // namespace diffupose

static bool with_cuda() {
#ifdef DIFFUPOSE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "diffupose fused kernels (ops are in torch.ops.diffupose)";
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled into this build");
  m.def("cpu_isa", &diffupose::mgcn_cpu_isa, "instruction set of the CPU graph convolution's epilogue rows");
  m.def("set_cpu_isa", &diffupose::set_mgcn_cpu_isa,
        "testing: use 'base', 'avx2' or 'avx512' rows; false if this CPU lacks it");
  m.def("set_cpu_isa_limit", &diffupose::set_mgcn_cpu_isa_limit,
        "testing: behave as a CPU whose widest instruction set is 'base', 'avx2' or 'avx512'");
  m.def("set_mgcn_group_gemm", &diffupose::set_mgcn_group_gemm, pybind11::arg("on"),
        "training's CPU graph convolution: GEMMs per group of samples in one parallel region (true, the "
        "default) or one threaded BLAS call (false); returns the previous setting (for the A/B benchmark)");
  m.def("cpu_isa_factory_calls", &diffupose::mgcn_cpu_isa_factory_calls,
        "testing: how often the base / avx2 / avx512 dispatch tables were built");
  m.def("sample_team_calls", &diffupose::sample_cpu_team_calls, pybind11::arg("reset") = false,
        "testing: CPU sample calls run by a team of threads, and of those that waited long at a barrier; "
        "reset: zero them and lift a back-off to one thread");
}
