"""Joint layouts of 2D keypoints and their mapping to the model's skeleton.

Layouts (name: joints):
- coco17 (17): COCO order; h36m17 (17): the Human3.6M / VideoPose3D order of the models; h36m16 (16,
  no nose); humaneva15 (15).
- body25 (25): OpenPose BODY_25 (nose, neck, shoulders, elbows, wrists, mid-hip, hips, knees, ankles,
  eyes, ears, six foot points).
- mediapipe33 (33): MediaPipe Pose's 33 landmarks (coordinates are fractions of the image width and
  height; the readers turn them into pixels with the image size).
- coco_wholebody (133): COCO-WholeBody: the 17 COCO body points first, then 6 foot, 68 face and
  2 x 21 hand points.

The mapping to Human3.6M goes through COCO: each detector layout's COCO-17 joints are selected by
name (DETECTOR_TO_COCO17), then COCO -> Human3.6M as for COCO input (COCO_TO_H36M17): pelvis =
mid-hips, thorax = mid-shoulders, spine = the mean of the four, head = mid-eyes (a little lower than
H36M's head joint). So a detector's output gives the same poses as COCO keypoints wherever the
joints coincide. Approximations beyond COCO's: OpenPose's own neck and mid-hip points are not used
(the shoulder and hip centres are, as for COCO); MediaPipe's hip landmarks sit a little higher and
wider than COCO's; its eye landmarks are the eye centres (the inner and outer corners are not used).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..skeleton import H36M16, H36M17, SKELETONS
from .errors import KeypointError


COCO17_JOINTS = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
                 "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")

# OpenPose BODY_25 (its output order; pose_keypoints_2d holds [x, y, confidence] * 25, (0, 0, 0) undetected)
BODY25_JOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "mid_hip",
                 "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
                 "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")
# MediaPipe Pose (mediapipe.solutions.pose.PoseLandmark, lower-cased: the names its exports use)
MEDIAPIPE33_JOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index")
# COCO-WholeBody: the COCO body first (same order), then feet, face, left hand, right hand
COCO_WHOLEBODY_JOINTS = (COCO17_JOINTS + ("l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")
                         + tuple(f"face_{i}" for i in range(68)) + tuple(f"l_hand_{i}" for i in range(21))
                         + tuple(f"r_hand_{i}" for i in range(21)))

# For each detector layout: the joint standing in for each COCO-17 joint, by name.
_MEDIAPIPE_NAME = {"nose": "nose", "l_eye": "left_eye", "r_eye": "right_eye", "l_ear": "left_ear",
                   "r_ear": "right_ear"}
DETECTOR_TO_COCO17: dict[str, dict[str, str]] = {
    "body25": {c: c for c in COCO17_JOINTS},  # OpenPose names its joints as COCO does (l_/r_ here)
    "mediapipe33": {c: _MEDIAPIPE_NAME.get(c, c.replace("l_", "left_", 1).replace("r_", "right_", 1))
                    for c in COCO17_JOINTS},
    "coco_wholebody": {c: c for c in COCO17_JOINTS},
}
DETECTOR_JOINTS = {"body25": BODY25_JOINTS, "mediapipe33": MEDIAPIPE33_JOINTS,
                   "coco_wholebody": COCO_WHOLEBODY_JOINTS}
for _name, _m in DETECTOR_TO_COCO17.items():
    assert set(_m.values()) <= set(DETECTOR_JOINTS[_name]), _name
# layouts whose x, y are fractions of the image width and height (not pixels, not screen-normalised)
UNIT_SQUARE_LAYOUTS = ("mediapipe33",)

LAYOUT_JOINTS: dict[str, tuple[str, ...]] = {"coco17": COCO17_JOINTS,
                                             **{name: s.joints for name, s in SKELETONS.items()},
                                             **DETECTOR_JOINTS}
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
    if src in DETECTOR_TO_COCO17:  # through COCO: select its 17 joints by name, then map those
        via = _sources("coco17", dst)
        if via is None:
            return None
        names = LAYOUT_JOINTS[src]
        coco = [names.index(DETECTOR_TO_COCO17[src][c]) for c in COCO17_JOINTS]
        return [tuple(coco[i] for i in s) for s in via]
    if src == "coco17" and dst in ("h36m17", "h36m16"):
        return [tuple(_C[n] for n in COCO_TO_H36M17[name]) for name in LAYOUT_JOINTS[dst]]
    if src == "h36m17" and dst == "h36m16":
        return [(H36M17.joints.index(name),) for name in H36M16.joints]
    return None


def check_conversion(src: str, dst: str) -> None:
    if _sources(src, dst) is None:
        hint = " (h36m16 lacks the nose that h36m17 models need)" if (src, dst) == ("h36m16", "h36m17") else ""
        raise KeypointError(f"cannot map {src} keypoints to the checkpoint's {dst} skeleton{hint}; "
                            f"supported: coco17, body25, mediapipe33, coco_wholebody -> h36m17/h36m16, "
                            "h36m17 -> h36m16, and same to same")


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

