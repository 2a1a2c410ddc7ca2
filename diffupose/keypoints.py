"""2D keypoints in, lifted poses out: the readers, the COCO -> Human3.6M mapping, the checks that
stop a bad input before it becomes a silently wrong 3D pose, and the writers of `diffupose lift`.

Readers (by extension), each giving a `Keypoints` [frames, joints, 2 or 3] (3rd channel: the
detector's score):
- .json: COCO keypoint style. Either the COCO *results* format (a list of {"image_id",
  "keypoints": [x, y, score] * J, "score"}; one person per image: the highest-scoring, frames
  ordered by image_id) or a list of per-frame objects {"keypoints": ...} in frame order (a frame
  whose "keypoints" is null or [] is a detector miss). A dict with "annotations" (COCO ground
  truth) is read like the results format. Keypoints may also be nested [[x, y(, s)], ...].
- .npy (memory-mapped, so a huge file is not read at once), .npz (the array named "keypoints",
  or the only array): numeric [frames, joints, 2 or 3]. Pickled object arrays are refused.
- .csv / .txt / .tsv: one row per frame, x,y[,score] per joint, an optional header row (a first
  column named frame / image_id / index ... holds frame ids); comma, tab or space separated;
  UTF-8, or UTF-16 / UTF-32 (data.user_files.open_text).
Every reader opens regular files only (a FIFO or device named .json would block it) and reports
a file it cannot read as one KeypointError line naming it.

Layouts: coco17 (COCO order), h36m17 (the Human3.6M / VideoPose3D order of the models), h36m16
(no nose), humaneva15. `convert_layout` maps COCO to Human3.6M approximately (see COCO_TO_H36M17):
the hip and shoulder centres stand in for H36M's pelvis and thorax, the eyes' midpoint for the top
of the head, which sits a little lower than H36M's head joint.

Coordinates: pixels with the image size, normalised to the model's screen coordinates
x / w * 2 - [1, h / w] (diffupose.data.cameras), or already normalised.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .data.user_files import decoding_error, open_text, parse_json, require_regular_file
from .skeleton import H36M16, H36M17, SKELETONS

PathLike = Union[str, Path]


class KeypointError(ValueError):
    """An input that cannot be lifted as it is; the message (one line) says which and why."""


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------
COCO17_JOINTS = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
                 "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
LAYOUT_JOINTS: dict[str, tuple[str, ...]] = {"coco17": COCO17_JOINTS,
                                             **{name: s.joints for name, s in SKELETONS.items()}}
LAYOUTS = tuple(LAYOUT_JOINTS)

_C = {name: i for i, name in enumerate(COCO17_JOINTS)}
# Each H36M joint is the mean of these COCO joints (its score the minimum of theirs). Approximate:
# COCO has no pelvis, spine, thorax or head top; spine = mid(pelvis, thorax) = mean of the four.
COCO_TO_H36M17: dict[str, tuple[str, ...]] = {
    "pelvis": ("l_hip", "r_hip"),
    "r_hip": ("r_hip",), "r_knee": ("r_knee",), "r_ankle": ("r_ankle",),
    "l_hip": ("l_hip",), "l_knee": ("l_knee",), "l_ankle": ("l_ankle",),
    "spine": ("l_hip", "r_hip", "l_shoulder", "r_shoulder"),
    "thorax": ("l_shoulder", "r_shoulder"),
    "nose": ("nose",),
    "head": ("l_eye", "r_eye"),
    "l_shoulder": ("l_shoulder",), "l_elbow": ("l_elbow",), "l_wrist": ("l_wrist",),
    "r_shoulder": ("r_shoulder",), "r_elbow": ("r_elbow",), "r_wrist": ("r_wrist",),
}
assert tuple(COCO_TO_H36M17) == H36M17.joints


def _sources(src: str, dst: str) -> Optional[list[tuple[int, ...]]]:
    """For each joint of layout dst, the joints of layout src it is the mean of; None if no mapping."""
    if src == dst:
        return [(j,) for j in range(len(LAYOUT_JOINTS[src]))]
    if src == "coco17" and dst in ("h36m17", "h36m16"):
        return [tuple(_C[n] for n in COCO_TO_H36M17[name]) for name in LAYOUT_JOINTS[dst]]
    if src == "h36m17" and dst == "h36m16":
        return [(H36M17.joints.index(name),) for name in H36M16.joints]
    return None


def check_conversion(src: str, dst: str) -> None:
    if _sources(src, dst) is None:
        hint = " (h36m16 lacks the nose that h36m17 models need)" if (src, dst) == ("h36m16", "h36m17") else ""
        raise KeypointError(f"cannot map {src} keypoints to the checkpoint's {dst} skeleton{hint}; "
                            f"supported: coco17 -> h36m17/h36m16, h36m17 -> h36m16, and same to same")


def convert_layout(xy: np.ndarray, score: Optional[np.ndarray], missing: Optional[np.ndarray], src: str,
                   dst: str) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """xy [..., J_src, 2], score and missing [..., J_src] -> the same in layout dst. A derived joint
    is the mean of its sources, its score their minimum, missing if any source is."""
    check_conversion(src, dst)
    sources = _sources(src, dst)
    if all(len(s) == 1 for s in sources):
        idx = [s[0] for s in sources]
        return (xy[..., idx, :], None if score is None else score[..., idx],
                None if missing is None else missing[..., idx])
    out_xy = np.stack([xy[..., list(s), :].mean(-2) for s in sources], -2)
    out_s = None if score is None else np.stack([score[..., list(s)].min(-1) for s in sources], -1)
    out_m = None if missing is None else np.stack([missing[..., list(s)].any(-1) for s in sources], -1)
    return out_xy.astype(np.float32, copy=False), out_s, out_m


def _layout_errors(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For 17-joint poses [F, 17, 2], how badly each frame fits each order, in units of the pose's
    size (RMS joint distance from the centroid), both cheap and independent of view and scale:
    - as h36m17: the pelvis (0) is mid-hips (1, 4) and the thorax (8) near mid-shoulders (11, 14);
    - as coco17: the five face points (nose, eyes, ears: 0-4) lie close together.
    Read in the other order, these joints are legs, arms and elbows, far from where they would be."""
    c = xy - xy.mean(-2, keepdims=True)
    scale = np.sqrt((c ** 2).sum(-1).mean(-1))
    scale = np.where(scale > 0, scale, np.nan)
    err_h36m = 0.5 * (np.linalg.norm(xy[:, 0] - 0.5 * (xy[:, 1] + xy[:, 4]), axis=-1)
                      + np.linalg.norm(xy[:, 8] - 0.5 * (xy[:, 11] + xy[:, 14]), axis=-1)) / scale
    face = xy[:, :5]
    err_coco = np.sqrt(((face - face.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1)) / scale
    return err_h36m, err_coco


# The median per-frame ratio err_h36m / err_coco is ~0.1-0.3 for Human3.6M-ordered bodies and
# ~3-5 for COCO-ordered ones (tests/test_keypoints.py: rotated, noisy bodies, 8 cm joint noise
# included); between 1/LAYOUT_MARGIN and LAYOUT_MARGIN the order is left undecided.
LAYOUT_MARGIN = 2.0


def compare_layouts(xy: np.ndarray) -> tuple[Optional[str], float]:
    """(the more plausible of coco17 / h36m17 for 17-joint poses [F, 17, 2], or None if unclear;
    the median ratio err_h36m / err_coco, > 1 meaning COCO-like)."""
    if xy.ndim != 3 or xy.shape[1:] != (17, 2) or len(xy) == 0:
        return None, float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        e_h, e_c = _layout_errors(np.asarray(xy, dtype=np.float64))
        r = e_h / e_c
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return None, float("nan")
    ratio = float(np.median(r))
    if ratio > LAYOUT_MARGIN:
        return "coco17", ratio
    if ratio < 1 / LAYOUT_MARGIN:
        return "h36m17", ratio
    return None, ratio


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
@dataclass
class Keypoints:
    """data [F, J, 2 or 3] (x, y[, score]); a read-only memory map for .npy inputs."""

    data: np.ndarray
    path: Path
    kind: str  # "coco-json", "json", "npy", "npz", "csv"
    layout: Optional[str] = None  # None: not stated by the file
    frame_ids: Optional[np.ndarray] = None  # [F] ids from the file (COCO image_id, a CSV frame column)
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.data.shape[1])

    @property
    def has_scores(self) -> bool:
        return self.data.shape[2] == 3


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_keypoints(path: PathLike, key: Optional[str] = None) -> Keypoints:
    """Read a keypoint file by its extension (see the module doc); raises KeypointError."""
    path = require_regular_file(path, "input", error=KeypointError, missing=KeypointError)
    ext = path.suffix.lower()
    try:
        if ext == ".json":
            kp = _read_json(path)
        elif ext == ".npy":
            kp = _read_npy(path)
        elif ext == ".npz":
            kp = _read_npz(path, key)
        elif ext in (".csv", ".txt", ".tsv"):
            kp = _read_csv(path)
        else:
            raise KeypointError(f"{path}: unknown input format {ext or '(no extension)'!r}; "
                                "expected .json (COCO keypoints), .npy, .npz or .csv")
    except OSError as e:
        raise KeypointError(f"cannot read {path}: {e.strerror or e}") from None
    _check_shape(kp)
    return kp


