"""The DiffuPose denoiser (a modulated GCN) and the baselines of the paper's ablation.

Every denoiser maps (x_t [B, J, 3], y [B, J, 2], t [B] or [1]) -> (eps [B, J, 3], y_hat [B, J, 2]):
the noise in the noisy 3D pose x_t and a reconstruction of the 2D condition y. A t of shape [1]
is broadcast to the whole batch (as in sampling, where all samples share one timestep).

- GCNDenoiser: DiffuPose. Modulated graph convolutions on the skeleton; residual blocks whose
  first convolution takes the timestep scale-shift; d_model 256 (384 available).
- MLPDenoiser, UNetDenoiser: the ablation's fully connected denoisers on the flattened pose.
- GCNRegressor: the same GCN without diffusion, y -> x0 directly (a deterministic baseline).
- MLPRegressor (diffupose/mlp_regressor.py, arch "mlp_regressor"): Martinez et al.'s fully connected
  2D-to-3D regressor, the reference a lifter has to beat.

`norm` (GCN backbones only): "none", "batch" (after every graph convolution but the last, folded
into the convolution's weights for inference) or "layer" (never folded: it depends on the sample).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
from torch import Tensor, nn

from .layers import NORMS, FiLM, ModulatedGraphConv, TimestepEmbedding, autocast_dtype
from .ops.mgcn import ACTIVATIONS
from .ops.sample import state_key
from .skeleton import SKELETONS, Skeleton, get_skeleton
from .validate import one_of, whole_number

ARCHS = ("gcn", "mlp", "unet", "regressor", "mlp_regressor")
REGRESSOR_ARCHS = ("regressor", "mlp_regressor")  # deterministic y -> x0: no diffusion, one prediction
# what a config without the field means: every checkpoint written before the field existed was
# trained without a normalisation (and new configs may default to another value)
NORM_OF_OLD_CONFIGS = "none"
MAX_WIDTH = 4096  # d_model, d_time
MAX_BLOCKS = 64


@dataclass
class ModelConfig:
    arch: str = "gcn"
    skeleton: str = "h36m17"
    d_model: int = 256
    n_blocks: int = 4
    d_time: int = 128
    act: str = "silu"
    # batch norm after the graph convolutions (folded for inference): issue 15's short runs, 1,000
    # steps on CMU, took the GCN regressor from 93 to 53 mm and the diffusion model's N = 10 from
    # 144 to 109 mm (docs/RESULTS.md). A config without the field reads as "none" (from_dict).
    norm: str = "batch"

    def __post_init__(self):
        one_of("arch", self.arch, ARCHS)
        one_of("skeleton", self.skeleton, tuple(SKELETONS))
        one_of("act", self.act, tuple(ACTIVATIONS))
        one_of("norm", self.norm, NORMS)
        # bounds well above any model here (the paper: 256 / 4 / 128) and below what cannot be
        # allocated by mistake; a checkpoint's weights must match the config anyway
        whole_number("d_model", self.d_model, 1, MAX_WIDTH)
        whole_number("n_blocks", self.n_blocks, 0, MAX_BLOCKS)
        whole_number("d_time", self.d_time, 2, MAX_WIDTH)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config has unknown keys {sorted(unknown)}")
        return cls(**{"norm": NORM_OF_OLD_CONFIGS, **d})


def _time_input(t, batch: int, device) -> Tensor:
    """t as a tensor [1] or [batch]; t may be a Python int (sampling) or a tensor."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t[None]
    if t.shape[0] not in (1, batch):
        raise ValueError(f"t has {t.shape[0]} entries for a batch of {batch}")
    return t


