"""Temporal smoothing of lifted poses: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A lifter sees one frame at a time, so its aggregate pose jitters from frame to frame even where
the person stands still. The One Euro filter is a first-order low-pass whose cut-off rises with
the speed: at rest it filters hard (cut-off `min_cutoff` Hz: the jitter goes), in fast motion it
follows (cut-off min_cutoff + beta * speed: little lag). Per joint: each joint has its own speed
(the norm of its filtered 3D velocity, m/s), so a still torso is smoothed while a swinging wrist is
followed, and the filter does not depend on the orientation of the axes.

It is causal and keeps its state between calls, so `diffupose lift` smooths a clip batch by batch
as it is lifted (memory stays bounded whatever the length). Times come from frame numbers and the
frame rate, so a gap (frames left out by --skip-empty) is a longer time step, not a jump. Off by
default: a set of unrelated images must not be smoothed.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

SMOOTHERS = ("none", "oneeuro")
# Chosen on the embedded CMU training clips (detector-like 2D, 20 Hz, the checkpoint cmu_gcn, N = 10;
# `python bench/smoothing.py --part train --grid`): of the settings whose MPJPE is within 0.5 mm of
# the grid's best, the one with the lowest acceleration error; then measured on the test clips
# (README "Smooth video"). Units: Hz and Hz per (m/s).
DEFAULT_MIN_CUTOFF = 1.0
DEFAULT_BETA = 3.0
DEFAULT_D_CUTOFF = 1.0  # cut-off of the speed estimate itself (the paper's default)


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    """The smoothing factor of a first-order low-pass with this cut-off (Hz) at time step dt (s)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One Euro filter over poses [frames, J, C], per joint, keeping its state across calls.

    fps: frames per second of the input (frame k is at time k / fps); min_cutoff (Hz) > 0 and
    beta (Hz per unit of speed, here per m/s) >= 0 as in the paper; d_cutoff (Hz) for the speed.
    Call with consecutive batches of a clip, with their frame numbers where frames were left out.
    """

    def __init__(self, fps: float, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF):
        for name, v, low in (("fps", fps, 0.0), ("min_cutoff", min_cutoff, 0.0), ("d_cutoff", d_cutoff, 0.0)):
            if not (math.isfinite(v) and v > low):
                raise ValueError(f"OneEuroFilter: {name} must be a positive number, got {v}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"OneEuroFilter: beta must be 0 or more, got {beta}")
        self.fps, self.min_cutoff, self.beta = float(fps), float(min_cutoff), float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past (the next frame starts a new clip)."""
        self._x: Optional[np.ndarray] = None  # last filtered pose [J, C]
        self._dx: Optional[np.ndarray] = None  # last filtered velocity [J, C], units per second
        self._frame: Optional[int] = None

    def __call__(self, poses, frames=None) -> np.ndarray:
        """poses [n, J, C] (the next n frames of the clip) -> the filtered poses, float64 [n, J, C].
        frames [n]: their frame numbers, increasing (default: the frames after the last call's)."""
        x = np.asarray(poses, dtype=np.float64)
        if x.ndim != 3:
            raise ValueError(f"OneEuroFilter: expected poses [frames, joints, coords], got shape {x.shape}")
        n = x.shape[0]
        start = 0 if self._frame is None else self._frame + 1
        frames = np.arange(start, start + n) if frames is None else np.asarray(frames, dtype=np.int64)
        if frames.shape != (n,):
            raise ValueError(f"OneEuroFilter: {frames.shape} frame numbers for {n} poses")
        out = np.empty_like(x)
        for i in range(n):
            f = int(frames[i])
            if self._x is None:
                self._x, self._dx = x[i].copy(), np.zeros_like(x[i])
            else:
                if f <= self._frame:
                    raise ValueError(f"OneEuroFilter: frame {f} after frame {self._frame}; frames must increase")
                dt = (f - self._frame) / self.fps
                a_d = _alpha(self.d_cutoff, dt)
                self._dx = a_d * (x[i] - self._x) / dt + (1.0 - a_d) * self._dx
                speed = np.sqrt((self._dx ** 2).sum(axis=-1, keepdims=True))  # [J, 1] per joint
                a = _alpha(self.min_cutoff + self.beta * speed, dt)
                self._x = a * x[i] + (1.0 - a) * self._x
            self._frame = f
            out[i] = self._x
        return out


def make_smoother(kind: str, fps: float, min_cutoff: float = DEFAULT_MIN_CUTOFF,
                  beta: float = DEFAULT_BETA) -> Optional[OneEuroFilter]:
    """The filter named by `kind` (one of SMOOTHERS), or None for "none"."""
    if kind == "none":
        return None
    if kind == "oneeuro":
        return OneEuroFilter(fps, min_cutoff=min_cutoff, beta=beta)
    raise ValueError(f"unknown smoother {kind!r}; known: {', '.join(SMOOTHERS)}")


def smooth_clips(poses, clip_ids, fps: float, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 frames=None) -> np.ndarray:
    """poses [F, J, C] of several clips, rows of a clip consecutive and in time order (clip_ids [F]
    labels the clip of each row) -> each clip filtered on its own, from a fresh state."""
    poses = np.asarray(poses)
    clip_ids = np.asarray(clip_ids)
    out = np.empty(poses.shape, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, clip_ids[1:] != clip_ids[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], len(poses)]):
        filt = OneEuroFilter(fps, min_cutoff=min_cutoff, beta=beta)
        out[s:e] = filt(poses[s:e], None if frames is None else np.asarray(frames)[s:e])
    return out


__all__ = ["DEFAULT_BETA", "DEFAULT_MIN_CUTOFF", "OneEuroFilter", "SMOOTHERS", "make_smoother", "smooth_clips"]
