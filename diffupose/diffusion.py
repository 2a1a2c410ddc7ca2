"""Diffusion: noise schedules, q_sample, the training loss, and the DDPM / DDIM sampling loop.

Indexing: t in {0, ..., T-1}; x_t = sqrt(abar[t]) x0 + sqrt(1 - abar[t]) eps. Sampling walks a
descending list of timesteps ending at 0; the step from t to t_prev uses abar_prev = abar[t_prev]
(1 after the last step, so the last step returns the x0 estimate). DDIM with k steps uses k
evenly spaced timesteps and eta (0: deterministic); DDPM is all T steps with the posterior
variance, which is DDIM with k = T and eta = 1.

Poses here are in normalised units: x0 = root-relative metres / pose_scale (see the config).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .ops import NOISE_COEFS, StepCoefs, sampler_step
from .skeleton import Skeleton, flip_pose, get_skeleton
from .validate import one_of, real_number, whole_number

SCHEDULES = ("cosine", "linear")
LOSS_WEIGHTINGS = ("eps", "x0")
X0_WEIGHT_CAP = 5.0  # of the x0 weighting sqrt((1 - abar) / abar), before its normalisation to mean 1
MAX_T = 10000  # diffusion steps (the paper: 100); the schedules are [T] tensors, DDPM runs all T
MAX_POSE_SCALE = 10.0


@dataclass
class DiffusionConfig:
    schedule: str = "cosine"
    T: int = 100
    cosine_s: float = 0.008
    lambda_y: float = 0.1  # weight of the 2D-reconstruction L1 term
    # Weight of the eps loss per timestep: "eps" uniform (DDPM's simple loss); "x0" the L1 of the
    # implied x0 estimate, |x0_hat - x0| = sqrt((1 - abar) / abar) |eps_hat - eps|, capped at
    # X0_WEIGHT_CAP (at t = T-1 it would be ~2000) and normalised to mean 1 over t: it puts the
    # training where a few-step DDIM chain starts (t = 80 of 100 at 5 steps), whose x0 estimate
    # amplifies the eps error ~3x. The sampler is the same for both.
    loss_weighting: str = "eps"
    joint_weights: str = "extremities"  # "uniform", "extremities", or comma-separated floats
    # Clip the x0 estimate to [-clip, clip] (normalised units; 0: off). Needed with eps prediction:
    # at t = T-1 of the cosine schedule sqrt(abar) = 5e-4, so x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar)
    # multiplies the model's eps error by ~2000. Poses normalised by their RMS stay within ~3.2.
    clip_x0: float = 4.0
    pose_scale: float = 0.25  # metres per normalised unit

    def __post_init__(self):
        one_of("schedule", self.schedule, SCHEDULES)
        whole_number("T", self.T, 1, MAX_T)
        real_number("cosine_s", self.cosine_s, 0.0, 1.0, lo_open=True)
        real_number("lambda_y", self.lambda_y, 0.0, 1e3)
        one_of("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        real_number("clip_x0", self.clip_x0, 0.0, 1e3)
        # metres per normalised unit: poses are ~1 m across, so ~0.1-0.5; 10 m would be a giant
        real_number("pose_scale", self.pose_scale, 0.0, MAX_POSE_SCALE, lo_open=True)
        if not isinstance(self.joint_weights, str):
            raise ValueError(f"joint_weights must be a string, got {self.joint_weights!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"diffusion config has unknown keys {sorted(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------
def cosine_alpha_bar(T: int, s: float = 0.008) -> Tensor:
    """abar[t] = f(t + 1) / f(0), f(u) = cos((u / T + s) / (1 + s) * pi / 2)^2, betas clipped at
    0.999 (Nichol & Dhariwal 2021). float64 [T]."""
    u = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def linear_alpha_bar(T: int) -> Tensor:
    """Linear betas from 1e-4 to 0.02, scaled by 1000 / T so that short chains still end in noise."""
    scale = 1000.0 / T
    betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def joint_weights(spec: str, skeleton: Skeleton) -> Tensor:
    """Per-joint loss weights [J], mean 1. 'extremities' weighs knees, elbows and the head 1.5x
    and ankles and wrists 2x the torso, where lifting errors are largest."""
    J = skeleton.num_joints
    if spec == "uniform":
        w = torch.ones(J)
    elif spec == "extremities":
        heavy = {"r_knee": 1.5, "l_knee": 1.5, "r_elbow": 1.5, "l_elbow": 1.5, "head": 1.5, "nose": 1.5,
                 "r_ankle": 2.0, "l_ankle": 2.0, "r_wrist": 2.0, "l_wrist": 2.0}
        w = torch.tensor([heavy.get(n, 1.0) for n in skeleton.joints])
    else:
        try:
            w = torch.tensor([float(v) for v in spec.split(",")])
        except ValueError:
            raise ValueError(f"joint weights {spec!r}: expected 'uniform', 'extremities' or {J} numbers") from None
        if w.numel() != J or not torch.all(w > 0):
            raise ValueError(f"joint weights: need {J} positive numbers for {skeleton.name}, got {spec!r}")
    return w / w.mean()


def loss_weights(alpha_bar: Tensor, weighting: str) -> Tensor:
    """[T] float32 weights of the eps loss per timestep (DiffusionConfig.loss_weighting)."""
    if weighting == "eps":
        return torch.ones(alpha_bar.numel())
    w = ((1 - alpha_bar) / alpha_bar).sqrt().clamp(max=X0_WEIGHT_CAP)
    return (w / w.mean()).float()


# ---------------------------------------------------------------------------------------------
# the process
# ---------------------------------------------------------------------------------------------
Denoiser = Callable[..., tuple[Tensor, Tensor]]  # (x_t, y, t, backend=None) -> (eps, y_hat)


class Diffusion:
    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.T = cfg.T
        self.alpha_bar = cosine_alpha_bar(cfg.T, cfg.cosine_s) if cfg.schedule == "cosine" else linear_alpha_bar(cfg.T)
        self._plans: dict = {}  # plan()'s results: it runs on every lift (~30 us in Python)
        self.loss_weight_t = loss_weights(self.alpha_bar, cfg.loss_weighting)  # float32 [T]

    # -- training ------------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, model: Denoiser, x0: Tensor, y: Tensor, weights: Tensor, t: Optional[Tensor] = None,
             noise: Optional[Tensor] = None) -> tuple[Tensor, dict]:
        """L1(eps) (weighted per timestep: cfg.loss_weighting) + lambda * L1(y), both weighted per joint;
        x0 [B, J, 3] normalised, y [B, J, 2]."""
        B = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.T, (B,), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        eps, y_hat = model(self.q_sample(x0, t, noise), y, t)
        w = weights.to(x0.device)[:, None]
        l_eps = (eps.float() - noise).abs() * w
        if self.cfg.loss_weighting != "eps":
            l_eps = l_eps * self.loss_weight_t.to(x0.device)[t].view(B, 1, 1)
        l_eps = l_eps.mean()
        l_y = ((y_hat.float() - y).abs() * w).mean()
        total = l_eps + self.cfg.lambda_y * l_y
        return total, {"loss": total.detach(), "l_eps": l_eps.detach(), "l_y": l_y.detach()}

    # -- sampling ------------------------------------------------------------------------------
    def timesteps(self, steps: Optional[int]) -> list[int]:
        """Descending timesteps: all T for DDPM (steps None or T), else k uniformly skipped,
        t_i = round(i T / k) for i = k-1 .. 0 (the DDIM reference implementation's 'uniform'
        skip: 5 steps are 80, 60, 40, 20, 0; 2 are 50, 0).

        A k-step chain does not start at t = T-1: there the cosine schedule has abar = 2.4e-7,
        so the first x0 estimate multiplies the noise prediction's error by ~2000 and the few
        remaining steps cannot repair it (measured on the CMU set: 2 steps gave 2.1 m MPJPE
        starting at t = 99). x_T ~ N(0, I) stands in for x at the first t, as in DDIM's code.
        """
        if steps is None or steps >= self.T:
            return list(range(self.T - 1, -1, -1))
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return [int(round(i * self.T / steps)) for i in range(steps - 1, -1, -1)]

    def plan(self, steps: Optional[int] = None, eta: float = 0.0, ddpm: bool = False) -> list[tuple[int, StepCoefs]]:
        """(t, coefficients) of each step. ddpm=True: all T steps with the posterior variance."""
        if ddpm:
            steps, eta = None, 1.0
        key = (steps, float(eta), self.cfg.clip_x0)
        hit = self._plans.get(key)
        if hit is not None:
            return list(hit)
        ts = self.timesteps(steps)
        ab = self.alpha_bar
        out = []
        for i, t in enumerate(ts):
            a_t = float(ab[t])
            a_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) if eta > 0 else 0.0
            c_eps = math.sqrt(max(1 - a_prev - sigma * sigma, 0.0))
            out.append((t, StepCoefs(math.sqrt(a_t), math.sqrt(1 - a_t), math.sqrt(a_prev), c_eps, sigma,
                                     self.cfg.clip_x0)))
        self._plans[key] = tuple(out)
        return out

    def sample(self, model: Denoiser, y: Tensor, n_hyp: int = 1, steps: Optional[int] = 5, eta: float = 0.0,
               ddpm: bool = False, rng_state: Optional[Tensor] = None, seed: int = 0,
               flip: Optional[Union[Skeleton, str]] = None, backend: Optional[str] = None,
               dtype: torch.dtype = torch.float32, counter_stride: Optional[int] = None):
        """Draw n_hyp hypotheses per 2D pose y [B, J, 2] (normalised screen coordinates).

        Returns (hypotheses [B, n_hyp, J, 3], mean [B, J, 3], spread [B, J]) in normalised units.
        The noise comes from rng_state (int64 [seed, offset] on y's device; made from `seed` if
        None), which is advanced past the numbers used, so a repeated call draws fresh noise and
        a captured graph of this loop does too. flip: average the noise prediction with that of
        the mirrored pose (test-time flip augmentation). dtype: the denoiser's activation dtype
        (the sampler state stays fp32). counter_stride: noise counters used per step (default the
        number of elements); a caller that pads batches passes the padded size so that a frame
        draws the same noise padded or not. Nothing here sees ground truth.
        """
        B, J, _ = y.shape
        M = B * n_hyp
        if rng_state is None:
            rng_state = torch.tensor([seed, 0], dtype=torch.int64, device=y.device)
        skel = get_skeleton(flip) if isinstance(flip, str) else flip
        yy = y.to(dtype).repeat_interleave(n_hyp, 0)  # [M, J, 2], a frame's hypotheses adjacent
        if skel is not None:  # the condition and its mirror image, made once for every step
            yy = torch.cat([yy, flip_pose(yy, skel)], 0)
        plan = self.plan(steps, eta, ddpm)
        numel = M * J * 3
        stride = numel if counter_stride is None else counter_stride
        if stride < numel:
            raise ValueError(f"counter_stride {stride} is smaller than the {numel} elements of a step")
        zeros = y.new_zeros(M, J, 3, dtype=torch.float32)
        x, _, _ = sampler_step(zeros, zeros, rng_state, 0, NOISE_COEFS, backend=backend)  # x_T ~ N(0, I)
        mean = spread = None
        for i, (t, coefs) in enumerate(plan):
            eps = denoise(model, x.to(dtype), yy, t, skel, backend, y_has_flip=True)
            last = i == len(plan) - 1
            x, mean, spread = sampler_step(x, eps, rng_state, (i + 1) * stride, coefs, n_hyp, last, backend=backend)
        rng_state[1] += (len(plan) + 1) * stride
        return x.view(B, n_hyp, J, 3), mean, spread


def denoise(model: Denoiser, x: Tensor, y: Tensor, t, flip: Optional[Skeleton] = None,
            backend: Optional[str] = None, y_has_flip: bool = False) -> Tensor:
    """The model's noise prediction, optionally averaged with its mirrored prediction.
    y_has_flip: y is already [y; flip_pose(y)] (2 x's batch), as the sampling loop makes it once.
    Device ops only (flip_pose indexes with a cached device tensor): it runs in captured graphs."""
    if flip is None:
        return model(x, y, t, backend=backend)[0]
    xx = torch.cat([x, flip_pose(x, flip)], 0)
    yy = y if y_has_flip else torch.cat([y, flip_pose(y, flip)], 0)
    eps = model(xx, yy, t, backend=backend)[0]
    half = x.shape[0]
    return 0.5 * (eps[:half] + flip_pose(eps[half:], flip))


def check_pose2d(y: Tensor, num_joints: int, name: str = "2D poses") -> None:
    """Clear errors for 2D inputs the model cannot lift: shape, joint count, NaN/inf."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(y).__name__}")
    if y.dim() != 3 or y.shape[-1] != 2:
        raise ValueError(f"{name}: expected [frames, joints, 2], got shape {tuple(y.shape)}")
    if y.shape[1] != num_joints:
        raise ValueError(f"{name}: {y.shape[1]} joints, but the model expects {num_joints}")
    if y.shape[0] == 0:
        raise ValueError(f"{name}: no frames")
    if not torch.isfinite(y).all():
        bad = (~torch.isfinite(y)).any(-1).any(-1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}: NaN or infinite values in frames {bad}")


__all__: Sequence[str] = ("Diffusion", "DiffusionConfig", "SCHEDULES", "check_pose2d", "cosine_alpha_bar",
                          "denoise", "joint_weights", "linear_alpha_bar")
