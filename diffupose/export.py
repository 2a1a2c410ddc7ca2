"""Lifted poses out to animation and analysis tools: BVH (a skeleton and its joint rotations) and
CSV (one named column per joint coordinate). `diffupose lift -o poses.bvh` / `-o poses.csv`.

BVH. The lifted poses are joint positions; an animation wants a fixed skeleton and rotations.
- The skeleton: each bone's OFFSET is its median length over the clip along its direction in a
  T-pose (Y up, facing +Z, the person's left at +X; legs and spine vertical, arms sideways), in
  centimetres. Camera-frame metres (x right, y down, z forward) become (x, -y, -z) * 100: a proper
  rotation (half a turn about X), so left stays left.
- The rotations are solved from the positions, frame by frame. A joint with one child turns its
  bone, from where its parent's rotation carries it, onto the lifted direction by the smallest
  rotation (no twist is invented: positions do not say it). A joint with several children (the
  pelvis: hips and spine; the thorax: neck and shoulders) takes the rotation that best fits all
  of them (Kabsch); each child then hangs from its own zero-length joint `<joint>_<child>` whose
  rotation makes up the rest, so every bone points exactly where it was lifted. Leaf joints carry
  zero rotations and an End Site a quarter of their bone long.
- Channels: the root's Xposition Yposition Zposition (the lifted root: 0, poses are root-relative),
  then Zrotation Yrotation Xrotation for every joint (R = Rz Ry Rx, degrees, unwrapped over time).
- Read back by diffupose.data.mocap (parse_bvh, bvh_fk; `read_bvh_positions` here), the joints are
  the lifted ones with every bone set to its median length: exact to the file's 6 decimals
  (< 1e-5 m, tested) when the lifted bones are already constant; otherwise off by how far the
  clip's bone lengths stray from their medians, accumulated along the chain (tests/test_export.py
  states both bounds).

CSV: a header `frame,pelvis_x,pelvis_y,pelvis_z,...` (joint names of the model's skeleton), one
row per lifted frame (`frame` = input frame number), metres, camera frame, root-relative, then an
`unreliable` column (0/1, as in the .npz).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]
EXPORT_FORMATS = (".bvh", ".csv")
BVH_CENTIMETRES = 100.0  # BVH units per metre
CAMERA_TO_BVH = np.diag([1.0, -1.0, -1.0])  # x right, y down, z forward -> Y up, facing +Z (self-inverse)
DEFAULT_FPS = 30.0  # the frame rate assumed when neither --fps nor the input gives one (most video)
BVH_CHUNK = 4096  # frames solved and written at a time: memory stays bounded whatever the length
_END_SITE_FRACTION = 0.25

# T-pose direction of the bone that ends at each joint (BVH frame: Y up, facing +Z, left +X), by
# joint name: covers h36m17, h36m16 and humaneva15.
_LEFT, _RIGHT, _UP, _DOWN = (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)
REST_DIRECTIONS = {
    "r_hip": _RIGHT, "l_hip": _LEFT, "r_knee": _DOWN, "l_knee": _DOWN, "r_ankle": _DOWN, "l_ankle": _DOWN,
    "spine": _UP, "thorax": _UP, "nose": _UP, "head": _UP,
    "l_shoulder": _LEFT, "l_elbow": _LEFT, "l_wrist": _LEFT, "r_shoulder": _RIGHT, "r_elbow": _RIGHT,
    "r_wrist": _RIGHT,
}


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def csv_header(joint_names: Sequence[str]) -> list[str]:
    return ["frame"] + [f"{j}_{a}" for j in joint_names for a in "xyz"] + ["unreliable"]


def write_csv(path: PathLike, pose3d, joint_names: Sequence[str], frame_index=None, unreliable=None) -> Path:
    """pose3d [F, J, 3] metres -> CSV with the columns of `csv_header` (0.01 mm resolution)."""
    pose3d = np.asarray(pose3d)
    F, J = pose3d.shape[:2]
    if J != len(joint_names) or pose3d.shape[2:] != (3,):
        raise ValueError(f"write_csv: poses of shape {pose3d.shape} for {len(joint_names)} joint names")
    frames = np.arange(F) if frame_index is None else np.asarray(frame_index)
    flags = np.zeros(F, dtype=bool) if unreliable is None else np.asarray(unreliable, dtype=bool)
    path = Path(path)
    with path.open("w", newline="") as f:
        f.write(",".join(csv_header(joint_names)) + "\n")
        for s in range(0, F, BVH_CHUNK):
            e = min(s + BVH_CHUNK, F)
            coords = np.asarray(pose3d[s:e], dtype=np.float64).reshape(e - s, 3 * J)
            for fr, row, u in zip(frames[s:e], coords, flags[s:e]):
                f.write(f"{int(fr)}," + ",".join(f"{v:.5f}" for v in row) + f",{int(u)}\n")
    return path


# ---------------------------------------------------------------------------------------------
# rotations
# ---------------------------------------------------------------------------------------------
def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 1e-9, v / np.where(n > 1e-9, n, 1.0), fallback)


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotations [..., 3, 3] turning unit vectors a [..., 3] onto b [..., 3]
    (Rodrigues; half a turn about an axis perpendicular to a where b = -a)."""
    v = np.cross(a, b)
    c = (a * b).sum(-1)
    K = np.zeros(v.shape + (3,))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    opposite = 1.0 + c < 1e-9
    R = np.eye(3) + K + K @ K / np.where(opposite, 1.0, 1.0 + c)[..., None, None]
    if opposite.any():
        ao = a[opposite]
        helper = np.where(np.abs(ao[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        n = _unit(np.cross(ao, helper), ao)
        R[opposite] = 2.0 * n[:, :, None] * n[:, None, :] - np.eye(3)
    return R


def best_rotation(rest: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Kabsch: rest [K, 3] (fixed), target [..., K, 3] -> the proper rotations R [..., 3, 3]
    minimising sum_k |R rest_k - target_k|^2."""
    H = np.einsum("ki,...kj->...ij", rest, target)  # sum_k rest_k target_k^T
    U, _, Vt = np.linalg.svd(H)
    V = np.swapaxes(Vt, -1, -2)
    d = np.sign(np.linalg.det(V @ np.swapaxes(U, -1, -2)))
    V[..., :, -1] *= np.where(d == 0, 1.0, d)[..., None]
    return V @ np.swapaxes(U, -1, -2)


def matrix_to_euler_zyx(R: np.ndarray) -> np.ndarray:
    """R [..., 3, 3] = Rz(a) Ry(b) Rx(c) -> [..., 3] (a, b, c) degrees; at b = +-90 degrees
    (gimbal lock) c = 0 and a takes the whole turn about the vertical, still exact."""
    b = np.arctan2(-R[..., 2, 0], np.hypot(R[..., 0, 0], R[..., 1, 0]))
    locked = np.hypot(R[..., 0, 0], R[..., 1, 0]) < 1e-9
    a = np.where(locked, np.arctan2(-R[..., 0, 1], R[..., 1, 1]), np.arctan2(R[..., 1, 0], R[..., 0, 0]))
    c = np.where(locked, 0.0, np.arctan2(R[..., 2, 1], R[..., 2, 2]))
    return np.rad2deg(np.stack([a, b, c], -1))


# ---------------------------------------------------------------------------------------------
# BVH
# ---------------------------------------------------------------------------------------------
class _BvhJoint:
    def __init__(self, name: str, parent: int, joint: int, child: Optional[int]):
        self.name, self.parent = name, parent  # parent: index into the BVH joint list, -1 for the root
        self.joint = joint  # the skeleton joint at whose position it sits
        self.child = child  # the skeleton child whose bone it turns (None: several, or a leaf)
        self.offset = np.zeros(3)
        self.end_site: Optional[np.ndarray] = None


def _bvh_hierarchy(joint_names: Sequence[str], parents: Sequence[int], lengths: np.ndarray) -> list[_BvhJoint]:
    """The BVH joints in file order (depth first), with offsets in BVH units."""
    children = {j: [c for c, p in enumerate(parents) if p == j] for j in range(len(parents))}
    rest = {c: np.asarray(REST_DIRECTIONS[joint_names[c]]) for c in range(len(parents)) if parents[c] >= 0}
    out: list[_BvhJoint] = []

    def emit(j: int, bvh_parent: int) -> None:
        kids = children[j]
        me = _BvhJoint(joint_names[j], bvh_parent, j, kids[0] if len(kids) == 1 else None)
        if parents[j] >= 0:
            me.offset = lengths[j] * rest[j]
        out.append(me)
        k = len(out) - 1
        if not kids:
            me.end_site = _END_SITE_FRACTION * lengths[j] * rest[j]
        elif len(kids) == 1:
            emit(kids[0], k)
        else:
            for c in kids:
                out.append(_BvhJoint(f"{joint_names[j]}_{joint_names[c]}", k, j, c))
                emit(c, len(out) - 1)

    roots = [j for j, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ValueError(f"BVH export: the skeleton has {len(roots)} roots; one is needed")
    emit(roots[0], -1)
    return out


def _solve_rotations(hier: list[_BvhJoint], W: np.ndarray, parents: Sequence[int], joint_names: Sequence[str]
                     ) -> np.ndarray:
    """W [F, J, 3] positions (BVH frame) -> local rotations [F, len(hier), 3, 3]."""
    F = W.shape[0]
    rest = {c: np.asarray(REST_DIRECTIONS[joint_names[c]]) for c in range(len(parents)) if parents[c] >= 0}
    G = np.empty((F, len(hier), 3, 3))  # global rotations
    L = np.empty_like(G)
    for k, bj in enumerate(hier):
        base = G[:, bj.parent] if bj.parent >= 0 else np.broadcast_to(np.eye(3), (F, 3, 3))
        kids = [c for c, p in enumerate(parents) if p == bj.joint]
        if bj.child is not None:  # turn this one bone from where base carries it onto its lifted direction
            carried = np.einsum("fij,j->fi", base, rest[bj.child])
            u = _unit(W[:, bj.child] - W[:, bj.joint], carried)
            G[:, k] = swing(carried, u) @ base
        elif kids:  # several children: the rotation that fits all their bones best
            dirs = np.stack([rest[c] for c in kids])
            u = np.stack([_unit(W[:, c] - W[:, bj.joint], base @ rest[c]) for c in kids], 1)
            G[:, k] = best_rotation(dirs, u)
        else:  # a leaf: no bone of its own to turn
            G[:, k] = base
        L[:, k] = np.swapaxes(base, -1, -2) @ G[:, k]
    return L


def _bvh_text_header(hier: list[_BvhJoint]) -> str:
    kids = {k: [i for i, b in enumerate(hier) if b.parent == k] for k in range(len(hier))}
    lines = ["HIERARCHY"]

    def fmt(v):
        return " ".join(f"{x:.6f}" for x in v)

    def emit(k: int, depth: int) -> None:
        bj, ind = hier[k], "  " * depth
        lines.append(f"{ind}{'ROOT' if bj.parent < 0 else 'JOINT'} {bj.name}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}  OFFSET {fmt(bj.offset)}")
        pos = "Xposition Yposition Zposition " if bj.parent < 0 else ""
        lines.append(f"{ind}  CHANNELS {6 if bj.parent < 0 else 3} {pos}Zrotation Yrotation Xrotation")
        for c in kids[k]:
            emit(c, depth + 1)
        if bj.end_site is not None:
            lines.extend([f"{ind}  End Site", f"{ind}  {{", f"{ind}    OFFSET {fmt(bj.end_site)}", f"{ind}  }}"])
        lines.append(f"{ind}}}")

    emit(0, 0)
    return "\n".join(lines) + "\n"


def check_bvh_skeleton(joint_names: Sequence[str], parents: Sequence[int]) -> None:
    """Raises ValueError (one line) if the BVH writer has no rest pose for this skeleton."""
    unknown = [n for n, p in zip(joint_names, parents) if p >= 0 and n not in REST_DIRECTIONS]
    if unknown:
        raise ValueError(f"BVH export knows the joints of h36m17, h36m16 and humaneva15; this skeleton has "
                         f"{', '.join(unknown)}")


def write_bvh(path: PathLike, pose3d, joint_names: Sequence[str], parents: Sequence[int], fps: float) -> Path:
    """pose3d [F, J, 3] camera-frame metres (root-relative) -> a BVH file (see the module doc)."""
    check_bvh_skeleton(joint_names, parents)
    pose3d = np.asarray(pose3d)
    F, J = pose3d.shape[:2]
    if J != len(joint_names) or len(parents) != J or pose3d.shape[2:] != (3,) or F == 0:
        raise ValueError(f"write_bvh: poses of shape {pose3d.shape} for {len(joint_names)} joints")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"write_bvh: fps must be positive, got {fps}")
    # median bone lengths over the clip, chunk by chunk (a long clip stays on disk)
    bone = np.empty((F, J))
    for s in range(0, F, BVH_CHUNK):
        p = np.asarray(pose3d[s:s + BVH_CHUNK], dtype=np.float64)
        bone[s:s + len(p)] = np.linalg.norm(p - p[:, [max(q, 0) for q in parents]], axis=-1)
    lengths = np.median(bone, axis=0) * BVH_CENTIMETRES
    hier = _bvh_hierarchy(joint_names, parents, lengths)
    root = hier[0].joint
    path = Path(path)
    last = None  # the previous frame's angles: each channel unwrapped across chunks
    with path.open("w") as f:
        f.write(_bvh_text_header(hier))
        f.write(f"MOTION\nFrames: {F}\nFrame Time: {1.0 / fps:.8f}\n")
        for s in range(0, F, BVH_CHUNK):
            W = np.asarray(pose3d[s:s + BVH_CHUNK], dtype=np.float64) @ CAMERA_TO_BVH.T * BVH_CENTIMETRES
            ang = matrix_to_euler_zyx(_solve_rotations(hier, W, parents, joint_names)).reshape(len(W), -1)
            ang = np.unwrap(ang if last is None else np.vstack([last, ang]), period=360.0, axis=0)
            ang = ang if last is None else ang[1:]
            last = ang[-1:]
            rows = np.concatenate([W[:, root], ang], axis=1)
            np.savetxt(f, rows, fmt="%.6f")
    return path


def read_bvh_positions(path: PathLike, joint_names: Sequence[str]) -> tuple[np.ndarray, float]:
    """A BVH written by write_bvh, read by the project's BVH reader (diffupose.data.mocap) ->
    (positions [F, J, 3] camera-frame metres, fps)."""
    from .data.mocap import bvh_fk, parse_bvh

    bvh = parse_bvh(path)
    pts = bvh_fk(bvh)
    missing = [n for n in joint_names if n not in pts]
    if missing:
        raise ValueError(f"{path}: no joint(s) {', '.join(missing)}")
    W = np.stack([pts[n] for n in joint_names], 1)
    return W @ CAMERA_TO_BVH / BVH_CENTIMETRES, bvh.fps


def write_export(path: PathLike, *, pose3d, joint_names: Sequence[str], parents: Sequence[int], fps: float,
                 frame_index=None, unreliable=None) -> Path:
    """The writer of `diffupose lift` for .bvh and .csv, chosen by the suffix of path."""
    ext = Path(path).suffix.lower()
    if ext == ".bvh":
        return write_bvh(path, pose3d, joint_names, parents, fps)
    if ext == ".csv":
        return write_csv(path, pose3d, joint_names, frame_index=frame_index, unreliable=unreliable)
    raise ValueError(f"{path}: not an export format ({' or '.join(EXPORT_FORMATS)})")


__all__ = ["DEFAULT_FPS", "EXPORT_FORMATS", "REST_DIRECTIONS", "best_rotation", "check_bvh_skeleton", "csv_header",
           "matrix_to_euler_zyx", "read_bvh_positions", "swing", "write_bvh", "write_csv", "write_export"]
