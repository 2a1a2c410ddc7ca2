"""Smooth video: MPJPE and acceleration error (mm / frame^2) of the lifted aggregate, without and
with the One Euro filter (`diffupose lift --smooth oneeuro`), per clip of the embedded CMU set's
detector-like 2D (20 frames/s), with the shipped checkpoint (the README's "Smooth video" table was measured
with `--checkpoint diffupose/assets/checkpoints/cmu_gcn`, the default before cmu_hdm05_gcn).

  python bench/smoothing.py                       # the test clips, the default setting
  python bench/smoothing.py --camera 0 --grid     # those of camera 0 (a quarter of the time), a grid
  python bench/smoothing.py --part train --frames-per-clip 150 --grid   # how the default was chosen
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.checkpoint import load_checkpoint  # noqa: E402
from diffupose.data.dataset import load_dataset  # noqa: E402
from diffupose.evaluate import DEFAULT_CHECKPOINT, clip_labels, smoothing_rows  # noqa: E402
from diffupose.smoothing import DEFAULT_BETA, DEFAULT_MIN_CUTOFF  # noqa: E402

GRID = [(c, b) for c in (0.3, 0.5, 1.0, 1.5, 2.0, 3.0) for b in (0.0, 0.3, 1.0, 3.0, 10.0)]


def clip_rows(poses) -> list[np.ndarray]:
    """The row indices of each clip (rows of a clip are consecutive)."""
    ids = clip_labels(poses)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return np.split(np.arange(len(ids)), starts[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("test", "train"), default="test",
                   help="test: the test clips; train: the training clips of camera 0 (for choosing settings)")
    p.add_argument("--grid", action="store_true", help="a grid of (min_cutoff, beta) instead of the default")
    p.add_argument("--camera", type=int, default=None, help="only the clips seen from this camera (0-3; faster)")
    p.add_argument("--frames-per-clip", type=int, default=None, metavar="K",
                   help="only the first K frames of each clip")
    p.add_argument("-n", "--hypotheses", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()
    model, diffusion, _ = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, torch.device("cpu"))
    train, test = load_dataset("cmu", keypoints="det")
    poses = test if args.part == "test" else train.subset(train.camera == 0)
    if args.camera is not None:
        poses = poses.subset(poses.camera == args.camera)
    if args.frames_per_clip is not None:
        poses = poses.subset(np.concatenate([rows[:args.frames_per_clip] for rows in clip_rows(poses)]))
    settings = GRID if args.grid else [(DEFAULT_MIN_CUTOFF, DEFAULT_BETA)]
    t0 = time.perf_counter()
    rows = smoothing_rows(model, diffusion, poses, 20.0, settings, n_hyp=args.hypotheses, steps=args.steps)
    where = args.part + ("" if args.camera is None else f", camera {args.camera}")
    print(f"# CMU {where}: {len(poses):,} frames, det 2D, 20 frames/s, N = {args.hypotheses}, "
          f"DDIM {args.steps} steps, flip; {time.perf_counter() - t0:.0f} s")
    print("| filter | min_cutoff (Hz) | beta (per m/s) | MPJPE (mm) | accel. error (mm/frame^2) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        name = "none" if r["min_cutoff"] is None else "One Euro"
        c = "" if r["min_cutoff"] is None else f"{r['min_cutoff']:g}"
        b = "" if r["beta"] is None else f"{r['beta']:g}"
        print(f"| {name} | {c} | {b} | {r['mpjpe']:.1f} | {r['accel']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
