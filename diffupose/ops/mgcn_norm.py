"""A training layer with a batch norm as one op: the graph convolution, then the batch norm and the
epilogue. The reference, the op, the autograd.

For x [B, J, C_in] (leading dims of the public function are flattened into B):

    pre = mgcn(x, w, m, a, bias)                      (ops/mgcn.py, act none: the norm's input)
    out, mean, var = norm_act(pre, gamma, beta, scale_shift, residual, act, eps)   (ops/norm_act.py)

It is what a `ModulatedGraphConv(norm="batch")` computes in training (diffupose/layers.py). Why an
op: as two ops the layer ran four parallel regions and five passes over [B, J, C] forward and
three more in the backward's norm; fused, the batch statistics accumulate while the convolution
writes each row, and the convolution's backward loads the norm's dpre as it goes
(csrc/mgcn_cpu.cpp). At inference the norm is folded into the convolution's weights and mgcn runs.

Implementations: `mgcn_norm_ref` (plain PyTorch: the two references) and
`diffupose::mgcn_norm_fwd/_bwd` (the C++ CPU kernel). Elsewhere (cuda, triton, reference) the
two ops run as before: mgcn on that backend, then norm_act (its reference off the CPU).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backend as _backend
from .mgcn import ACTIVATIONS, _check, mgcn, mgcn_ref
from .norm_act import check_norm_args, norm_act, norm_act_ref
from .registry import wired_cpp_op


# ---------------------------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------------------------
def mgcn_norm_ref(x: Tensor, w: Tensor, m: Tensor, a: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor,
                  scale_shift: Optional[Tensor] = None, residual: Optional[Tensor] = None, act: str = "none",
                  eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Plain PyTorch in x.dtype, x [B, J, C_in] -> (out, mean [C], var [C] biased)."""
    return norm_act_ref(mgcn_ref(x, w, m, a, bias), gamma, beta, scale_shift, residual, act, eps)


# ---------------------------------------------------------------------------------------------
# fake kernels and autograd
# ---------------------------------------------------------------------------------------------
def _fwd_fake(x, w, m, a, bias, gamma, beta, scale_shift, residual, act, eps):
    B, J, _ = x.shape
    cout = w.shape[-1]
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (x.new_empty(B, J, cout), x.new_empty(B, J, cout), x.new_empty(B * J, 2 * cout, dtype=opmath),
            x.new_empty(cout, dtype=opmath), x.new_empty(cout, dtype=opmath))


def _bwd_fake(grad_out, x, w, m, a, pre, h, gamma, beta, mean, var, scale_shift, act, eps):
    dss = scale_shift.new_empty(scale_shift.shape) if scale_shift is not None else x.new_empty(0)
    return (x.new_empty(x.shape), w.new_empty(w.shape), m.new_empty(m.shape), a.new_empty(a.shape),
            w.new_empty(w.shape[-1]), gamma.new_empty(gamma.shape), beta.new_empty(beta.shape), dss)


def _setup_context(ctx, inputs, output):
    x, w, m, a, bias, gamma, beta, scale_shift, residual, act, eps = inputs
    _, pre, h, mean, var = output
    ctx.save_for_backward(x, w, m, a, pre, h, gamma, beta, mean, var, scale_shift)
    # saved state and statistics, not results (see ops/mgcn.py): no gradients, none materialised
    ctx.mark_non_differentiable(pre, h, mean, var)
    ctx.set_materialize_grads(False)
    ctx.act, ctx.eps, ctx.has_residual, ctx.bias_dtype = act, eps, residual is not None, bias.dtype


def _backward(ctx, grad_out, _grad_pre, _grad_h, _grad_mean, _grad_var):
    x, w, m, a, pre, h, gamma, beta, mean, var, scale_shift = ctx.saved_tensors
    if grad_out is None:  # out did not reach the loss (grads are not materialised)
        return (None,) * 11
    dx, dw, dm, da, dbias, dgamma, dbeta, dss = torch.ops.diffupose.mgcn_norm_bwd(
        grad_out.contiguous(), x, w, m, a, pre, h, gamma, beta, mean, var, scale_shift, ctx.act, ctx.eps)
    return (dx, dw, dm, da, dbias.to(ctx.bias_dtype), dgamma, dbeta, dss if scale_shift is not None else None,
            grad_out if ctx.has_residual else None, None, None)


def _cpp_op():
    return wired_cpp_op("mgcn_norm_fwd", "mgcn_norm_bwd", _fwd_fake, _bwd_fake, _backward, _setup_context)


# ---------------------------------------------------------------------------------------------
# the public op
# ---------------------------------------------------------------------------------------------
def mgcn_norm(x: Tensor, w: Tensor, m: Tensor, a: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor,
              scale_shift: Optional[Tensor] = None, residual: Optional[Tensor] = None, act: str = "none",
              eps: float = 1e-5, backend: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Graph convolution + training batch norm + scale-shift + act + residual,
    x [..., J, C_in] -> (out [..., J, C_out], mean [C_out], var [C_out]) (see module doc)."""
    _check(x, w, m, a, bias, None, residual, act)
    J, cout = x.shape[-2], w.shape[-1]
    name = _backend.resolve(backend, x.device)
    if name != "cpu":  # the two ops, each on what this backend has
        pre = mgcn(x, w, m, a, bias, backend=name)
        return norm_act(pre, gamma, beta, scale_shift, residual, act, eps, backend=name)
    x3 = x.reshape(-1, J, x.shape[-1])
    B = x3.shape[0]
    scale_shift = check_norm_args("mgcn_norm", x, B, J, cout, gamma, beta, scale_shift)
    res3 = residual.reshape(B, J, cout).to(x.dtype) if residual is not None else None
    out, _, _, mean, var = _cpp_op()(x3.contiguous(), w, m, a, bias, gamma, beta, scale_shift, res3,
                                     ACTIVATIONS[act], eps)
    return out.reshape(*x.shape[:-1], cout), mean, var


if _backend.has_extension():  # register fake + autograd now, so direct torch.ops calls see them
    _cpp_op()
