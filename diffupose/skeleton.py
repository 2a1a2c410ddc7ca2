"""Skeletons: joint names, parents, left/right pairs, and the graph adjacency built from them.

Human3.6M 17 joints are in the VideoPose3D order; `h36m16` drops the nose (joint 9) as the
16-joint detectors do; `humaneva15` is the VideoPose3D HumanEva-I order.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class Skeleton:
    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    joints_left: tuple[int, ...]
    joints_right: tuple[int, ...]

    def __post_init__(self):
        J = len(self.joints)
        if len(self.parents) != J:
            raise ValueError(f"{self.name}: {len(self.parents)} parents for {J} joints")
        if len(self.joints_left) != len(self.joints_right):
            raise ValueError(f"{self.name}: left/right joint lists differ in length")
        for j, p in enumerate(self.parents):
            if not (p == -1 or 0 <= p < j):
                raise ValueError(f"{self.name}: parent of joint {j} is {p}; parents must precede children")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @cached_property
    def flip_permutation(self) -> tuple[int, ...]:
        """perm such that flipped[..., j, :] = pose[..., perm[j], :] (left and right swapped)."""
        perm = list(range(self.num_joints))
        for left, right in zip(self.joints_left, self.joints_right):
            perm[left], perm[right] = right, left
        return tuple(perm)

    @cached_property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(child, parent) pairs."""
        return tuple((j, p) for j, p in enumerate(self.parents) if p >= 0)

    def adjacency(self, self_loops: bool = True) -> torch.Tensor:
        """Symmetric 0/1 adjacency [J, J] of the bone graph (float32)."""
        J = self.num_joints
        adj = torch.zeros(J, J)
        for c, p in self.bones:
            adj[c, p] = adj[p, c] = 1.0
        if self_loops:
            adj += torch.eye(J)
        return adj

    def index(self, name: str) -> int:
        return self.joints.index(name)


H36M17 = Skeleton(
    name="h36m17",
    joints=("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
            "nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist"),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    joints_left=(4, 5, 6, 11, 12, 13),
    joints_right=(1, 2, 3, 14, 15, 16),
)

H36M16 = Skeleton(
    name="h36m16",
    joints=("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
            "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist"),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 8, 10, 11, 8, 13, 14),
    joints_left=(4, 5, 6, 10, 11, 12),
    joints_right=(1, 2, 3, 13, 14, 15),
)

HUMANEVA15 = Skeleton(
    name="humaneva15",
    joints=("pelvis", "thorax", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
            "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle", "head"),
    parents=(-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1),
    joints_left=(2, 3, 4, 8, 9, 10),
    joints_right=(5, 6, 7, 11, 12, 13),
)

SKELETONS = {s.name: s for s in (H36M17, H36M16, HUMANEVA15)}

# H36M17 joints kept by the 16-joint variant (the nose, 9, is dropped).
H36M17_TO_16 = tuple(j for j in range(17) if j != 9)


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; known: {', '.join(SKELETONS)}") from None


def skeleton_for_joints(num_joints: int) -> Skeleton:
    """The default skeleton with this many joints (17, 16 or 15)."""
    for s in SKELETONS.values():
        if s.num_joints == num_joints:
            return s
    raise ValueError(f"no skeleton has {num_joints} joints; supported: 17 (h36m17), 16 (h36m16), 15 (humaneva15)")


# (skeleton name, device) -> the flip permutation as an int64 tensor on that device, and the
# per-channel sign [C] per (name, device, C, dtype). Indexing with a Python list would build the
# index on the host and copy it to the device on every call: a blocking copy that aborts CUDA-graph
# capture (flip test-time augmentation runs inside the captured sampling loop). The cached tensors
# are made on first use, which the engine's warm-up run does before it captures.
_FLIP_INDEX: dict[tuple, torch.Tensor] = {}
_FLIP_SIGN: dict[tuple, torch.Tensor] = {}


def _flip_tensors(skeleton: Skeleton, channels: int, dtype: torch.dtype, device: torch.device):
    key = (skeleton.name, device)
    index = _FLIP_INDEX.get(key)
    if index is None:
        index = _FLIP_INDEX[key] = torch.tensor(skeleton.flip_permutation, dtype=torch.int64, device=device)
    skey = (skeleton.name, device, channels, dtype)
    sign = _FLIP_SIGN.get(skey)
    if sign is None:
        sign = torch.ones(channels, dtype=dtype)
        sign[0] = -1.0
        sign = _FLIP_SIGN[skey] = sign.to(device)
    return index, sign


def flip_pose(pose: torch.Tensor, skeleton: Skeleton) -> torch.Tensor:
    """Mirror poses [..., J, C]: swap left and right joints and negate x (channel 0).

    Two device ops (index_select, multiply by the cached sign) and no host-built tensors, so it
    can run inside a captured CUDA graph."""
    if pose.shape[-2] != skeleton.num_joints:
        raise ValueError(f"flip_pose: {pose.shape[-2]} joints, skeleton {skeleton.name} has {skeleton.num_joints}")
    index, sign = _flip_tensors(skeleton, pose.shape[-1], pose.dtype, pose.device)
    return pose.index_select(pose.dim() - 2, index) * sign
