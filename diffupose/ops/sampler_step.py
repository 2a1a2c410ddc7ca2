"""Fused sampler step (DDIM / DDPM) with in-kernel noise and last-step aggregation.

For x_t [M, J, D] (M = frames * n_hyp, a frame's hypotheses adjacent) and eps [M, J, D]:

    x0     = clip((x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t))     (clip <= 0: none)
    eps'   = (x_t - sqrt(abar_t) * x0) / sqrt(1 - abar_t)            (only when clipping)
    x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev - sigma^2) * eps' + sigma * z

z = philox_normal(seed, offset + counter_offset + i) for element i, with (seed, offset) read
from the int64 device tensor rng_state: advancing rng_state[1] between replays of a captured
CUDA graph gives fresh noise; resetting it reproduces a run. DDPM's ancestral step is the case
abar_prev = abar_{t-1}, sigma^2 = posterior variance (diffupose/diffusion.py makes the
coefficients). With aggregate=True the step also returns the mean over the n_hyp hypotheses
[frames, J, D] and the per-joint spread sqrt(mean_n |x - mean|^2) [frames, J].

Implementations: `sampler_step_ref` (PyTorch), `diffupose::sampler_step` (C++ CPU and CUDA,
csrc/), `diffupose::sampler_step_triton` (kernels/sampler.py). No gradient: it is inference only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from . import backend as _backend
from .philox import philox_normal_ref
from .registry import cpp_op, register_once


@dataclass(frozen=True)
class StepCoefs:
    """Scalars of one sampler step (Python floats: constant across replays of a graph)."""

    sqrt_abar: float
    sqrt_1m_abar: float
    c_x0: float
    c_eps: float
    sigma: float
    clip: float = 0.0

    def as_args(self) -> tuple[float, ...]:
        return (self.sqrt_abar, self.sqrt_1m_abar, self.c_x0, self.c_eps, self.sigma, self.clip)


NOISE_COEFS = StepCoefs(1.0, 1.0, 0.0, 0.0, 1.0, 0.0)
"""x_prev = z: the same op draws x_T ~ N(0, I) from the same counter-based generator."""


def sampler_step_ref(x: Tensor, eps: Tensor, rng_state: Tensor, counter_offset: int, coefs: StepCoefs,
                     n_hyp: int = 1, aggregate: bool = False):
    """Plain PyTorch, float32 math, outputs in x.dtype: (x_prev, mean or None, spread or None)."""
    c = coefs
    xf, ef = x.float(), eps.float()
    x0 = (xf - c.sqrt_1m_abar * ef) / c.sqrt_abar
    if c.clip > 0:
        x0 = x0.clamp(-c.clip, c.clip)
        ef = (xf - c.sqrt_abar * x0) / c.sqrt_1m_abar
    out = c.c_x0 * x0 + c.c_eps * ef
    if c.sigma != 0:
        # seed and offset stay on the device (no .tolist(), no host-made noise): this path may run
        # inside a captured CUDA graph, where a host sync or a host-to-device copy aborts capture
        rng = rng_state.reshape(2)
        counters = torch.arange(x.numel(), dtype=torch.int64, device=x.device) + (rng[1] + counter_offset)
        out = out + c.sigma * philox_normal_ref(rng[0], counters).reshape(x.shape)
    out = out.to(x.dtype)
    if not aggregate:
        return out, None, None
    hyp = out.float().reshape(-1, n_hyp, *x.shape[1:])
    mean = hyp.mean(1)
    spread = ((hyp - mean[:, None]) ** 2).sum(-1).mean(1).sqrt()
    return out, mean.to(x.dtype), spread.to(x.dtype)


def _fake(x, eps, rng_state, counter_offset, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, n_hyp, aggregate):
    if aggregate:
        frames = x.shape[0] // n_hyp
        return x.new_empty(x.shape), x.new_empty(frames, *x.shape[1:]), x.new_empty(frames, x.shape[1])
    return x.new_empty(x.shape), x.new_empty(0), x.new_empty(0)


def _cpp_op():
    op = cpp_op("sampler_step")
    register_once("sampler_cpp", lambda: torch.library.register_fake("diffupose::sampler_step")(_fake))
    return op


def _define_triton_op() -> None:
    from diffupose.kernels import sampler as K  # imports triton

    @torch.library.custom_op("diffupose::sampler_step_triton", mutates_args=())
    def sampler_step_triton(x: Tensor, eps: Tensor, rng_state: Tensor, counter_offset: int, sqrt_abar: float,
                            sqrt_1m_abar: float, c_x0: float, c_eps: float, sigma: float, clip: float, n_hyp: int,
                            aggregate: bool) -> tuple[Tensor, Tensor, Tensor]:
        return K.sampler_step(x, eps, rng_state, counter_offset, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip,
                              n_hyp, aggregate)

    torch.library.register_fake("diffupose::sampler_step_triton")(_fake)


def _triton_op():
    register_once("sampler_triton", _define_triton_op)
    return torch.ops.diffupose.sampler_step_triton


def sampler_step(x: Tensor, eps: Tensor, rng_state: Tensor, counter_offset: int, coefs: StepCoefs,
                 n_hyp: int = 1, aggregate: bool = False, backend: Optional[str] = None):
    """One fused sampler step; returns (x_prev, mean, spread), mean/spread None unless aggregate."""
    if x.dim() != 3 or eps.shape != x.shape:
        raise ValueError(f"sampler_step: x and eps must both be [M, J, D], got {tuple(x.shape)} and {tuple(eps.shape)}")
    if rng_state.dtype != torch.int64 or rng_state.numel() != 2:
        raise ValueError("sampler_step: rng_state must be an int64 tensor [seed, offset]")
    if aggregate and x.shape[0] % n_hyp:
        raise ValueError(f"sampler_step: {x.shape[0]} samples are not a whole number of frames of {n_hyp} hypotheses")
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        return sampler_step_ref(x, eps, rng_state, counter_offset, coefs, n_hyp, aggregate)
    op = _triton_op() if name == "triton" else _cpp_op()
    out, mean, spread = op(x, eps, rng_state, int(counter_offset), *coefs.as_args(), int(n_hyp), bool(aggregate))
    return (out, mean, spread) if aggregate else (out, None, None)


if _backend.has_extension():
    _cpp_op()
