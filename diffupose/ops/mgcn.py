"""Modulated graph convolution with a fused epilogue: the reference, the ops, the autograd.

For x [B, J, C_in] (leading dims of the public function are flattened into B):

    pre = diag(a)[:, None] * (m * (x @ w[0])) + offdiag(a) @ (m * (x @ w[1])) + bias
    out = act(pre * (1 + scale) + shift) + residual

w [2, C_in, C_out] (w[0] a joint's own feature, w[1] its neighbours'), m [J, C_out] the
joint-specific modulation (applied at the source joint, after the shared mapping), a [J, J] the
modulated affinity (already symmetrised and normalised: the cheap J x J work stays in PyTorch,
see diffupose/layers.py), bias [C_out], scale_shift [1 or B, 2, C_out] the timestep
scale-shift, residual [B, J, C_out], act in ACTIVATIONS.

A normalisation folded for inference (per-channel affine) needs no epilogue slot: it is exact to
fold it into w (both halves, per output channel) and bias on the host.

Implementations: `mgcn_ref` (plain PyTorch), `diffupose::mgcn_fwd/_bwd` (C++ CPU and CUDA
kernels, csrc/), `diffupose::mgcn_fwd_triton/_bwd_triton` (kernels/mgcn.py). All share the fake
kernels and the autograd formula below; `mgcn()` picks one through the backend switch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backend as _backend
from .registry import cpp_op, register_once

ACTIVATIONS = {"none": 0, "relu": 1, "silu": 2}


# ---------------------------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------------------------
def activation_ref(u: Tensor, act: str) -> Tensor:
    if act == "none":
        return u
    if act == "relu":
        return torch.relu(u)
    if act == "silu":
        return torch.nn.functional.silu(u)
    raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")


def epilogue_ref(pre: Tensor, scale_shift: Optional[Tensor] = None, residual: Optional[Tensor] = None,
                 act: str = "none") -> Tensor:
    """act(pre * (1 + scale) + shift) + residual, pre [B, J, C], scale_shift [1 or B, 2, C]: the
    fused epilogue of the graph convolution and of the training batch norm (norm_act.py)."""
    if scale_shift is not None:
        ss = scale_shift.to(pre.dtype)
        pre = pre * (1.0 + ss[:, 0, None, :]) + ss[:, 1, None, :]
    out = activation_ref(pre, act)
    return out if residual is None else out + residual


def mgcn_ref(x: Tensor, w: Tensor, m: Tensor, a: Tensor, bias: Tensor, scale_shift: Optional[Tensor] = None,
             residual: Optional[Tensor] = None, act: str = "none") -> Tensor:
    """Plain PyTorch, computed in x.dtype (parameters are cast to it), x [B, J, C_in]."""
    dt = x.dtype
    w, m, a, bias = w.to(dt), m.to(dt), a.to(dt), bias.to(dt)
    J = x.shape[-2]
    off = a * (1.0 - torch.eye(J, dtype=dt, device=x.device))
    pre = torch.diagonal(a)[:, None] * (m * (x @ w[0])) + off @ (m * (x @ w[1])) + bias
    return epilogue_ref(pre, scale_shift, residual, act)


# ---------------------------------------------------------------------------------------------
# fake kernels and autograd, shared by the C++ and Triton ops
# ---------------------------------------------------------------------------------------------
def _make_fwd_fake(keeps_h: bool):
    """The forward's fake for a kernel that keeps h = x @ [w0 | w1] [B*J, 2 C_out] (opmath) when
    training (the C++ kernels), or returns it empty (Triton: its GEMM never leaves the kernel)."""
    def fwd_fake(x, w, m, a, bias, scale_shift, residual, act, save_pre):
        B, J, _ = x.shape
        cout = w.shape[-1]
        out = x.new_empty(B, J, cout)
        pre = x.new_empty(B, J, cout) if save_pre else x.new_empty(0)
        opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
        h = x.new_empty(B * J, 2 * cout, dtype=opmath) if save_pre and keeps_h else x.new_empty(0)
        return out, pre, h

    return fwd_fake


def _bwd_fake(grad_out, x, w, m, a, pre, h, scale_shift, act):
    dss = scale_shift.new_empty(scale_shift.shape) if scale_shift is not None else x.new_empty(0)
    return (x.new_empty(x.shape), w.new_empty(w.shape), m.new_empty(m.shape), a.new_empty(a.shape),
            w.new_empty(w.shape[-1]), dss)


def _setup_context(ctx, inputs, output):
    x, w, m, a, bias, scale_shift, residual, act, save_pre = inputs
    _, pre, h = output
    ctx.save_for_backward(x, w, m, a, pre, h, scale_shift)
    # pre and h are saved state, not results: no gradients flow into them, and autograd must not
    # allocate and zero one per call for the backward (a [B J, 2 Cout] fill, ~1 ms a layer at d 128)
    ctx.mark_non_differentiable(pre, h)
    ctx.set_materialize_grads(False)
    ctx.act = act
    ctx.has_residual = residual is not None
    ctx.bias_dtype = bias.dtype
    ctx.save_pre = save_pre


def _make_backward(bwd_op):
    def backward(ctx, grad_out, _grad_pre, _grad_h):
        if not ctx.save_pre:
            raise RuntimeError("mgcn: backward through a forward run with save_pre=False; call diffupose.ops.mgcn "
                               "with grad enabled so the pre-activation is kept")
        x, w, m, a, pre, h, scale_shift = ctx.saved_tensors
        if grad_out is None:  # (grads are not materialised) out did not reach the loss
            return (None,) * 9
        dx, dw, dm, da, dbias, dss = bwd_op(grad_out.contiguous(), x, w, m, a, pre, h, scale_shift, ctx.act)
        return (dx, dw, dm, da, dbias.to(ctx.bias_dtype), dss if scale_shift is not None else None,
                grad_out if ctx.has_residual else None, None, None)

    return backward


def _wire(fwd_name: str, bwd_name: str, keeps_h: bool) -> None:
    torch.library.register_fake(fwd_name)(_make_fwd_fake(keeps_h))
    torch.library.register_fake(bwd_name)(_bwd_fake)
    bwd_op = getattr(torch.ops.diffupose, bwd_name.split("::")[1])
    torch.library.register_autograd(fwd_name, _make_backward(bwd_op), setup_context=_setup_context)


def _cpp_ops():
    fwd = cpp_op("mgcn_fwd")
    register_once("mgcn_cpp", lambda: _wire("diffupose::mgcn_fwd", "diffupose::mgcn_bwd", keeps_h=True))
    return fwd


def _define_triton_ops() -> None:
    from diffupose.kernels import mgcn as K  # imports triton

    @torch.library.custom_op("diffupose::mgcn_fwd_triton", mutates_args=())
    def mgcn_fwd_triton(x: Tensor, w: Tensor, m: Tensor, a: Tensor, bias: Tensor, scale_shift: Optional[Tensor],
                        residual: Optional[Tensor], act: int, save_pre: bool) -> tuple[Tensor, Tensor, Tensor]:
        out, pre = K.mgcn_fwd(x, w, m, a, bias, scale_shift, residual, act, save_pre)
        return out, pre, x.new_empty(0)  # the kernel's GEMM stays in registers: no h to keep

    @torch.library.custom_op("diffupose::mgcn_bwd_triton", mutates_args=())
    def mgcn_bwd_triton(grad_out: Tensor, x: Tensor, w: Tensor, m: Tensor, a: Tensor, pre: Tensor, h: Tensor,
                        scale_shift: Optional[Tensor], act: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        return K.mgcn_bwd(grad_out, x, w, m, a, pre, scale_shift, act)  # h: always empty (see the forward)

    _wire("diffupose::mgcn_fwd_triton", "diffupose::mgcn_bwd_triton", keeps_h=False)


def _triton_ops():
    register_once("mgcn_triton", _define_triton_ops)
    return torch.ops.diffupose.mgcn_fwd_triton


# ---------------------------------------------------------------------------------------------
# the public op
# ---------------------------------------------------------------------------------------------
def _check(x, w, m, a, bias, scale_shift, residual, act):
    if act not in ACTIVATIONS:
        raise ValueError(f"mgcn: unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    if x.dim() < 2:
        raise ValueError(f"mgcn: x must be [..., J, C_in], got {tuple(x.shape)}")
    J, cin = x.shape[-2:]
    if w.dim() != 3 or w.shape[0] != 2 or w.shape[1] != cin:
        raise ValueError(f"mgcn: w must be [2, {cin}, C_out] for x {tuple(x.shape)}, got {tuple(w.shape)}")
    cout = w.shape[2]
    if tuple(m.shape) != (J, cout):
        raise ValueError(f"mgcn: m must be [{J}, {cout}], got {tuple(m.shape)}")
    if tuple(a.shape) != (J, J):
        raise ValueError(f"mgcn: a must be [{J}, {J}], got {tuple(a.shape)}")
    if tuple(bias.shape) != (cout,):
        raise ValueError(f"mgcn: bias must be [{cout}], got {tuple(bias.shape)}")
    if residual is not None and tuple(residual.shape) != tuple(x.shape[:-1]) + (cout,):
        raise ValueError(f"mgcn: residual must be {tuple(x.shape[:-1]) + (cout,)}, got {tuple(residual.shape)}")


def mgcn(x: Tensor, w: Tensor, m: Tensor, a: Tensor, bias: Tensor, scale_shift: Optional[Tensor] = None,
         residual: Optional[Tensor] = None, act: str = "none", backend: Optional[str] = None) -> Tensor:
    """Fused modulated graph convolution, x [..., J, C_in] -> [..., J, C_out] (see module doc)."""
    _check(x, w, m, a, bias, scale_shift, residual, act)
    lead = x.shape[:-2]
    J, cout = x.shape[-2], w.shape[-1]
    x3 = x.reshape(-1, J, x.shape[-1])
    B = x3.shape[0]
    if scale_shift is not None:
        if scale_shift.dim() != 3 or scale_shift.shape[1:] != (2, cout) or scale_shift.shape[0] not in (1, B):
            raise ValueError(f"mgcn: scale_shift must be [1 or {B}, 2, {cout}], got {tuple(scale_shift.shape)}")
    # scale_shift and residual are activations: they travel in x's dtype (autograd casts back)
    if scale_shift is not None:
        scale_shift = scale_shift.to(x.dtype)
    res3 = residual.reshape(B, J, cout).to(x.dtype) if residual is not None else None
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        out = mgcn_ref(x3, w, m, a, bias, scale_shift, res3, act)
    else:
        op = _triton_ops() if name == "triton" else _cpp_ops()
        save_pre = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x3, w, m, a, bias, scale_shift, res3))
        out, _, _ = op(x3.contiguous(), w, m, a, bias, scale_shift, res3, ACTIVATIONS[act], save_pre)
    return out.reshape(*lead, J, cout)


if _backend.has_extension():  # register fake + autograd now, so direct torch.ops calls see them
    _cpp_ops()