def _check_shape(kp: Keypoints) -> None:
    a, p = kp.data, kp.path
    if a.ndim != 3:
        raise KeypointError(f"{p}: expected an array [frames, joints, 2 or 3], got shape {a.shape}")
    if a.shape[0] == 0:
        raise KeypointError(f"{p}: no frames in the input")
    if a.shape[2] not in (2, 3):
        raise KeypointError(f"{p}: {a.shape[2]} channels per joint; expected 2 (x, y) or 3 (x, y, score)")
    if a.shape[1] not in {len(j) for j in LAYOUT_JOINTS.values()}:
        raise KeypointError(f"{p}: {a.shape[1]} joints per frame; supported layouts: "
                            + ", ".join(f"{n} ({len(j)})" for n, j in LAYOUT_JOINTS.items()))
    if kp.layout is not None and len(LAYOUT_JOINTS[kp.layout]) != a.shape[1]:
        raise KeypointError(f"{p}: {a.shape[1]} joints, but layout {kp.layout} has {len(LAYOUT_JOINTS[kp.layout])}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise KeypointError(f"{p}: keypoints must be numbers, got dtype {a.dtype}")


def _read_npy(path: Path) -> Keypoints:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise KeypointError(f"{path}: not a numeric .npy array ({_one_line(e)}); pickled objects are refused") from None
    except EOFError:
        raise KeypointError(f"{path}: empty or truncated .npy file") from None
    return Keypoints(a, path, "npy")


def _read_npz(path: Path, key: Optional[str]) -> Keypoints:
    import zipfile

    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as e:
        raise KeypointError(f"{path}: not a readable .npz archive ({_one_line(e)})") from None
    with z:
        names = list(z.files)
        if key is None:
            key = "keypoints" if "keypoints" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise KeypointError(f"{path} holds arrays {names}; name the keypoints with --key"
                                    if names else f"{path}: the archive holds no arrays")
        elif key not in names:
            raise KeypointError(f"{path}: no array {key!r}; it holds {names}")
        try:
            a = z[key]
        except ValueError as e:  # an object array (pickled), which allow_pickle=False refuses
            raise KeypointError(f"{path}[{key}]: not a numeric array ({_one_line(e)}); pickled objects are "
                                "refused (VideoPose3D data_2d_*.npz dicts: save one [frames, 17, 2] array)") from None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise KeypointError(f"{path}[{key}]: corrupt archive member ({_one_line(e)})") from None
    return Keypoints(a, path, "npz")


def _numbered_rows(path: Path, reader) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a CSV reader, a byte that is not text in the file's encoding (a
    UTF-16 file without a byte-order mark, binary data) named by its line."""
    lineno = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as e:
            raise decoding_error(path, lineno + 1, e, KeypointError) from None
        except csv.Error as e:
            raise KeypointError(f"{path}:{lineno + 1}: not readable as CSV ({_one_line(e)})") from None
        lineno += 1
        yield lineno, row


_FRAME_COLUMNS = ("frame", "frame_id", "frame_index", "image_id", "image", "index", "idx", "time", "t",
                  "timestamp")


def _read_csv(path: Path) -> Keypoints:
    with open_text(path) as f:
        try:
            text_head = f.readline()
        except UnicodeDecodeError as e:
            raise decoding_error(path, 1, e, KeypointError) from None
    delim = "," if "," in text_head else ("\t" if "\t" in text_head else None)
    rows: list[list[float]] = []
    header: Optional[list[str]] = None
    with open_text(path, newline="") as f:
        reader = csv.reader(f, delimiter=delim) if delim else (line.split() for line in f)
        for lineno, row in _numbered_rows(path, reader):
            row = [c.strip() for c in row]
            if not row or all(c == "" for c in row):
                continue
            try:
                rows.append([float(c) if c != "" else math.nan for c in row])
            except ValueError:
                if lineno == 1 and not rows:
                    header = row
                    continue
                raise KeypointError(f"{path}:{lineno}: not a number in {','.join(row)[:80]!r}") from None
            if len(rows[-1]) != len(rows[0]):
                raise KeypointError(f"{path}:{lineno}: {len(rows[-1])} columns, but the first row has {len(rows[0])}")
    if not rows:
        raise KeypointError(f"{path}: no frames in the input")
    a = np.array(rows, dtype=np.float64)
    frame_ids = None
    if header is not None and header[0].strip().lower() in _FRAME_COLUMNS:
        frame_ids, a = a[:, 0], a[:, 1:]
        if np.all(frame_ids == np.round(frame_ids)):
            frame_ids = frame_ids.astype(np.int64)
    cols = a.shape[1]
    # columns = joints * channels; for the supported joint counts this is unambiguous except for
    # 48 = 16 * 3 = 24 * 2 (no layout has 24 joints) and the like, so try 3 channels first
    for c in (3, 2):
        if cols % c == 0 and cols // c in {len(j) for j in LAYOUT_JOINTS.values()}:
            return Keypoints(a.reshape(len(a), cols // c, c), path, "csv", frame_ids=frame_ids)
    raise KeypointError(f"{path}: {cols} value columns per row is not x,y or x,y,score for "
                        f"{'/'.join(str(n) for n in sorted({len(j) for j in LAYOUT_JOINTS.values()}))} joints")


def _read_json(path: Path) -> Keypoints:
    doc = parse_json(path.read_bytes(), str(path), KeypointError)
    if isinstance(doc, dict):
        if isinstance(doc.get("annotations"), list):
            doc = doc["annotations"]
        elif isinstance(doc.get("frames"), list):
            doc = doc["frames"]
        else:
            raise KeypointError(f"{path}: expected a list of per-frame objects with \"keypoints\" "
                                "(COCO results style), or a COCO dict with \"annotations\"")
    if not isinstance(doc, list):
        raise KeypointError(f"{path}: expected a JSON list of per-frame objects, got {type(doc).__name__}")
    if not doc:
        raise KeypointError(f"{path}: no frames in the input (empty list)")
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict) or "keypoints" not in obj:
            raise KeypointError(f"{path}: entry {i} is not an object with \"keypoints\"")
    with_id = ["image_id" in obj for obj in doc]
    if any(with_id) and not all(with_id):
        raise KeypointError(f"{path}: some entries have \"image_id\" and some do not (entry {with_id.index(False)})")
    if all(with_id):
        return _coco_results(path, doc)
    a = _stack_poses(path, [_json_pose(path, i, obj["keypoints"]) for i, obj in enumerate(doc)])
    return Keypoints(a, path, "json", layout="coco17" if a.shape[1] == 17 else None)


def _json_pose(path: Path, i: int, kps: Any) -> Optional[np.ndarray]:
    """One person's keypoints: flat [x, y, s] * J or nested [[x, y(, s)], ...]; None if empty."""
    if kps is None or (isinstance(kps, list) and len(kps) == 0):
        return None
    if not isinstance(kps, list):
        raise KeypointError(f"{path}: entry {i}: \"keypoints\" must be a list, got {type(kps).__name__}")
    nested = all(isinstance(k, list) for k in kps)
    try:
        a = np.array(kps, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise KeypointError(f"{path}: entry {i}: keypoints are not numbers or rows differ in length "
                            f"({_one_line(e)})") from None
    if nested:
        if a.ndim != 2:
            raise KeypointError(f"{path}: entry {i}: nested keypoints must be [[x, y(, score)], ...]")
        return a
    if a.ndim != 1 or len(a) % 3:
        raise KeypointError(f"{path}: entry {i}: {len(kps)} numbers is not [x, y, score] * joints")
    return a.reshape(-1, 3)


def _stack_poses(path: Path, poses: list[Optional[np.ndarray]]) -> np.ndarray:
    shapes = {p.shape for p in poses if p is not None}
    if not shapes:
        raise KeypointError(f"{path}: every frame is empty (no keypoints at all)")
    if len(shapes) > 1:
        raise KeypointError(f"{path}: frames have different keypoint shapes {sorted(shapes)}")
    (shape,) = shapes
    out = np.zeros((len(poses),) + shape, dtype=np.float64)  # an empty frame stays all-zero: a miss
    for i, p in enumerate(poses):
        if p is not None:
            out[i] = p
    return out


def _coco_results(path: Path, doc: list[dict]) -> Keypoints:
    """COCO results: possibly several people per image_id; keep the highest-scoring one."""
    best: dict[Any, tuple[float, int]] = {}
    for i, obj in enumerate(doc):
        iid = obj["image_id"]
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise KeypointError(f"{path}: entry {i}: image_id must be an integer or a string")
        pose = _json_pose(path, i, obj["keypoints"])
        s = obj.get("score")
        if s is None:  # ground-truth annotations have no score: the most keypoints, then the first
            s = float(np.count_nonzero(pose[:, 2] > 0)) if pose is not None and pose.shape[1] == 3 else 0.0
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise KeypointError(f"{path}: entry {i}: score must be a finite number, got {s!r}")
        if iid not in best or s > best[iid][0]:
            best[iid] = (float(s), i)
    ids = list(best)
    kinds = {type(i) for i in ids}
    if len(kinds) > 1:
        raise KeypointError(f"{path}: image_id mixes numbers and strings")
    ids.sort()
    poses = [_json_pose(path, best[i][1], doc[best[i][1]]["keypoints"]) for i in ids]
    n_people = len(doc) - len(ids)
    a = _stack_poses(path, poses)
    kp = Keypoints(a, path, "coco-json", layout="coco17" if a.shape[1] == 17 else None,
                   frame_ids=np.array(ids, dtype=np.int64 if int in kinds else str))
    if n_people:
        kp.notes.append(f"{len(doc)} detections for {len(ids)} images: kept the highest-scoring person per image")
    if int in kinds and len(ids) > 1:
        gaps = (ids[-1] - ids[0] + 1) - len(ids)
        if gaps:  # images where the detector found nobody are absent from COCO results
            kp.notes.append(f"{gaps} image_ids between {ids[0]} and {ids[-1]} have no detection and no output row "
                            "(the output's frame_id says which image each row is)")
    return kp


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def iter_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _frames_text(frames: Sequence[int], frame_ids: Optional[np.ndarray] = None, limit: int = 8,
                 total: Optional[int] = None) -> str:
    """'frames 3, 17 and 5 more' (image_ids where the input has them); total: how many there are
    when `frames` holds only the first few."""
    total = len(frames) if total is None else total
    shown = [str(frame_ids[f]) if frame_ids is not None else str(f) for f in frames[:limit]]
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    what = "image_ids" if frame_ids is not None else "frames"
    return f"{what} {', '.join(shown)}{more}"


# The value policy (README "What is refused"): a joint more than one image size past the image's
# border (pixels: x outside [-W, 2W] or y outside [-H, 2H]; normalised input, whose image height is
# unknown: |x| or |y| > OFF_IMAGE_NORMALIZED, one width past a landscape image's border and then
# some) is no measurement of the person: a detector's garbage (1e30, -1e30, a joint 9,000 px
# away). Fed as it is, it drags the whole GCN input with it and the pose comes out metres off
# with a spread of 0, i.e. looking certain. Such a joint is treated like an undetected one
# (pixel 0, 0): flagged weak and given a stand-in position (`stand_in_missing`), and its frame is
# marked unreliable; a frame with no usable joint at all is an empty frame.
OFF_IMAGE_NORMALIZED = 4.0
# A frame with more than this fraction of its joints weak is marked unreliable too (an all-zero
# score column: every joint weak, every frame unreliable, and a warning).
UNRELIABLE_WEAK_FRACTION = 0.5


def off_image(xy: np.ndarray, image_size: Optional[tuple[float, float]]) -> np.ndarray:
    """[..., J] True where a joint of xy [..., J, 2] lies more than one image size past the border
    (image_size (W, H) for pixels, None for screen-normalised coordinates)."""
    if image_size is None:
        return (np.abs(xy) > OFF_IMAGE_NORMALIZED).any(-1)
    w, h = image_size
    x, y = xy[..., 0], xy[..., 1]
    return (x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)


def unusable_joints(xy: np.ndarray, pixel: bool, image_size: Optional[tuple[float, float]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(undetected, off the image), both [..., J], for finite xy [..., J, 2]: the joints whose
    coordinates are not a measurement. Undetected: exactly pixel (0, 0) (normalised input has no
    such marker: (0, 0) is the image centre)."""
    undetected = (xy == 0).all(-1) if pixel else np.zeros(xy.shape[:-1], dtype=bool)
    return undetected, off_image(xy, image_size if pixel else None) & ~undetected


@dataclass
class InputPlan:
    """What `check_keypoints` decided: the frames to lift and how to read their coordinates."""

    frames: np.ndarray  # [F_kept] int64 indices into the input
    skipped: np.ndarray  # [F_skipped] frames skipped: empty (detector misses) or without a usable joint
    pixel: bool  # coordinates are pixels (normalise with image_size) or already normalised
    image_size: Optional[tuple[float, float]]
    missing_joints: int  # joints at exactly (0, 0) in pixel input: undetected, marked weak
    frames_with_missing: int
    off_image_joints: int = 0  # joints far outside the image in the kept frames: treated as missing
    frames_with_off_image: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown even with -q: the result needs care


def check_keypoints(kp: Keypoints, *, image_size: Optional[tuple[float, float]], normalized: bool,
                    skip_empty: bool, chunk: int = 65536) -> InputPlan:
    """Refuse what cannot be lifted correctly (one pass over the data, chunked so a memory-mapped
    input is never read whole): NaN or infinite values, empty frames (all zeros or all NaN: a
    detector miss) and frames without a usable joint (every joint undetected or far off the
    image), both skipped with skip_empty, pixel input without an image size, an image size the
    keypoints do not fit, 'normalised' values that look like pixels. Joints far off the image are
    counted (prepare_chunk treats them as missing); a score channel that is all <= 0 is warned of."""
    if image_size is not None and normalized:
        raise KeypointError("give either --image-size (pixel input) or --normalized, not both")
    if image_size is not None and not all(math.isfinite(v) and v > 0 for v in image_size):
        raise KeypointError(f"--image-size must be two positive numbers, got {image_size}")
    F, J = kp.num_frames, kp.num_joints
    empty, bad, no_usable = [], [], []
    n_missing = frames_missing = n_off = frames_off = 0
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    outside = counted = 0
    score_max = -np.inf
    pixel = image_size is not None
    units_known = pixel or normalized  # else the run is refused below, once the ranges are known
    for s, e in iter_chunks(F, chunk):
        a = np.asarray(kp.data[s:e], dtype=np.float64)
        xy = a[..., :2]
        nan_xy = np.isnan(xy).all(-1).all(-1)  # the whole frame NaN: some detectors' "no person"
        zero = (xy == 0).all(-1).all(-1)
        is_empty = nan_xy | zero
        finite = np.isfinite(a).all(-1).all(-1)
        bad.extend((np.flatnonzero(~finite & ~is_empty) + s).tolist())
        empty.extend((np.flatnonzero(is_empty) + s).tolist())
        keep = ~is_empty & finite
        if kp.has_scores and keep.any():
            score_max = max(score_max, float(a[keep][..., 2].max()))
        xy = xy[keep]
        if xy.size == 0:
            continue
        miss, far = unusable_joints(xy, pixel, image_size)
        if not units_known:
            far[:] = False
        pts = xy[~miss]
        if pts.size:  # the ranges (for the messages) over every detected joint
            lo, hi = np.minimum(lo, pts.min(0)), np.maximum(hi, pts.max(0))
        none_usable = (miss | far).all(-1)
        no_usable.extend((np.flatnonzero(keep)[none_usable] + s).tolist())
        xy, miss, far = xy[~none_usable], miss[~none_usable], far[~none_usable]
        n_missing += int(miss.sum())
        frames_missing += int(miss.any(-1).sum())
        n_off += int(far.sum())
        frames_off += int(far.any(-1).sum())
        # the share outside the image, which tells a wrong image size or unit, over the frames with
        # a usable joint: a few frames of pure garbage (-1e30) are not a sign of a wrong size
        pts = xy[~miss]
        counted += len(pts)
        if pixel:
            w, h = image_size
            out = ((pts[:, 0] < -0.25 * w) | (pts[:, 0] > 1.25 * w)
                   | (pts[:, 1] < -0.25 * h) | (pts[:, 1] > 1.25 * h))
            outside += int(out.sum())
        else:
            outside += int((np.abs(pts) > OFF_IMAGE_NORMALIZED).any(-1).sum())
    if bad:
        raise KeypointError(f"{kp.path}: NaN or infinite values in {_frames_text(bad, kp.frame_ids)}")
    if len(empty) and not skip_empty:
        raise KeypointError(f"{kp.path}: {len(empty)} of {F} frames are empty (all zeros or NaN: no person "
                            f"detected): {_frames_text(empty, kp.frame_ids)}; pass --skip-empty to leave them out")
    if image_size is None and not normalized:
        if counted and np.all(np.abs(np.concatenate([lo, hi])) <= 2):
            raise KeypointError(f"{kp.path}: coordinates lie within [{lo.min():.3g}, {hi.max():.3g}]: if they are "
                                "screen-normalised (x / w * 2 - 1), pass --normalized; if pixels, --image-size W H")
        raise KeypointError(f"{kp.path}: pixel keypoints (x up to {hi[0]:.4g}, y up to {hi[1]:.4g}) need the image "
                            "size: pass --image-size W H (or --normalized if already screen-normalised)")
    # no frame with a usable joint at all: the coordinates do not fit the image, whatever their share
    frac = outside / counted if counted else float(len(no_usable) > 0)
    if pixel:
        w, h = image_size
        if frac > 0.05:
            raise KeypointError(f"{kp.path}: {100 * frac:.0f}% of the keypoints lie far outside the {w:g} x {h:g} "
                                f"image (x in [{lo[0]:.4g}, {hi[0]:.4g}], y in [{lo[1]:.4g}, {hi[1]:.4g}]): "
                                "check --image-size")
        if counted and hi.max() <= 1.0 and lo.min() >= 0.0 and max(w, h) > 2:
            raise KeypointError(f"{kp.path}: every coordinate lies within [0, 1]: these look normalised to the unit "
                                f"square, not pixels of a {w:g} x {h:g} image; multiply x by W and y by H first")
    elif frac > 0.05:
        raise KeypointError(f"{kp.path}: --normalized, but {100 * frac:.0f}% of the keypoints lie beyond "
                            f"+-{OFF_IMAGE_NORMALIZED:g} (|x| up to {max(abs(lo[0]), abs(hi[0])):.4g}): these look "
                            "like pixels; pass --image-size W H")
    where = (f"more than one image size outside the {image_size[0]:g} x {image_size[1]:g} image" if pixel
             else f"beyond +-{OFF_IMAGE_NORMALIZED:g} in normalised units")
    if len(no_usable) and not skip_empty:
        raise KeypointError(f"{kp.path}: {len(no_usable)} of {F} frames have no usable joint (every joint undetected "
                            f"or {where}): {_frames_text(no_usable, kp.frame_ids)}; pass --skip-empty to leave "
                            "them out")
    skipped = np.array(sorted(empty + no_usable), dtype=np.int64)
    frames = np.setdiff1d(np.arange(F, dtype=np.int64), skipped)
    if len(frames) == 0:
        raise KeypointError(f"{kp.path}: all {F} frames are empty or have no usable joint; nothing to lift")
    notes, warnings = [], []
    if len(empty):
        notes.append(f"skipped {len(empty)} empty frames ({_frames_text(empty, kp.frame_ids)})")
    if len(no_usable):
        notes.append(f"skipped {len(no_usable)} frames with no usable joint ({_frames_text(no_usable, kp.frame_ids)})")
    if n_missing:
        notes.append(f"{n_missing} undetected joints (at pixel 0,0) in {frames_missing} frames: marked weak and "
                     "given a stand-in position; those frames are marked unreliable")
    if n_off:
        warnings.append(f"{kp.path}: {n_off} joints in {frames_off} frames lie {where}: treated as undetected "
                        "(marked weak, given a stand-in position, the frames marked unreliable)")
    if kp.has_scores and score_max <= 0:
        warnings.append(f"{kp.path}: every detector score is {score_max:g} or below: no joint was seen with any "
                        "confidence, so with --min-score above that every joint is weak and every frame unreliable "
                        "(if the third channel is not a confidence, drop it)")
    return InputPlan(frames=frames, skipped=skipped, pixel=pixel, image_size=image_size,
                     missing_joints=n_missing, frames_with_missing=frames_missing, off_image_joints=n_off,
                     frames_with_off_image=frames_off, notes=notes, warnings=warnings)


def sample_poses(kp: Keypoints, frames: np.ndarray, n: int = 2000, pixel: bool = True) -> np.ndarray:
    """Up to n evenly spaced frames [n, J, 2] among `frames` with no undetected (0, 0) joint."""
    pick = frames[np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(np.int64)]
    xy = np.asarray(kp.data[np.unique(pick)][..., :2], dtype=np.float64)
    if pixel:
        xy = xy[~(xy == 0).all(-1).any(-1)]
    return xy


def resolve_layout(kp: Keypoints, stated: Optional[str], frames: np.ndarray, pixel: bool,
                   check: bool = True) -> tuple[str, Optional[str]]:
    """(the input's layout, a note for the user or None). 17-joint inputs could be COCO or H36M
    order: a stated layout is checked against the bone lengths; without one, the file's own
    (COCO JSON) is used or the clearer of the two is chosen, and an unclear case is refused."""
    J = kp.num_joints
    if stated is not None:
        if len(LAYOUT_JOINTS[stated]) != J:
            raise KeypointError(f"{kp.path}: {J} joints per frame, but --layout {stated} has "
                                f"{len(LAYOUT_JOINTS[stated])}")
    candidates = [n for n, j in LAYOUT_JOINTS.items() if len(j) == J]
    layout = stated or kp.layout
    if J != 17:
        return layout or candidates[0], None
    xy = sample_poses(kp, frames, pixel=pixel)
    guess, ratio = compare_layouts(xy) if len(xy) else (None, float("nan"))
    if layout is None:
        if guess is None:
            raise KeypointError(f"{kp.path}: 17 joints per frame could be COCO or Human3.6M order and the poses do "
                                "not say which clearly: pass --layout coco17 or --layout h36m17")
        return guess, f"layout {guess} (from the bone lengths; pass --layout to state it)"
    if check and guess is not None and guess != layout:
        return_hint = "--layout " + guess
        why = ("the face points are spread over the body" if layout == "coco17"
               else "the pelvis is not between the hips")
        raise KeypointError(f"{kp.path}: the keypoints look like {guess} order, not {layout} (read as {layout}, "
                            f"{why}); pass {return_hint}, or --no-layout-check if you are sure")
    return layout, None


def screen_normalize(xy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Pixels -> the model's screen coordinates: x / w * 2 - [1, h / w] (as data/cameras.py)."""
    from .data.cameras import normalize_screen_coordinates

    return normalize_screen_coordinates(xy, w, h)


@functools.lru_cache(maxsize=None)
def _hop_distances(skeleton_name: str) -> np.ndarray:
    """[J, J] number of bones between two joints of a skeleton (Floyd-Warshall on 17 nodes)."""
    skel = SKELETONS[skeleton_name]
    J = skel.num_joints
    d = np.full((J, J), np.inf)
    np.fill_diagonal(d, 0)
    for c, p in skel.bones:
        d[c, p] = d[p, c] = 1
    for k in range(J):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


def stand_in_missing(xy: np.ndarray, missing: np.ndarray, skeleton_name: str) -> np.ndarray:
    """xy [n, J, 2] with each missing joint replaced by the mean of the usable joints nearest to it
    along the skeleton's bones (a wrist by its elbow, the pelvis by a usable hip): a short bone
    the model can lift, where the raw value (pixel 0,0 or 1e30) would drag the whole pose off.
    Every frame must have a usable joint (check_keypoints skips or refuses the others)."""
    d = _hop_distances(skeleton_name)
    usable = ~missing
    dist = np.where(usable[:, None, :], d[None], np.inf)  # [n, J (missing), J (candidate)]
    nearest = dist == dist.min(-1, keepdims=True)
    nearest &= np.isfinite(dist)
    count = nearest.sum(-1, keepdims=True)
    src = np.where(usable[..., None], xy, 0.0)  # never multiply a garbage value, even by 0
    fill = np.einsum("njk,nkc->njc", nearest.astype(xy.dtype), src) / np.maximum(count, 1)
    return np.where(missing[..., None], fill, xy)


@dataclass
class PreparedChunk:
    """A chunk of frames ready to lift, in the model's joint order."""

    pose2d: np.ndarray  # [n, J, 2] the model's input, screen-normalised
    keypoints2d: np.ndarray  # [n, J, 2] the same in the input's units (a missing joint: its stand-in)
    weak: np.ndarray  # [n, J] score below min_score, undetected, or off the image
    score: Optional[np.ndarray]  # [n, J] or None
    missing: np.ndarray  # [n, J] undetected or off the image: lifted from a stand-in position
    unreliable: np.ndarray  # [n] a missing joint, or more than UNRELIABLE_WEAK_FRACTION of the joints weak


def prepare_chunk(kp: Keypoints, frames: np.ndarray, plan: InputPlan, src: str, dst: str,
                  min_score: float) -> PreparedChunk:
    """The input frames `frames` (kept by check_keypoints), in the model's layout dst: joints that
    are undetected or far off the image are flagged and replaced (`stand_in_missing`), never fed
    as they are; the frames they are in, and those mostly weak, are marked unreliable."""
    a = np.asarray(kp.data[frames], dtype=np.float64)
    xy = a[..., :2]
    score = a[..., 2] if kp.has_scores else None
    undetected, far = unusable_joints(xy, plan.pixel, plan.image_size)
    with np.errstate(over="ignore", invalid="ignore"):  # a derived joint of garbage sources: replaced below
        xy, score, missing = convert_layout(xy, score, undetected | far, src, dst)
    none = missing.all(-1)
    if none.any():  # only joints the model's skeleton does not use are usable (COCO's ears, say)
        raise KeypointError(f"{kp.path}: no joint the {dst} skeleton uses is usable in "
                            f"{_frames_text(frames[none].tolist(), kp.frame_ids)}; leave those frames out or fix them")
    if missing.any():
        xy = stand_in_missing(xy, missing, dst)
    weak = missing.copy()
    if score is not None:
        weak |= score < min_score
    unreliable = missing.any(-1) | (weak.mean(-1) > UNRELIABLE_WEAK_FRACTION)
    pose2d = screen_normalize(xy, *plan.image_size) if plan.pixel else xy
    return PreparedChunk(pose2d=pose2d.astype(np.float32), keypoints2d=xy.astype(np.float32), weak=weak,
                         score=None if score is None else score.astype(np.float32), missing=missing,
                         unreliable=unreliable)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
from .export import EXPORT_FORMATS  # noqa: E402 (.bvh, .csv: the aggregate only, written by diffupose/export.py)

OUTPUT_FORMATS = (".npz", ".json") + EXPORT_FORMATS


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
            from .export import DEFAULT_FPS, write_export

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


# ---------------------------------------------------------------------------------------------
# reading the output back
# ---------------------------------------------------------------------------------------------
@dataclass
class LiftOutput:
    pose3d: np.ndarray  # [F, J, 3]
    hypotheses: np.ndarray  # [F, N, J, 3]
    spread: np.ndarray  # [F, J]
    weak: np.ndarray  # [F, J]
    pose2d: np.ndarray  # [F, J, 2]
    keypoints2d: np.ndarray  # [F, J, 2]
    frame_index: np.ndarray  # [F]
    joint_names: tuple[str, ...]
    meta: dict
    frame_id: Optional[np.ndarray] = None  # [F] the input's own ids (COCO image_id), if it had them
    path: Optional[Path] = None  # the file it was read from (named in errors)
    unreliable: Optional[np.ndarray] = None  # [F] (outputs of older versions lack it)


def npz_member_memmap(path: PathLike, name: str) -> Optional[np.ndarray]:
    """A read-only memory map of the array `name` inside an uncompressed .npz (as np.savez writes
    them), so one frame of a long lift output is read without reading the whole archive; None if
    the member is compressed or not a plain numeric array (then read it normally)."""
    import struct
    import zipfile

    from numpy.lib import format as npf

    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)  # the member's local header: name and extra-field lengths at 26 and 28
            if local[:4] != b"PK\x03\x04":
                return None
            n_name, n_extra = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + n_name + n_extra)
            version = npf.read_magic(f)
            read_header = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        if dtype.hasobject or 0 in shape:
            return None
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None


_OUTPUT_KEYS = ("pose3d", "hypotheses", "spread", "weak", "pose2d", "keypoints2d", "frame_index")


def read_lift_output(path: PathLike) -> LiftOutput:
    """Read what `diffupose lift` wrote (.npz or .json); raises KeypointError if it is not that."""
    import zipfile

    path = require_regular_file(path, "lift output", error=KeypointError, missing=KeypointError)
    what = f"{path} is not a diffupose lift output"
    try:
        if path.suffix.lower() == ".json":
            doc = parse_json(path.read_bytes(), str(path), KeypointError)
            if not isinstance(doc, dict) or doc.get("format") != "diffupose-lift":
                raise KeypointError(f"{what} (no \"format\": \"diffupose-lift\")")
            frames = doc["frames"]
            if not frames:
                raise KeypointError(f"{path}: no frames")
            arr = {k: np.array([f[k] for f in frames]) for k in _OUTPUT_KEYS if k != "frame_index"}
            arr["frame_index"] = np.array([f["frame"] for f in frames])
            if all("id" in f for f in frames):
                arr["frame_id"] = np.array([f["id"] for f in frames])
            if all("unreliable" in f for f in frames):
                arr["unreliable"] = np.array([f["unreliable"] for f in frames], dtype=bool)
            names, meta = tuple(doc["joint_names"]), doc["meta"]
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _OUTPUT_KEYS + ("joint_names", "meta") if k not in z.files]
                if missing:
                    raise KeypointError(f"{what} (missing {', '.join(missing)})")
                names, meta = tuple(str(n) for n in z["joint_names"]), parse_json(str(z["meta"]), f"{path}[meta]",
                                                                                     KeypointError)
                keys = [k for k in _OUTPUT_KEYS + ("frame_id", "unreliable") if k in z.files]
                arr = {k: npz_member_memmap(path, k) for k in keys}
                arr = {k: (z[k] if a is None else a) for k, a in arr.items()}
        else:
            raise KeypointError(f"{what}: expected .npz or .json")
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, KeypointError):
            raise
        raise KeypointError(f"{what} ({_one_line(e)})") from None
    if not isinstance(meta, dict):
        raise KeypointError(f"{what} (meta is a {type(meta).__name__}, not an object)")
    for k in _OUTPUT_KEYS:
        if arr[k].dtype.kind not in ("iu" if k == "frame_index" else "fiub"):
            raise KeypointError(f"{what} ({k} holds {arr[k].dtype}, not {'whole ' if k == 'frame_index' else ''}"
                                "numbers)")
    out = LiftOutput(**arr, joint_names=names, meta=meta, path=path)
    F, N, J = out.hypotheses.shape[:3] if out.hypotheses.ndim == 4 else (0, 0, 0)
    if out.hypotheses.ndim != 4 or out.pose3d.shape != (F, J, 3) or len(names) != J or out.pose2d.shape != (F, J, 2):
        raise KeypointError(f"{what} (inconsistent array shapes)")
    return out


__all__ = ["COCO17_JOINTS", "COCO_TO_H36M17", "InputPlan", "KeypointError", "Keypoints", "LAYOUTS", "LiftOutput",
           "LiftWriter", "PreparedChunk", "check_keypoints", "check_output_path", "compare_layouts", "convert_layout",
           "off_image", "prepare_chunk", "read_keypoints", "read_lift_output", "remove_stale_temporaries",
           "resolve_layout", "screen_normalize", "stand_in_missing"]
