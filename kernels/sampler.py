"""Triton kernels of the fused sampler step (DDIM / DDPM) and their launcher.

The op, its contract and its reference live in diffupose/ops/sampler_step.py
(`sampler_step_ref`); this module has the kernels only. Same math as the CPU and CUDA kernels
(csrc/common/sampler_math.h) and the same noise as csrc/common/philox.h and
diffupose/ops/philox.py: Philox4x32-10 keyed by the seed's two words, counter (c lo, c hi, 0, 0)
split here explicitly (`tl.randint4x` of Triton before 3.4 split int64 counters differently, so
the stream would depend on the Triton version), then Box-Muller in precise float32 math:
`tl.randn` uses the approximate sqrt (and lets the compiler pick fast log/cos), whose error near
u = 1 (where -2 log u is tiny) is amplified past the tests' 1e-5. Compiled, the noise matches the
CPU's to a few float32 ulps.

(seed, offset) are read from the int64 device tensor rng_state inside the kernel, never passed
as Python ints: a captured CUDA graph then draws fresh noise once rng_state[1] is advanced
between replays. The step coefficients are Python floats (constant across replays).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .launch import device_guard

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def philox_normal(seed, counter, INTERP: tl.constexpr):
    """Standard normal for an int64 seed and int64 counters: csrc/common/philox.h::philox_normal."""
    c_lo = (counter & 0xFFFFFFFF).to(tl.uint32)
    c_hi = ((counter >> 32) & 0xFFFFFFFF).to(tl.uint32)
    zero = tl.zeros_like(c_lo)
    r0, r1, _, _ = tl.philox(seed, c_lo, c_hi, zero, zero)
    # U(u) = (int32(u) < 0 ? ~int32(u) : int32(u)) * 4.6566127342e-10, a float in [0, 1)
    i0 = r0.to(tl.int32, bitcast=True)
    i1 = r1.to(tl.int32, bitcast=True)
    u1 = tl.where(i0 < 0, ~i0, i0).to(tl.float32) * 4.6566127342e-10
    u2 = tl.where(i1 < 0, ~i1, i1).to(tl.float32) * 4.6566127342e-10
    u1 = tl.maximum(u1, 1.0e-7)
    th = u2 * 6.283185307179586
    if INTERP:  # the interpreter has no libdevice; its numpy float32 math is precise
        z = tl.sqrt_rn(-2.0 * tl.log(u1)) * tl.cos(th)
    else:
        z = libdevice.sqrt_rn(-2.0 * libdevice.log(u1)) * libdevice.cos(th)
    return z


@triton.jit
def _step_update(x, e, z, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, CLIP: tl.constexpr,
                 NOISE: tl.constexpr):
    """x_t, eps, z (fp32) -> x_{t-1}; csrc/common/sampler_math.h::sampler_update. IEEE divisions
    (div_rn), as the CPU and CUDA kernels divide: Triton's `/` is approximate (2 ulp), and the
    clipped branch's eps divides a difference by sqrt(1 - abar), which can be small."""
    x0 = tl.math.div_rn(x - sqrt_1m_abar * e, sqrt_abar)
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -clip), clip)
        # eps consistent with the clipped x0 (as DDIM implementations do)
        e = tl.math.div_rn(x - sqrt_abar * x0, sqrt_1m_abar)
    v = c_x0 * x0 + c_eps * e
    if NOISE:
        v += sigma * z
    return v


@triton.jit
def _noise(rng_ptr, rng_stride, counter_offset, idx, NOISE: tl.constexpr, INTERP: tl.constexpr):
    """Standard normals for the int64 flat element indices idx (0.0 when the step has no noise)."""
    if NOISE:
        seed = tl.load(rng_ptr)
        base = tl.load(rng_ptr + rng_stride) + counter_offset
        return philox_normal(seed, base + idx, INTERP)
    else:
        return 0.0


