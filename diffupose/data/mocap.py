"""Real motion capture in: Acclaim ASF/AMC and BVH parsers, forward kinematics, and the mapping
to the 17 Human3.6M joints (VideoPose3D order, world metres, Z up).

Conventions (see /work/shared/data/cmu-mocap/README.md and diffupose/assets/cmu/README.md):

* ASF/AMC (Acclaim). A bone's `direction` and `length` give its vector in the world-aligned rest
  pose; `axis a b c ORDER` gives its local frame C (the Euler angles applied in ORDER, the first
  letter first); the AMC values follow the bone's `dof` order and make M (the first dof applied
  first). The bone's global rotation is R = R_parent C M C^-1 and it ends at
  start + length * R direction. The root's AMC values follow `:root order`; its rotation uses
  `:root axis` as the order and `:root orientation` as C. Lengths are in units of
  1 / `:units length` inches (metres = value * 0.0254 / length), angles in `:units angle`.
* BVH. Each joint's local rotation is the product of its rotation channels in the order they are
  listed (the first listed is the outermost: ZYX gives Rz Ry Rx), applied to the OFFSET of its
  children; position channels are added to the joint's OFFSET. Units are the file's own: the
  scale to metres is given or guessed from the rest-pose height (see `guess_bvh_scale`).
* Both formats here are Y up. Z up is obtained by a proper rotation of +90 degrees about X,
  (x, y, z) -> (x, -z, y), so handedness, and with it left and right, is kept.

Malformed input raises `MocapFormatError`, a ValueError whose message starts with `file:line:`;
so does a number that is NaN, infinite or beyond MAX_MOCAP_VALUE (it would turn into inf / NaN
joints), checked where it is read.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from diffupose.data.user_files import require_regular_file
from diffupose.skeleton import H36M17

PathLike = Union[str, os.PathLike]

# Y-up to Z-up: rotation of +90 degrees about X (det +1, not a reflection).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0],
                         [0.0, 0.0, -1.0],
                         [0.0, 1.0, 0.0]])

INCH = 0.0254  # metres
# The CMU database's ASF length unit (`length 0.45`): value * 0.0254 / 0.45 metres.
CMU_ASF_UNIT = INCH / 0.45

# ASF/AMC joint (bone name, 'start' | 'end') for each H36M17 joint, per the data README.
ASF_TO_H36M17: tuple[tuple[str, str], ...] = (
    ("root", "end"),        # pelvis
    ("rfemur", "start"),    # r_hip
    ("rtibia", "start"),    # r_knee
    ("rfoot", "start"),     # r_ankle
    ("lfemur", "start"),    # l_hip
    ("ltibia", "start"),    # l_knee
    ("lfoot", "start"),     # l_ankle
    ("upperback", "start"),  # spine
    ("lowerneck", "start"),  # thorax
    ("upperneck", "end"),   # nose (the neck top: the CMU skeleton has no nose)
    ("head", "end"),        # head
    ("lhumerus", "start"),  # l_shoulder
    ("lradius", "start"),   # l_elbow
    ("lwrist", "start"),    # l_wrist
    ("rhumerus", "start"),  # r_shoulder
    ("rradius", "start"),   # r_elbow
    ("rwrist", "start"),    # r_wrist
)

# BVH joint names (CMU conversion, subject 131) for each H36M17 joint: one name, or a tuple of
# names whose positions are averaged. "Head_end" is the Head's End Site.
BVH_TO_H36M17: tuple[Union[str, tuple[str, ...]], ...] = (
    "Hips", "RightHip", "RightKnee", "RightAnkle", "LeftHip", "LeftKnee", "LeftAnkle",
    ("Chest", "Chest2"), "Neck", "Head", "Head_end",
    "LeftShoulder", "LeftElbow", "LeftWrist", "RightShoulder", "RightElbow", "RightWrist",
)


# No mocap number is larger than this in a sane file (file units: millimetres over a 1 km capture
# area; degrees: thousands of turns): beyond it, or NaN / infinite, forward kinematics would give
# inf or NaN joints, so the value is refused where it is read, by file and line.
MAX_MOCAP_VALUE = 1e6


class MocapFormatError(ValueError):
    """A malformed mocap file; the message starts with `path:line:` (line 0: the whole file)."""

    def __init__(self, path: PathLike, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class MocapClip:
    """One clip after forward kinematics, in world metres with Z up.

    joints: every skeleton point by name -> [F, 3] (ASF: '<bone>' is the bone's end, plus 'root';
    BVH: each joint's position, plus '<joint>_end' for end sites). h36m17: [F, 17, 3]."""
    name: str
    fps: float
    joints: dict[str, np.ndarray]
    h36m17: np.ndarray
    source: str = ""
    parents: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.h36m17.shape[0])


