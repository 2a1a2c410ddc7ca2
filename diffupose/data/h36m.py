"""Human3.6M in the VideoPose3D layout (users bring their own files; nothing is shipped).

data_dir/data_3d_h36m.npz: subject -> action -> [frames, 32, 3] world metres (17 also accepted).
data_dir/data_2d_h36m_<keypoints>.npz: subject -> action -> 4 x [frames, J, 2] pixels, cameras in
the order of assets/h36m_cameras.json; keypoints `gt` and `cpn_ft_h36m_dbb` have 17 joints (h36m17),
`hr` has 16 (h36m16, no nose; the 3D drops joint 9 to match).
Protocol: train S1, S5, S6, S7, S8; test S9, S11; labels are the 15 actions in the paper's order.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Union

from . import videopose3d as vp3d
from .cameras import H36M_CAMERAS_JSON, load_cameras
from .dataset import PoseSet, poseset_from_arrays, resolve_keypoints_file
from .user_files import require_regular_file

PathLike = Union[str, Path]

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
           "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")
# Human3.6M's own spellings of some actions (VideoPose3D renames the first two).
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog", "WalkingTogether": "WalkTogether",
                  "Purchase": "Purchases"}
_TRAILING_INDEX = re.compile(r"[\s_]*\d+$")


def action_label(name: str) -> str:
    """'Walking 1' -> 'Walking', 'TakingPhoto 1' -> 'Photo', 'SittingDown 2' -> 'SittingDown'."""
    base = _TRAILING_INDEX.sub("", name.strip())
    base = ACTION_ALIASES.get(base, base)
    if base not in ACTIONS:
        raise ValueError(f"unknown Human3.6M action {name!r}; expected one of {', '.join(ACTIONS)} "
                         "(optionally followed by an index, e.g. 'Walking 1')")
    return base


def load_h36m(data_dir: PathLike, keypoints: str = "gt", cameras: Optional[PathLike] = None,
              train_subjects: Optional[Sequence[str]] = None, test_subjects: Optional[Sequence[str]] = None,
              downsample: int = 1) -> tuple[PoseSet, PoseSet]:
    data_dir = Path(data_dir)
    path3d = data_dir / "data_3d_h36m.npz"
    path2d = resolve_keypoints_file(data_dir, "data_2d_h36m", keypoints)
    cam_path = Path(cameras) if cameras is not None else H36M_CAMERAS_JSON
    # check both files exist before the (slow) read of either
    for p, what in ((path3d, "3D pose"), (path2d, "2D keypoint")):
        require_regular_file(p, f"Human3.6M {what} file", error=ValueError)
    pos3d, j3 = vp3d.load_positions_3d(path3d)
    pos2d, meta, j2 = vp3d.load_positions_2d(path2d)
    if j3 not in (32, 17, 16):
        raise ValueError(f"wrong joint count: {path3d} has {j3} joints; Human3.6M 3D has 32 (or 17, 16)")
    skeleton = vp3d.skeleton_of(j2, (17, 16), "h36m", path2d)
    vp3d.check_symmetry(meta, skeleton, path2d)
    joints = vp3d.joint_selection(j3, j2, path3d, path2d)
    cams = load_cameras(cam_path)

    def camera_of(subject):
        if subject not in cams:
            raise ValueError(f"camera file {cam_path} has no cameras for subject {subject!r} (it has {sorted(cams)})")
        return cams[subject]

    def part(subjects):
        subjects = list(subjects)
        vp3d.check_pairing(pos3d, pos2d, subjects, path3d, path2d)
        selection = {s: list(pos3d[s]) for s in subjects}
        for s, acts in selection.items():  # unknown names fail here, before any work
            for a in acts:
                try:
                    action_label(a)
                except ValueError as e:
                    raise ValueError(f"{path3d}: subject {s!r}: {e}") from None
        arrays = vp3d.build_arrays(pos3d, pos2d, selection, camera_of, action_label, joints, downsample,
                                   path3d, path2d)
        return poseset_from_arrays(arrays, skeleton, ACTIONS)

    train = part(TRAIN_SUBJECTS if train_subjects is None else train_subjects)
    test = part(TEST_SUBJECTS if test_subjects is None else test_subjects)
    return train, test
