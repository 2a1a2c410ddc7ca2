"""Training-mode batch norm with the graph convolution's epilogue: the reference, the op, the autograd.

For pre [B, J, C] (leading dims of the public function are flattened into B), n = B * J rows:

    mean, var = pre's per-channel mean and biased variance over the n rows
    out = act(((pre - mean) * rsqrt(var + eps) * gamma + beta) * (1 + scale) + shift) + residual

gamma, beta [C]; scale_shift [1 or B, 2, C] the timestep scale-shift, residual [B, J, C], act in
ACTIVATIONS. It is what follows `mgcn(..., act="none")` in a training layer with a batch norm
(diffupose/layers.py): at inference the norm is folded into the convolution's weights and this op
is not needed. The running statistics are the caller's (ChannelBatchNorm.forward_fused updates
them from the returned mean and var).

Implementations: `norm_act_ref` (plain PyTorch) and `diffupose::norm_act_fwd/_bwd` (the C++ CPU
kernel, csrc/norm_act_cpu.cpp). There is no CUDA or Triton kernel yet: on a GPU the reference runs
(under torch.compile it fuses there as well as a hand kernel would for these element-wise passes).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backend as _backend
from .mgcn import ACTIVATIONS, epilogue_ref
from .registry import wired_cpp_op


# ---------------------------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------------------------
def norm_act_ref(pre: Tensor, gamma: Tensor, beta: Tensor, scale_shift: Optional[Tensor] = None,
                 residual: Optional[Tensor] = None, act: str = "none", eps: float = 1e-5
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Plain PyTorch in pre.dtype, pre [B, J, C] -> (out, mean [C], var [C] biased)."""
    dt = pre.dtype
    flat = pre.reshape(-1, pre.shape[-1])
    mean = flat.mean(0)
    var = flat.var(0, unbiased=False)
    h = (pre - mean) * torch.rsqrt(var + eps) * gamma.to(dt) + beta.to(dt)
    return epilogue_ref(h, scale_shift, residual, act), mean, var


# ---------------------------------------------------------------------------------------------
# fake kernels and autograd
# ---------------------------------------------------------------------------------------------
def _fwd_fake(pre, gamma, beta, scale_shift, residual, act, eps):
    opmath = torch.float64 if pre.dtype == torch.float64 else torch.float32
    C = pre.shape[-1]
    return pre.new_empty(pre.shape), pre.new_empty(C, dtype=opmath), pre.new_empty(C, dtype=opmath)


def _bwd_fake(grad_out, pre, gamma, beta, mean, var, scale_shift, act, eps):
    dss = scale_shift.new_empty(scale_shift.shape) if scale_shift is not None else pre.new_empty(0)
    return pre.new_empty(pre.shape), gamma.new_empty(gamma.shape), beta.new_empty(beta.shape), dss


def _setup_context(ctx, inputs, output):
    pre, gamma, beta, scale_shift, residual, act, eps = inputs
    _, mean, var = output
    ctx.save_for_backward(pre, gamma, beta, mean, var, scale_shift)
    ctx.mark_non_differentiable(mean, var)  # statistics for the running averages, not a result
    ctx.set_materialize_grads(False)  # no zero gradients allocated for them (see ops/mgcn.py)
    ctx.act, ctx.eps, ctx.has_residual = act, eps, residual is not None


def _backward(ctx, grad_out, _grad_mean, _grad_var):
    pre, gamma, beta, mean, var, scale_shift = ctx.saved_tensors
    if grad_out is None:  # out did not reach the loss (grads are not materialised)
        return (None,) * 7
    dpre, dgamma, dbeta, dss = torch.ops.diffupose.norm_act_bwd(grad_out.contiguous(), pre, gamma, beta, mean, var,
                                                                scale_shift, ctx.act, ctx.eps)
    return (dpre, dgamma, dbeta, dss if scale_shift is not None else None,
            grad_out if ctx.has_residual else None, None, None)


def _cpp_op():
    return wired_cpp_op("norm_act_fwd", "norm_act_bwd", _fwd_fake, _bwd_fake, _backward, _setup_context)


# ---------------------------------------------------------------------------------------------
# the public op
# ---------------------------------------------------------------------------------------------
def check_norm_args(op: str, x: Tensor, B: int, J: int, C: int, gamma: Tensor, beta: Tensor,
                    scale_shift: Optional[Tensor]) -> Optional[Tensor]:
    """The training batch norm's arguments (norm_act, mgcn_norm): more than one row, gamma and beta
    [C], scale_shift [1 or B, 2, C] (returned in x's dtype: activations travel in it)."""
    if B * J < 2:
        raise ValueError(f"{op}: a batch norm in training needs more than one row per channel, got {tuple(x.shape)}")
    if tuple(gamma.shape) != (C,) or tuple(beta.shape) != (C,):
        raise ValueError(f"{op}: gamma and beta must be [{C}], got {tuple(gamma.shape)}, {tuple(beta.shape)}")
    if scale_shift is None:
        return None
    if scale_shift.dim() != 3 or scale_shift.shape[1:] != (2, C) or scale_shift.shape[0] not in (1, B):
        raise ValueError(f"{op}: scale_shift must be [1 or {B}, 2, {C}], got {tuple(scale_shift.shape)}")
    return scale_shift.to(x.dtype)


def norm_act(pre: Tensor, gamma: Tensor, beta: Tensor, scale_shift: Optional[Tensor] = None,
             residual: Optional[Tensor] = None, act: str = "none", eps: float = 1e-5,
             backend: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm (batch statistics) + scale-shift + act + residual, pre [..., J, C] -> (out, mean, var)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"norm_act: unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    if pre.dim() < 2:
        raise ValueError(f"norm_act: pre must be [..., J, C], got {tuple(pre.shape)}")
    J, C = pre.shape[-2:]
    pre3 = pre.reshape(-1, J, C)
    B = pre3.shape[0]
    scale_shift = check_norm_args("norm_act", pre, B, J, C, gamma, beta, scale_shift)
    if residual is not None:
        if tuple(residual.shape) != tuple(pre.shape):
            raise ValueError(f"norm_act: residual must be {tuple(pre.shape)}, got {tuple(residual.shape)}")
        residual = residual.reshape(B, J, C).to(pre.dtype)
    # the C++ kernel is CPU-only: every other backend (cuda, triton, reference) runs the reference
    if _backend.resolve(backend, pre.device) == "cpu":
        out, mean, var = _cpp_op()(pre3.contiguous(), gamma, beta, scale_shift, residual, ACTIVATIONS[act], eps)
    else:
        out, mean, var = norm_act_ref(pre3, gamma, beta, scale_shift, residual, act, eps)
    return out.reshape(pre.shape), mean, var


if _backend.has_extension():  # register fake + autograd now, so direct torch.ops calls see them
    _cpp_op()