# ---------------------------------------------------------------------------------------------
# rotations
# ---------------------------------------------------------------------------------------------
def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """Right-handed rotation matrices [..., 3, 3] about 'X', 'Y' or 'Z' by angle [...] radians."""
    i = "XYZ".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(angle.shape + (3, 3))
    R[..., i, i] = 1.0
    R[..., j, j] = c
    R[..., j, k] = -s
    R[..., k, j] = s
    R[..., k, k] = c
    return R


def euler_to_matrix(angles: np.ndarray, order: str, first_applied_first: bool) -> np.ndarray:
    """angles [..., n] radians about the axes in `order` (n letters of XYZ) -> [..., 3, 3].

    first_applied_first=True (Acclaim): the first listed rotation acts first on a vector,
    R = R_n ... R_1. False (BVH): the first listed is the outermost, R = R_1 ... R_n."""
    angles = np.asarray(angles, dtype=np.float64)
    R = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    for a, axis in enumerate(order):
        Ra = axis_rotation(axis, angles[..., a])
        R = Ra @ R if first_applied_first else R @ Ra
    return R


def y_up_to_z_up(X: np.ndarray) -> np.ndarray:
    return X @ Y_UP_TO_Z_UP.T


# ---------------------------------------------------------------------------------------------
# ASF
# ---------------------------------------------------------------------------------------------
@dataclass
class AsfBone:
    name: str
    direction: np.ndarray  # [3] unit, rest pose, file frame
    length: float  # file units
    axis: np.ndarray  # [3] angle units of the file
    axis_order: str  # e.g. "XYZ"
    dofs: tuple[str, ...]  # e.g. ("rx", "ry", "rz")
    line: int = 0


@dataclass
class AsfSkeleton:
    path: str
    length_unit: float  # the `:units length` value: metres = value * 0.0254 / length_unit
    angle_in_degrees: bool
    root_order: tuple[str, ...]  # e.g. ("TX", "TY", "TZ", "RX", "RY", "RZ")
    root_axis_order: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    bones: dict[str, AsfBone]
    parent: dict[str, str]  # bone -> parent bone ('root' for the root's children)
    order: tuple[str, ...]  # bones, parents before children

    @property
    def metres_per_unit(self) -> float:
        return INCH / self.length_unit

    def dof_count(self, bone: str) -> int:
        return len(self.root_order) if bone == "root" else len(self.bones[bone].dofs)


_ROTATION_DOFS = {"rx": "X", "ry": "Y", "rz": "Z"}
_ROOT_CHANNELS = {"TX", "TY", "TZ", "RX", "RY", "RZ"}


def _floats(tokens: Sequence[str], n: int, path, line: int, what: str) -> np.ndarray:
    if len(tokens) != n:
        raise MocapFormatError(path, line, f"{what}: expected {n} numbers, got {len(tokens)}")
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        raise MocapFormatError(path, line, f"{what}: not a number in {' '.join(tokens)!r}") from None
    _check_values(values, path, line, what)
    return values


def _check_values(values: np.ndarray, path, line: int, what: str) -> None:
    bad = ~(np.abs(values) <= MAX_MOCAP_VALUE)  # NaN compares False: bad too
    if bad.any():
        v = values.reshape(-1)[int(np.flatnonzero(bad.reshape(-1))[0])]
        raise MocapFormatError(path, line, f"{what}: {v:.4g} is {'not finite' if not np.isfinite(v) else 'too large'} "
                               f"(values beyond +-{MAX_MOCAP_VALUE:g} are refused)")


def _read_mocap_text(path: Path, what: str) -> str:
    path = require_regular_file(path, f"{what} file")  # a FIFO or device named .bvh would block the read
    return path.read_text(errors="replace")