class GCNBackbone(nn.Module):
    """in-conv (c_in -> d), n_blocks residual blocks [conv + timestep scale-shift, conv + residual],
    out-conv (d -> c_out), on [B, J, C]. Without d_time the blocks take no timestep. `norm` follows
    every convolution but the output one (as in the Modulated-GCN code)."""

    def __init__(self, skeleton: Skeleton, c_in: int, c_out: int, d_model: int, n_blocks: int,
                 d_time: Optional[int], act: str, norm: str = "none"):
        super().__init__()
        adj = skeleton.adjacency()
        self.inp = ModulatedGraphConv(c_in, d_model, adj, act, norm=norm)
        self.convs1 = nn.ModuleList(ModulatedGraphConv(d_model, d_model, adj, act, norm=norm) for _ in range(n_blocks))
        self.convs2 = nn.ModuleList(ModulatedGraphConv(d_model, d_model, adj, act, norm=norm) for _ in range(n_blocks))
        self.films = nn.ModuleList(FiLM(d_time, d_model) for _ in range(n_blocks)) if d_time else None
        self.out = ModulatedGraphConv(d_model, c_out, adj, "none", init_gain=0.1)

    def forward(self, h: Tensor, scale_shifts: Optional[list[Tensor]] = None,
                backend: Optional[str] = None) -> Tensor:
        """h [B, J, c_in]; scale_shifts: one [1 or B, 2, d] per block (from the FiLMs), or None."""
        h = self.inp(h, backend=backend)
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            ss = scale_shifts[i] if scale_shifts is not None else None
            r = h
            h = c1(h, scale_shift=ss, backend=backend)
            h = c2(h, residual=r, backend=backend)
        return self.out(h, backend=backend)

    def layers(self) -> list[ModulatedGraphConv]:
        """The graph convolutions in the order forward runs them: inp, (convs1[i], convs2[i]) per block, out."""
        body = [c for pair in zip(self.convs1, self.convs2) for c in pair]
        return [self.inp, *body, self.out]

    @torch.no_grad()
    def inference_layers(self) -> list[dict]:
        """Per graph convolution, in forward order (see `layers`), what the fused op computes at
        inference: {"W" [2, C_in, C_out], "M" [J, C_out], "a" [J, J] (the normalised modulated
        affinity), "bias" [C_out], "act"} with a batch norm folded into W and bias (its running
        statistics: eval-mode semantics whatever the module's mode), so a packed sampler never runs
        the normalisation as an op of its own. Block i's convs1 takes timestep i's scale-shift and
        its convs2 adds the block input as the residual, as in forward. A layer norm cannot be
        folded (it depends on each sample): refused."""
        if any(c.norm is not None and not hasattr(c.norm, "running_var") for c in self.layers()):
            raise ValueError("inference_layers: a layer norm depends on each sample and cannot be folded "
                             "into the graph convolution's weights; use norm 'none' or 'batch'")
        out = []
        for c in self.layers():
            was = c.training
            c.eval()  # folded() folds only the running statistics
            w, bias = c.folded()
            c.train(was)
            out.append({"W": w.detach(), "M": c.M.detach(), "a": c.affinity().detach(), "bias": bias.detach(),
                        "act": c.act})
        return out


class GCNDenoiser(nn.Module):
    """DiffuPose's denoiser: per joint [x_t, y] (5 channels) -> [eps, y_hat] (5 channels)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        self.temb = TimestepEmbedding(cfg.d_time)
        self.net = GCNBackbone(self.skeleton, 5, 5, cfg.d_model, cfg.n_blocks, cfg.d_time, cfg.act, cfg.norm)
        self._cond_cache: dict = {}

    def time_conditioning(self, t, batch: int, device, dtype: Optional[torch.dtype] = None) -> list[Tensor]:
        """The blocks' scale-shifts for timestep t (in `dtype` if given, else fp32). For a
        Python-int t without grad (sampling) they are cached, already in the activation dtype,
        until the time-embedding or FiLM weights change, so a sampler step runs only the graph
        convolutions (no per-layer casts either). Captured CUDA graphs read the cached tensors by
        address: the engine holds the entries it captured and drops its graphs when a parameter
        changes (diffupose/engine.py)."""
        cacheable = isinstance(t, int) and not torch.is_grad_enabled()
        if cacheable:
            key = (device, state_key(self.temb, self.net.films))
            hit = self._cond_cache.get((t, dtype))
            if hit is not None and hit[0] == key:
                return hit[1]
        emb = self.temb(_time_input(t, batch, device))
        ss = [film(emb) for film in self.net.films]
        if dtype is not None:
            ss = [v.to(dtype) for v in ss]
        if cacheable:
            self._cond_cache[(t, dtype)] = (key, ss)
        return ss

    def forward(self, x_t: Tensor, y: Tensor, t, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
        # the scale-shifts in the layers' activation dtype (the op casts them to it anyway); under
        # autocast the layers cast x themselves, so the cache keeps fp32 then
        act_dtype = None if autocast_dtype(x_t.device.type) is not None else x_t.dtype
        ss = self.time_conditioning(t, x_t.shape[0], x_t.device, act_dtype)
        o = self.net(torch.cat([x_t, y.to(x_t.dtype)], dim=-1), ss, backend)
        return o[..., :3], o[..., 3:]


class GCNRegressor(nn.Module):
    """The same GCN without diffusion: y [B, J, 2] -> x0 [B, J, 3], deterministic."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        self.net = GCNBackbone(self.skeleton, 2, 3, cfg.d_model, cfg.n_blocks, None, cfg.act, cfg.norm)

    def forward(self, y: Tensor, backend: Optional[str] = None) -> Tensor:
        return self.net(y, None, backend)


