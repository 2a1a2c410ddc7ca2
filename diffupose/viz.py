"""Figures of a lift result: the 2D input beside the 3D hypotheses.

Left: the 2D keypoints as the model saw them (image axes, y down; weak joints crossed out in red).
Right: the hypotheses (faint), their aggregate (bold) and each joint's spread (its colour, in cm),
in the camera frame turned so that up is up (plotted x, z, -y).

Matplotlib's object API with the Agg canvas only (no pyplot), so importing this module never
changes the backend of a user's session. One frame to an image; a clip to GIF (Pillow) or MP4
(ffmpeg: a system one, or the binary of the optional imageio-ffmpeg package), drawn frame by frame
into the writer.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .data.user_files import UserFileError, check_finite
from .keypoints import LiftOutput

MAX_GIF_FRAMES = 1500  # Pillow keeps every frame in memory until the file is written
# A lift output is root-relative metres: a value beyond this is a broken file, not a pose (drawn,
# it would be a blank or garbage figure; NaN stops matplotlib with an error of its own).
MAX_POSE_METRES = 100.0
MAX_KEYPOINT_2D = 1e6  # pixels or normalised screen units
LEFT, RIGHT, CENTRE = "#1f77b4", "#d62728", "#444444"


def ffmpeg_path() -> Optional[str]:
    """The ffmpeg that writes MP4: matplotlib's setting or the one on PATH, else the binary the
    imageio-ffmpeg package ships (`pip install diffupose[video]`: no system ffmpeg needed)."""
    from matplotlib import rcParams

    found = shutil.which(rcParams.get("animation.ffmpeg_path", "ffmpeg"))
    if found:
        return found
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - not installed, or its binary missing for this platform
        return None
    return exe if exe and os.path.isfile(exe) else None


def ffmpeg_available() -> bool:
    return ffmpeg_path() is not None


def _bones(names: Sequence[str], parents: Sequence[int]) -> list[tuple[int, int, str]]:
    """(child, parent, colour) for each bone, coloured by the child's side."""
    out = []
    for j, p in enumerate(parents):
        if p >= 0:
            side = names[j][:2]
            out.append((j, p, LEFT if side == "l_" else RIGHT if side == "r_" else CENTRE))
    return out


def _parents(res: LiftOutput) -> list[int]:
    parents = res.meta.get("parents")
    if parents is None or len(parents) != len(res.joint_names):
        from .skeleton import get_skeleton

        parents = get_skeleton(res.meta.get("skeleton", "h36m17")).parents
    return list(parents)