def parse_asf(path: PathLike) -> AsfSkeleton:
    path = Path(path)
    text = _read_mocap_text(path, "ASF")
    lines = text.splitlines()
    length_unit, degrees = 1.0, True
    root: dict = {}
    bones: dict[str, AsfBone] = {}
    parent: dict[str, str] = {}
    children_line: dict[str, int] = {}
    section = None
    cur: dict | None = None
    seen_sections = set()

    def finish_bone(ln: int) -> None:
        for key in ("name", "direction", "length"):
            if key not in cur:
                raise MocapFormatError(path, cur["line"], f"bone block has no '{key}'")
        if cur["name"] in bones or cur["name"] == "root":
            raise MocapFormatError(path, cur["line"], f"bone {cur['name']!r} defined twice")
        d = cur["direction"]
        n = float(np.linalg.norm(d))
        if n == 0.0 and cur["length"] != 0.0:
            raise MocapFormatError(path, cur["line"], f"bone {cur['name']!r} has a zero direction")
        bones[cur["name"]] = AsfBone(
            name=cur["name"], direction=d / n if n > 0 else d, length=cur["length"],
            axis=cur.get("axis", np.zeros(3)), axis_order=cur.get("axis_order", "XYZ"),
            dofs=cur.get("dofs", ()), line=cur["line"])

    for ln0, raw in enumerate(lines):
        ln = ln0 + 1
        s = raw.split("#", 1)[0].strip()
        if not s:
            continue
        tok = s.split()
        if tok[0].startswith(":"):
            section = tok[0][1:].lower()
            seen_sections.add(section)
            if section in ("name", "version"):
                section = None
            continue
        key = tok[0].lower()
        if section == "units":
            if key == "length":
                length_unit = float(_floats(tok[1:], 1, path, ln, "units length")[0])
                if length_unit <= 0:
                    raise MocapFormatError(path, ln, f"units length must be positive, got {length_unit}")
            elif key == "angle":
                if len(tok) != 2 or tok[1].lower() not in ("deg", "rad"):
                    raise MocapFormatError(path, ln, f"units angle must be 'deg' or 'rad', got {s!r}")
                degrees = tok[1].lower() == "deg"
        elif section == "root":
            if key == "order":
                chans = tuple(t.upper() for t in tok[1:])
                bad = [c for c in chans if c not in _ROOT_CHANNELS]
                if bad or len(set(chans)) != len(chans):
                    raise MocapFormatError(path, ln, f"root order: unknown or repeated channels in {s!r}")
                root["order"] = chans
            elif key == "axis":
                if len(tok) != 2 or sorted(tok[1].upper()) != ["X", "Y", "Z"]:
                    raise MocapFormatError(path, ln, f"root axis must be a permutation of XYZ, got {s!r}")
                root["axis"] = tok[1].upper()
            elif key == "position":
                root["position"] = _floats(tok[1:], 3, path, ln, "root position")
            elif key == "orientation":
                root["orientation"] = _floats(tok[1:], 3, path, ln, "root orientation")
            else:
                raise MocapFormatError(path, ln, f"unexpected line in :root: {s!r}")
        elif section == "bonedata":
            if key == "begin":
                if cur is not None:
                    raise MocapFormatError(path, ln, "'begin' inside a bone block (missing 'end')")
                cur = {"line": ln}
            elif key == "end":
                if cur is None:
                    raise MocapFormatError(path, ln, "'end' without 'begin'")
                finish_bone(ln)
                cur = None
            elif cur is None:
                raise MocapFormatError(path, ln, f"line outside a begin/end bone block: {s!r}")
            elif key == "id":
                pass
            elif key == "name":
                if len(tok) != 2:
                    raise MocapFormatError(path, ln, f"bone name: expected one name, got {s!r}")
                cur["name"] = tok[1]
            elif key == "direction":
                cur["direction"] = _floats(tok[1:], 3, path, ln, "bone direction")
            elif key == "length":
                cur["length"] = float(_floats(tok[1:], 1, path, ln, "bone length")[0])
                if cur["length"] < 0:
                    raise MocapFormatError(path, ln, f"bone length is negative: {cur['length']}")
            elif key == "axis":
                if len(tok) != 5 or sorted(tok[4].upper()) != ["X", "Y", "Z"]:
                    raise MocapFormatError(path, ln, f"bone axis: expected 'axis a b c XYZ', got {s!r}")
                cur["axis"] = _floats(tok[1:4], 3, path, ln, "bone axis")
                cur["axis_order"] = tok[4].upper()
            elif key == "dof":
                dofs = tuple(t.lower() for t in tok[1:])
                bad = [d for d in dofs if d not in _ROTATION_DOFS]
                if bad:
                    raise MocapFormatError(path, ln, f"unsupported dof {bad[0]!r} (only rx, ry, rz; bone "
                                           "translations and stretch are not supported)")
                if len(set(dofs)) != len(dofs):
                    raise MocapFormatError(path, ln, f"repeated dof in {s!r}")
                cur["dofs"] = dofs
            elif key == "limits" or key.startswith("("):
                pass  # joint limits: not needed for playback
            elif key == "bodymass" or key == "cofmass":
                pass
            else:
                raise MocapFormatError(path, ln, f"unexpected line in a bone block: {s!r}")
        elif section == "hierarchy":
            if key in ("begin", "end"):
                continue
            par = tok[0]
            if par != "root" and par not in bones:
                raise MocapFormatError(path, ln, f"hierarchy names unknown bone {par!r}")
            for child in tok[1:]:
                if child not in bones:
                    raise MocapFormatError(path, ln, f"hierarchy names unknown bone {child!r}")
                if child in parent:
                    raise MocapFormatError(path, ln, f"bone {child!r} has two parents")
                parent[child] = par
                children_line[child] = ln
        # other sections (documentation, skin, ...) are ignored

    if cur is not None:
        raise MocapFormatError(path, cur["line"], "bone block not closed with 'end'")
    for sec in ("root", "bonedata", "hierarchy"):
        if sec not in seen_sections:
            raise MocapFormatError(path, 0, f"no :{sec} section (is this an Acclaim ASF file?)")
    for key in ("order", "axis"):
        if key not in root:
            raise MocapFormatError(path, 0, f":root has no '{key}' line")
    if not bones:
        raise MocapFormatError(path, 0, "no bones in :bonedata")
    # Order parents before children; a bone not reachable from the root is an error.
    order: list[str] = []
    kids: dict[str, list[str]] = {}
    for c, p in parent.items():
        kids.setdefault(p, []).append(c)
    stack = list(reversed(kids.get("root", [])))
    while stack:
        b = stack.pop()
        order.append(b)
        stack.extend(reversed(kids.get(b, [])))
    missing = [b for b in bones if b not in set(order)]
    if missing:
        b = missing[0]
        raise MocapFormatError(path, bones[b].line, f"bone {b!r} is not connected to the root in :hierarchy")
    return AsfSkeleton(
        path=str(path), length_unit=length_unit, angle_in_degrees=degrees, root_order=root["order"],
        root_axis_order=root["axis"], root_position=root.get("position", np.zeros(3)),
        root_orientation=root.get("orientation", np.zeros(3)), bones=bones, parent=parent,
        order=tuple(order))


