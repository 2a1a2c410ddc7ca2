"""Layers of the denoiser: the modulated graph convolution and the timestep embedding."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from . import ops


def modulated_affinity(adj: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """A_mod = A * (P + P^T)/2 + (Q + Q^T)/2, symmetric, then D^-1/2 A_mod D^-1/2 with
    D = diag(sum_k |A_mod[i, k]|). At initialisation (P = 1, Q ~ 0) this is the usual GCN
    normalisation of the skeleton adjacency with self-loops. Differentiable (plain PyTorch)."""
    a = adj * (p + p.transpose(0, 1)) * 0.5 + (q + q.transpose(0, 1)) * 0.5
    d = a.abs().sum(1).clamp_min(1e-6).rsqrt()
    return d[:, None] * a * d[None, :]


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype where autocast is on for this device type, else None (also for device
    types without autocast, such as meta, on which tests trace the sampling loop)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


class ModulatedGraphConv(nn.Module):
    """Modulated graph convolution (Zou & Tang 2021) over J joints, with the fused epilogue.

    x [..., J, C_in] -> act((A_self * M (x W0) + A_neigh M (x W1) + b) * (1 + scale) + shift) + residual
    W [2, C_in, C_out] shared by all joints; M [J, C_out] joint-specific modulation; affinity
    modulation A * P + (Q + Q^T)/2, learnable and symmetric. The work runs in diffupose.ops.mgcn,
    so the backend switch moves training and sampling alike.
    """

    def __init__(self, c_in: int, c_out: int, adj: Tensor, act: str = "none", init_gain: float = 1.414):
        super().__init__()
        if act not in ops.ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}")
        J = adj.shape[0]
        self.c_in, self.c_out, self.act = c_in, c_out, act
        self.register_buffer("adj", adj.clone().float())
        self.W = nn.Parameter(torch.empty(2, c_in, c_out))
        nn.init.xavier_uniform_(self.W, gain=init_gain)
        self.M = nn.Parameter(torch.ones(J, c_out))
        self.P = nn.Parameter(torch.ones(J, J))
        self.Q = nn.Parameter(torch.full((J, J), 1e-6))
        bound = 1.0 / math.sqrt(c_out)
        self.bias = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound))
        self._affinity_cache: Optional[tuple[tuple, Tensor]] = None

    def affinity(self) -> Tensor:
        """The normalised modulated affinity. Without grad (sampling) it is cached until P or Q
        change (their version counters move on every in-place update), which keeps ~10 tiny
        kernels per layer out of every denoiser call and out of captured graphs."""
        if torch.is_grad_enabled():
            return modulated_affinity(self.adj, self.P, self.Q)
        key = (self.P._version, self.Q._version, self.P.data_ptr(), self.Q.data_ptr(), self.P.device)
        if self._affinity_cache is None or self._affinity_cache[0] != key:
            self._affinity_cache = (key, modulated_affinity(self.adj, self.P, self.Q))
        return self._affinity_cache[1]

    def forward(self, x: Tensor, scale_shift: Optional[Tensor] = None, residual: Optional[Tensor] = None,
                backend: Optional[str] = None) -> Tensor:
        cast = autocast_dtype(x.device.type)
        if cast is not None:
            # the fused op keeps fp32 parameters and runs activations in the autocast dtype
            x = x.to(cast)
        return ops.mgcn(x, self.W, self.M, self.affinity(), self.bias, scale_shift, residual, self.act, backend)

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, joints={self.adj.shape[0]}, act={self.act}"


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """t [B] (integer or float timesteps) -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t through a two-layer MLP: t [B] -> [B, dim]."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))


class FiLM(nn.Module):
    """Timestep scale-shift: embedding [B, d_time] -> [B, 2, C], zero-initialised so that every
    block starts as the plain residual block."""

    def __init__(self, d_time: int, channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(d_time, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, emb: Tensor) -> Tensor:
        return self.proj(torch.nn.functional.silu(emb)).view(-1, 2, self.channels)