class _ResMLPBlock(nn.Module):
    def __init__(self, width: int, d_time: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.film = FiLM(d_time, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        ss = self.film(emb)
        u = torch.nn.functional.silu(self.fc1(h) * (1 + ss[:, 0]) + ss[:, 1])
        return h + torch.nn.functional.silu(self.fc2(u))


class MLPDenoiser(nn.Module):
    """Fully connected denoiser on the flattened pose, residual blocks with timestep scale-shift.
    Its width is chosen so that its parameter count is close to the GCN's of the same config."""

    def __init__(self, cfg: ModelConfig, width: Optional[int] = None):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        J = self.skeleton.num_joints
        width = width or matched_width(cfg, MLPDenoiser)
        self.temb = TimestepEmbedding(cfg.d_time)
        self.inp = nn.Linear(J * 5, width)
        self.blocks = nn.ModuleList(_ResMLPBlock(width, cfg.d_time) for _ in range(cfg.n_blocks))
        self.out = nn.Linear(width, J * 5)

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
        B, J, _ = x_t.shape
        emb = self.temb(_time_input(t, B, x_t.device)).expand(B, -1)
        h = self.inp(torch.cat([x_t, y.to(x_t.dtype)], -1).reshape(B, J * 5))
        for blk in self.blocks:
            h = blk(h, emb)
        o = self.out(h).view(B, J, 5)
        return o[..., :3], o[..., 3:]


class UNetDenoiser(nn.Module):
    """U-Net-style fully connected denoiser: widths halve on the way down and double on the way
    up, with skip connections, timestep scale-shift at every level."""

    def __init__(self, cfg: ModelConfig, width: Optional[int] = None):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        J = self.skeleton.num_joints
        width = width or matched_width(cfg, UNetDenoiser)
        levels = max(1, cfg.n_blocks // 2)
        widths = [max(16, width // (2 ** i)) for i in range(levels + 1)]
        self.temb = TimestepEmbedding(cfg.d_time)
        self.inp = nn.Linear(J * 5, widths[0])
        self.down = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(levels))
        self.down_film = nn.ModuleList(FiLM(cfg.d_time, widths[i + 1]) for i in range(levels))
        self.mid = _ResMLPBlock(widths[-1], cfg.d_time)
        self.up = nn.ModuleList(nn.Linear(2 * widths[i + 1], widths[i]) for i in reversed(range(levels)))
        self.up_film = nn.ModuleList(FiLM(cfg.d_time, widths[i]) for i in reversed(range(levels)))
        self.out = nn.Linear(2 * widths[0], J * 5)

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
        B, J, _ = x_t.shape
        act = torch.nn.functional.silu
        emb = self.temb(_time_input(t, B, x_t.device)).expand(B, -1)
        h = act(self.inp(torch.cat([x_t, y.to(x_t.dtype)], -1).reshape(B, J * 5)))
        skips = [h]
        for lin, film in zip(self.down, self.down_film):
            ss = film(emb)
            h = act(lin(h) * (1 + ss[:, 0]) + ss[:, 1])
            skips.append(h)
        h = self.mid(h, emb)
        for lin, film in zip(self.up, self.up_film):
            ss = film(emb)
            h = act(lin(torch.cat([h, skips.pop()], -1)) * (1 + ss[:, 0]) + ss[:, 1])
        o = self.out(torch.cat([h, skips.pop()], -1)).view(B, J, 5)
        return o[..., :3], o[..., 3:]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_width(cfg: ModelConfig, cls) -> int:
    """Width (a multiple of 8) of a fully connected baseline whose parameter count is closest to
    that of the GCN denoiser of the same config (the ablation compares at equal size)."""
    def size(make) -> int:
        with torch.device("meta"):  # counts without initialising
            return count_parameters(make())

    target = size(lambda: GCNDenoiser(ModelConfig(**{**cfg.to_dict(), "arch": "gcn"})))
    lo, hi = 1, 1024  # in units of 8
    while lo < hi:  # smallest width whose count reaches the target
        mid = (lo + hi) // 2
        if size(lambda: cls(cfg, width=8 * mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((w for w in (lo - 1, lo) if w >= 1), key=lambda w: abs(size(lambda: cls(cfg, width=8 * w)) - target))
    return 8 * best


def is_regressor(model_or_cfg) -> bool:
    """A deterministic y -> x0 model (no diffusion, one prediction per frame)?"""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    return cfg.arch in REGRESSOR_ARCHS


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp_regressor":
        from .mlp_regressor import MLPRegressor  # that module imports this one

        return MLPRegressor(cfg)
    return {"gcn": GCNDenoiser, "mlp": MLPDenoiser, "unet": UNetDenoiser, "regressor": GCNRegressor}[cfg.arch](cfg)
