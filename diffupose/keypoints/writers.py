"""Writing a lift's results: the output path checked before any work (`check_output_path`), and
`LiftWriter`, which streams .npz / .json (and .bvh / .csv, diffupose/export.py) outputs batch by
batch and makes them appear atomically;
`remove_stale_temporaries` clears what a killed lift left.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import KeypointError, PathLike


from ..export import EXPORT_FORMATS  # .bvh, .csv: the aggregate only, written by diffupose/export.py

# Streamed by LiftWriter, whatever the length: .npz / .json as they come; .bvh / .csv through
# memory-mapped temporaries, handed to diffupose/export.py at the end (the BVH needs the clip's
# median bone lengths; export.py solves and writes it in chunks).
OUTPUT_FORMATS = (".npz", ".json") + EXPORT_FORMATS
# Formats written from a whole lifted clip (suffix -> writer(lifted: diffupose.api.Lifted, path)):
# the hook for writers that need every field of every frame in memory at once. A writer makes its
# file appear complete or not at all. `diffupose lift -o X.suffix` and `Lifted.save` dispatch on
# the suffix.
CLIP_WRITERS: dict = {}


def output_formats() -> tuple[str, ...]:
    """Every suffix a lift can write: the streamed formats, then the registered clip writers'."""
    return OUTPUT_FORMATS + tuple(s for s in CLIP_WRITERS if s not in OUTPUT_FORMATS)


def register_clip_writer(suffix: str, writer) -> None:
    """Make `diffupose lift -o OUT<suffix>` and `Lifted.save` write through writer(lifted, path)."""
    suffix = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if suffix in OUTPUT_FORMATS:
        raise ValueError(f"{suffix} is written by LiftWriter; register another suffix")
    CLIP_WRITERS[suffix] = writer


def check_output_path(path: PathLike, inputs: Sequence[PathLike] = (), formats=OUTPUT_FORMATS) -> Path:
    """An output path we can write, checked before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in formats:
        raise KeypointError(f"output {path}: unknown format {path.suffix or '(no extension)'!r}; "
                            f"use {' or '.join(formats)}")
    if path.is_dir():
        raise KeypointError(f"output {path} is a directory; give a file name")
    for i in inputs:
        if Path(i).exists() and path.exists() and os.path.samefile(i, path):
            raise KeypointError(f"output {path} is the input file; refusing to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise KeypointError(f"cannot write {path}: {parent} {why}")
    if path.exists() and not os.access(path, os.W_OK):
        raise KeypointError(f"cannot write {path}: permission denied")
    try:  # os.access is not the whole truth (read-only mounts, ACLs): really create a file there
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise KeypointError(f"cannot write {path}: {e.strerror or e}") from None
    return path


_PART = ".part-"  # .<output name>.part-<host>-<pid>-<random>: the temporaries of a running lift
_LEGACY_PART = re.compile(r"[a-z0-9_]{8}")  # .<output name>.<8 random>: those of diffupose before the pid tag
_PART_FILES = {"pose3d.npy", "hypotheses.npy", "spread.npy", "weak.npy", "unreliable.npy", "pose2d.npy",
               "keypoints2d.npy", "frame_index.npy", "score.npy", "out.npz", "out.json"}
STALE_PART_SECONDS = 24 * 3600  # a temporary folder of another host (or untagged) is stale after this


def _host_tag() -> str:
    import platform

    return re.sub(r"[^A-Za-z0-9]", "", platform.node())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or not a pid we can ask about): leave its folder alone
    return True


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporary folders that earlier lifts to `path` left beside it when they were
    killed (SIGKILL, a power cut: nothing runs to clean up): this host's whose process is gone,
    and any older than STALE_PART_SECONDS (another host's, on a shared disk; or untagged ones of
    older versions, recognised by holding only lift temporaries). Returns what was removed."""
    import shutil

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    head = f".{path.name}."
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    now = time.time()
    for ent in entries:
        if not ent.name.startswith(head) or not ent.is_dir(follow_symlinks=False):
            continue
        rest = ent.name[len(head) - 1:]
        try:
            old = now - ent.stat(follow_symlinks=False).st_mtime > STALE_PART_SECONDS
        except OSError:
            continue
        if rest.startswith(_PART):
            tag = rest[len(_PART):].split("-")
            mine = len(tag) >= 3 and tag[0] == host and tag[1].isdigit()
            stale = (mine and not _pid_alive(int(tag[1]))) or old
        elif _LEGACY_PART.fullmatch(rest[1:]):
            try:
                stale = old and set(os.listdir(ent.path)) <= _PART_FILES
            except OSError:
                stale = False
        else:
            continue
        if stale:
            shutil.rmtree(ent.path, ignore_errors=True)
            removed.append(Path(ent.path))
    return removed