# ---------------------------------------------------------------------------------------------
# AMC
# ---------------------------------------------------------------------------------------------
@dataclass
class AmcMotion:
    path: str
    frame_ids: np.ndarray  # [F] as numbered in the file
    values: dict[str, np.ndarray]  # bone -> [F, ndof] in the file's angle unit / length unit
    angle_in_degrees: bool


def parse_amc(path: PathLike, skeleton: AsfSkeleton) -> AmcMotion:
    """Read every frame; each must list every bone that has dofs, once, with its dof count."""
    path = Path(path)
    text = _read_mocap_text(path, "AMC")
    ndof = {"root": skeleton.dof_count("root")}
    ndof.update({b: len(bone.dofs) for b, bone in skeleton.bones.items() if bone.dofs})
    expected = len(ndof)
    flat: dict[str, list[str]] = {b: [] for b in ndof}
    value_lines: dict[str, list[int]] = {b: [] for b in ndof}  # the line of each frame's values, for errors
    frame_ids: list[int] = []
    frame_line = 0
    seen: set = set()
    degrees = skeleton.angle_in_degrees

    def close_frame() -> None:
        if frame_ids and len(seen) != expected:
            lost = sorted(set(ndof) - seen)
            raise MocapFormatError(path, frame_line, f"frame {frame_ids[-1]} lacks bone(s) {', '.join(lost)}")

    for ln0, raw in enumerate(text.split("\n")):
        s = raw.strip()
        if not s or s[0] == "#":
            continue
        if s[0] == ":":
            kw = s.upper()
            if kw.startswith(":DEGREES"):
                degrees = True
            elif kw.startswith(":RADIANS"):
                degrees = False
            continue
        tok = s.split()
        if len(tok) == 1:
            if not tok[0].isdigit():
                raise MocapFormatError(path, ln0 + 1, f"expected a frame number or 'bone values...', got {s!r}")
            close_frame()
            fid = int(tok[0])
            if frame_ids and fid != frame_ids[-1] + 1:
                raise MocapFormatError(path, ln0 + 1, f"frame {fid} follows frame {frame_ids[-1]}")
            frame_ids.append(fid)
            frame_line = ln0 + 1
            seen = set()
            continue
        name = tok[0]
        n = ndof.get(name)
        if n is None:
            why = "has no dofs" if name in skeleton.bones else "is not in the skeleton"
            raise MocapFormatError(path, ln0 + 1, f"bone {name!r} {why} ({skeleton.path})")
        if not frame_ids:
            raise MocapFormatError(path, ln0 + 1, "bone values before the first frame number")
        if len(tok) - 1 != n:
            raise MocapFormatError(path, ln0 + 1, f"bone {name!r}: expected {n} values, got {len(tok) - 1}")
        if name in seen:
            raise MocapFormatError(path, ln0 + 1, f"bone {name!r} appears twice in frame {frame_ids[-1]}")
        seen.add(name)
        flat[name].extend(tok[1:])
        value_lines[name].append(ln0 + 1)
    close_frame()
    if not frame_ids:
        raise MocapFormatError(path, 0, "no frames")
    F = len(frame_ids)
    values = {}
    for b, vals in flat.items():
        try:
            values[b] = np.array(vals, dtype=np.float64).reshape(F, ndof[b])
        except ValueError:
            # Find the offending line for the message (only on the error path).
            for ln0, raw in enumerate(text.split("\n")):
                tok = raw.split()
                if tok and tok[0] == b:
                    for t in tok[1:]:
                        try:
                            float(t)
                        except ValueError:
                            raise MocapFormatError(path, ln0 + 1, f"bone {b!r}: not a number: {t!r}") from None
            raise
        bad = ~(np.abs(values[b]) <= MAX_MOCAP_VALUE).all(-1)
        if bad.any():
            f = int(np.flatnonzero(bad)[0])
            _check_values(values[b][f], path, value_lines[b][f], f"bone {b!r} in frame {frame_ids[f]}")
    return AmcMotion(path=str(path), frame_ids=np.array(frame_ids), values=values, angle_in_degrees=degrees)


