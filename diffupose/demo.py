"""The demo's figure: per-action MPJPE bars (the model at N = 1 and N, the mean-pose baseline)
under one example frame (the 2D input beside the aggregate and a few hypotheses in 3D, drawn by
diffupose.viz, with the ground truth dashed for comparison).

Matplotlib's object API with the Agg canvas only, as in diffupose.viz.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .keypoints import LiftOutput
from .metrics import ACTION_ABBREVIATIONS

# one colour per bar series, in order: the model's rows, then the baseline (grey)
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
BASELINE_COLOUR = "#9e9e9e"


def example_output(pose2d: np.ndarray, hypotheses: np.ndarray, aggregate_pose: np.ndarray, skeleton,
                   aggregate: str = "mean", frame: int = 0) -> LiftOutput:
    """One frame as a one-row lift output, so that diffupose.viz draws it: pose2d [J, 2]
    (screen-normalised), hypotheses [N, J, 3] and their aggregate [J, 3] in metres."""
    hyp = np.asarray(hypotheses, dtype=np.float32)
    J = hyp.shape[1]
    spread = np.sqrt(np.square(hyp - hyp.mean(0)).sum(-1).mean(0))  # [J] RMS distance from the mean
    p2 = np.asarray(pose2d, dtype=np.float32)[None]
    meta = {"skeleton": skeleton.name, "parents": list(skeleton.parents),
            "settings": {"aggregate": aggregate}, "input": {"coordinates": "normalized"}}
    return LiftOutput(pose3d=np.asarray(aggregate_pose, np.float32)[None], hypotheses=hyp[None],
                      spread=spread[None], weak=np.zeros((1, J), bool), pose2d=p2, keypoints2d=p2,
                      frame_index=np.array([frame]), joint_names=tuple(skeleton.joints), meta=meta)


def save_demo_figure(path, bars: Mapping[str, Mapping[str, float]], actions: Sequence[str], example: LiftOutput,
                     *, ground_truth: Optional[np.ndarray] = None, baseline: Optional[str] = None,
                     title: str = "", example_title: str = "", max_hyp: int = 5, dpi: int = 100) -> Path:
    """bars: series name -> {action: MPJPE mm, ..., "Avg": mm} (the Table I rows); `baseline`
    names the series drawn grey. The example frame is drawn above them."""
    from .viz import FramePainter, _atomic

    painter = FramePainter(example, [0], max_hyp=max_hyp, figsize=(12, 10.5), dpi=dpi)
    if ground_truth is not None:  # keep the ground truth inside the fixed 3D limits
        painter.radius = float(min(max(painter.radius, np.abs(ground_truth).max() * 1.05), 3.0))
    painter.draw(0)
    fig, ax3 = painter.fig, painter.ax3
    fig.subplots_adjust(left=0.05, right=0.95, top=0.9, bottom=0.47, wspace=0.15)
    if ground_truth is not None:
        x, y, z = painter._up(np.asarray(ground_truth, dtype=np.float64))
        for c, p, _ in painter.bones:
            ax3.plot(x[[c, p]], y[[c, p]], z[[c, p]], color="k", lw=1.2, ls="--")
        ax3.plot([], [], color="k", lw=1.2, ls="--", label="ground truth (for comparison; not an input)")
        ax3.legend(loc="upper left", fontsize=7, frameon=False)
    if example_title:
        fig.suptitle(example_title, fontsize=10, y=0.955)
    if title:
        fig.text(0.5, 0.985, title, ha="center", va="top", fontsize=12, weight="bold")

    ax = fig.add_axes((0.07, 0.06, 0.9, 0.32))
    cols = list(actions) + ["Avg"]
    names = list(bars)
    width = 0.8 / max(len(names), 1)
    xs = np.arange(len(cols))
    colours = iter(SERIES_COLOURS)
    for i, name in enumerate(names):
        vals = np.array([bars[name][c] for c in cols])
        colour = BASELINE_COLOUR if name == baseline else next(colours)
        rects = ax.bar(xs + (i - (len(names) - 1) / 2) * width, vals, width, label=name, color=colour)
        ax.bar_label(rects, labels=[f"{v:.0f}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(xs, [ACTION_ABBREVIATIONS.get(c, c).replace("_", " ") for c in cols], fontsize=9)
    ax.set_ylabel("MPJPE (mm), lower is better", fontsize=9)
    ax.set_title("Protocol #1 per action (test set)", fontsize=10)
    ax.axvline(len(cols) - 1.5, color="0.7", lw=0.8)  # the average apart from the actions
    ax.legend(fontsize=8, frameon=False, ncol=len(names), loc="upper left")
    top = max(max(bars[n][c] for c in cols) for n in names)
    ax.set_ylim(0, top * 1.22)
    ax.tick_params(axis="y", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    with _atomic(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)
