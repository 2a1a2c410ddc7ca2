"""The VideoPose3D .npz layout: reading (with validation), writing, and turning world-frame clips
into the per-frame arrays a PoseSet holds.

The layout (Human3.6M, HumanEva-I and the embedded CMU set all use it):
- 3D file, key `positions_3d`: a pickled dict subject -> action -> float [frames, J3, 3], world
  coordinates in metres (J3 = 32 for the raw Human3.6M skeleton, 17, 16 or 15 otherwise);
- 2D file, key `positions_2d`: a pickled dict subject -> action -> list (one entry per camera, in
  the camera file's order) of float [frames, J2, 2] pixels; key `metadata`: a pickled dict with
  `layout_name`, `num_joints` and `keypoints_symmetry` [[left...], [right...]].

The dicts are pickled, and a pickle can name any function to call: they are read through
diffupose.data.safe_pickle, which admits only plain containers, numbers, strings and numpy arrays
and refuses every other global (os.system, ...) before anything runs. Every structural problem is
reported as a FileNotFoundError or ValueError that names the file.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from ..skeleton import H36M17_TO_16, Skeleton, skeleton_for_joints
from .cameras import Camera
from .safe_pickle import load_npz
from .user_files import check_finite

PathLike = Union[str, Path]

# VideoPose3D's remove_joints([4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]) on the
# 32-joint Human3.6M skeleton keeps these, in this order: the H36M17 joints.
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

Positions3D = dict[str, dict[str, np.ndarray]]
Positions2D = dict[str, dict[str, list[np.ndarray]]]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def read_npz(path: PathLike, keys: Sequence[str], optional: Sequence[str] = (), what: str = "pose") -> dict:
    """Read the objects under `keys` (required) and `optional` from an .npz archive, never running
    code (safe_pickle.load_npz). 0-d object arrays (how np.savez stores a dict) are unwrapped."""
    return load_npz(path, keys, optional, what=what, error=ValueError)


# Beyond these, a coordinate is a corrupt file or a unit mistake, not a pose: world metres (a
# capture volume is tens of metres; millimetres stored as metres exceed it) and pixels.
MAX_WORLD_METRES = 1e4
MAX_PIXELS = 1e6


def _check_array(arr, path: Path, where: str, last: int, joints: int | None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: {where} is a {type(arr).__name__}, expected a numpy array")
    if arr.ndim != 3 or arr.shape[2] != last:
        raise ValueError(f"{path}: {where} has shape {arr.shape}; expected [frames, joints, {last}]")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: {where} has dtype {arr.dtype}; expected floating point")
    if joints is not None and arr.shape[1] != joints:
        raise ValueError(f"{path}: {where} has {arr.shape[1]} joints, other entries of the file have {joints}")
    check_finite(arr, f"{path}: {where}", MAX_WORLD_METRES if last == 3 else MAX_PIXELS, error=ValueError,
                 unit=" m" if last == 3 else " px")
    return arr


def _check_dict(obj, path: Path, where: str, what: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {where} is a {type(obj).__name__}, expected a dict {what}")
    for k in obj:
        if not isinstance(k, str):
            raise ValueError(f"{path}: {where} has a key {k!r} of type {type(k).__name__}, expected str")
    return obj


def load_positions_3d(path: PathLike) -> tuple[Positions3D, int]:
    """positions_3d of a VideoPose3D 3D file, validated: (subject -> action -> [F, J, 3], J)."""
    path = Path(path)
    data = _check_dict(read_npz(path, ["positions_3d"], what="3D pose")["positions_3d"], path,
                       "positions_3d", "subject -> action -> [frames, joints, 3]")
    if not data:
        raise ValueError(f"{path}: positions_3d holds no subjects")
    J = None
    for s, acts in data.items():
        _check_dict(acts, path, f"positions_3d[{s!r}]", "action -> [frames, joints, 3]")
        for a, arr in acts.items():
            J = _check_array(arr, path, f"positions_3d[{s!r}][{a!r}]", 3, J).shape[1]
    if J is None:
        raise ValueError(f"{path}: positions_3d holds no actions")
    return data, J


def load_positions_2d(path: PathLike) -> tuple[Positions2D, dict, int]:
    """positions_2d and metadata of a VideoPose3D 2D file, validated:
    (subject -> action -> list per camera of [F, J, 2] pixels, metadata (may be {}), J)."""
    path = Path(path)
    raw = read_npz(path, ["positions_2d"], optional=["metadata"], what="2D keypoint")
    data = _check_dict(raw["positions_2d"], path, "positions_2d",
                       "subject -> action -> list of [frames, joints, 2] per camera")
    if not data:
        raise ValueError(f"{path}: positions_2d holds no subjects")
    J = None
    for s, acts in data.items():
        _check_dict(acts, path, f"positions_2d[{s!r}]", "action -> list of [frames, joints, 2] per camera")
        for a, cams in acts.items():
            where = f"positions_2d[{s!r}][{a!r}]"
            if not isinstance(cams, (list, tuple)) or not cams:
                raise ValueError(f"{path}: {where} is a {type(cams).__name__}, expected a non-empty list "
                                 "with one [frames, joints, 2] array per camera")
            for i, arr in enumerate(cams):
                J = _check_array(arr, path, f"{where}[{i}]", 2, J).shape[1]
    if J is None:
        raise ValueError(f"{path}: positions_2d holds no actions")
    meta = raw.get("metadata", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: metadata is a {type(meta).__name__}, expected a dict")
    if "num_joints" in meta and (not isinstance(meta["num_joints"], (int, np.integer))
                                 or isinstance(meta["num_joints"], bool)):
        raise ValueError(f"{path}: metadata num_joints is {meta['num_joints']!r}, expected a whole number")
    if "num_joints" in meta and int(meta["num_joints"]) != J:
        raise ValueError(f"{path}: metadata says num_joints={meta['num_joints']} but the keypoints have {J} joints")
    return data, meta, J


def check_symmetry(meta: dict, skeleton: Skeleton, path: PathLike) -> None:
    """A 2D file's keypoints_symmetry must name the skeleton's left and right joints: otherwise its
    joint order is not the one the skeleton assumes and every number would be silently wrong."""
    sym = meta.get("keypoints_symmetry")
    if sym is None:
        return
    try:
        left, right = (set(int(j) for j in side) for side in sym)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: metadata keypoints_symmetry is {sym!r}; expected [[left...], [right...]]") from None
    if left != set(skeleton.joints_left) or right != set(skeleton.joints_right):
        raise ValueError(f"{path}: metadata keypoints_symmetry {sym!r} does not match the {skeleton.name} joint "
                         f"order (left {list(skeleton.joints_left)}, right {list(skeleton.joints_right)}); "
                         "the keypoints are in another layout")


# ---------------------------------------------------------------------------------------------
# writing (the fakes in the tests, the embedded CMU set)
# ---------------------------------------------------------------------------------------------
def save_positions_3d(path: PathLike, positions: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    np.savez_compressed(path, positions_3d={s: dict(a) for s, a in positions.items()})


def save_positions_2d(path: PathLike, positions: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
                      metadata: Mapping) -> None:
    np.savez_compressed(path, positions_2d={s: {a: list(c) for a, c in acts.items()} for s, acts in positions.items()},
                        metadata=dict(metadata))


def metadata_for(skeleton: Skeleton, layout_name: str | None = None) -> dict:
    return {"layout_name": layout_name or skeleton.name, "num_joints": skeleton.num_joints,
            "keypoints_symmetry": [list(skeleton.joints_left), list(skeleton.joints_right)]}


# ---------------------------------------------------------------------------------------------
# joints
# ---------------------------------------------------------------------------------------------
def joint_selection(j3: int, j2: int, path3d: PathLike, path2d: PathLike) -> tuple[int, ...] | None:
    """Indices taking the 3D file's joints to the 2D file's (None: already the same)."""
    if j3 == j2:
        return None
    if j3 == 32 and j2 == 17:
        return H36M32_TO_17
    if j3 == 32 and j2 == 16:
        return tuple(H36M32_TO_17[j] for j in H36M17_TO_16)
    if j3 == 17 and j2 == 16:
        return H36M17_TO_16
    raise ValueError(f"wrong joint count: the 3D file {path3d} has {j3} joints and the 2D file {path2d} has {j2}; "
                     "supported: equal counts, 32 -> 17 or 16 (Human3.6M), 17 -> 16 (no nose)")


def skeleton_of(j2: int, allowed: Sequence[int], dataset: str, path2d: PathLike) -> Skeleton:
    if j2 not in allowed:
        raise ValueError(f"wrong joint count: {path2d} has {j2} joints; {dataset} supports {sorted(allowed)}")
    return skeleton_for_joints(j2)


# ---------------------------------------------------------------------------------------------
# clips -> per-frame arrays
# ---------------------------------------------------------------------------------------------
def check_pairing(pos3d: Positions3D, pos2d: Positions2D, subjects: Sequence[str], path3d: PathLike,
                  path2d: PathLike) -> None:
    """The chosen subjects are in both files, and no action of theirs is in the 2D file only
    (keypoints without ground truth mean the files do not belong together)."""
    for s in subjects:
        if s not in pos3d:
            raise ValueError(f"subject {s!r} is not in the 3D file {path3d} (it has {sorted(pos3d)})")
        if s not in pos2d:
            raise ValueError(f"subject {s!r} is not in the 2D file {path2d} (it has {sorted(pos2d)})")
        extra = sorted(set(pos2d[s]) - set(pos3d[s]))
        if extra:
            raise ValueError(f"{path2d}: subject {s!r} action(s) {extra} are in the 2D file but not in the 3D file {path3d}")


def build_arrays(pos3d: Positions3D, pos2d: Positions2D, selection: Mapping[str, Sequence[str]],
                 cameras: Callable[[str], Sequence[Camera]], label: Callable[[str], str],
                 joints: tuple[int, ...] | None, downsample: int, path3d: PathLike, path2d: PathLike) -> dict:
    """Per-frame arrays of the chosen clips (subject -> actions), one row per (frame, camera):
    3D to each camera's frame, root-relative (joint 0 = 0), metres; 2D cut to the 3D length and
    screen-normalised with the camera's resolution; every `downsample`-th frame of each clip."""
    if int(downsample) != downsample or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}")
    p3, p2, act, subj, cam, clip, frame = [], [], [], [], [], [], []
    skipped = []
    for s, actions in selection.items():
        cams = cameras(s)
        for a in actions:
            if a not in pos3d[s]:
                raise ValueError(f"subject {s!r} has no action {a!r} in the 3D file {path3d}")
            if a not in pos2d[s]:
                # VideoPose3D's detection files drop clips with a corrupt video (S11 Directions):
                # leave the clip out, loudly, rather than refuse the whole set.
                skipped.append(f"{s}/{a}")
                continue
            views = pos2d[s][a]
            if len(views) != len(cams):
                raise ValueError(f"{path2d}: positions_2d[{s!r}][{a!r}] has {len(views)} cameras; the camera "
                                 f"file has {len(cams)} for subject {s!r}")
            world = pos3d[s][a].astype(np.float64)
            if joints is not None:
                world = world[:, list(joints)]
            F = world.shape[0]
            lab = label(a)
            for c, (camera, kp) in enumerate(zip(cams, views)):
                if kp.shape[0] < F:
                    raise ValueError(f"{path2d}: positions_2d[{s!r}][{a!r}][{c}] has {kp.shape[0]} frames, fewer "
                                     f"than the {F} of the 3D file {path3d}")
                x = camera.world_to_camera(world)
                x = x - x[:, :1]  # root-relative: joint 0 becomes exactly 0
                y = camera.normalize(kp[:F].astype(np.float64))
                idx = np.arange(0, F, int(downsample))
                p3.append(x[idx].astype(np.float32))
                p2.append(y[idx].astype(np.float32))
                n = len(idx)
                act.append(np.full(n, lab, dtype=object))
                subj.append(np.full(n, s, dtype=object))
                clip.append(np.full(n, a, dtype=object))
                cam.append(np.full(n, c, dtype=np.int64))
                frame.append(idx.astype(np.int64))
    if skipped:
        warnings.warn(f"{path2d}: no keypoints for {len(skipped)} clip(s) of the 3D file, left out: {skipped}",
                      stacklevel=3)
    if not p3:
        raise ValueError(f"no frames selected from {path3d} / {path2d} (subjects {sorted(selection)})")

    def strings(parts):
        return np.concatenate(parts).astype(str)

    return dict(pose3d=np.concatenate(p3), pose2d=np.concatenate(p2), action=strings(act), subject=strings(subj),
                camera=np.concatenate(cam), clip=strings(clip), frame=np.concatenate(frame))
