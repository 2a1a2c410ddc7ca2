"""Layers of the denoiser: the modulated graph convolution and the timestep embedding."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from . import ops
from .ops.mgcn import epilogue_ref

NORMS = ("none", "batch", "layer")


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

    def __init__(self, c_in: int, c_out: int, adj: Tensor, act: str = "none", init_gain: float = 1.414,
                 norm: str = "none"):
        super().__init__()
        if act not in ops.ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        J = adj.shape[0]
        self.c_in, self.c_out, self.act = c_in, c_out, act
        self.register_buffer("adj", adj.clone().float())
        self.W = nn.Parameter(torch.empty(2, c_in, c_out))
        # each half is a [C_in, C_out] matrix: Xavier on its own fans. Xavier on the 3-D tensor
        # counts fan_in = C_in * C_out and fan_out = 2 * C_out, ~8x too small at d 128: without a
        # normalisation after it, the network started near zero and trained far slower (issue 15)
        for half in self.W.data:
            nn.init.xavier_uniform_(half, gain=init_gain)
        self.M = nn.Parameter(torch.ones(J, c_out))
        self.P = nn.Parameter(torch.ones(J, J))
        self.Q = nn.Parameter(torch.full((J, J), 1e-6))
        bound = 1.0 / math.sqrt(c_out)
        self.bias = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound))
        # the normalisation of `pre` (before the timestep scale-shift and the activation)
        self.norm: Optional[nn.Module] = (ChannelBatchNorm(c_out) if norm == "batch" else
                                          nn.LayerNorm(c_out) if norm == "layer" else None)
        self._affinity_cache: Optional[tuple[tuple, Tensor]] = None
        self._folded_cache: Optional[tuple[tuple, tuple[Tensor, Tensor]]] = None

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

    def folded(self) -> tuple[Tensor, Tensor]:
        """(W, bias) with an eval-mode batch norm folded in: BN(pre) = k * pre + (beta - k * mu),
        k = gamma / sqrt(var + eps), and scaling output channel c of both W halves and of the bias
        by k_c is exact (M multiplies per channel, the affinity mixes joints, not channels).
        Without grad the result is cached until a parameter or running statistic changes."""
        if not isinstance(self.norm, ChannelBatchNorm):
            return self.W, self.bias
        bn = self.norm
        deps = (self.W, self.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        cacheable = not torch.is_grad_enabled()
        key = tuple((t._version, t.data_ptr()) for t in deps)
        if cacheable and self._folded_cache is not None and self._folded_cache[0] == key:
            return self._folded_cache[1]
        k = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        out = (self.W * k, (self.bias - bn.running_mean) * k + bn.bias)
        if cacheable:
            self._folded_cache = (key, out)
        return out

    def forward(self, x: Tensor, scale_shift: Optional[Tensor] = None, residual: Optional[Tensor] = None,
                backend: Optional[str] = None) -> Tensor:
        cast = autocast_dtype(x.device.type)
        if cast is not None:
            # the fused op keeps fp32 parameters and runs activations in the autocast dtype
            x = x.to(cast)
        if self.norm is None or (isinstance(self.norm, ChannelBatchNorm) and not self.training):
            w, bias = self.folded()  # inference: the normalisation is in the weights, one fused op
            return ops.mgcn(x, w, self.M, self.affinity(), bias, scale_shift, residual, self.act, backend)
        # training (batch statistics), or a layer norm (data-dependent, cannot be folded)
        backend = ops.resolve(backend, x.device)  # once for the ops (and the choice below)
        if isinstance(self.norm, ChannelBatchNorm) and backend == "cpu":
            return self.train_norm_cpu(x, scale_shift, residual, backend)
        return self.train_norm_torch(x, scale_shift, residual, backend)

    def train_norm_torch(self, x: Tensor, scale_shift: Optional[Tensor], residual: Optional[Tensor],
                         backend: str) -> Tensor:
        """A training layer with a norm off the CPU kernels (or a layer norm): the op computes
        `pre`, then the normalisation and the epilogue run in PyTorch (also the benchmark's
        `cpu/norm-in-torch` row)."""
        pre = ops.mgcn(x, self.W, self.M, self.affinity(), self.bias, None, None, "none", backend)
        return epilogue_ref(self.norm(pre), scale_shift, residual, self.act)

    def train_norm_cpu(self, x: Tensor, scale_shift: Optional[Tensor], residual: Optional[Tensor],
                       backend: str) -> Tensor:
        """A training layer with a batch norm on the CPU: the convolution, the norm and the
        epilogue as one op (diffupose.ops.mgcn_norm), the running statistics updated from its batch
        statistics. bench/train_throughput.py swaps this method for the unfused forms it compares."""
        out, mean, var = ops.mgcn_norm(x, self.W, self.M, self.affinity(), self.bias, self.norm.weight,
                                       self.norm.bias, scale_shift, residual, self.act, self.norm.eps, backend)
        self.norm.update_running(mean, var, x.numel() // x.shape[-1])
        return out

    def train_norm_two_ops(self, x: Tensor, scale_shift: Optional[Tensor], residual: Optional[Tensor],
                           backend: str) -> Tensor:
        """train_norm_cpu as two ops, the convolution then ChannelBatchNorm.forward_fused (the layer
        before diffupose.ops.mgcn_norm): the benchmark's A/B row and the norm op's layer test."""
        pre = ops.mgcn(x, self.W, self.M, self.affinity(), self.bias, None, None, "none", backend)
        return self.norm.forward_fused(pre, scale_shift, residual, self.act, backend)

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, joints={self.adj.shape[0]}, act={self.act}"


class ChannelBatchNorm(nn.Module):
    """Batch norm over the channels of [B, J, C] (statistics over samples and joints, as the
    Modulated-GCN code's BatchNorm1d on [B, C, J]). Its buffers are the running mean and variance
    only, both float: no integer batch counter, so the checkpoint's float-only weights check and
    the EMA (which averages the buffers with the weights) take it as they are."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward_fused(self, pre: Tensor, scale_shift: Optional[Tensor], residual: Optional[Tensor], act: str,
                      backend: Optional[str] = None) -> Tensor:
        """Training only: act(self(pre) * (1 + scale) + shift) + residual as one op
        (diffupose.ops.norm_act), the running statistics updated as F.batch_norm does (the variance
        unbiased)."""
        out, mean, var = ops.norm_act(pre, self.weight, self.bias, scale_shift, residual, act, self.eps, backend)
        self.update_running(mean, var, pre.numel() // pre.shape[-1])
        return out

    def update_running(self, mean: Tensor, var: Tensor, n: int) -> None:
        """The running statistics from a batch's (n rows, var biased), as F.batch_norm updates them."""
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((var * (n / (n - 1))).to(self.running_var.dtype), self.momentum)

    def forward(self, x: Tensor) -> Tensor:
        C = x.shape[-1]
        y = torch.nn.functional.batch_norm(x.reshape(-1, C), self.running_mean, self.running_var, self.weight,
                                           self.bias, self.training, self.momentum, self.eps)
        return y.view(x.shape)


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