def _angles(x: np.ndarray, degrees: bool) -> np.ndarray:
    return np.deg2rad(x) if degrees else np.asarray(x, dtype=np.float64)


def asf_amc_fk(skeleton: AsfSkeleton, motion: AmcMotion, frames: np.ndarray | slice | None = None) -> dict[str, np.ndarray]:
    """Forward kinematics -> {'root': [F, 3], bone: end [F, 3]} in metres, file frame (Y up)."""
    sel = slice(None) if frames is None else frames
    rv = motion.values["root"][sel]
    F = rv.shape[0]
    unit = skeleton.metres_per_unit
    ch = {c: rv[:, i] for i, c in enumerate(skeleton.root_order)}
    pos = np.stack([ch.get(c, np.full(F, p)) for c, p in zip(("TX", "TY", "TZ"), skeleton.root_position)], -1)
    rot = np.stack([ch.get("R" + a, np.zeros(F)) for a in skeleton.root_axis_order], -1)
    C = euler_to_matrix(_angles(skeleton.root_orientation, skeleton.angle_in_degrees),
                        skeleton.root_axis_order, True)
    R = {"root": C @ euler_to_matrix(_angles(rot, motion.angle_in_degrees), skeleton.root_axis_order, True) @ C.T}
    out = {"root": pos * unit}
    for b in skeleton.order:
        bone = skeleton.bones[b]
        p = skeleton.parent[b]
        Rb = R[p]
        if bone.dofs:
            C = euler_to_matrix(_angles(bone.axis, skeleton.angle_in_degrees), bone.axis_order, True)
            M = euler_to_matrix(_angles(motion.values[b][sel], motion.angle_in_degrees),
                                "".join(_ROTATION_DOFS[d] for d in bone.dofs), True)
            Rb = Rb @ (C @ M @ C.T)
        R[b] = Rb
        out[b] = out[p] + (bone.length * unit) * (Rb @ bone.direction)
    return out


def load_asf_amc(asf: PathLike | AsfSkeleton, amc: PathLike, step: int = 1, fps: float = 120.0,
                 name: str | None = None) -> MocapClip:
    """Parse an ASF (or reuse a parsed one) and an AMC; keep every `step`-th frame."""
    skel = asf if isinstance(asf, AsfSkeleton) else parse_asf(asf)
    missing = [bn for bn, _ in ASF_TO_H36M17 if bn != "root" and bn not in skel.bones]
    if missing:
        raise MocapFormatError(skel.path, 0, f"skeleton lacks bone(s) {', '.join(missing)} needed for the "
                               "17 Human3.6M joints (CMU ASF naming expected)")
    motion = parse_amc(amc, skel)
    pts = asf_amc_fk(skel, motion, slice(None, None, _check_step(step)))
    # Start of bone b = end of its parent; the H36M17 joints use starts and ends.
    start = {b: pts[skel.parent[b]] for b in skel.order}
    h36 = np.stack([pts[bn] if which == "end" else start[bn] for bn, which in ASF_TO_H36M17], axis=1)
    joints = {k: y_up_to_z_up(v) for k, v in pts.items()}
    return MocapClip(name=name or Path(amc).stem, fps=fps / step, joints=joints,
                     h36m17=y_up_to_z_up(h36), source=str(amc), parents=dict(skel.parent))


