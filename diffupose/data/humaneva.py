"""HumanEva-I in the VideoPose3D layout (users bring their own files; nothing is shipped).

data_dir/data_3d_humaneva15.npz: subjects "Train/S1", "Validate/S1", ...; actions "Walk 1 chunk0",
"Jog 1 chunk0", "Box 1 chunk0", ...; [frames, 15, 3] world metres.
data_dir/data_2d_humaneva15_<keypoints>.npz: 3 cameras per clip.
The HumanEva camera parameters are not public here: a cameras JSON in the h36m_cameras.json form
is required (extrinsics keyed "S1", ... or by the full "Train/S1" key).
Protocol (VideoPose3D's `--actions Walk,Jog,Box`): train on the Train/ subjects, test on the
Validate/ ones, clips of Walk, Jog and Box only (other actions are left out of both parts);
labels are the action with trial and chunk stripped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from . import videopose3d as vp3d
from .cameras import load_cameras
from .dataset import PoseSet, poseset_from_arrays, resolve_keypoints_file

PathLike = Union[str, Path]

TRAIN_SUBJECTS = ("Train/S1", "Train/S2", "Train/S3")
TEST_SUBJECTS = ("Validate/S1", "Validate/S2", "Validate/S3")
ACTIONS = ("Walk", "Jog", "Box")
_ALIASES = {"Walking": "Walk", "Jogging": "Jog", "Boxing": "Box"}


def action_label(name: str) -> str | None:
    """'Walk 1 chunk0' -> 'Walk'; None for actions outside the protocol (Gestures, ThrowCatch, ...)."""
    base = name.strip().split()[0] if name.strip() else ""
    base = _ALIASES.get(base, base)
    return base if base in ACTIONS else None


def load_humaneva(data_dir: PathLike, keypoints: str = "gt", cameras: Optional[PathLike] = None,
                  train_subjects: Optional[Sequence[str]] = None, test_subjects: Optional[Sequence[str]] = None,
                  downsample: int = 1) -> tuple[PoseSet, PoseSet]:
    if cameras is None:
        raise ValueError("HumanEva needs its camera parameters, which are not shipped: pass cameras= "
                         "(--cameras on the command line) a JSON in the h36m_cameras.json form with the three "
                         "HumanEva-I cameras (extrinsics keyed by subject, e.g. 'S1')")
    data_dir = Path(data_dir)
    path3d = data_dir / "data_3d_humaneva15.npz"
    path2d = resolve_keypoints_file(data_dir, "data_2d_humaneva15", keypoints)
    for p, what in ((path3d, "3D pose"), (path2d, "2D keypoint")):
        if not p.is_file():
            raise FileNotFoundError(f"HumanEva {what} file not found: {p}")
    cam_path = Path(cameras)
    cams = load_cameras(cam_path)
    pos3d, j3 = vp3d.load_positions_3d(path3d)
    pos2d, meta, j2 = vp3d.load_positions_2d(path2d)
    skeleton = vp3d.skeleton_of(j2, (15,), "humaneva", path2d)
    if j3 != 15:
        raise ValueError(f"wrong joint count: {path3d} has {j3} joints; HumanEva-I (humaneva15) has 15")
    vp3d.check_symmetry(meta, skeleton, path2d)

    def camera_of(subject):
        # "Train/S1" and "Validate/S1" are the same person in the same room: one set of cameras
        for key in (subject, subject.rsplit("/", 1)[-1]):
            if key in cams:
                return cams[key]
        raise ValueError(f"camera file {cam_path} has no cameras for subject {subject!r} (it has {sorted(cams)})")

    def part(subjects):
        subjects = list(subjects)
        vp3d.check_pairing(pos3d, pos2d, subjects, path3d, path2d)
        selection = {s: [a for a in pos3d[s] if action_label(a) is not None] for s in subjects}
        if not any(selection.values()):
            raise ValueError(f"{path3d}: subjects {subjects} have no Walk, Jog or Box clips")
        arrays = vp3d.build_arrays(pos3d, pos2d, selection, camera_of, action_label, None, downsample,
                                   path3d, path2d)
        return poseset_from_arrays(arrays, skeleton, ACTIONS)

    train = part(TRAIN_SUBJECTS if train_subjects is None else train_subjects)
    test = part(TEST_SUBJECTS if test_subjects is None else test_subjects)
    return train, test