@triton.jit
def _eps_offset(idx, J, D, e_sm, e_sj, e_sd):
    """Offset of flat element idx of [M, J, D] in eps with strides (e_sm, e_sj, e_sd): the model's
    eps is a view into its [M, J, 5] output, read in place instead of copied."""
    jd = idx % (J * D)
    return (idx // (J * D)) * e_sm + (jd // D) * e_sj + (jd % D) * e_sd


@triton.jit
def _sampler_step_kernel(x_ptr, eps_ptr, out_ptr, rng_ptr, rng_stride, counter_offset, numel, J, D,
                         e_sm, e_sj, e_sd,
                         sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip,
                         CLIP: tl.constexpr, NOISE: tl.constexpr, BLOCK: tl.constexpr, INTERP: tl.constexpr):
    # x, out: [numel] flat; eps [M, J, D] strided; one program per BLOCK elements.
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = idx < numel
    x = tl.load(x_ptr + idx, mask=ok, other=0.0).to(tl.float32)
    e = tl.load(eps_ptr + _eps_offset(idx, J, D, e_sm, e_sj, e_sd), mask=ok, other=0.0).to(tl.float32)
    z = _noise(rng_ptr, rng_stride, counter_offset, idx, NOISE, INTERP)
    v = _step_update(x, e, z, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, CLIP, NOISE)
    tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _sampler_step_aggregate_kernel(x_ptr, eps_ptr, out_ptr, mean_ptr, spread_ptr, rng_ptr, rng_stride,
                                   counter_offset, n_hyp, J, D, e_sm, e_sj, e_sd,
                                   sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip,
                                   CLIP: tl.constexpr, NOISE: tl.constexpr,
                                   HB: tl.constexpr, JB: tl.constexpr, DB: tl.constexpr, INTERP: tl.constexpr):
    # x, eps, out: [frames, n_hyp, J, D]; mean: [frames, J, D]; spread: [frames, J].
    # One program per frame; hypotheses in chunks of HB, tile [HB, JB, DB]. Mean and sum of
    # squared deviations are merged chunk by chunk (Chan et al.), stable for any n_hyp, from the
    # values as rounded to out's dtype (as the reference aggregates its output).
    f = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, HB)[:, None, None]
    j = tl.arange(0, JB)[None, :, None]
    d = tl.arange(0, DB)[None, None, :]
    jd = j * D + d  # [1, JB, DB]
    jd_ok = (j < J) & (d < D)
    mean = tl.zeros([JB, DB], dtype=tl.float32)
    m2 = tl.zeros([JB, DB], dtype=tl.float32)
    for h0 in range(0, n_hyp, HB):
        hh = h0 + h
        ok = (hh < n_hyp) & jd_ok
        idx = (f * n_hyp + hh) * (J * D) + jd  # int64 flat element index
        x = tl.load(x_ptr + idx, mask=ok, other=0.0).to(tl.float32)
        e_off = (f * n_hyp + hh) * e_sm + j * e_sj + d * e_sd
        e = tl.load(eps_ptr + e_off, mask=ok, other=0.0).to(tl.float32)
        z = _noise(rng_ptr, rng_stride, counter_offset, idx, NOISE, INTERP)
        v = _step_update(x, e, z, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, CLIP, NOISE)
        v = v.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + idx, v, mask=ok)
        v = tl.where(ok, v.to(tl.float32), 0.0)
        n_prev = tl.cast(h0, tl.float32)
        n_chunk = tl.cast(tl.minimum(n_hyp - h0, HB), tl.float32)
        n_new = n_prev + n_chunk
        c_mean = tl.sum(v, axis=0) / n_chunk
        dev = tl.where(ok, v - c_mean[None, :, :], 0.0)
        delta = c_mean - mean
        mean += delta * (n_chunk / n_new)
        m2 += tl.sum(dev * dev, axis=0) + delta * delta * (n_prev * n_chunk / n_new)
    jd2 = tl.arange(0, JB)[:, None] * D + tl.arange(0, DB)[None, :]
    ok2 = (tl.arange(0, JB)[:, None] < J) & (tl.arange(0, DB)[None, :] < D)
    tl.store(mean_ptr + f * (J * D) + jd2, mean.to(mean_ptr.dtype.element_ty), mask=ok2)
    jj = tl.arange(0, JB)
    spread = tl.sqrt(tl.sum(tl.where(ok2, m2, 0.0), axis=1) / tl.cast(n_hyp, tl.float32))
    tl.store(spread_ptr + f * J + jj, spread.to(spread_ptr.dtype.element_ty), mask=jj < J)


