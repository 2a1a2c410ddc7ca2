"""Readers of the detectors' own files, unchanged: OpenPose (`--write_json` folders) and MediaPipe
Pose (its landmarks dumped to JSON or CSV). Each gives a `Keypoints` in the detector's layout
(body25, mediapipe33; see layouts.py for the mapping to the model's joints), read through the shared
checks of data/user_files.py (regular files only, JSON nesting and encodings), its values then
checked like any input's (checks.check_keypoints: NaN, off-image joints, empty frames).

- OpenPose: a folder of per-frame `<name>_<frame>_keypoints.json` files (or one such file), each
  {"people": [{"pose_keypoints_2d": [x, y, c] * 25, "person_id": ...}, ...]}; frames ordered by the
  number before `_keypoints`, which becomes the frame id; a frame with nobody is a detector miss;
  undetected joints are (0, 0, 0), as OpenPose writes them. Which person: people.choose_people
  (`track_id`, or OpenPose's `person_id` where it is not -1; else the most confident, the mean of
  the 25 confidences).
- MediaPipe Pose: its 33 landmarks per frame with x, y as fractions of the image width and height,
  z, and visibility (the score). JSON: a list of frames, each the landmark list
  [{"x", "y", "z", "visibility"}, ...] * 33, or an object holding it under "landmark" /
  "landmarks" / "pose_landmarks" (MessageToDict of a solution's result; the Tasks API's list of
  people, one landmark list each); null or [] for a frame without a person. A dict
  {"frames": [...]} holds the list. CSV: a header naming `<landmark>_x, <landmark>_y[, _z,
  _visibility]` for the 33 landmarks (nose_x, nose_y, ..., right_foot_index_visibility; upper case
  too), an optional first frame column.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..data.user_files import read_json_file
from .errors import KeypointError
from .layouts import BODY25_JOINTS, MEDIAPIPE33_JOINTS
from .people import Candidate, Person, choose_people, track_id

OPENPOSE_SUFFIX = "_keypoints.json"
_FRAME_NUMBER = re.compile(r"(\d+)_keypoints\.json$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# OpenPose
# ---------------------------------------------------------------------------------------------
def is_openpose_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("people"), list)


def openpose_files(folder: Path) -> list[tuple[Optional[int], Path]]:
    """(frame number or None, path) of a folder's `*_keypoints.json`, in frame order."""
    files = [p for p in folder.iterdir() if p.name.lower().endswith(OPENPOSE_SUFFIX)]
    if not files:
        raise KeypointError(f"{folder} is a directory without *{OPENPOSE_SUFFIX} files (OpenPose --write_json "
                            "output); give a keypoint file or such a folder")
    numbered = [(int(m.group(1)) if (m := _FRAME_NUMBER.search(p.name)) else None, p) for p in files]
    if all(n is not None for n, _ in numbered):
        numbered.sort(key=lambda t: (t[0], t[1].name))
        if len({n for n, _ in numbered}) != len(numbered):
            raise KeypointError(f"{folder}: several *{OPENPOSE_SUFFIX} files have the same frame number (two "
                                "videos' outputs in one folder?); give one video's folder")
    else:
        numbered = [(None, p) for p in sorted(files)]
    return numbered


def _openpose_people(path: Path, doc: Any) -> list[tuple[Candidate, Optional[np.ndarray]]]:
    if not is_openpose_doc(doc):
        raise KeypointError(f"{path}: not an OpenPose keypoint file (no \"people\" list)")
    out = []
    for k, person in enumerate(doc["people"]):
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise KeypointError(f"{path}: people[{k}] has no \"pose_keypoints_2d\"")
        kps = person["pose_keypoints_2d"]
        if not isinstance(kps, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in kps):
            raise KeypointError(f"{path}: people[{k}].pose_keypoints_2d must be a list of numbers")
        if not kps:
            continue
        if len(kps) != 3 * len(BODY25_JOINTS):
            hint = " (the COCO-18 model of OpenPose: run it with --model_pose BODY_25)" if len(kps) == 54 else ""
            raise KeypointError(f"{path}: people[{k}].pose_keypoints_2d holds {len(kps)} numbers, not "
                                f"[x, y, confidence] * 25 of BODY_25{hint}")
        pose = np.array(kps, dtype=np.float64).reshape(len(BODY25_JOINTS), 3)
        score = pose[:, 2]
        conf = float(np.mean(score)) if np.isfinite(score).all() else 0.0
        tid = person.get("track_id", person.get("person_id"))
        out.append((Candidate(k, conf, track_id(path, k, tid)), pose))
    return out


def read_openpose(path: Path, person: Person = None) -> "Keypoints":  # noqa: F821
    """A folder of OpenPose `*_keypoints.json` (one per frame) or one such file."""
    from .readers import Keypoints

    entries = openpose_files(path) if path.is_dir() else [(None, path)]
    frames = []
    for _, p in entries:
        doc = read_json_file(p, "OpenPose keypoint file", KeypointError, KeypointError)
        frames.append(_openpose_people(p, doc))
    chosen, notes = choose_people(path, [[c for c, _ in f] for f in frames], person)
    data = np.zeros((len(frames), len(BODY25_JOINTS), 3))  # nobody chosen: all zero, a detector miss
    for i, (f, k) in enumerate(zip(frames, chosen)):
        if k is not None:
            data[i] = next(pose for c, pose in f if c.index == k)
    ids = [n for n, _ in entries]
    kp = Keypoints(data, path, "openpose", layout="body25",
                   frame_ids=np.array(ids, dtype=np.int64) if all(n is not None for n in ids) else None)
    kp.notes.extend(notes)
    return kp