class FramePainter:
    """A figure with the two panels, redrawn for any row of a lift output."""

    def __init__(self, res: LiftOutput, rows: Sequence[int], max_hyp: int = 20, elev: float = 12.0,
                 azim: float = -70.0, figsize=(11, 5.2), dpi: int = 100):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
        from mpl_toolkits.mplot3d import Axes3D  # noqa: F401 (registers the 3d projection)

        self.res, self.max_hyp, self.elev, self.azim = res, max_hyp, elev, azim
        check_drawable(res, rows, max_hyp)
        self.bones = _bones(res.joint_names, _parents(res))
        self.fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.fig)
        self.ax2 = self.fig.add_subplot(1, 2, 1)
        self.ax3 = self.fig.add_subplot(1, 2, 2, projection="3d")
        rows = np.asarray(rows)
        # fixed limits over the clip, so the view does not jump from frame to frame
        inp = res.meta.get("input", {})
        self.pixel = inp.get("coordinates") == "pixels"
        self.image_size = inp.get("image_size")
        k2 = np.asarray(res.keypoints2d[rows], dtype=np.float64).reshape(-1, 2)
        lo, hi = k2.min(0), k2.max(0)
        centre, half = 0.5 * (lo + hi), 0.6 * max(hi - lo) + 1e-6  # square, so both panels are the same size
        self.lim2 = (centre - half, centre + half)
        hyp = np.asarray(res.hypotheses[rows][:, :max(max_hyp, 1)], dtype=np.float64)
        self.radius = float(min(max(np.abs(hyp).max() * 1.05, 0.3), 3.0))  # metres; bounded for broken outputs
        smax = float(np.asarray(res.spread[rows]).max()) * 100
        self.norm = Normalize(vmin=0.0, vmax=max(smax, 1.0))
        self.cmap = "plasma"
        cb = self.fig.colorbar(ScalarMappable(norm=self.norm, cmap=self.cmap), ax=self.ax3, shrink=0.6, pad=0.08)
        cb.set_label("per-joint spread of the hypotheses (cm)")
        self.fig.subplots_adjust(left=0.05, right=0.95, top=0.88, bottom=0.08, wspace=0.15)

    @staticmethod
    def _up(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera frame (x right, y down, z forward) -> plot axes (x, depth, up)."""
        return p[..., 0], p[..., 2], -p[..., 1]

    def draw(self, row: int) -> None:
        from matplotlib.ticker import MaxNLocator

        res, ax2, ax3 = self.res, self.ax2, self.ax3
        ax2.cla()
        ax3.cla()
        k2 = np.asarray(res.keypoints2d[row], dtype=np.float64)
        weak = np.asarray(res.weak[row], dtype=bool)
        for c, p, col in self.bones:
            ax2.plot(k2[[c, p], 0], k2[[c, p], 1], color=col, lw=2.5, solid_capstyle="round")
        ax2.scatter(k2[~weak, 0], k2[~weak, 1], s=18, c="k", zorder=3)
        if weak.any():
            ax2.scatter(k2[weak, 0], k2[weak, 1], s=70, marker="x", c="red", lw=2, zorder=4, label="weak joint")
            ax2.legend(loc="lower right", fontsize=8, frameon=False)
        if self.pixel and self.image_size:
            w, h = self.image_size
            ax2.add_patch(_rect(w, h))
        ax2.set_xlim(self.lim2[0][0], self.lim2[1][0])
        ax2.set_ylim(self.lim2[1][1], self.lim2[0][1])  # image y points down
        ax2.set_aspect("equal")
        ax2.set_title("2D input" + (" (pixels)" if self.pixel else " (normalised)"), fontsize=10)
        ax2.tick_params(labelsize=7)

        hyp = np.asarray(res.hypotheses[row], dtype=np.float64)
        agg = np.asarray(res.pose3d[row], dtype=np.float64)
        spread_cm = np.asarray(res.spread[row], dtype=np.float64) * 100
        for h in hyp[:self.max_hyp]:
            x, y, z = self._up(h)
            for c, p, col in self.bones:
                ax3.plot(x[[c, p]], y[[c, p]], z[[c, p]], color=col, lw=0.8, alpha=0.18)
        x, y, z = self._up(agg)
        for c, p, col in self.bones:
            ax3.plot(x[[c, p]], y[[c, p]], z[[c, p]], color=col, lw=3.0)
        ax3.scatter(x, y, z, c=spread_cm, cmap=self.cmap, norm=self.norm, s=30 + 4 * np.minimum(spread_cm, 25),
                    depthshade=False, edgecolors="k", linewidths=0.5, zorder=5)
        r = self.radius
        ax3.set_xlim(-r, r)
        ax3.set_ylim(-r, r)
        ax3.set_zlim(-r, r)
        ax3.set_box_aspect((1, 1, 1))
        ax3.view_init(elev=self.elev, azim=self.azim)
        ax3.set_xlabel("x (m)", fontsize=8)
        ax3.set_ylabel("depth z (m)", fontsize=8)
        ax3.set_zlabel("up -y (m)", fontsize=8)
        ax3.tick_params(labelsize=6)
        for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
            axis.set_major_locator(MaxNLocator(5))
        n = hyp.shape[0]
        shown = min(n, self.max_hyp)
        agg_name = res.meta.get("settings", {}).get("aggregate", "mean")
        ax3.set_title(f"3D: {agg_name} (bold) of {n} hypotheses" + (f" ({shown} drawn faint)" if shown else ""),
                      fontsize=10)
        fid = f"input frame {int(res.frame_index[row])}"
        if res.frame_id is not None:
            fid += f" (id {res.frame_id[row]})"
        self.fig.suptitle(f"{fid}  |  mean spread {spread_cm.mean():.1f} cm  |  {int(weak.sum())} weak joints",
                          fontsize=11)


def check_drawable(res: LiftOutput, rows: Sequence[int], max_hyp: int) -> None:
    """The rows to draw hold finite poses of a sane size (only those rows are read: a long output
    stays memory-mapped); else UserFileError naming the file and the first bad row."""
    rows = np.asarray(rows, dtype=np.int64)
    parts = (("pose3d", res.pose3d, MAX_POSE_METRES), ("spread", res.spread, MAX_POSE_METRES),
             ("hypotheses", res.hypotheses, MAX_POSE_METRES), ("keypoints2d", res.keypoints2d, MAX_KEYPOINT_2D))
    for name, arr, limit in parts:
        a = np.asarray(arr[rows] if name != "hypotheses" else arr[rows][:, :max(max_hyp, 1)], dtype=np.float64)
        ok = (np.isfinite(a) & (np.abs(a) <= limit)).reshape(len(rows), -1).all(-1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            check_finite(a[i], f"{res.path or 'lift output'}: row {int(rows[i])}: {name}", limit,
                         error=UserFileError)


def _rect(w: float, h: float):
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), w, h, fill=False, ls="--", lw=0.8, ec="0.6")


def save_frame(res: LiftOutput, row: int, path, *, max_hyp: int = 20, elev: float = 12.0, azim: float = -70.0,
               dpi: int = 100) -> Path:
    painter = FramePainter(res, [row], max_hyp=max_hyp, elev=elev, azim=azim, dpi=dpi)
    painter.draw(row)
    with _atomic(path) as tmp:
        painter.fig.savefig(tmp, dpi=dpi)
    return Path(path)


def save_clip(res: LiftOutput, rows: Sequence[int], path, *, fps: float = 25.0, max_hyp: int = 20,
              elev: float = 12.0, azim: float = -70.0, dpi: int = 80, progress: bool = True) -> Path:
    """rows of the lift output -> .gif (Pillow) or .mp4 (ffmpeg)."""
    from matplotlib.animation import FFMpegWriter, PillowWriter

    path = Path(path)
    painter = FramePainter(res, rows, max_hyp=max_hyp, elev=elev, azim=azim, dpi=dpi)
    writer = PillowWriter(fps=fps) if path.suffix.lower() == ".gif" else FFMpegWriter(fps=fps)
    from tqdm.auto import tqdm

    from matplotlib import rc_context

    mp4 = {} if path.suffix.lower() == ".gif" else {"animation.ffmpeg_path": ffmpeg_path() or "ffmpeg"}
    with rc_context(mp4), _atomic(path) as tmp, writer.saving(painter.fig, str(tmp), dpi):
        for row in tqdm(rows, unit="frame", desc="drawing", leave=False, disable=None if progress else True):
            painter.draw(row)
            writer.grab_frame()
    return path


@contextlib.contextmanager
def _atomic(path):
    """A temporary file name beside path (same suffix: the writers choose the format by it),
    renamed to path on success; on failure nothing is left behind."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.") as d:
        tmp = os.path.join(d, "out" + path.suffix)
        yield tmp
        os.replace(tmp, path)
