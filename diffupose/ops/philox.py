"""Philox4x32-10 normals in plain PyTorch: the reference for the kernels' in-kernel noise.

Same function as csrc/common/philox.h and Triton's tl.randn(seed, counter) with an int64
counter: key = (seed lo, seed hi), counter = (c lo, c hi, 0, 0), Box-Muller of the first two
outputs. Integer arithmetic is done on int64 tensors holding uint32 values.

The seed may be a Python int or an int64 tensor (one element) on the counters' device: the
reference sampler passes its device-resident rng_state, so drawing noise needs no host sync and
no host-to-device copy (it can run inside a captured CUDA graph).
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product a * b, a < 2^32, b uint32 in int64."""
    p_lo = a * (b & 0xFFFF)  # < 2^48
    p_hi = a * (b >> 16)  # < 2^48
    low = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    hi = ((p_hi >> 16) + (low >> 32)) & _M32
    return hi, low & _M32


def philox4x32_10_ref(seed, counter: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Four uint32 streams (as int64 tensors) for a uint64 seed (int, or int64 tensor holding its
    bits) and int64 counters."""
    if isinstance(seed, torch.Tensor):
        seed = seed.reshape(())
        k0, k1 = seed & _M32, (seed >> 32) & _M32  # arithmetic shift, masked: the high word's bits
    else:
        seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        k0, k1 = seed & _M32, seed >> 32
    counter = counter.to(torch.int64)
    c0 = counter & _M32
    c1 = (counter >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def _uniform(u: torch.Tensor) -> torch.Tensor:
    # int32(u) < 0 ? ~int32(u) : int32(u), then a float in [0, 1)
    v = torch.where(u >= 2**31, _M32 - u, u)
    return v.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)


def philox_normal_ref(seed, counter: torch.Tensor) -> torch.Tensor:
    """Standard normals (float32) for one seed and a tensor of int64 counters."""
    r0, r1, _, _ = philox4x32_10_ref(seed, counter)
    u1 = torch.clamp_min(_uniform(r0), 1.0e-7)
    th = _uniform(r1) * torch.tensor(6.283185307179586, dtype=torch.float32)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(th)
