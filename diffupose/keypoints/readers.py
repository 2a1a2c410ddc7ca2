"""Readers of 2D keypoint files, each giving a `Keypoints` [frames, joints, 2 or 3] (3rd channel:
the detector's score), by extension:
- .json: COCO keypoint style. Either the COCO *results* format (a list of {"image_id",
  "keypoints": [x, y, score] * J, "score"}; several people per image: people.choose_people, a
  "track_id" followed where there is one, else the highest-scoring; frames ordered by image_id) or a
  list of per-frame objects {"keypoints": ...} in frame order (a frame whose "keypoints" is null or
  [] is a detector miss). A dict with "annotations" (COCO ground truth; COCO-WholeBody's body
  "keypoints" are its 17 COCO points) is read like the results format. Keypoints may also be nested
  [[x, y(, s)], ...]. 133 keypoints per person are COCO-WholeBody's (layout coco_wholebody).
  An OpenPose file ({"people": [...]}) or MediaPipe landmarks are read by detectors.py.
- a folder: OpenPose's per-frame *_keypoints.json (detectors.py).
- .npy (memory-mapped, so a huge file is not read at once), .npz (the array named "keypoints",
  or the only array): numeric [frames, joints, 2 or 3]. Pickled object arrays are refused.
- .csv / .txt / .tsv: one row per frame, x,y[,score] per joint, an optional header row (a first
  column named frame / image_id / index ... holds frame ids); comma, tab or space separated;
  UTF-8, or UTF-16 / UTF-32 (data.user_files.open_text). A header naming MediaPipe landmark
  columns (nose_x, ...) is read by detectors.py.
Every reader opens regular files only (a FIFO or device named .json would block it) and reports
a file it cannot read as one KeypointError line naming it.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..data.user_files import decoding_error, open_text, parse_json, require_regular_file
from .errors import KeypointError, PathLike, one_line
from .detectors import (is_mediapipe_doc, is_openpose_doc, mediapipe_columns_named, read_mediapipe_csv,
                        read_mediapipe_json, read_openpose)
from .layouts import COCO_WHOLEBODY_JOINTS, LAYOUT_JOINTS
from .people import Candidate, Person, choose_people, track_id


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



def read_keypoints(path: PathLike, key: Optional[str] = None, person: Person = None) -> Keypoints:
    """Read a keypoint file by its extension, or an OpenPose folder (see the module doc); person:
    which one where a frame has several (people.choose_people). Raises KeypointError."""
    if Path(path).is_dir():
        try:
            kp = read_openpose(Path(path), person)
        except OSError as e:
            raise KeypointError(f"cannot read {path}: {e.strerror or e}") from None
        _check_shape(kp)
        return kp
    path = require_regular_file(path, "input", error=KeypointError, missing=KeypointError)
    ext = path.suffix.lower()
    try:
        if ext == ".json":
            kp = _read_json(path, person)
        elif ext == ".npy":
            kp = _read_npy(path)
        elif ext == ".npz":
            kp = _read_npz(path, key)
        elif ext in (".csv", ".txt", ".tsv"):
            kp = _read_csv(path)
        else:
            raise KeypointError(f"{path}: unknown input format {ext or '(no extension)'!r}; "
                                "expected .json (COCO, OpenPose or MediaPipe keypoints), .npy, .npz, .csv or an "
                                "OpenPose folder")
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
        raise KeypointError(f"{path}: not a numeric .npy array ({one_line(e)}); pickled objects are refused") from None
    except EOFError:
        raise KeypointError(f"{path}: empty or truncated .npy file") from None
    return Keypoints(a, path, "npy")


def _read_npz(path: Path, key: Optional[str]) -> Keypoints:
    import zipfile

    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as e:
        raise KeypointError(f"{path}: not a readable .npz archive ({one_line(e)})") from None
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
            raise KeypointError(f"{path}[{key}]: not a numeric array ({one_line(e)}); pickled objects are "
                                "refused (VideoPose3D data_2d_*.npz dicts: save one [frames, 17, 2] array)") from None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise KeypointError(f"{path}[{key}]: corrupt archive member ({one_line(e)})") from None
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
            raise KeypointError(f"{path}:{lineno + 1}: not readable as CSV ({one_line(e)})") from None
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
        header = header[1:]
        if np.all(frame_ids == np.round(frame_ids)):
            frame_ids = frame_ids.astype(np.int64)
    if header is not None and mediapipe_columns_named(header):
        return read_mediapipe_csv(path, header, a, frame_ids)
    cols = a.shape[1]
    # columns = joints * channels; for the supported joint counts this is unambiguous except for
    # 48 = 16 * 3 = 24 * 2 (no layout has 24 joints) and the like, so try 3 channels first
    for c in (3, 2):
        if cols % c == 0 and cols // c in {len(j) for j in LAYOUT_JOINTS.values()}:
            return Keypoints(a.reshape(len(a), cols // c, c), path, "csv", frame_ids=frame_ids)
    raise KeypointError(f"{path}: {cols} value columns per row is not x,y or x,y,score for "
                        f"{'/'.join(str(n) for n in sorted({len(j) for j in LAYOUT_JOINTS.values()}))} joints")


def _read_json(path: Path, person: Person = None) -> Keypoints:
    doc = parse_json(path.read_bytes(), str(path), KeypointError)
    if is_openpose_doc(doc):
        return read_openpose(path, person)
    if is_mediapipe_doc(doc):
        return read_mediapipe_json(path, doc, person)
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
        return _coco_results(path, doc, person)
    a = _stack_poses(path, [_json_pose(path, i, obj["keypoints"]) for i, obj in enumerate(doc)])
    return Keypoints(a, path, "json", layout=_json_layout(a.shape[1]))


def _json_layout(joints: int) -> Optional[str]:
    """The layout of COCO-style JSON keypoints: COCO's 17, or COCO-WholeBody's 133 (its body first)."""
    return {17: "coco17", len(COCO_WHOLEBODY_JOINTS): "coco_wholebody"}.get(joints)


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
                            f"({one_line(e)})") from None
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


def _coco_results(path: Path, doc: list[dict], person: Person = None) -> Keypoints:
    """COCO results: possibly several people per image_id; which one is lifted: `people.choose_people`
    (a "track_id" where the detections have one, as mmpose and PoseTrack write, else the highest score)."""
    by_image: dict[Any, list[Candidate]] = {}
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
        by_image.setdefault(iid, []).append(Candidate(i, float(s), track_id(path, i, obj.get("track_id"))))
    ids = list(by_image)
    kinds = {type(i) for i in ids}
    if len(kinds) > 1:
        raise KeypointError(f"{path}: image_id mixes numbers and strings")
    ids.sort()
    chosen, notes = choose_people(path, [by_image[i] for i in ids], person)
    poses = [None if k is None else _json_pose(path, k, doc[k]["keypoints"]) for k in chosen]
    a = _stack_poses(path, poses)
    kp = Keypoints(a, path, "coco-json", layout=_json_layout(a.shape[1]),
                   frame_ids=np.array(ids, dtype=np.int64 if int in kinds else str))
    kp.notes.extend(notes)
    if int in kinds and len(ids) > 1:
        gaps = (ids[-1] - ids[0] + 1) - len(ids)
        if gaps:  # images where the detector found nobody are absent from COCO results
            kp.notes.append(f"{gaps} image_ids between {ids[0]} and {ids[-1]} have no detection and no output row "
                            "(the output's frame_id says which image each row is)")
    return kp

