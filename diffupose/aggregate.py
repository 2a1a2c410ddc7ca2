"""Combining N 3D hypotheses of a frame into one pose, and how much to trust each joint, without
the ground truth: only the hypotheses and the 2D input they were lifted from are read.

- mean, median: per joint, over the hypotheses.
- reproj: reprojection-consistent. Each hypothesis gets the weak-perspective camera that best
  maps it onto the input 2D (isotropic scale s and 2D offset t, least squares over the joints:
  no intrinsics, no ground-truth root or depth), then per joint the hypotheses are weighted by how
  well that joint reprojects, w ~ exp(-e^2 / (2 tau^2)) with e the joint's 2D reprojection error
  and tau the frame's median error times `temperature` (scale-free: screen units or pixels alike).
  temperature -> 0 selects per joint the hypothesis that reprojects best; -> inf is the mean.
  Depth is not observed in 2D: a joint's depth comes with its x, y from the same weights.
- spread: per joint, the RMS distance of the hypotheses from their mean (metres), the number the
  Lifter reports. It is a spread of the samples, not an error bound: `calibrate_spread` fits a
  scale k per joint on held-out frames so that a share `coverage` of errors is within
  2 k spread (the report's 2x convention).

Every function takes torch tensors or numpy arrays; hypotheses [F, N, J, 3], pose2d [F, J, 2].
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

AGGREGATES = ("mean", "median", "reproj")
DEFAULT_TEMPERATURE = 1.0


def _tensor(x, name: str, last: int, ndim: int) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != ndim or t.shape[-1] != last:
        raise ValueError(f"{name}: expected {ndim} dimensions ending in {last}, got shape {tuple(t.shape)}")
    return t.to(torch.float64) if not t.is_floating_point() else t


def fit_weak_perspective(hypotheses, pose2d) -> tuple[Tensor, Tensor]:
    """Least-squares s [F, N] and t [F, N, 2] minimising sum_j |s X_j,xy + t - y_j|^2 per hypothesis
    (closed form: centre both, s = <Xc, yc> / <Xc, Xc>, t = mean(y) - s mean(X))."""
    h = _tensor(hypotheses, "hypotheses", 3, 4)
    y = _tensor(pose2d, "pose2d", 2, 3).to(h.dtype)[:, None]  # [F, 1, J, 2]
    if h.shape[0] != y.shape[0] or h.shape[2] != y.shape[2]:
        raise ValueError(f"hypotheses {tuple(h.shape)} and 2D poses {tuple(y.shape[::2])} do not pair up")
    xy = h[..., :2]
    mx, my = xy.mean(-2, keepdim=True), y.mean(-2, keepdim=True)
    xc, yc = xy - mx, y - my
    s = (xc * yc).sum((-1, -2)) / (xc * xc).sum((-1, -2)).clamp_min(1e-12)
    t = (my - s[..., None, None] * mx).squeeze(-2)
    return s, t


def reprojection_errors(hypotheses, pose2d) -> Tensor:
    """[F, N, J]: each joint's 2D distance between the hypothesis, under its own fitted weak
    perspective camera, and the input (the input's units)."""
    h = _tensor(hypotheses, "hypotheses", 3, 4)
    s, t = fit_weak_perspective(h, pose2d)
    y = torch.as_tensor(pose2d).to(h)
    proj = s[..., None, None] * h[..., :2] + t[..., None, :]
    return (proj - y[:, None]).norm(dim=-1)


def reprojection_weights(hypotheses, pose2d, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """[F, N, J] weights summing to 1 over N (see the module's note); temperature 0: one-hot on the
    hypothesis that reprojects best per joint."""
    e = reprojection_errors(hypotheses, pose2d)
    if temperature <= 0:
        return torch.nn.functional.one_hot(e.argmin(1), e.shape[1]).transpose(1, 2).to(e.dtype)
    tau = (e.flatten(1).median(1).values * temperature).clamp_min(1e-12)[:, None, None]
    return torch.softmax(-0.5 * (e / tau) ** 2, dim=1)


def aggregate(hypotheses, pose2d=None, how: str = "mean", temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """[F, N, J, 3] -> [F, J, 3] by `how` (AGGREGATES); reproj needs the 2D input pose2d [F, J, 2]."""
    h = _tensor(hypotheses, "hypotheses", 3, 4)
    if how == "mean":
        return h.mean(1)
    if how == "median":
        return h.median(dim=1).values
    if how == "reproj":
        if pose2d is None:
            raise ValueError("aggregate 'reproj' needs the 2D input the hypotheses were lifted from")
        w = reprojection_weights(h, pose2d, temperature)
        return (w[..., None] * h).sum(1)
    raise ValueError(f"unknown aggregate {how!r}; expected one of {', '.join(AGGREGATES)}")


def spread(hypotheses, center: Optional[Tensor] = None) -> Tensor:
    """[F, J]: RMS distance of the hypotheses from `center` [F, J, 3] (default their mean)."""
    h = _tensor(hypotheses, "hypotheses", 3, 4)
    c = h.mean(1) if center is None else torch.as_tensor(center).to(h)
    return (h - c[:, None]).square().sum(-1).mean(1).sqrt()


def mean_errors_and_spread(hypotheses, truth, parents) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(errors [F, J'] of the hypotheses' mean against `truth` [F, J, 3], spreads [F, J'], the J'
    joints kept) in float64, the root left out (0 in every hypothesis and in the truth: 0 error,
    0 spread): what coverage, spearman and calibrate_spread take."""
    h = torch.as_tensor(np.asarray(hypotheses), dtype=torch.float64)
    keep = [j for j, parent in enumerate(parents) if parent != -1]
    err = (h.mean(1) - torch.as_tensor(np.asarray(truth), dtype=torch.float64)).norm(dim=-1).numpy()
    return err[:, keep], spread(h).numpy()[:, keep], keep


# ---------------------------------------------------------------------------------------------
# calibration of the spread (needs errors: fitted on held-out training frames, not on the test)
# ---------------------------------------------------------------------------------------------
def coverage(errors, spreads, factor: float = 2.0) -> float:
    """Share of joint errors within `factor` x the joint's spread."""
    e, s = np.asarray(errors, np.float64), np.asarray(spreads, np.float64)
    return float(np.mean(e <= factor * s))


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally shaped arrays (flattened; ties broken by order, which
    continuous errors and spreads make negligible)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def calibrate_spread(errors, spreads, target: float = 0.9, factor: float = 2.0, per_joint: bool = True) -> np.ndarray:
    """Scale k ([J] per joint, or [1]) such that a share `target` of the held-out errors [F, J] is
    within factor * k * spread: k = the target-quantile of error / (factor * spread). One global k
    leaves the rank correlation between spread and error as it is; per-joint k changes it (joints
    differ in how over- or under-confident their spread is)."""
    e, s = np.asarray(errors, np.float64), np.asarray(spreads, np.float64)
    if e.shape != s.shape or e.ndim != 2:
        raise ValueError(f"errors {e.shape} and spreads {s.shape} must both be [F, J]")
    ratio = e / np.maximum(factor * s, 1e-12)
    k = np.quantile(ratio, target, axis=0) if per_joint else np.quantile(ratio, target)[None]
    return np.asarray(k, np.float64)


def person_level(errors, spreads, people, target: float = 0.9, factor: float = 2.0) -> tuple[float, float]:
    """(level q, its cross-person coverage): the smallest quantile level q (>= target, a grid of
    0.001) at which per-joint scales fitted at q on one held-out person cover, on average over the
    ordered pairs of held-out people, `target` of another's errors [F, J] (people [F]: whose row).
    Fitted at `target` on the people at hand, a scale covers less on a new person (people differ in
    how far their errors outgrow the spread); the pairs measure by how much, on validation rows
    only. Needs two people or more; the level is capped at 0.999."""
    e, s, who = np.asarray(errors, np.float64), np.asarray(spreads, np.float64), np.asarray(people)
    names = sorted(set(who.tolist()))
    if len(names) < 2:
        raise ValueError("person_level needs the rows of two held-out people or more")
    rows = {n: who == n for n in names}

    def cross(q: float) -> float:
        return float(np.mean([coverage(e[rows[b]], s[rows[b]] * calibrate_spread(e[rows[a]], s[rows[a]], q, factor),
                                       factor) for a in names for b in names if a != b]))

    for q in np.arange(round(target * 1000), 1000) / 1000.0:
        c = cross(q)
        if c >= target:
            return float(q), c
    return 0.999, cross(0.999)