def _check(x: torch.Tensor, eps: torch.Tensor, rng_state: torch.Tensor, n_hyp: int, aggregate: bool) -> None:
    """The checks of csrc/sampler_check.h, as ValueError."""
    if x.dim() != 3:
        raise ValueError(f"sampler_step: x must be [M, J, D], got {tuple(x.shape)}")
    if eps.shape != x.shape:
        raise ValueError(f"sampler_step: eps {tuple(eps.shape)} must match x {tuple(x.shape)}")
    if x.dtype not in _DTYPES or eps.dtype not in _DTYPES:
        raise ValueError(f"sampler_step: x and eps must be float32, float16, bfloat16 or float64, got {x.dtype} "
                         f"and {eps.dtype}")
    if not (x.device == eps.device == rng_state.device):
        raise ValueError(f"sampler_step: x, eps and rng_state must be on one device, got {x.device}, {eps.device} "
                         f"and {rng_state.device}")
    if rng_state.dtype != torch.int64 or rng_state.numel() != 2:
        raise ValueError("sampler_step: rng_state must be an int64 tensor [seed, offset]")
    if n_hyp < 1:
        raise ValueError(f"sampler_step: n_hyp must be >= 1, got {n_hyp}")
    if aggregate and x.shape[0] % n_hyp:
        raise ValueError(f"sampler_step: M = {x.shape[0]} is not a multiple of n_hyp = {n_hyp}")


def sampler_step(x: torch.Tensor, eps: torch.Tensor, rng_state: torch.Tensor, counter_offset: int,
                 sqrt_abar: float, sqrt_1m_abar: float, c_x0: float, c_eps: float, sigma: float, clip: float,
                 n_hyp: int, aggregate: bool):
    """x, eps [M, J, D] -> (x_prev [M, J, D], mean [M/n_hyp, J, D], spread [M/n_hyp, J]), the last
    two empty unless aggregate; all in x's dtype. See diffupose/ops/sampler_step.py."""
    _check(x, eps, rng_state, n_hyp, aggregate)
    with device_guard(x):
        return _launch(x, eps, rng_state, counter_offset, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, n_hyp,
                       aggregate)


def _launch(x, eps, rng_state, counter_offset, sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip, n_hyp, aggregate):
    x = x.contiguous()  # eps is read through its strides (no copy)
    rng = rng_state.reshape(-1)  # a view where it can be: the kernel must read the live state tensor
    M, J, D = x.shape
    out = torch.empty_like(x)
    frames = M // n_hyp if aggregate else 0
    mean = x.new_empty(frames, J, D) if aggregate else x.new_empty(0)
    spread = x.new_empty(frames, J) if aggregate else x.new_empty(0)
    if x.numel() == 0:
        return out, mean, spread
    coefs = (float(sqrt_abar), float(sqrt_1m_abar), float(c_x0), float(c_eps), float(sigma), float(clip))
    flags = dict(CLIP=clip > 0, NOISE=sigma != 0, INTERP=_interpreting())
    e_strides = tuple(eps.stride())
    if not aggregate:
        # the interpreter pays per program: few big ones; on a GPU one element per thread-ish
        block = min(triton.next_power_of_2(x.numel()), 16384) if _interpreting() else 1024
        grid = (triton.cdiv(x.numel(), block),)
        _sampler_step_kernel[grid](x, eps, out, rng, rng.stride(0), int(counter_offset), x.numel(), J, D, *e_strides,
                                   *coefs, **flags, BLOCK=block, num_warps=4)
    else:
        jb, db = triton.next_power_of_2(J), triton.next_power_of_2(D)
        # hypotheses per chunk: the whole frame when it fits a modest tile
        hb = max(1, min(triton.next_power_of_2(n_hyp), max(1, 4096 // (jb * db))))
        _sampler_step_aggregate_kernel[(frames,)](x, eps, out, mean, spread, rng, rng.stride(0), int(counter_offset),
                                                  n_hyp, J, D, *e_strides, *coefs, **flags, HB=hb, JB=jb, DB=db,
                                                  num_warps=4)
    return out, mean, spread