def _check_step(step: int) -> int:
    if not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    return int(step)


# ---------------------------------------------------------------------------------------------
# BVH
# ---------------------------------------------------------------------------------------------
@dataclass
class BvhJoint:
    name: str
    parent: int  # index, -1 for the root
    offset: np.ndarray  # [3] file units
    channels: tuple[str, ...]  # e.g. ("Xposition", ..., "Zrotation"); () for end sites
    channel_start: int  # column of its first channel in a motion row
    line: int


@dataclass
class BvhFile:
    path: str
    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray  # [F, channels]

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time


_BVH_CHANNELS = {"Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation"}


def parse_bvh(path: PathLike) -> BvhFile:
    path = Path(path)
    text = _read_mocap_text(path, "BVH")
    lines = text.split("\n")
    joints: list[BvhJoint] = []
    stack: list[int] = []  # open joint indices
    pending: tuple[str, int] | None = None  # a ROOT/JOINT/End Site name waiting for '{'
    n_channels = 0
    i = 0
    first = next((k for k, l in enumerate(lines) if l.strip()), None)
    if first is None or lines[first].strip().upper() != "HIERARCHY":
        raise MocapFormatError(path, (first or 0) + 1, "a BVH file must start with HIERARCHY")
    i = first + 1
    motion_line = None
    while i < len(lines):
        ln = i + 1
        s = lines[i].strip()
        i += 1
        if not s:
            continue
        tok = s.split()
        key = tok[0].upper()
        if key in ("ROOT", "JOINT"):
            if (key == "ROOT") != (not stack) or pending is not None:
                raise MocapFormatError(path, ln, f"unexpected {tok[0]} here")
            if key == "ROOT" and joints:
                raise MocapFormatError(path, ln, "only one ROOT is supported")
            if len(tok) < 2:
                raise MocapFormatError(path, ln, f"{tok[0]} without a name")
            jname = " ".join(tok[1:])
            if any(j.name == jname for j in joints):
                raise MocapFormatError(path, ln, f"joint name {jname!r} used twice")
            pending = (jname, ln)
        elif key == "END":
            if not stack or pending is not None:
                raise MocapFormatError(path, ln, "End Site outside a joint")
            # End sites are named after their joint: "<joint>_end", then "_end2", ... if several.
            base = joints[stack[-1]].name + "_end"
            taken = {j.name for j in joints}
            name, k = base, 1
            while name in taken:
                k += 1
                name = f"{base}{k}"
            pending = (name, ln)
        elif key == "{":
            if pending is None:
                raise MocapFormatError(path, ln, "'{' without ROOT, JOINT or End Site")
            joints.append(BvhJoint(name=pending[0], parent=stack[-1] if stack else -1, offset=None,
                                   channels=(), channel_start=n_channels, line=pending[1]))
            stack.append(len(joints) - 1)
            pending = None
        elif key == "}":
            if not stack:
                raise MocapFormatError(path, ln, "unbalanced '}'")
            j = joints[stack.pop()]
            if j.offset is None:
                raise MocapFormatError(path, j.line, f"joint {j.name!r} has no OFFSET")
        elif key == "OFFSET":
            if not stack:
                raise MocapFormatError(path, ln, "OFFSET outside a joint")
            joints[stack[-1]].offset = _floats(tok[1:], 3, path, ln, "OFFSET")
        elif key == "CHANNELS":
            if not stack:
                raise MocapFormatError(path, ln, "CHANNELS outside a joint")
            j = joints[stack[-1]]
            try:
                n = int(tok[1])
            except (IndexError, ValueError):
                raise MocapFormatError(path, ln, f"CHANNELS needs a count: {s!r}") from None
            chans = tuple(tok[2:])
            if len(chans) != n:
                raise MocapFormatError(path, ln, f"CHANNELS says {n} but lists {len(chans)}")
            bad = [c for c in chans if c not in _BVH_CHANNELS]
            if bad:
                raise MocapFormatError(path, ln, f"unknown channel {bad[0]!r}")
            j.channels = chans
            j.channel_start = n_channels
            n_channels += n
        elif key == "MOTION":
            if stack or pending is not None:
                raise MocapFormatError(path, ln, "MOTION before the hierarchy is closed")
            motion_line = ln
            break
        else:
            raise MocapFormatError(path, ln, f"unexpected line in HIERARCHY: {s!r}")
    if motion_line is None:
        raise MocapFormatError(path, len(lines), "no MOTION section")
    if not joints:
        raise MocapFormatError(path, motion_line, "no joints in HIERARCHY")

    def header(prefix: str) -> tuple[str, int]:
        nonlocal i
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or not lines[i].strip().lower().startswith(prefix.lower()):
            raise MocapFormatError(path, i + 1, f"expected '{prefix}' after MOTION")
        i += 1
        return lines[i - 1].strip()[len(prefix):].strip(), i

    val, frames_line = header("Frames:")
    ln = frames_line
    try:
        n_frames = int(val)
    except ValueError:
        raise MocapFormatError(path, ln, f"Frames: not an integer: {val!r}") from None
    val, ln = header("Frame Time:")
    try:
        frame_time = float(val)
    except ValueError:
        raise MocapFormatError(path, ln, f"Frame Time: not a number: {val!r}") from None
    if not frame_time > 0:
        raise MocapFormatError(path, ln, f"Frame Time must be positive, got {frame_time}")
    rows = [(k + 1, l) for k, l in enumerate(lines[i:], start=i) if l.strip()]
    if len(rows) != n_frames:
        where = rows[n_frames][0] if len(rows) > n_frames else frames_line
        raise MocapFormatError(path, where, f"Frames: says {n_frames} but the file has {len(rows)} motion rows")
    for ln, l in rows:
        if len(l.split()) != n_channels:
            raise MocapFormatError(path, ln, f"motion row has {len(l.split())} values, the hierarchy has "
                                   f"{n_channels} channels")
    try:
        motion = np.array(" ".join(l for _, l in rows).split(), dtype=np.float64).reshape(n_frames, n_channels)
    except ValueError:
        for ln, l in rows:
            for t in l.split():
                try:
                    float(t)
                except ValueError:
                    raise MocapFormatError(path, ln, f"not a number: {t!r}") from None
        raise
    bad = ~(np.abs(motion) <= MAX_MOCAP_VALUE)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        owner = next(j for j in joints if j.channel_start <= c < j.channel_start + len(j.channels))
        _check_values(motion[r, c:c + 1], path, rows[r][0],
                      f"frame {r}: channel {owner.channels[c - owner.channel_start]} of joint {owner.name!r}")
    return BvhFile(path=str(path), joints=joints, frame_time=frame_time, motion=motion)


