"""The dataset API used by training, evaluation and the engine: a PoseSet of per-frame 2D/3D pairs
and `load_dataset(name, ...)` -> (train, test).

Units and frames: pose3d is root-relative (joint 0 = 0) camera-frame metres, pose2d is
screen-normalised (x in [-1, 1], y scaled by the same factor; see cameras.normalize_screen_coordinates).
One row per (frame, camera) of every chosen clip.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..skeleton import Skeleton
from . import videopose3d as vp3d
from .cameras import load_cameras
from .user_files import read_json_file

PathLike = Union[str, Path]
ASSETS = Path(__file__).resolve().parent.parent / "assets"
# The embedded mocap sets (VideoPose3D layout, built by build_cmu / build_hdm05) and their union.
EMBEDDED = ("cmu", "hdm05")
COMBINED = {"cmu+hdm05": ("cmu", "hdm05")}
DATASETS = ("h36m", "humaneva", *EMBEDDED, *COMBINED)
CMU_ASSETS = ASSETS / "cmu"


@dataclass
class PoseSet:
    pose3d: np.ndarray  # float32 [N, J, 3], root-relative camera-frame metres
    pose2d: np.ndarray  # float32 [N, J, 2], screen-normalised
    action: np.ndarray  # str [N], the label used in the tables
    subject: np.ndarray  # str [N]
    camera: np.ndarray  # int [N], index into the subject's cameras
    skeleton: Skeleton
    action_order: tuple[str, ...] = ()  # the table order of the labels (others follow, sorted)
    clip: Optional[np.ndarray] = None  # str [N], the file's action name ("Walking 1"); defaults to action
    frame: Optional[np.ndarray] = None  # int [N], the frame index within its clip; defaults to -1

    def __post_init__(self):
        self.pose3d = np.asarray(self.pose3d, dtype=np.float32)
        self.pose2d = np.asarray(self.pose2d, dtype=np.float32)
        N, J = self.pose3d.shape[0], self.skeleton.num_joints
        if self.pose3d.shape != (N, J, 3):
            raise ValueError(f"PoseSet: pose3d has shape {self.pose3d.shape}; expected [N, {J}, 3] ({self.skeleton.name})")
        if self.pose2d.shape != (N, J, 2):
            raise ValueError(f"PoseSet: pose2d has shape {self.pose2d.shape}; expected [{N}, {J}, 2]")
        if self.clip is None:
            self.clip = self.action
        if self.frame is None:
            self.frame = np.full(N, -1, dtype=np.int64)
        for name, dtype in (("action", str), ("subject", str), ("clip", str), ("camera", np.int64),
                            ("frame", np.int64)):
            arr = np.asarray(getattr(self, name)).astype(dtype)
            if arr.shape != (N,):
                raise ValueError(f"PoseSet: {name} has shape {arr.shape}; expected [{N}]")
            setattr(self, name, arr)
        self.action_order = tuple(self.action_order)

    def __len__(self) -> int:
        return self.pose3d.shape[0]

    def __repr__(self) -> str:
        return (f"PoseSet({len(self)} frames, {self.skeleton.name}, subjects {sorted(set(self.subject.tolist()))}, "
                f"{len(self.actions())} actions)")

    def subset(self, mask) -> "PoseSet":
        """Rows chosen by a boolean mask [N] or an index array."""
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (len(self),):
            raise ValueError(f"PoseSet.subset: boolean mask of shape {mask.shape} for {len(self)} rows")
        per_row = {f.name: getattr(self, f.name)[mask] for f in fields(self)
                   if f.name not in ("skeleton", "action_order")}
        return replace(self, **per_row)

    def flipped(self) -> "PoseSet":
        """The mirror image: left and right joints swapped and x negated, in 2D and 3D alike
        (negating normalised screen x mirrors the image about its centre)."""
        perm = list(self.skeleton.flip_permutation)
        p3, p2 = self.pose3d[:, perm].copy(), self.pose2d[:, perm].copy()
        p3[..., 0] *= -1
        p2[..., 0] *= -1
        return replace(self, pose3d=p3, pose2d=p2)

    def actions(self) -> list[str]:
        """The labels present, in table order."""
        present = set(self.action.tolist())
        ordered = [a for a in self.action_order if a in present]
        return ordered + sorted(present - set(ordered))


def poseset_from_arrays(arrays: dict, skeleton: Skeleton, action_order: Sequence[str]) -> PoseSet:
    return PoseSet(skeleton=skeleton, action_order=tuple(action_order), **arrays)


def resolve_keypoints_file(data_dir: Path, prefix: str, keypoints: str) -> Path:
    """`keypoints` names a set (data_dir/<prefix>_<keypoints>.npz) or is a path to an .npz."""
    if keypoints.endswith(".npz") or "/" in keypoints:
        return Path(keypoints)
    return data_dir / f"{prefix}_{keypoints}.npz"


def require_data_dir(data_dir, name: str) -> Path:
    if data_dir is None:
        raise ValueError(f"dataset {name!r}: data_dir is required (the directory holding the VideoPose3D-layout "
                         ".npz files; the data are not shipped)")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: data directory not found: {data_dir}")
    return data_dir


def load_dataset(name: str, data_dir: Optional[PathLike] = None, keypoints: str = "gt",
                 cameras: Optional[PathLike] = None, train_subjects: Optional[Sequence[str]] = None,
                 test_subjects: Optional[Sequence[str]] = None, downsample: int = 1) -> tuple[PoseSet, PoseSet]:
    """(train, test) PoseSets of a dataset in the VideoPose3D layout.

    name: 'h36m' (data_3d_h36m.npz, data_2d_h36m_<keypoints>.npz; keypoints gt, cpn_ft_h36m_dbb, hr, ...),
    'humaneva' (data_3d_humaneva15.npz, data_2d_humaneva15_<keypoints>.npz; `cameras` required), or
    'cmu' (the embedded set: data_3d_cmu.npz, data_2d_cmu_<gt|det>.npz, cameras_cmu.json, split.json;
    data_dir defaults to the package's assets/cmu). `keypoints` may also be a path to a 2D .npz.
    cameras: a JSON in the h36m_cameras.json form (default: the dataset's own, where it has one).
    """
    if name == "h36m":
        from . import h36m

        return h36m.load_h36m(require_data_dir(data_dir, name), keypoints, cameras, train_subjects,
                              test_subjects, downsample)
    if name == "humaneva":
        from . import humaneva

        return humaneva.load_humaneva(require_data_dir(data_dir, name), keypoints, cameras, train_subjects,
                                      test_subjects, downsample)
    if name in EMBEDDED:
        if data_dir is None and not (ASSETS / name / "split.json").is_file():
            raise FileNotFoundError(f"the embedded {name.upper()} set is missing from {ASSETS / name} (an incomplete "
                                    "install?); pass data_dir to load a copy from elsewhere")
        return load_embedded(name, ASSETS / name if data_dir is None else require_data_dir(data_dir, name),
                             keypoints, cameras, train_subjects, test_subjects, downsample)
    if name in COMBINED:
        if data_dir is not None or cameras is not None or train_subjects or test_subjects:
            raise ValueError(f"dataset {name!r} is the union of the embedded sets {' and '.join(COMBINED[name])} "
                             "with their splits: it takes no data_dir, cameras or subject lists")
        parts = [load_dataset(n, None, keypoints, downsample=downsample) for n in COMBINED[name]]
        return concat_posesets([p[0] for p in parts]), concat_posesets([p[1] for p in parts])
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------
# the embedded mocap sets (built into assets/<name> by build_cmu / build_hdm05)
# ---------------------------------------------------------------------------------------------
def _read_split(path: Path) -> dict:
    doc = read_json_file(path, "split file", error=ValueError)
    for part in ("train", "test"):
        value = doc.get(part) if isinstance(doc, dict) else None
        if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
            raise ValueError(f"split file {path}: {part!r} must map subject -> [actions...]")
    labels = doc.get("action_labels", {})
    if not isinstance(labels, dict):
        raise ValueError(f"split file {path}: action_labels must map action -> label")
    return doc


def concat_posesets(sets: Sequence[PoseSet]) -> PoseSet:
    """The rows of several PoseSets of one skeleton, in order; the label order of the first first."""
    if any(p.skeleton.name != sets[0].skeleton.name for p in sets):
        raise ValueError(f"concat_posesets: skeletons differ ({', '.join(p.skeleton.name for p in sets)})")
    per_row = {f.name: np.concatenate([getattr(p, f.name) for p in sets]) for f in fields(PoseSet)
               if f.name not in ("skeleton", "action_order")}
    order = tuple(dict.fromkeys(a for p in sets for a in p.action_order))
    return PoseSet(skeleton=sets[0].skeleton, action_order=order, **per_row)


def split_validation(train: PoseSet, fraction: float, seed: int = 0) -> tuple[PoseSet, PoseSet]:
    """(train less val, val): whole clips (every camera of a (subject, clip)), chosen in a stable
    pseudo-random order until they hold `fraction` of the rows, so that validation frames are
    never neighbours of training frames. The same train set, fraction and seed give the same
    parts on every machine (crc32, not Python's salted hash)."""
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"validation fraction must be in [0, 0.5), got {fraction}")
    keys = np.char.add(np.char.add(train.subject.astype(str), "/"), train.clip.astype(str))
    clips, counts = np.unique(keys, return_counts=True)
    order = sorted(range(len(clips)), key=lambda i: (zlib.crc32(f"{seed}:{clips[i]}".encode()), clips[i]))
    chosen, rows = [], 0
    for i in order:
        if rows >= fraction * len(train):
            break
        chosen.append(clips[i])
        rows += int(counts[i])
    val = np.isin(keys, chosen)
    return train.subset(~val), train.subset(val)


def split_validation_subjects(train: PoseSet, subjects: Sequence[str]) -> tuple[PoseSet, PoseSet]:
    """(train less val, val): every row of the given training people. A calibration fitted on
    them sees new people, as the test does (clips of training people, `split_validation`, are
    easier than new people: issue 15 measured 90% coverage there and 82% on the test people)."""
    have = sorted(set(train.subject.astype(str)))
    unknown = [s for s in subjects if s not in have]
    if unknown:
        raise ValueError(f"validation subjects {', '.join(unknown)} are not among the training people "
                         f"({', '.join(have)})")
    if len(set(subjects)) >= len(have):
        raise ValueError("holding out every training person leaves nothing to train on")
    val = np.isin(train.subject.astype(str), list(subjects))
    return train.subset(~val), train.subset(val)


def load_cmu(data_dir: Path, keypoints: str = "gt", cameras: Optional[PathLike] = None,
             train_subjects: Optional[Sequence[str]] = None, test_subjects: Optional[Sequence[str]] = None,
             downsample: int = 1) -> tuple[PoseSet, PoseSet]:
    """The CMU set (see load_embedded)."""
    return load_embedded("cmu", data_dir, keypoints, cameras, train_subjects, test_subjects, downsample)


def load_embedded(name: str, data_dir: Path, keypoints: str = "gt", cameras: Optional[PathLike] = None,
                  train_subjects: Optional[Sequence[str]] = None, test_subjects: Optional[Sequence[str]] = None,
                  downsample: int = 1) -> tuple[PoseSet, PoseSet]:
    """An embedded mocap set: data_3d_<name>.npz, data_2d_<name>_<keypoints>.npz,
    cameras_<name>.json, split.json. split.json chooses each part's clips; train_subjects /
    test_subjects override which subjects a part takes (a subject keeps the clips split.json lists
    for it in that part, or all its clips where split.json does not list it there)."""
    data_dir = Path(data_dir)
    path3d = data_dir / f"data_3d_{name}.npz"
    path2d = resolve_keypoints_file(data_dir, f"data_2d_{name}", keypoints)
    cam_path = Path(cameras) if cameras is not None else data_dir / f"cameras_{name}.json"
    split = _read_split(data_dir / "split.json")
    pos3d, j3 = vp3d.load_positions_3d(path3d)
    pos2d, meta, j2 = vp3d.load_positions_2d(path2d)
    skeleton = vp3d.skeleton_of(j2, (17, 16), name, path2d)
    vp3d.check_symmetry(meta, skeleton, path2d)
    joints = vp3d.joint_selection(j3, j2, path3d, path2d)
    cams = load_cameras(cam_path)
    labels = {str(k): str(v) for k, v in split.get("action_labels", {}).items()}
    order = list(dict.fromkeys(labels.values()))

    def camera_of(subject):
        if subject not in cams:
            raise ValueError(f"camera file {cam_path} has no cameras for subject {subject!r} (it has {sorted(cams)})")
        return cams[subject]

    def part(name, subjects):
        listed = split[name]
        chosen = list(listed) if subjects is None else list(subjects)
        vp3d.check_pairing(pos3d, pos2d, chosen, path3d, path2d)
        selection = {s: list(listed[s]) if s in listed else sorted(pos3d[s]) for s in chosen}
        arrays = vp3d.build_arrays(pos3d, pos2d, selection, camera_of, lambda a: labels.get(a, a), joints,
                                   downsample, path3d, path2d)
        return poseset_from_arrays(arrays, skeleton, order)

    return part("train", train_subjects), part("test", test_subjects)