# ---------------------------------------------------------------------------------------------
# MediaPipe Pose
# ---------------------------------------------------------------------------------------------
_LANDMARK_KEYS = ("landmark", "landmarks", "pose_landmarks", "poseLandmarks")


def _landmark_list(path: Path, i: int, frame: Any) -> list[list[dict]]:
    """The people of one MediaPipe frame, each a list of 33 landmark dicts ([] : nobody)."""
    while isinstance(frame, dict):
        key = next((k for k in _LANDMARK_KEYS if k in frame), None)
        if key is None:
            raise KeypointError(f"{path}: frame {i}: an object without {' / '.join(_LANDMARK_KEYS[:3])}")
        frame = frame[key]
    if frame is None or frame == []:
        return []
    if not isinstance(frame, list):
        raise KeypointError(f"{path}: frame {i}: landmarks must be a list, got {type(frame).__name__}")
    if all(isinstance(p, dict) and "x" in p for p in frame):
        return [frame]  # one person
    people = []
    for p in frame:  # the Tasks API: a list of people
        people.extend(_landmark_list(path, i, p))
    return people


def _landmarks_array(path: Path, i: int, lms: list[dict]) -> np.ndarray:
    if len(lms) != len(MEDIAPIPE33_JOINTS):
        raise KeypointError(f"{path}: frame {i}: {len(lms)} landmarks, MediaPipe Pose has {len(MEDIAPIPE33_JOINTS)}")
    out = np.empty((len(lms), 3))
    for j, lm in enumerate(lms):
        vals = [lm.get("x"), lm.get("y"), lm.get("visibility", 1.0)] if isinstance(lm, dict) else [None]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise KeypointError(f"{path}: frame {i}, landmark {j} ({MEDIAPIPE33_JOINTS[j]}): x, y and visibility must "
                                "be numbers")
        out[j] = vals
    return out


def is_mediapipe_doc(doc: Any) -> bool:
    """A JSON document in MediaPipe's landmark form (landmark dicts with x, y), not COCO's keypoints."""
    frames = doc.get("frames") if isinstance(doc, dict) else doc
    if not isinstance(frames, list):
        return False

    def has_landmarks(x: Any, depth: int = 0) -> bool:
        if depth > 4:
            return False
        if isinstance(x, dict):
            if "x" in x and "y" in x:
                return True
            return any(has_landmarks(x[k], depth + 1) for k in _LANDMARK_KEYS if k in x)
        return isinstance(x, list) and bool(x) and has_landmarks(x[0], depth + 1)

    return any(has_landmarks(f) for f in frames[:50])


def read_mediapipe_json(path: Path, doc: Any, person: Person = None) -> "Keypoints":  # noqa: F821
    from .readers import Keypoints

    frames = doc["frames"] if isinstance(doc, dict) else doc
    people = [[_landmarks_array(path, i, p) for p in _landmark_list(path, i, f)] for i, f in enumerate(frames)]
    cands = [[Candidate(k, float(np.nanmean(p[:, 2])) if np.isfinite(p[:, 2]).any() else 0.0) for k, p in
              enumerate(f)] for f in people]
    chosen, notes = choose_people(path, cands, person)
    data = np.zeros((len(frames), len(MEDIAPIPE33_JOINTS), 3))
    for i, k in enumerate(chosen):
        if k is not None:
            data[i] = people[i][k]
    kp = Keypoints(data, path, "mediapipe-json", layout="mediapipe33")
    kp.notes.extend(notes)
    return kp


def mediapipe_columns_named(header: list[str]) -> bool:
    """Whether a CSV header names MediaPipe landmark columns (one of its own: left_eye_inner_x; a
    nose_x alone is any layout's)."""
    return any(h.strip().lower() == f"{MEDIAPIPE33_JOINTS[1]}_x" for h in header)


def mediapipe_columns(header: list[str]) -> Optional[dict[str, list[int]]]:
    """For a CSV header naming MediaPipe landmark columns, {'x': [col per landmark], 'y': ..., 'visibility':
    ... or absent}; None if the header is not MediaPipe's."""
    names = {h.strip().lower(): c for c, h in enumerate(header)}
    if f"{MEDIAPIPE33_JOINTS[1]}_x" not in names:
        return None
    cols = {}
    for ch in ("x", "y", "visibility"):
        idx = [names.get(f"{j}_{ch}") for j in MEDIAPIPE33_JOINTS]
        if all(c is None for c in idx) and ch == "visibility":
            continue
        missing = [j for j, c in zip(MEDIAPIPE33_JOINTS, idx) if c is None]
        if missing:
            raise KeypointError(f"MediaPipe CSV header lacks {', '.join(f'{j}_{ch}' for j in missing[:4])}"
                                + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        cols[ch] = idx
    return cols


def read_mediapipe_csv(path: Path, header: list[str], rows: np.ndarray, frame_ids) -> "Keypoints":  # noqa: F821
    """rows [F, columns] of a CSV whose header names MediaPipe landmark columns (`mediapipe_columns`)."""
    from .readers import Keypoints

    try:
        cols = mediapipe_columns(header)
    except KeypointError as e:
        raise KeypointError(f"{path}: {e}") from None
    chans = [rows[:, cols[ch]] for ch in ("x", "y", "visibility") if ch in cols]
    data = np.stack(chans, -1)
    data[np.isnan(data[..., :2]).all(-1).all(-1)] = 0  # an empty row (no person): a detector miss
    return Keypoints(data, path, "mediapipe-csv", layout="mediapipe33", frame_ids=frame_ids)


__all__ = ["OPENPOSE_SUFFIX", "is_mediapipe_doc", "is_openpose_doc", "mediapipe_columns", "mediapipe_columns_named",
           "read_mediapipe_csv",
           "read_mediapipe_json", "read_openpose"]