def bvh_fk(bvh: BvhFile, frames: np.ndarray | slice | None = None) -> dict[str, np.ndarray]:
    """Forward kinematics -> joint name -> [F, 3] in file units and frame."""
    mot = bvh.motion[slice(None) if frames is None else frames]
    F = mot.shape[0]
    pos: list[np.ndarray] = []
    rot: list[np.ndarray] = []
    for j in bvh.joints:
        local_t = np.broadcast_to(j.offset, (F, 3)).copy()
        rorder, rcols = "", []
        for c, name in enumerate(j.channels):
            col = mot[:, j.channel_start + c]
            if name.endswith("position"):
                local_t[:, "XYZ".index(name[0])] += col
            else:
                rorder += name[0]
                rcols.append(col)
        local_R = (euler_to_matrix(np.deg2rad(np.stack(rcols, -1)), rorder, False) if rorder
                   else np.broadcast_to(np.eye(3), (F, 3, 3)))
        if j.parent < 0:
            pos.append(local_t)
            rot.append(local_R)
        else:
            Rp = rot[j.parent]
            pos.append(pos[j.parent] + np.einsum("fij,fj->fi", Rp, local_t))
            rot.append(Rp @ local_R)
    return {j.name: p for j, p in zip(bvh.joints, pos)}


# Candidate length units (metres per file unit) for guessing a BVH's scale.
BVH_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": INCH, "cmu_asf": CMU_ASF_UNIT}


def bvh_rest_height(bvh: BvhFile) -> float:
    """Vertical (Y) extent of the rest pose (all channels zero), in file units."""
    zero = BvhFile(bvh.path, bvh.joints, bvh.frame_time, np.zeros((1, bvh.motion.shape[1])))
    ys = np.array([p[0, 1] for p in bvh_fk(zero).values()])
    return float(ys.max() - ys.min())


