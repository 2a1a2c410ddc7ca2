// Argument checks of mgcn_fwd / mgcn_bwd shared by the CPU and CUDA launchers, so both reject
// the same inputs with the same messages. The contract: csrc/ops.cpp and diffupose/ops/mgcn.py.
#pragma once
#include <torch/extension.h>

namespace diffupose {

struct MgcnDims {
  int64_t B, J, Cin, Cout, ss_rows;  // ss_rows: 0 without scale-shift, else 1 or B
};

inline MgcnDims check_mgcn_args(const at::Tensor& x, const at::Tensor& w, const at::Tensor& m, const at::Tensor& a,
                                const c10::optional<at::Tensor>& scale_shift, int64_t act) {
  TORCH_CHECK(x.dim() == 3, "mgcn: x must be [B, J, C_in], got ", x.sizes());
  const int64_t B = x.size(0), J = x.size(1), Cin = x.size(2);
  TORCH_CHECK(w.dim() == 3 && w.size(0) == 2 && w.size(1) == Cin, "mgcn: w must be [2, ", Cin, ", C_out], got ",
              w.sizes());
  const int64_t Cout = w.size(2);
  TORCH_CHECK(m.dim() == 2 && m.size(0) == J && m.size(1) == Cout, "mgcn: m must be [", J, ", ", Cout, "], got ",
              m.sizes());
  TORCH_CHECK(a.dim() == 2 && a.size(0) == J && a.size(1) == J, "mgcn: a must be [", J, ", ", J, "], got ", a.sizes());
  TORCH_CHECK(act >= 0 && act <= 2, "mgcn: act must be 0 (none), 1 (relu) or 2 (silu), got ", act);
  TORCH_CHECK(x.is_floating_point() && w.is_floating_point() && m.is_floating_point() && a.is_floating_point(),
              "mgcn: floating-point inputs expected");
  for (const at::Tensor* t : {&w, &m, &a})
    TORCH_CHECK(t->device() == x.device(), "mgcn: all inputs must be on ", x.device());
  int64_t ss_rows = 0;
  if (scale_shift.has_value()) {
    const at::Tensor& ss = *scale_shift;
    TORCH_CHECK(ss.dim() == 3 && (ss.size(0) == 1 || ss.size(0) == B) && ss.size(1) == 2 && ss.size(2) == Cout,
                "mgcn: scale_shift must be [1 or ", B, ", 2, ", Cout, "], got ", ss.sizes());
    TORCH_CHECK(ss.scalar_type() == x.scalar_type(), "mgcn: scale_shift must have x's dtype");
    TORCH_CHECK(ss.device() == x.device(), "mgcn: all inputs must be on ", x.device());
    ss_rows = ss.size(0);
  }
  return {B, J, Cin, Cout, ss_rows};
}

inline void check_mgcn_fwd_args(const MgcnDims& d, const at::Tensor& x, const at::Tensor& bias,
                                const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == d.Cout, "mgcn: bias must be [", d.Cout, "], got ", bias.sizes());
  TORCH_CHECK(bias.device() == x.device(), "mgcn: all inputs must be on ", x.device());
  if (residual.has_value()) {
    const at::Tensor& r = *residual;
    TORCH_CHECK(r.dim() == 3 && r.size(0) == d.B && r.size(1) == d.J && r.size(2) == d.Cout, "mgcn: residual must be [",
                d.B, ", ", d.J, ", ", d.Cout, "], got ", r.sizes());
    TORCH_CHECK(r.scalar_type() == x.scalar_type(), "mgcn: residual must have x's dtype");
    TORCH_CHECK(r.device() == x.device(), "mgcn: all inputs must be on ", x.device());
  }
}

inline void check_mgcn_bwd_args(const MgcnDims& d, const at::Tensor& grad_out, const at::Tensor& pre,
                                const at::Tensor& h) {
  // an empty batch saves an empty pre: that is not a forward run without save_pre
  TORCH_CHECK(pre.numel() > 0 || d.B * d.J * d.Cout == 0, "mgcn_bwd: pre is empty: run mgcn_fwd with save_pre=True for training");
  for (const at::Tensor* t : {&grad_out, &pre})
    TORCH_CHECK(t->dim() == 3 && t->size(0) == d.B && t->size(1) == d.J && t->size(2) == d.Cout,
                "mgcn_bwd: grad_out and pre must be [", d.B, ", ", d.J, ", ", d.Cout, "], got ", t->sizes());
  // h: the forward's x @ [w0 | w1], or empty (the backward computes it)
  TORCH_CHECK(h.numel() == 0 || (h.dim() == 2 && h.size(0) == d.B * d.J && h.size(1) == 2 * d.Cout &&
                                 h.device() == grad_out.device()),
              "mgcn_bwd: h must be empty or [", d.B * d.J, ", ", 2 * d.Cout, "] on ", grad_out.device(), ", got ",
              h.sizes());
}

}  // namespace diffupose