class LiftWriter:
    """Writes lift results batch by batch. .npz: arrays go to memory-mapped temporaries beside the
    output and np.savez copies them into the archive in chunks, so memory stays bounded whatever
    the length; .json: frames are streamed as they come. Either way the file appears atomically
    (a temporary renamed at the end) and nothing is left behind on failure, Ctrl-C or SIGTERM;
    the folder a SIGKILL leaves (`.<name>.part-<host>-<pid>-*`) is removed by the next lift to
    the same output (`remove_stale_temporaries`)."""

    def __init__(self, path: PathLike, *, frames: int, n_hyp: int, joint_names: Sequence[str], meta: dict,
                 has_scores: bool, frame_ids: Optional[np.ndarray] = None):
        self.path = Path(path)
        self.json = self.path.suffix.lower() == ".json"
        self.F, self.N, self.J = frames, n_hyp, len(joint_names)
        self.joint_names, self.meta, self.has_scores = list(joint_names), meta, has_scores
        self.frame_ids = frame_ids
        parent = self.path.parent if str(self.path.parent) else Path(".")
        self.removed_stale = remove_stale_temporaries(self.path)
        self._tmpdir = tempfile.TemporaryDirectory(
            dir=parent, prefix=f".{self.path.name}{_PART}{_host_tag()}-{os.getpid()}-")
        tmp = Path(self._tmpdir.name)
        self._final_tmp = tmp / ("out" + self.path.suffix)
        self._done = 0
        if self.json:
            self._f = self._final_tmp.open("w")
            head = {"format": "diffupose-lift", "meta": meta, "joint_names": self.joint_names}
            text = json.dumps(head, indent=1)
            self._f.write(text[:text.rstrip().rfind("}")].rstrip() + ',\n "frames": [\n')
            self._first = True
        else:
            from numpy.lib.format import open_memmap

            def mm(name, shape, dtype):
                return open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

            F, N, J = frames, n_hyp, self.J
            self.arrays = {
                "pose3d": mm("pose3d", (F, J, 3), np.float32),
                "hypotheses": mm("hypotheses", (F, N, J, 3), np.float32),
                "spread": mm("spread", (F, J), np.float32),
                "weak": mm("weak", (F, J), np.bool_),
                "unreliable": mm("unreliable", (F,), np.bool_),
                "pose2d": mm("pose2d", (F, J, 2), np.float32),
                "keypoints2d": mm("keypoints2d", (F, J, 2), np.float32),
                "frame_index": mm("frame_index", (F,), np.int64),
            }
            if has_scores:
                self.arrays["score"] = mm("score", (F, J), np.float32)

    def write(self, *, pose3d, hypotheses, spread, weak, unreliable, pose2d, keypoints2d, frame_index,
              score=None) -> None:
        n = len(pose3d)
        s, e = self._done, self._done + n
        if e > self.F:
            raise ValueError(f"LiftWriter: {e} frames written, {self.F} declared")
        if (score is not None) != self.has_scores:
            raise ValueError(f"LiftWriter: declared has_scores={self.has_scores}, got score={score is not None}")
        if self.json:
            r = lambda a, d=5: np.round(np.asarray(a, dtype=np.float64), d).tolist()  # noqa: E731 (10 um)
            for i in range(n):
                fr = {"frame": int(frame_index[i])}
                if self.frame_ids is not None:
                    fid = self.frame_ids[frame_index[i]]
                    fr["id"] = fid.item() if hasattr(fid, "item") else fid
                fr.update(pose3d=r(pose3d[i]), spread=r(spread[i]), weak=np.asarray(weak[i]).tolist(),
                          unreliable=bool(unreliable[i]), hypotheses=r(hypotheses[i]), pose2d=r(pose2d[i]),
                          keypoints2d=r(keypoints2d[i], 3))
                if score is not None:
                    fr["score"] = r(score[i], 4)
                self._f.write(("" if self._first else ",\n") + json.dumps(fr, separators=(",", ":")))
                self._first = False
        else:
            a = self.arrays
            a["pose3d"][s:e], a["hypotheses"][s:e], a["spread"][s:e] = pose3d, hypotheses, spread
            a["weak"][s:e], a["pose2d"][s:e], a["keypoints2d"][s:e] = weak, pose2d, keypoints2d
            a["unreliable"][s:e] = unreliable
            a["frame_index"][s:e] = frame_index
            if score is not None:
                a["score"][s:e] = score
        self._done = e

    def close(self) -> Path:
        if self._done != self.F:
            raise ValueError(f"LiftWriter: {self._done} of {self.F} frames written")
        if self.json:
            self._f.write("\n ]\n}\n")
            self._f.close()
        elif self.path.suffix.lower() in EXPORT_FORMATS:  # for animation and analysis tools: the aggregate
            from ..export import DEFAULT_FPS, write_export

            a = self.arrays
            write_export(self._final_tmp, pose3d=a["pose3d"], joint_names=self.joint_names,
                         parents=self.meta["parents"], fps=self.meta.get("settings", {}).get("fps") or DEFAULT_FPS,
                         frame_index=a["frame_index"], unreliable=a["unreliable"])
        else:
            extra = {"joint_names": np.array(self.joint_names), "meta": np.array(json.dumps(self.meta))}
            if self.frame_ids is not None:
                extra["frame_id"] = np.asarray(self.frame_ids)[self.arrays["frame_index"]]
            np.savez(self._final_tmp, **self.arrays, **extra)
        if not self.json:
            for m in self.arrays.values():
                m._mmap.close()
            self.arrays = {}
        os.replace(self._final_tmp, self.path)
        self._tmpdir.cleanup()
        return self.path

    def abort(self) -> None:
        if self.json and not self._f.closed:
            self._f.close()
        for m in getattr(self, "arrays", {}).values():
            m._mmap.close()
        self._tmpdir.cleanup()