def guess_bvh_scale(bvh: BvhFile, expected_height: float = 1.55) -> tuple[str, float]:
    """The unit (name, metres per unit) of BVH_UNITS whose rest-pose height is nearest (in ratio)
    to a human's. CMU's BVH conversion keeps the ASF unit (inches / 0.45); its rest height, from
    the toe end sites to the top of the head, is about 24-28 units, which no other unit makes
    human (inches: 0.6 m; cm: 0.25 m)."""
    h = bvh_rest_height(bvh)
    if not h > 0:
        raise MocapFormatError(bvh.path, 0, "cannot guess the scale: the rest pose has no height")
    return min(BVH_UNITS.items(), key=lambda kv: abs(math.log(h * kv[1] / expected_height)))


def load_bvh(path: PathLike, step: int = 1, scale: float | None = None, name: str | None = None,
             mapping: Sequence[Union[str, tuple[str, ...]]] = BVH_TO_H36M17,
             target_fps: float | None = None) -> MocapClip:
    """Parse a BVH; keep every `step`-th frame (or every round(file rate / target_fps)-th);
    scale to metres (given, or guessed)."""
    bvh = parse_bvh(path)
    if target_fps is not None:
        step = max(1, round(bvh.fps / target_fps))
    if scale is None:
        _, scale = guess_bvh_scale(bvh)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    pts = bvh_fk(bvh, slice(None, None, _check_step(step)))
    names = [n for m in mapping for n in ((m,) if isinstance(m, str) else m)]
    missing = [n for n in names if n not in pts]
    if missing:
        raise MocapFormatError(path, 0, f"BVH lacks joint(s) {', '.join(missing)} needed for the 17 "
                               "Human3.6M joints (the CMU BVH joint names are expected: rename the file's joints "
                               "to them)")
    h36 = np.stack([pts[m] if isinstance(m, str) else np.mean([pts[n] for n in m], axis=0) for m in mapping], 1)
    parents = {j.name: bvh.joints[j.parent].name for j in bvh.joints if j.parent >= 0}
    return MocapClip(name=name or Path(path).stem, fps=bvh.fps / step,
                     joints={k: y_up_to_z_up(v * scale) for k, v in pts.items()},
                     h36m17=y_up_to_z_up(h36 * scale), source=str(path), parents=parents)


# ---------------------------------------------------------------------------------------------
# helpers used by the importer and the tests
# ---------------------------------------------------------------------------------------------
def find_asf(amc: PathLike, asf: PathLike | None = None) -> Path:
    """The ASF for an AMC: given, else the only .asf beside it, else '<subject>.asf' where the AMC
    is '<subject>_<clip>.amc'."""
    if asf is not None:
        return Path(asf)
    amc = Path(amc)
    cand = sorted(amc.parent.glob("*.asf"))
    if len(cand) == 1:
        return cand[0]
    named = amc.parent / (amc.stem.split("_")[0] + ".asf")
    if named.exists():
        return named
    raise FileNotFoundError(f"no ASF skeleton for {amc}: found {len(cand)} .asf files beside it and no "
                            f"{named.name}; name it with --asf FILE")


def load_clip(path: PathLike, asf: PathLike | AsfSkeleton | None = None, step: int = 1,
              bvh_scale: float | None = None, fps: float = 120.0) -> MocapClip:
    """An .amc (with its ASF) or a .bvh file -> MocapClip. `fps` is the AMC rate (AMC files do
    not store it; CMU's is 120 Hz); BVH files give their own."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".amc":
        if not isinstance(asf, AsfSkeleton):
            asf = find_asf(path, asf)
        return load_asf_amc(asf, path, step=step, fps=fps)
    if ext == ".bvh":
        return load_bvh(path, step=step, scale=bvh_scale)
    raise ValueError(f"{path}: unknown motion file type {ext!r} (expected .amc with an .asf, or .bvh)")


def bone_lengths(h36m17: np.ndarray) -> np.ndarray:
    """[F, 17, 3] -> [F, 16] lengths of the H36M17 bones (child, parent) in skeleton order."""
    return np.stack([np.linalg.norm(h36m17[:, c] - h36m17[:, p], axis=-1) for c, p in H36M17.bones], -1)


def iter_motion_files(inputs: Iterable[PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into .amc and .bvh files, sorted, deduplicated."""
    out: list[Path] = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            out.extend(q for q in p.rglob("*") if q.suffix.lower() in (".amc", ".bvh"))
        elif p.exists():
            if p.suffix.lower() not in (".amc", ".bvh"):
                raise ValueError(f"{p}: not a motion file (expected .amc or .bvh)")
            out.append(p)
        else:
            raise FileNotFoundError(f"motion input not found: {p}")
    return sorted(set(out))
